//! Local state in RocksDB: per-partition stores, global reference tables, and the staging
//! area that makes a record's writes visible to later records before they are committed.

pub mod changelog;
pub mod dedup;
pub mod reference;
mod staged;
mod store;

pub use staged::{Staged, Write};
pub use store::{Cf, StateError, StateStore};

/// Key of a per-partition store: the partition (big-endian) then the entity key, so each
/// partition's state is a contiguous range that can move with the partition.
pub fn partition_key(partition: i32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len());
    out.extend_from_slice(&(partition as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}
