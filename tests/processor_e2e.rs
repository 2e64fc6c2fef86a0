//! `leadflow run` against a real broker and registry, checked by an independent verifier that
//! reads the output topics back and reconciles them with what the generator produced.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use common::stack::{
    dlq_event_id, leadflow, metric, produced, routed_lead, rules, Produced, Stack,
};
use common::{header, run_with_deadline};
use leadflow::codec::{decode, frame, unframe, RegistryClient, SchemaKind};
use leadflow::model::LateEvent;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

/// For each missing event: where it was in the input, whether the state store holds its
/// de-duplication mark, and the group's committed offset for its partition.
fn explain_missing(stack: &Stack, want: &Produced, missing: &[String]) -> String {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let app = stack.application_id();
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
    let records = store.entries(leadflow::state::Cf::Contact).unwrap();
    for id in missing.iter().take(10) {
        let (partition, offset) = want.located[id];
        let hash = leadflow::state::dedup::event_hash(id);
        let in_record = records.iter().any(|(k, v)| {
            k.starts_with(&(partition as u32).to_be_bytes())
                && leadflow::enrich::contact::ContactState::from_bytes(v).is_ok_and(|c| {
                    c.seen.lookup(hash, i64::MIN) == leadflow::state::dedup::Lookup::Seen
                })
        });
        let mark = store
            .get(
                leadflow::state::Cf::Dedup,
                &leadflow::state::partition_key(partition, id.as_bytes()),
            )
            .unwrap()
            .is_some()
            || in_record;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(&contacts, partition);
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10));
        let committed = committed
            .ok()
            .and_then(|t| t.find_partition(&contacts, partition).map(|e| e.offset()));
        text.push_str(&format!(
            "  {id}: contacts partition {partition} offset {offset}; dedup mark in store: {}; group committed offset: {committed:?}\n",
            mark
        ));
    }
    text
}

fn produce_poison(stack: &Stack) -> usize {
    let producer: ThreadedProducer<DefaultProducerContext> =
        stack.broker.client().create().unwrap();
    let topic = stack.topic("crm.contacts.v1");
    let big = vec![0u8; 100_000];
    let garbage = frame(1, &[0xff; 32]);
    let unknown = frame(999_999, b"whatever");
    // A valid event from a producer that wrote microseconds: far in the future.
    let client = RegistryClient::new(&stack.registry.url).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = rt
        .block_on(client.register(
            &leadflow::topics::value_subject(&topic),
            SchemaKind::ContactEvent.source(),
        ))
        .unwrap();
    let micros = common::events::now_ms() * 1000;
    let future = leadflow::codec::Encoder::new(SchemaKind::ContactEvent, id)
        .unwrap()
        .encode(&common::events::contact(
            "evt-micros",
            "ct_poison_6",
            micros,
        ))
        .unwrap();
    let records: [(Option<&[u8]>, &[u8]); 6] = [
        (Some(b"ct_poison_1"), b"{\"not\":\"avro\"}"),
        (Some(b"ct_poison_2"), &unknown),
        (Some(b"ct_poison_3"), &garbage),
        (Some(b"ct_poison_4"), &big),
        (None, b"\x00\x00\x00\x00\x01"),
        (Some(b"ct_poison_6"), &future),
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
            "bad_timestamp",
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

/// Three kill -9s mid-stream, each restarted at once, then a last run: every contact event
/// decided, replays keep their decision_id. (A failure prints, per missing event, its input
/// offset, the group's committed offset, whether its de-duplication mark is in the store,
/// and the trace lines.)
#[test]
fn kill_9_mid_stream_loses_nothing() {
    let stack = Stack::new("kill", &rules("tests/fixtures/always_route.rhai"));
    // Traffic keeps arriving through the crashes, and stops only after the third (a backlog
    // would be drained by a fast processor before the third kill; a slow machine takes long
    // enough over three restarts for a bounded generator to finish).
    let mut gen = stack.gen_in_background("40000", &["--rate", "400"]);
    // Three crashes at different points, each while records are in flight, then a clean run.
    let mut logs = Vec::new();
    for crash in 1..=3 {
        let (mut proc, metrics_url) = stack.start();
        common::wait_until("some decisions", Duration::from_secs(120), || {
            metric(&metrics_url, "leadflow_routed_total", "") >= 300.0
        });
        let routed_before_kill = metric(&metrics_url, "leadflow_routed_total", "");
        proc.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
        eprintln!("crash {crash}: killed after {routed_before_kill} decisions of this run");
        logs.push(proc.log_text());
    }
    assert!(
        gen.is_running(),
        "the generator ended before the third crash"
    );
    // Contacts written after the last crash are certainly undecided: the final run has work
    // even if the processor had kept up with the generator until then.
    let contacts = stack.topic("crm.contacts.v1");
    let at_crash = stack.broker.read_all(&contacts).len();
    common::wait_until(
        "contacts produced after the last crash",
        Duration::from_secs(60),
        || stack.broker.read_all(&contacts).len() >= at_crash + 100,
    );
    gen.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
    let want = produced(&stack);
    let decided_before_restart: HashSet<String> = stack
        .outputs()
        .decisions
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    // (Engagements are decided too, so compare the contact events themselves, not counts.)
    let undecided = want
        .contacts
        .iter()
        .filter(|id| !decided_before_restart.contains(*id))
        .count();
    assert!(
        undecided > 0,
        "the crashes came after every contact event was decided; the test proves nothing"
    );
    eprintln!("{undecided} contact events undecided before the final run");
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
        "kill -9 three times: {} decisions for {} events ({} before the final restart; {replayed} re-emitted)",
        out.decisions.len(),
        ids.len(),
        decided_before_restart.len()
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
