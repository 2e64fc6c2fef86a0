//! What a routing script sees (`lead`) and what it decides, as Rust types (contracts §4).
//!
//! The enrichment stage builds a [`Lead`]; `route::Rules::evaluate` turns it into the Rhai
//! `lead` map, runs `score` (if defined) and `route`, and validates the result into a
//! [`Decision`].

use serde::{Deserialize, Serialize};

use crate::model::{Account, Contact};

/// Engagement statistics of one contact at the event's time (event time, not wall clock).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngagementStats {
    pub count_24h: i64,
    pub count_7d: i64,
    pub pricing_views_7d: i64,
    /// A `demo_request` within the last 7 days.
    pub demo_requested: bool,
    pub last_type: Option<String>,
    pub last_at: Option<i64>,
}

/// The last decision emitted for a contact (`lead.previous`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousDecision {
    pub decision_id: String,
    pub event_id: String,
    pub priority: Priority,
    pub queue: String,
    pub owner: Option<String>,
    pub score: i32,
    pub routed_at: i64,
    pub rule_version: String,
}

/// Everything the script's `lead` map is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    /// The merged contact profile; every field becomes a top-level key of `lead`
    /// (absent ones are `()`).
    pub contact: Contact,
    pub event_type: String,
    pub source: String,
    /// Event time of the triggering event, ms since the epoch.
    pub occurred_at: i64,
    /// The default score leadflow computed; replaced by the script's `score(lead)` if any.
    pub score: i32,
    /// The matched account (`lead.account`), or `()` in the script.
    pub account: Option<Account>,
    pub engagement: EngagementStats,
    pub previous: Option<PreviousDecision>,
}

/// Delivery priority, one output topic each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Priority {
    P0,
    P1,
    P2,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::P0, Priority::P1, Priority::P2];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::P0 => "P0",
            Priority::P1 => "P1",
            Priority::P2 => "P2",
        }
    }

    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A valid result of `route(lead)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub priority: Priority,
    pub queue: String,
    pub owner: Option<String>,
    pub reasons: Vec<String>,
    /// The score in force: the script's `score(lead)` if it has one, else the default.
    pub score: i32,
}

/// What `escalate(lead, breach)` is told about a decision nobody acknowledged in time
/// (contracts §4): the script's `breach` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreachInfo {
    /// Of the breached decision.
    pub priority: Priority,
    pub queue: String,
    pub owner: Option<String>,
    /// Its SLA deadline, ms since the epoch.
    pub deadline: i64,
    /// 1 for the lead's first breach, 2 when its first escalation breaches too, ...
    pub level: u32,
    /// Whole minutes past the deadline when the breach is handled (0 for a rejection
    /// before it).
    pub minutes_overdue: i64,
    /// `deadline` or `rejected`.
    pub cause: &'static str,
}

/// Why a script call produced no decision; the event goes to the DLQ with this class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptFailure {
    /// Runtime error in the script (`error.class = script_error`).
    #[error("script error: {0}")]
    Error(String),
    /// Over the operation or wall-clock budget (`error.class = script_timeout`).
    #[error("script over its budget: {0}")]
    Timeout(String),
    /// `route` returned something that is not `()` or a valid decision map, or `score`
    /// returned something that is not an int in 0..=100 (`error.class = invalid_decision`).
    #[error("invalid decision: {0}")]
    InvalidDecision(String),
}

impl ScriptFailure {
    /// The DLQ `error.class` of this failure (contracts §5).
    pub fn class(&self) -> &'static str {
        match self {
            ScriptFailure::Error(_) => "script_error",
            ScriptFailure::Timeout(_) => "script_timeout",
            ScriptFailure::InvalidDecision(_) => "invalid_decision",
        }
    }
}
