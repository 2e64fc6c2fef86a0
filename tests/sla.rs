//! SLA topology tests: routed leads are timed against their deadline, acknowledgements stop
//! or escalate them, the punctuator fires due timers, all in process with a wall clock the
//! test moves (no broker; a real registry in process, state in a temp RocksDB).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use leadflow::codec::{canonical, decode, Encoder, RegistryClient, SchemaKind};
use leadflow::model::*;
use leadflow::pipeline::{InputRecord, Outcome, Pipeline, Processed};
use leadflow::registry::{router, Store};
use leadflow::route::{Priority, Rules, ScriptLimits};
use leadflow::sink::dlq::DlqClass;
use leadflow::sink::OutputKind;
use leadflow::state::StateStore;
use leadflow::topology::{EscalationStep, Topology};

/// When the tests' leads are routed (wall clock).
const T: i64 = 1_800_000_000_000;
const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;

/// Every contact goes to P0 `inbound`, owned by `rep_1`.
const SCRIPT: &str = r#"
fn route(lead) {
    #{ priority: "P0", queue: "inbound", owner: "rep_1", reasons: ["new lead"] }
}
"#;

/// `SCRIPT` with an `escalate` that re-routes the first breach to P1 `rescue` and records the
/// second only.
const ESCALATING_SCRIPT: &str = r#"
fn route(lead) {
    #{ priority: "P0", queue: "inbound", owner: "rep_1", reasons: ["new lead"] }
}
fn escalate(lead, breach) {
    if breach.level == 1 {
        return #{ priority: "P1", queue: "rescue", owner: "rep_9",
                  reasons: ["was " + breach.queue + " (" + breach.priority + "), "
                            + breach.minutes_overdue + " min overdue, " + lead.first_name] };
    }
    ()
}
"#;

/// The shipped topology with a two-step chain (team leads, then managers, both P0).
fn topology() -> Topology {
    let mut t =
        leadflow::topology::parse("t.yaml", include_str!("../topologies/lead-routing.yaml"))
            .unwrap();
    assert_eq!(t.acks.as_deref(), Some("leads.acks"));
    t.escalation.chain = vec![
        EscalationStep {
            queue: "team-leads".into(),
            priority: Some(Priority::P0),
            owner: None,
        },
        EscalationStep {
            queue: "managers".into(),
            priority: Some(Priority::P0),
            owner: Some("rep_boss".into()),
        },
    ];
    t.escalation.max_escalations = 2;
    t.escalation.ack_retention = Duration::from_secs(3600);
    t
}

struct Driver {
    pipeline: Pipeline,
    clock: Arc<AtomicI64>,
    contacts: Encoder,
    acks: Encoder,
    offset: i64,
    _dir: tempfile::TempDir,
}

