//! The development schema registry (contracts §8): the subset of the Confluent REST API
//! that clients use, in memory or persisted to a directory.

mod api;
mod compat;
mod error;
mod store;

pub use api::router;
pub use compat::Level;
pub use error::ApiError;
pub use store::{Store, StoreError};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Serves the registry on `addr` until `shutdown` resolves. Prints the bound address on
/// stdout first (`listening on http://…`), so callers that ask for port 0 can find it.
pub async fn serve(
    addr: SocketAddr,
    data_dir: Option<PathBuf>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = match data_dir {
        Some(dir) => Store::open(dir)?,
        None => Store::in_memory(),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    tracing::info!(addr = %local, "schema registry listening");
    axum::serve(listener, router(Arc::new(store)))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
