//! Event time: per-task watermarks, idle inputs, and what happens to events behind the
//! watermark (docs/event-time.md).
//!
//! Everything here is pure: no Kafka, no system clock. The wall clock is passed in as
//! [`WallTime`] so that tests (and topology tests) decide when an input becomes idle.

mod watermark;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock, ms since the epoch (0 before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub use watermark::{Observation, WallTime, WatermarkTracker};

/// What to do with an event whose `occurred_at` is behind its task's watermark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum LatenessPolicy {
    /// Write a `LateEvent` to the late topic; do not apply it to state or route it.
    #[default]
    SideOutput,
    /// Process it like an on-time event (it only bumps the late counter).
    Process,
    /// Skip it (it only bumps the late counter).
    Drop,
}

impl LatenessPolicy {
    pub const ALL: [LatenessPolicy; 3] = [
        LatenessPolicy::SideOutput,
        LatenessPolicy::Process,
        LatenessPolicy::Drop,
    ];

    /// The name used in the topology file and in the `policy` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LatenessPolicy::SideOutput => "side_output",
            LatenessPolicy::Process => "process",
            LatenessPolicy::Drop => "drop",
        }
    }

    pub fn parse(s: &str) -> Option<LatenessPolicy> {
        LatenessPolicy::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The topology's `lateness:` section, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lateness {
    /// Event-time tracking on (the default). Off: no watermarks, nothing is late, and
    /// engagement windows expire 7 days behind each contact's newest engagement.
    pub enabled: bool,
    /// How far behind the slowest input's stream time an event may be and still count as on
    /// time: watermark = min over inputs of stream time − grace.
    pub grace: Duration,
    /// Wall-clock time without records after which an input partition stops holding the
    /// watermark back (until its records return).
    pub idle_timeout: Duration,
    pub policy: LatenessPolicy,
}

impl Lateness {
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(5 * 60);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            enabled: true,
            grace: Lateness::DEFAULT_GRACE,
            idle_timeout: Lateness::DEFAULT_IDLE_TIMEOUT,
            policy: LatenessPolicy::SideOutput,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_round_trip_through_their_names() {
        for p in LatenessPolicy::ALL {
            assert_eq!(LatenessPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(LatenessPolicy::parse("sideoutput"), None);
        assert_eq!(LatenessPolicy::default().as_str(), "side_output");
    }

    #[test]
    fn defaults() {
        let l = Lateness::default();
        assert_eq!(l.grace, Duration::from_secs(300));
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(l.policy, LatenessPolicy::SideOutput);
    }
}
