//! Building a `LateEvent` (contracts §3) and its headers (§6) for an input event that arrived
//! behind its task's watermark (docs/event-time.md).

use super::OutputRecord;
use crate::codec::{AvroCodecError, Encoder};
use crate::model::{Envelope, LateEvent};
use crate::source::record::InputRecord;

/// Everything a late-event record is made of.
pub struct LateInput<'a> {
    /// The input record as read; its value is kept unchanged in `original`.
    pub source: &'a InputRecord<'a>,
    pub envelope: &'a Envelope,
    /// The watermark the event was judged against (`Observation::watermark`).
    pub watermark: i64,
    /// Wall-clock time the event was read, ms since the epoch.
    pub observed_at: i64,
}

pub fn late_event(input: &LateInput) -> LateEvent {
    let LateInput {
        source,
        envelope,
        watermark,
        observed_at,
    } = input;
    LateEvent {
        event_id: envelope.event_id.clone(),
        event_type: envelope.event_type.clone(),
        aggregate_id: envelope.aggregate_id.clone(),
        source_topic: source.topic.to_string(),
        occurred_at: envelope.occurred_at,
        watermark: *watermark,
        observed_at: *observed_at,
        lateness_ms: watermark.saturating_sub(envelope.occurred_at),
        original: source.value.unwrap_or_default().to_vec(),
    }
}

/// The output record for `event` on `topic`, keyed by the contact id (the event's
/// aggregate_id), with the contract's headers (`event_id`, `rule_version`, `correlation_id`
/// when the input had one) and where the input came from (`source.topic`,
/// `source.partition`, `source.offset`, named as on DLQ records), so it can be found again.
pub fn late_record(
    topic: &str,
    encoder: &Encoder,
    event: &LateEvent,
    source: &InputRecord,
    rule_version: &str,
    correlation_id: Option<&str>,
) -> Result<OutputRecord, AvroCodecError> {
    let mut headers = vec![
        ("event_id", event.event_id.clone().into_bytes()),
        ("rule_version", rule_version.as_bytes().to_vec()),
    ];
    if let Some(c) = correlation_id {
        headers.push(("correlation_id", c.as_bytes().to_vec()));
    }
    headers.extend([
        ("source.topic", source.topic.as_bytes().to_vec()),
        (
            "source.partition",
            source.partition.to_string().into_bytes(),
        ),
        ("source.offset", source.offset.to_string().into_bytes()),
    ]);
    Ok(OutputRecord {
        kind: super::OutputKind::Late,
        topic: topic.to_string(),
        partition: None,
        key: Some(event.aggregate_id.clone().into_bytes()),
        value: Some(encoder.encode(event)?),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::codec::{canonical, decode, unframe, SchemaKind};

    const T: i64 = 1_767_600_000_000;

    fn envelope(correlation_id: Option<&str>) -> Envelope {
        Envelope {
            event_id: "evt-9".into(),
            event_type: "Engagement.recorded".into(),
            aggregate_id: "ct_42".into(),
            source: "hubspot:acme".into(),
            occurred_at: T - 600_000,
            delivery_attempt: 1,
            schema_version: "1".into(),
            correlation_id: correlation_id.map(Into::into),
        }
    }

    #[test]
    fn encodes_every_field_and_decodes_back() {
        let original = [0u8, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef];
        let source = InputRecord {
            topic: "crm.engagements.v1",
            partition: 5,
            offset: 77,
            timestamp: Some(T),
            key: Some(b"ct_42"),
            value: Some(&original),
        };
        let env = envelope(Some("corr-1"));
        let event = late_event(&LateInput {
            source: &source,
            envelope: &env,
            watermark: T - 300_000,
            observed_at: T + 1_234,
        });
        assert_eq!(
            event,
            LateEvent {
                event_id: "evt-9".into(),
                event_type: "Engagement.recorded".into(),
                aggregate_id: "ct_42".into(),
                source_topic: "crm.engagements.v1".into(),
                occurred_at: T - 600_000,
                watermark: T - 300_000,
                observed_at: T + 1_234,
                lateness_ms: 300_000,
                original: original.to_vec(),
            }
        );

        let encoder = Encoder::new(SchemaKind::LateEvent, 31).unwrap();
        let r = late_record(
            "leads.late",
            &encoder,
            &event,
            &source,
            "r1",
            Some("corr-1"),
        )
        .unwrap();
        assert_eq!(r.topic, "leads.late");
        assert_eq!(r.key.as_deref(), Some(&b"ct_42"[..]));
        let (id, datum) = unframe(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(id, 31);
        let writer = canonical().get(SchemaKind::LateEvent);
        let back: LateEvent = decode(writer, SchemaKind::LateEvent, datum).unwrap();
        assert_eq!(back, event);

        let h: HashMap<_, _> = r.headers.into_iter().collect();
        assert_eq!(h["event_id"], b"evt-9");
        assert_eq!(h["rule_version"], b"r1");
        assert_eq!(h["correlation_id"], b"corr-1");
        assert_eq!(h["source.topic"], b"crm.engagements.v1");
        assert_eq!(h["source.partition"], b"5");
        assert_eq!(h["source.offset"], b"77");
        assert_eq!(h.len(), 6);
    }

    #[test]
    fn no_correlation_header_without_a_correlation_id() {
        let source = InputRecord {
            topic: "crm.contacts.v1",
            partition: 0,
            offset: 1,
            timestamp: None,
            key: Some(b"ct_42"),
            value: Some(b"\0\0\0\0\x01"),
        };
        let env = envelope(None);
        let event = late_event(&LateInput {
            source: &source,
            envelope: &env,
            watermark: T,
            observed_at: T,
        });
        let encoder = Encoder::new(SchemaKind::LateEvent, 1).unwrap();
        let r = late_record("leads.late", &encoder, &event, &source, "r1", None).unwrap();
        assert!(r.headers.iter().all(|(k, _)| *k != "correlation_id"));
        assert_eq!(event.original, b"\0\0\0\0\x01");
    }
}
