//! Validation: every problem of a topology file, each with where it is, in one report.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawTopology;

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
}

/// Runtime limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_record_bytes: usize,
    pub script_max_operations: u64,
    pub script_timeout: Duration,
    pub max_in_flight: usize,
}

/// A validated topology, ready to build runtime objects from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub application_id: String,
    pub contacts: String,
    pub engagements: String,
    pub accounts: String,
    pub reps: String,
    pub outputs: Outputs,
    pub rules: PathBuf,
    /// SLA window per priority, P0, P1, P2.
    pub sla: [Duration; 3],
    pub dedup_retention: Duration,
    pub limits: Limits,
}

/// Reads and validates a topology file.
pub fn load(path: &Path) -> Result<Topology, TopologyError> {
    let text = std::fs::read_to_string(path).map_err(|e| TopologyError {
        problems: vec![format!(
            "{}: cannot read the topology file: {e}",
            path.display()
        )],
    })?;
    parse(&path.display().to_string(), &text)
}

/// Validates topology `text` read from `file` (named in every message).
pub fn parse(file: &str, text: &str) -> Result<Topology, TopologyError> {
    let raw: RawTopology = serde_norway::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        TopologyError {
            problems: vec![format!("{file}:{at}: {e}")],
        }
    })?;
    let mut p = Problems {
        file,
        list: Vec::new(),
    };
    let contacts = p.topic("inputs.contacts", &raw.inputs.contacts);
    let engagements = p.topic("inputs.engagements", &raw.inputs.engagements);
    let accounts = p.topic("reference.accounts", &raw.reference.accounts);
    let reps = p.topic("reference.reps", &raw.reference.reps);
    let outputs = Outputs {
        p0: p.topic("outputs.p0", &raw.outputs.p0),
        p1: p.topic("outputs.p1", &raw.outputs.p1),
        p2: p.topic("outputs.p2", &raw.outputs.p2),
        late: p.topic("outputs.late", &raw.outputs.late),
        dlq: p.topic("outputs.dlq", &raw.outputs.dlq),
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
    let dedup_retention = p.duration("state.dedup_retention", &raw.state.dedup_retention);
    let script_timeout = p.duration("limits.script_timeout", &raw.limits.script_timeout);
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
    ];
    for input in [&contacts, &engagements, &accounts, &reps] {
        if produced.contains(&input) {
            p.add("outputs", format!("{input} is both an input and an output"));
        }
    }
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
        accounts,
        reps,
        outputs,
        rules: PathBuf::from(raw.rules),
        sla,
        dedup_retention,
        limits: Limits {
            max_record_bytes,
            script_max_operations: raw.limits.script_max_operations,
            script_timeout,
            max_in_flight: raw.limits.max_in_flight,
        },
    })
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
        match humantime::parse_duration(value) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.add(field, "must be greater than zero".into());
                Duration::from_secs(1)
            }
            Err(e) => {
                self.add(
                    field,
                    format!("{value:?} is not a duration ({e}); write e.g. 5m, 30s, 7d"),
                );
                Duration::from_secs(1)
            }
        }
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
        assert_eq!(t.rules, PathBuf::from("rules/routing.rhai"));
    }

    #[test]
    fn reports_every_problem_with_its_place() {
        let text = SHIPPED
            .replace("p0: 1m", "p0: soon")
            .replace("dedup_retention: 7d", "dedup_retention: 0s")
            .replace("dlq: leads.dlq", "dlq: \"bad topic!\"")
            .replace("max_record_bytes: 1MiB", "max_record_bytes: lots");
        let err = parse("t.yaml", &text).unwrap_err();
        let all = err.to_string();
        assert_eq!(err.problems.len(), 4, "{all}");
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
