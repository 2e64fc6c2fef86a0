//! Why a lead went where: one evaluation with the `lead` as the script saw it, the outcome and
//! the trace of what fired (`leadflow rules explain`, the audit topic).

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::json;

use super::engine::{Rules, ScriptLimits};
use super::fixture_file::{self, located, LeadSpec};
use super::lead::{Decision, Lead, ScriptFailure};
use super::trace::Trace;

/// One traced evaluation ([`Rules::explain`]).
#[derive(Debug, Clone)]
pub struct Explanation {
    pub rule_version: String,
    /// The `lead` map `route` was called with (`score` replaced by `score(lead)`'s).
    pub lead: serde_json::Value,
    pub result: Result<Option<Decision>, ScriptFailure>,
    pub trace: Trace,
}

impl Explanation {
    /// `routed`, `none`, or the failure class (contracts §5).
    pub fn outcome(&self) -> &'static str {
        outcome_of(self.result.as_ref().map(Option::as_ref))
    }

    /// For people: the lead, the outcome, the reasons, then the trace in the order it ran.
    pub fn render(&self) -> String {
        let mut out = format!("rule_version {}\n", self.rule_version);
        out += "lead, as route saw it:\n";
        let lead = serde_json::to_string_pretty(&self.lead).unwrap_or_default();
        for line in lead.lines() {
            out += &format!("  {line}\n");
        }
        match &self.result {
            Ok(Some(d)) => {
                let owner = d
                    .owner
                    .as_deref()
                    .map_or("no owner".into(), |o| format!("owner {o}"));
                out += &format!(
                    "outcome: routed to {}, queue {}, {owner}, score {}\n",
                    d.priority.as_str(),
                    d.queue,
                    d.score
                );
                if d.reasons.is_empty() {
                    out += "reasons: (none given)\n";
                } else {
                    out += "reasons:\n";
                    for r in &d.reasons {
                        out += &format!("  - {r}\n");
                    }
                }
            }
            Ok(None) => out += "outcome: no decision (route returned ())\n",
            Err(f) => out += &format!("outcome: {}: {f}\n", f.class()),
        }
        if self.trace.steps.is_empty() {
            out += "what fired: no `if` and no call of a script function\n";
        } else {
            out += "what fired, in order:\n";
            for step in &self.trace.steps {
                out += &format!("  {}\n", step.describe());
            }
            if self.trace.truncated > 0 {
                out += &format!("  ... and {} more steps\n", self.trace.truncated);
            }
        }
        out
    }

    /// For tools: the same as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let (decision, error) = match &self.result {
            Ok(Some(d)) => (
                json!({
                    "priority": d.priority.as_str(),
                    "queue": d.queue,
                    "owner": d.owner,
                    "score": d.score,
                    "reasons": d.reasons,
                }),
                None,
            ),
            Ok(None) => (serde_json::Value::Null, None),
            Err(f) => (serde_json::Value::Null, Some(f.to_string())),
        };
        json!({
            "rule_version": self.rule_version,
            "outcome": self.outcome(),
            "decision": decision,
            "error": error,
            "lead": self.lead,
            "trace": self.trace.steps,
            "trace_truncated": self.trace.truncated,
        })
    }
}

/// `routed`, `none`, or the failure class of a script's result: the outcome words of
/// `rules explain`, the audit records and the shadow diff.
pub fn outcome_of<D>(result: Result<Option<D>, &ScriptFailure>) -> &'static str {
    match result {
        Ok(Some(_)) => "routed",
        Ok(None) => "none",
        Err(f) => f.class(),
    }
}

/// `rules explain SCRIPT --lead FILE [--case NAME]`: `FILE` is one lead (YAML or JSON, shaped
/// like a test case's `lead`) or a fixture file, of which `case` picks the case (needed when
/// it has more than one).
pub fn explain_file(
    script: &Path,
    lead_file: &Path,
    case: Option<&str>,
    limits: &ScriptLimits,
) -> anyhow::Result<Explanation> {
    let rules = Rules::load(script, limits)?;
    let (lead, mut reps) = read_lead(lead_file, case)?;
    Ok(super::reps::within(&mut reps, || rules.explain(&lead)))
}

