//! Validation: every problem of a topology file, each with where it is, in one report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawEscalationStep, RawTopology};
use crate::route::Priority;
use crate::time::{Lateness, LatenessPolicy};

/// A topology file that cannot be used; `Display` lists every problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct TopologyError {
    pub problems: Vec<String>,
}

/// Output topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outputs {
    pub p0: String,
    pub p1: String,
    pub p2: String,
    pub late: String,
    pub dlq: String,
    /// SLA breaches (`SlaBreach`), when acknowledgements are tracked.
    pub escalations: String,
    /// Each contact's latest `RoutedLead` (compacted), when named.
    pub assignments: Option<String>,
    /// Disagreements of the shadow script (`ShadowDiff`), with `rules_shadow`.
    pub shadow_diff: String,
    /// One `LeadAudit` per evaluated event, when named.
    pub audit: Option<String>,
}

/// What happens when a routed lead is not acknowledged in time (`sla.*` but the windows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// Where the lead goes on breach `n` (1-based: `chain[n - 1]`) when the script has no
    /// `escalate`.
    pub chain: Vec<EscalationStep>,
    /// Most re-routes of one lead; a breach beyond them is recorded only.
    pub max_escalations: u32,
    /// How long a breached decision is remembered, so that a late acknowledgement of it
    /// still counts (and closes its escalations).
    pub ack_retention: Duration,
}

/// One step of the escalation chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationStep {
    pub queue: String,
    /// The escalated decision's priority; `None` keeps the breached decision's.
    pub priority: Option<Priority>,
    pub owner: Option<String>,
}

/// Runtime limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_record_bytes: usize,
    pub script_max_operations: u64,
    pub script_timeout: Duration,
    pub max_in_flight: usize,
    /// How long a task with an empty input waits for it before processing its other inputs
    /// alone (Kafka Streams' `max.task.idle.ms`); zero never waits.
    pub max_task_idle: Duration,
    /// Threads processing tasks, each owning the tasks (partition numbers) `p % threads == i`
    /// (Kafka Streams' `num.stream.threads`). At least 1.
    pub stream_threads: usize,
    /// How far ahead of the wall clock an event's time may be; beyond it the event goes to
    /// the DLQ as `bad_timestamp` and never reaches the watermark.
    pub max_clock_skew: Duration,
    /// `/healthz` fails while a stream thread has been in one step (processing a record,
    /// committing, firing timers) longer than this, restores and registry waits aside.
    pub stuck_thread_timeout: Duration,
}

impl Topology {
    /// Every topic this topology writes records to (changelogs aside): the five always
    /// written, then the optional ones it uses.
    pub fn output_topics(&self) -> Vec<&String> {
        let o = &self.outputs;
        [&o.p0, &o.p1, &o.p2, &o.late, &o.dlq]
            .into_iter()
            .chain(self.acks.is_some().then_some(&o.escalations))
            .chain(o.assignments.as_ref())
            .chain(self.rules_shadow.is_some().then_some(&o.shadow_diff))
            .chain(o.audit.as_ref())
            .collect()
    }
}

/// A validated topology, ready to build runtime objects from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub application_id: String,
    pub contacts: String,
    pub engagements: String,
    /// Acknowledgements of routed leads (`inputs.acks`); with it every decision is timed
    /// against its SLA, without it none is.
    pub acks: Option<String>,
    pub accounts: String,
    pub reps: String,
    pub outputs: Outputs,
    pub rules: PathBuf,
    /// Fixture files (`rules_tests`) the script must pass at start-up and before a reload
    /// takes effect; none by default.
    pub rules_tests: Vec<PathBuf>,
    /// A candidate script run on every lead beside `rules` (`rules_shadow`): its decisions
    /// are never emitted, where they differ from the live ones a `ShadowDiff` is.
    pub rules_shadow: Option<PathBuf>,
    /// The queues a decision may name (`queues:`), sorted; `None`: any queue.
    pub queues: Option<Vec<String>>,
    /// SLA window per priority, P0, P1, P2.
    pub sla: [Duration; 3],
    pub escalation: Escalation,
    pub dedup_retention: Duration,
    /// RocksDB block cache shared by every store (`state.block_cache`), in bytes.
    pub block_cache_bytes: usize,
    /// How many other instances keep a warm copy of each task (`state.standby_replicas`).
    pub standby_replicas: usize,
    pub limits: Limits,
    /// Event time: grace, idle timeout and what happens to late events.
    pub lateness: Lateness,
    /// The processing guarantee and how often work is committed.
    pub processing: Processing,
}

