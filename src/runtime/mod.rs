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
mod health;
mod http;
pub mod merge;
pub mod preflight;
pub mod reference;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::gauge;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::codec::registry_client::RegistryConfig;
use crate::codec::RegistryClient;
use crate::kafka::context::{client_error, is_fatal, Logged};
use crate::kafka::KafkaSettings;
use crate::metrics as m;
use crate::pipeline::{wall_clock, Pipeline};
use crate::route::Rules;
use crate::sink::producer::{OutputProducer, Sender};
use crate::state::StateStore;
use crate::topology::Topology;
use group::{GroupContext, InputPartitions};
use health::Health;
use merge::Merge;
use reference::Table;
use worker::{Received, Worker};

/// How long the merge waits at most for an empty input known to be behind (not fetched yet,
/// or fetched past what we received): the two input topics' partitions are fetched
/// separately, so one may arrive a fetch round later. Raised to `max_task_idle` if that is
/// longer.
const MAX_WAIT_BEHIND: Duration = Duration::from_secs(5);
/// How often to look again at tasks waiting on an input that is behind: it may catch up
/// without delivering a record (an empty partition's first fetch).
const RECHECK_BEHIND: Duration = Duration::from_millis(20);
/// Records handed to a stream thread but not taken yet.
const WORKER_QUEUE: usize = 256;
/// How long the driver may stop receiving because its buffer is full before it pauses every
/// input partition and polls the consumer again: a full buffer that drains within this is a
/// backlog (no pause, so nothing librdkafka prefetched is dropped and fetched again); one that
/// does not is a blocked stream thread (a registry outage), and the group must still see us
/// poll within `max.poll.interval.ms`.
const FULL_BEFORE_PAUSE: Duration = Duration::from_secs(2);
/// How long a stream thread waits for in-flight outputs at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long start-up waits for topic metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the merge waits for registration of the output schemas at start-up.
const REGISTRY_WAIT: Duration = Duration::from_secs(300);

/// Everything `leadflow run` needs, validated.
pub struct RunConfig {
    pub topology: Topology,
    pub rules: Arc<Rules>,
    pub kafka: KafkaSettings,
    pub registry: RegistryConfig,
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
        registry,
        state_dir,
        metrics_addr,
    } = config;
    // Checks that need no broker first: a wrong setting must not wait for one.
    let message_max_bytes =
        preflight::producer_message_max_bytes(&topology, &kafka).map_err(anyhow::Error::msg)?;
    let registry = RegistryClient::with_config(&registry)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    m::describe();
    let health = Arc::new(Health::default());
    let bound = http::serve(metrics_addr, metrics, health.clone()).await?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");

    let partitions_per_input = {
        let (kafka, topology) = (kafka.clone(), topology.clone());
        tokio::task::spawn_blocking(move || {
            preflight::check_topics(&kafka, &topology, METADATA_TIMEOUT)
        })
        .await??
    };
    tracing::info!(
        partitions = partitions_per_input,
        "inputs are co-partitioned"
    );

    apache_avro::util::max_allocation_bytes(topology.limits.max_record_bytes.saturating_mul(2));
    let store_path = state_dir.join(&topology.application_id);
    std::fs::create_dir_all(&store_path)
        .map_err(|e| anyhow::anyhow!("cannot create state dir {}: {e}", store_path.display()))?;
    let store = Arc::new(StateStore::open_with_cache(
        &store_path,
        topology.dedup_retention,
        topology.block_cache_bytes,
    )?);

    // Reference tables first: routing must not see an empty account table.
    let mut tasks = JoinSet::new();
    let mut loaded = Vec::new();
    for (topic, table) in [
        (&topology.accounts, Table::Accounts),
        (&topology.reps, Table::Reps),
    ] {
        let (tx, rx) = oneshot::channel();
        loaded.push(rx);
        let follower = reference::Follower {
            settings: kafka.clone(),
            group: format!("{}-reference", topology.application_id),
            topic: topic.clone(),
            table,
            registry: registry.clone(),
            store: store.clone(),
            health: health.clone(),
        };
        tasks.spawn(follower.follow(tx));
    }
    for rx in loaded {
        tokio::select! {
            r = rx => if r.is_err() {
                // The loader ended; its error is what to report.
                return Err(loader_stopped(tasks.join_next().await));
            },
            Some(r) = tasks.join_next() => return Err(loader_stopped(Some(r))),
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
                REGISTRY_WAIT,
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
                ("isolation.level", "read_committed"),
                // Both inputs have the same partition count and every member subscribes to
                // both, so range gives each member whole tasks (checked on every assignment).
                ("partition.assignment.strategy", "range"),
            ])
            .create_with_context(context)
            .map_err(|e| anyhow::anyhow!("cannot create the input consumer: {e}"))?,
    );
    consumer.subscribe(&[&topology.contacts, &topology.engagements])?;
    let max_bytes = message_max_bytes.to_string();
    let producer_config = kafka.producer_config_with(&[("message.max.bytes", &max_bytes)]);
    let producer: OutputProducer = producer_config
        .create_with_context(Logged::new("producer"))
        .map_err(|e| anyhow::anyhow!("cannot create the output producer: {e}"))?;
    let sender = Sender::new(producer, &producer_config);
    let mut workers = JoinSet::new();
    let mut senders = Vec::with_capacity(threads);
    for pipeline in pipelines {
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        senders.push(tx);
        let worker = Worker::new(
            pipeline,
            consumer.clone(),
            sender.clone(),
            health.clone(),
            topology.limits.max_in_flight / threads,
        );
        workers.spawn(worker.run(rx, DRAIN_TIMEOUT));
    }
    health.set_processing(true);
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
        held: None,
        full_since: None,
        paused: false,
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
        Some(r) = tasks.join_next() => Err(loader_stopped(Some(r))),
        Some(r) = workers.join_next() => Err(stream_thread_stopped(r)),
    };
    health.set_processing(false);
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
    if result.is_err() {
        // Stored offsets are those of completed records only, so committing them is right
        // even now; a fatal client cannot commit, and replaying is always safe.
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::warn!(error = %e, "offsets not committed; the next run replays from the last commit");
        }
        return result;
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
            return Err(e.into());
        }
    }
    tracing::info!("offsets committed; stopped");
    Ok(())
}

