//! SLA tracking through a real broker: leadflow routes generated contacts, a stand-in CRM
//! acknowledges most decisions in time, some late and some never, and the breaches and
//! escalations on their topics are exactly the expected ones, each once: with one instance,
//! and under exactly-once with an instance killed and another joining in the middle. Then
//! `leadflow gen --acks` as the delivery worker.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::stack::{metric, rules, Stack};
use common::wait_until;
use leadflow::codec::{canonical, decode, Encoder, RegistryClient, SchemaKind};
use leadflow::model::{Envelope, LeadAck, LeadAckEvent, RoutedLead, SlaBreach};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// The SLA window of every priority in these tests.
const WINDOW_SECS: u64 = 20;

/// A stack whose topology tracks SLAs with short windows and one escalation level.
fn sla_stack(test: &str) -> Stack {
    let script = rules("tests/fixtures/route_all.rhai");
    let stack = Stack::new(test, &script);
    let window = format!("{WINDOW_SECS}s");
    let yaml = common::prefixed_topology_with_sla(&stack.prefix, &script)
        .replace("max_record_bytes: 1MiB", "max_record_bytes: 64KiB")
        .replace("  p0: 1m\n", &format!("  p0: {window}\n"))
        .replace("  p1: 5m\n", &format!("  p1: {window}\n"))
        .replace("  p2: 30m\n", &format!("  p2: {window}\n"))
        .replace("max_escalations: 2", "max_escalations: 1");
    assert!(yaml.contains(&format!("  p2: {window}\n")), "{yaml}");
    std::fs::write(&stack.topology, yaml).unwrap();
    stack
}

struct Crm {
    producer: ThreadedProducer<DefaultProducerContext>,
    contacts: (String, Encoder),
    acks: (String, Encoder),
}

impl Crm {
    fn new(stack: &Stack) -> Crm {
        let client = RegistryClient::new(&stack.registry.url).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let encoder = |topic: String, kind: SchemaKind| {
            let id = rt
                .block_on(client.register(&leadflow::topics::value_subject(&topic), kind.source()))
                .unwrap();
            (topic, Encoder::new(kind, id).unwrap())
        };
        Crm {
            producer: stack.broker.client().create().unwrap(),
            contacts: encoder(stack.topic("crm.contacts.v1"), SchemaKind::ContactEvent),
            acks: encoder(stack.topic("leads.acks"), SchemaKind::LeadAckEvent),
        }
    }

    fn send(&self, topic: &str, key: &str, value: Vec<u8>) {
        self.producer
            .send(BaseRecord::to(topic).key(key).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }

    fn contact(&self, contact_id: &str) {
        let event = common::events::contact(
            &format!("evt-{contact_id}"),
            contact_id,
            common::events::now_ms(),
        );
        self.send(
            &self.contacts.0,
            contact_id,
            self.contacts.1.encode(&event).unwrap(),
        );
    }

    fn ack(&self, decision: &RoutedLead, action: &str) {
        let now = common::events::now_ms();
        let ack = LeadAckEvent {
            envelope: Envelope {
                event_id: format!("ack-{}-{action}", decision.decision_id),
                event_type: "Lead.acknowledged".into(),
                aggregate_id: decision.contact_id.clone(),
                source: "crm:test".into(),
                occurred_at: now,
                delivery_attempt: 1,
                schema_version: "1".into(),
                correlation_id: None,
            },
            payload: LeadAck {
                decision_id: decision.decision_id.clone(),
                contact_id: decision.contact_id.clone(),
                rep_id: "rep_test".into(),
                action: action.into(),
                occurred_at: now,
            },
        };
        self.send(
            &self.acks.0,
            &decision.contact_id,
            self.acks.1.encode(&ack).unwrap(),
        );
    }

    fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).unwrap();
    }
}

fn breaches(stack: &Stack) -> Vec<SlaBreach> {
    stack
        .broker
        .read_all(&stack.topic("leads.escalations"))
        .iter()
        .map(|m| {
            let value = m.payload().unwrap();
            decode(
                canonical().get(SchemaKind::SlaBreach),
                SchemaKind::SlaBreach,
                &value[5..],
            )
            .unwrap()
        })
        .collect()
}

/// The breached decision ids of `level`, counted.
fn breached_at_level(all: &[SlaBreach], level: i32) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for b in all.iter().filter(|b| b.level == level) {
        *out.entry(b.decision_id.clone()).or_default() += 1;
    }
    out
}

