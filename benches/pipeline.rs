//! Hot-path benchmarks: decode, route (shipped rules, compiled and interpreted), encode, and
//! the whole in-process pipeline (decode → state → route → encode → commit, RocksDB on disk,
//! no broker), with the rules compiled and interpreted, next to a baseline measured in the
//! same run (decode and re-encode only).
//!
//! `make bench` (`cargo bench --profile release --bench pipeline`); throughput is reported in events/s ("elements").
//!
//! `make bench-scale` (`LEADFLOW_BENCH_CONTACTS=N`, 10^7 by default) runs only the `scale`
//! group instead: `process_and_commit` with 10^5 and with N contacts of state on disk, a
//! quarter of the engagements going to a random one of them, and the process's RSS after each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use leadflow::codec::{canonical, decode, DatumDecoder, Encoder, RegistryClient, SchemaKind};
use leadflow::enrich::contact::ContactState;
use leadflow::enrich::profile::Profile;
use leadflow::gen::{GenConfig, StreamEvent, Traffic};
use leadflow::model::{Account, Contact};
use leadflow::model::{ContactEvent, EngagementEvent};
use leadflow::pipeline::{InputRecord, Outcome, Pipeline};
use leadflow::route::{EngagementStats, Lead, Rules, ScriptLimits};
use leadflow::state::{partition_key, reference::apply_account, Cf, StateStore, Write};

/// The allocator of the `leadflow` binary, so the figures are the processor's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Fixture {
    rt: tokio::runtime::Runtime,
    pipeline: Pipeline,
    contacts: Encoder,
    engagements: Encoder,
    traffic: Traffic,
    offset: i64,
    store: Arc<StateStore>,
    /// Contacts stored by [`Fixture::fill`]; a quarter of the engagements go to one of them.
    cold: u64,
    engagements_seen: u64,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// `interpreted`: the rules run in the Rhai interpreter only (the rules compiler off).
    /// `sla`: decisions are timed against their SLA as shipped (`inputs.acks`); without it the
    /// job is the Kafka Streams twin's. `audit`: every evaluated event also gets its
    /// `LeadAudit` (`outputs.audit`), with a traced rerun of the rules. `reps`: the reps table
    /// is loaded, so a decision's owner is checked against it and booked as an open lead
    /// (contracts §10.20), as in `leadflow run` with the generator's reps.
    fn new(interpreted: bool, sla: bool, audit: bool, reps: bool) -> Fixture {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(StateStore::open(dir.path(), Duration::from_secs(7 * 86_400)).unwrap());
        let mut traffic = Traffic::new(&GenConfig::in_process(1));
        let (accounts, rep_events) = traffic.reference();
        for a in &accounts {
            apply_account(&store, &a.payload.account_id, Some(&a.payload)).unwrap();
        }
        if reps {
            for r in &rep_events {
                leadflow::state::reference::apply_rep(&store, &r.payload.rep_id, Some(&r.payload))
                    .unwrap();
            }
        }
        let (pipeline, contacts, engagements) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let registry_store = Arc::new(leadflow::registry::Store::in_memory());
            tokio::spawn(async move {
                axum::serve(listener, leadflow::registry::router(registry_store)).await
            });
            let registry = RegistryClient::new(&url).unwrap();
            let rules =
                Rules::load("rules/routing.rhai".as_ref(), &ScriptLimits::default()).unwrap();
            let rules = Arc::new(if interpreted {
                rules.interpreted()
            } else {
                rules
            });
            let mut topology =
                leadflow::topology::load("topologies/lead-routing.yaml".as_ref()).unwrap();
            if !sla {
                topology.acks = None;
            }
            // Figures stay comparable with those before leads.assignments (docs/performance.md):
            // its copy of each decision is not measured here.
            topology.outputs.assignments = None;
            topology.outputs.audit = audit.then(|| leadflow::topics::AUDIT.to_string());
            let mut pipeline = Pipeline::start(
                topology,
                rules,
                registry.clone(),
                store.clone(),
                leadflow::pipeline::wall_clock(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            pipeline.set_tasks(6);
            let c = registry
                .register("crm.contacts.v1-value", SchemaKind::ContactEvent.source())
                .await
                .unwrap();
            let e = registry
                .register(
                    "crm.engagements.v1-value",
                    SchemaKind::EngagementEvent.source(),
                )
                .await
                .unwrap();
            // Warm the writer-schema cache as a running processor would have it.
            registry.schema_by_id(c).await.unwrap();
            registry.schema_by_id(e).await.unwrap();
            (
                pipeline,
                Encoder::new(SchemaKind::ContactEvent, c).unwrap(),
                Encoder::new(SchemaKind::EngagementEvent, e).unwrap(),
            )
        });
        Fixture {
            rt,
            pipeline,
            contacts,
            engagements,
            traffic,
            offset: 0,
            store,
            cold: 0,
            engagements_seen: 0,
            _dir: dir,
        }
    }

    /// Stores `n` more contacts, each a copy of a real contact's record (profile and
    /// engagements, as the pipeline wrote them) under its own id, in the partition its key
    /// hashes to, as the pipeline would have them after `n` contacts.
    fn fill(&mut self, n: u64) {
        process_and_commit(self, 2_000);
        let template = self
            .store
            .entries(Cf::Contact)
            .unwrap()
            .into_iter()
            .filter_map(|(_, v)| ContactState::from_bytes(&v).ok())
            .find(|c| c.profile.is_some() && !c.history.is_empty())
            .expect("a contact with a profile and engagements");
        let contact = template.profile.as_ref().unwrap().contact();
        let mut batch = Vec::with_capacity(10_000);
        for i in 0..n {
            let id = cold_id(self.cold + i);
            let mut profile = Profile::new(&id);
            profile.merge(&Contact {
                contact_id: id.clone(),
                ..contact.clone()
            });
            let state = ContactState {
                profile: Some(profile),
                history: template.history.clone(),
                previous: None,
                seen: Default::default(),
            };
            batch.push(Write {
                cf: Cf::Contact,
                key: partition_key(partition_of(&id), id.as_bytes()),
                value: Some(state.to_bytes()),
            });
            if batch.len() == batch.capacity() {
                self.store.write(&batch).unwrap();
                batch.clear();
            }
        }
        self.store.write(&batch).unwrap();
        self.cold += n;
    }

    /// The next `n` generated events as (topic, key, framed value).
    fn records(&mut self, n: u64) -> Vec<(&'static str, String, Vec<u8>)> {
        (0..n)
            .map(|_| match self.traffic.next_event().event {
                StreamEvent::Contact(e) => (
                    "crm.contacts.v1",
                    e.envelope.aggregate_id.clone(),
                    self.contacts.encode(&e).unwrap(),
                ),
                StreamEvent::Engagement(mut e) => {
                    self.engagements_seen += 1;
                    if self.cold > 0 && self.engagements_seen % 4 == 0 {
                        let id = cold_id(splitmix(self.engagements_seen) % self.cold);
                        e.payload.contact_id = id.clone();
                        e.envelope.aggregate_id = id;
                    }
                    (
                        "crm.engagements.v1",
                        e.envelope.aggregate_id.clone(),
                        self.engagements.encode(&e).unwrap(),
                    )
                }
            })
            .collect()
    }
}

