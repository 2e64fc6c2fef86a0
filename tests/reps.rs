//! Reps in scripts through the processor core (no broker; a registry in process, state in a
//! temp RocksDB): round-robin fairness, working hours, capacity and its split among tasks,
//! acknowledgements freeing capacity, and the same picks after a crash and a replay.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use leadflow::codec::{canonical, decode, Encoder, RegistryClient, SchemaKind};
use leadflow::model::*;
use leadflow::pipeline::{InputRecord, Outcome, Pipeline, Processed};
use leadflow::registry::{router, Store};
use leadflow::route::{Rules, ScriptLimits};
use leadflow::state::reference::apply_rep;
use leadflow::state::StateStore;

/// The wall clock and the events' time: 2027-01-15T08:00:00Z.
const T: i64 = 1_800_000_000_000;

/// Every lead of the team goes to whoever's turn it is (nobody when no one is eligible).
const SCRIPT: &str = r#"
fn route(lead) {
    let owner = round_robin("emea-enterprise");
    #{ priority: "P1", queue: "emea", owner: owner,
       reasons: [if owner == () { "nobody eligible" } else { "round robin" }] }
}
"#;

fn rep(id: &str, edit: impl FnOnce(&mut Rep)) -> Rep {
    let mut rep = Rep {
        rep_id: id.into(),
        name: id.into(),
        team: "emea-enterprise".into(),
        regions: vec!["EMEA".into()],
        max_open_leads: 1000,
        active: true,
        timezone: "Europe/London".into(),
        working_hours: Some("07:00-18:00".into()),
        updated_at: T,
    };
    edit(&mut rep);
    rep
}

/// Three eligible reps; one off hours (00:00 in Los Angeles), one inactive, one with room
/// for 4 leads.
fn team() -> Vec<Rep> {
    vec![
        rep("r_a", |_| {}),
        rep("r_b", |_| {}),
        rep("r_c", |_| {}),
        rep("r_la", |r| r.timezone = "America/Los_Angeles".into()),
        rep("r_gone", |r| r.active = false),
        rep("r_small", |r| r.max_open_leads = 4),
        rep("r_other", |r| r.team = "na-enterprise".into()),
    ]
}

struct Driver {
    pipeline: Pipeline,
    store: Arc<StateStore>,
    contacts: Encoder,
    acks: Encoder,
    offset: i64,
}

impl Driver {
    async fn new(dir: &std::path::Path, reps: &[Rep], tasks: i32) -> Driver {
        Driver::running(SCRIPT, dir, reps, tasks).await
    }

    /// A pipeline running `script` on a new store holding `reps`.
    async fn running(script: &str, dir: &std::path::Path, reps: &[Rep], tasks: i32) -> Driver {
        let store =
            Arc::new(StateStore::open(&dir.join("state"), Duration::from_secs(3600)).unwrap());
        for r in reps {
            apply_rep(&store, &r.rep_id, Some(r)).unwrap();
        }
        Driver::on_store(script, store, tasks).await
    }

    /// A pipeline over `store` as it is (a restart keeps what was committed).
    async fn on(store: Arc<StateStore>, tasks: i32) -> Driver {
        Driver::on_store(SCRIPT, store, tasks).await
    }

