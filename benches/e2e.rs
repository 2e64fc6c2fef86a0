//! End-to-end benchmark through a real broker (Apache Kafka, one KRaft node on the same
//! machine, `scripts/kafka.sh`) and the development registry: every contender of one run on the
//! same broker, with the same generated events, partitions and stream threads:
//!
//! - a pass-through baseline: consumes the inputs in its own consumer group and re-produces the
//!   same bytes to one topic (same client settings as leadflow: idempotent producer, acks=all,
//!   offsets stored once the output is acknowledged): what the broker and client cost with no
//!   processing at all;
//! - the Kafka Streams twin (`benches/peers/kafka-streams`, the same job in Java; the test
//!   `kafka_streams_twin` shows it decides like leadflow), at least once;
//! - `leadflow run` (the release binary), at least once and exactly once.
//!
//! Two phases per contender, each on its own topics:
//! 1. throughput: N events are loaded first, then the contender starts; events/s is measured
//!    from the first completed record to the last (start-up and the group join excluded), and
//!    so is its CPU time (utime + stime of its process, `/proc/<pid>/stat`), per million
//!    events;
//! 2. latency: M more events arrive at a steady rate while it runs; produce-to-output
//!    latency is the output record's timestamp minus the input record's (both CreateTime).
//!
//! Peak RSS is the process's VmHWM when it stops (for the twin, the JVM's). While leadflow
//! drains the backlog its resident memory (VmRSS) is also sampled, to show that it stays flat.
//! The pass-through runs inside the bench process, so its CPU time is the bench's and its
//! memory is not reported.
//!
//! Contenders take turns within a round, in a rotating order (on this machine the order alone
//! moves a run by several per cent). `LEADFLOW_BENCH_COMPARE_BINARY=/path/to/leadflow` adds
//! that binary (at least once) as a contender, `LEADFLOW_BENCH_NO_EVENT_TIME=1` leadflow with
//! `lateness.enabled: false`.
//!
//! ```text
//! make bench-e2e                                  # 200,000 events, 20,000 for latency
//! make bench-e2e EVENTS=1000000                   # cargo bench --profile release --bench e2e -- --events N
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Broker, Proc, RegistryProc};
use leadflow::codec::{unframe, RegistryClient, SchemaKind};
use leadflow::kafka::KafkaSettings;
use leadflow::model::{ContactEvent, EngagementEvent};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

struct Args {
    /// Rounds of leadflow with event time off and on.
    rounds: u64,
    events: u64,
    latency_events: u64,
    latency_rate: u64,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 2,
        events: 200_000,
        latency_events: 20_000,
        latency_rate: 2_000,
    };
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it:
    // then a small smoke run keeps the bench from rotting, with no figures worth reading.
    if !std::env::args().any(|a| a == "--bench") {
        a = Args {
            rounds: 1,
            events: 2_000,
            latency_events: 200,
            latency_rate: 500,
        };
    }
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> u64 {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--events" => a.events = value(),
            "--latency-events" => a.latency_events = value(),
            "--latency-rate" => a.latency_rate = value(),
            "--rounds" => a.rounds = value().max(1),
            "--bench" => {} // cargo bench passes it to every bench binary
            other => panic!(
                "unknown argument {other}; use --events N, --latency-events M, --latency-rate R, --rounds K"
            ),
        }
    }
    a
}

/// `leadflow gen`'s default start, 2026-01-05T09:00:00Z.
const GEN_START_MS: u64 = 1_767_603_600_000;

const INPUTS: [&str; 2] = ["crm.contacts.v1", "crm.engagements.v1"];

