//! Producing outputs: enqueue in processing order (waiting while librdkafka's queue is full),
//! then settle each delivery report. Retriable failures (a broker restart longer than
//! `message.timeout.ms`, a leader that moved) are produced again with backoff; a record the
//! producer or the broker refuses as too large is handed back so that the caller can put a
//! DLQ record in its place; a fatal producer error stops the processor.
//!
//! A broker checks a topic's `max.message.bytes` (and a compacted topic's keys) per record
//! *batch* and refuses the whole batch, and librdkafka does not split it: a small record that
//! shared a batch with a large one is refused too. So a record the broker refuses is produced
//! once more alone, by a second producer that batches one record at a time (created on the
//! first refusal); only a record refused alone is handed back.

use std::collections::HashMap;
use std::time::Duration;

use metrics::counter;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::sync::Arc;
use tokio::sync::OnceCell;

use super::OutputRecord;
use crate::kafka::context::{is_fatal, Logged};
use crate::metrics as m;

/// The producer of every output record of the processor.
pub type OutputProducer = FutureProducer<Logged>;

/// Where a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Why an output could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The producer (`message.max.bytes`) or the broker (the topic's `max.message.bytes`)
    /// refuses the record as too large, or the broker refuses it as invalid (a record
    /// without key on a compacted topic): it will never be accepted as it is.
    #[error("{topic} refused a record of {size} bytes: {error}")]
    Refused {
        record: Box<OutputRecord>,
        topic: String,
        size: usize,
        error: KafkaError,
    },
    /// The producer cannot go on.
    #[error("fatal producer error: {0}")]
    Fatal(KafkaError),
    /// A record of a transaction was not delivered: the transaction must be aborted.
    #[error(
        "{topic} did not take a record of the transaction ({error}); if the broker refuses \
         records as too large, raise the topic's max.message.bytes to at least the \
         topology's limits.max_record_bytes"
    )]
    InTransaction { topic: String, error: KafkaError },
}

/// What to do after a failed delivery.
enum Fault {
    Refused,
    Fatal,
    Retry,
}

fn classify(producer: &OutputProducer, error: &KafkaError) -> Fault {
    use RDKafkaErrorCode as C;
    if is_fatal(error) || producer.client().fatal_error().is_some() {
        return Fault::Fatal;
    }
    match error {
        KafkaError::Canceled => Fault::Fatal,
        _ => match error.rdkafka_error_code() {
            Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidRecord) => {
                Fault::Refused
            }
            // A transactional producer whose transaction failed: it must be aborted first.
            Some(C::State) => Fault::Fatal,
            _ => Fault::Retry,
        },
    }
}

/// Enqueues and settles output records.
#[derive(Clone)]
pub struct Sender {
    producer: OutputProducer,
    /// None for a transactional producer: a failed delivery makes its transaction abortable,
    /// so nothing is produced again, alone or otherwise.
    solo: Option<Arc<Solo>>,
    /// For a transactional producer: each topic's `max.message.bytes`. A record the broker
    /// would refuse is refused before it is produced, which leaves the transaction intact.
    topic_limits: Arc<HashMap<String, usize>>,
}

/// What a record adds to its bytes in a batch of its own: the batch header (61 bytes), the
/// record's framing, and the varint lengths of its headers.
const BATCH_OVERHEAD_BYTES: usize = 128;

/// The bytes of a batch holding only `record`, at most.
pub fn batch_bytes(record: &OutputRecord) -> usize {
    BATCH_OVERHEAD_BYTES
        + record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>()
}

/// The producer of records the broker refused in a batch, one record per batch.
struct Solo {
    config: ClientConfig,
    producer: OnceCell<OutputProducer>,
}

impl Sender {
    /// `config` is the config `producer` was made with; the single-record producer is made
    /// from it.
    pub fn new(producer: OutputProducer, config: &ClientConfig) -> Sender {
        let mut config = config.clone();
        config.set("batch.num.messages", "1").set("linger.ms", "0");
        Sender {
            producer,
            solo: Some(Arc::new(Solo {
                config,
                producer: OnceCell::new(),
            })),
            topic_limits: Arc::default(),
        }
    }

    /// A sender over a transactional producer: any delivery failure is final (the
    /// transaction cannot commit any more), except a refusal before the record was queued.
    /// `topic_limits`: the `max.message.bytes` of every topic it writes (the producer's
    /// `batch.size` must not exceed the smallest).
    pub fn transactional(
        producer: OutputProducer,
        topic_limits: Arc<HashMap<String, usize>>,
    ) -> Sender {
        Sender {
            producer,
            solo: None,
            topic_limits,
        }
    }

    /// The producer records are enqueued on.
    pub fn producer(&self) -> &OutputProducer {
        &self.producer
    }

