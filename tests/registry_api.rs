//! The development registry's REST API: Confluent status codes and bodies, ids, versions,
//! compatibility, config, persistence, and robustness against garbage input.

mod common;

use std::sync::Arc;
use std::time::Duration;

use leadflow::codec::SchemaKind;
use leadflow::registry::{router, Store};
use reqwest::StatusCode;
use serde_json::{json, Value};

const V1: &str =
    r#"{"type":"record","name":"Thing","namespace":"t","fields":[{"name":"a","type":"string"}]}"#;
const V2_COMPATIBLE: &str = r#"{"type":"record","name":"Thing","namespace":"t","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","int"],"default":null}]}"#;
const V2_INCOMPATIBLE: &str = r#"{"type":"record","name":"Thing","namespace":"t","fields":[{"name":"a","type":"string"},{"name":"c","type":"int"}]}"#;

/// Serves a fresh in-memory registry on a free port for the life of the test runtime.
async fn serve() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router(Arc::new(Store::in_memory())))
            .await
            .unwrap()
    });
    url
}

struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    async fn new() -> Api {
        Api {
            url: serve().await,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<String>) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn register(&self, subject: &str, schema: &str) -> (StatusCode, Value) {
        let body = json!({ "schema": schema }).to_string();
        self.call("POST", &format!("/subjects/{subject}/versions"), Some(body))
            .await
    }
}

