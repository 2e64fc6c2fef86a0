//! `leadflow run` against a real broker and registry, checked by an independent verifier that
//! reads the output topics back and reconciles them with what the generator produced.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{header, run_with_deadline, Broker, Proc, RegistryProc};
use leadflow::codec::{decode, frame, unframe, RegistryClient, SchemaKind};
use leadflow::gen::{Disorder, DISORDER_HEADER};
use leadflow::model::{ContactEvent, EngagementEvent, RoutedLead};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

const TOPICS: [&str; 9] = [
    "crm.contacts.v1",
    "crm.engagements.v1",
    "crm.accounts.v1",
    "crm.reps.v1",
    "leads.routed.p0",
    "leads.routed.p1",
    "leads.routed.p2",
    "leads.late",
    "leads.dlq",
];

/// A broker, a registry, prefixed topics and a topology file naming them.
struct Stack {
    broker: Broker,
    registry: RegistryProc,
    prefix: String,
    dir: tempfile::TempDir,
    topology: PathBuf,
}

impl Stack {
    fn new(test: &str, rules: &str) -> Stack {
        let broker = Broker::start();
        let registry = RegistryProc::start(None);
        let prefix = common::unique_prefix(test);
        let (ok, _, err) = leadflow(&[
            "topics",
            "create",
            "--bootstrap-servers",
            &broker.bootstrap,
            "--topic-prefix",
            &prefix,
        ]);
        assert!(ok, "{err}");
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = include_str!("../topologies/lead-routing.yaml").to_string();
        for t in TOPICS {
            yaml = yaml.replace(&format!(": {t}\n"), &format!(": {prefix}{t}\n"));
        }
        yaml = yaml
            .replace(
                "application_id: leadflow-lead-routing",
                &format!("application_id: {}app", prefix.replace('.', "-")),
            )
            .replace("rules: rules/routing.rhai", &format!("rules: {rules}"))
            .replace("max_record_bytes: 1MiB", "max_record_bytes: 64KiB");
        let topology = dir.path().join("topology.yaml");
        std::fs::write(&topology, yaml).unwrap();
        Stack {
            broker,
            registry,
            prefix,
            dir,
            topology,
        }
    }

    fn topic(&self, t: &str) -> String {
        format!("{}{t}", self.prefix)
    }

    fn gen(&self, count: &str, duplicates: &str) {
        let (ok, out, err) = leadflow(&[
            "gen",
            "--bootstrap-servers",
            &self.broker.bootstrap,
            "--schema-registry-url",
            &self.registry.url,
            "--topic-prefix",
            &self.prefix,
            "--seed",
            "11",
            "--count",
            count,
            "--accounts",
            "300",
            "--reps",
            "24",
            "--duplicates",
            duplicates,
            "--quiet",
        ]);
        assert!(ok, "gen failed: {err}\n{out}");
    }

    fn start(&self) -> (Proc, String) {
        let mut command = Command::new(common::leadflow_binary());
        command
            .args(["run", "--topology"])
            .arg(&self.topology)
            .args([
                "--bootstrap-servers",
                &self.broker.bootstrap,
                "--schema-registry-url",
                &self.registry.url,
            ])
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            // A killed member must leave the group quickly, or the restarted one waits for the
            // coordinator's rebalance timeout (librdkafka's 45 s session, 5 min poll interval).
            .args([
                "--kafka",
                "session.timeout.ms=6000",
                "--kafka",
                "heartbeat.interval.ms=1000",
            ])
            .args(["--kafka", "max.poll.interval.ms=20000"])
            .env("RUST_LOG", "info,rdkafka=warn");
        let proc = common::spawn(command, "leadflow-run");
        let mut metrics = None;
        common::wait_until(
            "the processor to serve metrics",
            Duration::from_secs(60),
            || {
                metrics = proc.log_text().lines().find_map(|l| {
                    l.contains("serving /metrics")
                        .then(|| {
                            l.split("addr=")
                                .nth(1)
                                .map(|a| a.split_whitespace().next().unwrap().to_string())
                        })
                        .flatten()
                });
                metrics.is_some()
            },
        );
        (proc, format!("http://{}/metrics", metrics.unwrap()))
    }