fn main() {
    let args = args();
    // The broker of a bench gets more heap than a test's (Kafka's default is 1 GiB).
    std::env::set_var(
        "LEADFLOW_TEST_KAFKA_HEAP",
        std::env::var("LEADFLOW_BENCH_KAFKA_HEAP").unwrap_or_else(|_| "-Xms1g -Xmx1g".into()),
    );
    let broker = Broker::start();
    let registry = RegistryProc::start(None);
    let bench = Bench {
        broker,
        registry,
        args,
    };
    let dir = tempfile::tempdir().unwrap();
    let threads = stream_threads();
    eprintln!(
        "e2e bench: {} events for throughput, {} at {}/s for latency; {} stream threads each",
        bench.args.events, bench.args.latency_events, bench.args.latency_rate, threads
    );
    let baseline = bench.measure("pass-through", &mut PassThrough::default());

    let compare = std::env::var_os("LEADFLOW_BENCH_COMPARE_BINARY").map(std::path::PathBuf::from);
    let no_event_time = std::env::var("LEADFLOW_BENCH_NO_EVENT_TIME").is_ok_and(|v| v == "1");
    let mut kinds = vec![Kind::Twin, Kind::LeadflowAlos, Kind::LeadflowEos];
    if compare.is_some() {
        kinds.push(Kind::LeadflowCompared);
    }
    if no_event_time {
        kinds.push(Kind::LeadflowNoEventTime);
    }
    let mut reports: Vec<Report> = Vec::new();
    for round in 0..bench.args.rounds as usize {
        for i in 0..kinds.len() {
            let kind = kinds[(i + round) % kinds.len()];
            let dir = dir.path().join(format!("{}-{round}", kind.name()));
            let report = match kind {
                Kind::Twin => bench.measure(kind.name(), &mut Twin::new(dir, threads)),
                Kind::LeadflowAlos => bench.measure(kind.name(), &mut Leadflow::new(dir, true)),
                Kind::LeadflowEos => {
                    let mut l = Leadflow::new(dir, true);
                    l.guarantee = "exactly_once";
                    bench.measure(kind.name(), &mut l)
                }
                Kind::LeadflowCompared => {
                    let binary = compare.clone().unwrap();
                    bench.measure(kind.name(), &mut Leadflow::with_binary(binary, dir, true))
                }
                Kind::LeadflowNoEventTime => {
                    bench.measure(kind.name(), &mut Leadflow::new(dir, false))
                }
            };
            reports.push(report);
        }
    }

    println!();
    println!(
        "| contender                | events/s | p50 latency | p99 latency | max latency | peak RSS | CPU s / M events |"
    );
    println!(
        "|--------------------------|---------:|------------:|------------:|------------:|---------:|-----------------:|"
    );
    for r in std::iter::once(&baseline).chain(&reports) {
        let rss = r
            .peak_rss_mib
            .map_or("—".to_string(), |m| format!("{m:.0} MiB"));
        println!(
            "| {:<24} | {:>8.0} | {:>8.1} ms | {:>8.1} ms | {:>8.1} ms | {:>8} | {:>16.1} |",
            r.name, r.events_per_s, r.p50_ms, r.p99_ms, r.max_ms, rss, r.cpu_s_per_m
        );
    }
    let of =
        |kind: Kind| -> Vec<&Report> { reports.iter().filter(|r| r.name == kind.name()).collect() };
    let mean = |runs: &[&Report], f: fn(&Report) -> f64| -> f64 {
        runs.iter().map(|r| f(r)).sum::<f64>() / runs.len().max(1) as f64
    };
    let throughput = |r: &Report| r.events_per_s;
    let rss = |r: &Report| r.peak_rss_mib.unwrap_or(f64::NAN);
    let cpu = |r: &Report| r.cpu_s_per_m;
    let (twin, alos, eos) = (
        of(Kind::Twin),
        of(Kind::LeadflowAlos),
        of(Kind::LeadflowEos),
    );
    println!("\nmeans over {} rounds:", bench.args.rounds);
    println!(
        "  leadflow at-least-once / Kafka Streams twin, events/s:  {:.2}x (target >= 2x)",
        mean(&alos, throughput) / mean(&twin, throughput)
    );
    println!(
        "  Kafka Streams twin / leadflow at-least-once, peak RSS:  {:.2}x (target >= 3x)",
        mean(&twin, rss) / mean(&alos, rss)
    );
    println!(
        "  Kafka Streams twin / leadflow at-least-once, CPU per event: {:.2}x",
        mean(&twin, cpu) / mean(&alos, cpu)
    );
    println!(
        "  leadflow at-least-once / pass-through, events/s:        {:.1} % (target >= 60 %)",
        100.0 * mean(&alos, throughput) / baseline.events_per_s
    );
    println!(
        "  Kafka Streams twin / pass-through, events/s:            {:.1} %",
        100.0 * mean(&twin, throughput) / baseline.events_per_s
    );
    println!(
        "  leadflow exactly-once / at-least-once, events/s:        {:.1} %",
        100.0 * mean(&eos, throughput) / mean(&alos, throughput)
    );
    for (kind, what) in [
        (Kind::LeadflowCompared, "the compared binary"),
        (Kind::LeadflowNoEventTime, "leadflow without event time"),
    ] {
        let runs = of(kind);
        if !runs.is_empty() {
            println!(
                "  leadflow at-least-once / {what}, events/s: {:.1} %",
                100.0 * mean(&alos, throughput) / mean(&runs, throughput)
            );
        }
    }
}

