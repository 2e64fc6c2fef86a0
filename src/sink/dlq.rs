//! Dead-letter records (contracts §5): the original key and value bytes, and headers saying
//! why, where from, and with which leadflow and rules.

use super::OutputRecord;
use crate::source::record::InputRecord;

/// The DLQ error classes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DlqClass {
    BadMagic,
    UnknownSchemaId,
    AvroDecode,
    Oversize,
    MissingKey,
    /// `occurred_at` further ahead of the wall clock than `limits.max_clock_skew`.
    BadTimestamp,
    ScriptError,
    ScriptTimeout,
    InvalidDecision,
    /// An acknowledgement (`leads.acks`) that cannot be applied: an unknown action, no
    /// decision_id, or a key that is not its contact_id (leadflow's addition, contracts §10).
    InvalidAck,
}

impl DlqClass {
    /// Every class, in the contract's order.
    pub const ALL: [DlqClass; 10] = [
        DlqClass::BadMagic,
        DlqClass::UnknownSchemaId,
        DlqClass::AvroDecode,
        DlqClass::Oversize,
        DlqClass::MissingKey,
        DlqClass::BadTimestamp,
        DlqClass::ScriptError,
        DlqClass::ScriptTimeout,
        DlqClass::InvalidDecision,
        DlqClass::InvalidAck,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DlqClass::BadMagic => "bad_magic",
            DlqClass::UnknownSchemaId => "unknown_schema_id",
            DlqClass::AvroDecode => "avro_decode",
            DlqClass::Oversize => "oversize",
            DlqClass::MissingKey => "missing_key",
            DlqClass::BadTimestamp => "bad_timestamp",
            DlqClass::ScriptError => "script_error",
            DlqClass::ScriptTimeout => "script_timeout",
            DlqClass::InvalidDecision => "invalid_decision",
            DlqClass::InvalidAck => "invalid_ack",
        }
    }

    pub fn from_script_failure(failure: &crate::route::ScriptFailure) -> DlqClass {
        use crate::route::ScriptFailure::*;
        match failure {
            Error(_) => DlqClass::ScriptError,
            Timeout(_) => DlqClass::ScriptTimeout,
            InvalidDecision(_) => DlqClass::InvalidDecision,
        }
    }
}

/// A DLQ record. `message` must not carry field values (no PII); `rule_version` is set when a
/// script was involved.
pub fn dlq_record(
    dlq_topic: &str,
    source: &InputRecord,
    class: DlqClass,
    message: &str,
    rule_version: Option<&str>,
) -> OutputRecord {
    let mut headers = vec![
        ("error.class", class.as_str().as_bytes().to_vec()),
        ("error.message", sanitize(message).into_bytes()),
        ("source.topic", source.topic.as_bytes().to_vec()),
        (
            "source.partition",
            source.partition.to_string().into_bytes(),
        ),
        ("source.offset", source.offset.to_string().into_bytes()),
        (
            "source.timestamp",
            source.timestamp.unwrap_or(-1).to_string().into_bytes(),
        ),
        ("leadflow.version", crate::VERSION.as_bytes().to_vec()),
    ];
    if let Some(v) = rule_version {
        headers.push(("rule.version", v.as_bytes().to_vec()));
    }
    OutputRecord {
        kind: super::OutputKind::Dlq,
        topic: dlq_topic.to_string(),
        partition: None,
        key: source.key.map(<[u8]>::to_vec),
        value: source.value.map(<[u8]>::to_vec),
        headers,
    }
}

/// How much of a value too large to re-produce a DLQ record keeps: the framing and the start
/// of the datum. The source coordinates in its headers find the whole record.
pub const TRUNCATED_VALUE_BYTES: usize = 1024;

/// Cuts a DLQ record's value to [`TRUNCATED_VALUE_BYTES`], saying how large it was in the
/// `original.size` header (contracts §5).
pub fn truncate_value(record: &mut OutputRecord) {
    if let Some(value) = &mut record.value {
        if value.len() > TRUNCATED_VALUE_BYTES {
            let size = value.len();
            value.truncate(TRUNCATED_VALUE_BYTES);
            record.headers.retain(|(k, _)| *k != "original.size");
            record
                .headers
                .push(("original.size", size.to_string().into_bytes()));
        }
    }
}

/// Error text without anything quoted (decoders and scripts quote offending values, which
/// may be personal data), at most 300 characters.
fn sanitize(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(300));
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…");
            }
            quoted = !quoted;
            if !quoted {
                out.push('"');
            }
        } else if !quoted {
            out.push(c);
        }
        if out.len() >= 300 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_quoted_values() {
        assert_eq!(
            sanitize(r#"expected int, got String("ada@acme.com") in "email""#),
            r#"expected int, got String("…") in "…""#
        );
        assert!(sanitize(&"x".repeat(1000)).len() <= 300);
    }

    #[test]
    fn truncation_keeps_the_start_and_says_the_original_size() {
        let value = vec![7u8; 5000];
        let source = InputRecord {
            topic: "t",
            partition: 0,
            offset: 1,
            timestamp: None,
            key: Some(b"k"),
            value: Some(&value),
        };
        let mut r = dlq_record("dlq", &source, DlqClass::Oversize, "big", None);
        truncate_value(&mut r);
        truncate_value(&mut r);
        assert_eq!(r.value.as_ref().unwrap().len(), TRUNCATED_VALUE_BYTES);
        let sizes: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| *k == "original.size")
            .collect();
        assert_eq!(sizes.len(), 1);
        assert_eq!(sizes[0].1, b"5000");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
    }

    #[test]
    fn headers_name_the_source_and_keep_original_bytes() {
        let source = InputRecord {
            topic: "crm.contacts.v1",
            partition: 3,
            offset: 42,
            timestamp: Some(7),
            key: None,
            value: Some(b"garbage"),
        };
        let r = dlq_record("leads.dlq", &source, DlqClass::BadMagic, "bad", None);
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"garbage"[..]));
        let h: std::collections::HashMap<_, _> = r.headers.into_iter().collect();
        assert_eq!(h["error.class"], b"bad_magic");
        assert_eq!(h["source.partition"], b"3");
        assert_eq!(h["source.offset"], b"42");
        assert!(!h.contains_key("rule.version"));
    }
}
