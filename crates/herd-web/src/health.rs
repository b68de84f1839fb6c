//! Liveness, readiness and metrics endpoints. They sit outside the session layer so
//! probes never touch the session store.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The database answers within two seconds.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(Duration::from_secs(2), herd_store::ping(&state.pool)).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: database unreachable: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database did not answer within 2s\n".to_owned(),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let size = state.pool.size();
    let idle = u32::try_from(state.pool.num_idle()).unwrap_or(u32::MAX);
    metrics::gauge!("herd_db_pool_connections").set(f64::from(size));
    metrics::gauge!("herd_db_pool_idle_connections").set(f64::from(idle));
    metrics::gauge!("herd_db_pool_max_connections")
        .set(f64::from(state.pool.options().get_max_connections()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