fn assert_error(result: &(StatusCode, Value), status: u16, code: u64) {
    assert_eq!(result.0.as_u16(), status, "body: {}", result.1);
    assert_eq!(result.1["error_code"], json!(code), "body: {}", result.1);
    assert!(result.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn ids_are_global_and_registration_is_idempotent() {
    let api = Api::new().await;
    let (status, body) = api.register("a-value", V1).await;
    assert_eq!(status, StatusCode::OK);
    let id = body["id"].as_u64().unwrap();
    assert_eq!(api.register("a-value", V1).await.1["id"], json!(id));
    // Same schema, different subject, different whitespace: same id.
    let spaced = V1.replace(',', " ,\n ");
    assert_eq!(api.register("b-value", &spaced).await.1["id"], json!(id));
    let (_, v2) = api.register("a-value", V2_COMPATIBLE).await;
    assert_ne!(v2["id"], json!(id));

    assert_eq!(
        api.call("GET", "/subjects", None).await.1,
        json!(["a-value", "b-value"])
    );
    assert_eq!(
        api.call("GET", "/subjects/a-value/versions", None).await.1,
        json!([1, 2])
    );
    let (_, latest) = api
        .call("GET", "/subjects/a-value/versions/latest", None)
        .await;
    assert_eq!(latest["version"], json!(2));
    assert_eq!(latest["id"], v2["id"]);
    assert_eq!(latest["subject"], json!("a-value"));
    let (_, first) = api.call("GET", "/subjects/a-value/versions/1", None).await;
    assert_eq!(first["id"], json!(id));

    let (status, by_id) = api.call("GET", &format!("/schemas/ids/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let returned: Value = serde_json::from_str(by_id["schema"].as_str().unwrap()).unwrap();
    assert_eq!(returned, serde_json::from_str::<Value>(V1).unwrap());

    let lookup_body = json!({ "schema": V1 }).to_string();
    let (status, found) = api
        .call("POST", "/subjects/b-value", Some(lookup_body))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (found["id"].clone(), found["version"].clone()),
        (json!(id), json!(1))
    );
    let (_, subjects) = api
        .call("GET", &format!("/schemas/ids/{id}/subjects"), None)
        .await;
    assert_eq!(subjects, json!(["a-value", "b-value"]));
}

#[tokio::test]
async fn backward_compatibility_is_enforced_and_checkable() {
    let api = Api::new().await;
    api.register("c-value", V1).await;
    let rejected = api.register("c-value", V2_INCOMPATIBLE).await;
    assert_error(&rejected, 409, 409);
    assert_eq!(
        api.call("GET", "/subjects/c-value/versions", None).await.1,
        json!([1])
    );

    let check = |schema: &str| json!({ "schema": schema }).to_string();
    let path = "/compatibility/subjects/c-value/versions/latest?verbose=true";
    let (_, ok) = api.call("POST", path, Some(check(V2_COMPATIBLE))).await;
    assert_eq!(ok["is_compatible"], json!(true));
    let (_, bad) = api.call("POST", path, Some(check(V2_INCOMPATIBLE))).await;
    assert_eq!(bad["is_compatible"], json!(false));
    assert!(!bad["messages"].as_array().unwrap().is_empty());

    // NONE on the subject lets anything through; the global level is untouched.
    let none = json!({ "compatibility": "NONE" }).to_string();
    assert_eq!(
        api.call("PUT", "/config/c-value", Some(none)).await.1["compatibility"],
        json!("NONE")
    );
    assert_eq!(
        api.register("c-value", V2_INCOMPATIBLE).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", "/config", None).await.1["compatibilityLevel"],
        json!("BACKWARD")
    );
    assert_eq!(
        api.call("GET", "/config/c-value", None).await.1["compatibilityLevel"],
        json!("NONE")
    );
    assert_error(
        &api.call("GET", "/config/other-value", None).await,
        404,
        40408,
    );
    let (_, defaulted) = api
        .call("GET", "/config/other-value?defaultToGlobal=true", None)
        .await;
    assert_eq!(defaulted["compatibilityLevel"], json!("BACKWARD"));
    let full = json!({ "compatibility": "FULL" }).to_string();
    assert_eq!(
        api.call("PUT", "/config", Some(full)).await.1["compatibility"],
        json!("FULL")
    );
    let bogus = json!({ "compatibility": "SIDEWAYS" }).to_string();
    assert_error(&api.call("PUT", "/config", Some(bogus)).await, 422, 42203);
}

#[tokio::test]
async fn errors_use_confluent_codes() {
    let api = Api::new().await;
    api.register("d-value", V1).await;
    assert_error(
        &api.call("GET", "/subjects/nope/versions", None).await,
        404,
        40401,
    );
    assert_error(
        &api.call("GET", "/subjects/nope/versions/1", None).await,
        404,
        40401,
    );
    assert_error(
        &api.call("GET", "/subjects/d-value/versions/7", None).await,
        404,
        40402,
    );
    assert_error(
        &api.call("GET", "/subjects/d-value/versions/abc", None)
            .await,
        422,
        42202,
    );
    assert_error(
        &api.call("GET", "/subjects/d-value/versions/0", None).await,
        422,
        42202,
    );
    assert_error(&api.call("GET", "/schemas/ids/999", None).await, 404, 40403);
    assert_error(&api.call("GET", "/schemas/ids/x", None).await, 404, 40403);
    let lookup = json!({ "schema": V2_COMPATIBLE }).to_string();
    assert_error(
        &api.call("POST", "/subjects/d-value", Some(lookup.clone()))
            .await,
        404,
        40403,
    );
    assert_error(
        &api.call("POST", "/subjects/nope", Some(lookup)).await,
        404,
        40401,
    );

    for malformed in [
        "{\"type\":\"record\"",                               // not JSON
        "{\"type\":\"record\",\"name\":\"X\"}",               // record without fields
        "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[1]}", // bad symbols
        "\"no_such_type\"",
        "",
    ] {
        let result = api.register("e-value", malformed).await;
        assert_error(&result, 422, 42201);
    }
    let protobuf = json!({ "schema": "syntax = \"proto3\";", "schemaType": "PROTOBUF" });
    assert_error(
        &api.call(
            "POST",
            "/subjects/e-value/versions",
            Some(protobuf.to_string()),
        )
        .await,
        422,
        42201,
    );
    assert_error(
        &api.call("POST", "/subjects/e-value/versions", Some("garbage".into()))
            .await,
        400,
        400,
    );
    assert_error(&api.call("GET", "/no/such/route", None).await, 404, 404);
    assert_error(&api.call("DELETE", "/subjects", None).await, 405, 405);
    assert_error(
        &api.call("GET", "/subjects/e-value/versions", None).await,
        404,
        40401,
    );
}

#[tokio::test]
async fn schema_registry_converter_round_trips_a_contact_event() {
    use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
    use schema_registry_converter::async_impl::schema_registry::{
        get_schema_by_id, post_schema, SrSettings,
    };
    use schema_registry_converter::schema_registry_common::{
        SchemaType, SubjectNameStrategy, SuppliedSchema,
    };

    let api = Api::new().await;
    let settings = SrSettings::new(api.url.clone());
    let supplied = SuppliedSchema::new(
        Some("leadflow.v1.ContactEvent".into()),
        SchemaType::Avro,
        SchemaKind::ContactEvent.source().to_string(),
    );
    let registered = post_schema(&settings, "crm.contacts.v1-value".into(), supplied.clone())
        .await
        .unwrap();
    let fetched = get_schema_by_id(registered.id, &settings).await.unwrap();
    assert_eq!(fetched.id, registered.id);

    let contact = sample_contact();
    let encoder = AvroEncoder::new(SrSettings::new(api.url.clone()));
    let strategy =
        SubjectNameStrategy::TopicNameStrategyWithSchema("crm.contacts.v1".into(), false, supplied);
    let bytes = encoder.encode_struct(&contact, &strategy).await.unwrap();
    assert_eq!(bytes[0], 0);
    assert_eq!(
        u32::from_be_bytes(bytes[1..5].try_into().unwrap()),
        registered.id
    );

    // Their decoder reads our schema back...
    let decoder = AvroDecoder::new(SrSettings::new(api.url.clone()));
    let decoded = decoder.decode(Some(&bytes)).await.unwrap();
    let back: leadflow::model::ContactEvent = apache_avro::from_value(&decoded.value).unwrap();
    assert_eq!(back, contact);
    // ...and so does ours, through our registry client.
    let client = leadflow::codec::RegistryClient::new(&api.url).unwrap();
    let (id, datum) = leadflow::codec::unframe(&bytes).unwrap();
    let writer = client.schema_by_id(id).await.unwrap();
    let ours: leadflow::model::ContactEvent =
        leadflow::codec::decode(&writer, SchemaKind::ContactEvent, datum).unwrap();
    assert_eq!(ours, contact);
    let missing = client.schema_by_id(9_999).await.unwrap_err();
    assert!(
        !missing.is_transient()
            && matches!(missing, leadflow::codec::RegistryError::UnknownId(9_999))
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_a_transient_error() {
    let port = common::free_port();
    let client = leadflow::codec::RegistryClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    let err = client.schema_by_id(1).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

fn sample_contact() -> leadflow::model::ContactEvent {
    use leadflow::model::{Contact, Envelope, Event};
    Event {
        envelope: Envelope {
            event_id: "e-1".into(),
            event_type: "Contact.created".into(),
            aggregate_id: "ct_1".into(),
            source: "hubspot:acme".into(),
            occurred_at: 1_767_600_000_000,
            delivery_attempt: 1,
            schema_version: "1".into(),
            correlation_id: Some("corr-1".into()),
        },
        payload: Contact {
            contact_id: "ct_1".into(),
            email: Some("ada@acme.com".into()),
            phone: None,
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            title: Some("CTO".into()),
            company_name: Some("Acme Inc".into()),
            company_domain: Some("acme.com".into()),
            country: Some("GB".into()),
            region: Some("EMEA".into()),
            lifecycle_stage: Some("mql".into()),
            lead_source: Some("webinar".into()),
            product_interest: None,
            consent_marketing: true,
            attributes: [("utm_source".to_string(), "g2".to_string())].into(),
            updated_at: 1_767_600_000_000,
        },
    }
}

/// The binary keeps schemas across a hard kill and restart with --data-dir.
#[test]
fn persisted_registry_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::RegistryProc::start(Some(dir.path()));
    let id = register_blocking(&registry.url, "p-value", V1);
    let id2 = register_blocking(&registry.url, "q-value", V2_COMPATIBLE);
    let mut registry = registry;
    registry
        .proc
        .signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
    drop(registry);
    let restarted = common::RegistryProc::start(Some(dir.path()));
    assert_eq!(register_blocking(&restarted.url, "p-value", V1), id);
    assert_eq!(
        register_blocking(&restarted.url, "other-value", V2_COMPATIBLE),
        id2
    );
    assert_eq!(
        register_blocking(&restarted.url, "r-value", V2_INCOMPATIBLE),
        id2 + 1
    );
}

/// Registers a schema from a test without an async runtime of its own.
fn register_blocking(url: &str, subject: &str, schema: &str) -> u64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let body = json!({ "schema": schema });
        let response = reqwest::Client::new()
            .post(format!("{url}/subjects/{subject}/versions"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let value: Value = response.json().await.unwrap();
        value["id"].as_u64().unwrap()
    })
}

mod fuzz {
    //! The registry answers every request, however malformed, with a 4xx and keeps serving.
    use super::*;
    use proptest::prelude::*;

    fn endpoint() -> impl Strategy<Value = (&'static str, String)> {
        let segment = "[a-zA-Z0-9%._~-]{0,12}";
        prop_oneof![
            segment.prop_map(|s| ("POST", format!("/subjects/{s}/versions"))),
            segment.prop_map(|s| ("POST", format!("/subjects/{s}"))),
            segment.prop_map(|s| ("POST", format!("/compatibility/subjects/x/versions/{s}"))),
            segment.prop_map(|s| ("PUT", format!("/config/{s}"))),
            segment.prop_map(|s| ("GET", format!("/schemas/ids/{s}"))),
            segment.prop_map(|s| ("GET", format!("/subjects/x/versions/{s}"))),
            segment.prop_map(|s| ("GET", format!("/config/x?defaultToGlobal={s}"))),
            segment.prop_map(|s| (
                "POST",
                format!("/compatibility/subjects/x/versions?verbose={s}")
            )),
        ]
    }

    fn body() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            any::<String>().prop_map(|s| json!({ "schema": s }).to_string()),
            "[\\[\\]{}\",:a-z0-9 ]{0,80}".prop_map(|s| json!({ "schema": s }).to_string()),
            Just(json!({ "schema": "{\"type\":\"array\",\"items\":{\"type\":\"map\",\"values\":\"x\"}}" }).to_string()),
            Just(json!({ "schema": "[\"null\",\"null\"]" }).to_string()),
            Just(json!({ "compatibility": 7 }).to_string()),
        ]
    }

    #[test]
    fn garbage_never_gets_a_5xx() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let api = rt.block_on(Api::new());
        rt.block_on(api.register("x", V1));
        let config = ProptestConfig {
            cases: 300,
            ..ProptestConfig::default()
        };
        proptest!(config, |((method, path) in endpoint(), body in body())| {
            let (status, value) = rt.block_on(api.call(method, &path, Some(body)));
            prop_assert!(status.is_success() || status.is_client_error(), "{status} {value}");
            if !status.is_success() {
                prop_assert!(value["error_code"].is_u64(), "{value}");
            }
        });
        assert_eq!(
            rt.block_on(api.call("GET", "/subjects", None)).0,
            StatusCode::OK
        );
    }
}
