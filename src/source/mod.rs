//! The Kafka input side: the group consumer and its assignment, the input merge that orders a
//! task's records across its inputs, the driver that feeds the stream threads, and the
//! reference-table followers (Kafka Streams' GlobalKTable), and the restore of a task's
//! stores from their changelogs.

pub mod assignment;
pub mod driver;
pub mod fence;
pub mod merge;
pub mod record;
pub mod reference;
pub mod restore;
pub mod standby;
