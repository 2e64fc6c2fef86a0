//! An HTTP proxy in front of a schema registry that a test can switch between passing
//! requests through and answering with a fault (401, 403, a proxy's 404 page, 400), like an
//! expired credential or a wrong path in production. It can also require basic auth.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// What the proxy answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// 401 with a Confluent body (error_code 40101).
    Unauthorized,
    /// 403 with a Confluent body (error_code 40301).
    Forbidden,
    /// 404 with an HTML page and no error code: a proxy that does not know the path.
    NotFoundPage,
    /// 400 with a Confluent body.
    BadRequest,
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    mode: Arc<Mutex<Mode>>,
    /// `Authorization` header value every request must carry, if set.
    auth: Option<String>,
    requests: Arc<Mutex<Vec<String>>>,
    http: reqwest::Client,
}

/// The proxy, serving until dropped.
pub struct FaultProxy {
    pub url: String,
    mode: Arc<Mutex<Mode>>,
    requests: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// A proxy to `upstream`; with `basic_auth` (`user:password`) every request must carry it
    /// (401 otherwise).
    pub fn start(upstream: &str, basic_auth: Option<&str>) -> FaultProxy {
        use base64_like::encode;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            mode: mode.clone(),
            auth: basic_auth.map(|a| format!("Basic {}", encode(a.as_bytes()))),
            requests: requests.clone(),
            http: reqwest::Client::new(),
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(handle).with_state(shared);
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy {
            url: format!("http://{addr}"),
            mode,
            requests,
            _runtime: runtime,
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Requests seen so far, as `METHOD path status`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mode = *shared.mode.lock().unwrap();
    let authorized = shared.auth.as_ref().is_none_or(|want| {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|got| got == want)
    });
    let (status, content_type, text): (u16, &str, String) = match mode {
        _ if !authorized => (401, "application/json", confluent(40101, "Unauthorized")),
        Mode::Unauthorized => (401, "application/json", confluent(40101, "Unauthorized")),
        Mode::Forbidden => (403, "application/json", confluent(40301, "Forbidden")),
        Mode::NotFoundPage => (
            404,
            "text/html",
            "<html><body><h1>404 Not Found</h1>nginx</body></html>".into(),
        ),
        Mode::BadRequest => (400, "application/json", confluent(400, "Bad Request")),
        Mode::Pass => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let mut request = shared
                .http
                .request(method.clone(), format!("{}{path}", shared.upstream))
                .body(body.to_vec());
            if let Some(ct) = headers.get("content-type") {
                request = request.header("content-type", ct.clone());
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let text = response.text().await.unwrap_or_default();
                    (status, "application/vnd.schemaregistry.v1+json", text)
                }
                Err(e) => (502, "text/plain", e.to_string()),
            }
        }
    };
    shared
        .requests
        .lock()
        .unwrap()
        .push(format!("{method} {} {status}", uri.path()));
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", content_type)],
        text,
    )
        .into_response()
}

fn confluent(code: i64, message: &str) -> String {
    serde_json::json!({ "error_code": code, "message": message }).to_string()
}

/// Standard base64 (for a basic-auth header), so the tests need no crate for it.
mod base64_like {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
