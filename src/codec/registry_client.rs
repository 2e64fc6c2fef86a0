//! A small Confluent Schema Registry client: register schemas, fetch writer schemas by id.
//!
//! Errors are classified the way the pipeline needs them: an unreachable registry, a timeout
//! or any 5xx is *unavailable*; 401, 403, a 404 without error code 40403 and any other
//! refusal of a lookup is a *configuration fault* (expired credentials, a proxy path, a wrong
//! URL). Both are waited out and retried, never blamed on a record. Only an unknown schema id
//! (40403) is the record's fault.
//!
//! Credentials come from `--schema-registry-basic-auth user:password` (Confluent's
//! `basic.auth.user.info`) or the URL's user info; either way the URL kept and printed has
//! none, and the password is registered for redaction.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use serde::Deserialize;

/// Confluent's error code for "schema not found" (the only lookup error that is the record's).
pub const SCHEMA_NOT_FOUND: i64 = 40403;

/// What went wrong talking to the registry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry {url} is unavailable ({reason}); retrying is safe")]
    Unavailable { url: String, reason: String },
    #[error("schema id {0} is not known to the schema registry")]
    UnknownId(u32),
    #[error(
        "schema registry {url} refused the request: HTTP {status}{}: {message}; {hint}",
        code.map(|c| format!(", error_code {c}")).unwrap_or_default()
    )]
    Refused {
        url: String,
        status: u16,
        code: Option<i64>,
        message: String,
        hint: &'static str,
    },
    #[error("schema registry rejected the schema: HTTP {status}, error_code {code}: {message}")]
    Rejected {
        status: u16,
        code: i64,
        message: String,
    },
    #[error("schema id {id} from the registry is not valid Avro: {reason}")]
    InvalidSchema { id: u32, reason: String },
    #[error("cannot set up the schema registry client: {0}")]
    Setup(String),
}

impl RegistryError {
    /// The registry cannot be reached: retry, never a reason to dead-letter a record.
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }

    /// The registry refuses us (credentials, permissions, path): a configuration fault, waited
    /// out like an outage (someone fixes it) and never a reason to dead-letter a record.
    pub fn is_config_fault(&self) -> bool {
        matches!(self, RegistryError::Refused { .. })
    }

    /// Wait and retry: an outage or a configuration fault.
    pub fn should_wait(&self) -> bool {
        self.is_transient() || self.is_config_fault()
    }

    /// A metric label for faults worth waiting on.
    pub fn fault_kind(&self) -> &'static str {
        match self {
            RegistryError::Unavailable { .. } => "unavailable",
            RegistryError::Refused { status: 401, .. } => "unauthorized",
            RegistryError::Refused { status: 403, .. } => "forbidden",
            RegistryError::Refused { status: 404, .. } => "not_found",
            RegistryError::Refused { .. } => "refused",
            _ => "other",
        }
    }
}

/// How to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Base URL, e.g. `https://registry:8081` or `http://apicurio:8080/apis/ccompat/v7`.
    pub url: String,
    /// `user:password` for HTTP basic auth.
    pub basic_auth: Option<String>,
    /// PEM file with the CA certificate(s) to trust for an `https` registry.
    pub ca_file: Option<PathBuf>,
}

impl RegistryConfig {
    pub fn new(url: &str) -> Self {
        RegistryConfig {
            url: url.to_string(),
            ..RegistryConfig::default()
        }
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
    /// The base URL without credentials: safe to print.
    base: String,
    /// (user, password) for basic auth.
    auth: Option<(String, String)>,
    http: reqwest::Client,
    by_id: Arc<Mutex<HashMap<u32, Arc<Schema>>>>,
}

impl RegistryClient {
    /// A client for `url`, no credentials beyond those in the URL.
    pub fn new(url: &str) -> Result<Self, RegistryError> {
        Self::with_config(&RegistryConfig::new(url))
    }

