//! Reading a whole topic from the beginning to its current end.
//!
//! The end is found with librdkafka's partition-EOF events (driven by the high watermark in
//! each Fetch response), not with ListOffsets: tansu 0.6 answers ListOffsets(latest) wrongly,
//! and EOF works on every broker.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaSettings;

/// A client context for readers: end-of-partition is the signal they wait for, not an error
/// to log (librdkafka reports it for empty partitions as a client-level error event).
pub struct ReaderContext;

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            tracing::error!(%error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// Partition ids of `topic`; empty if it does not exist.
pub fn partitions<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topic: &str,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Calls `on_message` for every record of `topic`, partition order preserved, until every
/// partition has reached its end. Fails if that takes longer than `timeout`.
pub fn for_each_to_end(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
    mut on_message: impl FnMut(OwnedMessage),
) -> anyhow::Result<usize> {
    let consumer: BaseConsumer<ReaderContext> = settings
        .consumer_config(&[
            ("group.id", "leadflow-reader"),
            ("enable.auto.commit", "false"),
            ("enable.partition.eof", "true"),
        ])
        .create_with_context(ReaderContext)?;
    let parts = partitions(&consumer, topic)?;
    let mut assignment = TopicPartitionList::new();
    for p in &parts {
        assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    let mut at_end = HashSet::new();
    let mut count = 0;
    while at_end.len() < parts.len() {
        if Instant::now() > deadline {
            anyhow::bail!(
                "reading {topic} did not reach the end within {timeout:?} ({count} records, \
                 {} of {} partitions done)",
                at_end.len(),
                parts.len()
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                count += 1;
                on_message(m.detach());
            }
        }
    }
    Ok(count)
}

/// Every record of `topic` up to its current end.
pub fn read_to_end(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<OwnedMessage>> {
    let mut out = Vec::new();
    for_each_to_end(settings, topic, timeout, |m| out.push(m))?;
    Ok(out)
}
