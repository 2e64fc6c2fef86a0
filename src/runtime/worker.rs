//! A stream thread: processes the records of the tasks it owns, sends their outputs, and
//! completes each record once all of them are acknowledged (Kafka Streams' `StreamThread`).
//!
//! Tasks are partition numbers and every task belongs to exactly one worker (`p % workers`),
//! so a worker's staged state, watermarks and offsets concern its own partitions only:
//! completing strictly in its own processing order keeps every partition's order, and
//! workers never wait for each other.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{gauge, histogram};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::group::GroupContext;
use crate::metrics as m;
use crate::pipeline::{InputRecord, Pipeline, PipelineError, Processed};
use crate::sink::OutputRecord;

/// A record received, on its way to being processed.
pub(super) struct Received {
    pub message: OwnedMessage,
    pub read_at: Instant,
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

type Delivery = (u64, Result<(), String>);

pub(super) struct Worker {
    pub pipeline: Pipeline,
    pub consumer: Arc<StreamConsumer<GroupContext>>,
    pub producer: FutureProducer,
    /// Processed records not completed yet, in processing order.
    queue: VecDeque<InFlight>,
    /// One task per output awaiting its delivery report.
    deliveries: JoinSet<Delivery>,
    /// Most records processed but not completed at once.
    max_in_flight: usize,
}

impl Worker {
    pub fn new(
        pipeline: Pipeline,
        consumer: Arc<StreamConsumer<GroupContext>>,
        producer: FutureProducer,
        max_in_flight: usize,
    ) -> Worker {
        Worker {
            pipeline,
            consumer,
            producer,
            queue: VecDeque::new(),
            deliveries: JoinSet::new(),
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// Processes records from `records` until it is closed and empty, then settles what is in
    /// flight (waiting up to `drain_timeout` for deliveries). An error stops the worker at once
    /// without completing the failed record or any after it: their offsets are never stored.
    pub async fn run(
        mut self,
        mut records: mpsc::Receiver<Received>,
        drain_timeout: Duration,
    ) -> anyhow::Result<()> {
        loop {
            // Every acknowledgement that has arrived, then one commit for all the records they
            // completed: librdkafka reports deliveries a produce batch at a time, and one
            // RocksDB write (and WAL append) per batch instead of per record is much cheaper.
            while let Some(done) = self.deliveries.try_join_next() {
                self.delivered(done?)?;
            }
            self.complete_ready()?;
            let room = self.queue.len() < self.max_in_flight;
            tokio::select! {
                biased;
                Some(done) = self.deliveries.join_next(), if !self.deliveries.is_empty() => {
                    self.delivered(done?)?;
                }
                received = records.recv(), if room => match received {
                    Some(received) => {
                        self.process(received).await?;
                        // A long run of records must still let other tasks of the runtime in.
                        tokio::task::consume_budget().await;
                    }
                    None => break,
                },
                else => anyhow::bail!("bug: a worker is full, yet no delivery is pending"),
            }
        }
        self.drain(drain_timeout).await;
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
        let processed = process_with_retry(&mut self.pipeline, &record).await?;
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
        gauge!(m::IN_FLIGHT).increment(1.0);
        Ok(())
    }

    /// One output of record `seq` was acknowledged (or failed: fatal, nothing is committed).
    /// The record completes at the next [`complete_ready`](Self::complete_ready).
    fn delivered(&mut self, (seq, result): Delivery) -> anyhow::Result<()> {
        if let Err(e) = result {
            anyhow::bail!("an output of a record could not be delivered ({e}); stopping without committing it");
        }
        let front = self.queue.front().map(|f| f.processed.seq).unwrap_or(seq);
        if let Some(entry) = self.queue.get_mut((seq - front) as usize) {
            entry.pending -= 1;
        }
        Ok(())
    }

    /// Completes, in order, every record at the head of the queue whose outputs are all
    /// delivered: one RocksDB write for their state, then their offsets.
    fn complete_ready(&mut self) -> anyhow::Result<()> {
        let ready = self.queue.iter().take_while(|f| f.pending == 0).count();
        if ready == 0 {
            return Ok(());
        }
        let done: Vec<InFlight> = self.queue.drain(..ready).collect();
        self.pipeline
            .commit_all(done.iter().map(|d| &d.processed))?;
        for done in &done {
            tracing::trace!(
                topic = done.topic,
                partition = done.partition,
                offset = done.offset,
                seq = done.processed.seq,
                "completed"
            );
            if let Err(e) = self
                .consumer
                .store_offset(&done.topic, done.partition, done.offset)
            {
                // The partition was revoked meanwhile (librdkafka answers `__STATE` for a
                // partition not assigned); its new owner replays from the last commit.
                tracing::debug!(error = %e, "offset not stored");
            }
            histogram!(m::RECORD_LATENCY).record(done.read_at.elapsed().as_secs_f64());
        }
        gauge!(m::IN_FLIGHT).decrement(ready as f64);
        Ok(())
    }

    /// Waits (up to `timeout`) for in-flight outputs and completes every record whose outputs
    /// were all delivered. What stays undelivered is not completed: it is replayed.
    async fn drain(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.deliveries.is_empty() {
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
            if let Err(e) = self.delivered(done) {
                tracing::warn!(error = %e, "stopping the drain; the rest will be replayed");
                break;
            }
        }
        if let Err(e) = self.complete_ready() {
            tracing::warn!(error = %e, "cannot complete the delivered records; they will be replayed");
        }
        gauge!(m::IN_FLIGHT).decrement(self.queue.len() as f64);
        if !self.queue.is_empty() {
            tracing::info!(
                uncommitted = self.queue.len(),
                "records not completed at shutdown; they will be replayed"
            );
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
async fn send(producer: &FutureProducer, output: &OutputRecord) -> anyhow::Result<DeliveryFuture> {
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