#[test]
fn acks_in_time_late_and_never_give_exactly_the_expected_breaches_and_escalations() {
    const N: usize = 40;
    let stack = sla_stack("sla-acks");
    let (mut proc, metrics_url) = stack.start();
    let crm = Crm::new(&stack);
    let decisions = first_decisions(&stack, &crm, N);
    let (on_time, rest) = decisions.split_at(N * 8 / 10);
    let (late, never) = rest.split_at(N / 10);
    for d in on_time {
        crm.ack(
            d,
            if d.score % 2 == 0 {
                "accepted"
            } else {
                "contacted"
            },
        );
    }
    crm.flush();

    // The late and unacknowledged ones breach once their deadline passes; the late ones are
    // then acknowledged, which stops their escalation.
    let overdue: HashSet<&str> = rest.iter().map(|d| d.decision_id.as_str()).collect();
    wait_until(
        "a first breach of every overdue decision",
        Duration::from_secs(WINDOW_SECS + 60),
        || breached_at_level(&breaches(&stack), 1).len() >= overdue.len(),
    );
    for d in late {
        crm.ack(d, "accepted");
    }
    crm.flush();
    wait_until(
        "the escalations of the unacknowledged to breach, and nothing left open",
        Duration::from_secs(WINDOW_SECS + 60),
        || {
            breached_at_level(&breaches(&stack), 2).len() >= never.len()
                && metric(&metrics_url, "leadflow_sla_open_decisions", "") == 0.0
                && metric(&metrics_url, "leadflow_time_to_ack_seconds_count", "")
                    >= (on_time.len() + late.len()) as f64
        },
    );

    expect_each_breach_and_escalation_once(&stack, rest, never);
    assert_eq!(
        metric(&metrics_url, "leadflow_time_to_ack_seconds_count", ""),
        (on_time.len() + late.len()) as f64
    );
    assert_eq!(
        metric(&metrics_url, "leadflow_acks_total", "result=\"on_time\""),
        on_time.len() as f64
    );
    assert_eq!(
        metric(&metrics_url, "leadflow_acks_total", "result=\"late\""),
        late.len() as f64
    );
    expect_latest_decisions_on_the_assignments_topic(&stack);
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", proc.log_text());
}

/// Whether the application's group has committed the end of every partition of the
/// acknowledgements topic.
fn acks_committed(stack: &Stack) -> bool {
    let consumer: BaseConsumer = stack
        .broker
        .client()
        .set("group.id", stack.application_id())
        .create()
        .unwrap();
    let topic = stack.topic("leads.acks");
    let timeout = Duration::from_secs(5);
    let Ok(metadata) = consumer.fetch_metadata(Some(&topic), timeout) else {
        return false;
    };
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, timeout) else {
        return false;
    };
    committed.elements().iter().all(|e| {
        let end = consumer
            .fetch_watermarks(&topic, e.partition(), timeout)
            .map_or(i64::MAX, |(_, high)| high);
        match e.offset() {
            Offset::Offset(o) => o >= end,
            _ => end == 0,
        }
    })
}

/// `leads.assignments` holds every decision once, and each contact's last record there is
/// its latest decision (an escalation, for a lead that breached).
fn expect_latest_decisions_on_the_assignments_topic(stack: &Stack) {
    let decisions = stack.outputs().decisions;
    let assignments: Vec<RoutedLead> = stack
        .broker
        .read_all(&stack.topic("leads.assignments"))
        .iter()
        .map(|m| {
            let lead = common::stack::routed_lead(m);
            assert_eq!(m.key(), Some(lead.contact_id.as_bytes()));
            lead
        })
        .collect();
    let mut ids: Vec<&str> = assignments.iter().map(|a| a.decision_id.as_str()).collect();
    let mut expected: Vec<&str> = decisions.iter().map(|d| d.decision_id.as_str()).collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "every decision once on the assignments topic"
    );
    // A contact's records are on one partition, in decision order: its last is its latest.
    let mut last: BTreeMap<&str, &RoutedLead> = BTreeMap::new();
    for a in &assignments {
        last.insert(a.contact_id.as_str(), a);
    }
    let mut latest: BTreeMap<&str, &RoutedLead> = BTreeMap::new();
    for d in &decisions {
        let entry = latest.entry(d.contact_id.as_str()).or_insert(d);
        if d.routed_at > entry.routed_at {
            *entry = d;
        }
    }
    assert_eq!(last.len(), latest.len());
    for (contact, d) in latest {
        assert_eq!(last[contact].decision_id, d.decision_id, "{contact}");
    }
    assert!(
        last.values().any(|a| a.queue == "team-leads"),
        "escalations are assignments too"
    );
}

