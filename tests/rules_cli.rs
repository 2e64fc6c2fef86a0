//! `leadflow rules check` / `rules test` logic end to end: the shipped script and its fixtures,
//! and the messages sales ops get for broken scripts, failing cases and runaway loops.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use leadflow::route::fixtures::{check, test, TestReport};
use leadflow::route::ScriptLimits;

fn shipped_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/routing.rhai")
}

/// A temp dir with `rules.rhai` and, if given, `tests/cases.yaml` next to it.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new(script: &str, cases: Option<&str>) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("rules.rhai"), script).unwrap();
        if let Some(cases) = cases {
            fs::create_dir(dir.path().join("tests")).unwrap();
            fs::write(dir.path().join("tests/cases.yaml"), cases).unwrap();
        }
        Sandbox { dir }
    }

    fn script(&self) -> PathBuf {
        self.dir.path().join("rules.rhai")
    }

    fn cases(&self) -> PathBuf {
        self.dir.path().join("tests/cases.yaml")
    }

    fn test(&self) -> TestReport {
        test(&self.script(), &[], &ScriptLimits::default()).unwrap()
    }
}

fn assert_line(report: &TestReport, prefix: &str) -> String {
    report
        .text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{report}"))
        .to_string()
}

const ROUTE_P2: &str = r#"
fn route(lead) {
    #{ priority: "P2", queue: "inside-sales", reasons: ["no strong signal"] }
}
"#;

#[test]
fn shipped_script_checks_ok() {
    let text = check(&shipped_script(), &ScriptLimits::default()).unwrap();
    let mut lines = text.lines();
    let line = lines.next().unwrap();
    assert!(line.starts_with("ok "), "{line}");
    assert!(line.contains("routing.rhai"), "{line}");
    assert!(line.contains("rule_version "), "{line}");
    assert!(line.contains("defines score(lead)"), "{line}");
    // The rules compiler lowers every function of the shipped rules.
    let compiled = lines.next().unwrap();
    assert!(
        compiled.starts_with("compiled to native code: all "),
        "{text}"
    );
    assert!(
        compiled.contains("route") && compiled.contains("with_commas"),
        "{text}"
    );
    assert_eq!(lines.next(), None, "{text}");
}

#[test]
fn check_names_the_functions_that_run_interpreted_and_why() {
    let sandbox = Sandbox::new(
        "fn helper(x) { try { x + 1 } catch (e) { 0 } }\n\
         fn route(lead) { #{ priority: \"P2\", queue: `q${helper(1)}` } }\n",
        None,
    );
    let text = check(&sandbox.script(), &ScriptLimits::default()).unwrap();
    assert!(
        text.contains("compiled to native code: 0 of 2 functions"),
        "{text}"
    );
    assert!(
        text.contains("runs interpreted: helper/1: uses `try`/`catch`"),
        "{text}"
    );
    assert!(
        text.contains("runs interpreted: route/1: calls `helper`"),
        "{text}"
    );
}

#[test]
fn shipped_fixtures_all_pass() {
    let report = test(&shipped_script(), &[], &ScriptLimits::default()).unwrap();
    assert!(report.success(), "{report}");
    assert!(report.passed >= 8, "{report}");
    assert_eq!(report.text.lines().count(), report.passed);
    assert!(
        report.text.lines().all(|l| l.starts_with("ok   ")),
        "{report}"
    );
    assert!(report
        .to_string()
        .ends_with(&format!("{} passed, 0 failed", report.passed)));

    // Naming the fixture file explicitly gives the same result.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/tests/routing.yaml");
    let explicit = test(&shipped_script(), &[file], &ScriptLimits::default()).unwrap();
    assert_eq!(explicit, report);
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let sandbox = Sandbox::new(
        "fn route(lead) {\n    if lead.score > 50 {\n        return #{ priority: \"P1\", queue: \"q\" };\n    \n}\n",
        None,
    );
    let err = check(&sandbox.script(), &ScriptLimits::default()).unwrap_err();
    assert_eq!(err.file, sandbox.script().display().to_string());
    assert_eq!((err.line, err.column), (Some(6), Some(1)), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:6:1: ", sandbox.script().display())),
        "{text}"
    );
    assert!(text.contains('}'), "{text}");

    let sandbox = Sandbox::new("fn route(lead) {\n    let queue = ;\n}\n", None);
    let err = check(&sandbox.script(), &ScriptLimits::default()).unwrap_err();
    assert_eq!((err.line, err.column), (Some(2), Some(17)), "{err}");

    // `rules test` refuses to run a script that does not compile, with the same message.
    let err = test(&sandbox.script(), &[], &ScriptLimits::default()).unwrap_err();
    assert!(err.to_string().contains(":2:17: "), "{err}");
}