/// The id of the `i`th contact stored by [`Fixture::fill`].
fn cold_id(i: u64) -> String {
    format!("ct_cold{i:012x}")
}

/// A well-mixed 64-bit hash (splitmix64's finaliser): picks cold contacts evenly.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Like Kafka: the key decides the partition, so a contact's state stays together.
fn partition_of(key: &str) -> i32 {
    (key.bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % 6) as i32
}

/// The resident set of this process, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// `process_and_commit` at 10^5 and at `contacts` contacts of state on disk.
fn scale(c: &mut Criterion, contacts: u64) {
    let mut group = c.benchmark_group("scale");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(20));
    group.sample_size(20);
    let mut fx = Fixture::new(false, false, false, false);
    for (name, total) in [
        ("process_and_commit_1e5_contacts", 100_000),
        ("process_and_commit_many_contacts", contacts),
    ] {
        let started = Instant::now();
        fx.fill(total - fx.cold);
        fx.store.compact(Cf::Contact);
        eprintln!(
            "scale: {} contacts stored in {:.0} s; RSS {} MiB",
            fx.cold,
            started.elapsed().as_secs_f64(),
            rss_mib()
        );
        group.bench_function(name, |b| {
            b.iter_custom(|iters| process_and_commit(&mut fx, iters))
        });
        eprintln!("scale: after {name}: RSS {} MiB", rss_mib());
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    if let Ok(contacts) = std::env::var("LEADFLOW_BENCH_CONTACTS") {
        let contacts = contacts
            .parse()
            .expect("LEADFLOW_BENCH_CONTACTS: a number of contacts");
        assert!(
            contacts >= 100_000,
            "LEADFLOW_BENCH_CONTACTS: at least 100000"
        );
        return scale(c, contacts);
    }
    let mut fx = Fixture::new(false, false, false, false);
    let mut interpreted_fx = Fixture::new(true, false, false, false);
    let mut sla_fx = Fixture::new(false, true, false, false);
    let mut audit_fx = Fixture::new(false, false, true, false);
    let mut reps_fx = Fixture::new(false, false, false, true);
    let sample = fx.records(2_000);

    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::Elements(1));
    let contact_value = sample
        .iter()
        .find(|r| r.0 == "crm.contacts.v1")
        .unwrap()
        .2
        .clone();
    let writer = canonical().get(SchemaKind::ContactEvent);
    // As the pipeline decodes: the writer is our canonical schema, read without resolution.
    let mut decoder = DatumDecoder::new();
    group.bench_function("decode_contact", |b| {
        b.iter(|| {
            decoder
                .decode_event::<ContactEvent>(
                    1,
                    writer,
                    SchemaKind::ContactEvent,
                    &contact_value[5..],
                )
                .unwrap()
        })
    });
    // A writer schema that differs from ours is resolved against it on every record.
    group.bench_function("decode_contact_resolving", |b| {
        b.iter(|| {
            decode::<ContactEvent>(writer, SchemaKind::ContactEvent, &contact_value[5..]).unwrap()
        })
    });
    let event: ContactEvent =
        decode(writer, SchemaKind::ContactEvent, &contact_value[5..]).unwrap();
    group.bench_function("encode_contact", |b| {
        b.iter(|| fx.contacts.encode(&event).unwrap())
    });
    // The shipped rules on four kinds of lead, in turn: compiled (as leadflow runs them),
    // then in the interpreter alone.
    let rules = Rules::load("rules/routing.rhai".as_ref(), &ScriptLimits::default()).unwrap();
    let leads = sample_leads();
    let mut next = 0;
    group.bench_function("route_default_rules", |b| {
        b.iter(|| {
            next = (next + 1) % leads.len();
            rules.evaluate(&leads[next]).unwrap()
        })
    });
    // What an audited event costs on top: the traced rerun (`rules explain`).
    group.bench_function("route_default_rules_explained", |b| {
        b.iter(|| {
            next = (next + 1) % leads.len();
            rules.explain(&leads[next])
        })
    });
    let interpreted = rules.interpreted();
    group.bench_function("route_default_rules_interpreted", |b| {
        b.iter(|| {
            next = (next + 1) % leads.len();
            interpreted.evaluate(&leads[next]).unwrap()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    // Baseline: decode (as the pipeline does) and re-encode every event, nothing else.
    group.bench_function("baseline_decode_reencode", |b| {
        b.iter_custom(|iters| {
            let batch: Vec<_> = (0..iters as usize)
                .map(|i| &sample[i % sample.len()])
                .collect();
            let start = Instant::now();
            for (topic, _, value) in batch {
                if *topic == "crm.contacts.v1" {
                    let e: ContactEvent = decoder
                        .decode_event(1, writer, SchemaKind::ContactEvent, &value[5..])
                        .unwrap();
                    std::hint::black_box(fx.contacts.encode(&e).unwrap());
                } else {
                    let w = canonical().get(SchemaKind::EngagementEvent);
                    let e: EngagementEvent = decoder
                        .decode_event(2, w, SchemaKind::EngagementEvent, &value[5..])
                        .unwrap();
                    std::hint::black_box(fx.engagements.encode(&e).unwrap());
                }
            }
            start.elapsed()
        })
    });
    // The whole core: every event new (fresh ids), state on disk, default rules, commit.
    group.bench_function("process_and_commit", |b| {
        b.iter_custom(|iters| process_and_commit(&mut fx, iters))
    });
    group.bench_function("process_and_commit_interpreted", |b| {
        b.iter_custom(|iters| process_and_commit(&mut interpreted_fx, iters))
    });
    // The same with SLA tracking on (every decision also stages its timer).
    group.bench_function("process_and_commit_sla", |b| {
        b.iter_custom(|iters| process_and_commit(&mut sla_fx, iters))
    });
    // The same with the audit topic on (a traced rerun and a LeadAudit per evaluated event).
    group.bench_function("process_and_commit_audit", |b| {
        b.iter_custom(|iters| process_and_commit(&mut audit_fx, iters))
    });
    // The same with the reps table loaded: owners checked, open leads booked per task.
    group.bench_function("process_and_commit_reps", |b| {
        b.iter_custom(|iters| process_and_commit(&mut reps_fx, iters))
    });
    group.finish();
}

/// Like a stream thread: one task processes the records in turn, and completed records are
/// committed in runs (the runtime commits every run of records whose outputs were delivered
/// in one RocksDB write; here a run is COMMIT_RUN records).
fn process_and_commit(fx: &mut Fixture, iters: u64) -> Duration {
    const COMMIT_RUN: usize = 64;
    let batch = fx.records(iters);
    let Fixture {
        rt,
        pipeline,
        offset,
        ..
    } = fx;
    let start = Instant::now();
    rt.block_on(async {
        let mut done = Vec::with_capacity(COMMIT_RUN);
        for (topic, key, value) in &batch {
            *offset += 1;
            let record = InputRecord {
                topic,
                partition: partition_of(key),
                offset: *offset,
                timestamp: None,
                key: Some(key.as_bytes()),
                value: Some(value),
            };
            let processed = pipeline.process(&record).await.unwrap();
            // A bench of the reject path would look very fast: refuse to measure it.
            if let Outcome::Dlq(class) = processed.outcome {
                panic!("generated event rejected as {class:?}; the bench is broken");
            }
            done.push(processed);
            if done.len() == COMMIT_RUN {
                pipeline.commit_all(done.iter(), &[]).unwrap();
                done.clear();
            }
        }
        pipeline.commit_all(done.iter(), &[]).unwrap();
    });
    start.elapsed()
}

/// An enterprise demo request, a regional MQL with intent, a free-mail newsletter sign-up
/// and a customer's support chat: the main branches of rules/routing.rhai.
fn sample_leads() -> Vec<Lead> {
    let contact = |id: &str, email: &str, stage: &str, region: &str| Contact {
        contact_id: id.into(),
        email: Some(email.into()),
        phone: None,
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        title: Some("VP Sales".into()),
        company_name: Some("Acme".into()),
        company_domain: email.split('@').nth(1).map(str::to_string),
        country: Some("DE".into()),
        region: Some(region.into()),
        lifecycle_stage: Some(stage.into()),
        lead_source: Some("web".into()),
        product_interest: Some("routing".into()),
        consent_marketing: true,
        attributes: Default::default(),
        updated_at: 1_767_600_000_000,
    };
    let account = |tier: &str, employees: i32| Account {
        account_id: "acc_1".into(),
        domain: "acme.example".into(),
        name: "Acme".into(),
        employees: Some(employees),
        annual_revenue: Some(f64::from(employees) * 200_000.0),
        industry: Some("software".into()),
        region: Some("emea".into()),
        tier: Some(tier.into()),
        owner_rep_id: Some("rep_1".into()),
        updated_at: 1_767_600_000_000,
    };
    let engagement = |n: i64, pricing: i64, demo: bool, last: &str| EngagementStats {
        count_24h: n.min(3),
        count_7d: n,
        pricing_views_7d: pricing,
        demo_requested: demo,
        last_type: Some(last.into()),
        last_at: Some(1_767_600_000_000),
    };
    let lead = |contact, account, engagement, event_type: &str| Lead {
        contact,
        event_type: event_type.into(),
        source: "hubspot".into(),
        occurred_at: 1_767_600_000_000,
        score: 50,
        account,
        engagement,
        previous: None,
    };
    vec![
        lead(
            contact("ct_1", "ada@acme.example", "sql", "emea"),
            Some(account("enterprise", 5_000)),
            engagement(6, 2, true, "demo_request"),
            "Engagement.recorded",
        ),
        lead(
            contact("ct_2", "bo@mid.example", "mql", "na"),
            Some(account("mid_market", 400)),
            engagement(4, 3, false, "pricing_page_view"),
            "Engagement.recorded",
        ),
        lead(
            contact("ct_3", "cy@gmail.com", "subscriber", "apac"),
            None,
            engagement(1, 0, false, "email_open"),
            "Contact.created",
        ),
        lead(
            contact("ct_4", "di@cust.example", "customer", "emea"),
            Some(account("smb", 40)),
            engagement(2, 0, false, "chat"),
            "Engagement.recorded",
        ),
    ]
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