/// What a reader of the outputs may rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Every input is decided at least once; a crash may re-emit decisions (with their
    /// decision_id).
    #[default]
    AtLeastOnce,
    /// Outputs, state changes and input offsets are committed in one Kafka transaction:
    /// `read_committed` readers see each decision once.
    ExactlyOnce,
}

impl Guarantee {
    pub const ALL: [Guarantee; 2] = [Guarantee::AtLeastOnce, Guarantee::ExactlyOnce];

    pub fn as_str(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at_least_once",
            Guarantee::ExactlyOnce => "exactly_once",
        }
    }

    fn parse(s: &str) -> Option<Guarantee> {
        Guarantee::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// Kafka Streams' defaults: 100 ms under exactly-once (readers wait for commits), 1 s
    /// otherwise (only the offsets are committed).
    pub fn default_commit_interval(self) -> Duration {
        match self {
            Guarantee::AtLeastOnce => Duration::from_secs(1),
            Guarantee::ExactlyOnce => Duration::from_millis(100),
        }
    }
}

/// The topology's `processing` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processing {
    pub guarantee: Guarantee,
    /// Under exactly-once, how long a transaction stays open at most; under at-least-once,
    /// how often the stored offsets are committed.
    pub commit_interval: Duration,
}

/// Command-line values that replace the file's (applied before validation, so they are
/// checked like the file's own).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub rules: Option<PathBuf>,
    pub application_id: Option<String>,
}

/// Reads and validates a topology file.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    load_with(path, &Overrides::default())
}

/// Reads a topology file, applies the command line's overrides, and validates the result.
pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Topology, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|e| TopologyError {
        problems: vec![format!(
            "{}: cannot read the topology file: {e}",
            path.display()
        )],
    })?;
    parse_with(&path.display().to_string(), &text, overrides)
}

/// Validates topology `text` read from `file` (named in every message).
pub fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
    parse_with(file, text, &Overrides::default())
}

