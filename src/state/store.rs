//! The RocksDB database behind every store, one column family per store.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rocksdb::compaction_filter::Decision as Compaction;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

use super::Write;

/// The stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cf {
    /// event_id → first-seen time (ms), per partition; expires after the retention.
    Dedup,
    /// contact_id → merged profile, per partition.
    Profile,
    /// contact_id → recent engagements, per partition.
    Engagement,
    /// contact_id → last decision emitted, per partition.
    Decision,
    /// account_id → account (global reference table).
    Accounts,
    /// domain → account_id (global index of accounts).
    Domains,
    /// rep_id → rep (global reference table).
    Reps,
    /// partition → the task's event-time state (stream times and watermark).
    Task,
}

impl Cf {
    const ALL: [Cf; 8] = [
        Cf::Dedup,
        Cf::Profile,
        Cf::Engagement,
        Cf::Decision,
        Cf::Accounts,
        Cf::Domains,
        Cf::Reps,
        Cf::Task,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Dedup => "dedup",
            Cf::Profile => "profile",
            Cf::Engagement => "engagement",
            Cf::Decision => "decision",
            Cf::Accounts => "accounts",
            Cf::Domains => "domains",
            Cf::Reps => "reps",
            Cf::Task => "task",
        }
    }
}

/// The state directory cannot be used; the processor cannot run without it.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store at {path}: {source}")]
    Open {
        path: String,
        source: rocksdb::Error,
    },
    #[error("state store: {0}")]
    Io(#[from] rocksdb::Error),
    #[error("state store holds an unreadable value in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
}

/// Most memory all memtables may hold together.
const MEMTABLE_BUDGET: usize = 64 << 20;
/// Block cache shared by every store (data blocks, indexes and bloom filters).
const BLOCK_CACHE: usize = 32 << 20;

/// One RocksDB database with a column family per [`Cf`].
pub struct StateStore {
    db: DB,
    /// Per partition: engagement histories whose newest entry is older than this (event time,
    /// ms) are removed by compaction. Partitions not listed keep everything.
    history_horizon: Arc<RwLock<HashMap<u32, i64>>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl StateStore {
    /// Opens (or creates) the store; de-duplication marks older than `dedup_retention` are
    /// dropped by RocksDB compaction and ignored on read.
    pub fn open(path: &Path, dedup_retention: Duration) -> Result<StateStore, StateError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Bounded memory whatever the state size: all memtables together stay under
        // MEMTABLE_BUDGET (RocksDB flushes the largest when the total is reached), and table
        // blocks, indexes and filters share one LRU cache of BLOCK_CACHE bytes.
        db_options.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
        let retention_ms = dedup_retention.as_millis() as i64;
        let history_horizon: Arc<RwLock<HashMap<u32, i64>>> = Arc::default();
        // Point lookups only, most of them misses (a new event_id, a new contact): bloom
        // filters in the memtable and in every table file answer those without a search.
        let mut tables = rocksdb::BlockBasedOptions::default();
        tables.set_bloom_filter(10.0, false);
        tables.set_whole_key_filtering(true);
        tables.set_cache_index_and_filter_blocks(true);
        tables.set_block_cache(&cache);
        let families = Cf::ALL.iter().map(|cf| {
            let mut options = Options::default();
            options.set_compression_type(rocksdb::DBCompressionType::Lz4);
            options.set_block_based_table_factory(&tables);
            options.set_memtable_whole_key_filtering(true);
            options.set_memtable_prefix_bloom_ratio(0.05);
            options.set_write_buffer_size(MEMTABLE_BUDGET / 4);
            if *cf == Cf::Dedup {
                options.set_compaction_filter(
                    "dedup-retention",
                    move |_level: u32, _key: &[u8], value: &[u8]| match dedup_seen_at(value) {
                        Some(at) if at < now_ms() - retention_ms => Compaction::Remove,
                        _ => Compaction::Keep,
                    },
                );
            }
            if *cf == Cf::Engagement {
                let horizon = history_horizon.clone();
                options.set_compaction_filter(
                    "engagement-history-horizon",
                    move |_level: u32, key: &[u8], value: &[u8]| {
                        if history_expired(&horizon, key, value) {
                            Compaction::Remove
                        } else {
                            Compaction::Keep
                        }
                    },
                );
            }
            ColumnFamilyDescriptor::new(cf.name(), options)
        });
        let db = DB::open_cf_descriptors(&db_options, path, families).map_err(|source| {
            StateError::Open {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(StateStore {
            db,
            history_horizon,
        })
    }

    /// Lets compaction remove the engagement histories of `partition` whose newest engagement
    /// happened before `cutoff` (watermark − the longest window): no event at or after the
    /// watermark can count them any more, so contacts that went quiet do not keep state.
    /// The horizon only moves forward.
    pub fn set_history_horizon(&self, partition: i32, cutoff: i64) {
        let mut horizons = self
            .history_horizon
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let slot = horizons.entry(partition as u32).or_insert(cutoff);
        *slot = (*slot).max(cutoff);
    }

    /// Compacts one store now (tests; RocksDB otherwise compacts in the background).
    pub fn compact(&self, cf: Cf) {
        self.db
            .compact_range_cf(self.handle(cf), None::<&[u8]>, None::<&[u8]>);
    }

    fn handle(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every family is created in `open`.
        self.db.cf_handle(cf.name()).expect("column family exists")
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.db.get_cf(self.handle(cf), key)?)
    }

    /// Applies `writes` atomically; a key written several times gets only its last value.
    ///
    /// The runtime commits runs of records in one batch, and a busy task writes the same keys
    /// (its watermark, a contact's profile) record after record: only the last value of each
    /// is visible once the batch is applied, so the earlier ones are not inserted at all.
    pub fn write<'a>(&self, writes: impl IntoIterator<Item = &'a Write>) -> Result<(), StateError> {
        let mut last: HashMap<(Cf, &[u8]), &Write> = HashMap::new();
        for w in writes {
            last.insert((w.cf, &w.key), w);
        }
        let mut batch = WriteBatch::default();
        for w in last.into_values() {
            match &w.value {
                Some(v) => batch.put_cf(self.handle(w.cf), &w.key, v),
                None => batch.delete_cf(self.handle(w.cf), &w.key),
            }
        }
        Ok(self.db.write(batch)?)
    }

    /// Whether `event_id`'s mark (as stored) is still within the retention.
    pub fn dedup_live(value: &[u8], retention: Duration) -> bool {
        dedup_seen_at(value).is_some_and(|at| at >= now_ms() - retention.as_millis() as i64)
    }

    /// The value of a de-duplication mark made now.
    pub fn dedup_mark() -> Vec<u8> {
        now_ms().to_be_bytes().to_vec()
    }
}

/// Whether an engagement history (key: partition then contact) is entirely behind its
/// partition's horizon. Unreadable values are kept (the reader reports them).
fn history_expired(horizon: &RwLock<HashMap<u32, i64>>, key: &[u8], value: &[u8]) -> bool {
    let Some(partition) = key
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
    else {
        return false;
    };
    let Some(cutoff) = horizon
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&partition)
        .copied()
    else {
        return false;
    };
    crate::enrich::engagement::History::from_bytes(value)
        .ok()
        .is_some_and(|h| h.newest().is_none_or(|newest| newest < cutoff))
}

