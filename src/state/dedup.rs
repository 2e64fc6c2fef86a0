//! De-duplication marks kept in the contact's own record.
//!
//! Every event is keyed by its contact, and every event reads and writes its contact's record,
//! so the record also keeps the events of the contact seen within `state.dedup_retention`:
//! a 64-bit hash of each `event_id` and when it was first seen. A re-delivery is recognised
//! from the record the event reads anyway, with no lookup and no write of its own (they were
//! a RocksDB `Get` and `Put` with a random key per event, and a changelog record).
//!
//! A contact keeps at most [`CAP`] live marks. Past that, an event's mark goes to the `dedup`
//! store as before (partition and event_id → first seen), and the record notes when it last
//! did, so that a miss in the record is looked up there until that mark expires. A record
//! written by a leadflow without marks in it counts as having spilled when it is read: its
//! marks are in the `dedup` store.

use serde::{Deserialize, Serialize};

/// Most live marks one contact record holds.
pub const CAP: usize = 32;

/// The stable 64-bit hash of an event id that a mark holds (FNV-1a of its UTF-8 bytes).
/// Two events of one contact with different ids and the same hash within the retention
/// would be taken for one: about one chance in 10^16 for a contact with 32 live marks.
pub fn event_hash(event_id: &str) -> [u8; 8] {
    use std::hash::Hasher;
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(event_id.as_bytes());
    hasher.finish().to_be_bytes()
}

/// The marks of one contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// (event hash, first seen at in wall-clock ms), in the order seen.
    marks: Vec<([u8; 8], i64)>,
    /// When a mark of this contact last went to the `dedup` store instead (ms).
    spilled_at: Option<i64>,
}

/// What the record says of an event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Seen within the retention: a re-delivery.
    Seen,
    /// Not seen.
    New,
    /// Not in the record, but the record has spilled within the retention: ask the `dedup`
    /// store.
    AskStore,
}

impl Seen {
    /// The marks of a record written before they were kept in it: all of them in the `dedup`
    /// store, as of `now`.
    pub fn in_store(now: i64) -> Seen {
        Seen {
            marks: Vec::new(),
            spilled_at: Some(now),
        }
    }

    /// Whether `hash` was seen after `live_after` (now minus the retention, ms).
    pub fn lookup(&self, hash: [u8; 8], live_after: i64) -> Lookup {
        if self
            .marks
            .iter()
            .any(|(h, at)| *h == hash && *at >= live_after)
        {
            Lookup::Seen
        } else if self.spilled_at.is_some_and(|at| at >= live_after) {
            Lookup::AskStore
        } else {
            Lookup::New
        }
    }

    /// Marks `hash` as seen `now`, dropping the marks seen before `live_after`. `false` when
    /// the record is full: the caller stores the mark in the `dedup` store instead.
    pub fn mark(&mut self, hash: [u8; 8], now: i64, live_after: i64) -> bool {
        self.expire(live_after);
        if self.marks.len() < CAP {
            self.marks.push((hash, now));
            true
        } else {
            self.spilled_at = Some(now);
            false
        }
    }

    /// Drops the marks seen before `live_after`; whether any went.
    pub fn expire(&mut self, live_after: i64) -> bool {
        let before = self.marks.len();
        // Not assumed in order: the wall clock may step back.
        self.marks.retain(|(_, at)| *at >= live_after);
        before != self.marks.len()
    }

    /// Whether no mark is live after `live_after`, in the record or in the store.
    pub fn none_live(&self, live_after: i64) -> bool {
        self.spilled_at.is_none_or(|at| at < live_after)
            && self.marks.iter().all(|(_, at)| *at < live_after)
    }

    /// How many marks the record holds (live or not yet dropped).
    pub fn kept(&self) -> usize {
        self.marks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Stored in every contact record: it must never change.
        assert_eq!(event_hash(""), 0xcbf2_9ce4_8422_2325u64.to_be_bytes());
        assert_eq!(event_hash("a"), 0xaf63_dc4c_8601_ec8cu64.to_be_bytes());
        assert_ne!(event_hash("ev_1"), event_hash("ev_2"));
    }

    #[test]
    fn a_mark_is_seen_until_it_expires() {
        let mut seen = Seen::default();
        let id = event_hash("ev_1");
        assert_eq!(seen.lookup(id, 0), Lookup::New);
        assert!(seen.mark(id, 1_000, 0));
        assert_eq!(seen.lookup(id, 500), Lookup::Seen);
        assert_eq!(seen.lookup(id, 1_000), Lookup::Seen);
        assert_eq!(seen.lookup(id, 1_001), Lookup::New, "expired");
        assert_eq!(seen.lookup(event_hash("ev_2"), 500), Lookup::New);
        assert!(!seen.none_live(1_000));
        assert!(seen.none_live(1_001));
    }

    #[test]
    fn a_full_record_spills_to_the_store_until_the_spilled_mark_expires() {
        let mut seen = Seen::default();
        for i in 0..CAP {
            assert!(seen.mark(event_hash(&format!("ev_{i}")), 1_000 + i as i64, 0));
        }
        let extra = event_hash("ev_extra");
        assert!(!seen.mark(extra, 5_000, 0), "full: the caller stores it");
        assert_eq!(seen.kept(), CAP);
        assert_eq!(seen.lookup(extra, 0), Lookup::AskStore);
        assert_eq!(seen.lookup(event_hash("ev_0"), 0), Lookup::Seen);
        assert_eq!(seen.lookup(extra, 5_001), Lookup::New);
        assert!(!seen.none_live(5_000), "the spilled mark is live");
        // Marks that expired make room again, oldest first.
        assert!(seen.mark(extra, 6_000, 1_002));
        assert_eq!(seen.kept(), CAP - 1);
        assert_eq!(seen.lookup(event_hash("ev_0"), 1_002), Lookup::AskStore);
        assert_eq!(seen.lookup(event_hash("ev_2"), 1_002), Lookup::Seen);
        assert_eq!(seen.lookup(extra, 1_002), Lookup::Seen);
    }

    #[test]
    fn a_record_of_the_old_layout_asks_the_store_for_a_retention() {
        let seen = Seen::in_store(10_000);
        assert_eq!(seen.lookup(event_hash("ev_1"), 9_000), Lookup::AskStore);
        assert_eq!(seen.lookup(event_hash("ev_1"), 10_001), Lookup::New);
    }
}
