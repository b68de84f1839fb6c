//! Liveness, readiness and metrics endpoints (`/metrics` for allowed addresses or a
//! bearer token only). They sit outside the session layer so probes never touch the
//! session store.

use crate::client_ip::client_addr;
use crate::state::{AppState, WebConfig};
use crate::{crypto, csrf};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::ExposeSecret;
use std::net::SocketAddr;
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

/// The database answers within two seconds, and the in-process worker (when there is one)
/// runs. The reason is logged, not shown: the driver's error names hosts and users.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(w) = state.config.worker.as_ref().filter(|w| !w.is_running()) {
        tracing::warn!(
            restarts = w.restarts(),
            "not ready: the in-process worker is not running"
        );
        return (StatusCode::SERVICE_UNAVAILABLE, WORKER_STOPPED);
    }
    match tokio::time::timeout(Duration::from_secs(2), herd_store::ping(&state.pool)).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
        }
        Err(_) => {
            tracing::warn!("not ready: database did not answer within 2s");
            (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
        }
    }
}

const UNAVAILABLE: &str = "not ready: database unavailable\n";
const WORKER_STOPPED: &str = "not ready: worker stopped\n";

/// Prometheus's scrape: from the allowed addresses (loopback unless configured) or with
/// the bearer token.
async fn metrics(State(state): State<AppState>, req: Request) -> Response {
    if !metrics_allowed(&state.config, &req) {
        return (StatusCode::FORBIDDEN, "forbidden\n").into_response();
    }
    let size = state.pool.size();
    let idle = u32::try_from(state.pool.num_idle()).unwrap_or(u32::MAX);
    metrics::gauge!("herd_db_pool_connections").set(f64::from(size));
    metrics::gauge!("herd_db_pool_idle_connections").set(f64::from(idle));
    metrics::gauge!("herd_db_pool_max_connections")
        .set(f64::from(state.pool.options().get_max_connections()));
    let mut body = state.metrics.render();
    // Each tenant's backup age, read at each scrape (a deleted tenant's series goes with
    // it); the rest of the page still answers when the database does not.
    match herd_fleet::backups::metrics_text(&state.pool, time::OffsetDateTime::now_utc()).await {
        Ok(text) => body.push_str(&text),
        Err(e) => tracing::warn!(error = %e, "backup ages left out of /metrics"),
    }
    match herd_moderation::views::metrics_text(&state.pool, time::OffsetDateTime::now_utc()).await {
        Ok(text) => body.push_str(&text),
        Err(e) => tracing::warn!(error = %e, "overdue moderation reports left out of /metrics"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn metrics_allowed(config: &WebConfig, req: &Request) -> bool {
    if let Some(expected) = &config.metrics_token {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        // Hashed first, so the comparison does not even tell the length.
        if presented.is_some_and(|p| {
            csrf::constant_time_eq(
                &crypto::token_hash(p),
                &crypto::token_hash(expected.expose_secret()),
            )
        }) {
            return true;
        }
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip());
    client_addr(req.headers(), peer, config)
        .is_some_and(|ip| config.metrics_allow.iter().any(|r| r.contains(ip)))
}
