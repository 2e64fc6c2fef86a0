//! SLA tracking through a real broker: leadflow routes generated contacts, a stand-in CRM
//! acknowledges most decisions in time, some late and some never, and the breaches and
//! escalations on their topics are exactly the expected ones, each once.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::stack::{metric, rules, Stack};
use common::wait_until;
use leadflow::codec::{canonical, decode, Encoder, RegistryClient, SchemaKind};
use leadflow::model::{Envelope, LeadAck, LeadAckEvent, RoutedLead, SlaBreach};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

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
    let contacts: Vec<String> = (0..N).map(|i| format!("ct_sla_{i:03}")).collect();
    for c in &contacts {
        crm.contact(c);
    }
    crm.flush();

    // Every contact's first decision, by contact.
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
            first.len() == N
        },
    );
    let decisions: Vec<RoutedLead> = first.into_values().collect();
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

    let all = breaches(&stack);
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
    let status = proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
    assert!(status.success(), "{}", proc.log_text());
}