#[test]
fn script_without_route_is_explained() {
    let sandbox = Sandbox::new("fn score(lead) { 50 }\n", None);
    let err = check(&sandbox.script(), &ScriptLimits::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no `route` function"), "{text}");
    assert!(text.contains("fn route(lead)"), "{text}");
}

#[test]
fn failing_case_is_reported_with_the_reason() {
    let sandbox = Sandbox::new(
        ROUTE_P2,
        Some(
            r#"
- name: anyone goes to inside sales
  lead: { consent_marketing: true }
  expect: { priority: P2, queue: inside-sales }
- name: demo requests are hot
  lead:
    engagement: { demo_requested: true }
  expect:
    priority: P0
    reasons_contain: [demo]
"#,
        ),
    );
    let report = sandbox.test();
    assert_eq!((report.passed, report.failed), (1, 1), "{report}");
    assert!(!report.success());
    let file = sandbox.cases().display().to_string();
    assert_eq!(
        assert_line(&report, "ok   "),
        format!("ok   {file}: anyone goes to inside sales")
    );
    assert_eq!(
        assert_line(&report, "FAIL "),
        format!(
            "FAIL {file}: demo requests are hot: expected priority P0, got P2; \
             expected a reason containing \"demo\" (reasons: no strong signal)"
        )
    );
    assert!(
        report.to_string().ends_with("1 passed, 1 failed"),
        "{report}"
    );
}

#[test]
fn expected_none_and_owner_mismatches_are_reported() {
    let sandbox = Sandbox::new(
        r#"
fn route(lead) {
    if lead.account == () { return (); }
    #{ priority: "P1", queue: "mid-market-na", owner: lead.account.owner_rep_id }
}
"#,
        Some(
            r#"
- name: no account, no decision
  expect: { none: true }
- name: wants a decision
  expect: { priority: P1 }
- name: wants no decision
  lead: { account: { name: Acme, owner_rep_id: rep_1 } }
  expect: { none: true }
- name: wants no owner
  lead: { account: { name: Acme, owner_rep_id: rep_1 } }
  expect: { owner: ~, score: { min: 10 } }
"#,
        ),
    );
    let report = sandbox.test();
    assert_eq!((report.passed, report.failed), (1, 3), "{report}");
    let text = report.to_string();
    assert!(
        text.contains("wants a decision: expected priority P1, got no decision"),
        "{text}"
    );
    assert!(
        text.contains("wants no decision: expected no decision, got P1 to mid-market-na"),
        "{text}"
    );
    assert!(
        text.contains(
            "wants no owner: expected no owner, got owner rep_1; expected score at least 10, got 0"
        ),
        "{text}"
    );
}

#[test]
fn endless_loop_is_a_timeout_not_a_hang() {
    let sandbox = Sandbox::new(
        r#"
fn route(lead) {
    if lead.title == "loop" {
        let n = 0;
        loop { n += 1; }
    }
    #{ priority: "P2", queue: "inside-sales" }
}
"#,
        Some(
            r#"
- name: loops forever
  lead: { title: loop }
  expect: { priority: P2 }
- name: still works afterwards
  expect: { priority: P2 }
"#,
        ),
    );
    let start = Instant::now();
    let report = sandbox.test();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!((report.passed, report.failed), (1, 1), "{report}");
    let fail = assert_line(&report, "FAIL ");
    assert!(fail.contains("loops forever: script_timeout: "), "{fail}");
    assert!(
        fail.contains("operations") || fail.contains("time budget"),
        "{fail}"
    );
}

#[test]
fn script_errors_and_invalid_decisions_show_their_class() {
    let sandbox = Sandbox::new(
        r#"
fn route(lead) {
    if lead.title == "tier" { return lead.account.tier; }
    #{ priority: "p1", queue: "q" }
}
"#,
        Some(
            r#"
- name: reads a missing account
  lead: { title: tier }
  expect: { priority: P1 }
- name: lowercase priority
  expect: { priority: P1 }
"#,
        ),
    );
    let text = sandbox.test().to_string();
    assert!(
        text.contains("reads a missing account: script_error: "),
        "{text}"
    );
    assert!(text.contains("line 3"), "{text}");
    assert!(
        text.contains("lowercase priority: invalid_decision: "),
        "{text}"
    );
    assert!(text.contains("`p1`"), "{text}");
}

#[test]
fn bad_fixture_file_names_file_and_line() {
    let sandbox = Sandbox::new(
        ROUTE_P2,
        Some("- name: fine\n  expect: { priority: P2 }\n- name: typo\n  lead:\n    titel: CEO\n  expect: { priority: P2 }\n"),
    );
    let err = test(&sandbox.script(), &[], &ScriptLimits::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:5:", sandbox.cases().display())),
        "{text}"
    );
    assert!(text.contains("titel"), "{text}");

    let sandbox = Sandbox::new(
        ROUTE_P2,
        Some("- name: fine\n  expect: { priority: P2 }\n- name: says nothing\n  expect: {}\n"),
    );
    let text = test(&sandbox.script(), &[], &ScriptLimits::default())
        .unwrap_err()
        .to_string();
    assert!(
        text.starts_with(&format!("{}:3: ", sandbox.cases().display())),
        "{text}"
    );
    assert!(text.contains("checks nothing"), "{text}");

    let sandbox = Sandbox::new(ROUTE_P2, Some("- name: x\n  expect: { priority: P7 }\n"));
    let text = test(&sandbox.script(), &[], &ScriptLimits::default())
        .unwrap_err()
        .to_string();
    assert!(text.contains(":2:"), "{text}");
}

#[test]
fn missing_fixtures_are_an_error() {
    let sandbox = Sandbox::new(ROUTE_P2, None);
    let err = test(&sandbox.script(), &[], &ScriptLimits::default()).unwrap_err();
    assert!(err.to_string().contains("no fixture files"), "{err}");

    let missing = sandbox.dir.path().join("nope.yaml");
    let err = test(&sandbox.script(), &[missing], &ScriptLimits::default()).unwrap_err();
    assert!(err.to_string().contains("nope.yaml"), "{err}");
}

#[test]
fn a_case_can_expect_the_script_to_fail_with_a_class() {
    let script = r#"fn route(lead) {
    if lead.title == "boom" { throw "no titles like that"; }
    if lead.title == "odd" { return #{ priority: "P9", queue: "q", reasons: [] }; }
    #{ priority: "P2", queue: "q", reasons: [] }
}
"#;
    let cases = "\
- name: throws
  lead: { title: boom }
  expect: { failure: script_error }
- name: invalid
  lead: { title: odd }
  expect: { failure: invalid_decision }
- name: wrong class
  lead: { title: boom }
  expect: { failure: invalid_decision }
- name: expected a failure, got a decision
  lead: { title: fine }
  expect: { failure: script_error }
- name: unexpected failure
  lead: { title: boom }
  expect: { priority: P2 }
";
    let report = Sandbox::new(script, Some(cases)).test();
    assert_eq!((report.passed, report.failed), (2, 3), "{}", report.text);
    let text = &report.text;
    assert!(
        text.contains("wrong class: expected invalid_decision, got script_error: "),
        "{text}"
    );
    assert!(
        text.contains("got a decision: expected script_error, got P2 to q"),
        "{text}"
    );
    assert!(
        text.contains("unexpected failure: script_error: "),
        "{text}"
    );

    let both = "- name: both\n  lead: { title: boom }\n  expect: { failure: script_error, priority: P2 }\n";
    let sandbox = Sandbox::new(script, Some(both));
    let text = test(&sandbox.script(), &[], &ScriptLimits::default())
        .unwrap_err()
        .to_string();
    assert!(text.contains("keep only `failure`"), "{text}");
    let unknown = "- name: x\n  expect: { failure: script_panic }\n";
    let sandbox = Sandbox::new(script, Some(unknown));
    let text = test(&sandbox.script(), &[], &ScriptLimits::default())
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("script_panic") && text.contains("`script_timeout`"),
        "{text}"
    );
}