/// [`parse`] with the command line's overrides applied before validation.
pub fn parse_with(
    file: &str,
    text: &str,
    overrides: &Overrides,
) -> Result<Topology, TopologyError> {
    let mut raw: RawTopology = serde_norway::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        TopologyError {
            problems: vec![format!("{file}:{at}: {e}")],
        }
    })?;
    if let Some(rules) = &overrides.rules {
        raw.rules = rules.display().to_string();
    }
    if let Some(id) = &overrides.application_id {
        raw.application_id = id.clone();
    }
    let mut p = Problems {
        file,
        list: Vec::new(),
    };
    let contacts = p.topic("inputs.contacts", &raw.inputs.contacts);
    let engagements = p.topic("inputs.engagements", &raw.inputs.engagements);
    let acks = raw
        .inputs
        .acks
        .as_deref()
        .map(|t| p.topic("inputs.acks", t));
    let accounts = p.topic("reference.accounts", &raw.reference.accounts);
    let reps = p.topic("reference.reps", &raw.reference.reps);
    let outputs = Outputs {
        p0: p.topic("outputs.p0", &raw.outputs.p0),
        p1: p.topic("outputs.p1", &raw.outputs.p1),
        p2: p.topic("outputs.p2", &raw.outputs.p2),
        late: p.topic("outputs.late", &raw.outputs.late),
        dlq: p.topic("outputs.dlq", &raw.outputs.dlq),
        escalations: p.topic("outputs.escalations", &raw.outputs.escalations),
        assignments: raw
            .outputs
            .assignments
            .as_deref()
            .map(|t| p.topic("outputs.assignments", t)),
        shadow_diff: p.topic("outputs.shadow_diff", &raw.outputs.shadow_diff),
        audit: raw
            .outputs
            .audit
            .as_deref()
            .map(|t| p.topic("outputs.audit", t)),
    };
    if !is_name(&raw.application_id) {
        p.add(
            "application_id",
            format!(
                "{:?} must be letters, digits, '.', '_' or '-'",
                raw.application_id
            ),
        );
    }
    let sla = [
        p.duration("sla.p0", &raw.sla.p0),
        p.duration("sla.p1", &raw.sla.p1),
        p.duration("sla.p2", &raw.sla.p2),
    ];
    let escalation = escalation(&mut p, &raw.sla);
    let queues = raw.queues.as_ref().map(|q| queues(&mut p, q, &escalation));
    let dedup_retention = p.duration("state.dedup_retention", &raw.state.dedup_retention);
    let block_cache_bytes = match parse_bytes(&raw.state.block_cache) {
        Some(n) if n >= 1 << 20 => n,
        _ => {
            p.add(
                "state.block_cache",
                format!(
                    "{:?} is not a size of at least 1MiB; write e.g. 64MiB or 1GiB",
                    raw.state.block_cache
                ),
            );
            0
        }
    };
    let script_timeout = p.duration("limits.script_timeout", &raw.limits.script_timeout);
    let max_task_idle = p.duration_or_zero("limits.max_task_idle", &raw.limits.max_task_idle);
    let max_clock_skew = p.duration("limits.max_clock_skew", &raw.limits.max_clock_skew);
    let stuck_thread_timeout = p.duration(
        "limits.stuck_thread_timeout",
        &raw.limits.stuck_thread_timeout,
    );
    let max_record_bytes = match parse_bytes(&raw.limits.max_record_bytes) {
        Some(n) if n >= 64 => n,
        _ => {
            p.add(
                "limits.max_record_bytes",
                format!(
                    "{:?} is not a size of at least 64 bytes; write e.g. 1MiB or 512KiB",
                    raw.limits.max_record_bytes
                ),
            );
            0
        }
    };
    if raw.limits.script_max_operations == 0 {
        p.add(
            "limits.script_max_operations",
            "must be greater than zero".into(),
        );
    }
    if raw.limits.max_in_flight == 0 {
        p.add("limits.max_in_flight", "must be greater than zero".into());
    }
    let produced = [
        &outputs.p0,
        &outputs.p1,
        &outputs.p2,
        &outputs.late,
        &outputs.dlq,
        &outputs.escalations,
    ];
    for input in [&contacts, &engagements, &accounts, &reps]
        .into_iter()
        .chain(acks.as_ref())
    {
        if produced.contains(&input) {
            p.add("outputs", format!("{input} is both an input and an output"));
        }
    }
    let lateness = Lateness {
        enabled: raw.lateness.enabled,
        grace: p.duration_or_zero("lateness.grace", &raw.lateness.grace),
        idle_timeout: p.duration("lateness.idle_timeout", &raw.lateness.idle_timeout),
        policy: LatenessPolicy::parse(&raw.lateness.policy).unwrap_or_else(|| {
            let allowed: Vec<_> = LatenessPolicy::ALL.iter().map(|l| l.as_str()).collect();
            p.add(
                "lateness.policy",
                format!(
                    "{:?} is not a lateness policy; write one of {}",
                    raw.lateness.policy,
                    allowed.join(", ")
                ),
            );
            LatenessPolicy::default()
        }),
    };
    let guarantee = match raw.processing.guarantee.as_deref() {
        None => Guarantee::default(),
        Some(g) => Guarantee::parse(g).unwrap_or_else(|| {
            let allowed: Vec<_> = Guarantee::ALL.iter().map(|g| g.as_str()).collect();
            p.add(
                "processing.guarantee",
                format!(
                    "{g:?} is not a guarantee; write one of {}",
                    allowed.join(", ")
                ),
            );
            Guarantee::default()
        }),
    };
    let processing = Processing {
        guarantee,
        commit_interval: match &raw.processing.commit_interval {
            None => guarantee.default_commit_interval(),
            Some(d) => p.duration("processing.commit_interval", d),
        },
    };
    if raw.rules.is_empty() {
        p.add(
            "rules",
            "names no file; write e.g. rules: rules/routing.rhai".into(),
        );
    }
    if !p.list.is_empty() {
        return Err(TopologyError { problems: p.list });
    }
    Ok(Topology {
        application_id: raw.application_id,
        contacts,
        engagements,
        acks,
        accounts,
        reps,
        outputs,
        rules: PathBuf::from(raw.rules),
        rules_tests: raw.rules_tests.iter().map(PathBuf::from).collect(),
        rules_shadow: raw.rules_shadow.as_deref().map(PathBuf::from),
        queues,
        sla,
        escalation,
        dedup_retention,
        block_cache_bytes,
        standby_replicas: raw.state.standby_replicas,
        limits: Limits {
            max_record_bytes,
            script_max_operations: raw.limits.script_max_operations,
            script_timeout,
            max_in_flight: raw.limits.max_in_flight,
            max_task_idle,
            stream_threads: match raw.limits.stream_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            max_clock_skew,
            stuck_thread_timeout,
        },
        lateness,
        processing,
    })
}