    async fn on_store(script: &str, store: Arc<StateStore>, tasks: i32) -> Driver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            async move { axum::serve(listener, router(Arc::new(Store::in_memory()))).await },
        );
        let registry = RegistryClient::new(&url).unwrap();
        let topology =
            leadflow::topology::parse("t.yaml", include_str!("../topologies/lead-routing.yaml"))
                .unwrap();
        let rules =
            Arc::new(Rules::compile("test.rhai", script, &ScriptLimits::default()).unwrap());
        let mut pipeline = Pipeline::start(
            topology,
            rules,
            registry.clone(),
            store.clone(),
            Box::new(|| T),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        pipeline.set_tasks(tasks);
        let id = |subject: &'static str, kind: SchemaKind| {
            let registry = registry.clone();
            async move { registry.register(subject, kind.source()).await.unwrap() }
        };
        let contacts = id("crm.contacts.v1-value", SchemaKind::ContactEvent).await;
        let acks = id("leads.acks-value", SchemaKind::LeadAckEvent).await;
        Driver {
            pipeline,
            store,
            contacts: Encoder::new(SchemaKind::ContactEvent, contacts).unwrap(),
            acks: Encoder::new(SchemaKind::LeadAckEvent, acks).unwrap(),
            offset: 0,
        }
    }

    async fn process(&mut self, topic: &str, partition: i32, key: &str, value: &[u8]) -> Processed {
        self.offset += 1;
        let record = InputRecord {
            topic,
            partition,
            offset: self.offset,
            timestamp: Some(T),
            key: Some(key.as_bytes()),
            value: Some(value),
        };
        self.pipeline.process(&record).await.unwrap()
    }

    /// Routes contact `n` of task `partition`, not committed; its decision.
    async fn lead(&mut self, partition: i32, n: usize) -> (Processed, RoutedLead) {
        self.event(partition, n, "created").await
    }

    /// Routes an event `what` of contact `n` of task `partition`, not committed.
    async fn event(&mut self, partition: i32, n: usize, what: &str) -> (Processed, RoutedLead) {
        let contact = format!("c_{partition}_{n}");
        let event = contact_event(&contact, &format!("evt-{contact}-{what}"));
        let value = self.contacts.encode(&event).unwrap();
        let p = self
            .process("crm.contacts.v1", partition, &contact, &value)
            .await;
        assert!(matches!(p.outcome, Outcome::Routed(_)), "{:?}", p.outcome);
        let decision = decoded(&p);
        (p, decision)
    }

    /// Routes and commits contact `n` of task `partition`; who got it ("-": nobody).
    async fn owner_of(&mut self, partition: i32, n: usize) -> String {
        let (p, d) = self.lead(partition, n).await;
        self.pipeline.commit(&p).unwrap();
        d.owner_rep_id.unwrap_or_else(|| "-".into())
    }

    async fn accept(&mut self, d: &RoutedLead) {
        let ack = Event {
            envelope: envelope(
                &format!("ack-{}", d.decision_id),
                &d.contact_id,
                "Lead.acknowledged",
            ),
            payload: LeadAck {
                decision_id: d.decision_id.clone(),
                contact_id: d.contact_id.clone(),
                rep_id: d.owner_rep_id.clone().unwrap(),
                action: "accepted".into(),
                occurred_at: T,
            },
        };
        let value = self.acks.encode(&ack).unwrap();
        let p = self.process("leads.acks", 0, &d.contact_id, &value).await;
        assert_eq!(p.outcome, Outcome::Acknowledged("on_time"));
        self.pipeline.commit(&p).unwrap();
    }
}

fn envelope(event_id: &str, contact: &str, event_type: &str) -> Envelope {
    Envelope {
        event_id: event_id.into(),
        event_type: event_type.into(),
        aggregate_id: contact.into(),
        source: "hubspot:acme".into(),
        occurred_at: T - 1000,
        delivery_attempt: 1,
        schema_version: "1".into(),
        correlation_id: None,
    }
}

/// A `Contact.updated` of `contact` a second before the wall clock.
fn contact_event(contact: &str, event_id: &str) -> ContactEvent {
    common::events::contact(event_id, contact, T - 1000)
}

fn decoded(p: &Processed) -> RoutedLead {
    let value = p.outputs[0].value.as_ref().unwrap();
    decode(
        canonical().get(SchemaKind::RoutedLead),
        SchemaKind::RoutedLead,
        &value[5..],
    )
    .unwrap()
}

fn counts(owners: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for o in owners {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn round_robin_is_fair_within_one_and_skips_reps_off_hours_inactive_or_full() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::new(dir.path(), &team(), 1).await;
    let mut owners = Vec::new();
    for n in 0..61 {
        owners.push(d.owner_of(0, n).await);
    }
    let c = counts(&owners);
    assert_eq!(c.get("r_small"), Some(&4), "{c:?}");
    for absent in ["r_la", "r_gone", "r_other", "-"] {
        assert_eq!(c.get(absent), None, "{c:?}");
    }
    let eligible: Vec<usize> = ["r_a", "r_b", "r_c"].iter().map(|r| c[r]).collect();
    assert_eq!(eligible.iter().sum::<usize>(), 57);
    assert!(
        eligible.iter().max().unwrap() - eligible.iter().min().unwrap() <= 1,
        "{c:?}"
    );
    // Strict turns: the same rep never twice in a row while others are eligible.
    assert!(owners.windows(2).all(|w| w[0] != w[1]), "{owners:?}");
}

#[tokio::test]
async fn an_acknowledgement_frees_the_reps_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let only_small = vec![rep("r_small", |r| r.max_open_leads = 2)];
    let mut d = Driver::new(dir.path(), &only_small, 1).await;
    let mut decisions = Vec::new();
    for n in 0..3 {
        let (p, decision) = d.lead(0, n).await;
        d.pipeline.commit(&p).unwrap();
        decisions.push(decision.owner_rep_id);
    }
    assert_eq!(
        decisions,
        [Some("r_small".into()), Some("r_small".into()), None],
        "full after two"
    );
    // A new decision for a contact whose lead r_small holds: r_small may keep it (it is not
    // one more lead), and their count stays.
    let (p, first_again) = d.event(0, 0, "updated").await;
    d.pipeline.commit(&p).unwrap();
    assert_eq!(first_again.owner_rep_id.as_deref(), Some("r_small"));
    assert_eq!(d.owner_of(0, 3).await, "-");
    d.accept(&first_again).await;
    assert_eq!(d.owner_of(0, 4).await, "r_small");
    assert_eq!(d.owner_of(0, 5).await, "-");
}

