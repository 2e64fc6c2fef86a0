//! A whole local stack per test: a Kafka broker, the development registry, prefixed contract
//! topics and a topology naming them; the generator and `leadflow run` started against it;
//! the outputs read back.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use leadflow::codec::{decode, unframe, RegistryClient, SchemaKind};
use leadflow::gen::{Disorder, DISORDER_HEADER, SEQ_HEADER};
use leadflow::model::{ContactEvent, EngagementEvent, RoutedLead};
use rdkafka::message::OwnedMessage;
use rdkafka::Message;

use super::{header, run_with_deadline, Broker, BrokerOptions, Proc, RegistryProc};

/// One stack at a time: each runs a broker, a registry, the generator and processors, and on
/// this 2-core machine several at once starve each other of CPU (timing-dependent waits such
/// as the input merge's then expire and the tests measure the contention, not leadflow).
static ONE_STACK_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How to build a stack.
pub struct StackOptions {
    pub broker: BrokerOptions,
    /// Partitions of every contract topic.
    pub partitions: u32,
    /// `limits.max_record_bytes` of the topology.
    pub max_record_bytes: &'static str,
    /// Create the contract topics (a test may create them itself).
    pub create_topics: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            broker: BrokerOptions::default(),
            partitions: 6,
            max_record_bytes: "64KiB",
            create_topics: true,
        }
    }
}

/// A broker, a registry, prefixed topics and a topology file naming them.
pub struct Stack {
    _turn: std::sync::MutexGuard<'static, ()>,
    pub broker: Broker,
    pub registry: RegistryProc,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub topology: PathBuf,
    /// What leadflow commands connect to (the broker's listener unless a test changes it).
    pub bootstrap: String,
    /// Arguments every leadflow command that talks to Kafka gets (e.g. `--kafka-config F`).
    pub client_args: Vec<String>,
    /// The registry leadflow commands use (the development registry unless a test changes it).
    pub registry_url: String,
}

impl Stack {
    pub fn new(test: &str, rules: &str) -> Stack {
        Stack::with(test, rules, StackOptions::default())
    }

    pub fn with(test: &str, rules: &str, options: StackOptions) -> Stack {
        let turn = ONE_STACK_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let broker = Broker::start_with(options.broker);
        let registry = RegistryProc::start(None);
        let prefix = super::unique_prefix(test);
        let dir = tempfile::tempdir().unwrap();
        let yaml = super::prefixed_topology(&prefix, rules).replace(
            "max_record_bytes: 1MiB",
            &format!("max_record_bytes: {}", options.max_record_bytes),
        );
        let topology = dir.path().join("topology.yaml");
        std::fs::write(&topology, yaml).unwrap();
        let stack = Stack {
            _turn: turn,
            registry_url: registry.url.clone(),
            bootstrap: broker.bootstrap.clone(),
            broker,
            registry,
            prefix,
            dir,
            topology,
            client_args: Vec::new(),
        };
        if options.create_topics {
            stack.create_topics(options.partitions);
        }
        stack
    }

    /// `leadflow topics create` for the stack's prefix.
    pub fn create_topics(&self, partitions: u32) {
        let partitions = partitions.to_string();
        let mut args = vec![
            "topics",
            "create",
            "--bootstrap-servers",
            &self.bootstrap,
            "--topic-prefix",
            &self.prefix,
            "--partitions",
            &partitions,
        ];
        args.extend(self.client_args.iter().map(String::as_str));
        let (ok, _, err) = leadflow(&args);
        assert!(ok, "{err}");
    }

    pub fn topic(&self, t: &str) -> String {
        format!("{}{t}", self.prefix)
    }

    /// The topology's `application_id`: the consumer group and the state directory's name.
    pub fn application_id(&self) -> String {
        std::fs::read_to_string(&self.topology)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("application_id: "))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn gen(&self, count: &str, duplicates: &str) {
        self.gen_with(count, duplicates, &[]);
    }

    pub fn gen_with(&self, count: &str, duplicates: &str, extra: &[&str]) {
        self.gen_seeded("11", count, duplicates, extra);
    }

    /// [`gen_with`](Self::gen_with) with another seed: other contacts and event ids.
    pub fn gen_seeded(&self, seed: &str, count: &str, duplicates: &str, extra: &[&str]) {
        let mut args = self.gen_args(count, duplicates, extra);
        let at = args.iter().position(|a| *a == "--seed").expect("a seed") + 1;
        args[at] = seed;
        let (ok, out, err) = leadflow(&args);
        assert!(ok, "gen failed: {err}\n{out}");
    }

    /// [`gen_with`](Self::gen_with) (no duplicates), returning what it printed.
    #[allow(dead_code)]
    pub fn gen_printing(&self, count: &str, extra: &[&str]) -> String {
        let (ok, out, err) = leadflow(&self.gen_args(count, "0.0", extra));
        assert!(ok, "gen failed: {err}\n{out}");
        out
    }

