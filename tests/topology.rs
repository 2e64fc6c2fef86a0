//! Topology tests: whole records through the processor core in process, no broker (like Kafka
//! Streams' TopologyTestDriver). A real registry runs in process; state is a temp RocksDB.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use leadflow::codec::{canonical, decode, frame, Encoder, RegistryClient, SchemaKind};
use leadflow::model::*;
use leadflow::pipeline::{InputRecord, Outcome, Pipeline, Processed};
use leadflow::registry::{router, Store};
use leadflow::route::{Priority, Rules, ScriptLimits};
use leadflow::sink::dlq::DlqClass;
use leadflow::state::{reference::apply_account, StateStore};
use leadflow::topology::Topology;

const T0: i64 = 1_767_600_000_000;
const HOUR: i64 = 3_600_000;
const ROUTED_AT: i64 = 1_800_000_000_000;

/// Routes on what enrichment provides, and says what it saw in `reasons`.
const SCRIPT: &str = r#"
fn route(lead) {
    if lead.first_name == "Loop" { loop {} }
    if lead.first_name == "Throw" { throw "boom"; }
    if lead.first_name == "Bad" { return "P0"; }
    if lead.first_name == "Quiet" { return (); }
    let seen = "7d=" + lead.engagement.count_7d + " 24h=" + lead.engagement.count_24h
        + " prev=" + (if lead.previous == () { "none" } else { lead.previous.priority })
        + " title=" + lead.title;
    if lead.account != () && lead.account.tier == "enterprise" {
        return #{ priority: "P0", queue: "enterprise", owner: lead.account.owner_rep_id,
                  reasons: ["enterprise " + lead.account.name, seen] };
    }
    if lead.engagement.demo_requested {
        return #{ priority: "P0", queue: "demo", reasons: ["demo", seen] };
    }
    if lead.lifecycle_stage == "mql" {
        return #{ priority: "P1", queue: "mql", reasons: [seen] };
    }
    #{ priority: "P2", queue: "inside-sales", reasons: [seen] }
}
"#;

struct Driver {
    pipeline: Pipeline,
    store: Arc<StateStore>,
    contacts: Encoder,
    engagements: Encoder,
    registry: RegistryClient,
    offset: i64,
    _dir: tempfile::TempDir,
}

/// The shipped topology without `outputs.assignments`, so that a decision is one output
/// (the assignments copy has a test of its own).
fn topology(max_record_bytes: usize) -> Topology {
    let mut t =
        leadflow::topology::parse("t.yaml", include_str!("../topologies/lead-routing.yaml"))
            .unwrap();
    assert_eq!(t.outputs.assignments.as_deref(), Some("leads.assignments"));
    t.outputs.assignments = None;
    t.limits.max_record_bytes = max_record_bytes;
    t
}

