//! Everything kept about one contact, as one record: its merged profile, its recent
//! engagements and the last decision emitted for it.
//!
//! Every event of a contact needs all three, so they are read and written together: one
//! RocksDB lookup and one write per event instead of three of each (the state store was a
//! third of the pipeline's time when they were separate records).

use serde::{Deserialize, Serialize};

use super::engagement::History;
use super::profile::Profile;
use crate::route::PreviousDecision;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactState {
    /// `None` until the first contact event (engagements may come first).
    pub profile: Option<Profile>,
    pub history: History,
    /// The last decision emitted (`lead.previous`).
    pub previous: Option<PreviousDecision>,
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

    pub fn from_bytes(bytes: &[u8]) -> Result<ContactState, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// The compaction decision for a stored contact, given that no event at or after the
    /// watermark looks at engagements before `cutoff`. Unreadable values are kept (the
    /// processor reports them when it reads them).
    pub fn expire(bytes: &[u8], cutoff: i64) -> Expiry {
        let Ok(mut state) = ContactState::from_bytes(bytes) else {
            return Expiry::Keep;
        };
        if !state.history.expire_before(cutoff) {
            return Expiry::Keep;
        }
        if state.history.is_empty() && state.profile.is_none() && state.previous.is_none() {
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
            ContactState::expire(&quiet_unknown.to_bytes(), 100),
            Expiry::Remove
        );
        let recent = with_history(&[10, 200]);
        let Expiry::Replace(bytes) = ContactState::expire(&recent.to_bytes(), 100) else {
            panic!("the old engagement must go");
        };
        assert_eq!(
            ContactState::from_bytes(&bytes).unwrap(),
            with_history(&[200])
        );
        let mut known = with_history(&[10]);
        known.profile = Some(Profile::new("ct_1"));
        let Expiry::Replace(bytes) = ContactState::expire(&known.to_bytes(), 100) else {
            panic!("a known contact keeps its profile");
        };
        let kept = ContactState::from_bytes(&bytes).unwrap();
        assert!(kept.history.is_empty());
        assert_eq!(kept.profile, known.profile);
        assert_eq!(ContactState::expire(&recent.to_bytes(), 5), Expiry::Keep);
        assert_eq!(ContactState::expire(b"\xff\xff", 100), Expiry::Keep);
    }
}
