//! `leadflow run`: the Kafka side of the processor around [`crate::pipeline::Pipeline`].
//!
//! At least once by construction: a record's input offset is stored, and its state writes
//! committed, only after every output it produced (routed lead or DLQ record) is
//! acknowledged, strictly in the order records were read. A crash anywhere replays from the
//! last committed offset; replayed events either find their de-duplication mark (delivered
//! before) or are processed again and re-emitted with the same decision_id.

mod http;
pub mod reference;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{gauge, histogram};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::codec::RegistryClient;
use crate::kafka::KafkaSettings;
use crate::metrics as m;
use crate::pipeline::{wall_clock, InputRecord, Pipeline, PipelineError, Processed};
use crate::route::Rules;
use crate::sink::OutputRecord;
use crate::state::StateStore;
use crate::topology::Topology;
use reference::Table;

/// Everything `leadflow run` needs, validated.
pub struct RunConfig {
    pub topology: Topology,
    pub rules: Arc<Rules>,
    pub kafka: KafkaSettings,
    pub registry_url: String,
    pub state_dir: PathBuf,
    pub metrics_addr: SocketAddr,
}

/// A record read and processed, waiting for its outputs to be acknowledged.
struct InFlight {
    processed: Processed,
    topic: String,
    partition: i32,
    offset: i64,
    pending: usize,
    read_at: Instant,
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
    let store = Arc::new(StateStore::open(&store_path, topology.dedup_retention)?);
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

    let pipeline = Pipeline::start(
        topology.clone(),
        rules,
        registry,
        store,
        wall_clock(),
        Duration::from_secs(300),
    )
    .await?;
    let consumer: StreamConsumer<GroupContext> = kafka
        .client_config(&[
            ("group.id", topology.application_id.as_str()),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ])
        .create_with_context(GroupContext)?;
    consumer.subscribe(&[&topology.contacts, &topology.engagements])?;
    let producer: FutureProducer = kafka.producer_config().create()?;
    ready.store(true, Ordering::Relaxed);
    tracing::info!(
        application_id = %topology.application_id,
        rule_version = pipeline.rule_version(),
        "processing"
    );
    let mut driver = Driver {
        pipeline,
        consumer,
        producer,
        queue: VecDeque::new(),
        deliveries: JoinSet::new(),
        max_in_flight: topology.limits.max_in_flight,
    };
    let result = tokio::select! {
        r = driver.consume() => r,
        _ = shutdown => {
            tracing::info!("shutting down: delivering in-flight records");
            Ok(())
        }
        Some(r) = tasks.join_next() => Err(anyhow::anyhow!("reference table loader failed: {:?}", r?.err())),
    };
    ready.store(false, Ordering::Relaxed);
    driver.drain(Duration::from_secs(30)).await?;
    result
}

type Delivery = (u64, Result<(), String>);

struct Driver {
    pipeline: Pipeline,
    consumer: StreamConsumer<GroupContext>,
    producer: FutureProducer,
    queue: VecDeque<InFlight>,
    /// One task per output awaiting its delivery report.
    deliveries: JoinSet<Delivery>,
    max_in_flight: usize,
}