/// The contenders after the pass-through, in the order of their first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Twin,
    LeadflowAlos,
    LeadflowEos,
    LeadflowCompared,
    LeadflowNoEventTime,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Twin => "kafka-streams-twin",
            Kind::LeadflowAlos => "leadflow-at-least-once",
            Kind::LeadflowEos => "leadflow-exactly-once",
            Kind::LeadflowCompared => "leadflow-compared",
            Kind::LeadflowNoEventTime => "leadflow-no-event-time",
        }
    }
}

/// The stream threads of every contender: the shipped topology's `stream_threads: 0`, one per
/// core.
fn stream_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Bench {
    broker: Broker,
    registry: RegistryProc,
    args: Args,
}

struct Report {
    name: &'static str,
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// VmHWM of the contender's process; `None` for the in-process pass-through.
    peak_rss_mib: Option<f64>,
    /// CPU seconds (user + system) of its process over the throughput phase, per million events.
    cpu_s_per_m: f64,
}

/// What is being measured: started on a topic prefix, asked how many records it finished.
trait Contender {
    fn start(&mut self, bench: &Bench, prefix: &str);
    /// Input records fully handled so far.
    fn completed(&mut self) -> u64;
    /// Output records, for the latency join (event_id → output timestamp).
    fn outputs(&self, bench: &Bench, prefix: &str) -> HashMap<String, i64>;
    fn sample(&mut self, _progress: f64) {}
    /// The process doing the work (the bench's own for an in-process contender).
    fn pid(&self) -> u32;
    /// Whether it runs in its own process (so its memory is its own).
    fn own_process(&self) -> bool {
        true
    }
    fn stop(&mut self);
}

