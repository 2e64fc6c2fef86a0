//! Everything kept about one contact, as one record: its merged profile, its recent
//! engagements, the last decision emitted for it and the event ids it has seen.
//!
//! Every event of a contact needs all four, so they are read and written together: one
//! RocksDB lookup and one write per event instead of several of each (the state store was a
//! third of the pipeline's time when they were separate records).

use serde::{Deserialize, Serialize};

use super::engagement::History;
use super::profile::Profile;
use crate::route::PreviousDecision;
use crate::state::dedup::Seen;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactState {
    /// `None` until the first contact event (engagements may come first).
    pub profile: Option<Profile>,
    pub history: History,
    /// The last decision emitted (`lead.previous`).
    pub previous: Option<PreviousDecision>,
    /// The contact's de-duplication marks. Last, so that a leadflow of the layout before it
    /// still reads the rest of the record (postcard ignores what follows).
    pub seen: Seen,
}

/// A contact record of the layout before the marks were kept in it.
#[derive(Deserialize)]
struct WithoutMarks {
    profile: Option<Profile>,
    history: History,
    previous: Option<PreviousDecision>,
}

/// What compaction should do with a stored contact whose engagements are all behind the
/// horizon.
#[derive(Debug, PartialEq)]
pub enum Expiry {
    Keep,
    /// Nothing but expired engagements: an unknown contact that went quiet.
    Remove,
    /// The same contact without its expired engagements.
    Replace(Vec<u8>),
}

impl ContactState {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("postcard serializes plain structs")
    }

    /// Reads a record of either layout. One written before the marks were kept in it (it
    /// ends where the marks would start) has its marks in the `dedup` store, as of `now`.
    pub fn from_bytes(bytes: &[u8]) -> Result<ContactState, postcard::Error> {
        ContactState::from_bytes_at(bytes, crate::time::now_ms())
    }

    fn from_bytes_at(bytes: &[u8], now: i64) -> Result<ContactState, postcard::Error> {
        match postcard::from_bytes(bytes) {
            Ok(state) => Ok(state),
            Err(e) => match postcard::from_bytes::<WithoutMarks>(bytes) {
                Ok(old) => Ok(ContactState {
                    profile: old.profile,
                    history: old.history,
                    previous: old.previous,
                    seen: Seen::in_store(now),
                }),
                Err(_) => Err(e),
            },
        }
    }

    /// The compaction decision for a stored contact, given that no event at or after the
    /// watermark looks at engagements before `cutoff` and that marks seen before
    /// `live_after` have expired. Unreadable values are kept (the processor reports them when
    /// it reads them).
    pub fn expire(bytes: &[u8], cutoff: i64, live_after: i64) -> Expiry {
        let Ok(mut state) = ContactState::from_bytes(bytes) else {
            return Expiry::Keep;
        };
        let engagements = state.history.expire_before(cutoff);
        let marks = state.seen.expire(live_after);
        if !engagements && !marks {
            return Expiry::Keep;
        }
        if state.history.is_empty()
            && state.profile.is_none()
            && state.previous.is_none()
            && state.seen.none_live(live_after)
        {
            Expiry::Remove
        } else {
            Expiry::Replace(state.to_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_history(times: &[i64]) -> ContactState {
        let mut state = ContactState::default();
        for t in times {
            state.history.record(*t, "web_visit");
        }
        state
    }

    #[test]
    fn compaction_drops_expired_engagements_and_quiet_unknown_contacts() {
        let quiet_unknown = with_history(&[10, 20]);
        assert_eq!(
            ContactState::expire(&quiet_unknown.to_bytes(), 100, 0),
            Expiry::Remove
        );
        let recent = with_history(&[10, 200]);
        let Expiry::Replace(bytes) = ContactState::expire(&recent.to_bytes(), 100, 0) else {
            panic!("the old engagement must go");
        };
        assert_eq!(
            ContactState::from_bytes(&bytes).unwrap(),
            with_history(&[200])
        );
        let mut known = with_history(&[10]);
        known.profile = Some(Profile::new("ct_1"));
        let Expiry::Replace(bytes) = ContactState::expire(&known.to_bytes(), 100, 0) else {
            panic!("a known contact keeps its profile");
        };
        let kept = ContactState::from_bytes(&bytes).unwrap();
        assert!(kept.history.is_empty());
        assert_eq!(kept.profile, known.profile);
        assert_eq!(ContactState::expire(&recent.to_bytes(), 5, 0), Expiry::Keep);
        assert_eq!(ContactState::expire(b"\xff\xff", 100, 0), Expiry::Keep);
    }

    #[test]
    fn compaction_drops_expired_marks_and_a_record_that_only_had_marks() {
        use crate::state::dedup::{event_hash, Lookup};
        let mut marks_only = ContactState::default();
        assert!(marks_only.seen.mark(event_hash("ev_1"), 1_000, 0));
        assert_eq!(
            ContactState::expire(&marks_only.to_bytes(), 100, 500),
            Expiry::Keep,
            "the mark is live"
        );
        assert_eq!(
            ContactState::expire(&marks_only.to_bytes(), 100, 2_000),
            Expiry::Remove
        );
        let mut known = marks_only.clone();
        known.profile = Some(Profile::new("ct_1"));
        assert!(known.seen.mark(event_hash("ev_2"), 3_000, 0));
        let Expiry::Replace(bytes) = ContactState::expire(&known.to_bytes(), 100, 2_000) else {
            panic!("the expired mark must go");
        };
        let kept = ContactState::from_bytes(&bytes).unwrap();
        assert_eq!(kept.seen.kept(), 1);
        assert_eq!(kept.seen.lookup(event_hash("ev_2"), 2_000), Lookup::Seen);
        assert_eq!(kept.seen.lookup(event_hash("ev_1"), 0), Lookup::New);
    }

    /// The record as the leadflow before marks in records wrote it (the same fields, in the
    /// same order, without `seen`).
    #[derive(Serialize)]
    struct OldLayout<'a> {
        profile: &'a Option<Profile>,
        history: &'a History,
        previous: &'a Option<PreviousDecision>,
    }

    #[test]
    fn a_record_of_the_old_layout_reads_with_its_marks_in_the_store() {
        use crate::state::dedup::{event_hash, Lookup};
        let mut state = with_history(&[10, 20]);
        state.profile = Some(Profile::new("ct_1"));
        let old = postcard::to_stdvec(&OldLayout {
            profile: &state.profile,
            history: &state.history,
            previous: &state.previous,
        })
        .unwrap();
        let read = ContactState::from_bytes_at(&old, 50_000).unwrap();
        assert_eq!(read.profile, state.profile);
        assert_eq!(read.history, state.history);
        assert_eq!(
            read.seen.lookup(event_hash("ev_1"), 49_000),
            Lookup::AskStore
        );
        // And the other way: the old layout reads the new one's fields and ignores the marks.
        let mut new = state.clone();
        assert!(new.seen.mark(event_hash("ev_1"), 1, 0));
        #[derive(Deserialize, PartialEq, Debug)]
        struct OldRead {
            profile: Option<Profile>,
            history: History,
            previous: Option<PreviousDecision>,
        }
        let back: OldRead = postcard::from_bytes(&new.to_bytes()).unwrap();
        assert_eq!(back.profile, state.profile);
        assert_eq!(back.history, state.history);
        assert_eq!(back.previous, state.previous);
        assert!(ContactState::from_bytes(b"\xff\xff\xff").is_err());
    }
}