    pub fn with_config(config: &RegistryConfig) -> Result<Self, RegistryError> {
        let mut url = reqwest::Url::parse(config.url.trim()).map_err(|e| {
            RegistryError::Setup(format!(
                "--schema-registry-url is not a URL ({e}); write e.g. http://localhost:8081"
            ))
        })?;
        let mut auth = None;
        if !url.username().is_empty() {
            let decode = |s: &str| {
                percent_decode(s).ok_or_else(|| {
                    RegistryError::Setup("the URL's user info is not valid UTF-8".into())
                })
            };
            auth = Some((
                decode(url.username())?,
                decode(url.password().unwrap_or_default())?,
            ));
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        if let Some(info) = &config.basic_auth {
            let (user, password) = info.split_once(':').ok_or_else(|| {
                RegistryError::Setup(
                    "--schema-registry-basic-auth must be user:password (the value is not shown)"
                        .into(),
                )
            })?;
            auth = Some((user.to_string(), password.to_string()));
        }
        if let Some((_, password)) = &auth {
            crate::redact::register(password);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                RegistryError::Setup(format!(
                    "cannot read the registry CA file {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                RegistryError::Setup(format!("{} holds no PEM certificate ({e})", path.display()))
            })?;
            if certs.is_empty() {
                return Err(RegistryError::Setup(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| RegistryError::Setup(e.to_string()))?;
        Ok(RegistryClient {
            base: url.as_str().trim_end_matches('/').to_string(),
            auth,
            http,
            by_id: Arc::default(),
        })
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.get(url))
    }

    fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorized(self.http.post(url))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Registers an Avro schema under `subject` (or finds it there) and returns its id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{}/versions", self.base, encode_path(subject));
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let response = self
            .post(&url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let response = match self.check(response).await {
            // Incompatible with the subject's schemas, or not a valid schema: nothing a retry
            // fixes.
            Err(RegistryError::Refused {
                status: status @ (409 | 422),
                code,
                message,
                ..
            }) => {
                return Err(RegistryError::Rejected {
                    status,
                    code: code.unwrap_or(i64::from(status)),
                    message,
                })
            }
            other => other?,
        };
        let body: IdBody = response.json().await.map_err(|e| self.unavailable(e))?;
        Ok(body.id)
    }

    /// The registry's subjects (`GET /subjects`): whether it answers, and accepts us.
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let url = format!("{}/subjects", self.base);
        let response = self
            .get(&url)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let response = self.check(response).await?;
        response.json().await.map_err(|e| self.unavailable(e))
    }

    /// The writer schema with this id, from the cache or the registry.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(schema) = self.cached(id) {
            return Ok(schema);
        }
        let url = format!("{}/schemas/ids/{id}", self.base);
        let response = self
            .get(&url)
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let response = match self.check(response).await {
            Err(RegistryError::Refused {
                status: 404,
                code: Some(SCHEMA_NOT_FOUND),
                ..
            }) => return Err(RegistryError::UnknownId(id)),
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
            Ok(body) => (Some(body.error_code), body.message),
            // A proxy's or a server's own page: enough of it to recognize.
            Err(_) => (None, text.chars().take(120).collect::<String>()),
        };
        let hint = match status.as_u16() {
            401 => "check the credentials (--schema-registry-basic-auth or LEADFLOW_SCHEMA_REGISTRY_BASIC_AUTH)",
            403 => "the credentials lack permission to read schemas",
            404 => "check --schema-registry-url (a proxy path, or Apicurio's /apis/ccompat/v7)",
            _ => "check the registry's configuration",
        };
        Err(RegistryError::Refused {
            url: self.base.clone(),
            status: status.as_u16(),
            code,
            message: message.trim().to_string(),
            hint,
        })
    }

    fn unavailable(&self, e: reqwest::Error) -> RegistryError {
        // Without the URL: reqwest's text repeats it, and `base` is printed already.
        RegistryError::Unavailable {
            url: self.base.clone(),
            reason: error_chain(&e.without_url()),
        }
    }
}

/// An error and its sources, one after the other ("connection refused" hides in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Percent-decoding of a URL's user info.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Runs `op` until it succeeds, fails for a reason waiting cannot fix, or `deadline` passes
/// (then the last error is returned). Waits with [`crate::retry::backoff`].
pub async fn retry_transient<T, F, Fut>(deadline: Instant, mut op: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
{
    let mut delays = crate::retry::backoff();
    loop {
        match op().await {
            Err(e) if e.should_wait() => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                if Instant::now() + delay >= deadline {
                    return Err(e);
                }
                tracing::warn!(error = %e, retry_in = ?delay, "schema registry call failed");
                tokio::time::sleep(delay).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_are_redacted() {
        let client =
            RegistryClient::new("https://svc-user:p%40ss-in-url@registry.example:8081/").unwrap();
        assert_eq!(client.url(), "https://registry.example:8081");
        assert_eq!(
            client.auth,
            Some(("svc-user".to_string(), "p@ss-in-url".to_string()))
        );
        assert_eq!(crate::redact::redact("x p@ss-in-url"), "x ***");

        let config = RegistryConfig {
            basic_auth: Some("api-key:api:secret".into()),
            ..RegistryConfig::new("http://localhost:8081")
        };
        let client = RegistryClient::with_config(&config).unwrap();
        assert_eq!(
            client.auth,
            Some(("api-key".to_string(), "api:secret".to_string()))
        );
        let bad = RegistryConfig {
            basic_auth: Some("no-colon-secret".into()),
            ..RegistryConfig::new("http://localhost:8081")
        };
        let err = RegistryClient::with_config(&bad).err().unwrap().to_string();
        assert!(!err.contains("no-colon-secret"), "{err}");
        assert!(RegistryClient::new("not a url").is_err());
    }

    #[test]
    fn a_ca_file_is_read_and_a_bad_one_is_named() {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "registry CA").unwrap();
        let name = name.build();
        let mut cert = x509::X509::builder().unwrap();
        cert.set_subject_name(&name).unwrap();
        cert.set_issuer_name(&name).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, cert.build().to_pem().unwrap()).unwrap();
        let config = RegistryConfig {
            ca_file: Some(good),
            ..RegistryConfig::new("https://registry.example:8081")
        };
        assert!(RegistryClient::with_config(&config).is_ok());
        let bad = dir.path().join("not-a-cert.pem");
        std::fs::write(&bad, "hello").unwrap();
        let config = RegistryConfig {
            ca_file: Some(bad.clone()),
            ..RegistryConfig::new("https://registry.example:8081")
        };
        let err = RegistryClient::with_config(&config)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(&bad.display().to_string()), "{err}");
    }

    #[test]
    fn faults_are_classified_for_waiting() {
        let refused = |status| RegistryError::Refused {
            url: "u".into(),
            status,
            code: None,
            message: String::new(),
            hint: "",
        };
        for (status, kind) in [
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "not_found"),
            (400, "refused"),
        ] {
            let e = refused(status);
            assert!(e.should_wait() && e.is_config_fault() && !e.is_transient());
            assert_eq!(e.fault_kind(), kind);
        }
        assert!(!RegistryError::UnknownId(7).should_wait());
        assert!(RegistryError::Unavailable {
            url: "u".into(),
            reason: "r".into()
        }
        .should_wait());
    }
}
