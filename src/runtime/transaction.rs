//! Exactly-once: each stream thread has its own transactional producer, and one Kafka
//! transaction per commit interval holds everything the thread wrote meanwhile (routed leads,
//! DLQ and late records, changelog records) and its tasks' input offsets
//! (`send_offsets_to_transaction` with the group's metadata, so that a member fenced out of the
//! group cannot commit: KIP-447). Local state is written to RocksDB, with the changelog
//! checkpoints, only after the transaction commits: a crash or an aborted transaction leaves
//! RocksDB at the last commit, exactly where the committed changelogs and offsets are.
//!
//! The transactional id is `<application_id>-<instance>-<thread>`, stable across restarts of
//! the same instance (its `--instance-id`, or a name kept in its state directory), so a
//! restarted instance fences its previous incarnation and aborts what it left open at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics as m;
use crate::sink::producer::OutputProducer;
use crate::source::assignment::GroupContext;
use crate::state::Cf;

/// How long a transactional call (init, offsets, commit, abort) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// `transaction.timeout.ms` unless the user sets it: how long a transaction left open by a
/// crashed instance holds `read_committed` readers back before the broker aborts it (Kafka
/// Streams uses the same under exactly-once).
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The transactional id of stream thread `thread`.
pub fn transactional_id(application_id: &str, instance: &str, thread: usize) -> String {
    format!("{application_id}-{instance}-{thread}")
}

/// The transaction of one stream thread, and what becomes durable when it commits.
pub(super) struct Transaction {
    producer: OutputProducer,
    consumer: Arc<StreamConsumer<GroupContext>>,
    interval: Duration,
    /// When the open transaction began (its first record), if one is open.
    open_since: Option<tokio::time::Instant>,
    /// The next input offset per topic and partition, committed with the transaction (by
    /// topic first, so that a record's topic is looked up without allocating).
    offsets: HashMap<String, HashMap<i32, i64>>,
    /// The next changelog offset per store and task, for the checkpoints.
    checkpoints: HashMap<(Cf, i32), i64>,
}

impl Transaction {
    /// Registers the producer's transactional id with the coordinator, fencing any earlier
    /// producer with the same id and aborting what it left open.
    pub async fn init(
        producer: OutputProducer,
        consumer: Arc<StreamConsumer<GroupContext>>,
        interval: Duration,
    ) -> anyhow::Result<Transaction> {
        let p = producer.clone();
        blocking(move || p.init_transactions(CALL_TIMEOUT))
            .await
            .map_err(|e| anyhow::anyhow!("cannot initialise the transactional producer: {e}"))?;
        Ok(Transaction {
            producer,
            consumer,
            interval,
            open_since: None,
            offsets: HashMap::new(),
            checkpoints: HashMap::new(),
        })
    }

    /// Opens a transaction unless one is open: called before every record produced.
    pub fn begin(&mut self) -> anyhow::Result<()> {
        if self.open_since.is_none() {
            self.producer
                .begin_transaction()
                .map_err(|e| anyhow::anyhow!("cannot begin a transaction: {e}"))?;
            self.open_since = Some(tokio::time::Instant::now());
        }
        Ok(())
    }

    /// When the open transaction is due to commit.
    pub fn due(&self) -> Option<tokio::time::Instant> {
        self.open_since.map(|since| since + self.interval)
    }

    pub fn is_open(&self) -> bool {
        self.open_since.is_some()
    }