    /// Enqueues `record`, waiting while the producer's queue is full. Records enqueued one
    /// after the other keep their order on each partition.
    pub async fn enqueue(&self, record: &OutputRecord) -> Result<DeliveryFuture, DeliveryError> {
        if let Some(limit) = self.topic_limits.get(&record.topic) {
            if batch_bytes(record) > *limit {
                return Err(refused(
                    record,
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge),
                ));
            }
        }
        enqueue_on(&self.producer, record).await
    }

    /// Waits for `delivery` of `record`; after a retriable failure produces it again (with
    /// backoff and jitter) until it is delivered, refused alone, or the producer fails for good.
    pub async fn settle(
        &self,
        record: OutputRecord,
        delivery: DeliveryFuture,
    ) -> Result<Delivered, DeliveryError> {
        let Some(solo) = &self.solo else {
            return match delivery.await {
                Ok(Ok(d)) => Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                }),
                Ok(Err((error, _))) => Err(DeliveryError::InTransaction {
                    topic: record.topic,
                    error,
                }),
                Err(_) => Err(DeliveryError::Fatal(KafkaError::Canceled)),
            };
        };
        match settle_on(&self.producer, &record, delivery).await {
            Err(DeliveryError::Refused { error, .. }) => {
                counter!(m::PRODUCED_ALONE, "output" => record.kind.as_str()).increment(1);
                tracing::info!(
                    topic = record.topic,
                    %error,
                    "the broker refused a batch holding an output; producing it alone"
                );
                let solo = solo_producer(solo).await?;
                let delivery = enqueue_on(solo, &record).await?;
                settle_on(solo, &record, delivery).await
            }
            settled => settled,
        }
    }
}

async fn solo_producer(solo: &Solo) -> Result<&OutputProducer, DeliveryError> {
    solo.producer
        .get_or_try_init(|| async {
            solo.config
                .create_with_context(Logged::new("producer"))
                .map_err(DeliveryError::Fatal)
        })
        .await
}

async fn enqueue_on(
    producer: &OutputProducer,
    record: &OutputRecord,
) -> Result<DeliveryFuture, DeliveryError> {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (k, v) in &record.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    let mut future: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.topic).headers(headers);
    if let Some(p) = record.partition {
        future = future.partition(p);
    }
    if let Some(k) = &record.key {
        future = future.key(k);
    }
    if let Some(v) = &record.value {
        future = future.payload(v);
    }
    let mut delays = crate::retry::backoff();
    loop {
        match producer.send_result(future) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                future = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((error, back)) => match classify(producer, &error) {
                Fault::Fatal => return Err(DeliveryError::Fatal(error)),
                Fault::Refused => return Err(refused(record, error)),
                Fault::Retry => {
                    // E.g. a topic or partition that does not exist (any more).
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    counter!(m::PRODUCE_RETRIES, "output" => record.kind.as_str()).increment(1);
                    tracing::warn!(topic = record.topic, %error, retry_in = ?delay, "cannot produce an output; retrying");
                    future = back;
                    tokio::time::sleep(delay).await;
                }
            },
        }
    }
}

/// Waits for `delivery` of `record` on `producer`, producing it again after retriable
/// failures.
async fn settle_on(
    producer: &OutputProducer,
    record: &OutputRecord,
    mut delivery: DeliveryFuture,
) -> Result<Delivered, DeliveryError> {
    let mut delays = crate::retry::backoff();
    loop {
        let error = match delivery.await {
            Ok(Ok(d)) => {
                return Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Ok(Err((error, _))) => error,
            Err(_) => return Err(DeliveryError::Fatal(KafkaError::Canceled)),
        };
        match classify(producer, &error) {
            Fault::Fatal => return Err(DeliveryError::Fatal(error)),
            Fault::Refused => return Err(refused(record, error)),
            Fault::Retry => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                counter!(m::PRODUCE_RETRIES, "output" => record.kind.as_str()).increment(1);
                tracing::warn!(
                    topic = record.topic,
                    %error,
                    retry_in = ?delay,
                    "an output was not delivered; producing it again"
                );
                tokio::time::sleep(delay).await;
                delivery = enqueue_on(producer, record).await?;
            }
        }
    }
}

