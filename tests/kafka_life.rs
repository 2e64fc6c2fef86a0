//! leadflow through Kafka's ordinary life, each against a real broker: a broker restart
//! mid-stream, outputs too large for their topic, a registry that refuses us, properties that
//! would break the guarantees, and inputs or assignments that split a task.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::proxy::{FaultProxy, Mode};
use common::stack::{
    dlq_event_id, http_get, leadflow, metric, produced, rules, Stack, StackOptions,
};
use common::{header, wait_until};
use leadflow::codec::{frame, Encoder, RegistryClient, SchemaKind};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

/// Routes every event: each must get a decision.
fn always_route() -> String {
    rules("tests/fixtures/route_all.rhai")
}

/// The `/readyz` URL next to a `/metrics` URL.
fn readyz(metrics_url: &str) -> String {
    metrics_url.replace("/metrics", "/readyz")
}

/// Waits until `/readyz` answers 200; shows the processor's log if it does not.
fn wait_ready(proc: &common::Proc, metrics_url: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while http_get(&readyz(metrics_url)).is_none_or(|(status, _)| status != 200) {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready within 60s ({:?}); log:\n{}",
            http_get(&readyz(metrics_url)),
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Input records on both input topics.
fn input_records(stack: &Stack) -> usize {
    stack.broker.read_all(&stack.topic("crm.contacts.v1")).len()
        + stack
            .broker
            .read_all(&stack.topic("crm.engagements.v1"))
            .len()
}

/// Waits until the processor has completed (delivered and committed) `n` input records.
fn wait_completed(metrics_url: &str, n: usize, timeout: Duration) {
    wait_until("every input record completed", timeout, || {
        metric(metrics_url, "leadflow_record_latency_seconds_count", "") >= n as f64
    });
}

/// Produces raw records to `topic` (key, value), allowing values up to 3 MB.
fn produce_raw(stack: &Stack, topic: &str, records: &[(&[u8], Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = stack
        .broker
        .client()
        .set("message.max.bytes", "3000000")
        .create()
        .unwrap();
    for (key, value) in records {
        producer
            .send(BaseRecord::to(topic).key(*key).payload(value))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing_and_the_processor_keeps_running() {
    let mut stack = Stack::new("restart", &always_route());
    // Outputs in flight when the broker dies time out in librdkafka (3 s) while it is down,
    // so leadflow itself must produce them again.
    let (mut proc, metrics_url) = stack.start_with(&["--kafka", "message.timeout.ms=3000"], &[]);
    let pid = proc.pid();
    wait_ready(&proc, &metrics_url);
    // Traffic arrives while the processor runs; the broker dies in the middle of it.
    let mut gen = stack.gen_in_background("4000", &["--rate", "400"]);
    wait_until(
        "decisions before the crash",
        Duration::from_secs(120),
        || metric(&metrics_url, "leadflow_routed_total", "") >= 600.0,
    );
    let errors_before = metric(&metrics_url, "leadflow_kafka_errors_total", "");
    stack.broker.kill();
    wait_until(
        "the processor to notice the broker is gone",
        Duration::from_secs(60),
        || metric(&metrics_url, "leadflow_kafka_errors_total", "") > errors_before,
    );
    let routed_while_down = metric(&metrics_url, "leadflow_routed_total", "");
    stack.broker.restart();
    let status = gen.wait_exit(Duration::from_secs(180));
    assert!(status.success(), "gen failed:\n{}", gen.log_text());

    let want = produced(&stack);
    wait_completed(
        &metrics_url,
        input_records(&stack),
        Duration::from_secs(180),
    );
    // Completed counts replays too: wait for the decisions themselves.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let out = loop {
        let out = stack.outputs();
        let decided: HashSet<&str> = out.decisions.iter().map(|d| d.event_id.as_str()).collect();
        if want.contacts.iter().all(|id| decided.contains(id.as_str()))
            || std::time::Instant::now() > deadline
        {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        proc.is_running(),
        "the processor stopped:\n{}",
        proc.log_text()
    );
    assert_eq!(proc.pid(), pid, "not the same process");

    let mut ids: HashMap<&str, HashSet<&str>> = HashMap::new();
    for d in &out.decisions {
        ids.entry(d.event_id.as_str())
            .or_default()
            .insert(d.decision_id.as_str());
    }
    let undecided: Vec<&String> = want
        .contacts
        .iter()
        .filter(|id| !ids.contains_key(id.as_str()))
        .collect();
    assert!(
        undecided.is_empty(),
        "{} contact events without a decision after the broker restart, e.g. {:?}",
        undecided.len(),
        undecided
            .iter()
            .take(5)
            .map(|id| (id, want.located[*id]))
            .collect::<Vec<_>>(),
    );
    // An engagement processed before its contact is known is kept in the contact's state and
    // counted as `unknown_contact`, not routed (contracts §4). Around a broker restart that
    // happens more often than in production order ("orphans"): the generator's producer
    // re-sends each topic's queue when that topic's leader is known again, so an engagement
    // can reach the broker before the contact event produced just before it. Every
    // engagement must be decided or counted.
    let undecided = want
        .engagements
        .iter()
        .filter(|id| !ids.contains_key(id.as_str()))
        .count();
    let unknown = metric(
        &metrics_url,
        "leadflow_no_decision_total",
        "unknown_contact",
    ) as usize;
    assert!(
        undecided <= unknown,
        "{undecided} engagements without a decision, only {unknown} counted as unknown_contact"
    );
    assert!(
        ids.values().all(|set| set.len() == 1),
        "an event got two decision ids"
    );
    assert!(out.dlq.is_empty(), "records dead-lettered by the restart");
    let errors = metric(&metrics_url, "leadflow_kafka_errors_total", "");
    let resent = metric(&metrics_url, "leadflow_produce_retries_total", "");
    eprintln!(
        "broker restart: {} decisions for {} events ({routed_while_down} before the restart), \
         {errors} Kafka client errors logged and counted, {resent} outputs produced again; \
         {undecided} engagements of contacts \
         not known when processed ({} orphans in production order)",
        out.decisions.len(),
        ids.len(),
        want.orphans
    );
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "exit {status:?}:\n{}", proc.log_text());
}

#[test]
fn outputs_too_large_for_their_topic_go_to_the_dlq_truncated_and_processing_goes_on() {
    outputs_too_large("at_least_once");
}

/// Under exactly-once a record the broker refuses would abort the transaction (and, replayed,
/// abort every transaction after): such records are refused before they are produced.
#[test]
fn exactly_once_outputs_too_large_for_their_topic_go_to_the_dlq_without_an_abort() {
    outputs_too_large("exactly_once");
}

fn outputs_too_large(guarantee: &str) {
    let stack = Stack::with(
        "big",
        &always_route(),
        StackOptions {
            max_record_bytes: "1MiB",
            create_topics: false,
            ..StackOptions::default()
        },
    );
    let topology = std::fs::read_to_string(&stack.topology).unwrap().replace(
        "guarantee: at_least_once",
        &format!("guarantee: {guarantee}"),
    );
    std::fs::write(&stack.topology, topology).unwrap();
    // The DLQ takes at most 200 kB, the late topic 300 bytes (no LateEvent fits); contacts
    // take up to 3 MB, so an input larger than the topology's 1 MiB limit can arrive.
    stack.broker.create_topic(
        &stack.topic("leads.dlq"),
        6,
        &[("max.message.bytes", "200000")],
    );
    stack.broker.create_topic(
        &stack.topic("leads.late"),
        6,
        &[("max.message.bytes", "300")],
    );
    stack.broker.create_topic(
        &stack.topic("crm.contacts.v1"),
        6,
        &[("max.message.bytes", "3000000")],
    );
    stack.create_topics(6);
    stack.gen_with(
        "1500",
        "0.0",
        &[
            "--late",
            "0.03",
            "--lateness-bound",
            "5m",
            "--mean-gap",
            "100ms",
        ],
    );
    let contacts = stack.topic("crm.contacts.v1");
    // Not Confluent framing (a DLQ copy larger than the DLQ topic takes), and over the
    // topology's limit (an oversize record, truncated before it is produced).
    produce_raw(
        &stack,
        &contacts,
        &[
            (b"ct_big_1", vec![0xab; 300_000]),
            (b"ct_big_2", vec![0xab; 1_500_000]),
        ],
    );
    let want = produced(&stack);
    assert!(
        want.late.len() >= 20,
        "only {} late events",
        want.late.len()
    );
    let (mut proc, metrics_url) = stack.start();
    wait_completed(
        &metrics_url,
        input_records(&stack),
        Duration::from_secs(180),
    );

    let out = stack.outputs();
    let by_key = |key: &[u8]| {
        out.dlq
            .iter()
            .find(|m| m.key() == Some(key))
            .unwrap_or_else(|| panic!("no DLQ record for {}", String::from_utf8_lossy(key)))
    };
    for (key, class, size) in [
        (&b"ct_big_1"[..], "bad_magic", "300000"),
        (&b"ct_big_2"[..], "oversize", "1500000"),
    ] {
        let m = by_key(key);
        assert_eq!(header(m, "error.class").as_deref(), Some(class));
        assert_eq!(header(m, "original.size").as_deref(), Some(size));
        assert_eq!(m.payload().map(<[u8]>::len), Some(1024));
        assert_eq!(
            header(m, "source.topic").as_deref(),
            Some(contacts.as_str())
        );
        assert!(header(m, "source.offset").is_some());
    }
    // Every late event's LateEvent was refused by the late topic: its input is in the DLQ.
    let refused_late: HashSet<String> = out
        .dlq
        .iter()
        .filter(|m| header(m, "error.class").as_deref() == Some("oversize"))
        .filter_map(|m| dlq_event_id(&stack, m))
        .collect();
    assert_eq!(
        refused_late, want.late,
        "late events not in the DLQ, or others"
    );
    assert!(stack.broker.read_all(&stack.topic("leads.late")).is_empty());
    assert_eq!(
        metric(
            &metrics_url,
            "leadflow_outputs_too_large_total",
            "output=\"late\""
        ),
        want.late.len() as f64
    );
    assert_eq!(
        metric(
            &metrics_url,
            "leadflow_outputs_too_large_total",
            "output=\"dlq\""
        ),
        1.0
    );
    // Everything else was routed.
    let decided: HashSet<&str> = out.decisions.iter().map(|d| d.event_id.as_str()).collect();
    let undecided = want
        .contacts
        .iter()
        .filter(|id| !want.late.contains(*id) && !decided.contains(id.as_str()))
        .count();
    assert_eq!(undecided, 0);
    assert!(proc.is_running(), "{}", proc.log_text());
    if guarantee == "exactly_once" {
        assert_eq!(
            metric(
                &metrics_url,
                "leadflow_transactions_total",
                "outcome=\"aborted\""
            ),
            0.0,
            "a transaction was aborted"
        );
        assert!(
            metric(
                &metrics_url,
                "leadflow_transactions_total",
                "outcome=\"committed\""
            ) > 0.0
        );
    }
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", proc.log_text());

    // A restart does not fail on them again: their offsets were committed.
    let dlq_before = out.dlq.len();
    let (mut again, metrics_url) = stack.start();
    wait_ready(&again, &metrics_url);
    assert_eq!(stack.outputs().dlq.len(), dlq_before);
    assert!(again.is_running());
    again.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
}

/// The canonical ContactEvent schema with a `doc`: the same fields (records encode the same
/// bytes) but another schema text, so another id that no processor has cached.
fn contact_schema_with_doc() -> String {
    let mut schema: serde_json::Value =
        serde_json::from_str(SchemaKind::ContactEvent.source()).unwrap();
    schema["doc"] = serde_json::json!("ContactEvent, as written by connector v2");
    schema.to_string()
}

#[test]
fn registry_faults_are_waited_out_and_never_dead_letter_a_record() {
    let stack = Stack::new("registry", &always_route());
    // A small buffer: the records blocked on the registry fill it, so the driver must pause
    // the inputs and keep polling.
    let yaml = std::fs::read_to_string(&stack.topology).unwrap();
    std::fs::write(
        &stack.topology,
        yaml.replace("max_in_flight: 10000", "max_in_flight: 50"),
    )
    .unwrap();
    stack.gen("400", "0.0");
    let mut stack = stack;
    // The registry wants credentials; leadflow has them from the environment.
    let credentials = format!("leadflow:registry-secret-{}", std::process::id());
    let proxy = FaultProxy::start(&stack.registry.url, Some(&credentials));
    stack.registry_url = proxy.url.clone();
    // 1. Start while the registry refuses our credentials: the reference tables wait.
    proxy.set(Mode::Unauthorized);
    let (mut proc, metrics_url) = stack.start_with(
        // A registry outage longer than this must not cost the group membership.
        &["--kafka", "max.poll.interval.ms=8000"],
        &[("LEADFLOW_SCHEMA_REGISTRY_BASIC_AUTH", &credentials)],
    );
    wait_until("/readyz to name the 401", Duration::from_secs(60), || {
        http_get(&readyz(&metrics_url))
            .is_some_and(|(status, body)| status == 503 && body.contains("HTTP 401"))
    });
    assert_eq!(
        metric(&metrics_url, "leadflow_reference_updates_total", ""),
        0.0
    );
    proxy.set(Mode::Pass);
    wait_ready(&proc, &metrics_url);
    // Every reference record was applied: none skipped because of the refusal.
    assert_eq!(
        metric(&metrics_url, "leadflow_reference_updates_total", ""),
        (300 + 24) as f64
    );
    let first = input_records(&stack);
    wait_completed(&metrics_url, first, Duration::from_secs(120));

    // 2. While processing, records with a schema id nobody has cached, and the registry
    // answers 401, 403, a proxy's 404 page and 400 in turn, for longer than
    // max.poll.interval.ms.
    let client = RegistryClient::new(&stack.registry.url).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let contacts = stack.topic("crm.contacts.v1");
    let id = rt
        .block_on(client.register(
            &leadflow::topics::value_subject(&contacts),
            &contact_schema_with_doc(),
        ))
        .unwrap();
    let encoder = Encoder::new(SchemaKind::ContactEvent, 1).unwrap();
    let now = common::events::now_ms();
    // More than the stream threads' queues and the buffer hold.
    const FRESH: usize = 600;
    let fresh: Vec<(String, Vec<u8>)> = (0..FRESH)
        .map(|i| {
            let event = common::events::contact(&format!("evt-v2-{i}"), &format!("ct_v2_{i}"), now);
            let (_, datum) = leadflow::codec::unframe(&encoder.encode(&event).unwrap())
                .map(|(i, d)| (i, d.to_vec()))
                .unwrap();
            (format!("ct_v2_{i}"), frame(id, &datum))
        })
        .collect();
    let records: Vec<(&[u8], Vec<u8>)> = fresh
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.clone()))
        .collect();
    let log_before = proc.log_text().len();
    for (mode, kind) in [
        (Mode::Unauthorized, "unauthorized"),
        (Mode::Forbidden, "forbidden"),
        (Mode::NotFoundPage, "not_found"),
        (Mode::BadRequest, "refused"),
    ] {
        proxy.set(mode);
        if mode == Mode::Unauthorized {
            produce_raw(&stack, &contacts, &records);
        }
        let before = metric(&metrics_url, "leadflow_registry_faults_total", kind);
        wait_until(
            &format!("the processor to meet the {kind} fault"),
            Duration::from_secs(60),
            || metric(&metrics_url, "leadflow_registry_faults_total", kind) > before + 2.0,
        );
        let (status, body) = http_get(&readyz(&metrics_url)).unwrap();
        assert_eq!(status, 503, "{body}");
        if mode != Mode::Unauthorized {
            assert_eq!(
                metric(&metrics_url, "leadflow_consumer_paused", ""),
                1.0,
                "blocked for seconds, yet the inputs are not paused"
            );
        }
        // Each fault lasts a few seconds: 4 of them outlast max.poll.interval.ms (8 s).
        let until = std::time::Instant::now() + Duration::from_secs(3);
        wait_until("the fault to last", Duration::from_secs(10), || {
            std::time::Instant::now() >= until
        });
    }
    assert_eq!(
        metric(&metrics_url, "leadflow_routed_total", "") as usize,
        {
            let out = stack.outputs();
            out.decisions.len()
        }
    );
    proxy.set(Mode::Pass);
    wait_completed(
        &metrics_url,
        first + records.len(),
        Duration::from_secs(120),
    );
    let out = stack.outputs();
    assert!(
        out.dlq.is_empty(),
        "{} records dead-lettered",
        out.dlq.len()
    );
    let decided: HashSet<&str> = out.decisions.iter().map(|d| d.event_id.as_str()).collect();
    for i in 0..FRESH {
        assert!(decided.contains(format!("evt-v2-{i}").as_str()));
    }
    assert_eq!(metric(&metrics_url, "leadflow_consumer_paused", ""), 0.0);
    let during = &proc.log_text()[log_before..];
    assert!(
        !during.contains("partitions revoked"),
        "the outage cost the group membership:\n{during}"
    );
    let secret = credentials.split_once(':').unwrap().1;
    assert!(
        !proc.log_text().contains(secret),
        "the registry password is in the log"
    );
    let (_, metrics) = http_get(&metrics_url).unwrap();
    assert!(!metrics.contains(secret));
    assert!(proc.is_running());
    proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
}

/// A task waits for an empty input while the broker holds records of it not received yet, for as
/// long as that lasts. A partition whose last records were written in a transaction ends with
/// the commit marker, which no record follows: once its records are received it must count as
/// caught up, or every later record of the other input would wait for it for good.
#[test]
fn an_input_ending_in_a_transaction_marker_does_not_hold_its_task_back() {
    let stack = Stack::new("txn-inputs", &always_route());
    let (mut proc, metrics_url) = stack.start();
    wait_ready(&proc, &metrics_url);
    let client = RegistryClient::new(&stack.registry.url).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let contacts = stack.topic("crm.contacts.v1");
    let engagements = stack.topic("crm.engagements.v1");
    let register = |topic: &str, kind: SchemaKind| {
        rt.block_on(client.register(&leadflow::topics::value_subject(topic), kind.source()))
            .unwrap()
    };
    let contact_id = register(&contacts, SchemaKind::ContactEvent);
    let engagement_id = register(&engagements, SchemaKind::EngagementEvent);
    let now = common::events::now_ms();
    let contact = Encoder::new(SchemaKind::ContactEvent, contact_id)
        .unwrap()
        .encode(&common::events::contact("evt-txn-c", "ct_txn", now))
        .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = stack
        .broker
        .client()
        .set(
            "transactional.id",
            format!("{}-txn-test", stack.application_id()),
        )
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    producer
        .send(BaseRecord::to(&contacts).key("ct_txn").payload(&contact))
        .map_err(|(e, _)| e)
        .unwrap();
    producer
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    wait_completed(&metrics_url, 1, Duration::from_secs(60));

    // The contacts partition now ends with the marker; an engagement of the same contact comes.
    let engagement = Encoder::new(SchemaKind::EngagementEvent, engagement_id)
        .unwrap()
        .encode(&common::events::engagement("evt-txn-e", "ct_txn", now + 1))
        .unwrap();
    produce_raw(&stack, &engagements, &[(b"ct_txn".as_slice(), engagement)]);
    // Well within the 60 s a task waits at most for an input behind.
    wait_completed(&metrics_url, 2, Duration::from_secs(30));
    assert_eq!(
        metric(&metrics_url, "leadflow_routed_total", ""),
        2.0,
        "both events routed: {}",
        proc.log_text()
    );
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", proc.log_text());
}

/// A SIGTERM while the processor is still starting (here: right after it serves /metrics,
/// before it has joined the group) is kept until it can stop cleanly: it exits 0 instead of
/// being killed by the signal's default action.
#[test]
fn a_sigterm_during_start_up_stops_the_processor_cleanly() {
    let stack = Stack::new("early-term", &always_route());
    let (mut proc, _) = stack.start();
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{status:?}\n{}", proc.log_text());
    assert!(
        proc.log_text().contains("shutting down"),
        "{}",
        proc.log_text()
    );
}

#[test]
fn inputs_with_different_partition_counts_are_refused_at_start() {
    let stack = Stack::with(
        "copart",
        &always_route(),
        StackOptions {
            create_topics: false,
            ..StackOptions::default()
        },
    );
    stack
        .broker
        .create_topic(&stack.topic("crm.contacts.v1"), 3, &[]);
    stack
        .broker
        .create_topic(&stack.topic("crm.engagements.v1"), 4, &[]);
    stack.create_topics(3);
    let (mut proc, _) = stack.start();
    let status = proc.wait_exit(Duration::from_secs(60));
    assert!(!status.success());
    let log = proc.log_text();
    assert!(
        log.contains("must have the same number of partitions")
            && log.contains("crm.contacts.v1 has 3")
            && log.contains("crm.engagements.v1 has 4"),
        "{log}"
    );
}

#[test]
fn an_assignment_that_splits_a_task_stops_the_processor() {
    let stack = Stack::new("split", &always_route());
    stack.gen("200", "0.0");
    let (mut proc, metrics_url) = stack.start();
    wait_ready(&proc, &metrics_url);
    // Another application joins the group with only the engagements topic: range gives it
    // half of the engagements partitions, so leadflow keeps contacts:p without engagements:p.
    let group = stack.application_id();
    let intruder: BaseConsumer = stack
        .broker
        .client()
        .set("group.id", &group)
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    intruder
        .subscribe(&[&stack.topic("crm.engagements.v1")])
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while proc.is_running() && std::time::Instant::now() < deadline {
        let _ = intruder.poll(Duration::from_millis(100));
    }
    let status = proc.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    let log = proc.log_text();
    assert!(log.contains("only half of some tasks"), "{log}");
}

#[test]
fn guarantees_and_impossible_limits_are_refused_before_touching_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("127.0.0.1:{}", common::free_port());
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/lead-routing.yaml");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--topology",
            topology,
            "--bootstrap-servers",
            &closed,
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = leadflow(&args);
        assert!(!ok, "{err}");
        assert!(
            !err.contains("Connection refused") && !err.contains("BrokerTransportFailure"),
            "it tried Kafka first:\n{err}"
        );
        err
    };
    let err = run(&["--kafka", "enable.auto.commit=true"]);
    assert!(
        err.contains("--kafka: `enable.auto.commit` cannot be set"),
        "{err}"
    );
    let props = dir.path().join("client.properties");
    std::fs::write(
        &props,
        "# ours\nsecurity.protocol=PLAINTEXT\ngroup.id=my-group\nsasl.password=hunter2-secret\n",
    )
    .unwrap();
    let err = run(&["--kafka-config", props.to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:3: `group.id` cannot be set", props.display()))
            && err.contains("application_id"),
        "{err}"
    );
    let err = run(&["--kafka", "message.max.bytes=500000"]);
    assert!(
        err.contains("limits.max_record_bytes") && err.contains("483616"),
        "{err}"
    );
    std::fs::write(&props, "sasl.password hunter2-secret\n").unwrap();
    let err = run(&["--kafka-config", props.to_str().unwrap()]);
    assert!(err.contains(":1: ") && !err.contains("hunter2"), "{err}");
}

#[test]
fn a_client_that_cannot_be_built_names_its_cause() {
    let closed = format!("127.0.0.1:{}", common::free_port());
    let (ok, _, err) = leadflow(&[
        "run",
        "--topology",
        concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/lead-routing.yaml"),
        "--bootstrap-servers",
        &closed,
        "--metrics-addr",
        "127.0.0.1:0",
        "--kafka",
        "security.protocol=SASL_PLAINTEXT",
        "--kafka",
        "sasl.mechanisms=GSSAPI",
    ]);
    assert!(!ok);
    assert!(err.contains("GSSAPI"), "the cause is missing:\n{err}");
    assert!(!err.contains("loader stopped"), "{err}");
}

/// Two instances starting side by side: one creates the changelog topics and both read their
/// `max.message.bytes` a moment later, while the broker is still busy creating others (its
/// first transactional producer makes it create `__transaction_state`, 50 partitions) and
/// does not know the new ones yet. Each round uses new topics, created right behind a
/// 50-partition one; the read must wait them out, not fail the start.
#[test]
fn the_configuration_of_changelogs_created_a_moment_ago_is_read() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let stack = Stack::with(
        "fresh-config",
        &always_route(),
        StackOptions {
            create_topics: false,
            ..StackOptions::default()
        },
    );
    let settings = stack.broker.settings();
    let stores = leadflow::state::changelog::STORES;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin: AdminClient<DefaultClientContext> = stack.broker.client().create().unwrap();
    for round in 0..5 {
        let application_id = format!("{}round-{round}", stack.prefix);
        let busy = format!("{}busy-{round}", stack.prefix);
        let limits = runtime.block_on(async {
            let busy = [NewTopic::new(&busy, 50, TopicReplication::Fixed(1))];
            let (busy, created) = tokio::join!(
                admin.create_topics(&busy, &AdminOptions::new()),
                leadflow::kafka::admin::ensure_changelogs(
                    &settings,
                    &application_id,
                    3,
                    Duration::from_secs(3600),
                    2_000_000,
                )
            );
            busy.unwrap();
            assert_eq!(created.unwrap().len(), stores.len());
            let topics: Vec<String> = stores
                .iter()
                .map(|cf| leadflow::state::changelog::topic(&application_id, *cf))
                .collect();
            leadflow::kafka::admin::max_message_bytes(&settings, &topics)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e:#}"))
        });
        assert_eq!(limits.len(), stores.len(), "round {round}: {limits:?}");
        assert!(
            limits.values().all(|bytes| *bytes == 2_000_000),
            "round {round}: {limits:?}"
        );
    }
}
