//! `/metrics` (Prometheus text, with the process's own metrics), `/healthz` (no stream thread
//! stuck) and `/readyz` (reference tables loaded, consuming, and nothing waiting on the schema
//! registry).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use super::health::Health;

/// Starts the server in the background and returns the address it bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    health: Arc<Health>,
) -> anyhow::Result<SocketAddr> {
    let process = metrics_process::Collector::default();
    process.describe();
    let live = health.clone();
    let scraped = health.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                process.collect();
                // Refreshes leadflow_stream_threads.
                let _ = scraped.liveness();
                std::future::ready(metrics.render())
            }),
        )
        .route(
            "/healthz",
            get(move || {
                std::future::ready(match live.liveness() {
                    Ok(()) => (StatusCode::OK, "ok".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                })
            }),
        )
        .route(
            "/readyz",
            get(move || {
                std::future::ready(match health.readiness() {
                    Ok(()) => (StatusCode::OK, "ready".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
                })
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}
