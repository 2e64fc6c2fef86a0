//! `leadflow run`: the Kafka side of the processor around [`crate::pipeline::Pipeline`].
//!
//! At least once by construction: a record's input offset is stored, and its state writes
//! committed, only after every output it produced (routed lead or DLQ record) is
//! acknowledged, strictly in the order records were read. A crash anywhere replays from the
//! last committed offset; replayed events either find their de-duplication mark (delivered
//! before) or are processed again and re-emitted with the same decision_id.
//!
//! Records are not processed in the order the consumer hands them over:
//! [`crate::source::merge::Merge`]
//! buffers them per task and input and releases them in record-timestamp order across the
//! task's inputs, so a contact's creation is processed before its engagements even when the
//! engagements topic was fetched first.
//!
//! One consumer feeds `limits.stream_threads` [`worker::Worker`]s (Kafka Streams' stream
//! threads); each owns the tasks `partition % threads == i`, processes their records in merge
//! order and completes them in that order, so the rule above holds per partition.

pub mod close;
pub mod health;
mod http;
pub mod preflight;
mod reload;
mod seed;
mod transaction;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::codec::registry_client::RegistryConfig;
use crate::codec::RegistryClient;
use crate::kafka::context::Logged;
use crate::kafka::KafkaSettings;
use crate::metrics as m;
use crate::pipeline::{wall_clock, Pipeline};
use crate::route::live::LiveRules;
use crate::route::{Rules, ScriptLimits};
use crate::sink::producer::{OutputProducer, Sender};
use crate::source::driver::{self, Driver};
use crate::source::reference::{self, Table};
use crate::source::restore::Restorer;
use crate::source::standby::Standby;
use crate::state::{Cf, StateStore};
use crate::topology::{Guarantee, Topology};
use health::Health;
use transaction::Transaction;
use worker::Worker;

/// Records handed to a stream thread but not taken yet.
const WORKER_QUEUE: usize = 256;
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
    /// `--instance-id`: static group membership, and the name in transactional ids.
    pub instance_id: Option<String>,
}