fn refused(record: &OutputRecord, error: KafkaError) -> DeliveryError {
    let size = record.value.as_ref().map_or(0, Vec::len) + record.key.as_ref().map_or(0, Vec::len);
    DeliveryError::Refused {
        topic: record.topic.clone(),
        record: Box::new(record.clone()),
        size,
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::DefaultProducerContext;
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;

    use super::*;
    use crate::kafka::KafkaSettings;
    use crate::sink::OutputKind;

    /// Log lines written while a test runs, to wait on what the code under test says.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    fn sender_for(
        mock: &MockCluster<'_, DefaultProducerContext>,
        more: &[(&str, &str)],
    ) -> (Sender, OutputProducer) {
        let config = KafkaSettings::new(mock.bootstrap_servers()).producer_config_with(more);
        let producer: OutputProducer = config.create_with_context(Logged::new("producer")).unwrap();
        (Sender::new(producer.clone(), &config), producer)
    }

    /// A mock cluster with topic `out`, and a sender that has delivered one record to it (so
    /// that it knows the partition's leader).
    async fn warm_sender() -> (
        MockCluster<'static, DefaultProducerContext>,
        Sender,
        OutputProducer,
    ) {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("out", 1, 1).unwrap();
        let (sender, producer) = sender_for(&mock, &[]);
        sender
            .settle(record(), sender.enqueue(&record()).await.unwrap())
            .await
            .unwrap();
        (mock, sender, producer)
    }

    /// Sends `record()` and waits (30 s at most) for how it settles.
    async fn send_and_settle(sender: &Sender) -> Result<Delivered, DeliveryError> {
        let delivery = sender.enqueue(&record()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), sender.settle(record(), delivery))
            .await
            .expect("not settled in 30 s")
    }

    fn record() -> OutputRecord {
        OutputRecord {
            kind: OutputKind::Routed,
            topic: "out".into(),
            partition: None,
            key: Some(b"ct_1".to_vec()),
            value: Some(b"lead".to_vec()),
            headers: vec![("event_id", b"e1".to_vec())],
        }
    }

    /// librdkafka gives up on a record after `message.timeout.ms`; the sender produces it
    /// again (a broker down for longer than that), and it is delivered once the broker is back.
    #[tokio::test(flavor = "current_thread")]
    async fn a_record_that_timed_out_is_produced_again_until_delivered() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("out", 1, 1).unwrap();
        let (sender, _) = sender_for(&mock, &[("message.timeout.ms", "300")]);
        // Up once so the producer knows the partition's leader, then down.
        sender
            .settle(record(), sender.enqueue(&record()).await.unwrap())
            .await
            .unwrap();
        mock.broker_down(1).unwrap();
        let delivery = sender.enqueue(&record()).await.unwrap();
        let settling = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.settle(record(), delivery).await })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !logs.text().contains("producing it again") {
            assert!(Instant::now() < deadline, "never retried:\n{}", logs.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        mock.broker_up(1).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(30), settling)
            .await
            .expect("not delivered within 30 s after the broker came back")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }

    /// A fatal producer error (librdkafka's own fault injection stands in for a fenced or
    /// out-of-sequence idempotent producer) is never retried: the processor must stop.
    #[tokio::test]
    async fn a_fatal_producer_error_is_not_retried() {
        let (_mock, sender, producer) = warm_sender().await;
        let reason = std::ffi::CString::new("test: out of order sequence").unwrap();
        // SAFETY: the handle lives as long as `producer`, borrowed for the call; `reason` is
        // NUL-terminated and outlives it. librdkafka only records the error.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                producer.client().native_ptr(),
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
        let outcome = match sender.enqueue(&record()).await {
            Ok(delivery) => {
                tokio::time::timeout(Duration::from_secs(30), sender.settle(record(), delivery))
                    .await
                    .expect("a fatal error was retried")
            }
            Err(e) => Err(e),
        };
        assert!(
            matches!(outcome, Err(DeliveryError::Fatal(_))),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_record_over_message_max_bytes_is_refused_at_once() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("out", 1, 1).unwrap();
        let (sender, _) = sender_for(&mock, &[("message.max.bytes", "1000")]);
        let mut big = record();
        big.value = Some(vec![0; 5000]);
        match sender.enqueue(&big).await {
            Err(DeliveryError::Refused { size, .. }) => assert_eq!(size, 5004),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    /// The broker refuses a whole batch when it is larger than the topic's
    /// `max.message.bytes`; a record refused that way is produced again alone and delivered.
    #[tokio::test]
    async fn a_record_refused_in_a_batch_is_produced_alone() {
        let (mock, sender, _) = warm_sender().await;
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        let outcome = send_and_settle(&sender).await;
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    /// A record the broker refuses alone too is handed back as refused.
    #[tokio::test]
    async fn a_record_refused_alone_is_refused() {
        let (mock, sender, _) = warm_sender().await;
        let too_large = RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
        mock.request_errors(RDKafkaApiKey::Produce, &[too_large, too_large]);
        let outcome = send_and_settle(&sender).await;
        assert!(
            matches!(outcome, Err(DeliveryError::Refused { size: 8, .. })),
            "{outcome:?}"
        );
    }
}
