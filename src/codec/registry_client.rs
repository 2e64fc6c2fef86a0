//! A small Confluent Schema Registry client: register schemas, fetch writer schemas by id.
//!
//! Errors are classified the way the pipeline needs them: an unreachable registry, a timeout
//! or any 5xx is *transient* (wait and retry, never DLQ); an unknown id is the record's fault;
//! anything else the registry rejects is a configuration problem.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use serde::Deserialize;

/// What went wrong talking to the registry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {url} is unavailable ({reason}); retrying is safe")]
    Unavailable { url: String, reason: String },
    #[error("schema id {0} is not known to the schema registry")]
    UnknownId(u32),
    #[error("schema registry rejected the request: HTTP {status}, error_code {code}: {message}")]
    Rejected {
        status: u16,
        code: i64,
        message: String,
    },
    #[error("schema id {id} from the registry is not valid Avro: {reason}")]
    InvalidSchema { id: u32, reason: String },
}

impl RegistryError {
    /// Transient faults are retried; they never make a record a poison pill.
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: i64,
    message: String,
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

/// Client for one registry URL, with a cache of writer schemas by id (ids are immutable).
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    http: reqwest::Client,
    by_id: Arc<Mutex<HashMap<u32, Arc<Schema>>>>,
}

impl RegistryClient {
    pub fn new(url: &str) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| RegistryError::Unavailable {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(RegistryClient {
            base: url.trim_end_matches('/').to_string(),
            http,
            by_id: Arc::default(),
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Registers an Avro schema under `subject` (or finds it there) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{}/versions", self.base, encode_path(subject));
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let response = self
            .http
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let response = self.check(response).await?;
        let body: IdBody = response.json().await.map_err(|e| self.unavailable(e))?;
        Ok(body.id)
    }

    /// The writer schema with this id, from the cache or the registry.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(schema) = self.cached(id) {
            return Ok(schema);
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let response = match self.check(response).await {
            Err(RegistryError::Rejected { status: 404, .. }) => {
                return Err(RegistryError::UnknownId(id))
            }
            other => other?,
        };
        let body: SchemaBody = response.json().await.map_err(|e| self.unavailable(e))?;
        if let Some(kind) = body.schema_type.filter(|t| t != "AVRO") {
            return Err(RegistryError::InvalidSchema {
                id,
                reason: format!("schemaType is {kind}, not AVRO"),
            });
        }
        let schema = Schema::parse_str(&body.schema).map_err(|e| RegistryError::InvalidSchema {
            id,
            reason: e.to_string(),
        })?;
        let schema = Arc::new(schema);
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, schema.clone());
        Ok(schema)
    }

    /// The schema if it is cached; never touches the network.
    pub fn cached(&self, id: u32) -> Option<Arc<Schema>> {
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&id)
            .cloned()
    }

    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, RegistryError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Err(RegistryError::Unavailable {
                url: self.base.clone(),
                reason: format!("HTTP {status}"),
            });
        }
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error_code, body.message),
            Err(_) => (i64::from(status.as_u16()), text),
        };
        Err(RegistryError::Rejected {
            status: status.as_u16(),
            code,
            message,
        })
    }

    fn unavailable(&self, e: reqwest::Error) -> RegistryError {
        RegistryError::Unavailable {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }
}

/// Runs `op` until it succeeds, fails permanently, or `deadline` passes (then the last
/// transient error is returned). Backs off from 100 ms to 5 s.
pub async fn retry_transient<T, F, Fut>(deadline: Instant, mut op: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if e.is_transient() && Instant::now() + backoff < deadline => {
                tracing::warn!(error = %e, retry_in = ?backoff, "schema registry call failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Percent-encodes a subject for use as one URL path segment.
fn encode_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
