//! librdkafka properties from the user: `--kafka key=value` flags and `--kafka-config FILE`,
//! checked against the properties leadflow owns, and the values that must never be printed.

use std::path::Path;

/// A property the user passed, and where it came from (for error messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
    /// `--kafka`, or `FILE:LINE`.
    pub origin: String,
}

/// Properties that carry leadflow's guarantees, and what to use instead. Setting them would
/// break at-least-once (offsets stored or committed before outputs are delivered), the
/// co-partitioned assignment of tasks, or the idempotent producer.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "group.id",
        "the consumer group is the topology's `application_id` (or --application-id)",
    ),
    (
        "enable.auto.offset.store",
        "leadflow stores an offset only after every output of its record is delivered",
    ),
    (
        "enable.auto.commit",
        "leadflow commits stored offsets itself; only completed records are committed",
    ),
    (
        "auto.commit.enable",
        "leadflow commits stored offsets itself; only completed records are committed",
    ),
    (
        "enable.idempotence",
        "leadflow's producers are always idempotent (`processing.guarantee` in the topology)",
    ),
    (
        "acks",
        "leadflow's producers always wait for all in-sync replicas (acks=all)",
    ),
    (
        "request.required.acks",
        "leadflow's producers always wait for all in-sync replicas (acks=all)",
    ),
    (
        "enable.gapless.guarantee",
        "leadflow's producers are idempotent; delivery failures are handled by leadflow",
    ),
    (
        "delivery.report.only.error",
        "leadflow completes a record when its outputs' delivery reports arrive",
    ),
    (
        "isolation.level",
        "leadflow reads committed records only (`processing.guarantee` in the topology)",
    ),
    (
        "partition.assignment.strategy",
        "leadflow needs both input partitions of a task on one instance; it assigns with range",
    ),
    (
        "group.protocol",
        "leadflow needs both input partitions of a task on one instance (classic protocol)",
    ),
    (
        "group.remote.assignor",
        "leadflow needs both input partitions of a task on one instance (classic protocol)",
    ),
    (
        "transactional.id",
        "transactions are set by `processing.guarantee: exactly_once` in the topology",
    ),
];

/// Property names whose values are secrets: never logged, printed or put in a metric.
const SECRET_KEYS: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.config",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.keystore.password",
    "ssl.truststore.password",
];

/// Whether `key` names a secret (also any `*password*` or `*secret*` property).
pub fn is_secret(key: &str) -> bool {
    SECRET_KEYS.contains(&key) || key.contains("password") || key.contains("secret")
}

/// What is wrong with the user's properties; `Display` names where, and what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    #[error("{0}: cannot read the Kafka properties file: {1}")]
    Read(String, std::io::Error),
    #[error("{origin}: {line:?} is not key=value; write one property a line, e.g. security.protocol=SASL_SSL (# starts a comment)")]
    Syntax { origin: String, line: String },
    #[error("{origin}: `{key}` cannot be set: {instead}")]
    Refused {
        origin: String,
        key: String,
        instead: &'static str,
    },
}

/// Parses one `--kafka key=value` argument.
pub fn parse_override(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        // Never echo the argument: it may be `sasl.password` with a typo.
        _ => Err(
            "expected key=value, e.g. --kafka security.protocol=SASL_SSL (the value is not shown)"
                .to_string(),
        ),
    }
}

/// Reads a properties file: one `key=value` a line, `#` or `!` comments, blank lines ignored.
/// (Java's `.properties` escapes and line continuations are not supported.)
pub fn read_file(path: &Path) -> Result<Vec<Property>, PropertiesError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PropertiesError::Read(name.clone(), e))?;
    parse_file(&name, &text)
}

/// [`read_file`] on text already read from `name`.
pub fn parse_file(name: &str, text: &str) -> Result<Vec<Property>, PropertiesError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let origin = format!("{name}:{}", i + 1);
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => out.push(Property {
                key: k.trim().to_string(),
                value: v.trim().to_string(),
                origin,
            }),
            _ => {
                return Err(PropertiesError::Syntax {
                    origin,
                    // The key part only: a malformed line may hold a secret.
                    line: line.chars().take_while(|c| *c != ' ').take(40).collect(),
                });
            }
        }
    }
    Ok(out)
}

/// The file's properties then the flags (flags win), with every refused property reported.
pub fn combine(
    file: Vec<Property>,
    flags: &[(String, String)],
) -> Result<Vec<(String, String)>, PropertiesError> {
    let flags = flags.iter().map(|(k, v)| Property {
        key: k.clone(),
        value: v.clone(),
        origin: "--kafka".to_string(),
    });
    let mut out = Vec::new();
    for p in file.into_iter().chain(flags) {
        if let Some((_, instead)) = REFUSED.iter().find(|(k, _)| *k == p.key) {
            return Err(PropertiesError::Refused {
                origin: p.origin,
                key: p.key,
                instead,
            });
        }
        out.push((p.key, p.value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_have_comments_and_blank_lines_and_say_where_a_line_is_wrong() {
        let text =
            "# client\nsecurity.protocol=SASL_SSL\n\n! also a comment\n sasl.password = a=b \n";
        let props = parse_file("k.properties", text).unwrap();
        assert_eq!(props.len(), 2);
        assert_eq!(props[1].key, "sasl.password");
        assert_eq!(props[1].value, "a=b");
        assert_eq!(props[1].origin, "k.properties:5");

        let err = parse_file("k.properties", "a=1\nsasl.password hunter2\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("k.properties:2: "), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn guarantees_are_refused_with_the_setting_to_use_instead() {
        let file = parse_file("k.properties", "linger.ms=5\nenable.auto.commit=true\n").unwrap();
        let err = combine(file, &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("k.properties:2: `enable.auto.commit` cannot be set"),
            "{err}"
        );
        let err = combine(vec![], &[("group.id".into(), "x".into())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--kafka: `group.id` cannot be set"), "{err}");
        assert!(err.contains("application_id"), "{err}");
        for (key, _) in REFUSED {
            assert!(combine(vec![], &[(key.to_string(), "1".into())]).is_err());
        }
    }

    #[test]
    fn flags_come_after_the_file_so_they_win() {
        let file = parse_file("k", "linger.ms=5\n").unwrap();
        let all = combine(file, &[("linger.ms".into(), "20".into())]).unwrap();
        assert_eq!(
            all,
            vec![
                ("linger.ms".to_string(), "5".to_string()),
                ("linger.ms".to_string(), "20".to_string())
            ]
        );
    }

    #[test]
    fn secrets_are_recognized_and_bad_flags_are_not_echoed() {
        assert!(is_secret("sasl.password"));
        assert!(is_secret("ssl.keystore.password"));
        assert!(is_secret("sasl.oauthbearer.client.secret"));
        assert!(!is_secret("sasl.username"));
        let err = parse_override("sasl.passwordhunter2").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
