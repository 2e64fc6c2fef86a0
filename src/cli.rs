//! Command-line definitions (contracts §7). Parsing only: the commands live in their modules.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::kafka::parse_override;

#[derive(Debug, Parser)]
#[command(
    name = "leadflow",
    version,
    about = "Lead enrichment and routing on Kafka"
)]
pub struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object per line,
    /// with the span and fields) for log pipelines.
    #[arg(
        long,
        global = true,
        env = "LEADFLOW_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the processor: consume, enrich, route, emit (until SIGTERM/SIGINT).
    Run(RunArgs),
    /// Make an application process its inputs again: with every instance stopped, commit the
    /// group's input offsets at the start (or a time), delete its changelog topics and its
    /// local state here. Output topics are left alone.
    Reset(ResetArgs),
    /// Validate and unit-test routing scripts, no Kafka needed.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// The development schema registry (Confluent-compatible subset).
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Produce realistic, reproducible CRM traffic in the Confluent wire format.
    Gen(GenArgs),
    /// Create the contract's topics or count what is on them.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Check a topology, its rules and their rules_tests without touching Kafka; with
    /// --kafka-check also its topics (present, inputs co-partitioned) and the registry.
    Validate(ValidateArgs),
    /// A contact's trail from the audit topic (outputs.audit), oldest first: every event
    /// that reached routing, its outcome, reasons and what fired in the script.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The contact (the key of its records).
    pub contact_id: String,
    /// The topology file whose `outputs.audit` names the audit topic.
    #[arg(
        long,
        env = "LEADFLOW_TOPOLOGY",
        default_value = "topologies/lead-routing.yaml"
    )]
    pub topology: PathBuf,
    /// The audit topic, instead of the topology's `outputs.audit`.
    #[arg(long)]
    pub topic: Option<String>,
    /// Only the last N records.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// One JSON object per record instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The topology file.
    #[arg(
        long,
        env = "LEADFLOW_TOPOLOGY",
        default_value = "topologies/lead-routing.yaml"
    )]
    pub topology: PathBuf,
    /// Routing script, instead of the topology's `rules`.
    #[arg(long, env = "LEADFLOW_RULES")]
    pub rules: Option<PathBuf>,
    /// Also check the topics on the broker and that the schema registry answers.
    #[arg(long)]
    pub kafka_check: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Which application, and where its state is: shared by `run` and `reset`.
#[derive(Debug, Args)]
pub struct AppArgs {
    /// The topology file.
    #[arg(
        long,
        env = "LEADFLOW_TOPOLOGY",
        default_value = "topologies/lead-routing.yaml"
    )]
    pub topology: PathBuf,
    /// Consumer group and state namespace, instead of the topology's `application_id`.
    #[arg(long, env = "LEADFLOW_APPLICATION_ID")]
    pub application_id: Option<String>,
    /// Where RocksDB state lives (a directory per application id below it).
    #[arg(long, env = "LEADFLOW_STATE_DIR", default_value = ".leadflow-state")]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub app: AppArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Routing script, instead of the topology's `rules`.
    #[arg(long, env = "LEADFLOW_RULES")]
    pub rules: Option<PathBuf>,
    /// This instance's stable name in the group (static membership: `group.instance.id`): a
    /// restart within the session timeout gets its tasks back without a rebalance. Also names
    /// its transactional producers under exactly-once. Unique per running instance (e.g. the
    /// pod name of a StatefulSet).
    #[arg(long, env = "LEADFLOW_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Serves /metrics (Prometheus), /healthz and /readyz; port 0 picks a free port.
    #[arg(long, env = "LEADFLOW_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
}

/// `reset` removes the state of this machine's instance only: run it where each instance's
/// state directory is, or delete their `<state-dir>/<application_id>`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pub app: AppArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Start again from the first record at or after this time (record timestamp; RFC 3339
    /// like 2026-11-30T08:00:00Z, or a date) instead of from the start.
    #[arg(long, value_name = "TIME")]
    pub to_datetime: Option<String>,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile a script and check it defines `route(lead)` (and `score(lead)` if any).
    Check {
        file: PathBuf,
        /// Also check the script's queue names against this topology's `queues:` list, under
        /// its script limits.
        #[arg(long, value_name = "FILE")]
        topology: Option<PathBuf>,
    },
    /// Run a script against fixture cases (default: the `tests/*.yaml` next to it).
    Test {
        file: PathBuf,
        fixtures: Vec<PathBuf>,
        /// Run the cases under this topology's `queues:` list and script limits.
        #[arg(long, value_name = "FILE")]
        topology: Option<PathBuf>,
    },
    /// Run a script on one lead and show why it went where: the lead as the script saw it,
    /// the outcome, and the functions called and `if`s taken, with their lines.
    Explain {
        file: PathBuf,
        /// The lead: YAML or JSON shaped like a test case's `lead`, or a fixture file.
        #[arg(long, value_name = "FILE")]
        lead: PathBuf,
        /// The case of a fixture file to explain (needed when it holds several).
        #[arg(long, value_name = "NAME")]
        case: Option<String>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replay recorded inputs through a candidate script and the current one, each with
    /// fresh state, and compare what they decide (nothing is written to Kafka).
    Backtest(Box<BacktestArgs>),
}

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The candidate script.
    pub file: PathBuf,
    /// The script to compare with, instead of the topology's `rules`.
    #[arg(long, value_name = "CURRENT")]
    pub against: Option<PathBuf>,
    /// Count the events from this record time on (RFC 3339 or a date); earlier ones only
    /// build state.
    #[arg(long, value_name = "TIME")]
    pub since: String,
    /// Read the inputs up to this record time (default: their end now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// The topology file: input and reference topics, limits, `queues:`, lateness.
    #[arg(
        long,
        env = "LEADFLOW_TOPOLOGY",
        default_value = "topologies/lead-routing.yaml"
    )]
    pub topology: PathBuf,
    /// How many events of each transition to name.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub examples: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Serve the registry until SIGTERM/SIGINT. Prints `listening on http://ADDR` first.
    Serve {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8081", env = "LEADFLOW_REGISTRY_ADDR")]
        addr: SocketAddr,
        /// Keep schemas in this directory across restarts (default: in memory).
        #[arg(long, env = "LEADFLOW_REGISTRY_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// How to reach Kafka; shared by every command that talks to it.
#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "LEADFLOW_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    pub bootstrap_servers: String,
    /// Any librdkafka property, e.g. --kafka security.protocol=SASL_SSL (repeatable; in
    /// LEADFLOW_KAFKA separate them with ';'). Wins over --kafka-config.
    #[arg(long = "kafka", value_name = "KEY=VALUE", value_parser = parse_override, env = "LEADFLOW_KAFKA", value_delimiter = ';', hide_env_values = true)]
    pub kafka: Vec<(String, String)>,
    /// librdkafka properties from a file, one key=value a line (# comments), so that secrets
    /// need not be on the command line.
    #[arg(long, value_name = "FILE", env = "LEADFLOW_KAFKA_CONFIG")]
    pub kafka_config: Option<PathBuf>,
}

