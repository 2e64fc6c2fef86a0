//! The YAML test-case format of `leadflow rules test` (`rules/tests/*.yaml`): a list of cases,
//! each a partial lead (everything unspecified takes a neutral default) and what to expect;
//! or a map of `reps:` (the reps table the cases run against) and those `cases:`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::{Deserialize, Deserializer};

use super::lead::{Decision, EngagementStats, Lead, PreviousDecision, Priority};
use super::reps::{Context as RepContext, Roster, Share, TaskLoad};
use crate::model::{Account, Contact, Rep};

/// Event time used when a case does not set `occurred_at` (2026-01-01T00:00:00Z).
const DEFAULT_OCCURRED_AT: i64 = 1_767_225_600_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Case {
    pub name: String,
    #[serde(default)]
    pub lead: LeadSpec,
    /// Open leads of the file's reps when the case runs (rep id → count; others have none).
    #[serde(default)]
    pub open_leads: BTreeMap<String, i64>,
    pub expect: Expect,
}

/// A fixture file: its cases, and the reps table they run against (`reps:`).
pub(super) struct Suite {
    pub reps: Option<Arc<Roster>>,
    pub cases: Vec<Case>,
}

impl Suite {
    /// What the rep functions see while `case` runs on `lead` (`None` without `reps:`): the
    /// file's reps, the case's open leads, no team's turn taken yet, one task.
    pub(super) fn context(&self, case: &Case, lead: &Lead) -> Option<RepContext> {
        let roster = self.reps.clone()?;
        let load = TaskLoad {
            open: case.open_leads.clone().into_iter().collect(),
            last: Default::default(),
        };
        Some(RepContext::new(
            roster,
            Arc::new(load),
            Share::ALL,
            lead.occurred_at,
        ))
    }
}

/// The shape of a fixture file with reps: `reps:` and `cases:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    #[serde(default)]
    reps: Vec<RepSpec>,
    cases: Vec<Case>,
}

/// A rep of a fixture file's `reps:`; only `rep_id` is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepSpec {
    rep_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    team: String,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default = "default_capacity")]
    max_open_leads: i32,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default = "utc")]
    timezone: String,
    #[serde(default)]
    working_hours: Option<String>,
}

fn default_capacity() -> i32 {
    100
}

fn yes() -> bool {
    true
}

fn utc() -> String {
    "UTC".into()
}

impl RepSpec {
    fn to_rep(&self) -> Rep {
        Rep {
            rep_id: self.rep_id.clone(),
            name: self.name.clone().unwrap_or_else(|| self.rep_id.clone()),
            team: self.team.clone(),
            regions: self.regions.clone(),
            max_open_leads: self.max_open_leads,
            active: self.active,
            timezone: self.timezone.clone(),
            working_hours: self.working_hours.clone(),
            updated_at: 0,
        }
    }
}

/// The `lead` of a case, shaped like the script's `lead` map; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct LeadSpec {
    contact_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    title: Option<String>,
    company_name: Option<String>,
    company_domain: Option<String>,
    country: Option<String>,
    region: Option<String>,
    lifecycle_stage: Option<String>,
    lead_source: Option<String>,
    product_interest: Option<String>,
    consent_marketing: bool,
    attributes: BTreeMap<String, String>,
    updated_at: Option<i64>,
    event_type: Option<String>,
    source: Option<String>,
    occurred_at: Option<i64>,
    score: i32,
    account: Option<AccountSpec>,
    engagement: EngagementSpec,
    previous: Option<PreviousSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AccountSpec {
    account_id: Option<String>,
    domain: Option<String>,
    name: Option<String>,
    employees: Option<i32>,
    annual_revenue: Option<f64>,
    industry: Option<String>,
    region: Option<String>,
    tier: Option<String>,
    owner_rep_id: Option<String>,
    updated_at: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EngagementSpec {
    count_24h: i64,
    count_7d: i64,
    pricing_views_7d: i64,
    demo_requested: bool,
    last_type: Option<String>,
    last_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviousSpec {
    priority: Priority,
    queue: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    score: i32,
    #[serde(default)]
    routed_at: Option<i64>,
    #[serde(default)]
    decision_id: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    rule_version: Option<String>,
}

/// What a case expects: `none: true`, `failure: <class>`, or any of priority / queue / owner /
/// reasons / score.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Expect {
    #[serde(default)]
    none: bool,
    priority: Option<Priority>,
    queue: Option<String>,
    /// Absent: not checked; `owner: ~` (null): expects no owner.
    #[serde(default, deserialize_with = "present")]
    owner: Option<Option<String>>,
    #[serde(default)]
    reasons_contain: Vec<String>,
    score: Option<ScoreExpect>,
    /// The script must fail on this lead, with this class (what the event's DLQ record would
    /// say).
    failure: Option<FailureClass>,
}

/// `expect: {failure: ...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(
    rename_all = "snake_case",
    expecting = "one of script_error, script_timeout, invalid_decision"
)]
enum FailureClass {
    ScriptError,
    ScriptTimeout,
    InvalidDecision,
}