impl Driver {
    async fn new(script: &str) -> Driver {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            StateStore::open(&dir.path().join("state"), Duration::from_secs(3600)).unwrap(),
        );
        Driver::on(script, topology(), store, dir).await
    }

    /// A driver over an existing state store (a restart).
    async fn on(
        script: &str,
        topology: Topology,
        store: Arc<StateStore>,
        dir: tempfile::TempDir,
    ) -> Driver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            async move { axum::serve(listener, router(Arc::new(Store::in_memory()))).await },
        );
        let registry = RegistryClient::new(&url).unwrap();
        let rules =
            Arc::new(Rules::compile("test.rhai", script, &ScriptLimits::default()).unwrap());
        let clock = Arc::new(AtomicI64::new(T));
        let now = clock.clone();
        let pipeline = Pipeline::start(
            topology,
            rules,
            registry.clone(),
            store,
            Box::new(move || now.load(Ordering::SeqCst)),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let contacts_id = registry
            .register("crm.contacts.v1-value", SchemaKind::ContactEvent.source())
            .await
            .unwrap();
        let acks_id = registry
            .register("leads.acks-value", SchemaKind::LeadAckEvent.source())
            .await
            .unwrap();
        Driver {
            pipeline,
            clock,
            contacts: Encoder::new(SchemaKind::ContactEvent, contacts_id).unwrap(),
            acks: Encoder::new(SchemaKind::LeadAckEvent, acks_id).unwrap(),
            offset: 0,
            _dir: dir,
        }
    }

    fn at(&self, ms: i64) {
        self.clock.store(ms, Ordering::SeqCst);
    }

    async fn process(&mut self, topic: &str, key: &str, value: &[u8], commit: bool) -> Processed {
        self.offset += 1;
        let record = InputRecord {
            topic,
            partition: 0,
            offset: self.offset,
            timestamp: Some(self.clock.load(Ordering::SeqCst)),
            key: Some(key.as_bytes()),
            value: Some(value),
        };
        let p = self.pipeline.process(&record).await.unwrap();
        if commit {
            self.pipeline.commit(&p).unwrap();
        }
        p
    }

    /// Routes a new contact now; its decision.
    async fn route(&mut self, contact: &str) -> RoutedLead {
        let now = self.clock.load(Ordering::SeqCst);
        let event = contact_event(&format!("evt-{contact}"), contact, now - SECOND);
        let value = self.contacts.encode(&event).unwrap();
        let p = self.process("crm.contacts.v1", contact, &value, true).await;
        assert_eq!(p.outcome, Outcome::Routed(Priority::P0));
        decoded(&p.outputs[0]).0
    }

    /// An acknowledgement of `decision` by `rep`, occurred now, processed and committed.
    async fn ack(&mut self, d: &RoutedLead, rep: &str, action: &str) -> Processed {
        self.ack_with(d, &d.contact_id, rep, action, true).await
    }

    async fn ack_with(
        &mut self,
        d: &RoutedLead,
        key: &str,
        rep: &str,
        action: &str,
        commit: bool,
    ) -> Processed {
        let now = self.clock.load(Ordering::SeqCst);
        let ack = ack_event(&d.decision_id, &d.contact_id, rep, action, now);
        let value = self.acks.encode(&ack).unwrap();
        self.process("leads.acks", key, &value, commit).await
    }

    /// Fires the due timers at `ms` and commits them; what they emitted, in order.
    fn punctuate_at(&mut self, ms: i64) -> Vec<Processed> {
        self.at(ms);
        let fired = self.pipeline.punctuate(0).unwrap();
        self.pipeline
            .commit_all(fired.iter(), &[])
            .expect("timers commit");
        fired
    }
}

fn contact_event(event_id: &str, contact: &str, at: i64) -> ContactEvent {
    Event {
        envelope: Envelope {
            event_id: event_id.into(),
            event_type: "Contact.created".into(),
            aggregate_id: contact.into(),
            source: "hubspot:acme".into(),
            occurred_at: at,
            delivery_attempt: 1,
            schema_version: "1".into(),
            correlation_id: Some(format!("corr-{event_id}")),
        },
        payload: Contact {
            contact_id: contact.into(),
            email: Some(format!("{contact}@gmail.com")),
            phone: None,
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            title: None,
            company_name: None,
            company_domain: None,
            country: Some("GB".into()),
            region: Some("EMEA".into()),
            lifecycle_stage: Some("lead".into()),
            lead_source: None,
            product_interest: None,
            consent_marketing: true,
            attributes: Default::default(),
            updated_at: at,
        },
    }
}

fn ack_event(decision: &str, contact: &str, rep: &str, action: &str, at: i64) -> LeadAckEvent {
    Event {
        envelope: Envelope {
            event_id: format!("ack-{decision}-{action}-{at}"),
            event_type: "Lead.acknowledged".into(),
            aggregate_id: contact.into(),
            source: "crm:test".into(),
            occurred_at: at,
            delivery_attempt: 1,
            schema_version: "1".into(),
            correlation_id: None,
        },
        payload: LeadAck {
            decision_id: decision.into(),
            contact_id: contact.into(),
            rep_id: rep.into(),
            action: action.into(),
            occurred_at: at,
        },
    }
}

/// A routed lead or a breach, decoded, with its headers.
fn decoded<T: serde::de::DeserializeOwned>(
    out: &leadflow::sink::OutputRecord,
) -> (T, HashMap<&'static str, String>) {
    let kind = match out.kind {
        OutputKind::Routed => SchemaKind::RoutedLead,
        OutputKind::Breach => SchemaKind::SlaBreach,
        other => panic!("unexpected output {other:?}"),
    };
    let value = out.value.as_ref().unwrap();
    let headers = out
        .headers
        .iter()
        .map(|(k, v)| (*k, String::from_utf8(v.clone()).unwrap()))
        .collect();
    (
        decode(canonical().get(kind), kind, &value[5..]).unwrap(),
        headers,
    )
}

/// Every output of `fired`, in order: (topic, kind).
fn outputs(fired: &[Processed]) -> Vec<(String, OutputKind)> {
    fired
        .iter()
        .flat_map(|p| p.outputs.iter().map(|o| (o.topic.clone(), o.kind)))
        .collect()
}