/// Sends `n` new contacts and returns each one's first decision, by contact id.
fn first_decisions(stack: &Stack, crm: &Crm, n: usize) -> Vec<RoutedLead> {
    let contacts: Vec<String> = (0..n).map(|i| format!("ct_sla_{i:03}")).collect();
    for c in &contacts {
        crm.contact(c);
    }
    crm.flush();
    let mut first: BTreeMap<String, RoutedLead> = BTreeMap::new();
    wait_until(
        "a decision for every contact",
        Duration::from_secs(60),
        || {
            for d in stack.outputs().decisions {
                if d.event_id == format!("evt-{}", d.contact_id) && d.queue.starts_with("q-") {
                    first.insert(d.contact_id.clone(), d);
                }
            }
            first.len() == n
        },
    );
    first.into_values().collect()
}

/// The breaches on the escalations topic are exactly one per overdue (late or unacknowledged)
/// decision at level 1, each re-routed to team-leads once, and one per escalation of the
/// unacknowledged at level 2, recorded only (max_escalations 1).
fn expect_each_breach_and_escalation_once(
    stack: &Stack,
    rest: &[RoutedLead],
    never: &[RoutedLead],
) {
    let overdue: HashSet<&str> = rest.iter().map(|d| d.decision_id.as_str()).collect();
    let all = breaches(stack);
    let level1 = breached_at_level(&all, 1);
    assert_eq!(
        level1.keys().map(String::as_str).collect::<HashSet<_>>(),
        overdue,
        "first breaches: exactly the late and the unacknowledged"
    );
    assert!(level1.values().all(|n| *n == 1), "{level1:?}");
    let escalated: BTreeMap<&str, &str> = all
        .iter()
        .filter(|b| b.level == 1)
        .map(|b| {
            let id = b
                .escalated_decision_id
                .as_deref()
                .expect("level 1 re-routes");
            (b.decision_id.as_str(), id)
        })
        .collect();
    let outputs = stack.outputs().decisions;
    let escalations: Vec<&RoutedLead> =
        outputs.iter().filter(|d| d.queue == "team-leads").collect();
    assert_eq!(
        escalations.len(),
        overdue.len(),
        "one re-route per first breach"
    );
    for e in &escalations {
        assert!(escalated.values().any(|id| *id == e.decision_id), "{e:?}");
        assert_eq!(e.priority, "P0");
    }
    let level2 = breached_at_level(&all, 2);
    let expected2: HashSet<&str> = never
        .iter()
        .map(|d| escalated[d.decision_id.as_str()])
        .collect();
    assert_eq!(
        level2.keys().map(String::as_str).collect::<HashSet<_>>(),
        expected2,
        "second breaches: the escalations of the unacknowledged only"
    );
    assert!(level2.values().all(|n| *n == 1), "{level2:?}");
    assert!(
        all.iter()
            .filter(|b| b.level == 2)
            .all(|b| b.escalated_decision_id.is_none()),
        "max_escalations 1: the second breach is recorded only"
    );
    assert_eq!(all.len(), overdue.len() + never.len(), "{all:?}");
}

/// The same acknowledgements under exactly-once, with two instances: once every decision is
/// made and the in-time acknowledgements are applied, one instance is killed (kill -9) and a
/// third joins, so the killed one's tasks, with their timers, move (restored from the sla
/// store's changelog) while their deadlines are still ahead. Breaches and escalations are the
/// same, each exactly once; the survivors' time-to-ack histograms count exactly the
/// acknowledgements they applied.
#[test]
fn breaches_and_escalations_stay_exactly_once_across_a_kill_and_a_rebalance() {
    const N: usize = 40;
    let stack = sla_stack("sla-kill");
    let yaml = std::fs::read_to_string(&stack.topology)
        .unwrap()
        .replace("guarantee: at_least_once", "guarantee: exactly_once");
    assert!(yaml.contains("guarantee: exactly_once"));
    std::fs::write(&stack.topology, yaml).unwrap();
    let dir = |name: &str| stack.dir.path().join(format!("state-{name}"));
    let (mut a, url_a) = stack.start_in(&dir("a"), &[], &[]);
    let (mut b, url_b) = stack.start_in(&dir("b"), &[], &[]);
    let crm = Crm::new(&stack);
    let decisions = first_decisions(&stack, &crm, N);
    let (on_time, rest) = decisions.split_at(N * 8 / 10);
    let (late, never) = rest.split_at(N / 10);
    for d in on_time {
        crm.ack(d, "accepted");
    }
    crm.flush();
    // Applied, and committed with the transactions that applied them: the kill must not
    // undo an acknowledgement the test counts as in time.
    let applied = |url: &str| metric(url, "leadflow_acks_total", "result=\"on_time\"");
    wait_until(
        "both instances to apply and commit the in-time acknowledgements",
        Duration::from_secs(WINDOW_SECS / 2),
        || applied(&url_a) + applied(&url_b) == on_time.len() as f64 && acks_committed(&stack),
    );
    let applied_by_b = applied(&url_b);
    a.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
    let (mut c, url_c) = stack.start_in(&dir("c"), &[], &[]);

    let overdue: HashSet<&str> = rest.iter().map(|d| d.decision_id.as_str()).collect();
    wait_until(
        "a first breach of every overdue decision",
        Duration::from_secs(WINDOW_SECS + 90),
        || breached_at_level(&breaches(&stack), 1).len() >= overdue.len(),
    );
    for d in late {
        crm.ack(d, "accepted");
    }
    crm.flush();
    let survivors = [&url_b, &url_c];
    let sum = |name: &str, filter: &str| -> f64 {
        survivors.iter().map(|u| metric(u, name, filter)).sum()
    };
    wait_until(
        "the escalations of the unacknowledged to breach, and nothing left open",
        Duration::from_secs(WINDOW_SECS + 90),
        || {
            breached_at_level(&breaches(&stack), 2).len() >= never.len()
                && sum("leadflow_sla_open_decisions", "") == 0.0
                && sum("leadflow_acks_total", "result=\"late\"") >= late.len() as f64
        },
    );
    expect_each_breach_and_escalation_once(&stack, rest, never);
    assert_eq!(
        sum("leadflow_acks_total", "result=\"late\""),
        late.len() as f64,
        "each late acknowledgement applied once"
    );
    assert_eq!(
        sum("leadflow_acks_total", "result=\"on_time\""),
        applied_by_b
    );
    assert_eq!(
        sum("leadflow_time_to_ack_seconds_count", ""),
        applied_by_b + late.len() as f64,
        "the survivors' histograms count the acknowledgements they applied"
    );
    for (name, p) in [("b", &mut b), ("c", &mut c)] {
        let status = p.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
        assert!(status.success(), "{name}: {}", p.log_text());
    }
}