/// `leadflow rules explain` on a shipped fixture case: the lead, the outcome with its
/// reasons, and the `if`s of the shipped script in the order they ran, with lines that point
/// at the script's text.
#[test]
fn rules_explain_shows_the_lead_the_outcome_and_what_fired_for_a_fixture_case() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let case = "enterprise account goes to its owner";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args(["rules", "explain", "rules/routing.rhai"])
        .args(["--lead", "rules/tests/routing.yaml", "--case", case])
        .current_dir(root)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("lead, as route saw it:"), "{text}");
    assert!(text.contains(r#""name": "Acme Inc""#), "{text}");
    assert!(text.contains("outcome: routed to P0"), "{text}");
    assert!(text.contains("what fired, in order:"), "{text}");
    let script = fs::read_to_string(shipped_script()).unwrap();
    let steps: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("what fired"))
        .skip(1)
        .collect();
    assert!(steps.len() >= 3, "{text}");
    for step in &steps {
        // `  LINE:COL FUNCTION: if CONDITION -> true|false` or `... calls NAME`.
        let (at, rest) = step.trim().split_once(' ').unwrap();
        let line: usize = at.split(':').next().unwrap().parse().unwrap();
        let source_line = script.lines().nth(line - 1).unwrap();
        if let Some((_, cond)) = rest.split_once(": if ") {
            let cond = cond.rsplit_once(" -> ").unwrap().0;
            let first_word = cond.split_whitespace().next().unwrap();
            assert!(
                source_line.contains("if ") && source_line.contains(first_word),
                "{step} vs {source_line}"
            );
        } else {
            let name = rest.rsplit_once("calls ").unwrap().1;
            assert!(
                source_line.contains(&format!("{name}(")),
                "{step} vs {source_line}"
            );
        }
    }
    // The enterprise rule fired: its `if` is true, the customer rule's before it false.
    assert!(
        steps
            .iter()
            .any(|s| s.contains("if enterprise || activity.demo_requested -> true")),
        "{text}"
    );
    assert!(
        steps
            .iter()
            .any(|s| s.contains("route: calls is_enterprise")),
        "{text}"
    );

    let json = std::process::Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args(["rules", "explain", "rules/routing.rhai", "--json"])
        .args(["--lead", "rules/tests/routing.yaml", "--case", case])
        .current_dir(root)
        .output()
        .unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["outcome"], "routed");
    assert_eq!(value["decision"]["priority"], "P0");
    assert_eq!(value["trace"].as_array().unwrap().len(), steps.len());
}

