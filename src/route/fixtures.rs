//! `leadflow rules check` and `leadflow rules test`: validate a routing script, and run it
//! against YAML test cases without Kafka, reporting in words why each lead went where.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::engine::{CompileError, Rules, ScriptLimits};
use super::fixture_file;
use super::lead::ScriptFailure;

/// Compiles the script and summarises it: one `ok` line, then which functions the rules
/// compiler turned into native code and why the others run interpreted.
pub fn check(path: &Path, limits: &ScriptLimits) -> Result<String, CompileError> {
    let rules = Rules::load(path, limits)?;
    let score = if rules.has_score() {
        "defines score(lead)"
    } else {
        "no score(lead): leadflow's default score is used"
    };
    let mut text = format!(
        "ok {}: rule_version {}, {score}",
        path.display(),
        rules.version()
    );
    let report = rules.compiled_functions();
    let compiled: Vec<_> = report
        .iter()
        .filter(|f| f.compiled.is_ok())
        .map(|f| f.name.as_str())
        .collect();
    let all = if compiled.len() == report.len() {
        format!("all {} functions", report.len())
    } else {
        format!("{} of {} functions", compiled.len(), report.len())
    };
    text += &format!("\ncompiled to native code: {all}");
    if !compiled.is_empty() {
        text += &format!(" ({})", compiled.join(", "));
    }
    for f in report {
        if let Err(why) = &f.compiled {
            text += &format!("\nruns interpreted: {}/{}: {why}", f.name, f.arity);
        }
    }
    Ok(text)
}

/// The outcome of `rules test`: counts and one line per case, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub passed: usize,
    pub failed: usize,
    /// One newline-terminated line per case: `ok   <file>: <case>` or
    /// `FAIL <file>: <case>: <what differs> (reasons: ...)`. No summary line.
    pub text: String,
}

impl TestReport {
    /// True when every case passed.
    pub fn success(&self) -> bool {
        self.failed == 0
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} passed, {} failed",
            self.text, self.passed, self.failed
        )
    }
}

/// Runs every case of `fixtures` (default: `<script dir>/tests/*.yaml`) through the script.
///
/// A script that does not compile or a fixture file that does not parse is an error; cases
/// that do not get what they expect (including script failures) are reported as `FAIL`.
pub fn test(
    path: &Path,
    fixtures: &[PathBuf],
    limits: &ScriptLimits,
) -> anyhow::Result<TestReport> {
    let rules = Rules::load(path, limits)?;
    let files = if fixtures.is_empty() {
        default_fixtures(path)?
    } else {
        fixtures.to_vec()
    };
    test_rules(&rules, &files)
}

/// Runs every case of the fixture files `files` through `rules`.
pub fn test_rules(rules: &Rules, files: &[PathBuf]) -> anyhow::Result<TestReport> {
    // Read every file first, so a broken one stops the run before any result is shown.
    let suites = files
        .iter()
        .map(|file| fixture_file::load_suite(file).map(|suite| (file, suite)))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut report = TestReport::default();
    for (file, suite) in suites {
        for case in &suite.cases {
            let lead = case.lead.to_lead();
            let mut reps = suite.context(case, &lead);
            let outcome = match super::reps::within(&mut reps, || rules.evaluate(&lead)) {
                Ok(mut decision) => {
                    // As `run` emits it: an owner who is not an active rep is cleared.
                    if let (Some(d), Some(roster)) = (decision.as_mut(), &suite.reps) {
                        super::reps::correct_owner(roster, d);
                    }
                    case.expect.compare(decision.as_ref())
                }
                Err(failure) => case
                    .expect
                    .compare_failure(failure.class(), failure_message(&failure)),
            };
            let file = file.display();
            match outcome {
                Ok(()) => {
                    report.passed += 1;
                    report.text += &format!("ok   {file}: {}\n", case.name);
                }
                Err(why) => {
                    report.failed += 1;
                    report.text += &format!("FAIL {file}: {}: {why}\n", case.name);
                }
            }
        }
    }
    Ok(report)
}

/// What happened: the message the event's DLQ record would carry.
fn failure_message(failure: &ScriptFailure) -> &str {
    match failure {
        ScriptFailure::Error(m) | ScriptFailure::Timeout(m) | ScriptFailure::InvalidDecision(m) => {
            m
        }
    }
}

/// `<script dir>/tests/*.yaml` (and `*.yml`), sorted by name.
fn default_fixtures(script: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = script.parent().unwrap_or(Path::new("")).join("tests");
    let entries = std::fs::read_dir(&dir).with_context(|| {
        format!(
            "no fixture files given and cannot read {}: pass fixture files, or put them there",
            dir.display()
        )
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        bail!(
            "no fixture files given and no *.yaml in {}: pass fixture files, or put them there",
            dir.display()
        );
    }
    files.sort();
    Ok(files)
}
