//! Routing stage: the Rhai sandbox, the `lead` it sees, and `rules check` / `rules test`.

pub mod compiled;
pub(crate) mod convert;
mod diagnose;
mod engine;
mod fields;
mod fixture_file;
pub mod fixtures;
pub mod lead;
pub mod live;

pub use engine::{CompileError, Rules, ScriptLimits};
pub use lead::*;
