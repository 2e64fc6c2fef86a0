//! Changelog topics: every committed change of a per-partition store, so that a task's state
//! can be rebuilt wherever the task goes (Kafka Streams' store changelogs).
//!
//! One compacted topic per store, `<application_id>-<store>-changelog`, with the inputs'
//! partition count: changelog partition `p` belongs to task `p`. A record's key is the store
//! key (which starts with the partition), its value the stored value behind a format byte
//! ([`FORMAT`]); a deletion is a tombstone. Within one commit only the last value of a key is
//! produced.
//!
//! Next to the state, in the same RocksDB write, each task keeps a *checkpoint* per store: the
//! changelog offset up to which the local state includes the changelog, and when that was
//! written. Restoring a task reads its changelogs from the checkpoint (or, without a usable
//! one, from the beginning into a wiped task) to their end.

use std::collections::HashMap;

use super::{Cf, Write};
use crate::sink::{OutputKind, OutputRecord};

/// The stores that have a changelog (the reference tables are rebuilt from their own topics).
pub const STORES: [Cf; 4] = [Cf::Contact, Cf::Dedup, Cf::Task, Cf::Sla];

/// The layout of a changelog value: this byte, then the store's value as RocksDB holds it.
/// A record with another first byte was written by a leadflow with another state layout.
pub const FORMAT: u8 = 1;

/// A changelog record leadflow cannot apply.
#[derive(Debug, thiserror::Error)]
pub enum ChangelogError {
    #[error(
        "{topic}:{partition} at offset {offset} holds state of layout {found}, this leadflow \
         reads layout {FORMAT}: run the leadflow version that wrote it, or rebuild the state \
         from the inputs (stop every instance, delete the application's changelog topics and \
         state directories, reset the group's offsets to the earliest)"
    )]
    UnknownFormat {
        topic: String,
        partition: i32,
        offset: i64,
        found: u8,
    },
    #[error("{topic}:{partition} at offset {offset}: {reason}")]
    Malformed {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}

/// The changelog topic of `store`.
pub fn topic(application_id: &str, store: Cf) -> String {
    format!("{application_id}-{}-changelog", store.name())
}

/// The changelog topics of one application, named once.
pub struct Changelogs {
    topics: Vec<(Cf, String)>,
}

impl Changelogs {
    pub fn new(application_id: &str) -> Changelogs {
        Changelogs {
            topics: STORES
                .iter()
                .map(|cf| (*cf, topic(application_id, *cf)))
                .collect(),
        }
    }

    /// The changelog topic of `store`, if it has one.
    fn topic_of(&self, store: Cf) -> Option<&str> {
        self.topics
            .iter()
            .find(|(cf, _)| *cf == store)
            .map(|(_, t)| t.as_str())
    }

    /// The changelog records of one commit, with their stores: the last write of each key of
    /// a store with a changelog, in the order of first writes, each to its task's partition.
    pub fn records<'a>(
        &self,
        writes: impl IntoIterator<Item = &'a Write>,
    ) -> Vec<(Cf, OutputRecord)> {
        let mut last: HashMap<(Cf, &[u8]), usize> = HashMap::new();
        let mut kept: Vec<(&str, &Write)> = Vec::new();
        for w in writes {
            let Some(topic) = self.topic_of(w.cf) else {
                continue;
            };
            match last.get(&(w.cf, w.key.as_slice())) {
                Some(&i) => kept[i] = (topic, w),
                None => {
                    last.insert((w.cf, w.key.as_slice()), kept.len());
                    kept.push((topic, w));
                }
            }
        }
        kept.into_iter()
            .filter_map(|(topic, w)| {
                let record = OutputRecord {
                    kind: OutputKind::Changelog,
                    topic: topic.to_string(),
                    partition: Some(key_partition(&w.key)?),
                    key: Some(w.key.clone()),
                    value: w.value.as_deref().map(encode),
                    headers: Vec::new(),
                };
                Some((w.cf, record))
            })
            .collect()
    }
}

/// The task a per-partition store key belongs to (its first four bytes).
pub fn key_partition(key: &[u8]) -> Option<i32> {
    key.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_be_bytes)
}

/// A store value as a changelog value.
pub fn encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + value.len());
    out.push(FORMAT);
    out.extend_from_slice(value);
    out
}

