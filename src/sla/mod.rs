//! SLA tracking: every routed lead is timed against its `sla_deadline`, durably.
//!
//! A task's decisions and their timers live in the `sla` store (changelogged like the other
//! per-partition stores, so they move with their task and survive restarts), under two kinds
//! of key, both behind the partition:
//!
//! - `d` + decision_id → [`Tracked`]: what an acknowledgement or a breach needs to know of
//!   the decision, and when its timer is due;
//! - `t` + due (8 bytes, big-endian ms) + decision_id → nothing: the timer, so that the due
//!   timers of a task are one range of keys.
//!
//! A decision has exactly one timer at a time: at its deadline while it waits for an
//! acknowledgement; after it breached, at the end of `sla.ack_retention`, when it is
//! forgotten (until then a late acknowledgement still counts). The first `accepted` or
//! `contacted` acknowledgement deletes the decision, its escalations and their timers.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::route::Priority;
use crate::state::partition_key;

const DECISION: u8 = b'd';
const TIMER: u8 = b't';

/// A decision timed against its SLA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tracked {
    pub decision_id: String,
    pub contact_id: String,
    /// The lead's first decision: escalated decisions' ids derive from it and the level.
    pub root: String,
    /// The input event the lead was first decided on, and what the script saw of it.
    pub event_id: String,
    pub event_type: String,
    pub source: String,
    pub occurred_at: i64,
    pub correlation_id: Option<String>,
    pub priority: Priority,
    pub queue: String,
    pub owner: Option<String>,
    pub score: i32,
    pub rule_version: String,
    pub routed_at: i64,
    pub deadline: i64,
    /// 0 for the first decision, `n` for the `n`th escalation.
    pub level: u32,
    /// When its timer fires.
    pub due: i64,
    /// Waiting for an acknowledgement (false once it breached).
    pub open: bool,
    /// The escalated decision its breach re-routed the lead to.
    pub next: Option<String>,
}

impl Tracked {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a tracked decision serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Tracked, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// What an acknowledgement says (`LeadAck.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Accepted,
    Contacted,
    Rejected,
    Reassigned,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Accepted,
        Action::Contacted,
        Action::Rejected,
        Action::Reassigned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accepted => "accepted",
            Action::Contacted => "contacted",
            Action::Rejected => "rejected",
            Action::Reassigned => "reassigned",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Whether it meets the SLA (stops the timer).
    pub fn claims(self) -> bool {
        matches!(self, Action::Accepted | Action::Contacted)
    }
}

/// The key of a tracked decision.
pub fn decision_key(partition: i32, decision_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + decision_id.len());
    key.push(DECISION);
    key.extend_from_slice(decision_id.as_bytes());
    partition_key(partition, &key)
}

/// The key of a decision's timer, due at `due`.
pub fn timer_key(partition: i32, due: i64, decision_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + decision_id.len());
    key.push(TIMER);
    key.extend_from_slice(&due.max(0).to_be_bytes());
    key.extend_from_slice(decision_id.as_bytes());
    partition_key(partition, &key)
}

/// The range of timer keys of `partition` due at or before `now`: `(from, until)`.
pub fn due_range(partition: i32, now: i64) -> (Vec<u8>, Vec<u8>) {
    let from = partition_key(partition, &[TIMER]);
    let mut until = from.clone();
    until.extend_from_slice(&now.saturating_add(1).max(0).to_be_bytes());
    (from, until)
}

/// The range of tracked-decision keys of `partition`: `(from, until)`.
pub fn decision_range(partition: i32) -> (Vec<u8>, Vec<u8>) {
    (
        partition_key(partition, &[DECISION]),
        partition_key(partition, &[DECISION + 1]),
    )
}

/// The due time and decision id of a timer key of `partition`.
pub fn parse_timer_key(key: &[u8]) -> Option<(i64, &str)> {
    let rest = key.get(4..)?;
    let (&kind, rest) = rest.split_first()?;
    if kind != TIMER || rest.len() < 8 {
        return None;
    }
    let due = i64::from_be_bytes(rest[..8].try_into().ok()?);
    Some((due, std::str::from_utf8(&rest[8..]).ok()?))
}

/// Deterministic id of the `level`th escalation of the lead first decided as `root`: a
/// replay or a restart re-emits the same id, so consumers can de-duplicate on it. A UUID
/// (version 8) from SHA-256, like decision ids.
pub fn escalation_id(root: &str, level: u32) -> String {
    let mut hash = Sha256::new();
    hash.update(root.as_bytes());
    hash.update([0]);
    hash.update(b"escalation");
    hash.update(level.to_be_bytes());
    let mut b: [u8; 16] = hash.finalize()[..16].try_into().expect("16 of 32 bytes");
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    crate::ids::uuid_text(u128::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_of_a_partition_sort_by_due_time_and_stay_in_their_range() {
        let early = timer_key(3, 1_000, "b");
        let late = timer_key(3, 2_000, "a");
        assert!(early < late);
        let (from, until) = due_range(3, 1_500);
        assert!(early >= from && early < until);
        assert!(late >= until);
        let (_, until) = due_range(3, 2_000);
        assert!(late < until, "due at now is due");
        assert!(timer_key(4, 0, "a") >= until, "another partition is out");
        assert!(decision_key(3, "a") < from, "decision keys are not timers");
        assert_eq!(parse_timer_key(&late), Some((2_000, "a")));
        assert_eq!(parse_timer_key(&decision_key(3, "a")), None);
    }

    #[test]
    fn escalation_ids_are_deterministic_per_root_and_level() {
        let a = escalation_id("root", 1);
        assert_eq!(a, escalation_id("root", 1));
        assert_ne!(a, escalation_id("root", 2));
        assert_ne!(a, escalation_id("other", 1));
        assert_eq!(&a[14..15], "8");
    }

    #[test]
    fn actions_parse_and_only_accepted_and_contacted_claim() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
        }
        assert_eq!(Action::parse("ACCEPTED"), None);
        assert!(Action::Accepted.claims() && Action::Contacted.claims());
        assert!(!Action::Rejected.claims() && !Action::Reassigned.claims());
    }
}