/// The `sla` section's escalation settings.
fn escalation(p: &mut Problems, raw: &super::raw::RawSla) -> Escalation {
    let chain: Vec<EscalationStep> = raw
        .escalation
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let field = format!("sla.escalation[{i}]");
            let (queue, priority, owner) = match step {
                RawEscalationStep::Queue(q) => (q.clone(), None, None),
                RawEscalationStep::Full(t) => {
                    (t.queue.clone(), t.priority.clone(), t.owner.clone())
                }
            };
            if queue.trim().is_empty() {
                p.add(
                    &field,
                    "names no queue; write e.g. - queue: team-leads".into(),
                );
            }
            let priority = priority.and_then(|s| {
                let parsed = Priority::parse(&s);
                if parsed.is_none() {
                    p.add(
                        &format!("{field}.priority"),
                        format!("{s:?} is not a priority; write P0, P1 or P2"),
                    );
                }
                parsed
            });
            EscalationStep {
                queue,
                priority,
                owner,
            }
        })
        .collect();
    let max_escalations = raw.max_escalations.unwrap_or(chain.len() as u32);
    Escalation {
        chain,
        max_escalations,
        ack_retention: p.duration("sla.ack_retention", &raw.ack_retention),
    }
}

/// The `queues:` list, sorted: names non-empty and unique, and every queue of the escalation
/// chain in it.
fn queues(p: &mut Problems, raw: &[String], escalation: &Escalation) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, q) in raw.iter().enumerate() {
        if q.trim().is_empty() {
            p.add(
                &format!("queues[{i}]"),
                "is empty; write a queue name".into(),
            );
        } else if !seen.insert(q.as_str()) {
            p.add(&format!("queues[{i}]"), format!("{q:?} is listed twice"));
        }
    }
    if seen.is_empty() {
        p.add(
            "queues",
            "lists no queue: name the queues decisions may go to, or remove the key to allow any"
                .into(),
        );
    }
    for (i, step) in escalation.chain.iter().enumerate() {
        if !step.queue.trim().is_empty() && !seen.contains(step.queue.as_str()) {
            p.add(
                &format!("sla.escalation[{i}].queue"),
                format!(
                    "{:?} is not in `queues`{}",
                    step.queue,
                    crate::route::did_you_mean(&step.queue, seen.iter().copied())
                ),
            );
        }
    }
    seen.into_iter().map(str::to_string).collect()
}