/// Where a changelog record came from, for errors.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The store write a changelog record stands for.
pub fn decode(
    store: Cf,
    at: At<'_>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<Write, ChangelogError> {
    let malformed = |reason: &str| ChangelogError::Malformed {
        topic: at.topic.to_string(),
        partition: at.partition,
        offset: at.offset,
        reason: reason.to_string(),
    };
    let key = key.ok_or_else(|| malformed("a record without key"))?;
    if key_partition(key) != Some(at.partition) {
        return Err(malformed("a key of another task's partition"));
    }
    let value = match value {
        None => None,
        Some([FORMAT, rest @ ..]) => Some(rest.to_vec()),
        Some([found, ..]) => {
            return Err(ChangelogError::UnknownFormat {
                topic: at.topic.to_string(),
                partition: at.partition,
                offset: at.offset,
                found: *found,
            })
        }
        Some([]) => return Err(malformed("an empty value")),
    };
    Ok(Write {
        cf: store,
        key: key.to_vec(),
        value,
    })
}

/// How far a task's local state of one store includes its changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The changelog offset of the next record not applied locally.
    pub next_offset: i64,
    /// When the checkpoint was written, ms since the epoch.
    pub written_at: i64,
}

impl Checkpoint {
    /// The checkpoint store's key for `store` of task `partition`.
    pub fn key(partition: i32, store: Cf) -> Vec<u8> {
        super::partition_key(partition, store.name().as_bytes())
    }

    pub fn to_bytes(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(FORMAT);
        out.extend_from_slice(&self.next_offset.to_be_bytes());
        out.extend_from_slice(&self.written_at.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Checkpoint> {
        let [FORMAT, rest @ ..] = bytes else {
            return None;
        };
        if rest.len() != 16 {
            return None;
        }
        Some(Checkpoint {
            next_offset: i64::from_be_bytes(rest[..8].try_into().ok()?),
            written_at: i64::from_be_bytes(rest[8..].try_into().ok()?),
        })
    }

    /// The write that stores this checkpoint.
    pub fn write(self, partition: i32, store: Cf) -> Write {
        Write {
            cf: Cf::Checkpoint,
            key: Checkpoint::key(partition, store),
            value: Some(self.to_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::partition_key;

    fn w(cf: Cf, partition: i32, key: &str, value: Option<&str>) -> Write {
        Write {
            cf,
            key: partition_key(partition, key.as_bytes()),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn a_commit_produces_the_last_value_of_each_key_to_its_tasks_partition() {
        let writes = [
            w(Cf::Contact, 3, "ct_1", Some("v1")),
            w(Cf::Dedup, 3, "ev_1", Some("t")),
            w(Cf::Accounts, 3, "acc", Some("global")),
            w(Cf::Contact, 3, "ct_1", Some("v2")),
            w(Cf::Contact, 5, "ct_2", None),
        ];
        let out = Changelogs::new("app").records(&writes);
        let summary: Vec<(String, Option<i32>, Option<Vec<u8>>)> = out
            .iter()
            .map(|(_, r)| (r.topic.clone(), r.partition, r.value.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "app-contact-changelog".to_string(),
                    Some(3),
                    Some(encode(b"v2"))
                ),
                (
                    "app-dedup-changelog".to_string(),
                    Some(3),
                    Some(encode(b"t"))
                ),
                ("app-contact-changelog".to_string(), Some(5), None),
            ],
            "reference tables have no changelog; a deletion is a tombstone"
        );
        assert!(out.iter().all(|(_, r)| r.kind == OutputKind::Changelog));
        assert_eq!(
            out.iter().map(|(cf, _)| *cf).collect::<Vec<_>>(),
            [Cf::Contact, Cf::Dedup, Cf::Contact]
        );
    }

    #[test]
    fn decoding_checks_the_layout_byte_and_the_keys_task() {
        let at = At {
            topic: "app-contact-changelog",
            partition: 3,
            offset: 7,
        };
        let key = partition_key(3, b"ct_1");
        let write = decode(Cf::Contact, at, Some(&key), Some(&encode(b"state"))).unwrap();
        assert_eq!(write, w(Cf::Contact, 3, "ct_1", Some("state")));
        let deletion = decode(Cf::Contact, at, Some(&key), None).unwrap();
        assert_eq!(deletion.value, None);
        let err = decode(Cf::Contact, at, Some(&key), Some(&[9, 1, 2]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layout 9"), "{err}");
        assert!(err.contains("app-contact-changelog:3 at offset 7"), "{err}");
        let other = partition_key(4, b"ct_1");
        assert!(decode(Cf::Contact, at, Some(&other), None).is_err());
        assert!(decode(Cf::Contact, at, None, None).is_err());
    }

    #[test]
    fn a_checkpoint_round_trips_and_a_foreign_one_is_not_read() {
        let c = Checkpoint {
            next_offset: 42,
            written_at: 1_700_000_000_000,
        };
        assert_eq!(Checkpoint::from_bytes(&c.to_bytes()), Some(c));
        assert_eq!(Checkpoint::from_bytes(&[2; 17]), None);
        assert_eq!(Checkpoint::from_bytes(&[FORMAT; 3]), None);
    }
}
