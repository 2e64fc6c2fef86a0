//! The RocksDB database behind every store, one column family per store.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::ffi::CStr;

use rocksdb::compaction_filter::{CompactionFilter, Decision as Compaction};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};

use super::Write;
use crate::enrich::contact::{ContactState, Expiry};

/// The stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cf {
    /// event_id → first-seen time (ms), per partition; expires after the retention. Only
    /// for the marks that do not fit in their contact's record (`state::dedup`), and those
    /// of older leadflows.
    Dedup,
    /// contact_id → the contact's merged profile, recent engagements and last decision
    /// (`enrich::contact::ContactState`), per partition.
    Contact,
    /// account_id → account (global reference table).
    Accounts,
    /// domain → account_id (global index of accounts).
    Domains,
    /// rep_id → rep (global reference table).
    Reps,
    /// partition → the task's event-time state (stream times and watermark); partition and
    /// a kind byte → the task's assignment state (`pipeline::assign`).
    Task,
    /// partition and store name → how far the task's local state includes that store's
    /// changelog (`changelog::Checkpoint`), written with the state it describes.
    Checkpoint,
    /// Decisions timed against their SLA and their timers, per partition (`sla::keys`).
    Sla,
}

impl Cf {
    const ALL: [Cf; 8] = [
        Cf::Dedup,
        Cf::Contact,
        Cf::Accounts,
        Cf::Domains,
        Cf::Reps,
        Cf::Task,
        Cf::Checkpoint,
        Cf::Sla,
    ];

    /// How many stores there are.
    pub const COUNT: usize = Cf::ALL.len();

