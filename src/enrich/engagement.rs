//! Engagement windows per contact, in event time: counts over the last 24 hours and 7 days,
//! pricing-page views, demo requests, and the latest engagement.
//!
//! The history keeps each engagement's time and type sorted by time, so the statistics at a
//! given time do not depend on the order engagements arrived in. Entries older than the
//! window (7 days before the newest) are dropped on every update, which bounds the state.

use serde::{Deserialize, Serialize};

use crate::route::EngagementStats;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// The longest window any statistic looks back.
pub const WINDOW_MS: i64 = 7 * DAY_MS;
/// Most engagements kept per contact (a bot hammering one contact must not grow state).
const MAX_ENTRIES: usize = 2_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// (occurred_at, type), sorted by time then type.
    entries: Vec<(i64, String)>,
}

impl History {
    pub fn record(&mut self, at: i64, kind: &str) {
        let entry = (at, kind.to_string());
        let i = self.entries.partition_point(|e| *e <= entry);
        self.entries.insert(i, entry);
        let newest = self.entries.last().map_or(at, |e| e.0);
        let keep_from = self.entries.partition_point(|e| e.0 < newest - WINDOW_MS);
        self.entries.drain(..keep_from);
        if self.entries.len() > MAX_ENTRIES {
            let excess = self.entries.len() - MAX_ENTRIES;
            self.entries.drain(..excess);
        }
    }

    /// Statistics as of event time `t` (engagements at or before `t`).
    pub fn stats_at(&self, t: i64) -> EngagementStats {
        let upto = self.entries.partition_point(|e| e.0 <= t);
        let seen = &self.entries[..upto];
        let within = |ms: i64| seen.iter().filter(move |e| e.0 > t - ms);
        EngagementStats {
            count_24h: within(DAY_MS).count() as i64,
            count_7d: within(WINDOW_MS).count() as i64,
            pricing_views_7d: within(WINDOW_MS)
                .filter(|e| e.1 == "pricing_page_view")
                .count() as i64,
            demo_requested: within(WINDOW_MS).any(|e| e.1 == "demo_request"),
            last_type: seen.last().map(|e| e.1.clone()),
            last_at: seen.last().map(|e| e.0),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard serializes plain structs")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<History, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_in_event_time() {
        let t = 100 * DAY_MS;
        let mut h = History::default();
        h.record(t - 3 * DAY_MS, "pricing_page_view");
        h.record(t - HOUR_MS, "email_open");
        h.record(t - 8 * DAY_MS, "demo_request"); // outside 7 days of the newest: dropped
        h.record(t, "pricing_page_view");
        let s = h.stats_at(t);
        assert_eq!((s.count_24h, s.count_7d, s.pricing_views_7d), (2, 3, 2));
        assert!(!s.demo_requested);
        assert_eq!(
            (s.last_type.as_deref(), s.last_at),
            (Some("pricing_page_view"), Some(t))
        );
        // As of an earlier time, later engagements do not count.
        assert_eq!(h.stats_at(t - 2 * HOUR_MS).count_7d, 1);
        assert_eq!(History::from_bytes(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn arrival_order_does_not_matter() {
        let events = [
            (5, "call"),
            (1, "chat"),
            (9, "email_open"),
            (5, "web_visit"),
        ];
        let mut a = History::default();
        events.iter().for_each(|(t, k)| a.record(*t, k));
        let mut b = History::default();
        events.iter().rev().for_each(|(t, k)| b.record(*t, k));
        assert_eq!(a, b);
        assert_eq!(a.stats_at(9), b.stats_at(9));
    }
}
