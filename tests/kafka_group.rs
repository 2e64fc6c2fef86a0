//! Several instances in one group, under churn, decide every event exactly as one instance
//! alone does: no decision computed from missing or stale state after a task moved.
//!
//! The same traffic (duplicates and out-of-order events included) is processed twice: by a
//! single instance (the reference, its own application id) and by a group that loses a
//! member to kill -9, gains one, and has one restart so that its tasks come back to a former
//! owner. The verifier compares, per event_id, what depends on state: priority, queue,
//! owner, score, reasons, account and engagement counts.
//!
//! Under at-least-once an event may be decided twice (a kill -9 replays), always alike; under
//! exactly-once the readers (`read_committed`) see every decision, late record and DLQ record
//! exactly once.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::stack::{metric, routed_lead, rules, Stack, StackOptions};
use common::wait_until;
use leadflow::model::RoutedLead;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

const ROUTED: [&str; 3] = ["leads.routed.p0", "leads.routed.p1", "leads.routed.p2"];

/// What a decision says that depends on the state it was computed from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Verdict {
    priority: String,
    queue: String,
    owner: Option<String>,
    score: i32,
    reasons: Vec<String>,
    account: Option<String>,
    engagements_24h: i32,
    engagements_7d: i32,
}

impl From<&RoutedLead> for Verdict {
    fn from(l: &RoutedLead) -> Verdict {
        Verdict {
            priority: l.priority.clone(),
            queue: l.queue.clone(),
            owner: l.owner_rep_id.clone(),
            score: l.score,
            reasons: l.reasons.clone(),
            account: l.account_id.clone(),
            engagements_24h: l.engagements_24h,
            engagements_7d: l.engagements_7d,
        }
    }
}

/// The next offset of every partition of the routed topics.
type Ends = HashMap<(String, i32), i64>;

/// Records of `topics` written at or after `from` (all of them without), and the new ends.
fn since(stack: &Stack, topics: &[&str], from: &Ends) -> (Vec<OwnedMessage>, Ends) {
    let mut records = Vec::new();
    let mut ends = Ends::new();
    for t in topics {
        let topic = stack.topic(t);
        for m in stack.broker.read_all(&topic) {
            let key = (topic.clone(), m.partition());
            let end = ends.entry(key.clone()).or_insert(0);
            *end = (*end).max(m.offset() + 1);
            if m.offset() >= from.get(&key).copied().unwrap_or(0) {
                records.push(m);
            }
        }
    }
    (records, ends)
}

/// Routed leads written at or after `from`, and the new ends.
fn routed_since(stack: &Stack, from: &Ends) -> (Vec<RoutedLead>, Ends) {
    let (records, ends) = since(stack, &ROUTED, from);
    (records.iter().map(routed_lead).collect(), ends)
}

