//! The official Confluent Python client (`confluent-kafka`) against our registry and wire
//! format, unchanged: it registers, serializes and deserializes a ContactEvent, and reads a
//! value leadflow encoded; leadflow reads the value Python encoded.

mod common;

use std::process::Command;
use std::time::Duration;

use leadflow::codec::{decode, unframe, Encoder, RegistryClient, SchemaKind};
use leadflow::model::{Contact, ContactEvent, Envelope, Event};

fn rust_contact() -> ContactEvent {
    Event {
        envelope: Envelope {
            event_id: "rs-evt-1".into(),
            event_type: "Contact.updated".into(),
            aggregate_id: "ct_rs".into(),
            source: "salesforce:prod".into(),
            occurred_at: 1_767_600_999_000,
            delivery_attempt: 1,
            schema_version: "1".into(),
            correlation_id: Some("corr-rs".into()),
        },
        payload: Contact {
            contact_id: "ct_rs".into(),
            email: Some("linus@initech.de".into()),
            phone: None,
            first_name: Some("Linus".into()),
            last_name: None,
            title: None,
            company_name: Some("Initech GmbH".into()),
            company_domain: Some("initech.de".into()),
            country: Some("DE".into()),
            region: Some("EMEA".into()),
            lifecycle_stage: Some("lead".into()),
            lead_source: None,
            product_interest: None,
            consent_marketing: true,
            attributes: [("k".to_string(), "v".to_string())].into(),
            updated_at: 1_767_600_999_000,
        },
    }
}

#[test]
fn confluent_python_client_works_unchanged() {
    let registry = common::RegistryProc::start(None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(&registry.url).unwrap();
    let id = rt
        .block_on(client.register("rs.contacts-value", SchemaKind::ContactEvent.source()))
        .unwrap();
    let rust_value = Encoder::new(SchemaKind::ContactEvent, id)
        .unwrap()
        .encode(&rust_contact())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let value_file = dir.path().join("rust_value.bin");
    std::fs::write(&value_file, &rust_value).unwrap();

    let mut python = Command::new(common::python_binary());
    python
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/confluent_compat.py"
        ))
        .arg(&registry.url)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/avro"))
        .arg(&value_file);
    let (ok, stdout, stderr) = common::run_with_deadline(python, Duration::from_secs(120));
    assert!(
        ok,
        "python failed:\n{stderr}\nregistry log:\n{}",
        registry.proc.log_text()
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();

    // Same schema text, same id: Python's registration found the one Rust made.
    assert_eq!(report["schema_id"].as_u64(), Some(u64::from(id)));
    assert_eq!(report["missing_code"], serde_json::json!(40403));

    // Python read what Rust wrote, field for field.
    let expected = serde_json::to_value(rust_contact()).unwrap();
    assert_eq!(report["rust_decoded"], expected);

    // Rust reads what Python wrote.
    let hex = report["python_value_hex"].as_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let (writer_id, datum) = unframe(&bytes).unwrap();
    let writer = rt.block_on(client.schema_by_id(writer_id)).unwrap();
    let from_python: ContactEvent = decode(&writer, SchemaKind::ContactEvent, datum).unwrap();
    assert_eq!(
        from_python.payload.email.as_deref(),
        Some("grace@globex.io")
    );
    assert_eq!(from_python.envelope.delivery_attempt, 2);
    assert_eq!(from_python.payload.attributes.len(), 2);
    assert_eq!(from_python.envelope.occurred_at, 1_767_600_000_123);
}