/// `leadflow rules check --topology`: a misspelt `lead` field and a queue missing from the
/// topology's `queues:` are refused with their line and column and the nearest name; the
/// shipped script passes under the shipped topology, and `rules test --topology` runs its
/// fixtures under the list (a case whose decision names an unlisted queue fails).
#[test]
fn rules_check_with_a_topology_refuses_misspelt_fields_and_unlisted_queues() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let leadflow = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadflow"))
            .args(args)
            .current_dir(root)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &*String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let topology = "topologies/lead-routing.yaml";
    let (ok, text) = leadflow(&[
        "rules",
        "check",
        "rules/routing.rhai",
        "--topology",
        topology,
    ]);
    assert!(ok, "{text}");
    let (ok, text) = leadflow(&[
        "rules",
        "test",
        "rules/routing.rhai",
        "--topology",
        topology,
    ]);
    assert!(ok && text.contains(" passed, 0 failed"), "{text}");

    let sandbox = Sandbox::new(
        "fn route(lead) {\n    if lead.lifecycle_stge == \"mql\" {\n        return #{ priority: \"P1\", queue: \"mid-market-emea\" };\n    }\n    #{ priority: \"P2\", queue: \"insde-sales\" }\n}\n",
        Some("- name: mql\n  lead: {lifecycle_stage: mql}\n  expect: {priority: P1}\n"),
    );
    let script = sandbox.script();
    let script = script.to_str().unwrap();
    let (ok, text) = leadflow(&["rules", "check", script, "--topology", topology]);
    assert!(!ok);
    assert!(text.contains(&format!("{script}:2:")), "{text}");
    assert!(
        text.contains("did you mean `lead.lifecycle_stage`?"),
        "{text}"
    );
    assert!(
        text.contains("(and 1 more unknown name(s) after it)"),
        "{text}"
    );
    // With the field fixed, the queue is the error, with its place.
    fs::write(
        sandbox.script(),
        fs::read_to_string(sandbox.script())
            .unwrap()
            .replace("lifecycle_stge", "lifecycle_stage"),
    )
    .unwrap();
    let (ok, text) = leadflow(&["rules", "check", script, "--topology", topology]);
    assert!(!ok);
    assert!(text.contains(&format!("{script}:5:")), "{text}");
    assert!(
        text.contains("queue \"insde-sales\" is not in the topology's `queues` (did you mean `inside-sales`?)"),
        "{text}"
    );
    // Without the topology, any queue.
    let (ok, text) = leadflow(&["rules", "check", script]);
    assert!(ok, "{text}");

    // A queue built at run time is checked when the case runs.
    fs::write(
        sandbox.script(),
        "fn route(lead) { #{ priority: \"P1\", queue: \"mid-market-\" + lead.lifecycle_stage } }\n",
    )
    .unwrap();
    let (ok, text) = leadflow(&["rules", "test", script, "--topology", topology]);
    assert!(!ok);
    assert!(
        text.contains("queue \"mid-market-mql\" is not in the topology's `queues`"),
        "{text}"
    );
    let (ok, text) = leadflow(&["rules", "test", script]);
    assert!(ok, "{text}");
}

