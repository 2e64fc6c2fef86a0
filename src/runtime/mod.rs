//! `leadflow run`: the Kafka side of the processor around [`crate::pipeline::Pipeline`].
//!
//! At least once by construction: a record's input offset is stored, and its state writes
//! committed, only after every output it produced (routed lead or DLQ record) is
//! acknowledged, strictly in the order records were read. A crash anywhere replays from the
//! last committed offset; replayed events either find their de-duplication mark (delivered
//! before) or are processed again and re-emitted with the same decision_id.
//!
//! Records are not processed in the order the consumer hands them over: [`merge::Merge`]
//! buffers them per task and input and releases them in record-timestamp order across the
//! task's inputs, so a contact's creation is processed before its engagements even when the
//! engagements topic was fetched first.
//!
//! One consumer feeds `limits.stream_threads` [`worker::Worker`]s (Kafka Streams' stream
//! threads); each owns the tasks `partition % threads == i`, processes their records in merge
//! order and completes them in that order, so the rule above holds per partition.

mod group;
mod http;
pub mod merge;
pub mod reference;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::gauge;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use rdkafka::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::codec::RegistryClient;
use crate::kafka::KafkaSettings;
use crate::metrics as m;
use crate::pipeline::{wall_clock, Pipeline};
use crate::route::Rules;
use crate::state::StateStore;
use crate::topology::Topology;
use group::{GroupContext, InputPartitions};
use merge::Merge;
use reference::Table;
use worker::{Received, Worker};

/// How long the merge waits at most for an empty input known to be behind (not fetched yet,
/// or fetched past what we received): long enough for a slow fetch (tansu answers the two
/// topics' fetches up to a second apart), short enough that an input that only looks behind
/// (a transaction marker at its end) costs little. Raised to `max_task_idle` if that is longer.
const MAX_WAIT_BEHIND: Duration = Duration::from_secs(5);
/// How often to look again at tasks waiting on an input that is behind: it may catch up
/// without delivering a record (an empty partition's first fetch).
const RECHECK_BEHIND: Duration = Duration::from_millis(20);
/// Records handed to a stream thread but not taken yet.
const WORKER_QUEUE: usize = 256;
/// How long a stream thread waits for in-flight outputs at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `leadflow run` needs, validated.
pub struct RunConfig {
    pub topology: Topology,
    pub rules: Arc<Rules>,
    pub kafka: KafkaSettings,
    pub registry_url: String,
    pub state_dir: PathBuf,
    pub metrics_addr: SocketAddr,
}

