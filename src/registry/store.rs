//! Registry state: schemas by id, subjects with their versions, compatibility config.
//!
//! Identity of a schema is its normalized JSON (object keys sorted, whitespace dropped), so
//! the same schema gets the same id under every subject, and registering it again is a no-op.
//! With a data directory every change is written to `registry.json` atomically (temp file,
//! fsync, rename) before the client gets its answer.

use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use super::compat::{self, Level};
use super::error::ApiError;

const FILE_NAME: &str = "registry.json";

/// The registry could not load its data directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a registry data file: {source}. Move it away or point --data-dir elsewhere"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct SubjectState {
    /// Schema id of each version; version N is `versions[N - 1]`.
    versions: Vec<u32>,
    compatibility: Option<Level>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    /// Schema of id N is `schemas[N - 1]` (normalized JSON).
    schemas: Vec<String>,
    subjects: BTreeMap<String, SubjectState>,
    global: Level,
}

struct Inner {
    state: State,
    by_schema: HashMap<String, u32>,
}

/// A version reference in a URL: a number or `latest` (also `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(u32),
}

impl VersionSpec {
    pub fn parse(s: &str) -> Result<VersionSpec, ApiError> {
        match s {
            "latest" | "-1" => Ok(VersionSpec::Latest),
            _ => match s.parse::<u32>() {
                Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionSpec::Number(n)),
                _ => Err(ApiError::invalid_version(s)),
            },
        }
    }
}

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// The registry's state, safe to share between request handlers.
pub struct Store {
    inner: Mutex<Inner>,
    data_dir: Option<PathBuf>,
}

impl Store {
    pub fn in_memory() -> Store {
        Store::from_state(State::default(), None)
    }

    /// Opens (or starts) a registry persisted under `dir`.
    pub fn open(dir: PathBuf) -> Result<Store, StoreError> {
        let path = dir.join(FILE_NAME);
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StoreError::Corrupt { path, source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Ok(Store::from_state(state, Some(dir)))
    }

    fn from_state(state: State, data_dir: Option<PathBuf>) -> Store {
        let by_schema = state
            .schemas
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32 + 1))
            .collect();
        Store {
            inner: Mutex::new(Inner { state, by_schema }),
            data_dir,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Handlers never panic while holding the lock, but a poisoned lock must not take the
        // whole registry down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `schema` under `subject` and returns its id (the existing one if the schema
    /// is already known). Checks compatibility with the subject's earlier versions.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, ApiError> {
        let (normalized, parsed) = parse_schema(schema)?;
        let mut inner = self.lock();
        let existing_id = inner.by_schema.get(&normalized).copied();
        let subject_state = inner
            .state
            .subjects
            .get(subject)
            .cloned()
            .unwrap_or_default();
        if let Some(id) = existing_id {
            if subject_state.versions.contains(&id) {
                return Ok(id);
            }
        }
        let level = subject_state.compatibility.unwrap_or(inner.state.global);
        if level != Level::None && !subject_state.versions.is_empty() {
            let history = subject_state
                .versions
                .iter()
                .map(|id| parse_stored(&inner.state, *id))
                .collect::<Result<Vec<_>, _>>()?;
            let problems = compat::check(level, &parsed, &history);
            if !problems.is_empty() {
                return Err(ApiError::incompatible(subject, &problems));
            }
        }
        let mut next = inner.state.clone();
        let id = match existing_id {
            Some(id) => id,
            None => {
                next.schemas.push(normalized.clone());
                next.schemas.len() as u32
            }
        };
        next.subjects
            .entry(subject.to_string())
            .or_default()
            .versions
            .push(id);
        self.persist(&next)?;
        inner.state = next;
        inner.by_schema.insert(normalized, id);
        Ok(id)
    }