impl FailureClass {
    fn as_str(self) -> &'static str {
        match self {
            FailureClass::ScriptError => "script_error",
            FailureClass::ScriptTimeout => "script_timeout",
            FailureClass::InvalidDecision => "invalid_decision",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a score such as 70, or a range such as {min: 60, max: 100}"
)]
enum ScoreExpect {
    Exact(i32),
    Range(ScoreRange),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreRange {
    min: Option<i32>,
    max: Option<i32>,
}

/// Tells an explicit `null` (Some(None)) from an absent key (None, via `default`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Reads and validates one fixture file: a list of cases, or a map with `reps:` and
/// `cases:`. Errors name the file and, where known, the line.
pub(super) fn load_suite(path: &Path) -> anyhow::Result<Suite> {
    let file = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("{file}: cannot read"))?;
    let with_reps = matches!(
        serde_norway::from_str::<serde_norway::Value>(&text),
        Ok(serde_norway::Value::Mapping(_))
    );
    let (reps, cases) = if with_reps {
        let suite: SuiteFile =
            serde_norway::from_str(&text).map_err(|e| located(&file.to_string(), e))?;
        (suite.reps, suite.cases)
    } else {
        let cases: Vec<Case> =
            serde_norway::from_str(&text).map_err(|e| located(&file.to_string(), e))?;
        (Vec::new(), cases)
    };
    let mut ids = HashSet::new();
    if let Some(twice) = reps.iter().find(|r| !ids.insert(r.rep_id.as_str())) {
        bail!(
            "{file}: rep {:?} is listed twice under `reps:`; rep ids must be unique",
            twice.rep_id
        );
    }
    if cases.is_empty() {
        bail!("{file}: no test cases: the file must be a list of cases (`- name: ...`)");
    }
    let mut names = HashSet::new();
    for case in &cases {
        let problem = if case.name.trim().is_empty() {
            Some("a case has an empty `name`".to_string())
        } else if !names.insert(case.name.as_str()) {
            Some("another case has the same name; names must be unique".to_string())
        } else {
            case.expect.problem().or_else(|| {
                case.open_leads
                    .keys()
                    .find(|id| !ids.contains(id.as_str()))
                    .map(|id| format!("open_leads names {id:?}, which is not under `reps:`"))
            })
        };
        if let Some(problem) = problem {
            match line_of(&text, &case.name) {
                Some(line) => bail!("{file}:{line}: case '{}': {problem}", case.name),
                None => bail!("{file}: case '{}': {problem}", case.name),
            }
        }
    }
    let reps = (!reps.is_empty()).then(|| Arc::new(Roster::new(reps.iter().map(RepSpec::to_rep))));
    Ok(Suite { reps, cases })
}

/// A YAML error as `FILE:LINE:COLUMN: MESSAGE`.
pub(super) fn located(file: &str, e: serde_norway::Error) -> anyhow::Error {
    match e.location() {
        Some(l) => {
            let message = e.to_string();
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            let message = message.strip_suffix(&suffix).unwrap_or(&message);
            anyhow::anyhow!("{file}:{}:{}: {message}", l.line(), l.column())
        }
        None => anyhow::anyhow!("{file}: {e}"),
    }
}

