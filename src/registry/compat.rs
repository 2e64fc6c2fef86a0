//! Schema compatibility levels and checks, decided by apache-avro's schema resolution.

use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

/// Confluent compatibility levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).ok()
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::None => "NONE",
            Level::Backward => "BACKWARD",
            Level::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Level::Forward => "FORWARD",
            Level::ForwardTransitive => "FORWARD_TRANSITIVE",
            Level::Full => "FULL",
            Level::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    /// New readers must read old data.
    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    /// Old readers must read new data.
    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

/// Checks `candidate` against the existing versions (oldest first) under `level`. Returns
/// the reasons it is incompatible; empty means compatible. Non-transitive levels compare
/// with the latest version only.
pub fn check(level: Level, candidate: &Schema, existing: &[Schema]) -> Vec<String> {
    let against: &[Schema] = if level.transitive() {
        existing
    } else {
        existing.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    let mut problems = Vec::new();
    for old in against {
        if level.backward() {
            if let Some(p) = can_read(old, candidate) {
                problems.push(format!(
                    "new schema cannot read data written with an old one: {p}"
                ));
            }
        }
        if level.forward() {
            if let Some(p) = can_read(candidate, old) {
                problems.push(format!(
                    "old schema cannot read data written with the new one: {p}"
                ));
            }
        }
    }
    problems
}

/// `None` when `reader` can read everything `writer` writes; otherwise why not.
fn can_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => {
            Some("some values (enum symbols or union branches) cannot be resolved".to_string())
        }
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn backward_allows_new_field_with_default_only() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let with_default =
            schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int","default":0}"#);
        let without_default = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
        assert!(check(Level::Backward, &with_default, std::slice::from_ref(&v1)).is_empty());
        assert!(!check(Level::Backward, &without_default, std::slice::from_ref(&v1)).is_empty());
        assert!(check(Level::None, &without_default, &[v1]).is_empty());
    }

    #[test]
    fn forward_rejects_removing_a_field_without_default() {
        let v1 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"}"#);
        assert!(check(Level::Backward, &v2, std::slice::from_ref(&v1)).is_empty());
        assert!(!check(Level::Forward, &v2, std::slice::from_ref(&v1)).is_empty());
        assert!(!check(Level::Full, &v2, &[v1]).is_empty());
    }

    #[test]
    fn transitive_checks_every_version() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int","default":0}"#);
        // v3 drops the default of b: readable from v2 data, not from v1 data.
        let v3 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
        let history = [v1, v2];
        assert!(check(Level::Backward, &v3, &history).is_empty());
        assert!(!check(Level::BackwardTransitive, &v3, &history).is_empty());
    }

    #[test]
    fn level_names_round_trip() {
        for level in [Level::None, Level::Backward, Level::FullTransitive] {
            assert_eq!(Level::parse(level.name()), Some(level));
        }
        assert_eq!(Level::parse("backward"), Some(Level::Backward));
        assert_eq!(Level::parse("SIDEWAYS"), None);
    }
}