    /// The store's position in [`Cf::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Cf::Dedup => "dedup",
            Cf::Contact => "contact",
            Cf::Accounts => "accounts",
            Cf::Domains => "domains",
            Cf::Reps => "reps",
            Cf::Task => "task",
            Cf::Checkpoint => "checkpoint",
            Cf::Sla => "sla",
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
    #[error(
        "the state store at {path} was written by an older leadflow (separate profile, \
         engagement and decision stores); stop every instance, delete the directory and \
         restart (contacts then start again from their next event; reset the consumer \
         group's offsets first to rebuild them from what the input topics still hold)"
    )]
    OldLayout { path: String },
    #[error("state store holds an unreadable value in {cf}: {reason}")]
    Corrupt { cf: &'static str, reason: String },
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Most memory all memtables may hold together.
const MEMTABLE_BUDGET: usize = 64 << 20;
/// Block cache shared by every store (data blocks, indexes and bloom filters) unless the
/// topology says otherwise (`state.block_cache`).
pub const DEFAULT_BLOCK_CACHE: usize = 64 << 20;

/// One RocksDB database with a column family per [`Cf`].
pub struct StateStore {
    db: DB,
    /// Per partition: engagement histories whose newest entry is older than this (event time,
    /// ms) are removed by compaction. Partitions not listed keep everything.
    history_horizon: Arc<RwLock<HashMap<u32, i64>>>,
    /// Bumped after every write to a reference table, so that readers caching reference data
    /// know when to forget it.
    reference_version: AtomicU64,
}

use crate::time::now_ms;

impl StateStore {
    /// Opens (or creates) the store; de-duplication marks older than `dedup_retention` are
    /// dropped by RocksDB compaction and ignored on read.
    pub fn open(path: &Path, dedup_retention: Duration) -> Result<StateStore, StateError> {
        StateStore::open_with_cache(path, dedup_retention, DEFAULT_BLOCK_CACHE)
    }

    /// [`open`](Self::open) with a block cache of `block_cache` bytes.
    pub fn open_with_cache(
        path: &Path,
        dedup_retention: Duration,
        block_cache: usize,
    ) -> Result<StateStore, StateError> {
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // Bounded memory whatever the state size: all memtables together stay under
        // MEMTABLE_BUDGET (RocksDB flushes the largest when the total is reached), and table
        // blocks, indexes and filters share one LRU cache of `block_cache` bytes.
        db_options.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let cache = rocksdb::Cache::new_lru_cache(block_cache);
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
            if *cf == Cf::Contact {
                options.set_compaction_filter_factory(HistoryExpiry {
                    horizon: history_horizon.clone(),
                    retention_ms,
                });
            }
            ColumnFamilyDescriptor::new(cf.name(), options)
        });
        refuse_old_layout(&db_options, path)?;
        let db = DB::open_cf_descriptors(&db_options, path, families).map_err(|source| {
            StateError::Open {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(StateStore {
            db,
            history_horizon,
            reference_version: AtomicU64::new(0),
        })
    }

    /// Lets compaction remove the engagements of `partition` that happened before `cutoff`
    /// (watermark − the longest window): no event at or after the watermark can count them
    /// any more, so contacts that went quiet keep no engagements, and a contact known only
    /// from such engagements is removed.
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

    /// Deletes every key of task `partition` in `cf` (a per-partition store), and its
    /// checkpoint, in one write.
    pub fn wipe_partition(&self, cf: Cf, partition: i32) -> Result<(), StateError> {
        let from = (partition as u32).to_be_bytes();
        let mut batch = WriteBatch::default();
        match (partition as u32).checked_add(1) {
            Some(next) => batch.delete_range_cf(self.handle(cf), from, next.to_be_bytes()),
            None => {
                for key in self.keys_from(cf, &from)? {
                    batch.delete_cf(self.handle(cf), key);
                }
            }
        }
        batch.delete_cf(
            self.handle(Cf::Checkpoint),
            super::changelog::Checkpoint::key(partition, cf),
        );
        Ok(self.db.write(batch)?)
    }

    /// Deletes every key of a store (the reference tables, before they are read again).
    pub fn wipe(&self, cf: Cf) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for key in self.keys_from(cf, &[])? {
            batch.delete_cf(self.handle(cf), key);
        }
        Ok(self.db.write(batch)?)
    }

    /// Every key of `cf` from `from` on.
    fn keys_from(&self, cf: Cf, from: &[u8]) -> Result<Vec<Box<[u8]>>, StateError> {
        let mode = rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward);
        let mut keys = Vec::new();
        for item in self.db.iterator_cf(self.handle(cf), mode) {
            keys.push(item?.0);
        }
        Ok(keys)
    }

    /// The entries of `cf` from `from` (included) to `until` (excluded), in key order, at
    /// most `limit` of them.
    pub fn entries_in(
        &self,
        cf: Cf,
        from: &[u8],
        until: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StateError> {
        let mut options = rocksdb::ReadOptions::default();
        options.set_iterate_upper_bound(until.to_vec());
        let mode = rocksdb::IteratorMode::From(from, rocksdb::Direction::Forward);
        let mut entries = Vec::new();
        for item in self.db.iterator_cf_opt(self.handle(cf), options, mode) {
            let (k, v) = item?;
            entries.push((k.into_vec(), v.into_vec()));
            if entries.len() >= limit {
                break;
            }
        }
        Ok(entries)
    }

    /// Every key and value of a store, in key order (tools and tests; not for hot paths).
    pub fn entries(&self, cf: Cf) -> Result<Vec<Entry>, StateError> {
        self.entries_after(cf, None, usize::MAX)
    }

    /// At most `limit` keys and values of a store after `after` (from the first without),
    /// in key order: a store read in chunks.
    pub fn entries_after(
        &self,
        cf: Cf,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StateError> {
        let mode = match after {
            Some(key) => rocksdb::IteratorMode::From(key, rocksdb::Direction::Forward),
            None => rocksdb::IteratorMode::Start,
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.handle(cf), mode) {
            let (k, v) = item?;
            if after.is_some_and(|a| *k == *a) {
                continue;
            }
            out.push((k.into_vec(), v.into_vec()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The checkpoint of `store` for task `partition`, if one is stored and readable.
    pub fn checkpoint(
        &self,
        partition: i32,
        store: Cf,
    ) -> Result<Option<super::changelog::Checkpoint>, StateError> {
        let key = super::changelog::Checkpoint::key(partition, store);
        Ok(self
            .get(Cf::Checkpoint, &key)?
            .and_then(|b| super::changelog::Checkpoint::from_bytes(&b)))
    }

    /// Changes whenever a reference table (accounts, domains, reps) has changed. A value read
    /// from a reference table after this returned `v` is current for as long as it returns `v`.
    pub fn reference_version(&self) -> u64 {
        self.reference_version.load(Ordering::Acquire)
    }

    /// Applies writes to the reference tables ([`write`](Self::write)), then tells readers of
    /// [`reference_version`](Self::reference_version) that their cached copies are stale.
    pub fn write_reference<'a>(
        &self,
        writes: impl IntoIterator<Item = &'a Write>,
    ) -> Result<(), StateError> {
        let result = self.write(writes);
        self.reference_version.fetch_add(1, Ordering::Release);
        result
    }

    /// Whether a mark of the `dedup` store (as stored) was seen after `live_after` (ms).
    pub fn dedup_live(value: &[u8], live_after: i64) -> bool {
        dedup_seen_at(value).is_some_and(|at| at >= live_after)
    }

    /// The value of a `dedup` store mark made at `now` (ms).
    pub fn dedup_mark(now: i64) -> Vec<u8> {
        now.to_be_bytes().to_vec()
    }
}

/// The stores of leadflow before one record per contact; a state directory that has them
/// was written by an older version.
const OLD_STORES: [&str; 3] = ["profile", "engagement", "decision"];

/// Refuses a state directory written with separate profile, engagement and decision stores:
/// opening it would silently start every contact from nothing.
fn refuse_old_layout(options: &Options, path: &Path) -> Result<(), StateError> {
    // A directory that is not a database yet has no column families to list.
    let Ok(existing) = DB::list_cf(options, path) else {
        return Ok(());
    };
    if existing.iter().any(|cf| OLD_STORES.contains(&cf.as_str())) {
        return Err(StateError::OldLayout {
            path: path.display().to_string(),
        });
    }
    Ok(())
}

/// Compaction of the contact store: engagements behind their partition's horizon and
/// de-duplication marks past the retention go, and so does a contact that has nothing else
/// (an engagement-only contact that went quiet).
struct HistoryExpiry {
    horizon: Arc<RwLock<HashMap<u32, i64>>>,
    /// The de-duplication retention: marks in a record older than this go too.
    retention_ms: i64,
}

impl CompactionFilterFactory for HistoryExpiry {
    type Filter = HistoryExpiryRun;

    fn create(&mut self, _context: CompactionFilterContext) -> HistoryExpiryRun {
        HistoryExpiryRun {
            horizon: self.horizon.clone(),
            retention_ms: self.retention_ms,
            replacement: Vec::new(),
        }
    }

    fn name(&self) -> &CStr {
        c"contact-history-horizon"
    }
}

/// One compaction run's filter (RocksDB uses it from one thread only).
struct HistoryExpiryRun {
    horizon: Arc<RwLock<HashMap<u32, i64>>>,
    retention_ms: i64,
    /// The last changed value handed to RocksDB.
    replacement: Vec<u8>,
}

impl CompactionFilter for HistoryExpiryRun {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> Compaction {
        let Some(cutoff) = partition_horizon(&self.horizon, key) else {
            return Compaction::Keep;
        };
        match ContactState::expire(value, cutoff, now_ms() - self.retention_ms) {
            Expiry::Keep => Compaction::Keep,
            Expiry::Remove => Compaction::Remove,
            Expiry::Replace(bytes) => {
                self.replacement = bytes;
                // SAFETY: the value must outlive only this call. RocksDB's C API copies a
                // changed value into its own string as soon as the filter returns, before it
                // calls this filter again; only that next call replaces `self.replacement`, and
                // the filter outlives the compaction run that uses it.
                let value: &'static [u8] = unsafe {
                    std::slice::from_raw_parts(self.replacement.as_ptr(), self.replacement.len())
                };
                Compaction::Change(value)
            }
        }
    }

    fn name(&self) -> &CStr {
        c"contact-history-horizon"
    }
}

/// The horizon of the partition a per-partition key (partition, then entity) belongs to.
fn partition_horizon(horizon: &RwLock<HashMap<u32, i64>>, key: &[u8]) -> Option<i64> {
    let partition = key
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)?;
    horizon
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&partition)
        .copied()
}

fn dedup_seen_at(value: &[u8]) -> Option<i64> {
    value.try_into().ok().map(i64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::profile::Profile;
    use crate::state::partition_key;

    #[test]
    fn compaction_reclaims_engagements_behind_their_partitions_horizon() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), Duration::from_secs(3600)).unwrap();
        let contact = |newest: i64, known: bool| {
            let mut c = ContactState::default();
            c.history.record(newest - 10, "web_visit");
            c.history.record(newest, "call");
            c.profile = known.then(|| Profile::new("ct"));
            c
        };
        let put = |partition: i32, id: &str, state: &ContactState| Write {
            cf: Cf::Contact,
            key: partition_key(partition, id.as_bytes()),
            value: Some(state.to_bytes()),
        };
        store
            .write(&[
                put(0, "quiet", &contact(1_000, false)),
                put(0, "quiet-known", &contact(1_000, true)),
                put(0, "active", &contact(5_000, false)),
                put(1, "other", &contact(1_000, false)),
            ])
            .unwrap();
        store.set_history_horizon(0, 2_000);
        store.set_history_horizon(0, 1_500); // never moves back
        store.compact(Cf::Contact);
        let get = |partition: i32, id: &str| {
            store
                .get(Cf::Contact, &partition_key(partition, id.as_bytes()))
                .unwrap()
                .map(|b| ContactState::from_bytes(&b).unwrap())
        };
        assert_eq!(get(0, "quiet"), None, "all of it behind the horizon");
        let known = get(0, "quiet-known").expect("a known contact stays");
        assert!(known.history.is_empty(), "without its old engagements");
        assert!(known.profile.is_some());
        assert_eq!(get(0, "active"), Some(contact(5_000, false)));
        assert_eq!(
            get(1, "other"),
            Some(contact(1_000, false)),
            "partition 1 has no horizon"
        );
    }

    #[test]
    fn a_state_directory_of_the_old_layout_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            DB::open_cf(&options, dir.path(), ["profile", "engagement"]).unwrap();
        }
        let err = StateStore::open(dir.path(), Duration::from_secs(60))
            .err()
            .expect("old layout refused")
            .to_string();
        assert!(err.contains("older leadflow"), "{err}");
        assert!(err.contains("delete the directory"), "{err}");
    }

    #[test]
    fn every_store_has_its_own_index() {
        for (i, cf) in Cf::ALL.iter().enumerate() {
            assert_eq!(cf.index(), i, "{}", cf.name());
        }
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
        store.write(&[w(Cf::Contact, "gone", Some("old"))]).unwrap();
        store
            .write(&[
                w(Cf::Contact, "a", Some("1")),
                w(Cf::Task, "a", Some("task")),
                w(Cf::Contact, "a", Some("2")),
                w(Cf::Contact, "gone", Some("new")),
                w(Cf::Contact, "gone", None),
                w(Cf::Contact, "back", None),
                w(Cf::Contact, "back", Some("3")),
            ])
            .unwrap();
        assert_eq!(store.get(Cf::Contact, b"a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(store.get(Cf::Task, b"a").unwrap(), Some(b"task".to_vec()));
        assert_eq!(store.get(Cf::Contact, b"gone").unwrap(), None);
        assert_eq!(
            store.get(Cf::Contact, b"back").unwrap(),
            Some(b"3".to_vec())
        );
    }
}
