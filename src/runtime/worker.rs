//! A stream thread: processes the records of the tasks it owns, sends their outputs, and
//! completes each record once all of them are acknowledged (Kafka Streams' `StreamThread`).
//!
//! Tasks are partition numbers and every task belongs to exactly one worker (`p % workers`),
//! so a worker's staged state, watermarks and offsets concern its own partitions only:
//! completing strictly in its own processing order keeps every partition's order, and
//! workers never wait for each other.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::health::{Beat, Health};
use super::transaction::Transaction;
use crate::metrics as m;
use crate::pipeline::{InputRecord, Pipeline, PipelineError, Processed};
use crate::sink::dlq::{dlq_record, truncate_value, DlqClass, TRUNCATED_VALUE_BYTES};
use crate::sink::producer::{Delivered, DeliveryError, Sender};
use crate::sink::{OutputKind, OutputRecord};
use crate::source::assignment::GroupContext;
use crate::source::record::{Received, Work};
use crate::source::restore::Restorer;
use crate::state::changelog::{Changelogs, Checkpoint};
use crate::state::{Cf, Write};

/// A record read and processed, or a timer fired, waiting for its outputs to be acknowledged.
struct InFlight {
    processed: Processed,
    /// The input as read (a refused output is replaced by its DLQ record); `None` for a
    /// timer, which has no input and no offset.
    message: Option<OwnedMessage>,
    pending: usize,
    read_at: Instant,
}

/// What an acknowledgement is for: an output of record `seq`, or a changelog record of the
/// commit in flight.
#[derive(Debug, Clone, Copy)]
enum Ticket {
    Output(u64),
    Changelog(Cf),
}

type Delivery = (Ticket, Result<Delivered, DeliveryError>);

/// Records whose outputs are all delivered, waiting for their changelog records. At most one
/// commit is in flight per stream thread, so the changelog of a key never gets an older value
/// after a newer one, even when a record is produced again after a timeout.
struct Commit {
    records: Vec<InFlight>,
    pending: usize,
    /// The highest changelog offset written per store and task.
    written: HashMap<(Cf, i32), i64>,
}

pub(super) struct Worker {
    pub pipeline: Pipeline,
    pub consumer: Arc<StreamConsumer<GroupContext>>,
    sender: Sender,
    health: Arc<Health>,
    /// Where this stream thread marks its steps (`/healthz`).
    beat: Arc<Beat>,
    restorer: Restorer,
    changelogs: Changelogs,
    /// Processed records not completed yet, in processing order.
    queue: VecDeque<InFlight>,
    /// The commit waiting for its changelog records, if any.
    commit: Option<Commit>,
    /// One task per output awaiting its delivery report.
    deliveries: JoinSet<Delivery>,
    /// Most records processed but not completed at once.
    max_in_flight: usize,
    /// Under exactly-once: the stream thread's transaction.
    txn: Option<Transaction>,
    /// Under exactly-once: records completed in the open transaction, whose state is written
    /// to RocksDB when it commits.
    uncommitted: Vec<InFlight>,
    /// The tasks this stream thread owns now (restored and not revoked): the ones whose
    /// timers it fires.
    tasks: BTreeSet<i32>,
}

/// What woke a stream thread up.
enum Event {
    Delivered(Result<Delivery, tokio::task::JoinError>),
    CommitDue,
    Punctuate,
    Work(Work),
}

/// How often a stream thread fires its tasks' due timers (Kafka Streams' wall-clock
/// punctuation), whether records arrive or not.
const PUNCTUATION_INTERVAL: Duration = Duration::from_secs(1);

impl Worker {
    pub fn new(
        pipeline: Pipeline,
        consumer: Arc<StreamConsumer<GroupContext>>,
        sender: Sender,
        health: Arc<Health>,
        restorer: Restorer,
        max_in_flight: usize,
        txn: Option<Transaction>,
    ) -> Worker {
        let changelogs = Changelogs::new(&pipeline.topology().application_id);
        // Registered in creation order: stream thread i is the i-th.
        let beat = health.stream_thread();
        Worker {
            changelogs,
            pipeline,
            consumer,
            sender,
            health,
            beat,
            restorer,
            queue: VecDeque::new(),
            commit: None,
            deliveries: JoinSet::new(),
            max_in_flight: max_in_flight.max(1),
            txn,
            uncommitted: Vec::new(),
            tasks: BTreeSet::new(),
        }
    }