/// The error of a reference-table loader that ended.
fn loader_stopped(
    joined: Option<Result<anyhow::Result<()>, tokio::task::JoinError>>,
) -> anyhow::Error {
    match joined {
        Some(Ok(Err(e))) => e.context("a reference table loader failed"),
        Some(Err(e)) => anyhow::anyhow!("a reference table loader panicked: {e}"),
        Some(Ok(Ok(()))) | None => anyhow::anyhow!("bug: a reference table loader stopped"),
    }
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
    /// A record released by the merge whose stream thread's queue is full, and that thread.
    held: Option<(usize, Received)>,
    /// Since when the buffer has been full (receiving stopped), if it is.
    full_since: Option<Instant>,
    /// Whether every input partition is paused (full for longer than [`FULL_BEFORE_PAUSE`]).
    paused: bool,
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
    /// Receives, merges and dispatches records until an error. While the buffer is full the
    /// driver stops receiving; if it stays full for [`FULL_BEFORE_PAUSE`] (every stream
    /// thread blocked, say on a registry outage) it pauses every input partition and polls
    /// the consumer again, which keeps the group membership (`max.poll.interval.ms`) and
    /// serves rebalances, until there is room.
    async fn consume(&mut self) -> anyhow::Result<()> {
        loop {
            self.apply_rebalances()?;
            self.dispatch_ready().await?;
            let room = self.merge.len() < self.max_buffered;
            let now = Instant::now();
            let full_since = if room {
                self.full_since = None;
                if self.paused {
                    self.pause_all(false);
                }
                None
            } else {
                Some(*self.full_since.get_or_insert(now))
            };
            let pause_at = full_since.map(|since| since + FULL_BEFORE_PAUSE);
            if !self.paused && pause_at.is_some_and(|at| at <= now) {
                self.pause_all(true);
            }
            let receive = room || self.paused;
            // Nothing may be processed now: every task with records waits for an empty input,
            // or the stream thread of the next record is full. Timer waits end by `wake`; a
            // full thread by its permit; an empty input by a record.
            let mut wake = self.merge.next_deadline();
            if self.merge.waiting_behind() {
                let recheck = Instant::now() + RECHECK_BEHIND;
                wake = Some(wake.map_or(recheck, |w| w.min(recheck)));
            }
            if !self.paused {
                if let Some(at) = pause_at {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
            }
            let full_worker = self.held.as_ref().map(|(w, _)| self.workers[*w].clone());
            tokio::select! {
                biased;
                permit = reserve(full_worker.as_ref()), if full_worker.is_some() => {
                    let Ok(permit) = permit else {
                        anyhow::bail!("a stream thread stopped");
                    };
                    if let Some((_, received)) = self.held.take() {
                        permit.send(received);
                    }
                }
                message = self.consumer.recv(), if receive => match message {
                    // (While paused, a record fetched before the pause may still come: it is
                    // buffered, one over the bound.)
                    Ok(message) => {
                        let message = message.detach();
                        // A revocation handled inside this recv() concerns only records
                        // received before it: forget those before buffering this one.
                        self.apply_rebalances()?;
                        self.buffer(message)?;
                    }
                    Err(e) if is_fatal(&e) => {
                        anyhow::bail!("fatal error of the input consumer: {e}")
                    }
                    Err(e) => client_error("consumer", &e, "consume"),
                },
                // An assignment change handled inside recv() while no record comes.
                () = self.partitions.changed() => {}
                () = sleep_until(wake), if wake.is_some() => {}
            }
        }
    }

    /// Hands every record the merge releases now to its stream thread, until one's queue is
    /// full (that record is held until it has room).
    async fn dispatch_ready(&mut self) -> anyhow::Result<()> {
        loop {
            let (worker, received) = match self.held.take() {
                Some(held) => held,
                None => match self.pop_ready() {
                    Some(received) => {
                        let worker = received.message.partition().unsigned_abs() as usize
                            % self.workers.len();
                        (worker, received)
                    }
                    None => return Ok(()),
                },
            };
            match self.workers[worker].try_send(received) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(received)) => {
                    self.held = Some((worker, received));
                    return Ok(());
                }
                // Its own error is what the run reports.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    anyhow::bail!("a stream thread stopped")
                }
            }
            gauge!(m::BUFFERED).set(self.merge.len() as f64);
            // A long run of ready records must still let the shutdown signal in.
            tokio::task::consume_budget().await;
        }
    }

    /// The next record in merge order, if one may be processed now. An empty input that is
    /// behind is waited for longer, unless the buffer is full: its records may then sit in the
    /// client behind others we cannot receive.
    fn pop_ready(&mut self) -> Option<Received> {
        let Driver {
            merge,
            partitions,
            consumer,
            max_buffered,
            ..
        } = self;
        let room = merge.len() < *max_buffered;
        merge.pop_ready_with(Instant::now(), |partition, input| {
            room && partitions.behind(consumer, input, partition)
        })
    }

    /// Pauses (or resumes) fetching every assigned input partition.
    fn pause_all(&mut self, pause: bool) {
        let tpl = match self.consumer.assignment() {
            Ok(tpl) => tpl,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the assignment to pause or resume it");
                return;
            }
        };
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, pause, "pause/resume of the input partitions failed");
            return;
        }
        if pause {
            tracing::info!(
                buffered = self.merge.len(),
                "the stream threads are not taking records: input partitions paused, polling on"
            );
        } else {
            tracing::info!("input partitions resumed");
        }
        self.paused = pause;
        gauge!(m::CONSUMER_PAUSED).set(if pause { 1.0 } else { 0.0 });
    }

    /// Puts a received record into the merge: its input from its topic, its position from the
    /// Kafka record timestamp (CreateTime, like Kafka Streams' default extractor).
    fn buffer(&mut self, message: OwnedMessage) -> anyhow::Result<()> {
        let Some(input) = self.partitions.input(message.topic()) else {
            anyhow::bail!("a record of {}, which is not an input", message.topic());
        };
        let partition = message.partition();
        tracing::trace!(
            topic = message.topic(),
            partition,
            offset = message.offset(),
            "received"
        );
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

    /// Applies assignment changes. The buffered records of revoked partitions are dropped:
    /// they are not ours to process any more (their offsets were never stored, so their next
    /// owner, maybe us again, reads them from the last commit). Records of a revoked
    /// partition already processed are unaffected: storing their offset fails (librdkafka
    /// refuses offsets of unassigned partitions) and is only logged. Newly assigned partitions
    /// start fetching. An assignment that splits a task fails the run.
    fn apply_rebalances(&mut self) -> anyhow::Result<()> {
        let group::Rebalanced { revoked, assigned } = self.partitions.apply_rebalances();
        for (input, partition) in revoked {
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
        if assigned.is_empty() {
            return Ok(());
        }
        // Newly assigned partitions start fetching; while paused, they must not.
        if self.paused {
            self.pause_all(true);
        }
        let unpaired = self.partitions.unpaired();
        if !unpaired.is_empty() {
            let names: Vec<String> = unpaired.iter().map(|(t, p)| format!("{t}:{p}")).collect();
            anyhow::bail!(
                "the group assigned this instance only half of some tasks: {} went to another \
                 member. Every member of the group must run leadflow with the same input topics \
                 (is another application using the group id?)",
                names.join(", ")
            );
        }
        Ok(())
    }
}

/// A permit to send to `worker` (never resolves without one: the branch is disabled then).
async fn reserve(
    worker: Option<&mpsc::Sender<Received>>,
) -> Result<mpsc::Permit<'_, Received>, mpsc::error::SendError<()>> {
    match worker {
        Some(w) => w.reserve().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one (the select branch is disabled then).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
