//! `leadflow run` against a real broker and registry, checked by an independent verifier that
//! reads the output topics back and reconciles them with what the generator produced.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{header, run_with_deadline, Broker, Proc, RegistryProc};
use leadflow::codec::{decode, frame, unframe, RegistryClient, SchemaKind};
use leadflow::gen::{Disorder, DISORDER_HEADER, SEQ_HEADER};
use leadflow::model::{ContactEvent, EngagementEvent, LateEvent, RoutedLead};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

/// One stack at a time: each runs a broker, a registry, the generator and processors, and on
/// this 2-core machine several at once starve each other of CPU (timing-dependent waits such
/// as the input merge's then expire and the tests measure the contention, not leadflow).
static ONE_STACK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A broker, a registry, prefixed topics and a topology file naming them.
struct Stack {
    _turn: std::sync::MutexGuard<'static, ()>,
    broker: Broker,
    registry: RegistryProc,
    prefix: String,
    dir: tempfile::TempDir,
    topology: PathBuf,
}

impl Stack {
    fn new(test: &str, rules: &str) -> Stack {
        let turn = ONE_STACK_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
        let yaml = common::prefixed_topology(&prefix, rules)
            .replace("max_record_bytes: 1MiB", "max_record_bytes: 64KiB");
        let topology = dir.path().join("topology.yaml");
        std::fs::write(&topology, yaml).unwrap();
        Stack {
            _turn: turn,
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
        self.gen_with(count, duplicates, &[]);
    }

    fn gen_with(&self, count: &str, duplicates: &str, extra: &[&str]) {
        let mut args = vec![
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
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = leadflow(&args);
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
                "session.timeout.ms=6000", // SESSION_EXPIRY depends on it
                "--kafka",
                "heartbeat.interval.ms=1000",
            ])
            .args(["--kafka", "max.poll.interval.ms=20000"])
            .env("RUST_LOG", "info,rdkafka=warn,leadflow::runtime=trace");
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
    /// Where each event was first written: (partition, offset) in its input topic.
    located: HashMap<String, (i32, i64)>,
    /// Events the generator made late (beyond its lateness bound), by kind.
    late: HashSet<String>,
    /// Engagements whose contact no contact event named before them, in production order
    /// (the generator's trackers see 3 % of engagements before the CRM knows the contact):
    /// the only engagements a processor that merges its inputs in timestamp order counts as
    /// `unknown_contact`.
    orphans: usize,
}

fn produced(stack: &Stack) -> Produced {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(&stack.registry.url).unwrap();
    let mut p = Produced {
        contacts: HashSet::new(),
        engagements: HashSet::new(),
        duplicates: 0,
        located: HashMap::new(),
        late: HashSet::new(),
        orphans: 0,
    };
    // (production seq, is a contact event, contact id) of every first sending.
    let mut order: Vec<(u64, bool, String)> = Vec::new();
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
            let seq: u64 = header(&m, SEQ_HEADER).unwrap().parse().unwrap();
            let (id, datum) = unframe(m.payload().unwrap()).unwrap();
            let writer = rt.block_on(client.schema_by_id(id)).unwrap();
            let event_id = if contacts {
                decode::<ContactEvent>(&writer, SchemaKind::ContactEvent, datum)
                    .unwrap()
                    .envelope
                    .event_id
            } else {
                decode::<EngagementEvent>(&writer, SchemaKind::EngagementEvent, datum)
                    .unwrap()
                    .envelope
                    .event_id
            };
            if disorder == Disorder::Late {
                p.late.insert(event_id);
            }
            if contacts {
                let e: ContactEvent = decode(&writer, SchemaKind::ContactEvent, datum).unwrap();
                p.located
                    .insert(e.envelope.event_id.clone(), (m.partition(), m.offset()));
                order.push((seq, true, e.payload.contact_id));
                p.contacts.insert(e.envelope.event_id);
            } else {
                let e: EngagementEvent =
                    decode(&writer, SchemaKind::EngagementEvent, datum).unwrap();
                order.push((seq, false, e.payload.contact_id));
                p.engagements.insert(e.envelope.event_id);
            }
        }
    }
    order.sort();
    let mut known = HashSet::new();
    for (_, contact, id) in order {
        if contact {
            known.insert(id);
        } else if !known.contains(&id) {
            p.orphans += 1;
        }
    }
    p
}