    /// Records processed and not committed yet.
    fn in_flight(&self) -> usize {
        self.queue.len() + self.commit.as_ref().map_or(0, |c| c.records.len())
    }

    /// Processes records from `records` until it is closed and empty, then settles what is in
    /// flight (waiting up to `drain_timeout` for deliveries). An error stops the worker at once
    /// without completing the failed record or any after it: their offsets are never stored.
    pub async fn run(
        mut self,
        mut work: mpsc::Receiver<Work>,
        drain_timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut punctuation = tokio::time::interval(PUNCTUATION_INTERVAL);
        punctuation.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let timers = self.pipeline.topology().acks.is_some();
        let beat = self.beat.clone();
        loop {
            let event = {
                // Settling what has arrived is a step too.
                let _step = beat.step();
                // Every acknowledgement that has arrived, then one commit for all the records
                // they completed: librdkafka reports deliveries a produce batch at a time, and
                // one changelog batch and RocksDB write per batch instead of per record is much
                // cheaper.
                while let Some(done) = self.deliveries.try_join_next() {
                    self.delivered(done?).await?;
                }
                self.complete_ready().await?;
                let room = self.in_flight() < self.max_in_flight;
                let due = self.txn.as_ref().and_then(Transaction::due);
                drop(_step);
                // Waiting here is not a step: a thread with nothing to do is not stuck.
                tokio::select! {
                    biased;
                    Some(done) = self.deliveries.join_next(), if !self.deliveries.is_empty() => {
                        Event::Delivered(done)
                    }
                    _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)),
                        if due.is_some() => Event::CommitDue,
                    _ = punctuation.tick(), if timers && room => Event::Punctuate,
                    next = work.recv(), if room => match next {
                        Some(work) => Event::Work(work),
                        None => break,
                    },
                    else => anyhow::bail!("bug: a worker is full, yet no delivery is pending"),
                }
            };
            let _step = beat.step();
            match event {
                Event::Delivered(done) => self.delivered(done?).await?,
                Event::CommitDue => self.commit_everything().await?,
                Event::Punctuate => self.punctuate().await?,
                Event::Work(Work::Record(received)) => {
                    self.process(received).await?;
                    // A long run of records must still let other tasks of the runtime in.
                    tokio::task::consume_budget().await;
                }
                Event::Work(Work::Restore(task)) => {
                    let _exempt = beat.exempt();
                    self.restore(task).await?;
                    self.tasks.insert(task);
                }
                Event::Work(Work::Complete { revoked, done }) => {
                    for task in &revoked {
                        self.tasks.remove(task);
                    }
                    self.commit_everything().await?;
                    // Another stream thread's task is not known here: nothing to forget.
                    for task in &revoked {
                        self.pipeline.forget_task(*task);
                    }
                    let _ = done.send(());
                }
            }
        }
        self.drain(drain_timeout).await;
        Ok(())
    }

    /// Brings task `task`'s stores to the end of their changelogs, after committing every
    /// record in flight (none of them may be of the task, whose state is about to change).
    async fn restore(&mut self, task: i32) -> anyhow::Result<()> {
        self.commit_everything().await?;
        if self.txn.is_some() {
            let t = self.pipeline.topology();
            let inputs = [t.contacts.clone(), t.engagements.clone()];
            super::transaction::wait_for_stable_offsets(self.consumer.clone(), inputs, task)
                .await?;
        }
        self.pipeline.forget_task(task);
        self.restorer.restore(task).await
    }

    /// Completes every record processed and, under exactly-once, commits the transaction and
    /// writes their state.
    async fn commit_everything(&mut self) -> anyhow::Result<()> {
        self.complete_all().await?;
        self.commit_transaction().await
    }

    /// Under exactly-once: commits the open transaction (every record in it completed), then
    /// writes its records' state with the new checkpoints in one RocksDB batch.
    async fn commit_transaction(&mut self) -> anyhow::Result<()> {
        let Some(txn) = self.txn.as_mut().filter(|t| t.is_open()) else {
            return Ok(());
        };
        let checkpoints = checkpoint_writes(txn.commit().await?);
        let records = std::mem::take(&mut self.uncommitted);
        self.pipeline
            .commit_all(records.iter().map(|d| &d.processed), &checkpoints)?;
        for done in records.iter().filter(|d| d.message.is_some()) {
            histogram!(m::RECORD_LATENCY).record(done.read_at.elapsed().as_secs_f64());
        }
        gauge!(m::IN_FLIGHT).decrement(records.len() as f64);
        Ok(())
    }

    /// Waits until every record processed is completed: outputs delivered, changelog records
    /// acknowledged, state and offsets stored (under exactly-once: added to the transaction).
    async fn complete_all(&mut self) -> anyhow::Result<()> {
        loop {
            self.complete_ready().await?;
            if self.in_flight() == 0 {
                return Ok(());
            }
            match self.deliveries.join_next().await {
                Some(done) => self.delivered(done?).await?,
                None => anyhow::bail!("bug: records in flight, yet no delivery is pending"),
            }
        }
    }

    /// Fires the due timers of every task of this stream thread; each joins the completion
    /// queue like a record.
    async fn punctuate(&mut self) -> anyhow::Result<()> {
        let tasks: Vec<i32> = self.tasks.iter().copied().collect();
        for task in tasks {
            let fired = self.pipeline.punctuate(task)?;
            for processed in fired {
                self.enqueue(processed, None, Instant::now()).await?;
            }
        }
        Ok(())
    }

    /// Processes one record and sends its outputs; it joins the in-order completion queue.
    async fn process(&mut self, received: Received) -> anyhow::Result<()> {
        let Received { message, read_at } = received;
        let record = InputRecord {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp().to_millis(),
            key: message.key(),
            value: message.payload(),
        };
        let processed = process_with_retry(&mut self.pipeline, &self.health, &record).await?;
        let seq = processed.seq;
        tracing::trace!(
            topic = record.topic,
            partition = record.partition,
            offset = record.offset,
            seq,
            outcome = ?processed.outcome,
            outputs = processed.outputs.len(),
            "processed"
        );
        self.enqueue(processed, Some(message), read_at).await
    }

    /// Sends a processed record's outputs; it joins the in-order completion queue.
    async fn enqueue(
        &mut self,
        mut processed: Processed,
        message: Option<OwnedMessage>,
        read_at: Instant,
    ) -> anyhow::Result<()> {
        let seq = processed.seq;
        let outputs = std::mem::take(&mut processed.outputs);
        let pending = outputs.len();
        for output in outputs {
            self.send(Ticket::Output(seq), output).await?;
        }
        self.queue.push_back(InFlight {
            processed,
            message,
            pending,
            read_at,
        });
        gauge!(m::IN_FLIGHT).increment(1.0);
        Ok(())
    }

    /// Enqueues one output (in processing order) and settles its delivery in the background.
    async fn send(&mut self, ticket: Ticket, output: OutputRecord) -> anyhow::Result<()> {
        if let Some(txn) = self.txn.as_mut() {
            txn.begin()?;
        }
        let delivery = match self.sender.enqueue(&output).await {
            Ok(delivery) => delivery,
            Err(e @ DeliveryError::Refused { .. }) => {
                // Reported like a refused delivery: replaced once the record is in the queue.
                self.deliveries.spawn(async move { (ticket, Err(e)) });
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let sender = self.sender.clone();
        self.deliveries
            .spawn(async move { (ticket, sender.settle(output, delivery).await) });
        Ok(())
    }

    /// An output was acknowledged, or refused (then a DLQ record takes its place), or failed
    /// for good (fatal: nothing more is committed). A record completes at the next
    /// [`complete_ready`](Self::complete_ready).
    async fn delivered(&mut self, (ticket, result): Delivery) -> anyhow::Result<()> {
        let seq = match ticket {
            Ticket::Output(seq) => seq,
            Ticket::Changelog(store) => return self.changelogged(store, result),
        };
        let front = self.queue.front().map(|f| f.processed.seq).unwrap_or(seq);
        let index = (seq - front) as usize;
        match result {
            Ok(_) => {
                if let Some(entry) = self.queue.get_mut(index) {
                    entry.pending -= 1;
                }
                Ok(())
            }
            Err(DeliveryError::Refused {
                record,
                topic,
                size,
                error,
            }) => {
                let Some(entry) = self.queue.get(index) else {
                    anyhow::bail!("bug: a refused output of a record no longer in flight");
                };
                let Some(message) = &entry.message else {
                    anyhow::bail!(
                        "{topic} refuses an SLA record of {size} bytes ({error}); raise its \
                         max.message.bytes"
                    );
                };
                counter!(m::OUTPUTS_TOO_LARGE, "output" => record.kind.as_str()).increment(1);
                let replacement = replacement(
                    *record,
                    message,
                    &topic,
                    size,
                    &error,
                    self.pipeline.topology(),
                )?;
                tracing::warn!(
                    %topic,
                    size,
                    %error,
                    dlq = replacement.topic,
                    "an output was refused; a DLQ record takes its place"
                );
                counter!(m::DLQ, "class" => DlqClass::Oversize.as_str()).increment(1);
                self.send(Ticket::Output(seq), replacement).await
            }
            Err(e) => Err(anyhow::anyhow!(
                "an output of a record could not be delivered ({e}); stopping without committing it"
            )),
        }
    }

    /// A changelog record of the commit in flight was acknowledged (or could not be).
    fn changelogged(
        &mut self,
        store: Cf,
        result: Result<Delivered, DeliveryError>,
    ) -> anyhow::Result<()> {
        let Some(commit) = self.commit.as_mut() else {
            anyhow::bail!("bug: a changelog acknowledgement without a commit in flight");
        };
        match result {
            Ok(Delivered { partition, offset }) => {
                commit.pending -= 1;
                let highest = commit.written.entry((store, partition)).or_insert(offset);
                *highest = (*highest).max(offset);
                Ok(())
            }
            Err(DeliveryError::Refused {
                topic, size, error, ..
            }) => Err(anyhow::anyhow!(
                "the changelog topic {topic} refuses a state record of {size} bytes ({error}); \
                 raise its max.message.bytes"
            )),
            Err(e) => Err(anyhow::anyhow!(
                "a changelog record could not be delivered ({e}); stopping without committing"
            )),
        }
    }
    /// Completes the records at the head of the queue whose outputs are all delivered: their
    /// state changes go to the changelogs (one commit at a time); once those are acknowledged,
    /// one RocksDB write stores the state with the tasks' checkpoints, then their offsets are
    /// stored.
    async fn complete_ready(&mut self) -> anyhow::Result<()> {
        loop {
            if let Some(commit) = &self.commit {
                if commit.pending > 0 {
                    return Ok(());
                }
                let commit = self.commit.take().expect("a commit");
                self.finish(commit)?;
            }
            let ready = self.queue.iter().take_while(|f| f.pending == 0).count();
            if ready == 0 {
                return Ok(());
            }
            let records: Vec<InFlight> = self.queue.drain(..ready).collect();
            let changes = self
                .changelogs
                .records(records.iter().flat_map(|r| r.processed.writes.iter()));
            self.commit = Some(Commit {
                records,
                pending: changes.len(),
                written: HashMap::new(),
            });
            for (store, record) in changes {
                self.send(Ticket::Changelog(store), record).await?;
            }
        }
    }

    /// Writes a commit's state and checkpoints to RocksDB in one batch, then stores its
    /// records' input offsets. Under exactly-once, adds them to the transaction instead.
    fn finish(&mut self, commit: Commit) -> anyhow::Result<()> {
        if let Some(txn) = self.txn.as_mut() {
            for ((store, task), offset) in &commit.written {
                txn.changelogged(*store, *task, *offset);
            }
            for m in commit.records.iter().filter_map(|d| d.message.as_ref()) {
                txn.consumed(m.topic(), m.partition(), m.offset());
            }
            self.uncommitted.extend(commit.records);
            return Ok(());
        }
        let checkpoints =
            checkpoint_writes(commit.written.iter().map(|(&key, &last)| (key, last + 1)));
        self.pipeline
            .commit_all(commit.records.iter().map(|d| &d.processed), &checkpoints)?;
        for done in &commit.records {
            let Some(message) = &done.message else {
                continue; // a timer: no offset to store
            };
            let (topic, partition, offset) =
                (message.topic(), message.partition(), message.offset());
            tracing::trace!(
                topic,
                partition,
                offset,
                seq = done.processed.seq,
                "completed"
            );
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                // The partition was revoked meanwhile (librdkafka answers `__STATE` for a
                // partition not assigned); its new owner replays from the last commit.
                tracing::debug!(error = %e, "offset not stored");
            }
            histogram!(m::RECORD_LATENCY).record(done.read_at.elapsed().as_secs_f64());
        }
        gauge!(m::IN_FLIGHT).decrement(commit.records.len() as f64);
        Ok(())
    }

    /// Waits (up to `timeout`) for in-flight outputs and changelog records, and commits every
    /// record whose outputs were all delivered. What stays undelivered is not completed: it is
    /// replayed.
    async fn drain(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Err(e) = self.complete_ready().await {
                tracing::warn!(error = %e, "cannot complete the delivered records; they will be replayed");
                break;
            }
            if self.deliveries.is_empty() {
                break;
            }
            let done = match tokio::time::timeout_at(deadline, self.deliveries.join_next()).await {
                Ok(Some(Ok(done))) => done,
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "a delivery task failed at shutdown");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        pending = self.deliveries.len(),
                        "outputs still undelivered at shutdown; they will be replayed"
                    );
                    break;
                }
            };
            if let Err(e) = self.delivered(done).await {
                tracing::warn!(error = %e, "stopping the drain; the rest will be replayed");
                break;
            }
        }
        if self.txn.is_some() {
            // A transaction commits whole or not at all: with anything still undelivered it
            // is aborted, and everything of it is replayed.
            if self.in_flight() == 0 {
                if let Err(e) = self.commit_transaction().await {
                    tracing::warn!(error = %e, "the last transaction did not commit; it will be replayed");
                }
            } else if let Some(txn) = self.txn.as_mut() {
                txn.abort().await;
            }
        }
        let left = self.in_flight() + self.uncommitted.len();
        gauge!(m::IN_FLIGHT).decrement(left as f64);
        if left > 0 {
            tracing::info!(
                uncommitted = left,
                "records not completed at shutdown; they will be replayed"
            );
        }
    }
}