    fn outputs(&self) -> Outputs {
        let mut decisions = Vec::new();
        for (topic, priority) in [
            ("leads.routed.p0", "P0"),
            ("leads.routed.p1", "P1"),
            ("leads.routed.p2", "P2"),
        ] {
            for m in self.broker.read_all(&self.topic(topic)) {
                let lead = routed_lead(&m);
                assert_eq!(
                    lead.priority, priority,
                    "a {} lead on {topic}",
                    lead.priority
                );
                assert_eq!(
                    header(&m, "decision_id").as_deref(),
                    Some(lead.decision_id.as_str())
                );
                assert_eq!(
                    header(&m, "event_id").as_deref(),
                    Some(lead.event_id.as_str())
                );
                decisions.push(lead);
            }
        }
        let dlq = self.broker.read_all(&self.topic("leads.dlq"));
        Outputs { decisions, dlq }
    }
}

struct Outputs {
    decisions: Vec<RoutedLead>,
    dlq: Vec<OwnedMessage>,
}

fn leadflow(args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(common::leadflow_binary());
    command.args(args);
    run_with_deadline(command, Duration::from_secs(120))
}

fn routed_lead(m: &OwnedMessage) -> RoutedLead {
    let value = m.payload().unwrap();
    let (_, datum) = unframe(value).unwrap();
    decode(
        leadflow::codec::canonical().get(SchemaKind::RoutedLead),
        SchemaKind::RoutedLead,
        datum,
    )
    .unwrap()
}

/// What the generator produced: unique event ids by kind, and how many records were re-sends.
struct Produced {
    contacts: HashSet<String>,
    engagements: HashSet<String>,
    duplicates: usize,
}

fn produced(stack: &Stack) -> Produced {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(&stack.registry.url).unwrap();
    let mut p = Produced {
        contacts: HashSet::new(),
        engagements: HashSet::new(),
        duplicates: 0,
    };
    for (topic, contacts) in [("crm.contacts.v1", true), ("crm.engagements.v1", false)] {
        for m in stack.broker.read_all(&stack.topic(topic)) {
            // Only the generator's records carry its headers; poison pills do not.
            let Some(disorder) = header(&m, DISORDER_HEADER).and_then(|d| Disorder::parse(&d))
            else {
                continue;
            };
            if disorder == Disorder::Duplicate {
                p.duplicates += 1;
                continue;
            }
            let (id, datum) = unframe(m.payload().unwrap()).unwrap();
            let writer = rt.block_on(client.schema_by_id(id)).unwrap();
            if contacts {
                let e: ContactEvent = decode(&writer, SchemaKind::ContactEvent, datum).unwrap();
                p.contacts.insert(e.envelope.event_id);
            } else {
                let e: EngagementEvent =
                    decode(&writer, SchemaKind::EngagementEvent, datum).unwrap();
                p.engagements.insert(e.envelope.event_id);
            }
        }
    }
    p
}

/// The value of a Prometheus counter (summed over label sets matching `filter`).
fn metric(url: &str, name: &str, filter: &str) -> f64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() });
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Event id of a DLQ record whose original value is a decodable canonical event.
fn dlq_event_id(stack: &Stack, m: &OwnedMessage) -> Option<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(&stack.registry.url).unwrap();
    let (id, datum) = unframe(m.payload()?).ok()?;
    let writer = rt.block_on(client.schema_by_id(id)).ok()?;
    decode::<ContactEvent>(&writer, SchemaKind::ContactEvent, datum)
        .map(|e| e.envelope.event_id)
        .or_else(|_| {
            decode::<EngagementEvent>(&writer, SchemaKind::EngagementEvent, datum)
                .map(|e| e.envelope.event_id)
        })
        .ok()
}