    /// [`gen_in_background`](Self::gen_in_background) with another seed.
    #[allow(dead_code)]
    pub fn gen_seeded_in_background(&self, seed: &str, count: &str, extra: &[&str]) -> Proc {
        let mut args = self.gen_args(count, "0.0", extra);
        let at = args.iter().position(|a| *a == "--seed").expect("a seed") + 1;
        args[at] = seed;
        let mut command = Command::new(super::leadflow_binary());
        command.args(args);
        super::spawn(command, "gen")
    }

    /// `leadflow gen` in the background (e.g. at a `--rate`, while the processor runs).
    pub fn gen_in_background(&self, count: &str, extra: &[&str]) -> Proc {
        let mut command = Command::new(super::leadflow_binary());
        command.args(self.gen_args(count, "0.0", extra));
        super::spawn(command, "gen")
    }

    fn gen_args<'a>(
        &'a self,
        count: &'a str,
        duplicates: &'a str,
        extra: &[&'a str],
    ) -> Vec<&'a str> {
        let mut args = vec![
            "gen",
            "--bootstrap-servers",
            &self.bootstrap,
            "--schema-registry-url",
            &self.registry_url,
            "--topic-prefix",
            &self.prefix,
            "--seed",
            "11",
            "--count",
            count,
            "--accounts",
            "300",
            "--reps",
            "24",
            "--duplicates",
            duplicates,
            "--quiet",
        ];
        args.extend(self.client_args.iter().map(String::as_str));
        args.extend_from_slice(extra);
        args
    }

    /// A leadflow command given the stack's broker and registry, which must succeed: its
    /// standard output.
    #[allow(dead_code)]
    pub fn command_output(&self, args: &[&str]) -> String {
        let mut args = args.to_vec();
        args.extend([
            "--bootstrap-servers",
            &self.bootstrap,
            "--schema-registry-url",
            &self.registry_url,
        ]);
        let (ok, out, err) = leadflow(&args);
        assert!(ok, "leadflow {args:?} failed: {err}");
        out
    }

    /// `leadflow run` on the stack; returns it and its metrics URL.
    pub fn start(&self) -> (Proc, String) {
        self.start_with(&[], &[])
    }

    /// [`start`](Self::start) with more arguments and environment variables.
    pub fn start_with(&self, args: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
        self.start_in(&self.state_dir(), args, env)
    }

    /// The state directory `start` uses.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// [`start_with`](Self::start_with) on another state directory (another instance).
    pub fn start_in(
        &self,
        state_dir: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (Proc, String) {
        let mut command = Command::new(super::leadflow_binary());
        command
            .args(["run", "--topology"])
            .arg(&self.topology)
            .args([
                "--bootstrap-servers",
                &self.bootstrap,
                "--schema-registry-url",
                &self.registry_url,
            ])
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--metrics-addr", "127.0.0.1:0"])
            // A killed member must leave the group quickly, or the restarted one waits for the
            // coordinator's rebalance timeout (librdkafka's 45 s session, 5 min poll interval).
            .args([
                "--kafka",
                "session.timeout.ms=6000",
                "--kafka",
                "heartbeat.interval.ms=1000",
            ])
            .args(["--kafka", "max.poll.interval.ms=20000"])
            .args(&self.client_args)
            .args(args)
            .env(
                "RUST_LOG",
                "info,rdkafka=warn,leadflow::runtime=trace,leadflow::source::driver=debug",
            );
        for (k, v) in env {
            command.env(k, v);
        }
        let proc = super::spawn(command, "leadflow-run");
        let url = metrics_url(&proc);
        (proc, url)
    }

    pub fn outputs(&self) -> Outputs {
        let mut decisions = Vec::new();
        for (topic, priority) in [
            ("leads.routed.p0", "P0"),
            ("leads.routed.p1", "P1"),
            ("leads.routed.p2", "P2"),
        ] {
            for m in self.broker.read_all(&self.topic(topic)) {
                let lead = routed_lead(&m);
                assert_eq!(
                    lead.priority, priority,
                    "a {} lead on {topic}",
                    lead.priority
                );
                assert_eq!(
                    header(&m, "decision_id").as_deref(),
                    Some(lead.decision_id.as_str())
                );
                assert_eq!(
                    header(&m, "event_id").as_deref(),
                    Some(lead.event_id.as_str())
                );
                decisions.push(lead);
            }
        }
        let dlq = self.broker.read_all(&self.topic("leads.dlq"));
        Outputs { decisions, dlq }
    }
}

pub struct Outputs {
    pub decisions: Vec<RoutedLead>,
    pub dlq: Vec<OwnedMessage>,
}

/// The metrics URL a `leadflow run` logs once it serves it.
pub fn metrics_url(proc: &Proc) -> String {
    let mut metrics = None;
    super::wait_until(
        "the processor to serve metrics",
        Duration::from_secs(60),
        || {
            metrics = proc.log_text().lines().find_map(|l| {
                l.contains("serving /metrics")
                    .then(|| {
                        l.split("addr=")
                            .nth(1)
                            .map(|a| a.split_whitespace().next().unwrap().to_string())
                    })
                    .flatten()
            });
            metrics.is_some()
        },
    );
    format!("http://{}/metrics", metrics.unwrap())
}