/// The one breach of `fired`, and the re-routed lead if there is one.
fn breach_of(fired: &[Processed]) -> (SlaBreach, Option<RoutedLead>) {
    let breaches: Vec<&Processed> = fired
        .iter()
        .filter(|p| p.outputs.iter().any(|o| o.kind == OutputKind::Breach))
        .collect();
    assert_eq!(breaches.len(), 1, "{:?}", outputs(fired));
    let p = breaches[0];
    assert_eq!(p.outputs[0].kind, OutputKind::Breach);
    assert_eq!(p.outputs[0].topic, "leads.escalations");
    let (breach, headers) = decoded::<SlaBreach>(&p.outputs[0]);
    assert_eq!(headers["decision_id"], breach.decision_id);
    assert_eq!(headers["sla.level"], breach.level.to_string());
    let rerouted = p.outputs.get(1).map(|o| {
        let (lead, headers) = decoded::<RoutedLead>(o);
        assert_eq!(headers["decision_id"], lead.decision_id);
        assert_eq!(headers["sla.level"], breach.level.to_string());
        lead
    });
    assert_eq!(
        breach.escalated_decision_id,
        rerouted.as_ref().map(|l| l.decision_id.clone())
    );
    (breach, rerouted)
}

#[tokio::test]
async fn an_ack_before_the_deadline_gives_no_breach() {
    let mut d = Driver::new(SCRIPT).await;
    let lead = d.route("ct_1").await;
    assert_eq!(lead.sla_deadline, T + MINUTE);
    d.at(T + 30 * SECOND);
    let acked = d.ack(&lead, "rep_1", "accepted").await;
    assert_eq!(acked.outcome, Outcome::Acknowledged("on_time"));
    assert!(acked.outputs.is_empty());
    for at in [T + MINUTE, T + 10 * MINUTE, T + 2 * 3_600_000] {
        assert!(outputs(&d.punctuate_at(at)).is_empty(), "at {at}");
    }
    // A second acknowledgement finds nothing left to stop.
    let again = d.ack(&lead, "rep_1", "contacted").await;
    assert_eq!(again.outcome, Outcome::Acknowledged("unknown_decision"));
}

#[tokio::test]
async fn no_ack_gives_exactly_one_breach_per_level_at_the_right_times_then_the_chain_stops() {
    let mut d = Driver::new(SCRIPT).await;
    let lead = d.route("ct_1").await;
    assert!(outputs(&d.punctuate_at(T + MINUTE - 1)).is_empty());

    // Level 1 at the deadline: a breach, and a re-route to the chain's first step.
    let fired = d.punctuate_at(T + MINUTE);
    let (b1, r1) = breach_of(&fired);
    assert_eq!(
        (
            b1.level,
            b1.decision_id.as_str(),
            b1.queue.as_str(),
            b1.priority.as_str()
        ),
        (1, lead.decision_id.as_str(), "inbound", "P0")
    );
    assert_eq!(b1.owner_rep_id.as_deref(), Some("rep_1"));
    assert_eq!(
        (b1.sla_deadline, b1.breached_at, b1.routed_at),
        (T + MINUTE, T + MINUTE, T)
    );
    let r1 = r1.expect("re-routed");
    assert_eq!(
        (r1.queue.as_str(), r1.priority.as_str()),
        ("team-leads", "P0")
    );
    assert_eq!(r1.owner_rep_id, None);
    assert_eq!(r1.event_id, lead.event_id);
    assert_eq!(r1.sla_deadline, T + 2 * MINUTE);
    assert_ne!(r1.decision_id, lead.decision_id);
    assert!(
        r1.reasons
            .iter()
            .any(|r| r.starts_with("escalation level 1: no acknowledgement")),
        "{:?}",
        r1.reasons
    );
    assert_eq!(outputs(&fired)[1].0, "leads.routed.p0");
    // Fired once: the same instant again, and until the next deadline, nothing.
    assert!(outputs(&d.punctuate_at(T + MINUTE)).is_empty());
    assert!(outputs(&d.punctuate_at(T + 2 * MINUTE - 1)).is_empty());

    // Level 2: the escalation breached too; the chain's last step.
    let (b2, r2) = breach_of(&d.punctuate_at(T + 2 * MINUTE));
    assert_eq!(
        (b2.level, b2.decision_id.as_str()),
        (2, r1.decision_id.as_str())
    );
    assert_eq!(b2.queue, "team-leads");
    let r2 = r2.expect("re-routed again");
    assert_eq!(r2.queue, "managers");
    assert_eq!(r2.owner_rep_id.as_deref(), Some("rep_boss"));

    // Level 3: recorded, not re-routed (max_escalations is 2).
    let (b3, r3) = breach_of(&d.punctuate_at(T + 3 * MINUTE));
    assert_eq!(
        (b3.level, b3.decision_id.as_str()),
        (3, r2.decision_id.as_str())
    );
    assert!(r3.is_none());
    assert!(
        b3.reasons
            .iter()
            .any(|r| r.contains("sla.max_escalations (2) reached")),
        "{:?}",
        b3.reasons
    );
    // Nothing more, ever; after ack_retention the three decisions are forgotten silently.
    assert!(outputs(&d.punctuate_at(T + 30 * MINUTE)).is_empty());
    let forgotten = d.punctuate_at(T + 2 * 3_600_000);
    assert_eq!(forgotten.len(), 3);
    assert!(forgotten
        .iter()
        .all(|p| p.outcome == Outcome::TimerDone && p.outputs.is_empty()));
    assert!(d.punctuate_at(T + 3 * 3_600_000).is_empty());
    // A late acknowledgement after that finds nothing.
    let late = d.ack(&lead, "rep_1", "accepted").await;
    assert_eq!(late.outcome, Outcome::Acknowledged("unknown_decision"));
}

