//! `/metrics` (Prometheus text format), `/healthz` (the process is alive and serving) and
//! `/readyz` (connected to both sides and not waiting in reconnect backoff).

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::Metrics;
use crate::error::Error;

/// Binds the listen address now, so a taken port fails at startup rather than later, and
/// returns the server to spawn.
pub async fn serve(
    listen: &str,
    metrics: Arc<Metrics>,
) -> Result<impl std::future::Future<Output = ()>, Error> {
    let listener = TcpListener::bind(listen).await.map_err(|e| Error::Listen {
        addr: listen.to_string(),
        message: e.to_string(),
    })?;
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(metrics);
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    })
}

async fn render(axum::extract::State(m): axum::extract::State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn ready(axum::extract::State(m): axum::extract::State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