/// The owner if working, else the team's turn; `()` when nobody is available.
const OWNER_OR_TEAM: &str = r#"
fn route(lead) {
    let owner = lead.owner_rep;
    if owner != () && owner.active && is_working(owner, lead.occurred_at) {
        return #{ priority: "P0", queue: "enterprise-emea", owner: owner.rep_id,
                  reasons: ["account owner " + owner.name] };
    }
    #{ priority: "P0", queue: "enterprise-emea", owner: round_robin("enterprise-emea"),
       reasons: ["round robin"] }
}
"#;

/// 2026-01-05 07:00 UTC: 08:00 in Berlin, 16:00 in Tokyo.
const REPS_FIXTURE: &str = r#"
reps:
  - { rep_id: rep_anna, name: Anna, team: enterprise-emea, timezone: Europe/Berlin, working_hours: "09:00-17:00" }
  - { rep_id: rep_ben, team: enterprise-emea, max_open_leads: 2 }
  - { rep_id: rep_cho, team: enterprise-emea, timezone: Asia/Tokyo, working_hours: "09:00-17:00" }
  - { rep_id: rep_dan, team: enterprise-emea, active: false }
cases:
  - name: the owner works, and keeps the lead
    lead: { occurred_at: 1767610800000, account: { owner_rep_id: rep_anna } }
    expect: { owner: rep_anna, reasons_contain: ["account owner Anna"] }
  - name: the owner is off hours, the team's first turn is ben
    lead: { occurred_at: 1767596400000, account: { owner_rep_id: rep_anna } }
    expect: { owner: rep_ben }
  - name: ben is full, so cho in Tokyo
    lead: { occurred_at: 1767596400000 }
    open_leads: { rep_ben: 2 }
    expect: { owner: rep_cho }
  - name: nobody is available late in the evening
    lead: { occurred_at: 1767639600000 }
    open_leads: { rep_ben: 2 }
    expect: { owner: ~ }
  - name: a wrong expectation fails
    lead: { occurred_at: 1767596400000 }
    expect: { owner: rep_dan }
"#;

#[test]
fn fixture_files_bring_their_reps_and_cases_see_hours_capacity_and_turns() {
    let sandbox = Sandbox::new(OWNER_OR_TEAM, Some(REPS_FIXTURE));
    let report = sandbox.test();
    assert_eq!((report.passed, report.failed), (4, 1), "{report}");
    let fail = assert_line(&report, "FAIL");
    assert!(
        fail.contains("a wrong expectation fails: expected owner rep_dan, got owner rep_ben"),
        "{fail}"
    );
    // `rules explain` of a case runs against the file's reps too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .args(["rules", "explain"])
        .arg(sandbox.script())
        .arg("--lead")
        .arg(sandbox.cases())
        .args(["--case", "ben is full, so cho in Tokyo", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let explained: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(explained["decision"]["owner"], "rep_cho", "{explained}");
    // A case naming a rep the file does not list is refused with its line.
    let broken = REPS_FIXTURE.replace("open_leads: { rep_ben: 2 }", "open_leads: { rep_bob: 2 }");
    let sandbox = Sandbox::new(OWNER_OR_TEAM, Some(&broken));
    let err = test(&sandbox.script(), &[], &ScriptLimits::default()).unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("cases.yaml:"), "{err}");
    assert!(
        err.contains("open_leads names \"rep_bob\", which is not under `reps:`"),
        "{err}"
    );
}
