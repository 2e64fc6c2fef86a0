//! The group consumer's input partitions: which are assigned to us, how far we have received
//! each, and whether the broker holds records of one we have not received yet (what the input
//! merge needs to know to wait for an empty input instead of processing the other one).

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Mutex};

use metrics::{counter, gauge};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, TopicPartitionList};

use super::fence::{RevocationFence, REVOCATION_TIMEOUT};
use crate::kafka::context::{client_error, log_line};
use crate::metrics as m;

/// A change of assignment, as the rebalance callbacks saw it.
enum Change {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

/// Logs partition assignments and revocations of the group consumer and hands them to
/// [`InputPartitions`]. The callbacks run inside the driver's `recv()`, before any record
/// fetched under the new assignment is returned.
pub struct GroupContext {
    changes: Arc<Mutex<Vec<Change>>>,
    /// Makes a revocation wait for the stream threads' work in flight.
    fence: Arc<RevocationFence>,
    /// Wakes the driver, which may be waiting for a record that never comes.
    changed: Arc<tokio::sync::Notify>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_line("consumer", level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error("consumer", &error, reason);
    }

    /// Consumer lag per input partition (`leadflow_consumer_lag`): what the broker holds past
    /// what this instance has read, for the partitions it owns; 0 for the others, so that a
    /// sum across instances counts each partition once.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                let lag = if p.desired { p.consumer_lag.max(0) } else { 0 };
                gauge!(m::CONSUMER_LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                    .set(lag as f64);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let tasks = tasks_of(tpl);
            counter!(m::REBALANCES, "change" => "revoked").increment(1);
            if self.fence.closing() {
                // The consumer's close: the run completed and committed everything.
                tracing::info!(count = tpl.count(), tasks = %tasks, "partitions released at close");
            } else {
                tracing::info!(count = tpl.count(), tasks = %tasks, "partitions revoked");
                // Before the partitions go: complete what is in flight, then commit its offsets.
                let revoked: Vec<i32> = partitions(tpl).iter().map(|(_, p)| *p).collect();
                self.fence.complete_in_flight(&revoked);
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                        client_error("consumer", &e, "commit at revocation");
                    }
                }
            }
            let revoked = partitions(tpl);
            let tasks: Vec<i32> = revoked.iter().map(|(_, p)| *p).collect();
            self.fence.revoked(&tasks);
            self.push(Change::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<String> = tpl
                    .elements()
                    .iter()
                    .map(|e| format!("{}:{}", e.topic(), e.partition()))
                    .collect();
                tracing::info!(
                    partitions = %parts.join(","),
                    tasks = %tasks_of(tpl),
                    "partitions assigned"
                );
                counter!(m::REBALANCES, "change" => "assigned").increment(1);
                self.push(Change::Assigned(partitions(tpl)));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        // Auto-commits fail while the coordinator is away (a broker restart); the next one
        // commits the same stored offsets, so this is only worth a line and a count.
        if let Err(e) = result {
            if !matches!(
                e,
                KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset)
            ) {
                client_error("consumer", &e, "offset commit failed");
            }
        }
    }
}

impl GroupContext {
    fn push(&self, change: Change) {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(change);
        self.changed.notify_one();
    }
}