impl Bench {
    fn measure(&self, name: &'static str, contender: &mut dyn Contender) -> Report {
        let prefix = common::unique_prefix(name);
        self.create_topics(&prefix);
        self.gen(&prefix, 1, self.args.events, 0);
        let total = self.args.events;

        contender.start(self, &prefix);
        // Throughput: from the first completed record to the last.
        let deadline = Instant::now() + Duration::from_secs(3_600);
        let (mut first, mut first_count, mut first_cpu) = (None, 0, 0.0);
        loop {
            let done = contender.completed();
            if first.is_none() && done > 0 {
                first = Some(Instant::now());
                first_count = done;
                first_cpu = cpu_seconds(contender.pid());
            }
            contender.sample(done as f64 / total as f64);
            if done >= total {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {done}/{total} after an hour"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = first.unwrap().elapsed().as_secs_f64();
        let cpu = cpu_seconds(contender.pid()) - first_cpu;
        let events_per_s = (total - first_count) as f64 / elapsed;
        let cpu_s_per_m = cpu / (total - first_count).max(1) as f64 * 1e6;
        eprintln!(
            "{name}: {total} events, {events_per_s:.0} events/s over {elapsed:.1} s, \
             {cpu:.1} CPU s ({cpu_s_per_m:.1} per million events)"
        );

        // Latency: a steady stream while it runs.
        let latency_total = total + self.args.latency_events;
        let since_ms = now_ms();
        self.gen(&prefix, 2, self.args.latency_events, self.args.latency_rate);
        common::wait_until(
            "the latency phase to complete",
            Duration::from_secs(600),
            || contender.completed() >= latency_total,
        );
        let inputs = self.input_times(&prefix, since_ms);
        let outputs = contender.outputs(self, &prefix);
        let peak_rss_mib = contender
            .own_process()
            .then(|| status_mib(contender.pid(), "VmHWM:"));
        contender.stop();
        let mut latencies: Vec<i64> = outputs
            .iter()
            .filter_map(|(id, out)| Some(out - inputs.get(id)?))
            .collect();
        latencies.sort_unstable();
        assert!(!latencies.is_empty(), "{name}: no latency samples");
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64;
        eprintln!(
            "{name}: latency from {} outputs: p50 {} ms, p99 {} ms",
            latencies.len(),
            at(0.5),
            at(0.99)
        );
        Report {
            name,
            events_per_s,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: at(1.0),
            peak_rss_mib,
            cpu_s_per_m,
        }
    }

    fn create_topics(&self, prefix: &str) {
        let (ok, _, err) = self.leadflow(&[
            "topics",
            "create",
            "--bootstrap-servers",
            &self.broker.bootstrap,
            "--topic-prefix",
            prefix,
        ]);
        assert!(ok, "{err}");
    }

    /// `leadflow gen`: `count` events with seed `seed` (different seeds: different event ids),
    /// as fast as possible (`rate` 0) or at `rate` per second. Seed 1 also writes the
    /// reference tables.
    fn gen(&self, prefix: &str, seed: u64, count: u64, rate: u64) {
        // Phase 2 continues in event time after phase 1 (1 s mean gap), a day later.
        let start = std::time::UNIX_EPOCH
            + Duration::from_millis(GEN_START_MS)
            + Duration::from_secs(if seed == 1 {
                0
            } else {
                self.args.events * 2 + 86_400
            });
        let start = humantime::format_rfc3339_seconds(start).to_string();
        let (seed, count, rate) = (seed.to_string(), count.to_string(), rate.to_string());
        let mut args = vec![
            "gen",
            "--bootstrap-servers",
            &self.broker.bootstrap,
            "--schema-registry-url",
            &self.registry.url,
            "--topic-prefix",
            prefix,
            "--seed",
            &seed,
            "--count",
            &count,
            "--rate",
            &rate,
            "--duplicates",
            "0",
            "--start",
            &start,
            "--quiet",
        ];
        if seed != "1" {
            args.push("--no-reference-data");
        }
        let (ok, out, err) = self.leadflow(&args);
        assert!(ok, "gen failed: {err}\n{out}");
    }

    fn leadflow(&self, args: &[&str]) -> (bool, String, String) {
        let mut command = Command::new(common::leadflow_binary());
        command.args(args);
        common::run_with_deadline(command, Duration::from_secs(3_600))
    }

    /// event_id → input CreateTime, for the input records written at or after `since_ms`.
    fn input_times(&self, prefix: &str, since_ms: i64) -> HashMap<String, i64> {
        let client = RegistryClient::new(&self.registry.url).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut times = HashMap::new();
        for (i, topic) in INPUTS.iter().enumerate() {
            for m in self.broker.read_all(&format!("{prefix}{topic}")) {
                let Some(ts) = m.timestamp().to_millis().filter(|t| *t >= since_ms) else {
                    continue;
                };
                if let Some(id) = event_id(&rt, &client, &m, i == 0) {
                    times.insert(id, ts);
                }
            }
        }
        times
    }
}

fn event_id(
    rt: &tokio::runtime::Runtime,
    client: &RegistryClient,
    m: &OwnedMessage,
    contact: bool,
) -> Option<String> {
    let (id, datum) = unframe(m.payload()?).ok()?;
    // The client caches writer schemas by id.
    let writer = rt.block_on(client.schema_by_id(id)).ok()?;
    if contact {
        leadflow::codec::decode::<ContactEvent>(&writer, SchemaKind::ContactEvent, datum)
            .ok()
            .map(|e| e.envelope.event_id)
    } else {
        leadflow::codec::decode::<EngagementEvent>(&writer, SchemaKind::EngagementEvent, datum)
            .ok()
            .map(|e| e.envelope.event_id)
    }
}

/// Consume the inputs and re-produce the same bytes, nothing else.
#[derive(Default)]
struct PassThrough {
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Contender for PassThrough {
    fn start(&mut self, bench: &Bench, prefix: &str) {
        let settings = bench.broker.settings();
        let inputs: Vec<String> = INPUTS.iter().map(|t| format!("{prefix}{t}")).collect();
        let output = format!("{prefix}bench.passthrough");
        create_topic(&settings, &output);
        let group = format!("{}pass-through", prefix.replace('.', "-"));
        let (done, stop) = (self.done.clone(), self.stop.clone());
        self.thread = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(pass_through(settings, group, inputs, output, done, stop));
        }));
    }

