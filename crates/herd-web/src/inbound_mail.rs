//! `POST /inbound/support-mail`: email into the support desk. The mail server (a Postfix
//! pipe, or a provider's inbound webhook) posts the raw RFC 822 message, either as the
//! body or as the `email`/`body-mime` field of a multipart form; the envelope recipient
//! may come as `?recipient=`. Outside the portal (no session, no CSRF): a shared secret
//! (`HERD_SUPPORT_INBOUND_SECRET`) is the authentication, as `Authorization: Bearer …` or
//! as the password of HTTP basic authentication. herd-support's
//! [`inbound::receive`](herd_support::inbound::receive) decides what the email becomes.
//!
//! Answers: 404 without a configured secret, 401 with a wrong one, 503 when the support
//! address or the encryption key is missing (or the database is away: deliver again), 422
//! for an email Herd refuses outright (not an email, not for support, a forged reply
//! address, a sender not authenticated by the trusted mail server's
//! `Authentication-Results` (`HERD_SUPPORT_MAIL_AUTHSERV_ID`; unset, only replies to signed
//! reply addresses are taken, never new tickets), or one Herd would not answer: nothing
//! changes, and the mail server rejects it), 200 with the outcome otherwise (added,
//! opened, duplicate, bounced to an authenticated account, ignored).

use crate::client_ip::ClientIp;
use crate::state::AppState;
use axum::body::to_bytes;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use herd_store::StoreError;
use herd_support::inbound::{self, Inbound, InboundError, Outcome};
use herd_support::SupportError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub const PATH: &str = "/inbound/support-mail";

/// The largest email taken: a message's files (25 MB) in base64, and its text.
pub const MAX_EMAIL_BYTES: usize = 40 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, post(receive))
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

/// Does the request carry the secret (bearer token, or basic authentication's password)?
fn authorized(headers: &HeaderMap, secret: &SecretString) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let presented = if let Some(token) = value.strip_prefix("Bearer ") {
        token.trim().as_bytes().to_vec()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .unwrap_or_default();
        match decoded.iter().position(|b| *b == b':') {
            Some(i) => decoded[i + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    crate::csrf::constant_time_eq(&presented, secret.expose_secret().as_bytes())
}

#[derive(Debug, Deserialize)]
struct InboundQuery {
    /// The envelope recipient, as the mail server delivered it.
    recipient: Option<String>,
}

/// The raw message: the body, or the field of a provider's multipart form that holds it
/// (read as bytes: an email need not be UTF-8).
async fn raw_message(headers: &HeaderMap, body: Bytes) -> Option<Bytes> {
    let boundary = crate::uploads::multipart_boundary(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let Some(boundary) = boundary else {
        return Some(body);
    };
    const NAMES: [&str; 3] = ["email", "body-mime", "message"];
    let stream = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut eml = None;
    while let Some(field) = parts.next_field().await.ok()? {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let named = NAMES.iter().any(|n| name.eq_ignore_ascii_case(n));
        if named && file_name.is_none() {
            return field.bytes().await.ok();
        }
        let file_fits = file_name
            .as_deref()
            .is_some_and(|f| NAMES.iter().any(|n| f.eq_ignore_ascii_case(n)) || files_named_eml(f));
        if eml.is_none() && (named || file_fits) {
            eml = Some(field.bytes().await.ok()?);
        }
    }
    eml
}

fn files_named_eml(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".eml")
}

async fn receive(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(q): Query<InboundQuery>,
    req: Request,
) -> Response {
    let Some(secret) = &state.config.support_inbound_secret else {
        return crate::AppError::NotFound.into_response();
    };
    if !authorized(req.headers(), secret) {
        tracing::warn!(ip, "inbound support mail with a wrong or missing secret");
        let mut resp = problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "present HERD_SUPPORT_INBOUND_SECRET as a bearer token or a basic password",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"herd-inbound\""),
        );
        return resp;
    }
    let Some(replies) = &state.config.support_replies else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not configured",
            "set HERD_SUPPORT_EMAIL and HERD_ENCRYPTION_KEY to take email",
        );
    };
    let headers = req.headers().clone();
    let Ok(body) = to_bytes(req.into_body(), MAX_EMAIL_BYTES).await else {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            "emails of up to 40 MB are taken",
        );
    };
    let Some(raw) = raw_message(&headers, body).await else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Refused",
            "the form has no email, body-mime or message field",
        );
    };
    let base = state.config.public_url.as_str().trim_end_matches('/');
    let cfg = Inbound {
        replies,
        files: &state.config.support_attachments,
        base_url: base,
        ip: &ip,
        authserv_id: state.config.support_mail_authserv_id.as_deref(),
    };
    match inbound::receive(&state.pool, cfg, &raw, q.recipient.as_deref()).await {
        Ok(outcome) => {
            let ticket = match &outcome {
                Outcome::Added(t) | Outcome::Opened(t) | Outcome::Duplicate(t) => {
                    Some(t.to_string())
                }
                Outcome::Bounced(_) | Outcome::Ignored(_) => None,
            };
            tracing::info!(outcome = outcome.as_str(), "inbound support mail");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "outcome": outcome.as_str(), "ticket": ticket }).to_string(),
            )
                .into_response()
        }
        Err(
            e @ (InboundError::NotAnEmail
            | InboundError::NoSender
            | InboundError::NotForSupport
            | InboundError::Forged
            | InboundError::Unauthenticated
            | InboundError::NotTaken(_)),
        ) => {
            tracing::warn!(reason = %e, "inbound support mail refused");
            problem(StatusCode::UNPROCESSABLE_ENTITY, "Refused", &e.to_string())
        }
        Err(InboundError::Support(SupportError::Store(StoreError::Unavailable(e)))) => {
            tracing::warn!(error = %e, "inbound support mail: database unavailable");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "deliver the email again later",
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "inbound support mail failed");
            problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Failed",
                "the email could not be taken; deliver it again later",
            )
        }
    }
}