impl Driver {
    async fn new(script: &str) -> Driver {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            StateStore::open(&dir.path().join("state"), Duration::from_secs(3600)).unwrap(),
        );
        Self::with_store(script, store, dir).await
    }

    async fn with_store(script: &str, store: Arc<StateStore>, dir: tempfile::TempDir) -> Driver {
        Self::custom(script, store, dir, topology(4096), Box::new(|| ROUTED_AT)).await
    }

    /// A driver with its own topology settings and wall clock.
    async fn custom(
        script: &str,
        store: Arc<StateStore>,
        dir: tempfile::TempDir,
        topology: Topology,
        clock: leadflow::pipeline::Clock,
    ) -> Driver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(
            async move { axum::serve(listener, router(Arc::new(Store::in_memory()))).await },
        );
        let registry = RegistryClient::new(&url).unwrap();
        let limits = ScriptLimits {
            timeout: Duration::from_millis(100),
            ..ScriptLimits::default()
        };
        let rules = Arc::new(Rules::compile("test.rhai", script, &limits).unwrap());
        let pipeline = Pipeline::start(
            topology,
            rules,
            registry.clone(),
            store.clone(),
            clock,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let id = |kind: SchemaKind, subject: &'static str| {
            let registry = registry.clone();
            async move { registry.register(subject, kind.source()).await.unwrap() }
        };
        let contacts = Encoder::new(
            SchemaKind::ContactEvent,
            id(SchemaKind::ContactEvent, "crm.contacts.v1-value").await,
        )
        .unwrap();
        let engagements = Encoder::new(
            SchemaKind::EngagementEvent,
            id(SchemaKind::EngagementEvent, "crm.engagements.v1-value").await,
        )
        .unwrap();
        Driver {
            pipeline,
            store,
            contacts,
            engagements,
            registry,
            offset: 0,
            _dir: dir,
        }
    }

    /// Processes one raw record and commits it (as if its outputs were delivered).
    async fn raw(&mut self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Processed {
        let p = self.raw_uncommitted(topic, key, value).await;
        self.pipeline.commit(&p).unwrap();
        p
    }

    async fn raw_uncommitted(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Processed {
        self.offset += 1;
        let record = InputRecord {
            topic,
            partition: 0,
            offset: self.offset,
            timestamp: Some(T0),
            key,
            value,
        };
        self.pipeline.process(&record).await.unwrap()
    }

    async fn contact(&mut self, e: &ContactEvent) -> Processed {
        let value = self.contacts.encode(e).unwrap();
        self.raw(
            "crm.contacts.v1",
            Some(e.envelope.aggregate_id.as_bytes()),
            Some(&value),
        )
        .await
    }

    async fn engagement(&mut self, e: &EngagementEvent) -> Processed {
        let value = self.engagements.encode(e).unwrap();
        self.raw(
            "crm.engagements.v1",
            Some(e.envelope.aggregate_id.as_bytes()),
            Some(&value),
        )
        .await
    }
}

fn envelope(event_id: &str, kind: &str, contact: &str, at: i64) -> Envelope {
    Envelope {
        event_id: event_id.into(),
        event_type: kind.into(),
        aggregate_id: contact.into(),
        source: "hubspot:acme".into(),
        occurred_at: at,
        delivery_attempt: 1,
        schema_version: "1".into(),
        correlation_id: Some(format!("corr-{event_id}")),
    }
}

fn contact_event(
    event_id: &str,
    contact: &str,
    at: i64,
    edit: impl FnOnce(&mut Contact),
) -> ContactEvent {
    let mut c = Contact {
        contact_id: contact.into(),
        email: Some(format!("{contact}@gmail.com")),
        phone: None,
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        title: Some("Engineer".into()),
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
    };
    edit(&mut c);
    Event {
        envelope: envelope(event_id, "Contact.created", contact, at),
        payload: c,
    }
}

fn engagement_event(event_id: &str, contact: &str, at: i64, kind: &str) -> EngagementEvent {
    Event {
        envelope: envelope(event_id, "Engagement.recorded", contact, at),
        payload: Engagement {
            engagement_id: format!("eng-{event_id}"),
            contact_id: contact.into(),
            kind: kind.into(),
            channel: Some("web".into()),
            campaign: None,
            outcome: None,
            occurred_at: at,
        },
    }
}

/// The one output of `p`, decoded as `kind`, with its key and headers as text.
fn single_output<T: serde::de::DeserializeOwned>(
    p: &Processed,
    kind: SchemaKind,
) -> (T, Option<String>, &str, HashMap<&'static str, String>) {
    assert_eq!(p.outputs.len(), 1, "{:?}", p.outcome);
    let out = &p.outputs[0];
    let value = out.value.as_ref().unwrap();
    let decoded: T = decode(canonical().get(kind), kind, &value[5..]).unwrap();
    let key = out
        .key
        .as_ref()
        .map(|k| String::from_utf8(k.clone()).unwrap());
    let headers = out
        .headers
        .iter()
        .map(|(k, v)| (*k, String::from_utf8(v.clone()).unwrap()))
        .collect();
    (decoded, key, &out.topic, headers)
}

fn routed(p: &Processed) -> (RoutedLead, HashMap<&'static str, String>) {
    let (lead, key, _, headers) = single_output::<RoutedLead>(p, SchemaKind::RoutedLead);
    assert_eq!(key.as_deref(), Some(lead.contact_id.as_str()));
    (lead, headers)
}

fn acme() -> Account {
    Account {
        account_id: "acc_1".into(),
        domain: "acme.com".into(),
        name: "Acme Inc".into(),
        employees: Some(12_000),
        annual_revenue: Some(3.0e9),
        industry: Some("software".into()),
        region: Some("NA".into()),
        tier: Some("enterprise".into()),
        owner_rep_id: Some("rep_007".into()),
        updated_at: T0,
    }
}

#[tokio::test]
async fn routes_to_the_priority_topic_with_contract_fields_and_headers() {
    let mut d = Driver::new(SCRIPT).await;
    apply_account(&d.store, "acc_1", Some(&acme())).unwrap();
    let p = d
        .contact(&contact_event("e1", "ct_1", T0, |c| {
            c.company_domain = Some("ACME.com".into())
        }))
        .await;
    assert_eq!(p.outcome, Outcome::Routed(Priority::P0));
    assert_eq!(p.outputs[0].topic, "leads.routed.p0");
    let (lead, headers) = routed(&p);
    assert_eq!(lead.priority, "P0");
    assert_eq!(lead.queue, "enterprise");
    assert_eq!(lead.owner_rep_id.as_deref(), Some("rep_007"));
    assert_eq!(lead.reasons[0], "enterprise Acme Inc");
    assert_eq!(
        (lead.account_id.as_deref(), lead.account_tier.as_deref()),
        (Some("acc_1"), Some("enterprise"))
    );
    assert_eq!(
        (lead.employees, lead.annual_revenue),
        (Some(12_000), Some(3.0e9))
    );
    assert_eq!(
        (lead.occurred_at, lead.routed_at, lead.sla_deadline),
        (T0, ROUTED_AT, ROUTED_AT + 60_000)
    );
    assert_eq!(lead.rule_version, d.pipeline.rule_version());
    assert_eq!(headers["event_id"], "e1");
    assert_eq!(headers["decision_id"], lead.decision_id);
    assert_eq!(headers["rule_version"], lead.rule_version);
    assert_eq!(headers["correlation_id"], "corr-e1");
    assert_eq!(
        lead.decision_id,
        leadflow::sink::routed::decision_id("e1", d.pipeline.rule_version())
    );

    // The same event under the same rules in a fresh processor: the same decision id.
    let mut other = Driver::new(SCRIPT).await;
    apply_account(&other.store, "acc_1", Some(&acme())).unwrap();
    let again = other
        .contact(&contact_event("e1", "ct_1", T0, |c| {
            c.company_domain = Some("acme.com".into())
        }))
        .await;
    assert_eq!(routed(&again).0.decision_id, lead.decision_id);
}

/// With `outputs.assignments`, a decision is written twice: to its priority topic and, the
/// same record, keyed by contact, to the assignments topic.
#[tokio::test]
async fn a_decision_is_also_the_contacts_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(StateStore::open(&dir.path().join("state"), Duration::from_secs(3600)).unwrap());
    let mut t = topology(4096);
    t.outputs.assignments = Some("leads.assignments".into());
    let mut d = Driver::custom(SCRIPT, store, dir, t, Box::new(|| ROUTED_AT)).await;
    apply_account(&d.store, "acc_1", Some(&acme())).unwrap();
    let p = d
        .contact(&contact_event("e1", "ct_1", T0, |c| {
            c.company_domain = Some("acme.com".into())
        }))
        .await;
    assert_eq!(p.outcome, Outcome::Routed(Priority::P0));
    assert_eq!(p.outputs.len(), 2);
    let (routed, assignment) = (&p.outputs[0], &p.outputs[1]);
    assert_eq!(routed.topic, "leads.routed.p0");
    assert_eq!(assignment.topic, "leads.assignments");
    assert_eq!(assignment.kind, leadflow::sink::OutputKind::Assignment);
    assert_eq!(assignment.key.as_deref(), Some(b"ct_1".as_slice()));
    assert_eq!(assignment.headers, routed.headers);
    let decode_lead = |o: &leadflow::sink::OutputRecord| -> RoutedLead {
        let value = o.value.as_ref().unwrap();
        decode(
            canonical().get(SchemaKind::RoutedLead),
            SchemaKind::RoutedLead,
            &value[5..],
        )
        .unwrap()
    };
    assert_eq!(decode_lead(assignment), decode_lead(routed));
}