    /// The version of `subject` that holds `schema`.
    pub fn lookup(&self, subject: &str, schema: &str) -> Result<SubjectVersion, ApiError> {
        let (normalized, _) = parse_schema(schema)?;
        let inner = self.lock();
        let subject_state = inner
            .state
            .subjects
            .get(subject)
            .ok_or_else(|| ApiError::subject_not_found(subject))?;
        let id = inner
            .by_schema
            .get(&normalized)
            .copied()
            .ok_or_else(|| ApiError::schema_not_found("not registered under this subject"))?;
        let index = subject_state
            .versions
            .iter()
            .position(|v| *v == id)
            .ok_or_else(|| ApiError::schema_not_found("not registered under this subject"))?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: index as u32 + 1,
            id,
            schema: normalized,
        })
    }

    pub fn schema_by_id(&self, id: u32) -> Result<String, ApiError> {
        let inner = self.lock();
        id.checked_sub(1)
            .and_then(|i| inner.state.schemas.get(i as usize))
            .cloned()
            .ok_or_else(|| ApiError::schema_not_found(format!("schema {id} not found")))
    }

    /// Subjects (and versions) that hold the schema with this id.
    pub fn subject_versions_of(&self, id: u32) -> Result<Vec<(String, u32)>, ApiError> {
        self.schema_by_id(id)?;
        let inner = self.lock();
        Ok(inner
            .state
            .subjects
            .iter()
            .flat_map(|(subject, s)| {
                s.versions
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v == id)
                    .map(|(i, _)| (subject.clone(), i as u32 + 1))
            })
            .collect())
    }

    pub fn subjects(&self) -> Vec<String> {
        self.lock().state.subjects.keys().cloned().collect()
    }

    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, ApiError> {
        let inner = self.lock();
        let s = inner
            .state
            .subjects
            .get(subject)
            .ok_or_else(|| ApiError::subject_not_found(subject))?;
        Ok((1..=s.versions.len() as u32).collect())
    }

    pub fn version(&self, subject: &str, spec: VersionSpec) -> Result<SubjectVersion, ApiError> {
        let inner = self.lock();
        let (version, id) = resolve_version(&inner.state, subject, spec)?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version,
            id,
            schema: inner.state.schemas[id as usize - 1].clone(),
        })
    }

    /// Whether `schema` could be registered: against one version, or (with `None`) against
    /// the versions the subject's level names. Returns the reasons it is not compatible.
    pub fn check_compatibility(
        &self,
        subject: &str,
        spec: Option<VersionSpec>,
        schema: &str,
    ) -> Result<Vec<String>, ApiError> {
        let (_, parsed) = parse_schema(schema)?;
        let inner = self.lock();
        let s = inner
            .state
            .subjects
            .get(subject)
            .ok_or_else(|| ApiError::subject_not_found(subject))?;
        let level = s.compatibility.unwrap_or(inner.state.global);
        let ids = match spec {
            None => s.versions.clone(),
            Some(spec) => vec![resolve_version(&inner.state, subject, spec)?.1],
        };
        let against = ids
            .iter()
            .map(|id| parse_stored(&inner.state, *id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(compat::check(level, &parsed, &against))
    }

    pub fn global_level(&self) -> Level {
        self.lock().state.global
    }

    pub fn set_global_level(&self, level: Level) -> Result<(), ApiError> {
        let mut inner = self.lock();
        let mut next = inner.state.clone();
        next.global = level;
        self.persist(&next)?;
        inner.state = next;
        Ok(())
    }

    /// The subject's own level, if it has one.
    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.lock()
            .state
            .subjects
            .get(subject)
            .and_then(|s| s.compatibility)
    }

    pub fn set_subject_level(&self, subject: &str, level: Level) -> Result<(), ApiError> {
        let mut inner = self.lock();
        let mut next = inner.state.clone();
        next.subjects
            .entry(subject.to_string())
            .or_default()
            .compatibility = Some(level);
        self.persist(&next)?;
        inner.state = next;
        Ok(())
    }

    /// Writes `state` to the data directory, if there is one, atomically.
    fn persist(&self, state: &State) -> Result<(), ApiError> {
        let Some(dir) = &self.data_dir else {
            return Ok(());
        };
        write_atomically(dir, state).map_err(ApiError::storage)
    }
}

fn write_atomically(dir: &Path, state: &State) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(FILE_NAME))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The version number and schema id `spec` names under `subject`.
fn resolve_version(
    state: &State,
    subject: &str,
    spec: VersionSpec,
) -> Result<(u32, u32), ApiError> {
    let s = state
        .subjects
        .get(subject)
        .ok_or_else(|| ApiError::subject_not_found(subject))?;
    let version = match spec {
        VersionSpec::Latest => s.versions.len() as u32,
        VersionSpec::Number(n) => n,
    };
    version
        .checked_sub(1)
        .and_then(|i| s.versions.get(i as usize))
        .map(|id| (version, *id))
        .ok_or_else(|| ApiError::version_not_found(subject, &version.to_string()))
}

fn parse_stored(state: &State, id: u32) -> Result<Schema, ApiError> {
    let text = &state.schemas[id as usize - 1];
    parse_schema(text).map(|(_, schema)| schema)
}

/// Validates an Avro schema and returns its normalized text with the parsed schema.
fn parse_schema(text: &str) -> Result<(String, Schema), ApiError> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid_schema(format!("not JSON: {e}")))?;
    let normalized = sort_keys(json);
    // apache-avro is not expected to panic, but a development server must survive any input.
    let parsed = catch_unwind(AssertUnwindSafe(|| Schema::parse(&normalized)))
        .map_err(|_| ApiError::invalid_schema("the Avro parser rejected it"))?
        .map_err(ApiError::invalid_schema)?;
    Ok((normalized.to_string(), parsed))
}

fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            Value::Object(sorted.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
    const V1_REORDERED: &str =
        r#"{ "name": "R", "fields": [ {"type": "string", "name": "a"} ], "type": "record" }"#;
    const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"int","default":0}]}"#;

    #[test]
    fn same_schema_same_id_across_subjects_and_reregistration() {
        let store = Store::in_memory();
        let id = store.register("a-value", V1).unwrap();
        assert_eq!(store.register("a-value", V1_REORDERED).unwrap(), id);
        assert_eq!(store.register("b-value", V1).unwrap(), id);
        assert_eq!(store.versions("a-value").unwrap(), vec![1]);
        let v2 = store.register("a-value", V2).unwrap();
        assert_ne!(v2, id);
        assert_eq!(store.versions("a-value").unwrap(), vec![1, 2]);
        assert_eq!(store.lookup("a-value", V2).unwrap().version, 2);
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = Store::open(dir.path().to_path_buf()).unwrap();
            store.set_global_level(Level::Full).unwrap();
            store.register("a-value", V1).unwrap()
        };
        let store = Store::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(store.register("a-value", V1).unwrap(), id);
        assert_eq!(store.global_level(), Level::Full);
        assert_eq!(store.register("c-value", V2).unwrap(), id + 1);
    }

    #[test]
    fn corrupt_data_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let err = Store::open(dir.path().to_path_buf()).err().unwrap();
        assert!(err.to_string().contains("registry.json"), "{err}");
    }
}