/// For each missing event: where it was in the input, whether the state store holds its
/// de-duplication mark, and the group's committed offset for its partition.
fn explain_missing(stack: &Stack, want: &Produced, missing: &[String]) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topology = std::fs::read_to_string(&stack.topology).unwrap();
    let app = topology
        .lines()
        .find_map(|l| l.strip_prefix("application_id: "))
        .unwrap()
        .trim()
        .to_string();
    let store = leadflow::state::StateStore::open(
        &stack.dir.path().join("state").join(&app),
        Duration::from_secs(86_400),
    )
    .unwrap();
    let consumer: BaseConsumer = stack
        .broker
        .client()
        .set("group.id", &app)
        .create()
        .unwrap();
    let contacts = stack.topic("crm.contacts.v1");
    let mut text = String::new();
    for id in missing.iter().take(10) {
        let (partition, offset) = want.located[id];
        let mark = store
            .get(
                leadflow::state::Cf::Dedup,
                &leadflow::state::partition_key(partition, id.as_bytes()),
            )
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(&contacts, partition);
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10));
        let committed = committed
            .ok()
            .and_then(|t| t.find_partition(&contacts, partition).map(|e| e.offset()));
        text.push_str(&format!(
            "  {id}: contacts partition {partition} offset {offset}; dedup mark in store: {}; group committed offset: {committed:?}\n",
            mark.is_some()
        ));
    }
    text
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
    let unknown = metric(
        &metrics_url,
        "leadflow_no_decision_total",
        "unknown_contact",
    ) as usize;
    assert_eq!(undecided, unknown);
    // The generator writes each contact event before that contact's engagements, so with the
    // inputs merged in record-timestamp order only engagements of contacts never produced are
    // unknown (20 of 757). Processed in the order the consumer delivered them, 636 and 757 of
    // the 757 were; merged but waiting only max_task_idle for an empty input, 659 to 710.
    eprintln!(
        "unknown_contact: {unknown} of {} engagements; {} have no contact event before them",
        want.engagements.len(),
        want.orphans
    );
    assert_eq!(
        unknown, want.orphans,
        "engagements processed before their contact's event"
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

/// Longer than the group session of a killed processor (`session.timeout.ms=6000` in
/// `Stack::start`) plus a heartbeat.
const SESSION_EXPIRY: Duration = Duration::from_secs(8);

/// Three kill -9s mid-stream, then a restart: every contact event decided, replays keep their
/// decision_id. (Its earlier intermittent losses were tansu's mid-batch fetch bug, see
/// tests/broker_quirks.rs; a failure prints, per missing event, its input offset, the group's
/// committed offset, whether its de-duplication mark is in the store, and the trace lines.)
#[test]
fn kill_9_mid_stream_loses_nothing() {
    let stack = Stack::new("kill", &rules("tests/fixtures/always_route.rhai"));
    // One record per batch: tansu 0.6.0 answers a fetch from an offset inside a record batch
    // with the NEXT batch, so a consumer resuming from a committed offset in the middle of a
    // batch would skip the rest of it (a broker bug; Kafka returns the whole batch and the
    // client skips to the offset). See tansu_skips_the_rest_of_a_batch_on_a_mid_batch_fetch.
    stack.gen_with("6000", "0.0", &["--kafka", "batch.num.messages=1"]);
    // Each start waits until the killed instance's group session (6 s, below) has expired.
    // tansu 0.6.0 expires members lazily, so there is nothing to observe; but an instance
    // joining while a killed *leader* is still in the group can be assigned nothing for ever
    // (see "Broker quirks" in docs/ARCHITECTURE.md), while one joining after the expiry
    // removes it and leads the group itself.
    let want = produced(&stack);
    // Three crashes at different points, each while records are in flight, then a clean run.
    let mut logs = Vec::new();
    for crash in 1..=3 {
        let (mut proc, metrics_url) = stack.start();
        common::wait_until("some decisions", Duration::from_secs(120), || {
            metric(&metrics_url, "leadflow_routed_total", "") >= 300.0
        });
        let routed_before_kill = metric(&metrics_url, "leadflow_routed_total", "");
        proc.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
        std::thread::sleep(SESSION_EXPIRY);
        eprintln!("crash {crash}: killed after {routed_before_kill} decisions of this run");
        logs.push(proc.log_text());
    }
    let decided_before_restart = stack.outputs().decisions.len();
    assert!(
        decided_before_restart < want.contacts.len(),
        "the crashes came after everything was decided; the test proves nothing"
    );
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
    if !missing.is_empty() {
        // Stop the processor (it commits its offsets) and explain each loss from the state
        // store and the group's committed offsets.
        restarted.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
        let explained = explain_missing(&stack, &want, &missing);
        // The trace lines of the missing records' partitions, from both runs.
        let contacts = stack.topic("crm.contacts.v1");
        let mut traces = String::new();
        for id in missing.iter().take(3) {
            let (partition, offset) = want.located[id];
            let runs = logs
                .iter()
                .cloned()
                .chain([restarted.log_text()])
                .enumerate();
            for (run, log) in runs {
                let lines = log.lines().filter(|l| {
                    l.contains(&format!("topic=\"{contacts}\""))
                        && l.contains(&format!("partition={partition} "))
                        && l.split("offset=")
                            .nth(1)
                            .and_then(|o| o.split_whitespace().next()?.parse::<i64>().ok())
                            .is_some_and(|o| (o - offset).abs() <= 3)
                });
                for l in lines {
                    traces.push_str(&format!("  [run {run}] {l}\n"));
                }
            }
        }
        let without_traces = |log: String| {
            log.lines()
                .filter(|l| !l.contains(" processed") && !l.contains(" completed"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{} contact events lost after kill -9:\n{explained}\ntraces near them (run 0 = first):\n{traces}\nlast crashed run's log:\n{}\nrestarted log:\n{}",
            missing.len(),
            without_traces(logs.last().cloned().unwrap_or_default()),
            without_traces(restarted.log_text())
        );
    }
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
        "kill -9 three times: {} decisions for {} events ({decided_before_restart} before the final restart; {replayed} re-emitted)",
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

#[test]
fn late_events_reach_the_late_topic_and_reconcile_with_the_generator() {
    let stack = Stack::new("late", &rules("tests/fixtures/always_route.rhai"));
    // 100 ms between events: the whole run spans 5 minutes of event time, less than the
    // generator's late shift (bound + 10 min at least), so a late event is behind the
    // watermark of its partition however far one input runs ahead of the other.
    stack.gen_with(
        "3000",
        "0.0",
        &[
            "--out-of-order",
            "0.2",
            "--late",
            "0.02",
            "--lateness-bound",
            "5m",
            "--mean-gap",
            "100ms",
        ],
    );
    let want = produced(&stack);
    let inputs = stack.broker.read_all(&stack.topic("crm.contacts.v1")).len()
        + stack
            .broker
            .read_all(&stack.topic("crm.engagements.v1"))
            .len();
    assert!(
        want.late.len() >= 20,
        "the generator made only {} late events",
        want.late.len()
    );
    let (mut proc, metrics_url) = stack.start();
    common::wait_until(
        "every input record handled",
        Duration::from_secs(240),
        || metric(&metrics_url, "leadflow_record_latency_seconds_count", "") >= inputs as f64,
    );
    let late_topic = stack.broker.read_all(&stack.topic("leads.late"));
    let mut on_late_topic = HashSet::new();
    for m in &late_topic {
        let (_, datum) = unframe(m.payload().unwrap()).unwrap();
        let e: LateEvent = decode(
            leadflow::codec::canonical().get(SchemaKind::LateEvent),
            SchemaKind::LateEvent,
            datum,
        )
        .unwrap();
        assert!(e.occurred_at < e.watermark, "{e:?}");
        assert_eq!(e.lateness_ms, e.watermark - e.occurred_at);
        assert_eq!(header(m, "event_id").as_deref(), Some(e.event_id.as_str()));
        assert!(
            on_late_topic.insert(e.event_id),
            "a late event written twice"
        );
    }
    let missed: Vec<_> = want.late.difference(&on_late_topic).collect();
    let extra: Vec<_> = on_late_topic.difference(&want.late).collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "{} generated late events not on the late topic (e.g. {:?}); {} on it that the generator \
         did not make late (e.g. {:?})",
        missed.len(),
        missed.first(),
        extra.len(),
        extra.first()
    );
    assert_eq!(
        metric(
            &metrics_url,
            "leadflow_late_events_total",
            "policy=\"side_output\""
        ),
        want.late.len() as f64
    );
    // Late events are not routed; every on-time contact event is.
    let out = stack.outputs();
    let decided: HashSet<String> = out.decisions.iter().map(|d| d.event_id.clone()).collect();
    assert!(decided.is_disjoint(&want.late), "a late event was routed");
    let timeouts: HashSet<String> = out
        .dlq
        .iter()
        .filter_map(|m| dlq_event_id(&stack, m))
        .collect();
    let undecided = want
        .contacts
        .iter()
        .filter(|id| !want.late.contains(*id) && !decided.contains(*id) && !timeouts.contains(*id))
        .count();
    assert_eq!(undecided, 0, "on-time contact events without a decision");
    eprintln!(
        "late: {} of {} input records late, all on the late topic; {} decisions",
        want.late.len(),
        inputs,
        out.decisions.len()
    );
    assert!(proc.is_running());
}