/// Where the Schema Registry is; shared by every command that uses it.
#[derive(Debug, Args, Clone)]
pub struct RegistryArgs {
    /// Schema Registry URL (any Confluent-compatible registry).
    #[arg(
        long,
        env = "LEADFLOW_SCHEMA_REGISTRY_URL",
        default_value = "http://localhost:8081"
    )]
    pub schema_registry_url: String,
    /// HTTP basic auth for the registry, user:password (Confluent's basic.auth.user.info).
    /// Credentials in the URL work too; neither is ever printed.
    #[arg(
        long,
        value_name = "USER:PASSWORD",
        env = "LEADFLOW_SCHEMA_REGISTRY_BASIC_AUTH",
        hide_env_values = true
    )]
    pub schema_registry_basic_auth: Option<String>,
    /// PEM file of the CA certificate(s) to trust for an https registry.
    #[arg(long, value_name = "FILE", env = "LEADFLOW_SCHEMA_REGISTRY_CA")]
    pub schema_registry_ca: Option<PathBuf>,
}

impl RegistryArgs {
    pub fn config(&self) -> crate::codec::registry_client::RegistryConfig {
        crate::codec::registry_client::RegistryConfig {
            url: self.schema_registry_url.clone(),
            basic_auth: self.schema_registry_basic_auth.clone(),
            ca_file: self.schema_registry_ca.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct GenArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// How long to keep retrying an unavailable registry before giving up.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub registry_wait: Duration,
    /// Prefix for every topic name (isolates demos and tests).
    #[arg(long, default_value = "")]
    pub topic_prefix: String,
    /// Contact and engagement records to produce, duplicates included.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Records per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seed: the same seed and flags give byte-identical payloads.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fraction of records that re-send an earlier event (same event_id), like webhook retries.
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Fraction of records whose occurred_at is behind stream time, within --lateness-bound.
    #[arg(long, default_value_t = 0.0)]
    pub out_of_order: f64,
    /// Fraction of records whose occurred_at is beyond --lateness-bound (by 10 min to 2 h more).
    #[arg(long, default_value_t = 0.0)]
    pub late: f64,
    /// The bound separating out-of-order from late; match the processor's grace period.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub lateness_bound: Duration,
    /// Mean event-time gap between consecutive records.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub mean_gap: Duration,
    /// Event time of the first record: RFC 3339, or `now`. Fixed by default for reproducibility.
    #[arg(long, default_value = "2026-01-05T09:00:00Z")]
    pub start: String,
    /// Accounts in the reference table.
    #[arg(long, default_value_t = 2_000)]
    pub accounts: usize,
    /// Reps in the reference table.
    #[arg(long, default_value_t = 48)]
    pub reps: usize,
    /// Do not produce the accounts and reps reference tables.
    #[arg(long)]
    pub no_reference_data: bool,
    /// Also act as a delivery worker: acknowledge this fraction of the routed leads decided
    /// while gen runs (on leads.acks), the rest never; 0 acknowledges none.
    #[arg(long, default_value_t = 0.0)]
    pub acks: f64,
    /// Mean delay of an acknowledgement after its decision (exponential, capped at 5x): with
    /// 30s about 13 % of the acknowledged P0 leads (1 min SLA) are acknowledged late.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_delay: Duration,
    /// With --acks: once the events are produced, stop after no decision came for this long
    /// and every acknowledgement due is sent.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_idle: Duration,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Create every contract topic that is missing (streams, compacted tables, outputs).
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long, default_value = "")]
        topic_prefix: String,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
    },
    /// Print the last records of a topic, values decoded through the registry, as JSON lines.
    Peek {
        topic: String,
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        registry: RegistryArgs,
        /// How many records (the last ones).
        #[arg(long, default_value_t = 3)]
        limit: usize,
    },
    /// Print partitions and record counts of every contract topic.
    Stats {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long, default_value = "")]
        topic_prefix: String,
    },
}
