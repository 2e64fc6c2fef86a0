//! Hot reload of the routing script: `leadflow run` reads its rules file every second and
//! reloads it once a changed text has held for a second (so a file half-written is not
//! compiled), or at once on SIGHUP.
//!
//! A new script is compiled and checked like at start-up and, when the topology names
//! `rules_tests`, must pass those fixture files; only then is it put in force (the stream
//! threads take it between two records). On any failure the running script stays, the error
//! is logged with its file, line and column, and counted. A file whose text did not change
//! (a `touch`, a save without edits) is not reloaded.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};

use crate::metrics as m;
use crate::route::live::LiveRules;
use crate::route::{fixtures, Rules, ScriptLimits};

/// How often the rules file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The new version is in force.
    Loaded { from: String, to: String },
    /// The file holds the version in force.
    Unchanged,
}

pub struct Reloader {
    pub path: PathBuf,
    pub limits: ScriptLimits,
    /// Fixture files a new script must pass before it is put in force (`rules_tests`).
    pub tests: Vec<PathBuf>,
    pub live: Arc<LiveRules>,
}

/// What identifies a version of the file: its text's rule_version (a script is a few KB;
/// modification times can be too coarse to tell two quick saves apart).
fn fingerprint(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| Rules::version_of(&text))
}

impl Reloader {
    /// Watches the file and SIGHUP until the process ends.
    pub async fn run(self) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = fingerprint(&self.path);
        // A changed text seen once, reloaded if the next look sees it again.
        let mut pending: Option<Option<String>> = None;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let this = Arc::new(self);
        loop {
            #[cfg(unix)]
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                } } => true,
            };
            #[cfg(not(unix))]
            let forced = {
                tick.tick().await;
                false
            };
            let now = fingerprint(&this.path);
            if !forced {
                // A change is reloaded once it has held for a whole interval: a file being
                // written (truncated, then filled) is not compiled half-way.
                if now == seen {
                    pending = None;
                    continue;
                }
                if pending.as_ref() != Some(&now) {
                    pending = Some(now);
                    continue;
                }
            }
            pending = None;
            seen = now;
            let reloader = this.clone();
            match tokio::task::spawn_blocking(move || reloader.reload()).await {
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "the rules reload panicked"),
            }
        }
    }

    /// Reads, compiles, checks and tests the file; puts it in force if everything passes.
    /// Logs and counts the outcome.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let result = self.try_reload();
        match &result {
            Ok(Reloaded::Loaded { from, to }) => {
                counter!(m::RULES_RELOADS, "outcome" => "loaded").increment(1);
                gauge!(m::RULES_INFO, "rule_version" => from.clone()).set(0.0);
                gauge!(m::RULES_INFO, "rule_version" => to.clone()).set(1.0);
                gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "rule_version" => from.clone()).set(0.0);
                gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "rule_version" => to.clone()).set(1.0);
                tracing::info!(file = %self.path.display(), from = %from, to = %to, "rules reloaded: the next records are decided by the new version");
            }
            Ok(Reloaded::Unchanged) => {
                tracing::debug!(file = %self.path.display(), "rules file touched, text unchanged");
            }
            Err(why) => {
                counter!(m::RULES_RELOADS, "outcome" => "failed").increment(1);
                counter!(m::RULES_RELOAD_FAILURES).increment(1);
                tracing::error!(
                    file = %self.path.display(),
                    running = %self.live.current().version(),
                    "rules not reloaded, the running version stays: {why}"
                );
            }
        }
        result
    }

    fn try_reload(&self) -> Result<Reloaded, String> {
        let file = self.path.display().to_string();
        let source = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{file}: cannot read the script: {e}"))?;
        let running = self.live.current();
        if Rules::version_of(&source) == running.version() {
            return Ok(Reloaded::Unchanged);
        }
        let rules = Rules::compile(&file, &source, &self.limits).map_err(|e| e.to_string())?;
        if !self.tests.is_empty() {
            let report = fixtures::test_rules(&rules, &self.tests)
                .map_err(|e| format!("{file}: the rules_tests cannot run: {e:#}"))?;
            if report.failed > 0 {
                return Err(format!(
                    "{file}: {} of the rules_tests case(s) failed:\n{}",
                    report.failed, report.text
                ));
            }
        }
        let to = rules.version().to_string();
        let old = self.live.replace(Arc::new(rules));
        Ok(Reloaded::Loaded {
            from: old.version().to_string(),
            to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"fn route(lead) { #{ priority: "P2", queue: "one", reasons: [] } }"#;
    const V2: &str = r#"fn route(lead) { #{ priority: "P1", queue: "two", reasons: [] } }"#;

    fn reloader(dir: &std::path::Path, tests: Vec<PathBuf>) -> Reloader {
        let path = dir.join("r.rhai");
        std::fs::write(&path, V1).unwrap();
        let rules = Rules::load(&path, &ScriptLimits::default()).unwrap();
        Reloader {
            path,
            limits: ScriptLimits::default(),
            tests,
            live: Arc::new(LiveRules::new(Arc::new(rules))),
        }
    }

    #[test]
    fn a_broken_script_is_refused_with_its_line_and_a_valid_one_replaces_the_running_one() {
        let dir = tempfile::tempdir().unwrap();
        let r = reloader(dir.path(), Vec::new());
        let v1 = Rules::version_of(V1);
        assert_eq!(r.reload(), Ok(Reloaded::Unchanged));
        std::fs::write(&r.path, format!("{V1}\n\nlet x = ;\n")).unwrap();
        let why = r.reload().unwrap_err();
        assert!(why.contains(&format!("{}:3", r.path.display())), "{why}");
        assert_eq!(r.live.current().version(), v1);
        std::fs::write(&r.path, V2).unwrap();
        assert_eq!(
            r.reload(),
            Ok(Reloaded::Loaded {
                from: v1,
                to: Rules::version_of(V2)
            })
        );
        assert_eq!(r.live.current().version(), Rules::version_of(V2));
        assert_eq!(r.live.generation(), 1);
        std::fs::remove_file(&r.path).unwrap();
        assert!(r.reload().unwrap_err().contains("cannot read"));
        assert_eq!(r.live.current().version(), Rules::version_of(V2));
    }

    #[test]
    fn a_script_failing_its_rules_tests_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("cases.yaml");
        std::fs::write(
            &fixtures,
            "- name: any lead is P2 in queue one\n  lead: {}\n  expect: {priority: P2, queue: one}\n",
        )
        .unwrap();
        let r = reloader(dir.path(), vec![fixtures]);
        std::fs::write(&r.path, V2).unwrap();
        let why = r.reload().unwrap_err();
        assert!(why.contains("1 of the rules_tests case(s) failed"), "{why}");
        assert_eq!(r.live.current().version(), Rules::version_of(V1));
    }
}