    fn completed(&mut self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }

    fn own_process(&self) -> bool {
        false
    }

    fn outputs(&self, bench: &Bench, prefix: &str) -> HashMap<String, i64> {
        let client = RegistryClient::new(&bench.registry.url).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        bench
            .broker
            .read_all(&format!("{prefix}bench.passthrough"))
            .iter()
            .filter_map(|m| {
                let contact = common::header(m, "bench.source").as_deref() == Some("0");
                let id = event_id(&rt, &client, m, contact)?;
                Some((id, m.timestamp().to_millis()?))
            })
            .collect()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

async fn pass_through(
    settings: KafkaSettings,
    group: String,
    inputs: Vec<String>,
    output: String,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let consumer: Arc<StreamConsumer> = Arc::new(
        settings
            .consumer_config(&[
                ("group.id", group.as_str()),
                ("enable.auto.commit", "true"),
                ("auto.commit.interval.ms", "1000"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
            ])
            .create()
            .unwrap(),
    );
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).unwrap();
    let producer: FutureProducer = settings.producer_config().create().unwrap();
    while !stop.load(Ordering::Relaxed) {
        let message = match tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await
        {
            Ok(m) => m.unwrap(),
            Err(_) => continue,
        };
        let source = if message.topic() == inputs[0] {
            "0"
        } else {
            "1"
        };
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "bench.source",
            value: Some(source),
        });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&output).headers(headers);
        if let Some(k) = message.key() {
            record = record.key(k);
        }
        if let Some(v) = message.payload() {
            record = record.payload(v);
        }
        let delivery = loop {
            match producer.send_result(record) {
                Ok(d) => break d,
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        let (topic, partition, offset) = (
            message.topic().to_string(),
            message.partition(),
            message.offset(),
        );
        let (consumer, done) = (consumer.clone(), done.clone());
        tokio::spawn(async move {
            if let Ok(Ok(_)) = delivery.await {
                let _ = consumer.store_offset(&topic, partition, offset);
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

fn create_topic(settings: &KafkaSettings, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<_> = settings.client_config(&[]).create().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(admin.create_topics(
        &[NewTopic::new(topic, 12, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .unwrap();
}

/// The release `leadflow run` as a child process, watched through its metrics endpoint.
struct Leadflow {
    /// The binary run.
    binary: std::path::PathBuf,
    /// `lateness.enabled` in its topology.
    event_time: bool,
    /// `processing.guarantee` in its topology.
    guarantee: &'static str,
    dir: std::path::PathBuf,
    proc: Option<Proc>,
    metrics: String,
    /// (progress, RSS in MiB) samples while it drains the backlog.
    rss: Vec<(f64, f64)>,
    rt: tokio::runtime::Runtime,
}

impl Leadflow {
    fn new(dir: std::path::PathBuf, event_time: bool) -> Leadflow {
        Leadflow::with_binary(common::leadflow_binary(), dir, event_time)
    }

    fn with_binary(
        binary: std::path::PathBuf,
        dir: std::path::PathBuf,
        event_time: bool,
    ) -> Leadflow {
        std::fs::create_dir_all(&dir).unwrap();
        Leadflow {
            binary,
            event_time,
            guarantee: "at_least_once",
            dir,
            proc: None,
            metrics: String::new(),
            rss: Vec::new(),
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }
}

impl Contender for Leadflow {
    fn start(&mut self, bench: &Bench, prefix: &str) {
        let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/routing.rhai");
        let yaml = common::prefixed_topology(prefix, rules)
            .replace(
                "  enabled: true\n",
                &format!("  enabled: {}\n", self.event_time),
            )
            .replace(
                "guarantee: at_least_once",
                &format!("guarantee: {}", self.guarantee),
            );
        let topology = self.dir.join("topology.yaml");
        std::fs::write(&topology, yaml).unwrap();
        let mut command = Command::new(&self.binary);
        command
            .args(["run", "--topology"])
            .arg(&topology)
            .args([
                "--bootstrap-servers",
                &bench.broker.bootstrap,
                "--schema-registry-url",
                &bench.registry.url,
            ])
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "info,rdkafka=warn");
        let proc = common::spawn(command, "leadflow-run");
        let mut addr = None;
        common::wait_until("leadflow to serve metrics", Duration::from_secs(60), || {
            addr = proc.log_text().lines().find_map(|l| {
                let a = l.split("addr=").nth(1)?;
                Some(a.split_whitespace().next()?.to_string())
            });
            addr.is_some()
        });
        self.metrics = format!("http://{}/metrics", addr.unwrap());
        self.proc = Some(proc);
    }

    fn completed(&mut self) -> u64 {
        let proc = self.proc.as_mut().unwrap();
        assert!(proc.is_running(), "leadflow exited:\n{}", proc.log_text());
        scrape_counter(
            &self.rt,
            &self.metrics,
            "leadflow_record_latency_seconds_count",
        )
    }

    fn sample(&mut self, progress: f64) {
        let step = self.rss.last().map_or(0.0, |s| s.0 + 0.05);
        if progress >= step && progress > 0.0 {
            let pid = self.proc.as_ref().unwrap().pid();
            self.rss.push((progress, rss_mib(pid)));
        }
    }

    fn outputs(&self, bench: &Bench, prefix: &str) -> HashMap<String, i64> {
        routed_outputs(bench, prefix)
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().unwrap().pid()
    }

    fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(60));
        }
        if let (Some(first), Some(last)) = (self.rss.first(), self.rss.last()) {
            let quarter = self.rss.iter().find(|s| s.0 >= 0.25).unwrap_or(first);
            let max = self.rss.iter().map(|s| s.1).fold(0.0, f64::max);
            eprintln!(
                "leadflow RSS while draining the backlog: {:.0} MiB at {:.0} %, {:.0} MiB at {:.0} %, {:.0} MiB at 100 % (max {max:.0} MiB)",
                first.1,
                first.0 * 100.0,
                quarter.1,
                quarter.0 * 100.0,
                last.1
            );
            let samples: Vec<String> = self
                .rss
                .iter()
                .map(|(p, r)| format!("{:.0}%:{r:.0}", p * 100.0))
                .collect();
            eprintln!("RSS samples (progress:MiB): {}", samples.join(" "));
        }
    }
}

/// Routed leads of a contender that writes leadflow's output topics: event_id → output
/// timestamp.
fn routed_outputs(bench: &Bench, prefix: &str) -> HashMap<String, i64> {
    let mut out = HashMap::new();
    for t in ["leads.routed.p0", "leads.routed.p1", "leads.routed.p2"] {
        for m in bench.broker.read_all(&format!("{prefix}{t}")) {
            if let (Some(id), Some(ts)) =
                (common::header(&m, "event_id"), m.timestamp().to_millis())
            {
                out.insert(id, ts);
            }
        }
    }
    out
}

/// The Kafka Streams twin (`benches/peers/kafka-streams/run.sh`), watched through its
/// `/metrics`; run.sh execs the JVM, so the child is the JVM. Its count
/// (`leadflow_twin_records_total`) is of records processed, whose outputs may still be in its
/// producer's buffer (Kafka Streams reports no per-record delivery), where leadflow's counts
/// records completed: at the end of a backlog the twin's is ahead by what it has in flight.
struct Twin {
    dir: std::path::PathBuf,
    threads: usize,
    proc: Option<Proc>,
    metrics: String,
    rt: tokio::runtime::Runtime,
}

impl Twin {
    fn new(dir: std::path::PathBuf, threads: usize) -> Twin {
        std::fs::create_dir_all(&dir).unwrap();
        Twin {
            dir,
            threads,
            proc: None,
            metrics: String::new(),
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }
}

impl Contender for Twin {
    fn start(&mut self, bench: &Bench, prefix: &str) {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/peers/kafka-streams/run.sh"
        );
        let app = format!("{}twin", prefix.replace('.', "-"));
        let mut command = Command::new(script);
        command
            .args(["--bootstrap-servers", &bench.broker.bootstrap])
            .args(["--schema-registry-url", &bench.registry.url])
            .args(["--application-id", &app])
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .args(["--topic-prefix", prefix])
            .args(["--threads", &self.threads.to_string()])
            .args(["--metrics-addr", "127.0.0.1:0"]);
        let proc = common::spawn(command, "kafka-streams-twin");
        let mut addr = None;
        // The first start may build the twin (Maven) before the JVM starts.
        common::wait_until(
            "the twin to serve metrics",
            Duration::from_secs(300),
            || {
                addr = proc.log_text().lines().find_map(|l| {
                    let a = l.strip_prefix("twin: serving /metrics addr=")?;
                    Some(a.trim().to_string())
                });
                addr.is_some()
            },
        );
        self.metrics = format!("http://{}/metrics", addr.unwrap());
        self.proc = Some(proc);
    }

    fn completed(&mut self) -> u64 {
        let proc = self.proc.as_mut().unwrap();
        assert!(proc.is_running(), "the twin exited:\n{}", proc.log_text());
        scrape_counter(&self.rt, &self.metrics, "leadflow_twin_records_total")
    }

    fn outputs(&self, bench: &Bench, prefix: &str) -> HashMap<String, i64> {
        routed_outputs(bench, prefix)
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().unwrap().pid()
    }

    fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(60));
        }
    }
}

/// A `/proc/<pid>/status` size line (`VmRSS:`, `VmHWM:`) in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS:")
}

/// User + system CPU seconds of process `pid` so far (`/proc/<pid>/stat`, its threads
/// included).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may contain spaces: the fields start after its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / per_second
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The value of the unlabelled series `name` on a Prometheus endpoint; 0 while it cannot be
/// read (the process is still starting).
fn scrape_counter(rt: &tokio::runtime::Runtime, url: &str, name: &str) -> u64 {
    let get = async { reqwest::get(url).await?.text().await };
    let Ok(text) = rt.block_on(get) else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}
