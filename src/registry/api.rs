//! HTTP routes of the Confluent REST subset, with Confluent's JSON bodies and error codes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use super::compat::Level;
use super::error::ApiError;
use super::store::{Store, SubjectVersion, VersionSpec};

type Shared = State<Arc<Store>>;

type ApiResult = Result<Response, ApiError>;

/// The registry's routes over a shared store.
pub fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/schemas/types", get(|| async { ok(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route("/subjects/{subject}/versions/{version}", get(version))
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_one),
        )
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config).put(set_subject_config),
        )
        .fallback(|| async { ApiError::not_found_route() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(axum::middleware::map_response(confluent_errors))
        .with_state(store)
}

/// Gives every error response a Confluent body, including the ones axum's extractors
/// produce on their own (undecodable paths or queries, oversized bodies).
async fn confluent_errors(response: Response) -> Response {
    let status = response.status();
    let ours = response.headers().get(header::CONTENT_TYPE)
        == Some(&HeaderValue::from_static(
            "application/vnd.schemaregistry.v1+json",
        ));
    if ours || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    ApiError {
        status,
        code: u32::from(status.as_u16()),
        message: String::from_utf8_lossy(&body).into_owned(),
    }
    .into_response()
}

/// Confluent answers with its own media type.
pub(super) fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.schemaregistry.v1+json"),
    );
    headers
}

fn ok(body: Value) -> Response {
    (json_headers(), body.to_string()).into_response()
}

/// The body of the schema-carrying requests; unknown fields (metadata, ruleSet) are ignored.
#[derive(Deserialize)]
struct SchemaRequest {
    schema: Option<String>,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// Parses a schema request body and returns the Avro schema text it carries.
fn schema_text(body: &Bytes) -> Result<String, ApiError> {
    let request: SchemaRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Unrecognized request body: {e}")))?;
    if let Some(kind) = request
        .schema_type
        .filter(|t| !t.eq_ignore_ascii_case("AVRO"))
    {
        return Err(ApiError::invalid_schema(format!(
            "schemaType {kind} is not supported by the development registry (AVRO only)"
        )));
    }
    if !request.references.is_empty() {
        return Err(ApiError::invalid_schema(
            "schema references are not supported by the development registry",
        ));
    }
    match request.schema {
        Some(schema) if !schema.trim().is_empty() => Ok(schema),
        _ => Err(ApiError::invalid_schema("Empty schema")),
    }
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse()
        .map_err(|_| ApiError::schema_not_found(format!("schema {id} not found")))
}

fn version_body(v: SubjectVersion) -> Response {
    ok(json!({ "subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema }))
}

async fn schema_by_id(State(store): Shared, Path(id): Path<String>) -> ApiResult {
    let schema = store.schema_by_id(parse_id(&id)?)?;
    Ok(ok(json!({ "schema": schema })))
}

async fn raw_schema_by_id(State(store): Shared, Path(id): Path<String>) -> ApiResult {
    Ok((json_headers(), store.schema_by_id(parse_id(&id)?)?).into_response())
}

async fn subjects_of_id(State(store): Shared, Path(id): Path<String>) -> ApiResult {
    let pairs = store.subject_versions_of(parse_id(&id)?)?;
    let subjects: Vec<String> = pairs.into_iter().map(|(s, _)| s).collect();
    Ok(ok(json!(subjects)))
}

async fn versions_of_id(State(store): Shared, Path(id): Path<String>) -> ApiResult {
    let pairs = store.subject_versions_of(parse_id(&id)?)?;
    let body: Vec<Value> = pairs
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(ok(json!(body)))
}

async fn subjects(State(store): Shared) -> Response {
    ok(json!(store.subjects()))
}

async fn lookup(State(store): Shared, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let schema = schema_text(&body)?;
    Ok(version_body(store.lookup(&subject, &schema)?))
}

async fn versions(State(store): Shared, Path(subject): Path<String>) -> ApiResult {
    Ok(ok(json!(store.versions(&subject)?)))
}

async fn register(State(store): Shared, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let schema = schema_text(&body)?;
    let id = store.register(&subject, &schema)?;
    tracing::debug!(%subject, id, "schema registered");
    Ok(ok(json!({ "id": id })))
}

async fn version(State(store): Shared, Path((subject, v)): Path<(String, String)>) -> ApiResult {
    Ok(version_body(
        store.version(&subject, VersionSpec::parse(&v)?)?,
    ))
}

async fn raw_version(
    State(store): Shared,
    Path((subject, v)): Path<(String, String)>,
) -> ApiResult {
    let found = store.version(&subject, VersionSpec::parse(&v)?)?;
    Ok((json_headers(), found.schema).into_response())
}

fn compatibility_body(problems: Vec<String>, query: &HashMap<String, String>) -> Response {
    let verbose = query.get("verbose").is_some_and(|v| v == "true");
    if verbose {
        ok(json!({ "is_compatible": problems.is_empty(), "messages": problems }))
    } else {
        ok(json!({ "is_compatible": problems.is_empty() }))
    }
}

async fn compatibility_all(
    State(store): Shared,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let schema = schema_text(&body)?;
    let problems = store.check_compatibility(&subject, None, &schema)?;
    Ok(compatibility_body(problems, &query))
}

async fn compatibility_one(
    State(store): Shared,
    Path((subject, v)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult {
    let spec = VersionSpec::parse(&v)?;
    let schema = schema_text(&body)?;
    let problems = store.check_compatibility(&subject, Some(spec), &schema)?;
    Ok(compatibility_body(problems, &query))
}

/// `{"compatibility": "FULL"}` from a PUT /config body.
fn level_from_body(body: &Bytes) -> Result<Level, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Unrecognized request body: {e}")))?;
    let given = value
        .get("compatibility")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Level::parse(given).ok_or_else(|| ApiError::invalid_compatibility_level(given))
}

async fn global_config(State(store): Shared) -> Response {
    ok(json!({ "compatibilityLevel": store.global_level().name() }))
}

async fn set_global_config(State(store): Shared, body: Bytes) -> ApiResult {
    let level = level_from_body(&body)?;
    store.set_global_level(level)?;
    Ok(ok(json!({ "compatibility": level.name() })))
}

async fn subject_config(
    State(store): Shared,
    Path(subject): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult {
    let level = match store.subject_level(&subject) {
        Some(level) => level,
        None if query.get("defaultToGlobal").is_some_and(|v| v == "true") => store.global_level(),
        None => return Err(ApiError::subject_level_config_not_found(&subject)),
    };
    Ok(ok(json!({ "compatibilityLevel": level.name() })))
}

async fn set_subject_config(
    State(store): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let level = level_from_body(&body)?;
    store.set_subject_level(&subject, level)?;
    Ok(ok(json!({ "compatibility": level.name() })))
}
