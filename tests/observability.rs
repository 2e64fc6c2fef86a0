//! The operator's side of leadflow: every Grafana panel and Prometheus rule reads metrics the
//! processor exports, the alert rules pass `promtool`, and the series dashboards and alerts
//! read exist from start-up at zero.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use leadflow::metrics as m;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What `/metrics` shows right after start-up (SLA tracking and exactly-once on), with the
/// process metrics.
fn start_up_render() -> String {
    let recorder = m::recorder_builder().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        m::describe();
        m::zero_series(&m::StartUp {
            rule_version: "abc123",
            sla: true,
            exactly_once: true,
            stream_threads: 2,
        });
        let process = metrics_process::Collector::default();
        process.describe();
        process.collect();
    });
    handle.render()
}

/// Metric names in a Prometheus text exposition.
fn rendered_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

/// Every name a scrape of leadflow can show: what start-up renders, and every catalogued
/// metric (with a histogram's series), including those whose labels appear later.
fn exported() -> BTreeSet<String> {
    let mut names = rendered_names(&start_up_render());
    for (name, kind) in m::CATALOGUE {
        if *kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

/// The metric names a PromQL expression reads: identifiers outside label matchers and
/// strings, that are not functions, keywords or label names of `by (...)`.
fn metric_names(expr: &str) -> Vec<String> {
    const WORDS: &[&str] = &[
        "sum",
        "by",
        "without",
        "rate",
        "increase",
        "histogram_quantile",
        "max",
        "min",
        "avg",
        "count",
        "clamp_min",
        "clamp_max",
        "offset",
        "and",
        "or",
        "unless",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "abs",
        "topk",
    ];
    let mut names = Vec::new();
    let mut chars = expr.char_indices().peekable();
    let (mut in_braces, mut in_string, mut in_by) = (false, false, false);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' => in_braces = true,
            '}' => in_braces = false,
            '[' => {
                // A range: skip to its end.
                for (_, c) in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
            }
            ')' => in_by = false,
            c if !in_braces && (c.is_ascii_alphabetic() || c == '_') => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                let word = &expr[i..end];
                if word == "by" || word == "without" {
                    in_by = true;
                } else if !in_by && !WORDS.contains(&word) {
                    names.push(word.to_string());
                }
            }
            _ => {}
        }
    }
    names
}

/// Every `expr` of a Grafana dashboard's panels.
fn dashboard_exprs(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            exprs.push((title, target["expr"].as_str().expect("expr").to_string()));
        }
    }
    exprs
}

/// (rule name, expr) of every rule of a Prometheus rule file, and the recorded names.
fn rules(path: &Path) -> (Vec<(String, String)>, BTreeSet<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let file: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let (mut exprs, mut recorded) = (Vec::new(), BTreeSet::new());
    for group in file["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("alert or record")
                .to_string();
            if let Some(record) = rule["record"].as_str() {
                recorded.insert(record.to_string());
            }
            exprs.push((name, rule["expr"].as_str().expect("expr").to_string()));
        }
    }
    (exprs, recorded)
}

/// Fails on a name of `exprs` that is neither exported nor in `also`.
fn check_names(what: &str, exprs: &[(String, String)], also: &BTreeSet<String>) {
    let exported = exported();
    let mut unknown = Vec::new();
    for (title, expr) in exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "{what} {title:?} reads no metric: {expr}"
        );
        for name in names {
            if !exported.contains(&name) && !also.contains(&name) {
                unknown.push(format!("{title:?}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "{what} read metrics leadflow does not export: {unknown:#?}"
    );
}

#[test]
fn the_expression_parser_finds_metric_names_only() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le, priority) (rate(leadflow_time_to_ack_seconds_bucket{priority="P0", le="60"}[15m])))"#
        ),
        ["leadflow_time_to_ack_seconds_bucket"]
    );
    assert_eq!(
        metric_names(r#"1 - sum(increase(a_total{cause="x y"}[1h])) / clamp_min(b, 1)"#),
        ["a_total", "b"]
    );
    assert_eq!(
        metric_names("leadflow:sla_compliance:ratio_1h < 0.95"),
        ["leadflow:sla_compliance:ratio_1h"]
    );
}