/// 1-based line of the `name:` line of a case, found by its text.
fn line_of(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start()
                .trim_start_matches("- ")
                .trim_start()
                .starts_with("name:")
                && l.contains(name)
        })
        .map(|i| i + 1)
}

impl LeadSpec {
    pub(super) fn to_lead(&self) -> Lead {
        let occurred_at = self.occurred_at.unwrap_or(DEFAULT_OCCURRED_AT);
        let contact = Contact {
            contact_id: self
                .contact_id
                .clone()
                .unwrap_or_else(|| "c_fixture".into()),
            email: self.email.clone(),
            phone: self.phone.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            title: self.title.clone(),
            company_name: self.company_name.clone(),
            company_domain: self.company_domain.clone(),
            country: self.country.clone(),
            region: self.region.clone(),
            lifecycle_stage: self.lifecycle_stage.clone(),
            lead_source: self.lead_source.clone(),
            product_interest: self.product_interest.clone(),
            consent_marketing: self.consent_marketing,
            attributes: self.attributes.clone(),
            updated_at: self.updated_at.unwrap_or(occurred_at),
        };
        let e = &self.engagement;
        let account = self.account.as_ref().map(|a| Account {
            account_id: a.account_id.clone().unwrap_or_else(|| "acc_fixture".into()),
            domain: a
                .domain
                .clone()
                .or_else(|| self.company_domain.clone())
                .unwrap_or_else(|| "example.com".into()),
            name: a
                .name
                .clone()
                .or_else(|| self.company_name.clone())
                .unwrap_or_else(|| "Example Inc".into()),
            employees: a.employees,
            annual_revenue: a.annual_revenue,
            industry: a.industry.clone(),
            region: a.region.clone(),
            tier: a.tier.clone(),
            owner_rep_id: a.owner_rep_id.clone(),
            updated_at: a.updated_at.unwrap_or(occurred_at),
        });
        let previous = self.previous.as_ref().map(|p| PreviousDecision {
            decision_id: p
                .decision_id
                .clone()
                .unwrap_or_else(|| "dec_previous".into()),
            event_id: p.event_id.clone().unwrap_or_else(|| "evt_previous".into()),
            priority: p.priority,
            queue: p.queue.clone(),
            owner: p.owner.clone(),
            score: p.score,
            routed_at: p.routed_at.unwrap_or(occurred_at.saturating_sub(3_600_000)),
            rule_version: p.rule_version.clone().unwrap_or_default(),
        });
        Lead {
            contact,
            event_type: self.event_type.clone().unwrap_or_else(|| {
                if e.last_type.is_some() {
                    "Engagement.recorded".into()
                } else {
                    "Contact.updated".into()
                }
            }),
            source: self.source.clone().unwrap_or_else(|| "fixture".into()),
            occurred_at,
            score: self.score,
            account,
            engagement: EngagementStats {
                count_24h: e.count_24h,
                count_7d: e.count_7d,
                pricing_views_7d: e.pricing_views_7d,
                demo_requested: e.demo_requested,
                last_type: e.last_type.clone(),
                last_at: e.last_at.or(e.last_type.as_ref().map(|_| occurred_at)),
            },
            previous,
        }
    }
}

impl Expect {
    /// An expectation that cannot be right, whatever the script does.
    fn problem(&self) -> Option<String> {
        let checks_decision = self.priority.is_some()
            || self.queue.is_some()
            || self.owner.is_some()
            || !self.reasons_contain.is_empty()
            || self.score.is_some();
        if self.failure.is_some() && (self.none || checks_decision) {
            return Some(
                "`expect` has `failure` and also describes an outcome; a failing script decides \
                 nothing: keep only `failure`"
                    .to_string(),
            );
        }
        match (self.none, checks_decision || self.failure.is_some()) {
            (true, true) => Some(
                "`expect` has `none: true` and also describes a decision; keep one".to_string(),
            ),
            (false, false) => Some(
                "`expect` checks nothing: give `none: true`, `failure`, or priority / queue / \
                 owner / reasons_contain / score"
                    .to_string(),
            ),
            _ => match &self.score {
                Some(ScoreExpect::Range(ScoreRange {
                    min: None,
                    max: None,
                })) => Some("`score` range needs `min`, `max` or both".to_string()),
                _ => None,
            },
        }
    }