/// `leadflow gen --acks` as the delivery worker: it acknowledges about the requested share
/// of the decisions made while it runs, each named decision exists, its summary matches the
/// records it wrote, and the processor applies every one of them (all in time: the delays,
/// at most 5 x 3s, stay within the 20s window).
#[test]
fn gen_acks_acknowledges_the_requested_share_of_the_decisions_made_while_it_runs() {
    let stack = sla_stack("sla-gen");
    let (mut proc, url) = stack.start();
    let printed = stack.gen_printing(
        "300",
        &["--acks", "0.8", "--ack-delay", "3s", "--ack-idle", "10s"],
    );
    // "  P0  decisions in_time late never" rows after the "acks" heading.
    let rows: Vec<Vec<u64>> = printed
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("acks"))
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(|n| n.parse().unwrap())
                .collect()
        })
        .collect();
    assert!(
        !rows.is_empty(),
        "no acknowledgement summary in:\n{printed}"
    );
    let column = |i: usize| rows.iter().map(|r| r[i]).sum::<u64>();
    let (read, in_time, late, never) = (column(0), column(1), column(2), column(3));
    assert_eq!(read, in_time + late + never, "{printed}");
    assert_eq!(late, 0, "delays stay within the window: {printed}");

    let acks: Vec<LeadAckEvent> = stack
        .broker
        .read_all(&stack.topic("leads.acks"))
        .iter()
        .map(|m| {
            let ack: LeadAckEvent = decode(
                canonical().get(SchemaKind::LeadAckEvent),
                SchemaKind::LeadAckEvent,
                &m.payload().unwrap()[5..],
            )
            .unwrap();
            assert_eq!(m.key(), Some(ack.payload.contact_id.as_bytes()));
            ack
        })
        .collect();
    assert_eq!(acks.len() as u64, in_time, "{printed}");
    let decisions = stack.outputs().decisions;
    // Every first decision (not an escalation) was made while gen ran, and read.
    let first = decisions
        .iter()
        .filter(|d| d.queue.starts_with("q-"))
        .count() as u64;
    assert!(
        first > 50 && read >= first,
        "{first} first decisions; {printed}"
    );
    let decided: HashSet<String> = decisions.into_iter().map(|d| d.decision_id).collect();
    for ack in &acks {
        assert!(decided.contains(&ack.payload.decision_id), "{ack:?}");
        assert!(["accepted", "contacted"].contains(&ack.payload.action.as_str()));
    }
    let share = in_time as f64 / read as f64;
    assert!(
        (0.65..0.95).contains(&share),
        "acknowledged {share:.2} of the decisions: {printed}"
    );
    wait_until(
        "the processor to apply every acknowledgement",
        Duration::from_secs(30),
        || metric(&url, "leadflow_acks_total", "") >= acks.len() as f64,
    );
    assert_eq!(
        metric(&url, "leadflow_acks_total", "result=\"on_time\""),
        acks.len() as f64
    );
    assert_eq!(
        metric(&url, "leadflow_time_to_ack_seconds_count", ""),
        acks.len() as f64
    );
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", proc.log_text());
}