/// Collects problems, each prefixed with the file and the field it is about.
struct Problems<'a> {
    file: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    fn add(&mut self, field: &str, message: String) {
        self.list.push(format!("{}: {field}: {message}", self.file));
    }

    fn topic(&mut self, field: &str, value: &str) -> String {
        if !is_name(value) || value.len() > 249 {
            self.add(
                field,
                format!(
                    "{value:?} is not a valid Kafka topic name (letters, digits, '.', '_', '-'; \
                     at most 249)"
                ),
            );
        }
        value.to_string()
    }

    fn duration(&mut self, field: &str, value: &str) -> Duration {
        match self.duration_or_zero(field, value) {
            d if d.is_zero() => {
                self.add(field, "must be greater than zero".into());
                Duration::from_secs(1)
            }
            d => d,
        }
    }

    /// A duration that may be zero (a grace period of `0s` tolerates no disorder; a
    /// `max_task_idle` of `0s` never waits).
    fn duration_or_zero(&mut self, field: &str, value: &str) -> Duration {
        humantime::parse_duration(value).unwrap_or_else(|e| {
            self.add(
                field,
                format!("{value:?} is not a duration ({e}); write e.g. 5m, 30s, 7d"),
            );
            Duration::from_secs(1)
        })
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `1048576`, `512KiB`, `1MiB`, `1MB` (= 10^6) and so on.
fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits.parse().ok()?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../topologies/lead-routing.yaml");

    #[test]
    fn the_shipped_topology_is_valid() {
        let t = parse("lead-routing.yaml", SHIPPED).unwrap();
        assert_eq!(t.contacts, "crm.contacts.v1");
        assert_eq!(t.sla[0], Duration::from_secs(60));
        assert_eq!(t.limits.max_record_bytes, 1 << 20);
        assert_eq!(t.block_cache_bytes, 64 << 20);
        assert_eq!(t.rules, PathBuf::from("rules/routing.rhai"));
        assert_eq!(t.lateness, Lateness::default());
        assert_eq!(t.limits.max_task_idle, Duration::from_millis(100));
        assert_eq!(t.limits.max_clock_skew, Duration::from_secs(3600));
        assert_eq!(t.processing.guarantee, Guarantee::AtLeastOnce);
        assert_eq!(t.processing.commit_interval, Duration::from_secs(1));
    }

    #[test]
    fn exactly_once_commits_every_100ms_unless_told_and_is_checked() {
        let eos = SHIPPED.replace("guarantee: at_least_once", "guarantee: exactly_once");
        let t = parse("t.yaml", &eos).unwrap();
        assert_eq!(t.processing.guarantee, Guarantee::ExactlyOnce);
        assert_eq!(t.processing.commit_interval, Duration::from_millis(100));
        let t = parse(
            "t.yaml",
            &eos.replace("# commit_interval: 1s", "commit_interval: 250ms"),
        )
        .unwrap();
        assert_eq!(t.processing.commit_interval, Duration::from_millis(250));
        let err = parse(
            "t.yaml",
            &SHIPPED
                .replace("guarantee: at_least_once", "guarantee: exactly-once")
                .replace("# commit_interval: 1s", "commit_interval: 0s"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "t.yaml: processing.guarantee: \"exactly-once\" is not a guarantee; write one of \
                 at_least_once, exactly_once"
            ),
            "{err}"
        );
        assert!(
            err.contains("t.yaml: processing.commit_interval: must be greater than zero"),
            "{err}"
        );
    }

    #[test]
    fn max_clock_skew_defaults_to_an_hour_and_is_checked() {
        let without = SHIPPED
            .lines()
            .filter(|l| !l.contains("max_clock_skew:"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            parse("t.yaml", &without).unwrap().limits.max_clock_skew,
            Duration::from_secs(3600)
        );
        let err = parse(
            "t.yaml",
            &SHIPPED.replace("max_clock_skew: 1h", "max_clock_skew: 0s"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("t.yaml: limits.max_clock_skew: must be greater than zero"),
            "{err}"
        );
    }

    #[test]
    fn max_task_idle_defaults_may_be_zero_and_is_checked() {
        let without = SHIPPED
            .lines()
            .filter(|l| !l.contains("max_task_idle:"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!without.contains("max_task_idle:"));
        let t = parse("t.yaml", &without).unwrap();
        assert_eq!(t.limits.max_task_idle, Duration::from_millis(100));

        let t = parse(
            "t.yaml",
            &SHIPPED.replace("max_task_idle: 100ms", "max_task_idle: 0s"),
        )
        .unwrap();
        assert_eq!(t.limits.max_task_idle, Duration::ZERO);
        let t = parse(
            "t.yaml",
            &SHIPPED.replace("max_task_idle: 100ms", "max_task_idle: 2s"),
        )
        .unwrap();
        assert_eq!(t.limits.max_task_idle, Duration::from_secs(2));

        let err = parse(
            "t.yaml",
            &SHIPPED.replace("max_task_idle: 100ms", "max_task_idle: a bit"),
        )
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.to_string()
                .contains("t.yaml: limits.max_task_idle: \"a bit\" is not a duration"),
            "{err}"
        );
    }

    /// The shipped file without its `lateness:` section (the section is last).
    fn without_lateness() -> String {
        let at = SHIPPED
            .find("\nlateness:")
            .expect("the shipped file has a lateness section");
        let before = &SHIPPED[..at];
        // Drop the comment lines that introduce the section, too.
        let keep = before
            .trim_end()
            .rfind("\n\n")
            .map_or(before.len(), |i| i + 1);
        format!("{}\n", &before[..keep])
    }

    #[test]
    fn lateness_section_and_fields_default() {
        let text = without_lateness();
        assert!(!text.contains("lateness"), "{text}");
        let t = parse("t.yaml", &text).unwrap();
        assert_eq!(t.lateness, Lateness::default());

        let t = parse("t.yaml", &format!("{text}lateness:\n  policy: drop\n")).unwrap();
        assert_eq!(t.lateness.policy, LatenessPolicy::Drop);
        assert_eq!(t.lateness.grace, Duration::from_secs(300));
        assert_eq!(t.lateness.idle_timeout, Duration::from_secs(60));

        let custom =
            "lateness:\n  enabled: false\n  grace: 0s\n  idle_timeout: 30s\n  policy: process\n";
        let t = parse("t.yaml", &format!("{text}{custom}")).unwrap();
        assert_eq!(
            t.lateness,
            Lateness {
                enabled: false,
                grace: Duration::ZERO,
                idle_timeout: Duration::from_secs(30),
                policy: LatenessPolicy::Process,
            }
        );
    }

    #[test]
    fn lateness_problems_are_reported_with_their_place() {
        let text = format!(
            "{}lateness:\n  grace: a while\n  idle_timeout: 0s\n  policy: sideoutput\n",
            without_lateness()
        );
        let err = parse("t.yaml", &text).unwrap_err();
        let all = err.to_string();
        assert_eq!(err.problems.len(), 3, "{all}");
        assert!(
            all.contains("t.yaml: lateness.grace: \"a while\" is not a duration"),
            "{all}"
        );
        assert!(
            all.contains("t.yaml: lateness.idle_timeout: must be greater than zero"),
            "{all}"
        );
        assert!(
            all.contains(
                "t.yaml: lateness.policy: \"sideoutput\" is not a lateness policy; write one \
                 of side_output, process, drop"
            ),
            "{all}"
        );
        let err = parse(
            "t.yaml",
            &format!("{}lateness:\n  graze: 1m\n", without_lateness()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `graze`"), "{err}");
    }

    #[test]
    fn reports_every_problem_with_its_place() {
        let text = SHIPPED
            .replace("p0: 1m", "p0: soon")
            .replace("dedup_retention: 7d", "dedup_retention: 0s")
            .replace("dlq: leads.dlq", "dlq: \"bad topic!\"")
            .replace("max_record_bytes: 1MiB", "max_record_bytes: lots")
            .replace("block_cache: 64MiB", "block_cache: 4KiB");
        let err = parse("t.yaml", &text).unwrap_err();
        let all = err.to_string();
        assert_eq!(err.problems.len(), 5, "{all}");
        assert!(
            all.contains("t.yaml: state.block_cache: \"4KiB\" is not a size of at least 1MiB"),
            "{all}"
        );
        assert!(
            all.contains("t.yaml: sla.p0: \"soon\" is not a duration"),
            "{all}"
        );
        assert!(
            all.contains("t.yaml: state.dedup_retention: must be greater than zero"),
            "{all}"
        );
        assert!(all.contains("t.yaml: outputs.dlq:"), "{all}");
        assert!(all.contains("t.yaml: limits.max_record_bytes:"), "{all}");
    }

    #[test]
    fn overrides_are_validated_like_the_file() {
        let overrides = Overrides {
            rules: Some(PathBuf::from("other.rhai")),
            application_id: Some("bad id/..".into()),
        };
        let err = parse_with("t.yaml", SHIPPED, &overrides).unwrap_err();
        assert!(err.to_string().contains("application_id"), "{err}");
        let overrides = Overrides {
            rules: Some(PathBuf::from("other.rhai")),
            application_id: Some("app-2".into()),
        };
        let t = parse_with("t.yaml", SHIPPED, &overrides).unwrap();
        assert_eq!(t.rules, PathBuf::from("other.rhai"));
        assert_eq!(t.application_id, "app-2");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_have_a_line() {
        let err = parse("t.yaml", &SHIPPED.replace("sla:", "slas:")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("t.yaml:"), "{msg}");
        assert!(msg.contains("unknown field `slas`"), "{msg}");
        assert!(
            msg.split(':').nth(1).unwrap().parse::<usize>().is_ok(),
            "no line: {msg}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1MiB"), Some(1 << 20));
        assert_eq!(parse_bytes("512KiB"), Some(512 << 10));
        assert_eq!(parse_bytes("2000"), Some(2000));
        assert_eq!(parse_bytes("1 MB"), Some(1_000_000));
        assert_eq!(parse_bytes("1XB"), None);
    }
}