/// Runs until `shutdown` resolves (then drains and commits) or a fatal error.
pub async fn run(
    config: RunConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let RunConfig {
        topology,
        rules,
        kafka,
        registry_url,
        state_dir,
        metrics_addr,
    } = config;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    m::describe();
    let ready = Arc::new(AtomicBool::new(false));
    let bound = http::serve(metrics_addr, metrics, ready.clone()).await?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");

    apache_avro::util::max_allocation_bytes(topology.limits.max_record_bytes.saturating_mul(2));
    let store_path = state_dir.join(&topology.application_id);
    std::fs::create_dir_all(&store_path)
        .map_err(|e| anyhow::anyhow!("cannot create state dir {}: {e}", store_path.display()))?;
    let store = Arc::new(StateStore::open_with_cache(
        &store_path,
        topology.dedup_retention,
        topology.block_cache_bytes,
    )?);
    let registry = RegistryClient::new(&registry_url)?;

    // Reference tables first: routing must not see an empty account table.
    let mut tasks = JoinSet::new();
    let mut loaded = Vec::new();
    for (topic, table) in [
        (&topology.accounts, Table::Accounts),
        (&topology.reps, Table::Reps),
    ] {
        let (tx, rx) = oneshot::channel();
        loaded.push(rx);
        tasks.spawn(reference::follow(
            kafka.clone(),
            format!("{}-reference", topology.application_id),
            topic.clone(),
            table,
            registry.clone(),
            store.clone(),
            tx,
        ));
    }
    for rx in loaded {
        tokio::select! {
            r = rx => r.map_err(|_| anyhow::anyhow!("a reference table loader stopped"))?,
            Some(r) = tasks.join_next() => anyhow::bail!("reference table loader failed: {:?}", r?.err()),
        }
    }

    // One pipeline per stream thread: its own staged writes and watermarks, sharing the
    // store, the rules and the registry cache.
    let threads = topology.limits.stream_threads.max(1);
    let mut pipelines = Vec::with_capacity(threads);
    for _ in 0..threads {
        pipelines.push(
            Pipeline::start(
                topology.clone(),
                rules.clone(),
                registry.clone(),
                store.clone(),
                wall_clock(),
                Duration::from_secs(300),
            )
            .await?,
        );
    }
    let (partitions, context) = InputPartitions::new(vec![
        topology.contacts.clone(),
        topology.engagements.clone(),
    ])?;
    let consumer: Arc<StreamConsumer<GroupContext>> = Arc::new(
        kafka
            .consumer_config(&[
                ("group.id", topology.application_id.as_str()),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
            ])
            .create_with_context(context)?,
    );
    consumer.subscribe(&[&topology.contacts, &topology.engagements])?;
    let producer: FutureProducer = kafka.producer_config().create()?;
    let mut workers = JoinSet::new();
    let mut senders = Vec::with_capacity(threads);
    for pipeline in pipelines {
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        senders.push(tx);
        let worker = Worker::new(
            pipeline,
            consumer.clone(),
            producer.clone(),
            topology.limits.max_in_flight / threads,
        );
        workers.spawn(worker.run(rx, DRAIN_TIMEOUT));
    }
    ready.store(true, Ordering::Relaxed);
    tracing::info!(
        application_id = %topology.application_id,
        rule_version = rules.version(),
        stream_threads = threads,
        "processing"
    );
    let mut driver = Driver {
        consumer: consumer.clone(),
        workers: senders,
        max_buffered: topology.limits.max_in_flight,
        merge: merge_for(topology.limits.max_task_idle),
        partitions,
    };
    // On shutdown (and on any error) records still in the merge buffer are never processed;
    // their offsets were never stored, so nothing past them is committed and they are read
    // again by the next run. The stream threads finish the records handed to them and settle
    // what is in flight.
    let result = tokio::select! {
        r = driver.consume() => r,
        _ = shutdown => {
            tracing::info!("shutting down: delivering in-flight records");
            Ok(())
        }
        Some(r) = tasks.join_next() => Err(anyhow::anyhow!("reference table loader failed: {:?}", r?.err())),
        Some(r) = workers.join_next() => Err(stream_thread_stopped(r)),
    };
    ready.store(false, Ordering::Relaxed);
    drop(driver);
    let mut result = result;
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            tracing::error!(error = %e, "stream thread failed");
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
            return Err(e.into());
        }
    }
    tracing::info!("offsets committed; stopped");
    result
}

/// Why the run stops when a stream thread ended while records were still coming.
fn stream_thread_stopped(
    joined: Result<anyhow::Result<()>, tokio::task::JoinError>,
) -> anyhow::Error {
    match joined {
        Ok(Ok(())) => anyhow::anyhow!("bug: a stream thread stopped while its input was open"),
        Ok(Err(e)) => e,
        Err(e) => anyhow::anyhow!("a stream thread panicked: {e}"),
    }
}

struct Driver {
    consumer: Arc<StreamConsumer<GroupContext>>,
    /// The stream threads' inputs; task (partition) `p` goes to `workers[p % len]`.
    workers: Vec<mpsc::Sender<Received>>,
    /// Bounds the records buffered in the merge.
    max_buffered: usize,
    /// Records received but not processed yet, released in timestamp order per task.
    merge: Merge<Received>,
    /// The input topics by merge input index (contacts 0, first on timestamp ties;
    /// engagements 1) and their partitions assigned to us.
    partitions: InputPartitions,
}

