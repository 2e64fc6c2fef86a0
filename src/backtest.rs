//! `leadflow rules backtest FILE [--against CURRENT] --since T [--until T]`: what a script
//! would have decided on recorded traffic, next to the current one, with nothing written to
//! Kafka.
//!
//! The reference tables are read to their end and the two inputs from their start up to
//! `until` (record time), then every record goes, in each partition in timestamp order (as a
//! task merges its inputs), through one pipeline per script, each with fresh state in a
//! temporary directory. Everything before `since` only builds state (profiles, engagement
//! windows, each script's own previous decisions); the events from `since` on are counted:
//! the priority mix, the load per queue and per owner, and per event the transition from the
//! current script's outcome to the candidate's.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use serde::Serialize;

use crate::codec::{RegistryClient, SchemaKind};
use crate::kafka::KafkaSettings;
use crate::model::{AccountEvent, RepEvent, RoutedLead};
use crate::pipeline::{InputRecord, Outcome, Pipeline};
use crate::route::{Rules, ScriptLimits};
use crate::sink::OutputKind;
use crate::source::merge::Merge;
use crate::state::reference::{apply_account, apply_rep};
use crate::state::StateStore;
use crate::topology::Topology;

/// What to replay.
pub struct Window {
    /// Events from this record time on (ms since the epoch) are counted.
    pub since: i64,
    /// Records after this record time are not read.
    pub until: i64,
    /// How many events of each transition the report names.
    pub examples: usize,
}

/// What one script did with the window's events.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ScriptReport {
    pub file: String,
    pub rule_version: String,
    /// Events by outcome: `P0`, `P1`, `P2`, `none`, `unknown_contact`, a failure class,
    /// `late`, `duplicate`, or another DLQ class.
    pub outcomes: BTreeMap<String, u64>,
    /// Decisions per queue.
    pub queues: BTreeMap<String, u64>,
    /// Decisions per owner (`(none)` for decisions without one).
    pub owners: BTreeMap<String, u64>,
}

/// The backtest's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Input records read (up to `until`) and events counted (from `since`).
    pub records: u64,
    pub counted: u64,
    pub current: ScriptReport,
    pub candidate: ScriptReport,
    /// `current->candidate` (e.g. `P1->P0`) → events, for the events whose outcome, queue or
    /// owner differ; equal priorities with another queue or owner read e.g. `P1->P1`.
    pub transitions: BTreeMap<String, u64>,
    /// The first events of each transition (`Window::examples` at most): the event_id where
    /// a script routed it, else `topic:partition@offset`.
    pub examples: BTreeMap<String, Vec<String>>,
}

/// One event's end: its outcome, and the decision's queue and owner.
#[derive(Clone, PartialEq, Eq)]
struct End {
    outcome: String,
    queue: Option<String>,
    owner: Option<String>,
    /// The event_id, known when the script routed the event.
    event_id: Option<String>,
}

