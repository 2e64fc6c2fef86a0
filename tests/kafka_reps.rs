//! Round robin across a kill -9 and a rebalance, against a real broker, exactly once: two
//! instances deal a stream of leads to a team of three; one is killed mid-stream and a third
//! joins. Each task's turns are committed with its records and restored with the task, so in
//! every partition of the routed topic (which holds its task's decisions in processing order)
//! the owners go round the team without a skip or a repeat, from where that task starts.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::stack::{metric, routed_lead, Stack};
use common::wait_until;
use leadflow::codec::{Encoder, RegistryClient, SchemaKind};
use leadflow::model::{Envelope, Event, Rep};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::Message;

const TEAM: [&str; 3] = ["rep_1", "rep_2", "rep_3"];
const PARTITIONS: usize = 6;
const LEADS: usize = 400;

const SCRIPT: &str = r#"
fn route(lead) {
    #{ priority: "P1", queue: "q-P1", owner: round_robin("kill-team"), reasons: ["turn"] }
}
"#;

/// Produces with Kafka's default partitioner (as leadflow's producers do), so a contact's
/// input partition is its task and its decisions' partition on the routed topic.
struct Crm {
    producer: ThreadedProducer<DefaultProducerContext>,
    encoders: BTreeMap<&'static str, Encoder>,
}

impl Crm {
    fn new(stack: &Stack) -> Crm {
        let client = RegistryClient::new(&stack.registry.url).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut encoders = BTreeMap::new();
        for (topic, kind) in [
            ("crm.contacts.v1", SchemaKind::ContactEvent),
            ("crm.reps.v1", SchemaKind::RepEvent),
        ] {
            let subject = leadflow::topics::value_subject(&stack.topic(topic));
            let id = rt
                .block_on(client.register(&subject, kind.source()))
                .unwrap();
            encoders.insert(topic, Encoder::new(kind, id).unwrap());
        }
        let producer = stack
            .broker
            .client()
            .set("partitioner", "murmur2_random")
            .create()
            .unwrap();
        Crm { producer, encoders }
    }

    fn send(&self, stack: &Stack, topic: &'static str, key: &str, value: Vec<u8>) {
        self.producer
            .send(BaseRecord::to(&stack.topic(topic)).key(key).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    }

    fn rep(&self, stack: &Stack, id: &str) {
        let now = common::events::now_ms();
        let event = Event {
            envelope: Envelope {
                event_id: format!("rep-{id}"),
                event_type: "Rep.upserted".into(),
                aggregate_id: id.into(),
                source: "crm:test".into(),
                occurred_at: now,
                delivery_attempt: 1,
                schema_version: "1".into(),
                correlation_id: None,
            },
            payload: Rep {
                rep_id: id.into(),
                name: id.into(),
                team: "kill-team".into(),
                regions: vec!["EMEA".into()],
                max_open_leads: 1_000_000,
                active: true,
                timezone: "UTC".into(),
                working_hours: None,
                updated_at: now,
            },
        };
        let value = self.encoders["crm.reps.v1"].encode(&event).unwrap();
        self.send(stack, "crm.reps.v1", id, value);
    }

    fn contact(&self, stack: &Stack, id: &str) {
        let event = common::events::contact(&format!("evt-{id}"), id, common::events::now_ms());
        let value = self.encoders["crm.contacts.v1"].encode(&event).unwrap();
        self.send(stack, "crm.contacts.v1", id, value);
    }

    fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).unwrap();
    }
}

/// The committed decisions on the routed P1 topic, per partition in offset order: (event id,
/// owner).
fn dealt(stack: &Stack) -> BTreeMap<i32, Vec<(String, String)>> {
    let mut by_partition: BTreeMap<i32, Vec<(i64, String, String)>> = BTreeMap::new();
    for m in stack.broker.read_all(&stack.topic("leads.routed.p1")) {
        let lead = routed_lead(&m);
        by_partition.entry(m.partition()).or_default().push((
            m.offset(),
            lead.event_id,
            lead.owner_rep_id.unwrap_or_else(|| "-".into()),
        ));
    }
    by_partition
        .into_iter()
        .map(|(p, mut v)| {
            v.sort();
            (p, v.into_iter().map(|(_, e, o)| (e, o)).collect())
        })
        .collect()
}

#[test]
fn round_robin_turns_survive_a_kill_and_a_rebalance_without_a_skip_or_a_repeat() {
    let scripts = tempfile::tempdir().unwrap();
    let script = scripts.path().join("round_robin.rhai");
    std::fs::write(&script, SCRIPT).unwrap();
    let stack = Stack::new("reps-kill", &script.display().to_string());
    let yaml = std::fs::read_to_string(&stack.topology)
        .unwrap()
        .replace("guarantee: at_least_once", "guarantee: exactly_once");
    assert!(yaml.contains("guarantee: exactly_once"));
    std::fs::write(&stack.topology, yaml).unwrap();
    let crm = Crm::new(&stack);
    for id in TEAM {
        crm.rep(&stack, id);
    }
    crm.flush();

    let dir = |name: &str| stack.dir.path().join(format!("state-{name}"));
    let (mut a, url_a) = stack.start_in(&dir("a"), &[], &[]);
    let (mut b, url_b) = stack.start_in(&dir("b"), &[], &[]);
    let sender = std::thread::scope(|scope| {
        let sending = scope.spawn(|| {
            for n in 0..LEADS {
                crm.contact(&stack, &format!("c{n:04}"));
                if n % 20 == 19 {
                    crm.flush();
                    std::thread::sleep(Duration::from_millis(40));
                }
            }
            crm.flush();
        });
        // Kill an instance while leads are still coming and being dealt.
        let routed = |url: &str| metric(url, "leadflow_routed_total", "");
        wait_until(
            "both instances to deal leads",
            Duration::from_secs(90),
            || routed(&url_a) >= 20.0 && routed(&url_b) >= 20.0,
        );
        a.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
        let c = stack.start_in(&dir("c"), &[], &[]);
        sending.join().unwrap();
        c
    });
    let (mut c, _) = sender;
    wait_until(
        "a committed decision for every lead",
        Duration::from_secs(120),
        || dealt(&stack).values().map(Vec::len).sum::<usize>() >= LEADS,
    );

    let dealt = dealt(&stack);
    let mut seen = HashSet::new();
    for (partition, decisions) in &dealt {
        for (event_id, _) in decisions {
            assert!(seen.insert(event_id.clone()), "{event_id} decided twice");
        }
        // Task p of 6 starts a team of 3 at position p * 3 / 6, then goes round.
        let start = *partition as usize * TEAM.len() / PARTITIONS;
        let owners: Vec<&str> = decisions.iter().map(|(_, o)| o.as_str()).collect();
        let expected: Vec<&str> = (0..owners.len())
            .map(|i| TEAM[(start + i) % TEAM.len()])
            .collect();
        assert_eq!(
            owners, expected,
            "partition {partition}: turns skipped or repeated"
        );
    }
    assert_eq!(seen.len(), LEADS);
    assert_eq!(dealt.len(), PARTITIONS, "every task dealt leads");
    for (name, p) in [("b", &mut b), ("c", &mut c)] {
        let status = p.signal_and_wait(libc::SIGTERM, Duration::from_secs(40));
        assert!(status.success(), "{name}: {}", p.log_text());
    }
}