#[tokio::test]
async fn each_task_holds_its_share_of_a_reps_capacity_and_the_shares_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let reps = vec![rep("r_x", |r| r.max_open_leads = 5)];
    let mut d = Driver::new(dir.path(), &reps, 3).await;
    let mut per_task = Vec::new();
    for task in 0..3 {
        let mut got = 0;
        for n in 0..10 {
            got += usize::from(d.owner_of(task, n).await == "r_x");
        }
        per_task.push(got);
    }
    assert_eq!(per_task.iter().sum::<usize>(), 5, "{per_task:?}");
    let mut sorted = per_task.clone();
    sorted.sort();
    assert_eq!(sorted, [1, 2, 2], "{per_task:?}");
}

#[tokio::test]
async fn after_a_crash_the_replayed_leads_get_the_same_reps() {
    let leads = 30;
    let committed = 12;
    // The reference: every lead processed and committed once.
    let dir = tempfile::tempdir().unwrap();
    let mut reference = Driver::new(dir.path(), &team(), 1).await;
    let mut expected = Vec::new();
    for n in 0..leads {
        expected.push(reference.owner_of(0, n).await);
    }
    // A run that commits only the first leads, then dies with the rest processed (outputs
    // possibly sent, state not committed); a new process replays them from the commit.
    let dir = tempfile::tempdir().unwrap();
    let mut first = Driver::new(dir.path(), &team(), 1).await;
    let mut before_crash = Vec::new();
    for n in 0..leads {
        let (p, decision) = first.lead(0, n).await;
        if n < committed {
            first.pipeline.commit(&p).unwrap();
        }
        before_crash.push(decision.owner_rep_id.unwrap_or_else(|| "-".into()));
    }
    let store = first.store.clone();
    drop(first);
    let mut replay = Driver::on(store, 1).await;
    let mut after_crash = before_crash[..committed].to_vec();
    for n in committed..leads {
        after_crash.push(replay.owner_of(0, n).await);
    }
    assert_eq!(before_crash, expected);
    assert_eq!(after_crash, expected);
    assert!(counts(&expected).len() >= 4, "{expected:?}");
}

/// The owner named by the contact's `title` (the test's way to pick one per lead).
const OWNER_FROM_TITLE: &str = r#"
fn route(lead) {
    #{ priority: "P2", queue: "inside-sales", owner: lead.title, reasons: ["by title"] }
}
"#;

#[tokio::test]
async fn an_owner_who_is_not_an_active_rep_is_cleared_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::running(OWNER_FROM_TITLE, dir.path(), &team(), 1).await;
    let (owner, reasons) = titled(&mut d, "r_a", 0).await;
    assert_eq!((owner.as_deref(), reasons.len()), (Some("r_a"), 1));
    let (owner, reasons) = titled(&mut d, "r_gone", 1).await;
    assert_eq!(owner, None);
    assert_eq!(
        reasons,
        [
            "by title",
            "owner r_gone is not an active rep: left to the queue"
        ]
    );
    let (owner, reasons) = titled(&mut d, "rep_nobody", 2).await;
    assert_eq!(owner, None);
    assert_eq!(
        reasons[1],
        "owner rep_nobody is not in the reps table: left to the queue"
    );
    // No reps table: owners are kept as the script names them.
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::running(OWNER_FROM_TITLE, dir.path(), &[], 1).await;
    let (owner, reasons) = titled(&mut d, "rep_nobody", 0).await;
    assert_eq!((owner.as_deref(), reasons.len()), (Some("rep_nobody"), 1));
}

/// Routes contact `n` of task 0 with `title` (its owner, by `OWNER_FROM_TITLE`); the
/// decision's owner and reasons.
async fn titled(d: &mut Driver, title: &str, n: usize) -> (Option<String>, Vec<String>) {
    let contact = format!("c_0_{n}");
    let mut event = contact_event(&contact, &format!("evt-{contact}"));
    event.payload.title = Some(title.into());
    let value = d.contacts.encode(&event).unwrap();
    let p = d.process("crm.contacts.v1", 0, &contact, &value).await;
    d.pipeline.commit(&p).unwrap();
    let decision = decoded(&p);
    (decision.owner_rep_id, decision.reasons)
}
