//! Enrichment: merge the contact profile, keep engagement windows, match the account, and
//! compute the default score.

pub mod accounts;
pub mod contact;
pub mod engagement;
pub mod profile;
pub mod score;
