//! What the source hands on: a record as received from the group consumer, and the borrowed
//! view of it the pipeline processes.

use std::time::Instant;

use rdkafka::message::OwnedMessage;

/// A record received, on its way to its stream thread.
pub struct Received {
    pub message: OwnedMessage,
    /// When the driver received it (record latency starts here).
    pub read_at: Instant,
}

/// One record as read from an input topic (also what a DLQ record names as its source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// What the driver hands a stream thread, in order.
pub enum Work {
    Record(Received),
    /// Task `p` was assigned: restore its state before any of its records (which follow).
    Restore(i32),
    /// Partitions are being revoked: complete every record held (delivered, changelogged,
    /// stored), then answer. `revoked`: the tasks that go (their timers are no longer ours).
    Complete {
        revoked: Vec<i32>,
        done: tokio::sync::oneshot::Sender<()>,
    },
}
