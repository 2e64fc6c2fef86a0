//! Known defects of the test broker (tansu 0.6.0) that tests must work around. Each test here
//! asserts the defect still exists: when tansu fixes it, the test fails and tells us which
//! workaround can go.

mod common;

use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// A fetch from an offset inside a record batch returns the NEXT batch, so the rest of the
/// batch is skipped. Kafka returns the whole batch and the client skips to the offset.
/// Consequence for our tests: the kill -9 test writes one record per batch (a consumer that
/// resumes from a committed offset inside a batch would otherwise lose records on tansu).
#[test]
fn tansu_skips_the_rest_of_a_batch_on_a_mid_batch_fetch() {
    let broker = Broker::start();
    let admin: AdminClient<_> = broker.client().create().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(admin.create_topics(
        &[NewTopic::new("quirk", 1, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap();
    let producer: ThreadedProducer<_> = broker.client().set("linger.ms", "200").create().unwrap();
    // Two batches of ten: offsets 0..=9 and 10..=19.
    for _ in 0..2 {
        for i in 0..10 {
            producer
                .send(
                    BaseRecord::<str, str>::to("quirk")
                        .key("k")
                        .payload(&i.to_string()),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    let consumer: BaseConsumer = broker
        .client()
        .set("group.id", "quirk")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("quirk", 0, Offset::Offset(5))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        assert!(Instant::now() < deadline, "no record at all after offset 5");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            break m.unwrap().offset();
        }
    };
    assert_eq!(
        first, 10,
        "tansu now returns offset {first} for a fetch from offset 5: the mid-batch fetch bug \
         looks fixed; drop the one-record-per-batch workaround in tests/processor_e2e.rs"
    );
}