/// How often each input record (late events by event_id, DLQ records by source offset) is
/// in the late and DLQ topics at or after `from`.
fn side_outputs(stack: &Stack, from: &Ends) -> BTreeMap<String, usize> {
    let (records, _) = since(stack, &["leads.late", "leads.dlq"], from);
    let mut seen = BTreeMap::new();
    for m in &records {
        let id = match common::header(m, "event_id") {
            Some(event) => format!("late {event}"),
            None => format!(
                "dlq {}:{}",
                common::header(m, "source.partition").unwrap_or_default(),
                common::header(m, "source.offset").unwrap_or_default()
            ),
        };
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

/// Records no decoder accepts, spread over the contacts' partitions: each goes to the DLQ.
fn produce_garbage(stack: &Stack, count: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        stack.broker.client().create().unwrap();
    let topic = stack.topic("crm.contacts.v1");
    for i in 0..count {
        let key = format!("ct_garbage_{i}");
        let r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic)
            .key(key.as_bytes())
            .payload(b"{\"not\":\"avro\"}");
        producer.send(r).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Every verdict given per event_id (an event decided twice, at least once, has two).
fn verdicts(leads: &[RoutedLead]) -> BTreeMap<String, Vec<Verdict>> {
    let mut out: BTreeMap<String, Vec<Verdict>> = BTreeMap::new();
    for l in leads {
        out.entry(l.event_id.clone()).or_default().push(l.into());
    }
    out
}

fn wait_metric(url: &str, name: &str, at_least: f64, what: &str) {
    wait_until(what, Duration::from_secs(120), || {
        metric(url, name, "") >= at_least
    });
}

#[test]
fn a_group_under_churn_decides_every_event_as_one_instance_does() {
    churn("at_least_once", 0);
}

#[test]
fn exactly_once_a_group_under_churn_emits_every_output_once() {
    churn("exactly_once", 0);
}

/// Standby copies are kept by tailing changelogs; a task that moves to its standby must be
/// decided from state as exact as a full restore's.
#[test]
fn with_standby_replicas_a_group_under_churn_decides_every_event_as_one_instance_does() {
    churn("at_least_once", 1);
}

fn churn(guarantee: &str, standby_replicas: usize) {
    let exactly_once = guarantee == "exactly_once";
    let stack = Stack::with(
        "group",
        &rules("rules/routing.rhai"),
        StackOptions {
            partitions: 6,
            ..StackOptions::default()
        },
    );
    let topology = std::fs::read_to_string(&stack.topology).unwrap();
    let topology = topology.replace(
        "guarantee: at_least_once",
        &format!("guarantee: {guarantee}"),
    );
    let topology = topology.replace(
        "standby_replicas: 0",
        &format!("standby_replicas: {standby_replicas}"),
    );
    assert!(topology.contains(&format!("guarantee: {guarantee}")));
    assert!(topology.contains(&format!("standby_replicas: {standby_replicas}")));
    std::fs::write(&stack.topology, topology).unwrap();
    stack.gen_with(
        "12000",
        "0.05",
        &[
            "--out-of-order",
            "0.05",
            "--late",
            "0.01",
            "--lateness-bound",
            "5m",
        ],
    );
    produce_garbage(&stack, 24);
    let inputs = stack.broker.read_all(&stack.topic("crm.contacts.v1")).len()
        + stack
            .broker
            .read_all(&stack.topic("crm.engagements.v1"))
            .len();
    let app = stack.application_id();

    // The reference: one instance, its own application id, from the first record.
    let reference_app = format!("{app}-reference");
    let reference_dir = stack.dir.path().join("reference");
    let (mut reference, url) =
        stack.start_in(&reference_dir, &["--application-id", &reference_app], &[]);
    wait_metric(
        &url,
        "leadflow_record_latency_seconds_count",
        inputs as f64,
        "the reference completes every input",
    );
    let status = reference.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", reference.log_text());
    let (reference_leads, _) = routed_since(&stack, &Ends::new());
    let (_, after_reference) = since(
        &stack,
        &[ROUTED.as_slice(), &["leads.late", "leads.dlq"]].concat(),
        &Ends::new(),
    );
    let want = verdicts(&reference_leads);
    let want_side = side_outputs(&stack, &Ends::new());
    assert!(
        want_side.values().all(|n| *n == 1),
        "the reference wrote a late or DLQ record twice"
    );
    let dlq_wanted = want_side.keys().filter(|k| k.starts_with("dlq")).count();
    assert_eq!(dlq_wanted, 24, "{want_side:?}");
    let late_wanted = want_side.keys().filter(|k| k.starts_with("late")).count();
    assert!(late_wanted >= 20, "only {late_wanted} late events");
    assert!(want.len() > 1000, "only {} decisions", want.len());
    assert!(
        want.values().all(|v| v.len() == 1),
        "the reference decided an event twice"
    );

    // The group: three instances, then kill -9 one, add a fourth, restart one.
    let dir = |name: &str| stack.dir.path().join(name);
    let (mut a, url_a) = stack.start_in(&dir("a"), &[], &[]);
    let (mut b, url_b) = stack.start_in(&dir("b"), &[], &[]);
    let (mut c, url_c) = stack.start_in(&dir("c"), &[], &[]);
    let done = |url: &str| metric(url, "leadflow_record_latency_seconds_count", "");
    wait_until("the group makes progress", Duration::from_secs(120), || {
        done(&url_a) + done(&url_b) >= inputs as f64 / 5.0
    });
    if standby_replicas > 0 {
        // The kill must find standby copies to move to. Each task's copy goes to a member
        // chosen by hash (one of the three may get none), once its tailer has seen the group
        // stable (it looks every few seconds): wait for a copy of every task.
        wait_until(
            "a standby copy of every task",
            Duration::from_secs(60),
            || {
                let kept: f64 = [&url_a, &url_b, &url_c]
                    .iter()
                    .map(|url| metric(url, "leadflow_standby_tasks", ""))
                    .sum();
                kept >= (6 * standby_replicas) as f64
            },
        );
    }
    b.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
    let (mut d, url_d) = stack.start_in(&dir("d"), &[], &[]);
    wait_metric(
        &url_d,
        "leadflow_restore_seconds_count",
        1.0,
        "d gets tasks",
    );
    let status = a.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", a.log_text());
    let (mut a, _) = stack.start_in(&dir("a"), &[], &[]);

    // Until every event the reference decided is decided by the group too.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let got = loop {
        let (leads, _) = routed_since(&stack, &after_reference);
        let got = verdicts(&leads);
        let complete = want.keys().all(|id| got.contains_key(id)) && {
            let side = side_outputs(&stack, &after_reference);
            want_side.keys().all(|k| side.contains_key(k))
        };
        if complete || std::time::Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for proc in [&mut a, &mut c, &mut d] {
        let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
        assert!(status.success(), "{}", proc.log_text());
    }
    let logs: Vec<(&str, String)> = vec![
        ("reference", reference.log_text()),
        ("b (killed)", b.log_text()),
        ("c", c.log_text()),
        ("d", d.log_text()),
        ("a (restarted)", a.log_text()),
    ];
    let missing: Vec<&String> = want.keys().filter(|id| !got.contains_key(*id)).collect();
    let extra: Vec<&String> = got.keys().filter(|id| !want.contains_key(*id)).collect();
    let wrong: Vec<String> = want
        .iter()
        .filter_map(|(id, w)| {
            let g = got.get(id)?;
            g.iter()
                .any(|v| v != &w[0])
                .then(|| format!("{id}: reference {:?}, group {g:?}", w[0]))
        })
        .collect();
    let enforced: Vec<String> = logs
        .iter()
        .map(|(name, log)| {
            let n = log.matches("enforced processing").count();
            format!("{name} {n}")
        })
        .collect();
    eprintln!(
        "waits for an empty input that ran out: {}",
        enforced.join(", ")
    );
    for (name, log) in &logs {
        // Bounded (runtime::close), so not a failure; but worth knowing where it hung.
        if let Some(line) = log.lines().find(|l| l.contains("closing takes too long")) {
            eprintln!("{name} did not close in time: {line}");
        }
    }
    let twice = got.values().filter(|v| v.len() > 1).count();
    let side = side_outputs(&stack, &after_reference);
    let side_missing = want_side.keys().filter(|k| !side.contains_key(*k)).count();
    let side_twice = side.values().filter(|n| **n > 1).count();
    eprintln!(
        "group under churn ({guarantee}, {standby_replicas} standby): {} events decided, {twice} twice, {} missing, {} \
         extra, {} different; late and DLQ records: {} of {} ({side_missing} missing, \
         {side_twice} twice)",
        got.len(),
        missing.len(),
        extra.len(),
        wrong.len(),
        side.len(),
        want_side.len(),
    );
    if twice > 0 {
        // Under at-least-once a crash may emit a decision again; where they fall tells a
        // replay of the last commit's worth from a task decided again from older state.
        let (records, _) = since(&stack, &ROUTED, &after_reference);
        let mut by_partition: BTreeMap<i32, usize> = BTreeMap::new();
        for m in &records {
            let lead = routed_lead(m);
            if got.get(&lead.event_id).is_some_and(|v| v.len() > 1) {
                *by_partition.entry(m.partition()).or_default() += 1;
            }
        }
        eprintln!(
            "decisions of events decided more than once, by output partition: {by_partition:?}"
        );
        for (name, log) in &logs {
            for line in log.lines().filter(|l| {
                l.contains("task restored from its changelogs") || l.contains("standby tasks")
            }) {
                eprintln!("  {name}: {line}");
            }
        }
    }
    if !(missing.is_empty() && extra.is_empty() && wrong.is_empty()) {
        let differing = want.iter().filter_map(|(id, w)| {
            got.get(id)
                .is_some_and(|g| g.iter().any(|v| v != &w[0]))
                .then_some(id)
        });
        let ids: Vec<&String> = missing
            .iter()
            .chain(&extra)
            .copied()
            .take(4)
            .chain(differing.take(4))
            .collect();
        eprintln!("{}", explain(&stack, &ids, &logs));
    }
    assert!(
        missing.is_empty(),
        "{} events never decided: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        extra.is_empty(),
        "decisions the reference did not make: {:?}",
        &extra[..extra.len().min(10)]
    );
    assert!(
        wrong.is_empty(),
        "{} decisions differ from the reference:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
    assert_eq!(side_missing, 0, "late or DLQ records missing");
    let side_extra: Vec<&String> = side
        .keys()
        .filter(|k| !want_side.contains_key(*k))
        .collect();
    assert!(
        side_extra.is_empty(),
        "late or DLQ records the reference did not write: {side_extra:?}"
    );
    if exactly_once {
        let twice_ids: Vec<&String> = got
            .iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(id, _)| id)
            .take(10)
            .collect();
        assert_eq!(
            twice, 0,
            "decisions seen twice under exactly-once: {twice_ids:?}"
        );
        assert_eq!(
            side_twice, 0,
            "late or DLQ records seen twice under exactly-once"
        );
    }
}

/// Where each event is in the inputs, what every processor's trace says of it and of the other
/// records of its contact, and what the processors logged of its task (restores, enforced
/// processing): enough to tell a decision made out of order from one made on lost state.
fn explain(stack: &Stack, ids: &[&String], logs: &[(&str, String)]) -> String {
    use leadflow::codec::{decode, unframe, RegistryClient, SchemaKind};
    use leadflow::model::{ContactEvent, EngagementEvent};
    struct Input {
        topic: &'static str,
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        event_id: String,
        contact: String,
        occurred_at: i64,
        disorder: Option<String>,
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(&stack.registry.url).unwrap();
    let mut inputs = Vec::new();
    for t in ["crm.contacts.v1", "crm.engagements.v1"] {
        for m in stack.broker.read_all(&stack.topic(t)) {
            let Some(Ok((id, datum))) = m.payload().map(unframe) else {
                continue;
            };
            let Ok(writer) = rt.block_on(client.schema_by_id(id)) else {
                continue;
            };
            let decoded = if t.contains("contacts") {
                decode::<ContactEvent>(&writer, SchemaKind::ContactEvent, datum)
                    .map(|e| (e.envelope, e.payload.contact_id))
            } else {
                decode::<EngagementEvent>(&writer, SchemaKind::EngagementEvent, datum)
                    .map(|e| (e.envelope, e.payload.contact_id))
            };
            let Ok((envelope, contact)) = decoded else {
                continue;
            };
            inputs.push(Input {
                topic: t,
                partition: m.partition(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis(),
                event_id: envelope.event_id,
                contact,
                occurred_at: envelope.occurred_at,
                disorder: common::header(&m, leadflow::gen::DISORDER_HEADER),
            });
        }
    }
    let traces = |out: &mut String, i: &Input, indent: &str| {
        let needle = format!("partition={} offset={} ", i.partition, i.offset);
        for (name, log) in logs {
            for line in log.lines() {
                if line.contains(&needle) && line.contains(i.topic) && line.contains("processed") {
                    let tail = &line[line.len().saturating_sub(200)..];
                    out.push_str(&format!("{indent}{name}: {tail}\n"));
                }
            }
        }
    };
    let mut out = String::new();
    let mut tasks = std::collections::BTreeSet::new();
    for i in inputs.iter().filter(|i| ids.contains(&&i.event_id)) {
        tasks.insert(i.partition);
        out.push_str(&format!(
            "{}: {} partition {} offset {} contact {} occurred_at {} timestamp {:?} disorder {:?}\n",
            i.event_id,
            i.topic,
            i.partition,
            i.offset,
            i.contact,
            i.occurred_at,
            i.timestamp,
            i.disorder
        ));
        traces(&mut out, i, "    ");
        for other in inputs
            .iter()
            .filter(|o| o.contact == i.contact && o.event_id != i.event_id)
        {
            out.push_str(&format!(
                "    same contact: {} offset {} timestamp {:?} occurred_at {}\n",
                other.topic, other.offset, other.timestamp, other.occurred_at
            ));
            traces(&mut out, other, "        ");
        }
    }
    for (name, log) in logs {
        for line in log.lines() {
            let of_task = tasks.iter().any(|p| {
                line.contains(&format!("task={p} ")) || line.contains(&format!("partition={p} "))
            });
            let about = line.contains("enforced processing") || line.contains("restored");
            if about && of_task {
                let tail = &line[line.len().saturating_sub(220)..];
                out.push_str(&format!("{name}: {tail}\n"));
            }
        }
    }
    out
}