/// The input merge of the two inputs: waits `max_task_idle` for an empty input, longer for
/// one known to be behind, never with `0s`.
fn merge_for(max_task_idle: Duration) -> Merge<Received> {
    let behind = if max_task_idle.is_zero() {
        Duration::ZERO
    } else {
        MAX_WAIT_BEHIND
    };
    Merge::new(2, max_task_idle).wait_longer_when_behind(behind)
}

impl Driver {
    async fn consume(&mut self) -> anyhow::Result<()> {
        loop {
            self.apply_rebalances();
            let room = self.merge.len() < self.max_buffered;
            if let Some(received) = self.pop_ready(room) {
                gauge!(m::BUFFERED).set(self.merge.len() as f64);
                let worker =
                    received.message.partition().unsigned_abs() as usize % self.workers.len();
                if self.workers[worker].send(received).await.is_err() {
                    // Its own error is what the run reports.
                    anyhow::bail!("a stream thread stopped");
                }
                // A long run of ready records must still let the shutdown signal in.
                tokio::task::consume_budget().await;
                continue;
            }
            // Nothing may be processed now: every task with records waits for an empty input.
            // Those waits end by `wake` (with a full buffer, inputs behind are not waited for
            // beyond max_task_idle), so not receiving while full cannot deadlock. (No
            // pause/resume: tansu 0.6.0 loses the rest of a record batch when a fetch resumes
            // from its middle; see tests/broker_quirks.rs.)
            let mut wake = self.merge.next_deadline();
            if self.merge.waiting_behind() {
                let recheck = Instant::now() + RECHECK_BEHIND;
                wake = Some(wake.map_or(recheck, |w| w.min(recheck)));
            }
            tokio::select! {
                biased;
                message = self.consumer.recv(), if room => {
                    let message = message?.detach();
                    // A revocation handled inside this recv() concerns only records received
                    // before it: forget those before buffering this one.
                    self.apply_rebalances();
                    self.buffer(message)?;
                }
                () = sleep_until(wake), if wake.is_some() => {}
                else => anyhow::bail!("bug: the input merge is full, yet nothing releases it"),
            }
        }
    }

    /// The next record in merge order, if one may be processed now. An empty input that is
    /// behind is waited for longer, unless the buffer is full: its records may then sit in the
    /// client behind others we cannot receive.
    fn pop_ready(&mut self, room: bool) -> Option<Received> {
        let Driver {
            merge,
            partitions,
            consumer,
            ..
        } = self;
        merge.pop_ready_with(Instant::now(), |partition, input| {
            room && partitions.behind(consumer, input, partition)
        })
    }

    /// Puts a received record into the merge: its input from its topic, its position from the
    /// Kafka record timestamp (CreateTime, like Kafka Streams' default extractor).
    fn buffer(&mut self, message: OwnedMessage) -> anyhow::Result<()> {
        let Some(input) = self.partitions.input(message.topic()) else {
            anyhow::bail!("a record of {}, which is not an input", message.topic());
        };
        let partition = message.partition();
        self.partitions.received(input, partition, message.offset());
        let timestamp = message.timestamp().to_millis();
        let received = Received {
            message,
            read_at: Instant::now(),
        };
        self.merge.push(partition, input, timestamp, received);
        gauge!(m::BUFFERED).set(self.merge.len() as f64);
        Ok(())
    }

    /// Drops the buffered records of revoked partitions: they are not ours to process any more
    /// (their offsets were never stored, so their next owner, maybe us again, reads them from
    /// the last commit). Records of a revoked partition already processed are unaffected:
    /// storing their offset fails (librdkafka refuses offsets of unassigned partitions) and
    /// is only logged.
    fn apply_rebalances(&mut self) {
        for (input, partition) in self.partitions.apply_rebalances() {
            let dropped = self.merge.remove(partition, input);
            if dropped > 0 {
                tracing::info!(
                    input,
                    partition,
                    dropped,
                    "partition revoked: its buffered records are left to its next owner"
                );
                gauge!(m::BUFFERED).set(self.merge.len() as f64);
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one (the select branch is disabled then).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