#[test]
fn every_dashboard_panel_reads_metrics_leadflow_exports() {
    let exprs = dashboard_exprs(&root().join("docs/grafana/leadflow.json"));
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    check_names("dashboard panel", &exprs, &BTreeSet::new());
    // The issue's panels are there.
    let all: String = exprs.iter().map(|(_, e)| e.as_str()).collect();
    for metric in [
        m::TIME_TO_ACK,
        m::SLA_BREACHES,
        m::SLA_OPEN,
        m::RECORDS_IN,
        m::CONSUMER_LAG,
        m::DLQ,
        m::LATE_EVENTS,
        m::RECORD_LATENCY,
    ] {
        assert!(all.contains(metric), "no panel reads {metric}");
    }
}

#[test]
fn the_dashboard_is_provisioned_by_docker_compose() {
    let compose = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    for file in [
        "docs/grafana/leadflow.json",
        "docs/grafana/dashboards.yml",
        "docs/grafana/datasource.yml",
        "docs/prometheus/alerts.yml",
        "docs/prometheus/prometheus.yml",
    ] {
        assert!(root().join(file).exists(), "{file}");
        assert!(
            compose.contains(&format!("./{file}:")),
            "docker-compose.yml does not mount {file}"
        );
    }
    let provider = std::fs::read_to_string(root().join("docs/grafana/dashboards.yml")).unwrap();
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    assert!(compose.contains(":/var/lib/grafana/dashboards/leadflow.json:ro"));
}

#[test]
fn alert_rules_read_exported_metrics_and_pass_promtool() {
    let dir = root().join("docs/prometheus");
    let (exprs, recorded) = rules(&dir.join("alerts.yml"));
    let names: Vec<&str> = exprs.iter().map(|(n, _)| n.as_str()).collect();
    for alert in ["LeadflowP0SlaBreach", "LeadflowDlqGrowing"] {
        assert!(names.contains(&alert), "{alert} missing: {names:?}");
    }
    // Prometheus's own `up` is the one name leadflow does not export.
    let mut also = recorded;
    also.insert("up".into());
    check_names("alert rule", &exprs, &also);

    let promtool = which("promtool").unwrap_or_else(|| {
        panic!(
            "promtool is not installed (Debian's `prometheus` package): run \
             scripts/install-tools.sh, which installs it"
        )
    });
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_series_dashboards_and_alerts_read_exist_at_start_up() {
    let text = start_up_render();
    let names = rendered_names(&text);
    for series in [
        r#"leadflow_build_info{version=""#,
        r#"leadflow_records_in_total{input="acks"} 0"#,
        r#"leadflow_dlq_total{class="avro_decode"} 0"#,
        r#"leadflow_dlq_total{class="invalid_ack"} 0"#,
        r#"leadflow_routed_total{priority="P0"} 0"#,
        r#"leadflow_sla_open_decisions{priority="P2"} 0"#,
        r#"leadflow_late_events_total{input="engagements",policy="side_output"} 0"#,
        r#"leadflow_transactions_total{outcome="aborted"} 0"#,
        r#"leadflow_stream_threads{state="stuck"} 0"#,
        r#"leadflow_stream_threads{state="running"} 2"#,
    ] {
        assert!(text.contains(series), "no {series} at start-up:\n{text}");
    }
    assert!(text.contains(r#"rule_version="abc123""#), "{text}");
    // Histograms, not summaries: they aggregate across instances.
    for histogram in [m::RECORD_LATENCY, m::TIME_TO_ACK, m::TRANSACTION_SECONDS] {
        assert!(
            text.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram} is not a histogram:\n{text}"
        );
        assert!(
            names.contains(&format!("{histogram}_bucket")),
            "{histogram}"
        );
    }
    assert!(
        text.contains(r#"leadflow_time_to_ack_seconds_bucket{priority="P0",le="60"} 0"#),
        "{text}"
    );
    for process in ["process_resident_memory_bytes", "process_cpu_seconds_total"] {
        assert!(names.contains(process), "no {process}:\n{text}");
    }
}

#[test]
fn every_metric_constant_is_catalogued() {
    let source = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    let declared: BTreeSet<&str> = source
        .lines()
        .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"leadflow_"))
        .filter_map(|l| l.split('"').nth(1))
        .collect();
    let catalogued: BTreeSet<&str> = m::CATALOGUE.iter().map(|(n, _)| *n).collect();
    assert_eq!(declared, catalogued);
    // And the contracts document each of them.
    let contracts = std::fs::read_to_string(root().join("docs/contracts.md")).unwrap();
    let undocumented: Vec<&&str> = declared
        .iter()
        .filter(|name| !contracts.contains(**name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/contracts.md: {undocumented:?}"
    );
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
