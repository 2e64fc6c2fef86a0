//! The canonical schemas in `avro/`: they parse, match the contract's field lists, share one
//! Envelope, round-trip a sample of every record, and resolve evolved writer schemas.

use std::collections::BTreeMap;

use apache_avro::Schema;
use leadflow::codec::{decode, DatumDecoder, Encoder, SchemaKind};
use leadflow::model::*;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

fn json(kind: SchemaKind) -> Value {
    serde_json::from_str(kind.source()).unwrap()
}

fn field_names(record: &Value) -> Vec<String> {
    record["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_file_in_avro_is_a_known_schema_and_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/avro");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut known: Vec<String> = SchemaKind::ALL
        .iter()
        .map(|k| k.file_name().to_string())
        .collect();
    known.sort();
    assert_eq!(files, known);
    for kind in SchemaKind::ALL {
        let on_disk = std::fs::read_to_string(format!("{dir}/{}", kind.file_name())).unwrap();
        Schema::parse_str(&on_disk).unwrap_or_else(|e| panic!("{}: {e}", kind.file_name()));
        assert_eq!(json(kind)["namespace"], "leadflow.v1");
    }
}

#[test]
fn input_schemas_share_one_envelope_and_match_the_contract() {
    let envelope = json(SchemaKind::ContactEvent)["fields"][0]["type"].clone();
    assert_eq!(
        field_names(&envelope),
        [
            "event_id",
            "event_type",
            "aggregate_id",
            "source",
            "occurred_at",
            "delivery_attempt",
            "schema_version",
            "correlation_id"
        ]
    );
    let payloads = [
        (
            SchemaKind::ContactEvent,
            vec![
                "contact_id",
                "email",
                "phone",
                "first_name",
                "last_name",
                "title",
                "company_name",
                "company_domain",
                "country",
                "region",
                "lifecycle_stage",
                "lead_source",
                "product_interest",
                "consent_marketing",
                "attributes",
                "updated_at",
            ],
        ),
        (
            SchemaKind::EngagementEvent,
            vec![
                "engagement_id",
                "contact_id",
                "type",
                "channel",
                "campaign",
                "outcome",
                "occurred_at",
            ],
        ),
        (
            SchemaKind::AccountEvent,
            vec![
                "account_id",
                "domain",
                "name",
                "employees",
                "annual_revenue",
                "industry",
                "region",
                "tier",
                "owner_rep_id",
                "updated_at",
            ],
        ),
        (
            SchemaKind::RepEvent,
            vec![
                "rep_id",
                "name",
                "team",
                "regions",
                "max_open_leads",
                "active",
                "timezone",
                "working_hours",
                "updated_at",
            ],
        ),
        (
            SchemaKind::LeadAckEvent,
            vec![
                "decision_id",
                "contact_id",
                "rep_id",
                "action",
                "occurred_at",
            ],
        ),
    ];
    for (kind, expected) in payloads {
        let schema = json(kind);
        assert_eq!(field_names(&schema), ["envelope", "payload"], "{kind:?}");
        assert_eq!(
            schema["fields"][0]["type"], envelope,
            "{kind:?} has another Envelope"
        );
        assert_eq!(
            field_names(&schema["fields"][1]["type"]),
            expected,
            "{kind:?}"
        );
    }
    assert_eq!(
        field_names(&json(SchemaKind::RoutedLead)),
        [
            "decision_id",
            "event_id",
            "contact_id",
            "priority",
            "queue",
            "owner_rep_id",
            "reasons",
            "rule_version",
            "score",
            "sla_deadline",
            "occurred_at",
            "routed_at",
            "email",
            "first_name",
            "last_name",
            "company_name",
            "country",
            "region",
            "account_id",
            "account_name",
            "account_tier",
            "employees",
            "annual_revenue",
            "engagements_24h",
            "engagements_7d",
        ]
    );
    assert_eq!(
        field_names(&json(SchemaKind::LateEvent)),
        [
            "event_id",
            "event_type",
            "aggregate_id",
            "source_topic",
            "occurred_at",
            "watermark",
            "observed_at",
            "lateness_ms",
            "original",
        ]
    );
    assert_eq!(
        field_names(&json(SchemaKind::SlaBreach)),
        [
            "decision_id",
            "contact_id",
            "priority",
            "queue",
            "owner_rep_id",
            "level",
            "sla_deadline",
            "breached_at",
            "escalated_decision_id",
            "reasons",
            "routed_at",
            "rule_version",
        ]
    );
    let diff = json(SchemaKind::ShadowDiff);
    assert_eq!(
        field_names(&diff),
        [
            "event_id",
            "contact_id",
            "occurred_at",
            "decided_at",
            "transition",
            "live",
            "shadow",
        ]
    );
    assert_eq!(
        field_names(&diff["fields"][5]["type"]),
        [
            "rule_version",
            "outcome",
            "priority",
            "queue",
            "owner_rep_id",
            "reasons",
        ]
    );
}