#[tokio::test]
async fn accounts_match_by_company_domain_then_work_email_never_free_mail() {
    let mut d = Driver::new(SCRIPT).await;
    apply_account(&d.store, "acc_1", Some(&acme())).unwrap();
    let by_email = d
        .contact(&contact_event("e1", "ct_1", T0, |c| {
            c.email = Some("ada@acme.com".into())
        }))
        .await;
    assert_eq!(routed(&by_email).0.account_id.as_deref(), Some("acc_1"));
    let free = d
        .contact(&contact_event("e2", "ct_2", T0, |c| {
            c.email = Some("ada@gmail.com".into())
        }))
        .await;
    assert_eq!(routed(&free).0.account_id, None);
    let free_domain = d
        .contact(&contact_event("e3", "ct_3", T0, |c| {
            c.company_domain = Some("gmail.com".into())
        }))
        .await;
    assert_eq!(routed(&free_domain).0.account_id, None);
    assert_eq!(free.outcome, Outcome::Routed(Priority::P2));
}

#[tokio::test]
async fn engagement_windows_and_unknown_contacts() {
    let mut d = Driver::new(SCRIPT).await;
    // Engagements before the contact exists are kept but not routed.
    let early = d
        .engagement(&engagement_event("g1", "ct_1", T0 - 30 * HOUR, "web_visit"))
        .await;
    assert_eq!(early.outcome, Outcome::NoDecision("unknown_contact"));
    assert!(early.outputs.is_empty());
    let c = d
        .contact(&contact_event("c1", "ct_1", T0 - 2 * HOUR, |_| {}))
        .await;
    assert!(
        routed(&c).0.reasons[0].starts_with("7d=1 24h=0 prev=none"),
        "{:?}",
        routed(&c).0.reasons
    );
    let g2 = d
        .engagement(&engagement_event(
            "g2",
            "ct_1",
            T0 - HOUR,
            "pricing_page_view",
        ))
        .await;
    let (lead, _) = routed(&g2);
    assert_eq!((lead.engagements_24h, lead.engagements_7d), (1, 2));
    assert_eq!(lead.reasons[0], "7d=2 24h=1 prev=P2 title=Engineer");
    let demo = d
        .engagement(&engagement_event("g3", "ct_1", T0, "demo_request"))
        .await;
    assert_eq!(demo.outcome, Outcome::Routed(Priority::P0));
    assert_eq!(routed(&demo).0.queue, "demo");
}

#[tokio::test]
async fn duplicates_are_skipped_by_event_id() {
    let mut d = Driver::new(SCRIPT).await;
    let e = contact_event("dup-1", "ct_1", T0, |_| {});
    assert_eq!(d.contact(&e).await.outcome, Outcome::Routed(Priority::P2));
    let mut retry = e.clone();
    retry.envelope.delivery_attempt = 2;
    let skipped = d.contact(&retry).await;
    assert_eq!(skipped.outcome, Outcome::Duplicate);
    assert!(skipped.outputs.is_empty() && skipped.writes.is_empty());
    let other = contact_event("dup-2", "ct_1", T0, |_| {});
    assert!(matches!(
        d.contact(&other).await.outcome,
        Outcome::Routed(_)
    ));
}

