//! The RocksDB database behind every store, one column family per store.

use std::path::Path;
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
}

impl Cf {
    const ALL: [Cf; 7] = [
        Cf::Dedup,
        Cf::Profile,
        Cf::Engagement,
        Cf::Decision,
        Cf::Accounts,
        Cf::Domains,
        Cf::Reps,
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

/// One RocksDB database with a column family per [`Cf`].
pub struct StateStore {
    db: DB,
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
        let retention_ms = dedup_retention.as_millis() as i64;
        let families = Cf::ALL.iter().map(|cf| {
            let mut options = Options::default();
            options.set_compression_type(rocksdb::DBCompressionType::Lz4);
            if *cf == Cf::Dedup {
                options.set_compaction_filter(
                    "dedup-retention",
                    move |_level: u32, _key: &[u8], value: &[u8]| match dedup_seen_at(value) {
                        Some(at) if at < now_ms() - retention_ms => Compaction::Remove,
                        _ => Compaction::Keep,
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
        Ok(StateStore { db })
    }

    fn handle(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every family is created in `open`.
        self.db.cf_handle(cf.name()).expect("column family exists")
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.db.get_cf(self.handle(cf), key)?)
    }

    /// Applies `writes` atomically.
    pub fn write<'a>(&self, writes: impl IntoIterator<Item = &'a Write>) -> Result<(), StateError> {
        let mut batch = WriteBatch::default();
        for w in writes {
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

fn dedup_seen_at(value: &[u8]) -> Option<i64> {
    value.try_into().ok().map(i64::from_be_bytes)
}