    /// Compares a result with the expectation: `Ok` or what differs, in plain words.
    /// The script failed on the case's lead with `class` (`message` says how).
    pub(super) fn compare_failure(&self, class: &str, message: &str) -> Result<(), String> {
        match self.failure {
            Some(f) if f.as_str() == class => Ok(()),
            Some(f) => Err(format!("expected {}, got {class}: {message}", f.as_str())),
            None => Err(format!("{class}: {message}")),
        }
    }

    pub(super) fn compare(&self, got: Option<&Decision>) -> Result<(), String> {
        if let Some(f) = self.failure {
            return Err(match got {
                Some(d) => format!(
                    "expected {}, got {} to {}{}",
                    f.as_str(),
                    d.priority.as_str(),
                    d.queue,
                    reasons_suffix(d)
                ),
                None => format!(
                    "expected {}, got no decision (route returned ())",
                    f.as_str()
                ),
            });
        }
        let Some(d) = got else {
            return if self.none {
                Ok(())
            } else {
                Err(format!(
                    "expected {}, got no decision (route returned ())",
                    self.summary()
                ))
            };
        };
        if self.none {
            return Err(format!(
                "expected no decision, got {} to {}{}",
                d.priority.as_str(),
                d.queue,
                reasons_suffix(d)
            ));
        }
        let mut diffs = Vec::new();
        if let Some(p) = self.priority.filter(|p| *p != d.priority) {
            diffs.push(format!(
                "expected priority {}, got {}",
                p.as_str(),
                d.priority.as_str()
            ));
        }
        if let Some(q) = self.queue.as_ref().filter(|q| **q != d.queue) {
            diffs.push(format!("expected queue {q}, got {}", d.queue));
        }
        if let Some(owner) = self.owner.as_ref().filter(|o| **o != d.owner) {
            diffs.push(format!(
                "expected {}, got {}",
                owner_text(owner.as_deref()),
                owner_text(d.owner.as_deref())
            ));
        }
        for wanted in &self.reasons_contain {
            if !d.reasons.iter().any(|r| r.contains(wanted.as_str())) {
                diffs.push(format!("expected a reason containing \"{wanted}\""));
            }
        }
        match &self.score {
            Some(ScoreExpect::Exact(s)) if *s != d.score => {
                diffs.push(format!("expected score {s}, got {}", d.score));
            }
            Some(ScoreExpect::Range(r))
                if r.min.is_some_and(|m| d.score < m) || r.max.is_some_and(|m| d.score > m) =>
            {
                let range = match (r.min, r.max) {
                    (Some(lo), Some(hi)) => format!("between {lo} and {hi}"),
                    (Some(lo), None) => format!("at least {lo}"),
                    (_, hi) => format!("at most {}", hi.unwrap_or_default()),
                };
                diffs.push(format!("expected score {range}, got {}", d.score));
            }
            _ => {}
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!("{}{}", diffs.join("; "), reasons_suffix(d)))
        }
    }

    /// `priority P0 to enterprise-emea`, for "expected ..., got no decision".
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.priority {
            parts.push(format!("priority {}", p.as_str()));
        }
        if let Some(q) = &self.queue {
            parts.push(format!("queue {q}"));
        }
        if parts.is_empty() {
            "a decision".to_string()
        } else {
            parts.join(", ")
        }
    }
}

fn owner_text(owner: Option<&str>) -> String {
    match owner {
        Some(o) => format!("owner {o}"),
        None => "no owner".to_string(),
    }
}

fn reasons_suffix(d: &Decision) -> String {
    if d.reasons.is_empty() {
        " (no reasons given)".to_string()
    } else {
        format!(" (reasons: {})", d.reasons.join("; "))
    }
}
