//! Hot-path benchmarks: decode, route (shipped rules), encode, and the whole in-process
//! pipeline (decode → state → route → encode → commit, RocksDB on disk, no broker) next to a
//! baseline measured in the same run (decode and re-encode only).
//!
//! `cargo bench --bench pipeline` ; throughput is reported in events/s ("elements").

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use leadflow::codec::{canonical, decode, Encoder, RegistryClient, SchemaKind};
use leadflow::gen::{DisorderSpec, GenConfig, StreamEvent, Traffic};
use leadflow::kafka::KafkaSettings;
use leadflow::model::{ContactEvent, EngagementEvent};
use leadflow::pipeline::{InputRecord, Pipeline};
use leadflow::route::{Rules, ScriptLimits};
use leadflow::state::{reference::apply_account, StateStore};

fn gen_config(seed: u64) -> GenConfig {
    GenConfig {
        kafka: KafkaSettings::new("unused:9092"),
        registry_url: String::new(),
        registry_wait: Duration::from_secs(1),
        topic_prefix: String::new(),
        seed,
        count: u64::MAX,
        accounts: 2_000,
        reps: 48,
        reference_data: true,
        rate: 0.0,
        start_ms: 1_767_600_000_000,
        disorder: DisorderSpec {
            duplicates: 0.0,
            out_of_order: 0.0,
            late: 0.0,
            bound_ms: 300_000,
            mean_gap_ms: 1000,
        },
        progress: false,
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    pipeline: Pipeline,
    contacts: Encoder,
    engagements: Encoder,
    traffic: Traffic,
    offset: i64,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(StateStore::open(dir.path(), Duration::from_secs(7 * 86_400)).unwrap());
        let mut traffic = Traffic::new(&gen_config(1));
        let (accounts, _) = traffic.reference();
        for a in &accounts {
            apply_account(&store, &a.payload.account_id, Some(&a.payload)).unwrap();
        }
        let (pipeline, contacts, engagements) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let registry_store = Arc::new(leadflow::registry::Store::in_memory());
            tokio::spawn(async move {
                axum::serve(listener, leadflow::registry::router(registry_store)).await
            });
            let registry = RegistryClient::new(&url).unwrap();
            let rules = Arc::new(
                Rules::load("rules/routing.rhai".as_ref(), &ScriptLimits::default()).unwrap(),
            );
            let topology =
                leadflow::topology::load("topologies/lead-routing.yaml".as_ref()).unwrap();
            let pipeline = Pipeline::start(
                topology,
                rules,
                registry.clone(),
                store,
                leadflow::pipeline::wall_clock(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
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
            _dir: dir,
        }
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
                StreamEvent::Engagement(e) => (
                    "crm.engagements.v1",
                    e.envelope.aggregate_id.clone(),
                    self.engagements.encode(&e).unwrap(),
                ),
            })
            .collect()
    }
}

fn benches(c: &mut Criterion) {
    let mut fx = Fixture::new();
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
    group.bench_function("decode_contact", |b| {
        b.iter(|| {
            decode::<ContactEvent>(writer, SchemaKind::ContactEvent, &contact_value[5..]).unwrap()
        })
    });
    let event: ContactEvent =
        decode(writer, SchemaKind::ContactEvent, &contact_value[5..]).unwrap();
    group.bench_function("encode_contact", |b| {
        b.iter(|| fx.contacts.encode(&event).unwrap())
    });
    group.finish();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    // Baseline: decode and re-encode every event, nothing else.
    group.bench_function("baseline_decode_reencode", |b| {
        b.iter_custom(|iters| {
            let batch: Vec<_> = (0..iters as usize)
                .map(|i| &sample[i % sample.len()])
                .collect();
            let start = Instant::now();
            for (topic, _, value) in batch {
                if *topic == "crm.contacts.v1" {
                    let e: ContactEvent =
                        decode(writer, SchemaKind::ContactEvent, &value[5..]).unwrap();
                    std::hint::black_box(fx.contacts.encode(&e).unwrap());
                } else {
                    let w = canonical().get(SchemaKind::EngagementEvent);
                    let e: EngagementEvent =
                        decode(w, SchemaKind::EngagementEvent, &value[5..]).unwrap();
                    std::hint::black_box(fx.engagements.encode(&e).unwrap());
                }
            }
            start.elapsed()
        })
    });
    // The whole core: every event new (fresh ids), state on disk, default rules, commit.
    group.bench_function("process_and_commit", |b| {
        b.iter_custom(|iters| {
            let batch = fx.records(iters);
            let start = Instant::now();
            for (topic, key, value) in &batch {
                fx.offset += 1;
                let record = InputRecord {
                    topic,
                    // Like Kafka: the key decides the partition, so a contact's state stays together.
                    partition: (key
                        .bytes()
                        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
                        % 6) as i32,
                    offset: fx.offset,
                    timestamp: None,
                    key: Some(key.as_bytes()),
                    value: Some(value),
                };
                let processed = fx.rt.block_on(fx.pipeline.process(&record)).unwrap();
                fx.pipeline.commit(&processed).unwrap();
            }
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
