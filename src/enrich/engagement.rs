//! Engagement windows per contact, in event time: counts over the last 24 hours and 7 days,
//! pricing-page views, demo requests, and the latest engagement.
//!
//! The history keeps each engagement's time and type sorted by time, so the statistics at a
//! given time do not depend on the order engagements arrived in. [`History::record`] only
//! inserts; entries are dropped in event time by [`History::expire_before`], which the caller
//! calls with `watermark − WINDOW_MS`. Pruning relative to the newest entry instead would
//! depend on arrival order: an engagement arriving out of order (but within grace) needs the
//! window behind *its* time, which such pruning may already have dropped. No on-time event
//! looks back further than `watermark − WINDOW_MS`, so expiring at the watermark loses nothing
//! an on-time event needs. `MAX_ENTRIES` still bounds the state of a hammered contact.

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
    /// Inserts one engagement in time order. Over `MAX_ENTRIES`, the oldest entries go.
    pub fn record(&mut self, at: i64, kind: &str) {
        let entry = (at, kind.to_string());
        let i = self.entries.partition_point(|e| *e <= entry);
        self.entries.insert(i, entry);
        if self.entries.len() > MAX_ENTRIES {
            let excess = self.entries.len() - MAX_ENTRIES;
            self.entries.drain(..excess);
        }
    }

    /// Time of the newest engagement, if any.
    pub fn newest(&self) -> Option<i64> {
        self.entries.last().map(|e| e.0)
    }

    /// Drops the entries that happened before `cutoff` (event time; call with
    /// `watermark − WINDOW_MS`). Returns whether anything was dropped, i.e. whether the
    /// history needs writing back.
    pub fn expire_before(&mut self, cutoff: i64) -> bool {
        let keep_from = self.entries.partition_point(|e| e.0 < cutoff);
        self.entries.drain(..keep_from);
        keep_from > 0
    }

    /// Number of engagements kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        h.record(t - 8 * DAY_MS, "demo_request"); // outside the 7 days before t
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
        // As of 4 days earlier, the demo request (5 days before that) is in the 7 days.
        assert!(h.stats_at(t - 4 * DAY_MS).demo_requested);
    }

    #[test]
    fn record_only_inserts_and_expiry_follows_the_cutoff() {
        let t = 100 * DAY_MS;
        let mut h = History::default();
        h.record(t, "call");
        h.record(t - 10 * DAY_MS, "chat"); // older than newest − 7 d: kept until expired
        h.record(t - 3 * DAY_MS, "web_visit");
        assert_eq!(h.len(), 3);
        assert!(
            !h.expire_before(t - 10 * DAY_MS),
            "an entry at the cutoff stays"
        );
        assert_eq!(h.len(), 3);
        assert!(h.expire_before(t - 10 * DAY_MS + 1));
        assert_eq!(h.len(), 2);
        assert!(!h.expire_before(0), "an earlier cutoff changes nothing");
        assert!(h.expire_before(t + 1));
        assert!(h.is_empty());
    }

    #[test]
    fn an_out_of_order_engagement_still_sees_its_own_window() {
        // Newest first, then one 1 minute behind it: its 7 days reach back to newest − 7 d − 1
        // min, which pruning relative to the newest would already have dropped.
        let t = 100 * DAY_MS;
        let mut h = History::default();
        h.record(t - WINDOW_MS - 30_000, "demo_request");
        h.record(t, "email_open");
        h.record(t - 60_000, "chat");
        h.expire_before(t - 5 * 60_000 - WINDOW_MS); // watermark with 5 min grace
        let s = h.stats_at(t - 60_000);
        assert_eq!(s.count_7d, 2);
        assert!(s.demo_requested);
    }

    #[test]
    fn the_entry_cap_drops_the_oldest() {
        let mut h = History::default();
        for i in 0..(MAX_ENTRIES as i64 + 10) {
            h.record(i, "web_visit");
        }
        assert_eq!(h.len(), MAX_ENTRIES);
        assert_eq!(h.entries[0].0, 10);
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