fn produce_poison(stack: &Stack) -> usize {
    let producer: ThreadedProducer<DefaultProducerContext> =
        stack.broker.client().create().unwrap();
    let topic = stack.topic("crm.contacts.v1");
    let big = vec![0u8; 100_000];
    let garbage = frame(1, &[0xff; 32]);
    let unknown = frame(999_999, b"whatever");
    let records: [(Option<&[u8]>, &[u8]); 5] = [
        (Some(b"ct_poison_1"), b"{\"not\":\"avro\"}"),
        (Some(b"ct_poison_2"), &unknown),
        (Some(b"ct_poison_3"), &garbage),
        (Some(b"ct_poison_4"), &big),
        (None, b"\x00\x00\x00\x00\x01"),
    ];
    for (key, value) in records {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic).payload(value);
        if let Some(k) = key {
            r = r.key(k);
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    records.len()
}

fn rules(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .display()
        .to_string()
}

#[test]
fn every_routable_event_gets_exactly_one_decision() {
    let stack = Stack::new("run", &rules("tests/fixtures/always_route.rhai"));
    stack.gen("1500", "0.05");
    let poison = produce_poison(&stack);
    let want = produced(&stack);
    let (mut proc, metrics_url) = stack.start();

    // Done when every unique event is accounted for: a decision, a DLQ record, or an
    // engagement of a contact not known yet (counted by the processor).
    let total = want.contacts.len() + want.engagements.len();
    common::wait_until(
        "every event to be accounted for",
        Duration::from_secs(120),
        || {
            let accounted = metric(&metrics_url, "leadflow_routed_total", "")
                + metric(&metrics_url, "leadflow_dlq_total", "")
                + metric(&metrics_url, "leadflow_no_decision_total", "")
                - poison as f64;
            accounted >= total as f64
        },
    );
    let out = stack.outputs();
    let mut by_event: HashMap<&str, usize> = HashMap::new();
    for d in &out.decisions {
        *by_event.entry(d.event_id.as_str()).or_default() += 1;
        assert_eq!(
            d.decision_id,
            leadflow::sink::routed::decision_id(&d.event_id, &d.rule_version)
        );
    }
    assert!(
        by_event.values().all(|n| *n == 1),
        "an event was decided twice"
    );
    let timeouts: HashSet<String> = out
        .dlq
        .iter()
        .filter(|m| header(m, "error.class").as_deref() == Some("script_timeout"))
        .map(|m| dlq_event_id(&stack, m).expect("script DLQ records keep the original event"))
        .collect();
    // Every contact event: decided or timed out by the script, never lost.
    for id in &want.contacts {
        assert!(
            by_event.contains_key(id.as_str()) != timeouts.contains(id),
            "contact event {id} lost or doubled"
        );
    }
    // Engagements: decided, timed out, or of a contact unknown when processed (counted).
    let undecided = want
        .engagements
        .iter()
        .filter(|id| !by_event.contains_key(id.as_str()) && !timeouts.contains(*id))
        .count();
    assert_eq!(
        undecided as f64,
        metric(
            &metrics_url,
            "leadflow_no_decision_total",
            "unknown_contact"
        )
    );
    assert_eq!(
        by_event.len() + timeouts.len() + undecided,
        total,
        "outputs for events never produced"
    );
    assert!(!timeouts.is_empty(), "the test script's loop never ran");
    assert_eq!(
        metric(&metrics_url, "leadflow_duplicates_total", "") as usize,
        want.duplicates
    );

    // Poison pills: each in the DLQ with its class, original bytes kept.
    let classes: Vec<String> = out
        .dlq
        .iter()
        .map(|m| header(m, "error.class").unwrap())
        .filter(|c| c != "script_timeout")
        .collect();
    let mut sorted = classes.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "avro_decode",
            "bad_magic",
            "missing_key",
            "oversize",
            "unknown_schema_id"
        ]
    );
    assert!(
        proc.is_running(),
        "the processor stopped:\n{}",
        proc.log_text()
    );

    // A data engineer's consumer: Confluent's Python deserializer reads a routed lead.
    let m = stack
        .broker
        .read_all(&stack.topic("leads.routed.p2"))
        .remove(0);
    let file = stack.dir.path().join("routed.bin");
    std::fs::write(&file, m.payload().unwrap()).unwrap();
    let mut python = Command::new(common::python_binary());
    python
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/read_routed.py"
        ))
        .arg(&stack.registry.url)
        .arg(stack.topic("leads.routed.p2"))
        .arg(&file);
    let (ok, stdout, stderr) = run_with_deadline(python, Duration::from_secs(60));
    assert!(ok, "{stderr}");
    let from_python: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let ours = routed_lead(&m);
    assert_eq!(from_python["decision_id"], ours.decision_id);
    assert_eq!(from_python["priority"], "P2");
    assert_eq!(from_python["sla_deadline"], ours.sla_deadline);

    // SIGTERM: clean exit, offsets committed.
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}:\n{}", proc.log_text());
    assert!(proc.log_text().contains("offsets committed"));
}