impl Driver {
    async fn consume(&mut self) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                biased;
                Some(done) = self.deliveries.join_next(), if !self.deliveries.is_empty() => {
                    self.delivered(done?)?;
                }
                message = self.consumer.recv(), if self.queue.len() < self.max_in_flight => {
                    let message = message?;
                    let read_at = Instant::now();
                    let record = InputRecord {
                        topic: message.topic(),
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp: message.timestamp().to_millis(),
                        key: message.key(),
                        value: message.payload(),
                    };
                    let processed = process_with_retry(&mut self.pipeline, &record).await?;
                    let seq = processed.seq;
                    let mut pending = 0;
                    for output in &processed.outputs {
                        let delivery = send(&self.producer, output).await?;
                        pending += 1;
                        self.deliveries.spawn(async move {
                            match delivery.await {
                                Ok(Ok(_)) => (seq, Ok(())),
                                Ok(Err((e, _))) => (seq, Err(e.to_string())),
                                Err(_) => (seq, Err("producer dropped the record".into())),
                            }
                        });
                    }
                    self.queue.push_back(InFlight {
                        processed,
                        topic: message.topic().to_string(),
                        partition: message.partition(),
                        offset: message.offset(),
                        pending,
                        read_at,
                    });
                    self.complete_ready()?;
                }
            }
        }
    }

    /// One output of record `seq` was acknowledged (or failed: fatal, nothing is committed).
    fn delivered(&mut self, (seq, result): Delivery) -> anyhow::Result<()> {
        if let Err(e) = result {
            anyhow::bail!("an output of a record could not be delivered ({e}); stopping without committing it");
        }
        let front = self.queue.front().map(|f| f.processed.seq).unwrap_or(seq);
        if let Some(entry) = self.queue.get_mut((seq - front) as usize) {
            entry.pending -= 1;
        }
        self.complete_ready()
    }

    /// Commits, in order, every record at the head of the queue whose outputs are all delivered.
    fn complete_ready(&mut self) -> anyhow::Result<()> {
        while self.queue.front().is_some_and(|f| f.pending == 0) {
            let done = self.queue.pop_front().expect("front exists");
            self.pipeline.commit(&done.processed)?;
            if let Err(e) = self
                .consumer
                .store_offset(&done.topic, done.partition, done.offset)
            {
                // The partition was revoked meanwhile; its new owner replays from the last commit.
                tracing::debug!(error = %e, "offset not stored");
            }
            histogram!(m::RECORD_LATENCY).record(done.read_at.elapsed().as_secs_f64());
        }
        gauge!(m::IN_FLIGHT).set(self.queue.len() as f64);
        Ok(())
    }

    /// Waits (up to `timeout`) for in-flight outputs, commits every record whose outputs were
    /// all delivered, and commits the consumer's offsets.
    async fn drain(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.deliveries.is_empty() {
            match tokio::time::timeout_at(deadline, self.deliveries.join_next()).await {
                Ok(Some(done)) => self.delivered(done?)?,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        pending = self.deliveries.len(),
                        "outputs still undelivered at shutdown; they will be replayed"
                    );
                    break;
                }
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            if !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) {
                return Err(e.into());
            }
        }
        tracing::info!(uncommitted = self.queue.len(), "offsets committed; stopped");
        Ok(())
    }
}

/// Logs partition assignments and revocations of the group consumer.
struct GroupContext;

impl rdkafka::ClientContext for GroupContext {}

impl rdkafka::consumer::ConsumerContext for GroupContext {
    fn post_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match rebalance {
            rdkafka::consumer::Rebalance::Assign(tpl) => {
                let parts: Vec<String> = tpl
                    .elements()
                    .iter()
                    .map(|e| format!("{}:{}", e.topic(), e.partition()))
                    .collect();
                tracing::info!(partitions = %parts.join(","), "partitions assigned");
            }
            rdkafka::consumer::Rebalance::Revoke(tpl) => {
                tracing::info!(count = tpl.count(), "partitions revoked");
            }
            rdkafka::consumer::Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// Processes a record, waiting out registry outages (never dead-lettering for them).
async fn process_with_retry(
    pipeline: &mut Pipeline,
    record: &InputRecord<'_>,
) -> anyhow::Result<Processed> {
    let mut backoff = Duration::from_millis(100);
    loop {
        match pipeline.process(record).await {
            Ok(processed) => return Ok(processed),
            Err(PipelineError::Transient(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "schema registry unavailable; waiting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Enqueues one output, waiting while the producer queue is full.
async fn send(
    producer: &FutureProducer,
    output: &OutputRecord,
) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
    let mut headers = OwnedHeaders::new_with_capacity(output.headers.len());
    for (k, v) in &output.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&output.topic).headers(headers);
    if let Some(k) = &output.key {
        record = record.key(k);
    }
    if let Some(v) = &output.value {
        record = record.payload(v);
    }
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => anyhow::bail!("cannot produce to {}: {e}", output.topic),
        }
    }
}
