//! `POST /webhooks/stripe`: Stripe's webhooks. Outside the portal (no session, no CSRF):
//! the signature over the raw body is the authentication. A verified event is stored and
//! queued, then acknowledged; processing happens in the worker. A bad signature, a stale
//! timestamp or a malformed header gets 400 (problem+json) and nothing is stored; a
//! database failure gets 503 so that Stripe delivers again.

use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use herd_billing::{IngestError, Ingested};

pub const STRIPE_PATH: &str = "/webhooks/stripe";

pub fn router() -> Router<AppState> {
    Router::new().route(STRIPE_PATH, post(stripe))
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn stripe(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // An event of the other mode than the API key's (test against live) is refused.
    let livemode =
        state.config.stripe_secret_key.as_ref().and_then(|k| {
            herd_billing::ingest::key_livemode(secrecy::ExposeSecret::expose_secret(k))
        });
    match herd_billing::ingest_in_mode(
        &state.pool,
        &body,
        signature,
        &state.config.stripe_webhook_secrets,
        now,
        livemode,
    )
    .await
    {
        Ok(outcome) => {
            let duplicate = outcome == Ingested::Duplicate;
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "received": true, "duplicate": duplicate }).to_string(),
            )
                .into_response()
        }
        Err(e @ IngestError::Store(_)) => {
            tracing::error!(error = %e, "could not store a Stripe event");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "the event could not be stored; deliver it again later",
            )
        }
        Err(e) => {
            tracing::warn!(reason = e.reason(), "Stripe webhook refused");
            problem(StatusCode::BAD_REQUEST, "Webhook refused", &e.to_string())
        }
    }
}