#[test]
fn optional_fields_default_to_null_and_timestamps_are_millis() {
    for kind in SchemaKind::ALL {
        let mut stack = vec![json(kind)];
        while let Some(record) = stack.pop() {
            for field in record["fields"].as_array().unwrap() {
                let t = &field["type"];
                if t.is_object() && t["type"] == "record" {
                    stack.push(t.clone());
                }
                if t.as_array().is_some_and(|u| u[0] == "null") {
                    assert_eq!(
                        field.get("default"),
                        Some(&Value::Null),
                        "{kind:?}.{}",
                        field["name"]
                    );
                }
                let name = field["name"].as_str().unwrap();
                if name.ends_with("_at") || name == "watermark" || name == "sla_deadline" {
                    assert_eq!(t["logicalType"], "timestamp-millis", "{kind:?}.{name}");
                }
                assert!(
                    field["doc"].as_str().is_some_and(|d| !d.is_empty()),
                    "{kind:?}.{name} has no doc"
                );
            }
        }
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    kind: SchemaKind,
    value: T,
) {
    let encoder = Encoder::new(kind, 42).unwrap();
    let framed = encoder.encode(&value).unwrap();
    assert_eq!(&framed[..5], &[0, 0, 0, 0, 42]);
    let canonical = leadflow::codec::canonical().get(kind);
    let back: T = decode(canonical, kind, &framed[5..]).unwrap();
    assert_eq!(back, value);
    let truncated = decode::<T>(canonical, kind, &framed[5..framed.len() / 2]);
    assert!(truncated.is_err(), "half a datum is an error");
}

fn envelope(kind: &str) -> Envelope {
    Envelope {
        event_id: "0b6f1d8e-4c1a-4a57-9d3e-2f1c9a7b5e10".into(),
        event_type: kind.into(),
        aggregate_id: "x_1".into(),
        source: "salesforce:prod".into(),
        occurred_at: 1_767_600_000_000,
        delivery_attempt: 3,
        schema_version: "1".into(),
        correlation_id: None,
    }
}

#[test]
fn every_record_round_trips() {
    round_trip(
        SchemaKind::EngagementEvent,
        Event {
            envelope: envelope("Engagement.recorded"),
            payload: Engagement {
                engagement_id: "eng_1".into(),
                contact_id: "ct_1".into(),
                kind: "demo_request".into(),
                channel: Some("web".into()),
                campaign: None,
                outcome: Some("requested".into()),
                occurred_at: 1_767_600_000_000,
            },
        },
    );
    round_trip(
        SchemaKind::AccountEvent,
        Event {
            envelope: envelope("Account.upserted"),
            payload: Account {
                account_id: "acc_1".into(),
                domain: "acme.com".into(),
                name: "Acme Inc".into(),
                employees: Some(12_000),
                annual_revenue: Some(2.5e9),
                industry: None,
                region: Some("NA".into()),
                tier: Some("enterprise".into()),
                owner_rep_id: Some("rep_001".into()),
                updated_at: 1,
            },
        },
    );
    round_trip(
        SchemaKind::RepEvent,
        Event {
            envelope: envelope("Rep.upserted"),
            payload: Rep {
                rep_id: "rep_001".into(),
                name: "Sam Lee".into(),
                team: "enterprise-na".into(),
                regions: vec!["NA".into(), "LATAM".into()],
                max_open_leads: 30,
                active: true,
                timezone: "America/New_York".into(),
                working_hours: Some("09:00-17:00".into()),
                updated_at: 2,
            },
        },
    );
    round_trip(
        SchemaKind::ContactEvent,
        Event {
            envelope: envelope("Contact.created"),
            payload: Contact {
                contact_id: "ct_1".into(),
                email: None,
                phone: None,
                first_name: None,
                last_name: None,
                title: None,
                company_name: None,
                company_domain: None,
                country: None,
                region: None,
                lifecycle_stage: None,
                lead_source: None,
                product_interest: None,
                consent_marketing: false,
                attributes: BTreeMap::new(),
                updated_at: 0,
            },
        },
    );
    round_trip(
        SchemaKind::RoutedLead,
        RoutedLead {
            decision_id: "d-1".into(),
            event_id: "e-1".into(),
            contact_id: "ct_1".into(),
            priority: "P0".into(),
            queue: "enterprise-na".into(),
            owner_rep_id: Some("rep_001".into()),
            reasons: vec!["enterprise account".into(), "demo requested".into()],
            rule_version: "abc123".into(),
            score: 97,
            sla_deadline: 1_767_600_060_000,
            occurred_at: 1_767_600_000_000,
            routed_at: 1_767_600_000_500,
            email: Some("a@acme.com".into()),
            first_name: None,
            last_name: None,
            company_name: Some("Acme Inc".into()),
            country: Some("US".into()),
            region: Some("NA".into()),
            account_id: Some("acc_1".into()),
            account_name: Some("Acme Inc".into()),
            account_tier: Some("enterprise".into()),
            employees: Some(12_000),
            annual_revenue: None,
            engagements_24h: 4,
            engagements_7d: 9,
        },
    );
    round_trip(
        SchemaKind::LateEvent,
        LateEvent {
            event_id: "e-2".into(),
            event_type: "Engagement.recorded".into(),
            aggregate_id: "ct_2".into(),
            source_topic: "crm.engagements.v1".into(),
            occurred_at: 1,
            watermark: 400_001,
            observed_at: 500_000,
            lateness_ms: 400_000,
            original: vec![0, 0, 0, 0, 7, 1, 2, 3],
        },
    );
    round_trip(
        SchemaKind::ShadowDiff,
        ShadowDiff {
            event_id: "e-3".into(),
            contact_id: "ct_3".into(),
            occurred_at: 1,
            decided_at: 2,
            transition: "P1->P0".into(),
            live: ShadowSide {
                rule_version: "aaaa".into(),
                outcome: "routed".into(),
                priority: Some("P1".into()),
                queue: Some("mid-market".into()),
                owner_rep_id: None,
                reasons: vec!["mql".into()],
            },
            shadow: ShadowSide {
                rule_version: "bbbb".into(),
                outcome: "routed".into(),
                priority: Some("P0".into()),
                queue: Some("enterprise-emea".into()),
                owner_rep_id: Some("rep_1".into()),
                reasons: vec![],
            },
        },
    );
    round_trip(
        SchemaKind::LeadAudit,
        LeadAudit {
            event_id: "e-4".into(),
            contact_id: "ct_4".into(),
            event_type: "Engagement.recorded".into(),
            occurred_at: 1,
            evaluated_at: 2,
            rule_version: "aaaa".into(),
            outcome: "routed".into(),
            decision_id: Some("d-1".into()),
            priority: Some("P0".into()),
            queue: Some("enterprise-emea".into()),
            owner_rep_id: None,
            score: Some(91),
            reasons: vec!["demo requested".into()],
            error: None,
            lead: Some(r#"{"score":91}"#.into()),
            trace: vec![TraceStep {
                line: 12,
                column: 5,
                function: "route".into(),
                kind: "if".into(),
                detail: "lead.score >= 80".into(),
                taken: Some(true),
            }],
            trace_truncated: 0,
        },
    );
}

/// A producer on a newer schema (extra field with a default, one optional field dropped)
/// is still readable: the writer schema is resolved against ours.
#[test]
fn evolved_writer_schemas_resolve_to_the_reader_schema() {
    let mut evolved = json(SchemaKind::EngagementEvent);
    let payload = &mut evolved["fields"][1]["type"]["fields"];
    let fields = payload.as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "campaign");
    fields.push(serde_json::json!({"name": "device", "type": "string", "default": "unknown"}));
    let writer = Schema::parse(&evolved).unwrap();

    #[derive(Serialize)]
    struct NewPayload {
        engagement_id: String,
        contact_id: String,
        #[serde(rename = "type")]
        kind: String,
        channel: Option<String>,
        outcome: Option<String>,
        occurred_at: i64,
        device: String,
    }
    #[derive(Serialize)]
    struct NewEvent {
        envelope: Envelope,
        payload: NewPayload,
    }
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&writer)
        .build()
        .unwrap()
        .write_ser_to_vec(&NewEvent {
            envelope: envelope("Engagement.recorded"),
            payload: NewPayload {
                engagement_id: "eng_9".into(),
                contact_id: "ct_9".into(),
                kind: "web_visit".into(),
                channel: Some("web".into()),
                outcome: None,
                occurred_at: 5,
                device: "mobile".into(),
            },
        })
        .unwrap();
    let read: EngagementEvent = decode(&writer, SchemaKind::EngagementEvent, &datum).unwrap();
    // The pipeline's decoder sees a writer that differs from ours and resolves it too.
    let mut decoder = DatumDecoder::new();
    let again: EngagementEvent = decoder
        .decode_event(7, &writer, SchemaKind::EngagementEvent, &datum)
        .unwrap();
    assert_eq!(again, read);
    assert!(decoder
        .decode_event::<EngagementEvent>(7, &writer, SchemaKind::EngagementEvent, &[0xff; 7])
        .is_err());
    assert_eq!(read.payload.engagement_id, "eng_9");
    assert_eq!(read.payload.campaign, None);
    assert_eq!(read.payload.channel.as_deref(), Some("web"));

    // Garbage is an error, not a panic or a made-up value.
    let garbage = decode::<EngagementEvent>(&writer, SchemaKind::EngagementEvent, &[0xff; 7]);
    assert!(garbage.is_err());
}