/// The task numbers (partition numbers) of a list, sorted, comma-separated.
fn tasks_of(tpl: &rdkafka::TopicPartitionList) -> String {
    let mut tasks: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    tasks.sort_unstable();
    tasks.dedup();
    tasks
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn partitions(tpl: &rdkafka::TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

/// An input partition: (merge input index, partition).
pub type InputPartition = (usize, i32);

/// What changed in one look at the assignment.
pub struct Rebalanced {
    pub revoked: Vec<InputPartition>,
    pub assigned: Vec<InputPartition>,
}

/// The input topics (by merge input index) and the partitions of them assigned to us.
pub struct InputPartitions {
    topics: Vec<String>,
    c_topics: Vec<CString>,
    changes: Arc<Mutex<Vec<Change>>>,
    changed: Arc<tokio::sync::Notify>,
    fence: Arc<RevocationFence>,
    /// Assigned (input, partition) → the offset after the last record received from it
    /// (`None`: nothing received since it was assigned).
    assigned: HashMap<(usize, i32), Option<i64>>,
}

impl InputPartitions {
    /// Input partitions of `topics` (index = merge input), and the consumer context that
    /// reports assignment changes to them.
    pub fn new(topics: Vec<String>) -> anyhow::Result<(InputPartitions, GroupContext)> {
        let c_topics = topics
            .iter()
            .map(|t| CString::new(t.as_str()))
            .collect::<Result<_, _>>()?;
        let changes = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(tokio::sync::Notify::new());
        let fence = Arc::new(RevocationFence::new(REVOCATION_TIMEOUT));
        let context = GroupContext {
            changes: changes.clone(),
            fence: fence.clone(),
            changed: changed.clone(),
        };
        let inputs = InputPartitions {
            topics,
            c_topics,
            changes,
            changed,
            fence,
            assigned: HashMap::new(),
        };
        Ok((inputs, context))
    }

    /// What makes revocations wait for the stream threads.
    pub fn fence(&self) -> &Arc<RevocationFence> {
        &self.fence
    }

    /// Resolves when the assignment changes (a change while nobody waits is kept for the
    /// next call).
    pub fn changed(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.changed.notified()
    }

    /// How many inputs there are.
    pub fn inputs(&self) -> usize {
        self.topics.len()
    }

    /// The topic of merge input `input`.
    pub fn topic(&self, input: usize) -> Option<&str> {
        self.topics.get(input).map(String::as_str)
    }

    /// The merge input index of `topic`.
    pub fn input(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == topic)
    }

    /// Applies the assignment changes since the last call, in order.
    pub fn apply_rebalances(&mut self) -> Rebalanced {
        let changes = std::mem::take(&mut *self.changes.lock().unwrap_or_else(|e| e.into_inner()));
        let mut revoked = Vec::new();
        let mut added = Vec::new();
        for change in changes {
            match change {
                Change::Assigned(parts) => {
                    for (topic, partition) in parts {
                        if let Some(input) = self.input(&topic) {
                            self.assigned.insert((input, partition), None);
                            added.push((input, partition));
                        }
                    }
                }
                Change::Revoked(parts) => {
                    for (topic, partition) in parts {
                        if let Some(input) = self.input(&topic) {
                            self.assigned.remove(&(input, partition));
                            revoked.push((input, partition));
                        }
                    }
                }
            }
        }
        Rebalanced {
            revoked,
            assigned: added,
        }
    }

    /// Assigned input partitions whose task is not whole here: the same partition number of
    /// another input is assigned elsewhere (or to nobody). A task's contacts and engagements
    /// share the contacts' state, so processing half a task would route engagements without
    /// their contact.
    pub fn unpaired(&self) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = self
            .assigned
            .keys()
            .flat_map(|&(input, partition)| {
                (0..self.topics.len())
                    .filter(move |other| *other != input)
                    .filter(move |other| !self.assigned.contains_key(&(*other, partition)))
                    .map(move |other| (self.topics[other].clone(), partition))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Notes that the record at `offset` of an input partition was received.
    pub fn received(&mut self, input: usize, partition: i32, offset: i64) {
        if let Some(next) = self.assigned.get_mut(&(input, partition)) {
            *next = Some(offset + 1);
        }
    }

    /// Whether an input partition assigned to us is *behind*: not fetched since the client
    /// started, or the broker holds records of it past those we received, as of its last fetch
    /// response. A partition not assigned to us is never behind (nobody here delivers it).
    ///
    /// Before the first record since assignment, reading starts at the consumer's position
    /// (the committed offset, once fetched), or at the log start while that is not known yet.
    /// Past the last record received, the consumer's position counts too: librdkafka moves it
    /// over transaction markers and aborted records, which no record of ours follows.
    pub fn behind(
        &self,
        consumer: &StreamConsumer<GroupContext>,
        input: usize,
        partition: i32,
    ) -> bool {
        let Some(next) = self.assigned.get(&(input, partition)) else {
            return false;
        };
        match fetched_watermarks(consumer, &self.c_topics[input], partition) {
            None => true,
            Some((low, high)) => {
                let before = |from: Option<i64>| from.unwrap_or(low) < high;
                before(*next)
                    && before(position(consumer, &self.topics[input], partition).max(*next))
            }
        }
    }
}

/// Where the consumer will read `topic`'s `partition` from next, once known.
fn position(consumer: &StreamConsumer<GroupContext>, topic: &str, partition: i32) -> Option<i64> {
    use rdkafka::consumer::Consumer;
    let positions = consumer.position().ok()?;
    match positions.find_partition(topic, partition)?.offset() {
        rdkafka::Offset::Offset(n) => Some(n),
        _ => None,
    }
}

/// The partition's log start (0 if not known) and high watermark from its last fetch
/// response (librdkafka's cached values; no request to the broker), or `None` before its
/// first fetch.
fn fetched_watermarks(
    consumer: &StreamConsumer<GroupContext>,
    topic: &CString,
    partition: i32,
) -> Option<(i64, i64)> {
    use rdkafka::consumer::Consumer;
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client handle lives as long as `consumer`, which is borrowed for the call;
    // `topic` is NUL-terminated; librdkafka reads the partition's cached offsets under its
    // lock and writes them to the two locals. rust-rdkafka has no safe wrapper for this call
    // (only for the broker query, a round trip per call).
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some((low.max(0), high))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(topic: &str, ps: &[i32]) -> Vec<(String, i32)> {
        ps.iter().map(|p| (topic.to_string(), *p)).collect()
    }

    #[test]
    fn an_assignment_with_half_a_task_is_found() {
        let (mut inputs, context) =
            InputPartitions::new(vec!["contacts".into(), "engagements".into()]).unwrap();
        context.push(Change::Assigned(parts("contacts", &[0, 1, 2])));
        context.push(Change::Assigned(parts("engagements", &[0, 1, 2])));
        let changed = inputs.apply_rebalances();
        assert!(changed.revoked.is_empty());
        assert_eq!(changed.assigned.len(), 6);
        assert!(inputs.unpaired().is_empty());

        context.push(Change::Revoked(parts("engagements", &[2])));
        context.push(Change::Assigned(parts("engagements", &[3])));
        inputs.apply_rebalances();
        assert_eq!(
            inputs.unpaired(),
            vec![("contacts".to_string(), 3), ("engagements".to_string(), 2)]
        );
    }
}