/// The lead of `path` and, for a case of a fixture file with `reps:`, what the rep functions
/// see.
fn read_lead(
    path: &Path,
    case: Option<&str>,
) -> anyhow::Result<(Lead, Option<super::reps::Context>)> {
    let file = path.display();
    let text = std::fs::read_to_string(path).with_context(|| format!("{file}: cannot read"))?;
    let value: serde_norway::Value =
        serde_norway::from_str(&text).map_err(|e| located(&file.to_string(), e))?;
    if value.is_sequence() || value.get("cases").is_some() {
        let suite = fixture_file::load_suite(path)?;
        let cases = &suite.cases;
        let names = || {
            cases
                .iter()
                .map(|c| format!("'{}'", c.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let index = match case {
            Some(name) => match cases.iter().position(|c| c.name == name) {
                Some(i) => i,
                None => bail!("{file}: no case named '{name}'; its cases are {}", names()),
            },
            None if cases.len() == 1 => 0,
            None => bail!(
                "{file} holds {} cases: pick one with --case NAME ({})",
                cases.len(),
                names()
            ),
        };
        let lead = cases[index].lead.to_lead();
        let reps = suite.context(&cases[index], &lead);
        return Ok((lead, reps));
    }
    if case.is_some() {
        bail!("{file}: --case picks a case of a fixture file (a list of cases), but this file is one lead");
    }
    let spec: LeadSpec = serde_norway::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}; a lead file is a map of lead fields (like a test case's `lead`) or a fixture \
             file (a list of test cases, or `reps:` and `cases:`)",
            located(&file.to_string(), e)
        )
    })?;
    Ok((spec.to_lead(), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::trace::{StepKind, MAX_STEPS};
    use crate::route::Priority;

    const SCRIPT: &str = r#"fn size(x) {
    if x > 5 { return "big"; }
    "small"
}
fn route(lead) {
    if lead.score >= 80 {
        return #{ priority: "P0", queue: "hot", reasons: ["hot"] };
    } else if lead.region == "EMEA" {
        let q = size(lead.score);
        return #{ priority: "P1", queue: q };
    }
    other(lead)
}
fn other(lead) { () }
"#;

    fn lead(yaml: &str) -> crate::route::Lead {
        serde_norway::from_str::<LeadSpec>(yaml).unwrap().to_lead()
    }

    fn explain(script: &str, yaml: &str) -> Explanation {
        Rules::compile("t.rhai", script, &ScriptLimits::default())
            .unwrap()
            .explain(&lead(yaml))
    }

    fn described(e: &Explanation) -> Vec<String> {
        e.trace.steps.iter().map(|s| s.describe()).collect()
    }

    #[test]
    fn the_trace_names_each_if_with_its_outcome_and_each_call_in_order() {
        let e = explain(SCRIPT, "{score: 10, region: EMEA}");
        assert_eq!(
            described(&e),
            [
                "6:5 route: if lead.score >= 80 -> false",
                "8:12 route: if lead.region == \"EMEA\" -> true",
                "9:17 route: calls size",
                "2:5 size: if x > 5 -> true",
            ]
        );
        let d = e.result.unwrap().unwrap();
        assert_eq!((d.priority, d.queue.as_str()), (Priority::P1, "big"));

        // The helper's `if` not taken: the next node at its level is past its block.
        let e = explain(SCRIPT, "{score: 3, region: EMEA}");
        assert_eq!(described(&e)[3], "2:5 size: if x > 5 -> false");
        assert_eq!(e.result.unwrap().unwrap().queue, "small");

        let e = explain(SCRIPT, "{score: 90}");
        assert_eq!(described(&e), ["6:5 route: if lead.score >= 80 -> true"]);

        // Neither branch: both conditions false, and route returns ().
        let e = explain(SCRIPT, "{score: 10, region: APAC}");
        assert_eq!(
            described(&e),
            [
                "6:5 route: if lead.score >= 80 -> false",
                "8:12 route: if lead.region == \"EMEA\" -> false",
                "12:5 route: calls other",
            ]
        );
        assert_eq!(e.result, Ok(None));
        assert_eq!(e.outcome(), "none");
    }

    #[test]
    fn an_if_at_the_end_of_a_function_is_settled_when_it_returns() {
        let script = r#"
fn flag(lead) { if lead.score > 50 { return true; } }
fn route(lead) {
    let hot = flag(lead) == true;
    if hot { return #{ priority: "P0", queue: "q" }; }
    #{ priority: "P2", queue: "q" }
}
"#;
        for (score, taken) in [(60, true), (40, false)] {
            let e = explain(script, &format!("{{score: {score}}}"));
            let ifs: Vec<_> = e
                .trace
                .steps
                .iter()
                .filter(|s| s.kind == StepKind::If)
                .map(|s| (s.function.as_str(), s.taken))
                .collect();
            assert_eq!(ifs, [("flag", Some(taken)), ("route", Some(taken))]);
        }
    }

    #[test]
    fn the_lead_shown_is_the_one_route_got_with_the_scripts_score() {
        let script = r#"
fn score(lead) { 42 }
fn route(lead) { #{ priority: "P2", queue: "q", reasons: ["score " + lead.score] } }
"#;
        let e = explain(script, "{score: 7, contact_id: ct_9, email: a@b.c}");
        assert_eq!(e.lead["score"], 42);
        assert_eq!(e.lead["contact_id"], "ct_9");
        assert_eq!(e.lead["account"], serde_json::Value::Null);
        assert_eq!(e.lead["engagement"]["count_7d"], 0);
        assert_eq!(e.result.unwrap().unwrap().reasons, ["score 42"]);
        assert!(e.trace.steps.is_empty());
    }

    #[test]
    fn failures_are_explained_with_their_class() {
        let script = r#"fn route(lead) { if lead.score > 1 { throw "no"; } 5 }"#;
        let e = explain(script, "{score: 2}");
        assert_eq!(e.outcome(), "script_error");
        assert_eq!(described(&e), ["1:18 route: if lead.score > 1 -> true"]);
        let e = explain(script, "{score: 0}");
        assert_eq!(e.outcome(), "invalid_decision");
        let text = e.render();
        assert!(text.contains("outcome: invalid_decision: "), "{text}");
    }

    #[test]
    fn a_long_loop_keeps_the_first_steps_and_counts_the_rest() {
        let script = r#"
fn route(lead) {
    let n = 0;
    for i in 0..500 { if i % 2 == 0 { n += 1; } }
    #{ priority: "P2", queue: "q" + n }
}
"#;
        let e = explain(script, "{}");
        assert_eq!(e.trace.steps.len(), MAX_STEPS);
        assert_eq!(e.trace.truncated, 500 - MAX_STEPS);
        let taken: Vec<_> = e.trace.steps.iter().take(4).map(|s| s.taken).collect();
        assert_eq!(taken, [Some(true), Some(false), Some(true), Some(false)]);
        assert!(e
            .render()
            .contains(&format!("... and {} more steps", 500 - MAX_STEPS)));
        assert_eq!(e.result.unwrap().unwrap().queue, "q250");
    }

    /// The traced evaluation decides as the live one does, on every shipped fixture.
    #[test]
    fn explain_agrees_with_evaluate_on_the_shipped_fixtures() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rules =
            Rules::load(&root.join("rules/routing.rhai"), &ScriptLimits::default()).unwrap();
        let cases = fixture_file::load_suite(&root.join("rules/tests/routing.yaml"))
            .unwrap()
            .cases;
        assert!(cases.len() >= 10);
        for case in &cases {
            let lead = case.lead.to_lead();
            let e = rules.explain(&lead);
            assert_eq!(e.result, rules.evaluate(&lead), "case {}", case.name);
            assert!(!e.trace.steps.is_empty(), "case {}", case.name);
            assert_eq!(e.lead["contact_id"], lead.contact.contact_id.as_str());
        }
    }

    #[test]
    fn a_fixture_file_needs_a_case_name_unless_it_holds_one_case() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("r.rhai");
        std::fs::write(&script, SCRIPT).unwrap();
        let cases = dir.path().join("cases.yaml");
        std::fs::write(
            &cases,
            "- name: hot\n  lead: {score: 90}\n  expect: {priority: P0}\n\
             - name: emea\n  lead: {score: 10, region: EMEA}\n  expect: {priority: P1}\n",
        )
        .unwrap();
        let limits = ScriptLimits::default();
        let e = explain_file(&script, &cases, Some("emea"), &limits).unwrap();
        assert_eq!(e.result.unwrap().unwrap().priority, Priority::P1);
        let err = explain_file(&script, &cases, None, &limits)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("holds 2 cases: pick one with --case NAME ('hot', 'emea')"),
            "{err}"
        );
        let err = explain_file(&script, &cases, Some("x"), &limits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no case named 'x'"), "{err}");

        let one = dir.path().join("lead.json");
        std::fs::write(&one, r#"{"score": 90, "region": "EMEA"}"#).unwrap();
        let e = explain_file(&script, &one, None, &limits).unwrap();
        assert_eq!(e.result.unwrap().unwrap().priority, Priority::P0);
        std::fs::write(&one, "score: 90\nregoin: EMEA\n").unwrap();
        let err = explain_file(&script, &one, None, &limits)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("lead.json:2:1: unknown field `regoin`"),
            "{err}"
        );
    }
}