/// Run with `cargo test --test processor_e2e -- --ignored`. Ignored because it is not yet
/// reliable: in 1 of 4 runs one contact event (of ~2,800) had no decision after the restart,
/// which may be a real loss (ours, or tansu's offset commits) and is under investigation; see
/// the issue notes. It must pass reliably before the core pipeline issue can be closed.
#[test]
#[ignore = "one event missing in 1 of 4 runs; possible data loss under investigation"]
fn kill_9_mid_stream_loses_nothing() {
    let stack = Stack::new("kill", &rules("tests/fixtures/always_route.rhai"));
    stack.gen("6000", "0.0");
    let want = produced(&stack);
    let (mut proc, metrics_url) = stack.start();
    common::wait_until("some decisions", Duration::from_secs(120), || {
        metric(&metrics_url, "leadflow_routed_total", "") >= 800.0
    });
    proc.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
    let (mut restarted, _) = stack.start();
    // Poll until every contact event has its decision (or its script-timeout DLQ record), or
    // the deadline passes; then report what is missing.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let (out, missing) = loop {
        let out = stack.outputs();
        let decided: HashSet<String> = out.decisions.iter().map(|d| d.event_id.clone()).collect();
        let timeouts: HashSet<String> = out
            .dlq
            .iter()
            .filter_map(|m| dlq_event_id(&stack, m))
            .collect();
        let missing: Vec<String> = want
            .contacts
            .iter()
            .filter(|id| !decided.contains(*id) && !timeouts.contains(*id))
            .cloned()
            .collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break (out, missing);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "{} contact events lost after kill -9, e.g. {:?}\nfirst run log:\n{}\nrestarted log:\n{}",
        missing.len(),
        missing.first(),
        proc.log_text(),
        restarted.log_text()
    );
    let mut ids: HashMap<&str, HashSet<&str>> = HashMap::new();
    for d in &out.decisions {
        ids.entry(d.event_id.as_str())
            .or_default()
            .insert(d.decision_id.as_str());
    }
    assert!(
        ids.values().all(|set| set.len() == 1),
        "a replayed event got a new decision_id"
    );
    let replayed = out.decisions.len() - ids.len();
    eprintln!(
        "kill -9: {} decisions for {} events ({replayed} re-emitted after the restart)",
        out.decisions.len(),
        ids.len()
    );
    assert!(restarted.is_running());
}

#[test]
fn a_script_syntax_error_stops_run_before_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("broken.rhai");
    std::fs::write(&script, "fn route(lead) {\n    let x = ;\n}\n").unwrap();
    let port = common::free_port();
    let (ok, _, err) = leadflow(&[
        "run",
        "--topology",
        concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/lead-routing.yaml"),
        "--rules",
        script.to_str().unwrap(),
        "--bootstrap-servers",
        &format!("127.0.0.1:{port}"),
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!("{}:2:", script.display())),
        "no file:line in: {err}"
    );
    // Nothing listened on the bootstrap port, so a consumer would have logged connection
    // errors; the only output is the rules error.
    assert!(
        !err.contains("Connection refused") && !err.contains("BrokerTransportFailure"),
        "{err}"
    );

    let (ok, _, err) = leadflow(&["run", "--topology", "/no/such/topology.yaml"]);
    assert!(!ok && err.contains("/no/such/topology.yaml"), "{err}");
}