/// The checkpoint writes for the next changelog offset of each (store, task), stamped now.
fn checkpoint_writes(next: impl IntoIterator<Item = ((Cf, i32), i64)>) -> Vec<Write> {
    let now = crate::time::now_ms();
    next.into_iter()
        .map(|((store, task), next_offset)| {
            Checkpoint {
                next_offset,
                written_at: now,
            }
            .write(task, store)
        })
        .collect()
}

/// Processes a record, waiting out registry outages and configuration faults (never
/// dead-lettering for them); `/readyz` says so while it waits.
async fn process_with_retry(
    pipeline: &mut Pipeline,
    health: &Health,
    record: &InputRecord<'_>,
) -> anyhow::Result<Processed> {
    let mut delays = crate::retry::backoff();
    let mut waiting = None;
    loop {
        match pipeline.process(record).await {
            Ok(processed) => return Ok(processed),
            Err(PipelineError::Registry(e)) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                if waiting.is_none() {
                    tracing::warn!(error = %e, "cannot use the schema registry; waiting");
                } else {
                    tracing::debug!(error = %e, retry_in = ?delay, "still waiting on the schema registry");
                }
                waiting = Some(health.registry_fault(&e, waiting));
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The record that takes the place of an output the producer or broker refused: for a
/// routed lead or late event, the input's DLQ record (class `oversize`); for a DLQ record,
/// itself with its value truncated. A truncated DLQ record that is refused again cannot be
/// placed anywhere: that stops the processor.
fn replacement(
    refused: OutputRecord,
    input: &OwnedMessage,
    topic: &str,
    size: usize,
    error: &rdkafka::error::KafkaError,
    topology: &crate::topology::Topology,
) -> anyhow::Result<OutputRecord> {
    if refused.kind == OutputKind::Dlq {
        if refused.value.as_ref().map_or(0, Vec::len) <= TRUNCATED_VALUE_BYTES {
            anyhow::bail!(
                "the DLQ topic {topic} refuses even a truncated record ({size} bytes: {error}); \
                 raise its max.message.bytes"
            );
        }
        let mut record = refused;
        truncate_value(&mut record);
        return Ok(record);
    }
    let source = InputRecord {
        topic: input.topic(),
        partition: input.partition(),
        offset: input.offset(),
        timestamp: input.timestamp().to_millis(),
        key: input.key(),
        value: input.payload(),
    };
    let message = format!(
        "its {} output ({size} bytes) was refused by {topic}: {error}",
        refused.kind.as_str()
    );
    let mut record = dlq_record(
        &topology.outputs.dlq,
        &source,
        DlqClass::Oversize,
        &message,
        None,
    );
    let bytes = record.value.as_ref().map_or(0, Vec::len) + record.key.as_ref().map_or(0, Vec::len);
    if bytes > topology.limits.max_record_bytes {
        truncate_value(&mut record);
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode;
    use rdkafka::Timestamp;

    use super::*;

    fn topology() -> crate::topology::Topology {
        crate::topology::parse("t.yaml", include_str!("../../topologies/lead-routing.yaml"))
            .unwrap()
    }

    fn input(value: Vec<u8>) -> OwnedMessage {
        OwnedMessage::new(
            Some(value),
            Some(b"ct_1".to_vec()),
            "crm.contacts.v1".into(),
            Timestamp::CreateTime(7),
            3,
            42,
            None,
        )
    }

    fn header<'a>(r: &'a OutputRecord, key: &str) -> Option<&'a [u8]> {
        r.headers
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    fn too_large() -> rdkafka::error::KafkaError {
        rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
    }

    #[test]
    fn a_refused_routed_lead_is_replaced_by_its_inputs_dlq_record() {
        let t = topology();
        let message = input(b"original".to_vec());
        let routed = OutputRecord {
            kind: OutputKind::Routed,
            topic: "leads.routed.p0".into(),
            partition: None,
            key: Some(b"ct_1".to_vec()),
            value: Some(vec![0; 10]),
            headers: vec![],
        };
        let r = replacement(routed, &message, "leads.routed.p0", 10, &too_large(), &t).unwrap();
        assert_eq!(r.kind, OutputKind::Dlq);
        assert_eq!(r.topic, t.outputs.dlq);
        assert_eq!(r.value.as_deref(), Some(&b"original"[..]));
        assert_eq!(header(&r, "error.class"), Some(&b"oversize"[..]));
        assert_eq!(header(&r, "source.offset"), Some(&b"42"[..]));
        assert_eq!(header(&r, "source.partition"), Some(&b"3"[..]));
        assert_eq!(header(&r, "original.size"), None);
    }

    #[test]
    fn a_refused_dlq_record_is_truncated_once_then_it_is_fatal() {
        let t = topology();
        let message = input(vec![1; 5000]);
        let source = InputRecord {
            topic: message.topic(),
            partition: 3,
            offset: 42,
            timestamp: Some(7),
            key: message.key(),
            value: message.payload(),
        };
        let dlq = dlq_record(&t.outputs.dlq, &source, DlqClass::BadMagic, "bad", None);
        let truncated = replacement(dlq, &message, "leads.dlq", 5004, &too_large(), &t).unwrap();
        assert_eq!(
            truncated.value.as_ref().unwrap().len(),
            TRUNCATED_VALUE_BYTES
        );
        assert_eq!(header(&truncated, "original.size"), Some(&b"5000"[..]));
        assert_eq!(header(&truncated, "error.class"), Some(&b"bad_magic"[..]));
        let err = replacement(truncated, &message, "leads.dlq", 1028, &too_large(), &t)
            .unwrap_err()
            .to_string();
        assert!(err.contains("raise its max.message.bytes"), "{err}");
    }
}