/// Runs the backtest. `on_progress(done, total)` is called every few hundred records.
pub async fn run(
    settings: &KafkaSettings,
    registry: &RegistryClient,
    topology: &Topology,
    current: &Path,
    candidate: &Path,
    window: &Window,
    mut on_progress: impl FnMut(u64, u64),
) -> anyhow::Result<Report> {
    let limits = ScriptLimits::of(topology);
    let current_rules = Arc::new(Rules::load(current, &limits)?);
    let candidate_rules = Arc::new(Rules::load(candidate, &limits)?);
    let topology = replay_topology(topology);

    let read = |topic: String| {
        let settings = settings.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                crate::kafka::read::read_to_end(&settings, &topic, Duration::from_secs(600))
                    .with_context(|| format!("cannot read {topic}"))
            })
            .await?
        }
    };
    // Each task holds its share of every rep's capacity (`route::reps`): as many tasks as
    // the live application has.
    let tasks = {
        let (settings, topic) = (settings.clone(), topology.contacts.clone());
        tokio::task::spawn_blocking(move || -> anyhow::Result<i32> {
            let consumer: rdkafka::consumer::BaseConsumer = settings
                .consumer_config(&[("group.id", "leadflow-backtest")])
                .create()?;
            Ok(crate::kafka::read::partitions(&consumer, &topic)?.len() as i32)
        })
        .await??
    };
    let accounts = read(topology.accounts.clone()).await?;
    let reps = read(topology.reps.clone()).await?;
    // Each task's records in the order a stream thread takes them (`source::merge`: by
    // timestamp, contacts first on a tie, an input's own order kept), all being here.
    let mut merge = Merge::new(2, Duration::ZERO);
    let mut total = 0;
    for (index, topic) in [&topology.contacts, &topology.engagements]
        .iter()
        .enumerate()
    {
        for m in read(topic.to_string()).await? {
            let at = m.timestamp().to_millis();
            if at.unwrap_or(0) <= window.until {
                merge.push(m.partition(), index, at, m);
                total += 1;
            }
        }
    }
    let now = std::time::Instant::now();
    let inputs = std::iter::from_fn(|| merge.pop_ready(now));

    let mut sides = Vec::new();
    for rules in [&current_rules, &candidate_rules] {
        let dir = tempfile::tempdir().context("cannot create a temporary state directory")?;
        let store = Arc::new(StateStore::open(dir.path(), topology.dedup_retention)?);
        load_reference(registry, &store, &accounts, &reps).await?;
        let mut pipeline = Pipeline::start(
            topology.clone(),
            rules.clone(),
            registry.clone(),
            store,
            crate::pipeline::wall_clock(),
            Duration::from_secs(30),
        )
        .await?;
        pipeline.set_tasks(tasks);
        sides.push((pipeline, dir));
    }

    let mut report = Report {
        records: total,
        counted: 0,
        current: script_report(current, &current_rules),
        candidate: script_report(candidate, &candidate_rules),
        transitions: BTreeMap::new(),
        examples: BTreeMap::new(),
    };
    for (done, m) in inputs.enumerate() {
        let at = m.timestamp().to_millis();
        let record = InputRecord {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: at,
            key: m.key(),
            value: m.payload(),
        };
        let mut ends = Vec::with_capacity(2);
        for (pipeline, _) in sides.iter_mut() {
            let processed = loop {
                match pipeline.process(&record).await {
                    Ok(p) => break p,
                    Err(crate::pipeline::PipelineError::Registry(e)) if e.should_wait() => {
                        tracing::warn!(error = %e, "cannot use the schema registry; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            pipeline.commit(&processed)?;
            ends.push(end_of(&processed)?);
        }
        if at.unwrap_or(0) >= window.since {
            report.counted += 1;
            let event = event_id(&record, &ends);
            count(&mut report.current, &ends[0]);
            count(&mut report.candidate, &ends[1]);
            if ends[0] != ends[1] {
                let transition = format!("{}->{}", ends[0].outcome, ends[1].outcome);
                *report.transitions.entry(transition.clone()).or_default() += 1;
                let examples = report.examples.entry(transition).or_default();
                if examples.len() < window.examples {
                    examples.push(event);
                }
            }
        }
        if done % 256 == 0 || done as u64 + 1 == total {
            on_progress(done as u64 + 1, total);
        }
    }
    Ok(report)
}

/// The topology a replay runs: decisions only, no SLA timers (nothing is acknowledged in a
/// replay), no audit, assignments or shadow copies.
fn replay_topology(topology: &Topology) -> Topology {
    let mut t = topology.clone();
    t.acks = None;
    t.rules_shadow = None;
    t.outputs.assignments = None;
    t.outputs.audit = None;
    t
}

fn script_report(file: &Path, rules: &Rules) -> ScriptReport {
    ScriptReport {
        file: file.display().to_string(),
        rule_version: rules.version().to_string(),
        ..ScriptReport::default()
    }
}

async fn load_reference(
    registry: &RegistryClient,
    store: &StateStore,
    accounts: &[OwnedMessage],
    reps: &[OwnedMessage],
) -> anyhow::Result<()> {
    for (messages, is_accounts) in [(accounts, true), (reps, false)] {
        for m in messages {
            let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                continue;
            };
            let Some(value) = m.payload() else {
                if is_accounts {
                    apply_account(store, key, None)?;
                } else {
                    apply_rep(store, key, None)?;
                }
                continue;
            };
            let Ok((id, datum)) = crate::codec::unframe(value) else {
                continue;
            };
            let writer = registry.schema_by_id(id).await?;
            if is_accounts {
                if let Ok(e) =
                    crate::codec::decode::<AccountEvent>(&writer, SchemaKind::AccountEvent, datum)
                {
                    apply_account(store, key, Some(&e.payload))?;
                }
            } else if let Ok(e) =
                crate::codec::decode::<RepEvent>(&writer, SchemaKind::RepEvent, datum)
            {
                apply_rep(store, key, Some(&e.payload))?;
            }
        }
    }
    Ok(())
}

/// What a processed record came to, for the report.
fn end_of(processed: &crate::pipeline::Processed) -> anyhow::Result<End> {
    let outcome = match processed.outcome {
        Outcome::Routed(_) => {
            let routed = processed
                .outputs
                .iter()
                .find(|o| o.kind == OutputKind::Routed)
                .and_then(|o| o.value.as_deref())
                .context("bug: a routed record without its RoutedLead")?;
            let lead: RoutedLead = crate::codec::decode(
                crate::codec::canonical().get(SchemaKind::RoutedLead),
                SchemaKind::RoutedLead,
                &routed[5..],
            )?;
            return Ok(End {
                outcome: lead.priority,
                queue: Some(lead.queue),
                owner: lead.owner_rep_id,
                event_id: Some(lead.event_id),
            });
        }
        Outcome::NoDecision("script_returned_unit") => "none".to_string(),
        Outcome::NoDecision(reason) => reason.to_string(),
        Outcome::Duplicate => "duplicate".to_string(),
        Outcome::Dlq(class) => class.as_str().to_string(),
        Outcome::Late(_) => "late".to_string(),
        Outcome::Acknowledged(_) | Outcome::Breached | Outcome::TimerDone => {
            "not_an_event".to_string()
        }
    };
    Ok(End {
        outcome,
        queue: None,
        owner: None,
        event_id: None,
    })
}

fn count(report: &mut ScriptReport, end: &End) {
    *report.outcomes.entry(end.outcome.clone()).or_default() += 1;
    if let Some(queue) = &end.queue {
        *report.queues.entry(queue.clone()).or_default() += 1;
        let owner = end.owner.clone().unwrap_or_else(|| "(none)".into());
        *report.owners.entry(owner).or_default() += 1;
    }
}

/// The event's id for examples: the event_id if a script routed it, else the record's
/// `topic:partition@offset`.
fn event_id(record: &InputRecord, ends: &[End]) -> String {
    ends.iter()
        .find_map(|e| e.event_id.clone())
        .unwrap_or_else(|| format!("{}:{}@{}", record.topic, record.partition, record.offset))
}

impl Report {
    /// For people: per script its mix, queues and top owners, then the transitions.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} input records replayed, {} events counted\n",
            self.records, self.counted
        );
        for (name, side) in [("current", &self.current), ("candidate", &self.candidate)] {
            out += &format!(
                "\n{name}: {} (rule_version {})\n",
                side.file, side.rule_version
            );
            out += "  outcomes:";
            for (outcome, n) in &side.outcomes {
                out += &format!(" {outcome} {n} ({:.1} %),", percent(*n, self.counted));
            }
            out.pop();
            out += "\n  decisions per queue:\n";
            for (queue, n) in by_count(&side.queues).iter().take(20) {
                out += &format!("    {queue:<28} {n:>8}\n");
            }
            out += "  decisions per owner (top 10):\n";
            for (owner, n) in by_count(&side.owners).iter().take(10) {
                out += &format!("    {owner:<28} {n:>8}\n");
            }
        }
        if self.transitions.is_empty() {
            out += "\nno event decided otherwise\n";
        } else {
            let changed: u64 = self.transitions.values().sum();
            out += &format!(
                "\ntransitions, current -> candidate ({changed} events, {:.1} %):\n",
                percent(changed, self.counted)
            );
            for (transition, n) in by_count(&self.transitions) {
                let examples = self.examples.get(transition).map_or(String::new(), |e| {
                    e.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                });
                out += &format!("  {transition:<24} {n:>8}   e.g. {examples}\n");
            }
        }
        out
    }
}

fn percent(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 * 100.0 / of as f64
    }
}

/// Entries by count, largest first (ties by name).
fn by_count(map: &BTreeMap<String, u64>) -> Vec<(&String, &u64)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    v
}