#[tokio::test]
async fn rejected_escalates_at_once_and_the_first_deadline_no_longer_fires() {
    let mut d = Driver::new(SCRIPT).await;
    let lead = d.route("ct_1").await;
    d.at(T + 10 * SECOND);
    let rejected = d.ack(&lead, "rep_1", "rejected").await;
    assert_eq!(rejected.outcome, Outcome::Acknowledged("rejected"));
    let (b1, r1) = breach_of(std::slice::from_ref(&rejected));
    assert_eq!((b1.level, b1.breached_at), (1, T + 10 * SECOND));
    assert_eq!(b1.reasons[0], "rejected by rep_1");
    let r1 = r1.expect("re-routed");
    assert_eq!(r1.queue, "team-leads");
    assert_eq!(r1.sla_deadline, T + 10 * SECOND + MINUTE);
    // The original deadline passes: nothing (its timer went with the rejection).
    assert!(outputs(&d.punctuate_at(T + MINUTE)).is_empty());
    // A second rejection of the same decision changes nothing.
    let again = d.ack(&lead, "rep_1", "rejected").await;
    assert_eq!(again.outcome, Outcome::Acknowledged("ignored"));
    assert!(again.outputs.is_empty());
    // The escalation's own deadline does fire.
    let (b2, _) = breach_of(&d.punctuate_at(T + 10 * SECOND + MINUTE));
    assert_eq!((b2.level, b2.decision_id), (2, r1.decision_id));
}

#[tokio::test]
async fn an_ack_of_any_decision_of_a_chain_closes_the_chain() {
    let mut d = Driver::new(SCRIPT).await;
    let lead = d.route("ct_1").await;
    let (_, r1) = breach_of(&d.punctuate_at(T + MINUTE));
    let r1 = r1.unwrap();
    // The original rep finally accepts the original decision, late: the escalation stops too.
    d.at(T + MINUTE + 5 * SECOND);
    let late = d.ack(&lead, "rep_1", "accepted").await;
    assert_eq!(late.outcome, Outcome::Acknowledged("late"));
    assert!(outputs(&d.punctuate_at(T + 10 * MINUTE)).is_empty());
    assert!(
        d.punctuate_at(T + 3 * 3_600_000).is_empty(),
        "nothing left to forget"
    );
    let of_escalation = d.ack(&r1, "rep_2", "accepted").await;
    assert_eq!(
        of_escalation.outcome,
        Outcome::Acknowledged("unknown_decision")
    );

    // And the other way round: an ack of the escalation closes the breached original.
    let lead = d.route("ct_2").await;
    let (_, r1) = breach_of(&d.punctuate_at(d.clock.load(Ordering::SeqCst) + MINUTE));
    let acked = d.ack(&r1.unwrap(), "rep_2", "contacted").await;
    assert_eq!(acked.outcome, Outcome::Acknowledged("on_time"));
    let of_original = d.ack(&lead, "rep_1", "accepted").await;
    assert_eq!(
        of_original.outcome,
        Outcome::Acknowledged("unknown_decision")
    );
    assert!(d.punctuate_at(T + 100 * 3_600_000).is_empty());
}

