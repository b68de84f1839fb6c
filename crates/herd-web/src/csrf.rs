//! CSRF protection for every state-changing request of the portal (synchronizer token).
//!
//! Each session holds a random token; every form carries it in a hidden `csrf_token`
//! field (or a script sends it in `X-CSRF-Token`). Any request that is not GET, HEAD or
//! OPTIONS without the matching token is refused with 403 before it reaches a handler, so
//! a new form cannot forget the check.

use crate::error::AppError;
use crate::session;
use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

pub const FIELD: &str = "csrf_token";
pub const HEADER: &str = "x-csrf-token";
/// Forms larger than this are refused (no uploads go through forms yet).
const MAX_FORM_BYTES: usize = 1024 * 1024;

pub async fn verify(session: Session, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    match check(&session, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn check(session: &Session, req: Request) -> Result<Request, AppError> {
    let expected = session::expected_csrf(session)
        .await?
        .ok_or(AppError::Csrf)?;
    let header = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| AppError::Csrf)?;
    let presented = header.or_else(|| {
        url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == FIELD)
            .map(|(_, v)| v.into_owned())
    });
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), expected.as_bytes()) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => {
            tracing::warn!("CSRF token missing or wrong");
            Err(AppError::Csrf)
        }
    }
}

/// Whether `a` and `b` are equal, taking as long wherever they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
