//! Reading a whole topic from the beginning to the end it has when reading starts.
//!
//! The end of each partition is asked of the broker first (ListOffsets: the high watermark,
//! or the last stable offset for a `read_committed` reader); reading stops once every
//! partition's position has reached it, so records written meanwhile are not waited for, and
//! a partition ending in a transaction marker (no record to deliver) still finishes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::context::{client_error, is_fatal, Logged};
use super::KafkaSettings;

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

/// How long to keep asking for a partition's end while the broker answers that its leader
/// is not known yet (just after a topic is created, or while leadership moves).
const ENDS_DEADLINE: Duration = Duration::from_secs(60);

/// Each partition's (log start, end) as the broker answers now.
pub fn snapshot_ends<C: ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topic: &str,
    partitions: &[i32],
) -> anyhow::Result<HashMap<i32, (i64, i64)>> {
    let deadline = Instant::now() + ENDS_DEADLINE;
    partitions
        .iter()
        .map(|p| {
            let mut delays = crate::retry::backoff();
            loop {
                match consumer.fetch_watermarks(topic, *p, Duration::from_secs(10)) {
                    Ok(ends) => return Ok((*p, ends)),
                    Err(e) if is_fatal(&e) || Instant::now() >= deadline => {
                        anyhow::bail!("cannot ask where {topic}:{p} ends: {e}")
                    }
                    Err(e) => {
                        tracing::debug!(%topic, partition = p, error = %e, "asking again where the partition ends");
                        std::thread::sleep(delays.next().unwrap_or(Duration::from_secs(1)));
                    }
                }
            }
        })
        .collect()
}

/// Calls `on_message` for every record of `topic`, partition order preserved, until every
/// partition has reached the end it had when reading started. Fails if that takes longer
/// than `timeout`.
pub fn for_each_to_end(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
    on_message: impl FnMut(OwnedMessage),
) -> anyhow::Result<usize> {
    for_each_to_end_of(settings, topic, |all| all.to_vec(), timeout, on_message)
}

/// [`for_each_to_end`] of the partitions `pick` chooses among the topic's (ids).
pub fn for_each_to_end_of(
    settings: &KafkaSettings,
    topic: &str,
    pick: impl FnOnce(&[i32]) -> Vec<i32>,
    timeout: Duration,
    mut on_message: impl FnMut(OwnedMessage),
) -> anyhow::Result<usize> {
    let consumer: BaseConsumer<Logged> = settings
        .consumer_config(&[
            ("group.id", "leadflow-reader"),
            ("enable.auto.commit", "false"),
            // What a transaction aborted never was; one still open is not read yet.
            ("isolation.level", "read_committed"),
        ])
        .create_with_context(Logged::new("reader"))?;
    let parts = pick(&partitions(&consumer, topic)?);
    let ends: HashMap<i32, i64> = snapshot_ends(&consumer, topic, &parts)?
        .into_iter()
        .filter(|(_, (low, high))| high > low)
        .map(|(p, (_, high))| (p, high))
        .collect();
    let mut remaining = ends.clone();
    let mut assignment = TopicPartitionList::new();
    for p in &parts {
        assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    let mut count = 0;
    while !remaining.is_empty() {
        if Instant::now() > deadline {
            anyhow::bail!(
                "reading {topic} did not reach the end within {timeout:?} ({count} records, \
                 {} of {} partitions not done)",
                remaining.len(),
                parts.len()
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                let positions = consumer.position()?;
                remaining.retain(|p, end| {
                    !matches!(
                        positions.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(at)) if at >= *end
                    )
                });
            }
            Some(Err(e)) if is_fatal(&e) => return Err(e.into()),
            Some(Err(e)) => client_error("reader", &e, "read to end"),
            Some(Ok(m)) => {
                if let Some(end) = remaining.get(&m.partition()) {
                    if m.offset() + 1 >= *end {
                        remaining.remove(&m.partition());
                    }
                }
                // Records written since reading started are not delivered.
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() < *end)
                {
                    count += 1;
                    on_message(m.detach());
                }
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
