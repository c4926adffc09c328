//! The admin HTTP listener of `run`: Prometheus `/metrics` and `/healthz` (200 when the
//! database answers and the scheduler runs, 503 otherwise). It binds `daemon.admin_listen`,
//! 127.0.0.1 by default: nothing here is meant for the outside.
//!
//! Owns: these two routes. Must not change any state.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::daemon::{Health, Shutdown};
use crate::store::Store;

#[derive(Clone)]
struct AppState {
    store: Store,
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
}

/// Binds the listener (an error names the address) and serves until shutdown.
pub async fn serve(
    listen: &str,
    store: Store,
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
    mut shutdown: Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("daemon.admin_listen: binding {listen}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(AppState {
            store,
            health,
            metrics,
        });
    tracing::info!(address = %listen, "admin listener: /metrics, /healthz");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.recv().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "admin listener stopped");
        }
    }))
}

async fn metrics_page(State(state): State<AppState>) -> impl IntoResponse {
    match &state.metrics {
        Some(handle) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            handle.render(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain; version=0.0.4")],
            "# metrics recorder not installed in this process\n".to_owned(),
        ),
    }
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let db = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    let db_ok = matches!(db, Ok(Ok(())));
    let scheduler = state.health.scheduler_running();
    let body = serde_json::json!({
        "ready": db_ok && scheduler,
        "database": if db_ok { "ok" } else { "unavailable" },
        "scheduler": if scheduler { "running" } else { "stopped" },
    });
    let code = if db_ok && scheduler {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}