/// Runs a leadflow command to completion (2 minutes at most): (success, stdout, stderr).
pub fn leadflow(args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(super::leadflow_binary());
    command.args(args);
    run_with_deadline(command, Duration::from_secs(120))
}

pub fn routed_lead(m: &OwnedMessage) -> RoutedLead {
    let value = m.payload().unwrap();
    let (_, datum) = unframe(value).unwrap();
    decode(
        leadflow::codec::canonical().get(SchemaKind::RoutedLead),
        SchemaKind::RoutedLead,
        datum,
    )
    .unwrap()
}

/// The value of a Prometheus counter (summed over label sets matching `filter`).
pub fn metric(url: &str, name: &str, filter: &str) -> f64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt
        .block_on(async { reqwest::get(url).await?.text().await })
        .unwrap_or_else(|e| {
            panic!(
                "cannot read {name} at {url}: {e} (has the processor exited? its log is kept \
                 under /tmp/leadflow-failed-*)"
            )
        });
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// A script of the repository, by path from its root.
pub fn rules(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .display()
        .to_string()
}

/// GET `url`: (status, body), or `None` if nothing answers.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let response = reqwest::get(url).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    })
}

/// What the generator produced: unique event ids by kind, and how many records were re-sends.
pub struct Produced {
    pub contacts: HashSet<String>,
    pub engagements: HashSet<String>,
    pub duplicates: usize,
    /// Where each event was first written: (partition, offset) in its input topic.
    pub located: HashMap<String, (i32, i64)>,
    /// Events the generator made late (beyond its lateness bound), by kind.
    pub late: HashSet<String>,
    /// Engagements whose contact no contact event named before them, in production order
    /// (the generator's trackers see 3 % of engagements before the CRM knows the contact):
    /// the only engagements a processor that merges its inputs in timestamp order counts as
    /// `unknown_contact`.
    pub orphans: usize,
    /// Their event ids.
    pub orphan_ids: HashSet<String>,
}

pub fn produced(stack: &Stack) -> Produced {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(&stack.registry.url).unwrap();
    let mut p = Produced {
        contacts: HashSet::new(),
        engagements: HashSet::new(),
        duplicates: 0,
        located: HashMap::new(),
        late: HashSet::new(),
        orphans: 0,
        orphan_ids: HashSet::new(),
    };
    // (production seq, is a contact event, contact id) of every first sending.
    let mut order: Vec<(u64, bool, String, String)> = Vec::new();
    for (topic, contacts) in [("crm.contacts.v1", true), ("crm.engagements.v1", false)] {
        for m in stack.broker.read_all(&stack.topic(topic)) {
            // Only the generator's records carry its headers; poison pills do not.
            let Some(disorder) = header(&m, DISORDER_HEADER).and_then(|d| Disorder::parse(&d))
            else {
                continue;
            };
            if disorder == Disorder::Duplicate {
                p.duplicates += 1;
                continue;
            }
            let seq: u64 = header(&m, SEQ_HEADER).unwrap().parse().unwrap();
            let (id, datum) = unframe(m.payload().unwrap()).unwrap();
            let writer = rt.block_on(client.schema_by_id(id)).unwrap();
            let event_id = if contacts {
                decode::<ContactEvent>(&writer, SchemaKind::ContactEvent, datum)
                    .unwrap()
                    .envelope
                    .event_id
            } else {
                decode::<EngagementEvent>(&writer, SchemaKind::EngagementEvent, datum)
                    .unwrap()
                    .envelope
                    .event_id
            };
            if disorder == Disorder::Late {
                p.late.insert(event_id);
            }
            if contacts {
                let e: ContactEvent = decode(&writer, SchemaKind::ContactEvent, datum).unwrap();
                p.located
                    .insert(e.envelope.event_id.clone(), (m.partition(), m.offset()));
                order.push((seq, true, e.payload.contact_id, String::new()));
                p.contacts.insert(e.envelope.event_id);
            } else {
                let e: EngagementEvent =
                    decode(&writer, SchemaKind::EngagementEvent, datum).unwrap();
                order.push((
                    seq,
                    false,
                    e.payload.contact_id,
                    e.envelope.event_id.clone(),
                ));
                p.engagements.insert(e.envelope.event_id);
            }
        }
    }
    order.sort();
    let mut known = HashSet::new();
    for (_, contact, id, event_id) in order {
        if contact {
            known.insert(id);
        } else if !known.contains(&id) {
            p.orphans += 1;
            p.orphan_ids.insert(event_id);
        }
    }
    p
}

/// Event id of a DLQ record whose original value is a decodable canonical event.
pub fn dlq_event_id(stack: &Stack, m: &OwnedMessage) -> Option<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = RegistryClient::new(&stack.registry.url).unwrap();
    let (id, datum) = unframe(m.payload()?).ok()?;
    let writer = rt.block_on(client.schema_by_id(id)).ok()?;
    decode::<ContactEvent>(&writer, SchemaKind::ContactEvent, datum)
        .map(|e| e.envelope.event_id)
        .or_else(|_| {
            decode::<EngagementEvent>(&writer, SchemaKind::EngagementEvent, datum)
                .map(|e| e.envelope.event_id)
        })
        .ok()
}