/// Runs until `shutdown` resolves (then drains and commits) or a fatal error. Once it has
/// stopped, closing the clients and the store may take up to [`close::CLOSE_TIMEOUT`]; past
/// that the process exits (this is `leadflow run`'s whole life).
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
        instance_id,
    } = config;
    // Checks that need no broker first: a wrong setting must not wait for one.
    let message_max_bytes =
        preflight::producer_message_max_bytes(&topology, &kafka).map_err(anyhow::Error::msg)?;
    let registry = RegistryClient::with_config(&registry)?;
    let metrics = m::recorder_builder()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    m::describe();
    m::zero_series(&m::StartUp {
        rule_version: rules.version(),
        sla: topology.acks.is_some(),
        exactly_once: topology.processing.guarantee == Guarantee::ExactlyOnce,
        stream_threads: topology.limits.stream_threads.max(1),
    });
    let health = Arc::new(Health::new(topology.limits.stuck_thread_timeout));
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

    let new_changelogs = crate::kafka::admin::ensure_changelogs(
        &kafka,
        &topology.application_id,
        partitions_per_input as i32,
        topology.dedup_retention,
        message_max_bytes,
    )
    .await?;

    apache_avro::util::max_allocation_bytes(topology.limits.max_record_bytes.saturating_mul(2));
    let store_path = state_dir.join(&topology.application_id);
    std::fs::create_dir_all(&store_path)
        .map_err(|e| anyhow::anyhow!("cannot create state dir {}: {e}", store_path.display()))?;
    let instance =
        transaction::instance_name(instance_id.as_deref(), &state_dir, &topology.application_id)?;
    let store = Arc::new(StateStore::open_with_cache(
        &store_path,
        topology.dedup_retention,
        topology.block_cache_bytes,
    )?);

    // Reference tables first: routing must not see an empty account table. They are read
    // from the beginning into empty tables, so a record deleted while we were down (its
    // tombstone compacted away since) does not survive locally.
    for table in [Cf::Accounts, Cf::Domains, Cf::Reps] {
        store.wipe(table)?;
    }
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
    // store, the rules in force and the registry cache.
    let threads = topology.limits.stream_threads.max(1);
    let live = Arc::new(LiveRules::new(rules.clone()));
    let mut pipelines = Vec::with_capacity(threads);
    for _ in 0..threads {
        let mut pipeline = Pipeline::start(
            topology.clone(),
            rules.clone(),
            registry.clone(),
            store.clone(),
            wall_clock(),
            REGISTRY_WAIT,
        )
        .await?;
        pipeline.follow_rules(live.clone());
        pipeline.set_tasks(partitions_per_input as i32);
        pipelines.push(pipeline);
    }
    // Ends with the runtime, when `leadflow run` exits.
    tokio::spawn(
        reload::Reloader {
            path: topology.rules.clone(),
            limits: ScriptLimits::of(&topology),
            tests: topology.rules_tests.clone(),
            live,
        }
        .run(),
    );
    let (consumer, partitions) = driver::subscribe(
        &kafka,
        &topology,
        instance_id.as_deref(),
        &crate::source::standby::client_id(&instance),
    )?;
    let standby = (topology.standby_replicas > 0).then(|| Arc::new(Standby::default()));
    let stop_standby = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tailer = standby.clone().map(|standby| {
        let tailer = crate::source::standby::Tailer {
            settings: kafka.clone(),
            application_id: topology.application_id.clone(),
            store: store.clone(),
            standby,
            me: crate::source::standby::client_id(&instance),
            contacts_topic: topology.contacts.clone(),
            tasks: partitions_per_input as i32,
            replicas: topology.standby_replicas,
            tombstone_retention: crate::kafka::admin::CHANGELOG_TOMBSTONE_RETENTION,
            stop: stop_standby.clone(),
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = tailer.run() {
                tracing::error!(error = %e, "the standby tailer stopped; standby copies are not kept current");
            }
        })
    });
    let exactly_once = topology.processing.guarantee == Guarantee::ExactlyOnce;
    let max_bytes = message_max_bytes.to_string();
    let producer_config = kafka.producer_config_with(&[("message.max.bytes", &max_bytes)]);
    let producer: OutputProducer = producer_config
        .create_with_context(Logged::new("producer"))
        .map_err(|e| anyhow::anyhow!("cannot create the output producer: {e}"))?;
    let sender = Sender::new(producer, &producer_config);
    if !new_changelogs.is_empty() {
        seed::seed_changelogs(&store, &sender, &topology.application_id, &new_changelogs).await?;
    }
    // Under exactly-once a record the broker refuses aborts the transaction, so none may be
    // produced: records larger than their topic's max.message.bytes are refused before, and
    // batches are kept within the smallest.
    let (topic_limits, batch_size) = if exactly_once {
        let mut topics: Vec<String> = topology.output_topics().into_iter().cloned().collect();
        topics.extend(
            crate::state::changelog::STORES
                .iter()
                .map(|cf| crate::state::changelog::topic(&topology.application_id, *cf)),
        );
        let limits = crate::kafka::admin::max_message_bytes(&kafka, &topics).await?;
        let smallest = limits.values().copied().min().unwrap_or(1_000_000);
        let batch = smallest.min(1_000_000);
        if batch < 64 << 10 {
            tracing::warn!(
                batch_size = batch,
                "a topic's max.message.bytes is small: every batch is kept under it, which \
                 costs throughput"
            );
        }
        (Arc::new(limits), batch)
    } else {
        (Arc::default(), 0)
    };
    let mut workers = JoinSet::new();
    let mut senders = Vec::with_capacity(threads);
    for (thread, pipeline) in pipelines.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        senders.push(tx);
        let (sender, txn) = if exactly_once {
            let timeout = transaction::TRANSACTION_TIMEOUT.as_millis().to_string();
            let id = transaction::transactional_id(&topology.application_id, &instance, thread);
            let producer: OutputProducer = kafka
                .producer_config_with(&[
                    ("message.max.bytes", &max_bytes),
                    ("transactional.id", &id),
                    ("transaction.timeout.ms", &timeout),
                    ("message.timeout.ms", &timeout),
                    ("batch.size", &batch_size.to_string()),
                ])
                .create_with_context(Logged::new("producer"))
                .map_err(|e| {
                    anyhow::anyhow!("cannot create the transactional producer {id}: {e}")
                })?;
            let txn = Transaction::init(
                producer.clone(),
                consumer.clone(),
                topology.processing.commit_interval,
            )
            .await
            .map_err(|e| e.context(format!("transactional id {id}")))?;
            (
                Sender::transactional(producer, topic_limits.clone()),
                Some(txn),
            )
        } else {
            (sender.clone(), None)
        };
        let mut restorer = Restorer::new(
            kafka.clone(),
            topology.application_id.clone(),
            store.clone(),
            crate::kafka::admin::CHANGELOG_TOMBSTONE_RETENTION,
        );
        restorer.warm_up().await?;
        let restorer = restorer.with_standby(standby.clone());
        let worker = Worker::new(
            pipeline,
            consumer.clone(),
            sender,
            health.clone(),
            restorer,
            topology.limits.max_in_flight / threads,
            txn,
        );
        workers.spawn(worker.run(rx, DRAIN_TIMEOUT));
    }
    health.set_processing(true);
    tracing::info!(
        application_id = %topology.application_id,
        rule_version = rules.version(),
        stream_threads = threads,
        guarantee = topology.processing.guarantee.as_str(),
        instance = %instance,
        "processing"
    );
    partitions.fence().set_workers(&senders);
    if let Some(standby) = &standby {
        partitions.fence().set_standby(standby.clone());
    }
    let fence = partitions.fence().clone();
    let mut driver = Driver::new(
        consumer.clone(),
        senders,
        partitions,
        topology.limits.max_in_flight,
        topology.limits.max_task_idle,
    );
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
    stop_standby.store(true, std::sync::atomic::Ordering::Release);
    if let Some(tailer) = tailer {
        let _ = tailer.await;
    }
    let mut result = result;
    while let Some(r) = workers.join_next().await {
        if let Err(e) = r.map_err(anyhow::Error::from).and_then(|r| r) {
            tracing::error!(error = %e, "stream thread failed");
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    let outcome = 'commit: {
        if result.is_err() && exactly_once {
            break 'commit result; // the transactions commit the offsets; what is not committed replays
        }
        if result.is_err() {
            // Stored offsets are those of completed records only, so committing them is right
            // even now; a fatal client cannot commit, and replaying is always safe.
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::warn!(error = %e, "offsets not committed; the next run replays from the last commit");
            }
            break 'commit result;
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                break 'commit Err(e.into());
            }
        }
        tracing::info!("offsets committed; stopped");
        Ok(())
    };
    // What is left is closing: the group consumer leaves the group (its revocation has
    // nothing to complete or commit any more), the other clients and the store close.
    fence.set_closing();
    close::bound(outcome.as_ref().err().map(|e| format!("{e:#}")));
    close::phase("closing the group consumer");
    drop(consumer);
    close::phase("stopping the reference table loaders");
    drop(tasks);
    close::phase("closing the state store and the other clients");
    outcome
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
