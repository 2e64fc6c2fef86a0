//! Writes of records whose outputs are not yet acknowledged.
//!
//! A record's state changes (de-duplication mark, profile, statistics, last decision) reach
//! RocksDB only once every output of the record is delivered, in input order. Until then they
//! sit here, so later records already see them. After a crash RocksDB holds exactly the
//! effects of delivered records, and everything else is processed again.

use std::collections::HashMap;

use super::{Cf, StateError, StateStore};

/// One write to a store; `None` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub cf: Cf,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The record (sequence number) that staged a value last, and the value (`None` deletes).
type Latest = (u64, Option<Vec<u8>>);

/// Staged writes by store and key, each with the sequence number of the record that made it
/// last. One map per store, so that a lookup borrows the key instead of building one.
#[derive(Default)]
pub struct Staged {
    latest: [HashMap<Vec<u8>, Latest>; Cf::COUNT],
}

impl Staged {
    /// The value a reader should see: staged if any, else stored.
    pub fn get(
        &self,
        store: &StateStore,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StateError> {
        match self.latest[cf.index()].get(key) {
            Some((_, value)) => Ok(value.clone()),
            None => store.get(cf, key),
        }
    }

    /// The staged keys of `cf` from `from` (included) to `until` (excluded), deletions
    /// included, in no order.
    pub fn keys_in(&self, cf: Cf, from: &[u8], until: &[u8]) -> Vec<Vec<u8>> {
        self.latest[cf.index()]
            .keys()
            .filter(|k| k.as_slice() >= from && k.as_slice() < until)
            .cloned()
            .collect()
    }

    pub fn stage(&mut self, seq: u64, writes: &[Write]) {
        for w in writes {
            let slot = &mut self.latest[w.cf.index()];
            match slot.get_mut(w.key.as_slice()) {
                Some(latest) => *latest = (seq, w.value.clone()),
                None => {
                    slot.insert(w.key.clone(), (seq, w.value.clone()));
                }
            }
        }
    }

    /// Writes record `seq`'s writes to the store and forgets those no later record replaced.
    pub fn commit(
        &mut self,
        store: &StateStore,
        seq: u64,
        writes: &[Write],
    ) -> Result<(), StateError> {
        self.commit_all(store, std::iter::once((seq, writes)), &[])
    }

    /// [`commit`](Self::commit) for several records (in their order) in one atomic write,
    /// together with `also` (writes of no record: checkpoints).
    pub fn commit_all<'a>(
        &mut self,
        store: &StateStore,
        records: impl Iterator<Item = (u64, &'a [Write])> + Clone,
        also: &'a [Write],
    ) -> Result<(), StateError> {
        store.write(records.clone().flat_map(|(_, writes)| writes).chain(also))?;
        for (seq, writes) in records {
            for w in writes {
                let slot = &mut self.latest[w.cf.index()];
                if slot.get(w.key.as_slice()).is_some_and(|(s, _)| *s == seq) {
                    slot.remove(w.key.as_slice());
                }
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.latest.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.iter().all(HashMap::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn w(key: &str, value: Option<&str>) -> Write {
        Write {
            cf: Cf::Contact,
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn staged_writes_are_visible_before_commit_and_durable_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        let mut staged = Staged::default();
        staged.stage(1, &[w("a", Some("1"))]);
        staged.stage(2, &[w("a", Some("2")), w("b", Some("x"))]);
        assert_eq!(
            staged.get(&store, Cf::Contact, b"a").unwrap(),
            Some(b"2".to_vec())
        );
        assert_eq!(
            store.get(Cf::Contact, b"a").unwrap(),
            None,
            "nothing stored before commit"
        );

        staged.commit(&store, 1, &[w("a", Some("1"))]).unwrap();
        // Record 2 still owns the newest value of "a".
        assert_eq!(
            staged.get(&store, Cf::Contact, b"a").unwrap(),
            Some(b"2".to_vec())
        );
        staged
            .commit(&store, 2, &[w("a", Some("2")), w("b", Some("x"))])
            .unwrap();
        assert!(staged.is_empty());
        assert_eq!(store.get(Cf::Contact, b"a").unwrap(), Some(b"2".to_vec()));
        drop(store);
        let reopened = StateStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(
            reopened.get(Cf::Contact, b"b").unwrap(),
            Some(b"x".to_vec())
        );
    }
}