    /// Input record `offset` of `topic`:`partition` is completed in this transaction.
    pub fn consumed(&mut self, topic: &str, partition: i32, offset: i64) {
        let partitions = match self.offsets.get_mut(topic) {
            Some(p) => p,
            None => self.offsets.entry(topic.to_string()).or_default(),
        };
        let next = partitions.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// Changelog record `offset` of `store`'s task `task` is written in this transaction.
    pub fn changelogged(&mut self, store: Cf, task: i32, offset: i64) {
        let next = self.checkpoints.entry((store, task)).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// Commits the open transaction with the input offsets; returns the checkpoints to write
    /// with the local state. Every record produced in it must be acknowledged. On failure the
    /// transaction is aborted when it can be: nothing of it counts, and the caller must stop.
    pub async fn commit(&mut self) -> anyhow::Result<HashMap<(Cf, i32), i64>> {
        if self.open_since.is_none() {
            return Ok(HashMap::new());
        }
        let started = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for (topic, partitions) in &self.offsets {
            for (partition, next) in partitions {
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
        }
        let result = if offsets.count() == 0 {
            self.call(|p| p.commit_transaction(CALL_TIMEOUT)).await
        } else {
            let group = self.consumer.group_metadata().ok_or_else(|| {
                anyhow::anyhow!("the consumer has no group metadata to commit offsets with")
            })?;
            let offsets = Arc::new(offsets);
            let group = Arc::new(group);
            match self
                .call(move |p| p.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT))
                .await
            {
                Ok(()) => self.call(|p| p.commit_transaction(CALL_TIMEOUT)).await,
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(()) => {
                self.open_since = None;
                self.offsets.clear();
                counter!(m::TRANSACTIONS, "outcome" => "committed").increment(1);
                histogram!(m::TRANSACTION_SECONDS).record(started.elapsed().as_secs_f64());
                Ok(std::mem::take(&mut self.checkpoints))
            }
            Err(e) => {
                let why = anyhow::anyhow!(
                    "the transaction could not commit ({e}); nothing of it is applied, and the \
                     next owner of these tasks starts from the last commit"
                );
                self.abort().await;
                Err(why)
            }
        }
    }

    /// Aborts the open transaction (if it can still be aborted): its records are never seen
    /// by `read_committed` readers, its offsets never committed.
    pub async fn abort(&mut self) {
        if self.open_since.take().is_none() {
            return;
        }
        self.offsets.clear();
        self.checkpoints.clear();
        match self.call(|p| p.abort_transaction(CALL_TIMEOUT)).await {
            Ok(()) => {
                counter!(m::TRANSACTIONS, "outcome" => "aborted").increment(1);
                tracing::warn!("transaction aborted");
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot abort the transaction; the broker aborts it after transaction.timeout.ms"
            ),
        }
    }

    /// Runs a blocking transactional call, again while librdkafka says it is retriable.
    async fn call<F>(&self, f: F) -> Result<(), KafkaError>
    where
        F: Fn(&OutputProducer) -> Result<(), KafkaError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        let mut delays = crate::retry::backoff();
        loop {
            let (p, call) = (self.producer.clone(), f.clone());
            match blocking(move || call(&p)).await {
                Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.is_fatal() => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(1));
                    tracing::debug!(error = %e, retry_in = ?delay, "transactional call again");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }
}

/// Under exactly-once, waits until the committed offsets of task `task`'s input partitions
/// are stable: its previous owner may have died while committing a transaction, and until
/// that transaction is completed or aborted neither the offsets nor the changelogs say where
/// the task is. (With `isolation.level=read_committed` the coordinator answers
/// `UNSTABLE_OFFSET_COMMIT` meanwhile: KIP-447.)
pub async fn wait_for_stable_offsets(
    consumer: Arc<StreamConsumer<GroupContext>>,
    inputs: [String; 2],
    task: i32,
) -> anyhow::Result<()> {
    let mut partitions = TopicPartitionList::new();
    for topic in &inputs {
        partitions.add_partition(topic, task);
    }
    let deadline = Instant::now() + 2 * TRANSACTION_TIMEOUT + CALL_TIMEOUT;
    let mut delays = crate::retry::backoff();
    loop {
        let (c, tpl) = (consumer.clone(), partitions.clone());
        let result =
            tokio::task::spawn_blocking(move || c.committed_offsets(tpl, Duration::from_secs(10)))
                .await?;
        match result {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                let delay = delays.next().unwrap_or(Duration::from_secs(1));
                tracing::info!(task, error = %e, retry_in = ?delay, "waiting for the task's committed offsets to be stable");
                tokio::time::sleep(delay).await;
            }
            Err(e) => anyhow::bail!("task {task}: its committed offsets stay unknown: {e}"),
        }
    }
}

async fn blocking<F>(f: F) -> Result<(), KafkaError>
where
    F: FnOnce() -> Result<(), KafkaError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

/// The instance's name for its transactional ids and, when given, its static group membership:
/// `--instance-id`, or else a random name created once in the state directory (so that a
/// restart with the same state keeps its transactional ids).
pub fn instance_name(
    given: Option<&str>,
    state_dir: &std::path::Path,
    application_id: &str,
) -> anyhow::Result<String> {
    if let Some(name) = given {
        let valid = !name.is_empty()
            && name.len() <= 200
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        anyhow::ensure!(
            valid,
            "--instance-id {name:?}: use letters, digits, '.', '_' or '-' (at most 200)"
        );
        return Ok(name.to_string());
    }
    let file = state_dir.join(format!("{application_id}.instance"));
    match std::fs::read_to_string(&file) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", file.display()),
    }
    let name = format!("i{:016x}", rand::random::<u64>());
    let tmp = file.with_extension("instance.tmp");
    std::fs::write(&tmp, &name)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_keeps_its_name_across_restarts_and_a_given_one_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let first = instance_name(None, dir.path(), "app").unwrap();
        assert_eq!(instance_name(None, dir.path(), "app").unwrap(), first);
        assert_ne!(instance_name(None, dir.path(), "other").unwrap(), first);
        assert_eq!(
            instance_name(Some("pod-1"), dir.path(), "app").unwrap(),
            "pod-1"
        );
        let err = instance_name(Some("pod 1"), dir.path(), "app")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--instance-id \"pod 1\""), "{err}");
        assert_eq!(transactional_id("app", &first, 2), format!("app-{first}-2"));
    }
}
