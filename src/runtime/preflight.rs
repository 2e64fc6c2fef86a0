//! Checks made before processing starts, each failing with what to change: the producer can
//! carry the largest outputs the topology allows, every topic exists, and the two inputs are
//! co-partitioned.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::kafka::context::Logged;
use crate::kafka::KafkaSettings;
use crate::topology::Topology;

/// Room for what an output adds around a copied input value: DLQ headers (the error message
/// is at most 300 bytes, a topic name 249), or a `LateEvent`'s fields, and the record batch.
pub const OUTPUT_OVERHEAD_BYTES: usize = 16 << 10;

/// One metadata request's timeout at start-up.
const ATTEMPT: Duration = Duration::from_secs(2);

/// librdkafka's default `message.max.bytes`.
const LIBRDKAFKA_DEFAULT_MESSAGE_MAX: usize = 1_000_000;

/// The `message.max.bytes` leadflow's producer needs: a DLQ or late copy of the largest input
/// the topology accepts must fit, or that record would fail to produce after every restart.
/// The user's value is kept if it is large enough, refused with what to change if not.
pub fn producer_message_max_bytes(
    topology: &Topology,
    kafka: &KafkaSettings,
) -> Result<usize, String> {
    let max_record = topology.limits.max_record_bytes;
    let needed = max_record + OUTPUT_OVERHEAD_BYTES;
    let Some(value) = kafka.get("message.max.bytes") else {
        return Ok(needed.max(LIBRDKAFKA_DEFAULT_MESSAGE_MAX));
    };
    let set: usize = value
        .trim()
        .parse()
        .map_err(|_| format!("message.max.bytes={value:?} is not a number of bytes"))?;
    if set < needed {
        return Err(format!(
            "message.max.bytes={set} is too small for limits.max_record_bytes ({max_record} \
             bytes): a DLQ or late copy of the largest accepted input needs {needed} bytes (the \
             record plus {OUTPUT_OVERHEAD_BYTES} for headers). Raise message.max.bytes to at \
             least {needed}, or lower limits.max_record_bytes to at most {} in the topology",
            set.saturating_sub(OUTPUT_OVERHEAD_BYTES)
        ));
    }
    Ok(set)
}

/// Checks that every topic of the topology exists and that the two inputs have the same
/// number of partitions (a task is one partition number of both); returns that number.
pub fn check_topics(
    kafka: &KafkaSettings,
    topology: &Topology,
    timeout: Duration,
) -> anyhow::Result<i32> {
    let context = Logged::new("admin");
    let consumer: BaseConsumer<Logged> = kafka
        .consumer_config(&[(
            "group.id",
            &format!("{}-preflight", topology.application_id),
        )])
        .create_with_context(context.clone())
        .map_err(|e| anyhow::anyhow!("cannot create a Kafka client: {e}"))?;
    let deadline = std::time::Instant::now() + timeout;
    let count = |topic: &str| -> anyhow::Result<i32> {
        // Short attempts, so that a refusal that waiting cannot fix (credentials, TLS) ends
        // the wait at once, with its cause.
        let metadata = loop {
            match consumer.fetch_metadata(Some(topic), ATTEMPT) {
                Ok(metadata) => break metadata,
                Err(e) => {
                    // Serves the client's error events, so the context has seen them.
                    let _ = consumer.poll(Duration::ZERO);
                    let permanent = context.last_error_if_permanent();
                    if permanent.is_some() || std::time::Instant::now() >= deadline {
                        let cause = permanent
                            .or_else(|| context.last_error())
                            .map(|c| format!(" (last client error: {c})"))
                            .unwrap_or_default();
                        anyhow::bail!(
                            "cannot read the metadata of {topic} from Kafka at {}: {e}{cause}",
                            kafka.bootstrap_servers
                        );
                    }
                }
            }
        };
        let partitions = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .next()
            .unwrap_or(0);
        Ok(partitions)
    };
    let mut missing = Vec::new();
    let mut inputs = Vec::new();
    for topic in [&topology.contacts, &topology.engagements]
        .into_iter()
        .chain(topology.acks.as_ref())
    {
        let n = count(topic)?;
        if n == 0 {
            missing.push(topic.as_str());
        }
        inputs.push((topic.as_str(), n));
    }
    for topic in [&topology.accounts, &topology.reps]
        .into_iter()
        .chain(topology.output_topics())
    {
        if count(topic)? == 0 {
            missing.push(topic.as_str());
        }
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "these topics of the topology do not exist: {}; create them (leadflow topics \
             create, or your platform's tooling) before starting the processor",
            missing.join(", ")
        );
    }
    let (contacts, engagements) = (inputs[0], inputs[1]);
    if contacts.1 != engagements.1 {
        anyhow::bail!(
            "the input topics must have the same number of partitions: {} has {}, {} has {}. \
             A contact's events of both topics are processed together by partition number; \
             give both the same count (new partitions move existing keys: do it before going \
             live, or reprocess)",
            contacts.0,
            contacts.1,
            engagements.0,
            engagements.1
        );
    }
    if let Some(acks) = inputs.get(2).filter(|acks| acks.1 != contacts.1) {
        anyhow::bail!(
            "the acknowledgements topic must have as many partitions as the inputs: {} has {}, \
             {} has {}. An acknowledgement is applied by the task that made its decision (same \
             partition number, keyed by contact_id); give it the same count, or remove \
             inputs.acks from the topology to track no SLA",
            acks.0,
            acks.1,
            contacts.0,
            contacts.1
        );
    }
    Ok(contacts.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        crate::topology::parse("t.yaml", include_str!("../../topologies/lead-routing.yaml"))
            .unwrap()
    }

    #[test]
    fn the_producer_fits_the_largest_copy_of_an_input() {
        let t = topology();
        let none = KafkaSettings::new("b:9092");
        assert_eq!(
            producer_message_max_bytes(&t, &none),
            Ok((1 << 20) + OUTPUT_OVERHEAD_BYTES)
        );
        let mut small = KafkaSettings::new("b:9092");
        small.overrides = vec![("message.max.bytes".into(), "500000".into())];
        let err = producer_message_max_bytes(&t, &small).unwrap_err();
        assert!(err.contains("limits.max_record_bytes"), "{err}");
        assert!(err.contains("at most 483616"), "{err}");
        let mut big = KafkaSettings::new("b:9092");
        big.overrides = vec![("message.max.bytes".into(), "4000000".into())];
        assert_eq!(producer_message_max_bytes(&t, &big), Ok(4_000_000));
    }
}
