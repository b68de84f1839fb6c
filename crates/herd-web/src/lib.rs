//! Herd's web front: the customer portal, the operator console, `/healthz`, `/readyz` and
//! `/metrics`. Server-rendered with askama (templates in the workspace's `templates/`),
//! sessions in PostgreSQL, CSRF on every form, and an access level declared for every
//! route (see [`routes::Access`]).

pub mod audit;
pub mod auth;
pub mod client_ip;
pub mod crypto;
pub mod csrf;
pub mod emails;
pub mod error;
pub mod health;
pub mod inbound_mail;
pub mod metrics;
pub mod pages;
pub mod routes;
pub mod security_headers;
pub mod session;
pub mod state;
pub mod timeout;
pub mod totp;
pub mod uploads;
pub mod views;
pub mod webhooks;

pub use error::AppError;
pub use routes::{Access, RouteInfo};
pub use state::{AppState, WebConfig};

use axum::extract::MatchedPath;
use axum::Router;
use std::sync::Arc;
use tower_http::compression::CompressionLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use tower_sessions_sqlx_store::PostgresStore;

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "herd_session";

/// The whole application: what `herd serve` runs and what tests drive.
pub fn app(state: AppState) -> Router {
    let portal = routes::portal().into_router(&state);
    app_with(state, portal)
}

/// Every route with its declared access level, for tests that check authorization.
pub fn route_table() -> Vec<RouteInfo> {
    routes::portal().table()
}

fn app_with(state: AppState, portal: Router<AppState>) -> Router {
    let store = PostgresStore::new(state.pool.clone());
    let sessions = SessionManagerLayer::new(store)
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.config.secure_cookies())
        .with_expiry(Expiry::OnInactivity(session::IDLE_TIMEOUT));

    let portal = portal
        .layer(axum::middleware::from_fn(csrf::verify))
        .layer(sessions);

    Router::new()
        .merge(health::router())
        .merge(webhooks::router())
        .merge(inbound_mail::router())
        .merge(portal)
        .fallback(pages::not_found)
        .route_layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn(error::log_server_errors))
        .layer(CompressionLayer::new())
        .layer(axum::middleware::from_fn(timeout::limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(security_headers::SecurityHeaders::new(&state.config)),
            security_headers::add,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The route's pattern (`/password/reset/{token}`), never the raw
                    // path: paths carry one-time tokens.
                    let path = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!("request", request_id = %id, method = %req.method(), path = %path)
                })
                // One access-log line per request, at info.
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