/// A contact's record keeps the marks of its events; one busier than the record holds
/// keeps the rest in the dedup store, and every re-delivery is still recognised.
#[tokio::test]
async fn a_busy_contact_spills_its_marks_and_every_redelivery_is_still_skipped() {
    use leadflow::state::{dedup::CAP, Cf};
    let mut d = Driver::new(SCRIPT).await;
    let extra = 20;
    let events: Vec<ContactEvent> = (0..CAP + extra)
        .map(|i| contact_event(&format!("busy-{i}"), "ct_busy", T0 + i as i64, |_| {}))
        .collect();
    for e in &events {
        assert!(matches!(d.contact(e).await.outcome, Outcome::Routed(_)));
    }
    assert_eq!(
        d.store.entries(Cf::Dedup).unwrap().len(),
        extra,
        "only the marks past the record's capacity go to the dedup store"
    );
    for i in [0, CAP - 1, CAP, CAP + extra - 1] {
        let mut again = events[i].clone();
        again.envelope.delivery_attempt = 2;
        let p = d.contact(&again).await;
        assert_eq!(p.outcome, Outcome::Duplicate, "busy-{i}");
        assert!(p.outputs.is_empty() && p.writes.is_empty());
    }
    let quiet = contact_event("quiet-1", "ct_quiet", T0, |_| {});
    assert!(matches!(
        d.contact(&quiet).await.outcome,
        Outcome::Routed(_)
    ));
    assert_eq!(d.contact(&quiet).await.outcome, Outcome::Duplicate);
    assert_eq!(d.store.entries(Cf::Dedup).unwrap().len(), extra);
}

/// After an upgrade, a contact record written before marks were kept in records still has
/// its events' marks, in the dedup store where that leadflow wrote them.
#[tokio::test]
async fn a_contact_record_of_the_old_layout_keeps_its_marks() {
    use leadflow::enrich::{engagement::History, profile::Profile};
    use leadflow::route::PreviousDecision;
    use leadflow::state::{partition_key, Cf, Write};
    let mut d = Driver::new(SCRIPT).await;
    // The old layout: profile, engagements, last decision; the mark in the dedup store.
    let old = postcard::to_stdvec(&(
        Some(Profile::new("ct_old")),
        History::default(),
        None::<PreviousDecision>,
    ))
    .unwrap();
    d.store
        .write(&[
            Write {
                cf: Cf::Contact,
                key: partition_key(0, b"ct_old"),
                value: Some(old),
            },
            Write {
                cf: Cf::Dedup,
                key: partition_key(0, b"old-1"),
                value: Some(leadflow::time::now_ms().to_be_bytes().to_vec()),
            },
        ])
        .unwrap();
    let seen_before = contact_event("old-1", "ct_old", T0, |_| {});
    assert_eq!(d.contact(&seen_before).await.outcome, Outcome::Duplicate);
    let new = contact_event("old-2", "ct_old", T0, |_| {});
    assert!(matches!(d.contact(&new).await.outcome, Outcome::Routed(_)));
    assert_eq!(d.contact(&new).await.outcome, Outcome::Duplicate);
    // Its record is of the new layout now, and still looks in the dedup store.
    assert_eq!(d.contact(&seen_before).await.outcome, Outcome::Duplicate);
}

#[tokio::test]
async fn profile_updates_merge_newest_field_wins() {
    let mut d = Driver::new(SCRIPT).await;
    d.contact(&contact_event("c1", "ct_1", T0, |c| {
        c.title = Some("CTO".into())
    }))
    .await;
    // An older update (arriving late) must not overwrite the newer title, but fills gaps.
    let old = contact_event("c2", "ct_1", T0 - HOUR, |c| {
        c.title = Some("Intern".into());
        c.company_name = Some("Initech".into());
        c.first_name = None;
    });
    let (lead, _) = routed(&d.contact(&old).await);
    assert!(lead.reasons[0].ends_with("title=CTO"), "{:?}", lead.reasons);
    assert_eq!(lead.company_name.as_deref(), Some("Initech"));
    assert_eq!(
        lead.first_name.as_deref(),
        Some("Ada"),
        "absent fields never erase"
    );
    let newer = contact_event("c3", "ct_1", T0 + HOUR, |c| {
        c.lifecycle_stage = Some("mql".into())
    });
    assert_eq!(
        d.contact(&newer).await.outcome,
        Outcome::Routed(Priority::P1)
    );
}

