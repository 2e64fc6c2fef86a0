//! Test harness for integration tests: a real broker (Apache Kafka, KRaft, one node) and the
//! development registry as child processes on free ports, unique topic names, and waiting on
//! conditions with deadlines.
//!
//! Children are killed when their guard drops (also when a test panics), and get SIGKILL from
//! the kernel if the test process itself dies.

#![allow(dead_code)]

pub mod events;
pub mod proxy;
pub mod stack;

use std::io::{BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::ClientConfig;

/// Where `make tools` installs things; overridable for other layouts.
pub fn tools_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("LEADFLOW_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/leadflow")
}

fn require(path: PathBuf, what: &str) -> PathBuf {
    if path.exists() {
        return path;
    }
    panic!(
        "{what} not found at {}.\nInstall the test prerequisites with `make tools` \
         (or run the whole suite with `make test`, which installs them first).",
        path.display()
    )
}

/// `scripts/kafka.sh`, which runs the Kafka that `make tools` fetched.
pub fn kafka_script() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh"))
}

/// Python with `confluent-kafka[avro,schemaregistry]`: `$LEADFLOW_PYTHON` or the tools venv.
pub fn python_binary() -> PathBuf {
    match std::env::var("LEADFLOW_PYTHON") {
        Ok(p) => require(PathBuf::from(p), "python (from $LEADFLOW_PYTHON)"),
        Err(_) => require(
            tools_dir().join("venv/bin/python"),
            "the Python venv with confluent-kafka",
        ),
    }
}

/// The `leadflow` binary under test: the one cargo built, unless `LEADFLOW_TEST_BINARY` names
/// another (to loop a test against a fixed build while the tree changes).
pub fn leadflow_binary() -> PathBuf {
    std::env::var_os("LEADFLOW_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_leadflow")))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}

/// A name prefix no other test run shares.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos:x}.", std::process::id())
}

/// Polls `condition` every 50 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed on drop; its output goes to a log file shown on failures.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `command` as a child killed when the guard drops.
pub fn spawn(command: Command, name: &str) -> Proc {
    Proc::spawn(command, name)
}

