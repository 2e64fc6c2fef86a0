//! The topology file exactly as written: strings and numbers, unknown keys rejected.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopology {
    pub application_id: String,
    pub inputs: RawInputs,
    pub reference: RawReference,
    pub outputs: RawOutputs,
    pub rules: String,
    /// Fixture files every script must pass before it runs (at start-up and on reload).
    #[serde(default)]
    pub rules_tests: Vec<String>,
    /// A candidate script run beside the live one; only its disagreements are written.
    #[serde(default)]
    pub rules_shadow: Option<String>,
    /// The queues decisions may name; any queue when absent.
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    #[serde(default)]
    pub sla: RawSla,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub lateness: RawLateness,
    #[serde(default)]
    pub processing: RawProcessing,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInputs {
    pub contacts: String,
    pub engagements: String,
    /// Acknowledgements of routed leads; without it no SLA is tracked.
    #[serde(default)]
    pub acks: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReference {
    pub accounts: String,
    pub reps: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutputs {
    pub p0: String,
    pub p1: String,
    pub p2: String,
    pub late: String,
    pub dlq: String,
    #[serde(default = "escalations")]
    pub escalations: String,
    /// Each contact's latest decision (compacted); none unless named.
    #[serde(default)]
    pub assignments: Option<String>,
    #[serde(default = "shadow_diff")]
    pub shadow_diff: String,
    /// One record per evaluated event (`LeadAudit`); none unless named.
    #[serde(default)]
    pub audit: Option<String>,
}

fn shadow_diff() -> String {
    crate::topics::SHADOW_DIFF.into()
}

fn escalations() -> String {
    crate::topics::ESCALATIONS.into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSla {
    #[serde(default = "sla_p0")]
    pub p0: String,
    #[serde(default = "sla_p1")]
    pub p1: String,
    #[serde(default = "sla_p2")]
    pub p2: String,
    /// Where a lead goes on each breach, in order, when the script has no `escalate`.
    #[serde(default)]
    pub escalation: Vec<RawEscalationStep>,
    /// Most escalations (re-routes) of one lead; default: the chain's length.
    #[serde(default)]
    pub max_escalations: Option<u32>,
    /// How long a decision stays known after it breached, so that a late acknowledgement
    /// still counts.
    #[serde(default = "ack_retention")]
    pub ack_retention: String,
}

/// One step of `sla.escalation`: a queue, or a queue with the priority (and owner) the
/// escalated decision gets.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawEscalationStep {
    Queue(String),
    Full(RawEscalationTarget),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalationTarget {
    pub queue: String,
    #[serde(default)]
    pub priority: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
}

fn ack_retention() -> String {
    "1d".into()
}

fn sla_p0() -> String {
    "1m".into()
}
fn sla_p1() -> String {
    "5m".into()
}
fn sla_p2() -> String {
    "30m".into()
}

impl Default for RawSla {
    fn default() -> Self {
        RawSla {
            p0: sla_p0(),
            p1: sla_p1(),
            p2: sla_p2(),
            escalation: Vec::new(),
            max_escalations: None,
            ack_retention: ack_retention(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    #[serde(default = "dedup_retention")]
    pub dedup_retention: String,
    #[serde(default = "block_cache")]
    pub block_cache: String,
    /// Warm copies of each task kept by other instances (Kafka Streams' standby replicas).
    #[serde(default)]
    pub standby_replicas: usize,
}

fn dedup_retention() -> String {
    "7d".into()
}
fn block_cache() -> String {
    "64MiB".into()
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            dedup_retention: dedup_retention(),
            block_cache: block_cache(),
            standby_replicas: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "max_record_bytes")]
    pub max_record_bytes: String,
    #[serde(default = "script_max_operations")]
    pub script_max_operations: u64,
    #[serde(default = "script_timeout")]
    pub script_timeout: String,
    #[serde(default = "max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "max_task_idle")]
    pub max_task_idle: String,
    /// Threads processing tasks (Kafka Streams' `num.stream.threads`); 0: one per CPU core.
    #[serde(default)]
    pub stream_threads: usize,
    #[serde(default = "max_clock_skew")]
    pub max_clock_skew: String,
    #[serde(default = "stuck_thread_timeout")]
    pub stuck_thread_timeout: String,
}

fn max_record_bytes() -> String {
    "1MiB".into()
}
fn script_max_operations() -> u64 {
    100_000
}
fn script_timeout() -> String {
    "50ms".into()
}
fn max_in_flight() -> usize {
    10_000
}
fn max_task_idle() -> String {
    "100ms".into()
}
fn max_clock_skew() -> String {
    "1h".into()
}
fn stuck_thread_timeout() -> String {
    "5m".into()
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_record_bytes: max_record_bytes(),
            script_max_operations: script_max_operations(),
            script_timeout: script_timeout(),
            max_in_flight: max_in_flight(),
            max_task_idle: max_task_idle(),
            stream_threads: 0,
            max_clock_skew: max_clock_skew(),
            stuck_thread_timeout: stuck_thread_timeout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLateness {
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(default = "grace")]
    pub grace: String,
    #[serde(default = "idle_timeout")]
    pub idle_timeout: String,
    #[serde(default = "lateness_policy")]
    pub policy: String,
}

fn enabled() -> bool {
    true
}
fn grace() -> String {
    "5m".into()
}
fn idle_timeout() -> String {
    "1m".into()
}
fn lateness_policy() -> String {
    "side_output".into()
}

impl Default for RawLateness {
    fn default() -> Self {
        RawLateness {
            enabled: enabled(),
            grace: grace(),
            idle_timeout: idle_timeout(),
            policy: lateness_policy(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcessing {
    /// `at_least_once` (the default) or `exactly_once`.
    #[serde(default)]
    pub guarantee: Option<String>,
    /// How often work is committed; the default depends on the guarantee.
    #[serde(default)]
    pub commit_interval: Option<String>,
}