#[tokio::test]
async fn every_dlq_class_with_contract_headers() {
    let mut d = Driver::new(SCRIPT).await;
    let good = d
        .contacts
        .encode(&contact_event("x", "ct_9", T0, |_| {}))
        .unwrap();
    let topic = "crm.contacts.v1";
    let cases: Vec<(DlqClass, Processed)> = vec![
        (DlqClass::MissingKey, d.raw(topic, None, Some(&good)).await),
        (
            DlqClass::BadMagic,
            d.raw(topic, Some(b"ct_9"), Some(b"{\"json\":true}")).await,
        ),
        (
            DlqClass::UnknownSchemaId,
            d.raw(topic, Some(b"ct_9"), Some(&frame(987_654, &good[5..])))
                .await,
        ),
        (
            DlqClass::AvroDecode,
            d.raw(
                topic,
                Some(b"ct_9"),
                Some(&frame(d.contacts.schema_id(), &[0xff; 40])),
            )
            .await,
        ),
        (
            DlqClass::Oversize,
            d.raw(topic, Some(b"ct_9"), Some(&vec![0u8; 5000])).await,
        ),
        (
            DlqClass::BadTimestamp,
            d.contact(&contact_event("f1", "ct_f1", ROUTED_AT + 2 * HOUR, |_| {}))
                .await,
        ),
        (
            DlqClass::ScriptError,
            d.contact(&contact_event("s1", "ct_s1", T0, |c| {
                c.first_name = Some("Throw".into())
            }))
            .await,
        ),
        (
            DlqClass::ScriptTimeout,
            d.contact(&contact_event("s2", "ct_s2", T0, |c| {
                c.first_name = Some("Loop".into())
            }))
            .await,
        ),
        (
            DlqClass::InvalidDecision,
            d.contact(&contact_event("s3", "ct_s3", T0, |c| {
                c.first_name = Some("Bad".into())
            }))
            .await,
        ),
    ];
    for (class, p) in &cases {
        assert_eq!(p.outcome, Outcome::Dlq(*class));
        assert_eq!(p.outputs.len(), 1);
        let out = &p.outputs[0];
        assert_eq!(out.topic, "leads.dlq");
        let h: HashMap<&str, String> = out
            .headers
            .iter()
            .map(|(k, v)| (*k, String::from_utf8_lossy(v).into_owned()))
            .collect();
        assert_eq!(h["error.class"], class.as_str());
        assert!(!h["error.message"].is_empty());
        assert_eq!(h["source.topic"], topic);
        assert_eq!(h["source.partition"], "0");
        assert!(h["source.offset"].parse::<i64>().unwrap() > 0);
        assert_eq!(h["leadflow.version"], leadflow::VERSION);
        let scripted = matches!(
            class,
            DlqClass::ScriptError | DlqClass::ScriptTimeout | DlqClass::InvalidDecision
        );
        assert_eq!(h.contains_key("rule.version"), scripted, "{class:?}");
        assert!(
            !h["error.message"].contains("Throw"),
            "no field values in messages"
        );
    }
    // Original bytes are kept.
    assert_eq!(
        cases[1].1.outputs[0].value.as_deref(),
        Some(&b"{\"json\":true}"[..])
    );
    assert_eq!(cases[0].1.outputs[0].key, None);
    // An oversize record's copy keeps the start of its value and says how large it was.
    let oversize = &cases[4].1.outputs[0];
    assert_eq!(oversize.value.as_ref().map(Vec::len), Some(1024));
    assert!(oversize
        .headers
        .iter()
        .any(|(k, v)| *k == "original.size" && v == b"5000"));
    // The processor keeps going: the next event routes.
    assert!(matches!(
        d.contact(&contact_event("ok", "ct_ok", T0, |_| {}))
            .await
            .outcome,
        Outcome::Routed(_)
    ));
    // A script that returns () is not an error.
    let quiet = d
        .contact(&contact_event("q", "ct_q", T0, |c| {
            c.first_name = Some("Quiet".into())
        }))
        .await;
    assert_eq!(quiet.outcome, Outcome::NoDecision("script_returned_unit"));
}

/// State reaches RocksDB only on commit: later records see staged writes, a crash before
/// commit leaves nothing behind, so the events are processed again after a restart.
#[tokio::test]
async fn uncommitted_state_is_visible_but_not_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let store = Arc::new(StateStore::open(&path, Duration::from_secs(3600)).unwrap());
    let mut d = Driver::with_store(SCRIPT, store, tempfile::tempdir().unwrap()).await;
    let e = contact_event("c1", "ct_1", T0, |_| {});
    let value = d.contacts.encode(&e).unwrap();
    let first = d
        .raw_uncommitted("crm.contacts.v1", Some(b"ct_1"), Some(&value))
        .await;
    assert!(matches!(first.outcome, Outcome::Routed(_)));
    // The same event again before commit: the staged de-duplication mark already applies.
    let again = d
        .raw_uncommitted("crm.contacts.v1", Some(b"ct_1"), Some(&value))
        .await;
    assert_eq!(again.outcome, Outcome::Duplicate);
    // "Crash": drop everything without committing, reopen the store.
    let registry = d.registry.clone();
    drop(d);
    let _ = registry;
    let reopened = Arc::new(StateStore::open(&path, Duration::from_secs(3600)).unwrap());
    let mut after = Driver::with_store(SCRIPT, reopened, dir).await;
    let replay = after
        .raw(
            "crm.contacts.v1",
            Some(b"ct_1"),
            Some(&after.contacts.encode(&e).unwrap()),
        )
        .await;
    assert!(
        matches!(replay.outcome, Outcome::Routed(_)),
        "replayed, not skipped: {:?}",
        replay.outcome
    );
    assert_eq!(routed(&replay).0.decision_id, routed(&first).0.decision_id);
}

// ---- Event time: watermarks, idle inputs, lateness policies (docs/event-time.md) ----

const MINUTE: i64 = 60_000;

/// A wall clock the test moves by hand.
#[derive(Clone)]
struct ManualClock(Arc<std::sync::atomic::AtomicI64>);

impl ManualClock {
    fn new() -> ManualClock {
        ManualClock(Arc::new(std::sync::atomic::AtomicI64::new(ROUTED_AT)))
    }

    fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    fn clock(&self) -> leadflow::pipeline::Clock {
        let at = self.0.clone();
        Box::new(move || at.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// Grace 5 minutes, inputs idle after 60 s of wall time, the given policy.
async fn timed_driver(policy: &str, clock: &ManualClock) -> Driver {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(StateStore::open(&dir.path().join("state"), Duration::from_secs(3600)).unwrap());
    timed_driver_on(policy, clock, store, dir).await
}

async fn timed_driver_on(
    policy: &str,
    clock: &ManualClock,
    store: Arc<StateStore>,
    dir: tempfile::TempDir,
) -> Driver {
    let mut t = topology(4096);
    t.lateness.grace = Duration::from_secs(300);
    t.lateness.idle_timeout = Duration::from_secs(60);
    t.lateness.policy = leadflow::time::LatenessPolicy::parse(policy).unwrap();
    Driver::custom(SCRIPT, store, dir, t, clock.clock()).await
}

fn late_event_of(p: &Processed) -> (LateEvent, HashMap<&'static str, String>) {
    let (event, key, topic, headers) = single_output::<LateEvent>(p, SchemaKind::LateEvent);
    assert_eq!(topic, "leads.late");
    assert_eq!(key.as_deref(), Some(event.aggregate_id.as_str()));
    (event, headers)
}

#[tokio::test]
async fn late_events_follow_each_policy() {
    use leadflow::time::LatenessPolicy;
    for policy in ["side_output", "process", "drop"] {
        let clock = ManualClock::new();
        let mut d = timed_driver(policy, &clock).await;
        // Both inputs at T0: watermark = T0 − 5 min.
        d.contact(&contact_event("c1", "ct_1", T0, |_| {})).await;
        d.engagement(&engagement_event("g1", "ct_1", T0, "web_visit"))
            .await;
        // 4 minutes behind: out of order but within grace, an ordinary event.
        let on_time = d
            .engagement(&engagement_event(
                "g2",
                "ct_1",
                T0 - 4 * MINUTE,
                "web_visit",
            ))
            .await;
        let (lead, headers) = routed(&on_time);
        assert!(
            !lead.reasons.iter().any(|r| r.starts_with("late")),
            "{policy}"
        );
        assert!(!headers.contains_key("late"));
        // 10 minutes behind: 5 minutes behind the watermark.
        let g3 = engagement_event("g3", "ct_1", T0 - 10 * MINUTE, "web_visit");
        let value = d.engagements.encode(&g3).unwrap();
        let late = d
            .raw("crm.engagements.v1", Some(b"ct_1"), Some(&value))
            .await;
        match policy {
            "side_output" => {
                assert_eq!(late.outcome, Outcome::Late(LatenessPolicy::SideOutput));
                let (event, headers) = late_event_of(&late);
                assert_eq!(event.event_id, "g3");
                assert_eq!(event.event_type, "Engagement.recorded");
                assert_eq!(event.source_topic, "crm.engagements.v1");
                assert_eq!(event.occurred_at, T0 - 10 * MINUTE);
                assert_eq!(event.watermark, T0 - 5 * MINUTE);
                assert_eq!(event.lateness_ms, 5 * MINUTE);
                assert_eq!(event.observed_at, ROUTED_AT);
                assert_eq!(event.original, value, "the input value, unchanged");
                assert_eq!(headers["event_id"], "g3");
                assert_eq!(headers["correlation_id"], "corr-g3");
                assert_eq!(headers["rule_version"], d.pipeline.rule_version());
            }
            "process" => {
                assert!(matches!(late.outcome, Outcome::Routed(_)));
                let (lead, headers) = routed(&late);
                assert_eq!(headers["late"], "true");
                assert!(
                    lead.reasons
                        .contains(&"late: 300000 ms behind the watermark".to_string()),
                    "{:?}",
                    lead.reasons
                );
            }
            _ => {
                assert_eq!(late.outcome, Outcome::Late(LatenessPolicy::Drop));
                assert!(late.outputs.is_empty());
            }
        }
        // Applied to state only under `process`: g1, g2 (+ g3) + this one.
        let next = d
            .engagement(&engagement_event("g4", "ct_1", T0, "web_visit"))
            .await;
        let want = if policy == "process" { 4 } else { 3 };
        assert_eq!(routed(&next).0.engagements_7d, want, "{policy}");
        // A re-delivery of the late event is a duplicate, whatever the policy.
        let again = d
            .raw("crm.engagements.v1", Some(b"ct_1"), Some(&value))
            .await;
        assert_eq!(again.outcome, Outcome::Duplicate, "{policy}");
    }
}

#[tokio::test]
async fn the_slower_input_holds_the_watermark() {
    let clock = ManualClock::new();
    let mut d = timed_driver("side_output", &clock).await;
    d.contact(&contact_event("c1", "ct_1", T0, |_| {})).await;
    // Engagements lag two hours behind contacts: they hold the watermark at T0 − 2 h − 5 min.
    d.engagement(&engagement_event("g1", "ct_1", T0 - 2 * HOUR, "web_visit"))
        .await;
    let behind_contacts = d
        .contact(&contact_event("c2", "ct_1", T0 - HOUR, |_| {}))
        .await;
    assert!(
        matches!(behind_contacts.outcome, Outcome::Routed(_)),
        "an hour behind its own input but ahead of the watermark: {:?}",
        behind_contacts.outcome
    );
    // Engagements catch up: the watermark moves to T0 − 5 min.
    d.engagement(&engagement_event("g2", "ct_1", T0, "web_visit"))
        .await;
    let now_late = d
        .contact(&contact_event("c3", "ct_1", T0 - HOUR, |_| {}))
        .await;
    assert_eq!(
        now_late.outcome,
        Outcome::Late(leadflow::time::LatenessPolicy::SideOutput)
    );
    assert_eq!(late_event_of(&now_late).0.watermark, T0 - 5 * MINUTE);
}

#[tokio::test]
async fn an_idle_input_is_released_after_the_timeout_and_holds_again_when_it_returns() {
    let clock = ManualClock::new();
    let mut d = timed_driver("side_output", &clock).await;
    d.contact(&contact_event("c1", "ct_1", T0, |_| {})).await;
    d.engagement(&engagement_event("g1", "ct_1", T0 - 3 * HOUR, "web_visit"))
        .await;
    // Engagements hold the watermark at T0 − 3 h − 5 min.
    let held = d
        .contact(&contact_event("c2", "ct_1", T0 - 2 * HOUR, |_| {}))
        .await;
    assert!(matches!(held.outcome, Outcome::Routed(_)));
    // 59 s without engagements: still held.
    clock.advance(59_000);
    let still = d
        .contact(&contact_event("c3", "ct_1", T0 - 2 * HOUR, |_| {}))
        .await;
    assert!(
        matches!(still.outcome, Outcome::Routed(_)),
        "{:?}",
        still.outcome
    );
    // 60 s since the last engagement: engagements are idle, contacts alone set the
    // watermark (T0 − 5 min), so a contact two hours back is late now.
    clock.advance(1_000);
    let released = d
        .contact(&contact_event("c4", "ct_1", T0 - 2 * HOUR, |_| {}))
        .await;
    assert_eq!(
        released.outcome,
        Outcome::Late(leadflow::time::LatenessPolicy::SideOutput)
    );
    assert_eq!(late_event_of(&released).0.watermark, T0 - 5 * MINUTE);
    // Engagements return: they hold the watermark again, but it never moves back, so their
    // own old record is late, and a contact at or after the watermark is not.
    let back = d
        .engagement(&engagement_event("g2", "ct_1", T0 - 3 * HOUR, "web_visit"))
        .await;
    assert_eq!(
        back.outcome,
        Outcome::Late(leadflow::time::LatenessPolicy::SideOutput)
    );
    let within = d
        .contact(&contact_event("c5", "ct_1", T0 - 5 * MINUTE, |_| {}))
        .await;
    assert!(
        matches!(within.outcome, Outcome::Routed(_)),
        "{:?}",
        within.outcome
    );
}

#[tokio::test]
async fn the_watermark_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let clock = ManualClock::new();
    let store = Arc::new(StateStore::open(&path, Duration::from_secs(3600)).unwrap());
    let mut d = timed_driver_on("side_output", &clock, store, tempfile::tempdir().unwrap()).await;
    d.contact(&contact_event("c1", "ct_1", T0, |_| {})).await;
    d.engagement(&engagement_event("g1", "ct_1", T0, "web_visit"))
        .await;
    drop(d);
    let reopened = Arc::new(StateStore::open(&path, Duration::from_secs(3600)).unwrap());
    let mut after = timed_driver_on("side_output", &clock, reopened, dir).await;
    // The restored watermark (T0 − 5 min) applies at once, before any input is seen again.
    let late = after
        .contact(&contact_event("c2", "ct_1", T0 - HOUR, |_| {}))
        .await;
    assert_eq!(
        late.outcome,
        Outcome::Late(leadflow::time::LatenessPolicy::SideOutput)
    );
    assert_eq!(late_event_of(&late).0.watermark, T0 - 5 * MINUTE);
}

/// An event stamped far ahead of the wall clock (a producer writing microseconds) is a
/// `bad_timestamp` poison pill: it never reaches the watermark, so what follows is on time.
#[tokio::test]
async fn a_far_future_event_never_moves_the_watermark() {
    let clock = ManualClock::new();
    let mut d = timed_driver("side_output", &clock).await;
    d.contact(&contact_event("c1", "ct_1", T0, |_| {})).await;
    d.engagement(&engagement_event("g1", "ct_1", T0, "web_visit"))
        .await;
    let future = d
        .engagement(&engagement_event(
            "g2",
            "ct_1",
            ROUTED_AT + 3 * HOUR,
            "web_visit",
        ))
        .await;
    assert_eq!(future.outcome, Outcome::Dlq(DlqClass::BadTimestamp));
    assert!(future.writes.is_empty(), "a bad timestamp touched state");
    let message = future.outputs[0]
        .headers
        .iter()
        .find(|(k, _)| *k == "error.message")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap();
    assert!(
        message.contains("3h ahead of the wall clock") && message.contains("max_clock_skew"),
        "{message}"
    );
    // 4 minutes behind T0 is within grace of T0, not of the far-future time.
    let after = d
        .engagement(&engagement_event(
            "g3",
            "ct_1",
            T0 - 4 * MINUTE,
            "web_visit",
        ))
        .await;
    assert!(
        matches!(after.outcome, Outcome::Routed(_)),
        "{:?}",
        after.outcome
    );
    // Half an hour ahead is within the default skew of an hour: an ordinary event.
    let soon = d
        .contact(&contact_event(
            "c2",
            "ct_1",
            ROUTED_AT + 30 * MINUTE,
            |_| {},
        ))
        .await;
    assert!(
        matches!(soon.outcome, Outcome::Routed(_)),
        "{:?}",
        soon.outcome
    );
}

/// The audit record of each record that reached routing, beside its other outputs: routed,
/// no decision, a script failure (beside its DLQ record) and an unknown contact; none for a
/// re-delivery.
#[tokio::test]
async fn with_an_audit_topic_every_evaluated_event_has_its_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(StateStore::open(&dir.path().join("state"), Duration::from_secs(3600)).unwrap());
    let mut t = topology(4096);
    t.outputs.audit = Some("leads.audit".into());
    let mut d = Driver::custom(SCRIPT, store, dir, t, Box::new(|| ROUTED_AT)).await;
    let audit_of = |p: &Processed| -> LeadAudit {
        let audits: Vec<_> = p
            .outputs
            .iter()
            .filter(|o| o.kind == leadflow::sink::OutputKind::Audit)
            .collect();
        assert_eq!(audits.len(), 1, "{:?}", p.outcome);
        let o = audits[0];
        assert_eq!(o.topic, "leads.audit");
        let audit: LeadAudit = decode(
            canonical().get(SchemaKind::LeadAudit),
            SchemaKind::LeadAudit,
            &o.value.as_ref().unwrap()[5..],
        )
        .unwrap();
        assert_eq!(o.key.as_deref(), Some(audit.contact_id.as_bytes()));
        assert!(o
            .headers
            .contains(&("event_id", audit.event_id.clone().into_bytes())));
        audit
    };

    let unknown = d
        .engagement(&engagement_event("g0", "ct_9", T0 - HOUR, "web_visit"))
        .await;
    let a = audit_of(&unknown);
    assert_eq!(
        (a.outcome.as_str(), a.event_id.as_str()),
        ("unknown_contact", "g0")
    );
    assert!(a.lead.is_none() && a.trace.is_empty());

    let routed_p = d.contact(&contact_event("c1", "ct_1", T0, |_| {})).await;
    assert_eq!(routed_p.outputs[0].kind, leadflow::sink::OutputKind::Routed);
    let lead: RoutedLead = decode(
        canonical().get(SchemaKind::RoutedLead),
        SchemaKind::RoutedLead,
        &routed_p.outputs[0].value.as_ref().unwrap()[5..],
    )
    .unwrap();
    let a = audit_of(&routed_p);
    assert_eq!(a.outcome, "routed");
    assert_eq!(a.decision_id.as_deref(), Some(lead.decision_id.as_str()));
    assert_eq!(
        (a.priority.as_deref(), a.queue.as_deref()),
        (Some("P2"), Some("inside-sales"))
    );
    assert_eq!(a.reasons, lead.reasons);
    assert_eq!(a.evaluated_at, ROUTED_AT);
    let seen: serde_json::Value = serde_json::from_str(a.lead.as_deref().unwrap()).unwrap();
    assert_eq!(seen["first_name"], "Ada");
    assert_eq!(seen["engagement"]["count_7d"], 0);
    assert_eq!(seen["previous"], serde_json::Value::Null);
    // Every `if` of the script up to the fallback ran; only `lead.previous == ()` held.
    let ifs: Vec<_> = a.trace.iter().map(|s| (s.kind.as_str(), s.taken)).collect();
    let f = ("if", Some(false));
    let expected = [f, f, f, f, ("if", Some(true)), f, f, f];
    assert_eq!(ifs, expected, "{:#?}", a.trace);
    assert_eq!(a.trace[4].detail, "lead.previous == ()");

    let quiet = d
        .contact(&contact_event("c2", "ct_2", T0, |c| {
            c.first_name = Some("Quiet".into())
        }))
        .await;
    let a = audit_of(&quiet);
    assert_eq!(a.outcome, "none");
    assert_eq!(a.trace[3].detail, "lead.first_name == \"Quiet\"");
    assert_eq!(a.trace[3].taken, Some(true));
    assert_eq!(quiet.outputs.len(), 1, "the audit record only");

    let throw = d
        .contact(&contact_event("c3", "ct_3", T0, |c| {
            c.first_name = Some("Throw".into())
        }))
        .await;
    assert_eq!(throw.outcome, Outcome::Dlq(DlqClass::ScriptError));
    let a = audit_of(&throw);
    assert_eq!(a.outcome, "script_error");
    assert!(
        a.error.as_deref().unwrap().contains("threw an error"),
        "{a:?}"
    );
    assert_eq!(a.trace.last().unwrap().taken, Some(true), "the `Throw` if");
    assert_eq!(
        throw.outputs.len(),
        2,
        "the DLQ record and the audit record"
    );

    let again = d.contact(&contact_event("c1", "ct_1", T0, |_| {})).await;
    assert_eq!(again.outcome, Outcome::Duplicate);
    assert!(again.outputs.is_empty());
}