fn dedup_seen_at(value: &[u8]) -> Option<i64> {
    value.try_into().ok().map(i64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::engagement::History;
    use crate::state::partition_key;

    #[test]
    fn compaction_reclaims_histories_behind_their_partitions_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let history = |newest: i64| {
            let mut h = History::default();
            h.record(newest - 10, "web_visit");
            h.record(newest, "call");
            h.to_bytes()
        };
        let put = |partition: i32, contact: &str, newest: i64| Write {
            cf: Cf::Engagement,
            key: partition_key(partition, contact.as_bytes()),
            value: Some(history(newest)),
        };
        store
            .write(&[
                put(0, "quiet", 1_000),
                put(0, "active", 5_000),
                put(1, "other", 1_000),
            ])
            .unwrap();
        store.set_history_horizon(0, 2_000);
        store.set_history_horizon(0, 1_500); // never moves back
        store.compact(Cf::Engagement);
        let get = |partition: i32, contact: &str| {
            store
                .get(
                    Cf::Engagement,
                    &partition_key(partition, contact.as_bytes()),
                )
                .unwrap()
        };
        assert_eq!(get(0, "quiet"), None, "all of it behind the horizon");
        assert_eq!(get(0, "active"), Some(history(5_000)));
        assert_eq!(
            get(1, "other"),
            Some(history(1_000)),
            "partition 1 has no horizon"
        );
    }

    #[test]
    fn a_batch_keeps_the_last_write_of_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let w = |cf: Cf, key: &str, value: Option<&str>| Write {
            cf,
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
        };
        store.write(&[w(Cf::Profile, "gone", Some("old"))]).unwrap();
        store
            .write(&[
                w(Cf::Profile, "a", Some("1")),
                w(Cf::Task, "a", Some("task")),
                w(Cf::Profile, "a", Some("2")),
                w(Cf::Profile, "gone", Some("new")),
                w(Cf::Profile, "gone", None),
                w(Cf::Profile, "back", None),
                w(Cf::Profile, "back", Some("3")),
            ])
            .unwrap();
        assert_eq!(store.get(Cf::Profile, b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.get(Cf::Task, b"a").unwrap(), Some(b"task".to_vec()));
        assert_eq!(store.get(Cf::Profile, b"gone").unwrap(), None);
        assert_eq!(
            store.get(Cf::Profile, b"back").unwrap(),
            Some(b"3".to_vec())
        );
    }
}