#[tokio::test]
async fn a_script_escalate_decides_the_reroute_and_may_record_only() {
    let mut d = Driver::new(ESCALATING_SCRIPT).await;
    let lead = d.route("ct_1").await;
    let (b1, r1) = breach_of(&d.punctuate_at(T + 3 * MINUTE));
    assert_eq!(b1.level, 1);
    let r1 = r1.expect("escalate re-routed");
    assert_eq!((r1.priority.as_str(), r1.queue.as_str()), ("P1", "rescue"));
    assert_eq!(r1.owner_rep_id.as_deref(), Some("rep_9"));
    assert_eq!(r1.reasons[0], "was inbound (P0), 2 min overdue, Ada");
    // A P1 escalation: five minutes.
    assert_eq!(r1.sla_deadline, T + 3 * MINUTE + 5 * MINUTE);
    assert_ne!(r1.decision_id, lead.decision_id);
    let (b2, r2) = breach_of(&d.punctuate_at(T + 8 * MINUTE));
    assert_eq!((b2.level, b2.priority.as_str()), (2, "P1"));
    assert!(r2.is_none());
    assert!(b2
        .reasons
        .iter()
        .any(|r| r == "not re-routed: escalate returned ()"));
}

#[tokio::test]
async fn reassigned_moves_the_owner_and_the_clock_runs_on() {
    let mut d = Driver::new(SCRIPT).await;
    let lead = d.route("ct_1").await;
    d.at(T + 20 * SECOND);
    let moved = d.ack(&lead, "rep_7", "reassigned").await;
    assert_eq!(moved.outcome, Outcome::Acknowledged("reassigned"));
    let (b1, _) = breach_of(&d.punctuate_at(T + MINUTE));
    assert_eq!(b1.owner_rep_id.as_deref(), Some("rep_7"));
}

#[tokio::test]
async fn a_staged_ack_stops_its_timer_before_it_is_committed() {
    let mut d = Driver::new(SCRIPT).await;
    let lead = d.route("ct_1").await;
    let acked = d.ack_with(&lead, "ct_1", "rep_1", "accepted", false).await;
    assert_eq!(acked.outcome, Outcome::Acknowledged("on_time"));
    assert!(outputs(&d.punctuate_at(T + MINUTE)).is_empty());
}

#[tokio::test]
async fn timers_are_durable_a_restarted_pipeline_fires_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let store = Arc::new(StateStore::open(&path, Duration::from_secs(3600)).unwrap());
    let mut d = Driver::on(SCRIPT, topology(), store, dir).await;
    let lead = d.route("ct_1").await;
    // The process ends: the store is closed, then opened again by a new pipeline.
    let Driver { pipeline, _dir, .. } = d;
    drop(pipeline);
    let store = Arc::new(StateStore::open(&path, Duration::from_secs(3600)).unwrap());
    let mut d = Driver::on(SCRIPT, topology(), store, _dir).await;
    let (b1, _) = breach_of(&d.punctuate_at(T + MINUTE));
    assert_eq!(b1.decision_id, lead.decision_id);
}

#[tokio::test]
async fn acknowledgements_that_cannot_be_applied_go_to_the_dlq() {
    let mut d = Driver::new(SCRIPT).await;
    let lead = d.route("ct_1").await;
    let p = d.ack(&lead, "rep_1", "maybe").await;
    assert_eq!(p.outcome, Outcome::Dlq(DlqClass::InvalidAck));
    let header = |p: &Processed, k: &str| {
        p.outputs[0]
            .headers
            .iter()
            .find(|(h, _)| *h == k)
            .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    };
    assert_eq!(header(&p, "error.class").as_deref(), Some("invalid_ack"));
    let message = header(&p, "error.message").unwrap();
    assert!(message.contains("not one of accepted"), "{message}");
    assert!(
        !message.contains("maybe"),
        "no field values in DLQ messages: {message}"
    );
    let p = d
        .ack_with(&lead, "ct_other", "rep_1", "accepted", true)
        .await;
    assert_eq!(p.outcome, Outcome::Dlq(DlqClass::InvalidAck));
    assert!(header(&p, "error.message").unwrap().contains("contact_id"));
    // Neither stopped the timer.
    breach_of(&d.punctuate_at(T + MINUTE));
}

#[tokio::test]
async fn without_inputs_acks_no_decision_is_timed() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(StateStore::open(&dir.path().join("s"), Duration::from_secs(3600)).unwrap());
    let mut t = topology();
    t.acks = None;
    let mut d = Driver::on(SCRIPT, t, store, dir).await;
    d.route("ct_1").await;
    assert!(d.punctuate_at(T + 10 * MINUTE).is_empty());
}
