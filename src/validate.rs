//! `leadflow validate`: everything `leadflow run` would refuse at start-up, checked without
//! starting it: the topology (every problem at once), its rules (compiled and checked, with
//! the place of an error), the `rules_tests` fixtures, and with `--kafka-check` the topics on
//! the broker (present, inputs co-partitioned) and the schema registry (answers, accepts the
//! credentials).

use std::path::Path;
use std::time::Duration;

use crate::codec::registry_client::RegistryConfig;
use crate::codec::RegistryClient;
use crate::kafka::KafkaSettings;
use crate::route::{fixtures, Rules, ScriptLimits};
use crate::topology::{Overrides, Topology};

/// What `validate` found: one line per check, `ok ...` or `FAIL ...`.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub failed: usize,
}

impl Report {
    fn ok(&mut self, line: String) {
        self.lines.push(format!("ok   {line}"));
    }

    fn fail(&mut self, line: String) {
        self.failed += 1;
        self.lines.push(format!("FAIL {line}"));
    }

    fn note(&mut self, line: String) {
        self.lines.push(format!("note {line}"));
    }
}

/// Where the broker and registry are, for `--kafka-check`.
pub struct Connections {
    pub kafka: KafkaSettings,
    pub registry: RegistryConfig,
}

/// Checks the topology at `path` (with `rules` instead of its own, if given), and with
/// `connections` its topics and registry.
pub async fn validate(
    path: &Path,
    rules: Option<&Path>,
    connections: Option<Connections>,
) -> Report {
    let mut report = Report::default();
    let overrides = Overrides {
        rules: rules.map(Path::to_path_buf),
        application_id: None,
    };
    let topology = match crate::topology::load_with(path, &overrides) {
        Ok(t) => t,
        Err(e) => {
            report.fail(e.to_string());
            return report;
        }
    };
    report.ok(describe(path, &topology));
    check_rules(&topology, &mut report);
    if let Some(c) = connections {
        check_kafka(&topology, c, &mut report).await;
    }
    report
}

fn describe(path: &Path, t: &Topology) -> String {
    let sla = if t.acks.is_some() {
        "SLA tracked"
    } else {
        "no SLA tracking"
    };
    format!(
        "{}: application_id {}, {} guarantee, {sla}, {} stream thread(s)",
        path.display(),
        t.application_id,
        t.processing.guarantee.as_str(),
        t.limits.stream_threads
    )
}

fn check_rules(topology: &Topology, report: &mut Report) {
    let limits = ScriptLimits::of(topology);
    let rules = match Rules::load(&topology.rules, &limits) {
        Ok(r) => r,
        Err(e) => return report.fail(e.to_string()),
    };
    match fixtures::check(&topology.rules, &limits) {
        Ok(summary) => {
            for line in summary.lines() {
                report.ok(line.trim_start_matches("ok ").to_string());
            }
        }
        Err(e) => report.fail(e.to_string()),
    }
    if topology.rules_tests.is_empty() {
        report
            .note("the topology names no rules_tests: a reloaded script goes live untested".into());
        return;
    }
    let files: Vec<String> = topology
        .rules_tests
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    match fixtures::test_rules(&rules, &topology.rules_tests) {
        Ok(r) if r.failed == 0 => report.ok(format!(
            "rules_tests: {} passed ({})",
            r.passed,
            files.join(", ")
        )),
        Ok(r) => report.fail(format!(
            "rules_tests: {} passed, {} failed ({}):\n{}",
            r.passed,
            r.failed,
            files.join(", "),
            r.text.trim_end()
        )),
        Err(e) => report.fail(format!("rules_tests: {e:#}")),
    }
}

async fn check_kafka(topology: &Topology, c: Connections, report: &mut Report) {
    let (kafka, t) = (c.kafka.clone(), topology.clone());
    let topics = tokio::task::spawn_blocking(move || {
        crate::runtime::preflight::check_topics(&kafka, &t, Duration::from_secs(30))
    })
    .await;
    match topics {
        Ok(Ok(partitions)) => report.ok(format!(
            "kafka {}: every topic of the topology exists; the inputs are co-partitioned ({partitions} partitions)",
            c.kafka.bootstrap_servers
        )),
        Ok(Err(e)) => report.fail(format!("kafka: {e:#}")),
        Err(e) => report.fail(format!("kafka: the check panicked: {e}")),
    }
    let registry = match RegistryClient::with_config(&c.registry) {
        Ok(r) => r,
        Err(e) => return report.fail(format!("registry: {e}")),
    };
    match registry.subjects().await {
        Ok(subjects) => report.ok(format!(
            "registry {}: answers ({} subjects)",
            registry.url(),
            subjects.len()
        )),
        Err(e) => report.fail(format!("registry: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_files_validate_and_a_broken_script_is_named_with_its_line() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let shipped = rt.block_on(validate(
            &root.join("topologies/lead-routing.yaml"),
            None,
            None,
        ));
        assert_eq!(shipped.failed, 0, "{:#?}", shipped.lines);
        assert!(
            shipped
                .lines
                .iter()
                .any(|l| l.starts_with("ok   rules_tests:")),
            "{:#?}",
            shipped.lines
        );
        let dir = tempfile::tempdir().unwrap();
        let broken = dir.path().join("broken.rhai");
        std::fs::write(&broken, "fn route(lead) {\n    let x = ;\n}\n").unwrap();
        let report = rt.block_on(validate(
            &root.join("topologies/lead-routing.yaml"),
            Some(&broken),
            None,
        ));
        assert_eq!(report.failed, 1, "{:#?}", report.lines);
        let failure = report.lines.iter().find(|l| l.starts_with("FAIL")).unwrap();
        assert!(
            failure.contains(&format!("{}:2", broken.display())),
            "{failure}"
        );
    }
}