impl Proc {
    fn spawn(mut command: Command, name: &str) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (with a deadline) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` and waits (with a deadline) for the process to exit.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        self.wait_exit(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test keeps its processes' logs (their temporary directory goes).
        if std::thread::panicking() {
            let name = self.log.file_name().unwrap().to_string_lossy().into_owned();
            let kept = std::env::temp_dir().join(format!(
                "leadflow-failed-{}-{}-{name}",
                std::process::id(),
                self.child.id()
            ));
            if std::fs::copy(&self.log, &kept).is_ok() {
                eprintln!(
                    "kept the log of a failed test's process: {}",
                    kept.display()
                );
            }
        }
    }
}

/// Asks the kernel to SIGKILL the child when the thread that spawned it dies.
fn die_with_parent(command: &mut Command) {
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// How to start a test broker.
#[derive(Default, Clone)]
pub struct BrokerOptions {
    /// server.properties lines appended to the defaults of `scripts/kafka.sh` (later keys win).
    pub extra: Vec<String>,
    /// Arguments for `kafka-storage format` (e.g. `--add-scram`).
    pub format_args: Vec<String>,
    /// The controller's port (a free one if not set); an `extra` `listeners=` line must name it.
    pub controller_port: Option<u16>,
    /// The PLAINTEXT port (a free one if not set).
    pub port: Option<u16>,
}

/// A single-node Kafka (broker and controller in one JVM) on a free port, its data in a
/// temporary directory that outlives a [`Broker::kill`], so it can be started again.
pub struct Broker {
    pub bootstrap: String,
    pub port: u16,
    pub proc: Proc,
    options: BrokerOptions,
    dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with(BrokerOptions::default())
    }

    pub fn start_with(options: BrokerOptions) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = options.port.unwrap_or_else(free_port);
        let proc = Broker::launch(dir.path(), port, &options);
        let broker = Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            proc,
            options,
            dir,
        };
        broker.wait_ready();
        broker
    }

    fn launch(dir: &Path, port: u16, options: &BrokerOptions) -> Proc {
        let mut command = Command::new(kafka_script());
        command
            .arg("start")
            .arg(dir.join("kafka"))
            .arg(port.to_string());
        if !options.extra.is_empty() {
            let extra = dir.join("extra.properties");
            std::fs::write(&extra, options.extra.join("\n") + "\n").unwrap();
            command.arg("--extra").arg(extra);
        }
        for arg in &options.format_args {
            command.arg("--format-arg").arg(arg);
        }
        if let Some(port) = options.controller_port {
            command.arg("--controller-port").arg(port.to_string());
        }
        // One broker per test: a small heap, and a JIT that starts fast.
        command.env(
            "KAFKA_HEAP_OPTS",
            std::env::var("LEADFLOW_TEST_KAFKA_HEAP")
                .unwrap_or_else(|_| "-Xms128m -Xmx512m".into()),
        );
        Proc::spawn(command, "kafka")
    }

    /// Waits until the broker answers metadata with itself in it (registered and unfenced).
    fn wait_ready(&self) {
        let consumer: BaseConsumer = self.client().create().unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(metadata) = consumer.fetch_metadata(None, Duration::from_secs(1)) {
                if !metadata.brokers().is_empty() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "Kafka did not answer metadata within 90s; log:\n{}",
                self.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The broker's log directory (one folder per topic partition).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("kafka/data")
    }

    /// kill -9 the broker (its data stays).
    pub fn kill(&mut self) {
        self.proc
            .signal_and_wait(libc::SIGKILL, Duration::from_secs(20));
    }

    /// Starts the broker again on the same data and port, and waits until it is ready.
    pub fn restart(&mut self) {
        self.proc = Broker::launch(self.dir.path(), self.port, &self.options);
        self.wait_ready();
    }

    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
    }

    pub fn settings(&self) -> leadflow::kafka::KafkaSettings {
        leadflow::kafka::KafkaSettings::new(self.bootstrap.clone())
    }

    /// Every record of `topic`, from the beginning to its current end.
    pub fn read_all(&self, topic: &str) -> Vec<OwnedMessage> {
        leadflow::kafka::read::read_to_end(&self.settings(), topic, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Creates `topic` with `partitions` and topic `configs` (e.g. `max.message.bytes`).
    pub fn create_topic(&self, topic: &str, partitions: i32, configs: &[(&str, &str)]) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            self.client().create().unwrap();
        let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            new = new.set(k, v);
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt
            .block_on(admin.create_topics(&[new], &AdminOptions::new()))
            .unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("cannot create {t}: {e}"));
        }
    }
}

/// `leadflow registry serve` on a free port (optionally persisted in `data_dir`).
pub struct RegistryProc {
    pub url: String,
    pub proc: Proc,
}

impl RegistryProc {
    pub fn start(data_dir: Option<&Path>) -> RegistryProc {
        Self::start_on(0, data_dir)
    }

    pub fn start_on(port: u16, data_dir: Option<&Path>) -> RegistryProc {
        let mut command = Command::new(leadflow_binary());
        command.args(["registry", "serve", "--addr", &format!("127.0.0.1:{port}")]);
        if let Some(dir) = data_dir {
            command.arg("--data-dir").arg(dir);
        }
        let proc = Proc::spawn(command, "registry");
        let log = proc.log.clone();
        let mut url = None;
        wait_until(
            "the registry to print its address",
            Duration::from_secs(30),
            || {
                url = std::fs::read_to_string(&log).ok().and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
                });
                url.is_some()
            },
        );
        RegistryProc {
            url: url.unwrap(),
            proc,
        }
    }
}

/// Apicurio Registry 3 (in-memory) on a free port; `url` is its Confluent-compatible API.
pub struct Apicurio {
    pub url: String,
    pub proc: Proc,
}

impl Apicurio {
    pub fn start() -> Apicurio {
        let port = free_port();
        let mut command = Command::new(kafka_script());
        command.arg("start-apicurio").arg(port.to_string());
        let proc = Proc::spawn(command, "apicurio");
        let url = format!("http://127.0.0.1:{port}/apis/ccompat/v7");
        let subjects = format!("{url}/subjects");
        let deadline = Instant::now() + Duration::from_secs(120);
        while stack::http_get(&subjects).is_none_or(|(status, _)| status != 200) {
            assert!(
                Instant::now() < deadline,
                "Apicurio did not answer within 120s; log:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        Apicurio { url, proc }
    }
}

/// Runs a command to completion with a deadline; returns (status ok, stdout, stderr).
pub fn run_with_deadline(mut command: Command, timeout: Duration) -> (bool, String, String) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command.spawn().expect("cannot spawn command");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send((0, s));
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(&mut stderr).read_to_string(&mut s);
        let _ = tx2.send((1, s));
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command {command:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = (String::new(), String::new());
    for _ in 0..2 {
        let (which, text) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if which == 0 {
            out.0 = text
        } else {
            out.1 = text
        }
    }
    (status.success(), out.0, out.1)
}

/// The shipped topology (topologies/lead-routing.yaml) with every contract topic prefixed by
/// `prefix`, an application id of its own, and `rules` as the rules file; without
/// `inputs.acks`, so no SLA is tracked (no escalation joins the decisions a test counts), and
/// without `outputs.assignments` (the benches do the job of the Kafka Streams twin, which has
/// neither).
pub fn prefixed_topology(prefix: &str, rules: &str) -> String {
    prefixed_topology_with_sla(prefix, rules)
        .replace(&format!("  acks: {prefix}leads.acks\n"), "")
        .replace(&format!("  assignments: {prefix}leads.assignments\n"), "")
}

/// [`prefixed_topology`] with SLA tracking and the assignments topic on, as shipped.
pub fn prefixed_topology_with_sla(prefix: &str, rules: &str) -> String {
    const TOPICS: [&str; 14] = [
        "crm.contacts.v1",
        "crm.engagements.v1",
        "crm.accounts.v1",
        "crm.reps.v1",
        "leads.routed.p0",
        "leads.routed.p1",
        "leads.routed.p2",
        "leads.late",
        "leads.dlq",
        "leads.acks",
        "leads.escalations",
        "leads.assignments",
        "leads.shadow.diff",
        "leads.audit",
    ];
    let mut yaml = include_str!("../../topologies/lead-routing.yaml").to_string();
    for t in TOPICS {
        yaml = yaml.replace(&format!(": {t}\n"), &format!(": {prefix}{t}\n"));
    }
    assert!(
        yaml.contains(&format!("  acks: {prefix}leads.acks\n")),
        "{yaml}"
    );
    yaml.replace(
        "application_id: leadflow-lead-routing",
        &format!("application_id: {}app", prefix.replace('.', "-")),
    )
    .replace("rules: rules/routing.rhai", &format!("rules: {rules}"))
    // The shipped script's fixtures and queues do not fit the tests' scripts.
    .replace("rules_tests: [rules/tests/routing.yaml]\n", "")
    .lines()
    .filter(|l| rules.ends_with("rules/routing.rhai") || !l.starts_with("queues: "))
    .map(|l| format!("{l}\n"))
    .collect()
}

/// The value of header `key` on `message`, as UTF-8.
pub fn header(message: &OwnedMessage, key: &str) -> Option<String> {
    use rdkafka::message::Headers;
    use rdkafka::Message;
    message.headers().and_then(|h| {
        h.iter()
            .find(|header| header.key == key)
            .and_then(|header| header.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}
