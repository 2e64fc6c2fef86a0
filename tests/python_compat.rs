//! The official Confluent Python client (`confluent-kafka`) against our registry and wire
//! format, unchanged: it registers, serializes and deserializes a ContactEvent, and reads a
//! value leadflow encoded; leadflow reads the value Python encoded.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::stack::{metric, rules, Stack, StackOptions};

use leadflow::codec::{decode, unframe, Encoder, RegistryClient, SchemaKind};
use leadflow::model::ContactEvent;

fn rust_contact() -> ContactEvent {
    let mut event = common::events::contact("rs-evt-1", "ct_rs", 1_767_600_999_000);
    event.envelope.correlation_id = Some("corr-rs".into());
    event.payload.title = None;
    event
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

fn python(args: &[&str]) -> serde_json::Value {
    let mut command = Command::new(common::python_binary());
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/apicurio_zstd.py"
        ))
        .args(args);
    let (ok, stdout, stderr) = common::run_with_deadline(command, Duration::from_secs(180));
    assert!(ok, "python {args:?} failed:\n{stderr}");
    serde_json::from_str(stdout.trim()).unwrap()
}

/// The whole path through an independent registry: a connector written with the Confluent
/// Python client produces zstd-compressed events through Apicurio Registry, leadflow routes
/// them (reading and registering schemas through Apicurio's Confluent API), and a Python
/// reader deserializes every decision through Apicurio.
#[test]
fn python_zstd_through_apicurio_to_leadflow_and_back() {
    let mut stack = Stack::with(
        "apicurio",
        &rules("tests/fixtures/route_all.rhai"),
        StackOptions {
            partitions: 3,
            ..StackOptions::default()
        },
    );
    let apicurio = common::Apicurio::start();
    let n = 200;
    let produced = python(&[
        "produce",
        &stack.bootstrap,
        &apicurio.url,
        concat!(env!("CARGO_MANIFEST_DIR"), "/avro"),
        &stack.prefix,
        &n.to_string(),
    ]);
    // The broker stores what the client sent: zstd record batches.
    let codecs = batch_codecs(&stack.broker.data_dir(), &stack.topic("crm.contacts.v1"));
    assert!(
        codecs.contains(&4),
        "no zstd batch on the contacts topic (codecs {codecs:?})"
    );
    stack.registry_url = apicurio.url.clone();
    let (mut proc, metrics_url) = stack.start();
    common::wait_until("every record routed", Duration::from_secs(120), || {
        metric(&metrics_url, "leadflow_record_latency_seconds_count", "") >= (2 * n) as f64
    });
    let read = python(&[
        "consume",
        &stack.bootstrap,
        &apicurio.url,
        &stack.prefix,
        &(2 * n).to_string(),
    ]);
    let decided: HashSet<String> = read["decisions"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    for kind in ["contacts", "engagements"] {
        for id in produced[kind].as_array().unwrap() {
            assert!(
                decided.contains(id.as_str().unwrap()),
                "{kind} event {id} has no decision read through Apicurio"
            );
        }
    }
    assert_eq!(metric(&metrics_url, "leadflow_dlq_total", ""), 0.0);
    eprintln!(
        "apicurio: {} decisions read back by Python ({})",
        decided.len(),
        read["priorities"]
    );
    assert!(proc.is_running(), "{}", proc.log_text());
    proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
}

/// The compression codec of every record batch in the topic's log segments (Kafka's batch
/// header: attributes at byte 21, codec in their low 3 bits; 4 = zstd).
fn batch_codecs(data_dir: &std::path::Path, topic: &str) -> Vec<u16> {
    let mut codecs = Vec::new();
    for entry in std::fs::read_dir(data_dir).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{topic}-")) {
            continue;
        }
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let bytes = std::fs::read(&path).unwrap();
                let mut at = 0;
                while at + 23 <= bytes.len() {
                    let length = u32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
                    let attributes =
                        u16::from_be_bytes(bytes[at + 21..at + 23].try_into().unwrap());
                    codecs.push(attributes & 7);
                    at += 12 + length as usize;
                }
            }
        }
    }
    codecs
}
