//! CSRF protection for every state-changing request of the portal (synchronizer token).
//!
//! Each session holds a random token; every form carries it in a hidden `csrf_token`
//! field (or a script sends it in `X-CSRF-Token`). Any request that is not GET, HEAD or
//! OPTIONS without the matching token is refused with 403 before it reaches a handler, so
//! a new form cannot forget the check. Forms with files (`multipart/form-data`) carry the
//! same field, read from their parts; on the routes that take files
//! ([`takes_files`](crate::uploads::takes_files)) and for a signed-in user they may be
//! larger (up to [`MAX_MULTIPART_BYTES`](crate::uploads::MAX_MULTIPART_BYTES)), 413 beyond.

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
/// Forms without files larger than this are refused.
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
    let boundary = crate::uploads::multipart_boundary(
        req.headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    // Only a signed-in user's form, and only on a route that takes files, may be as large
    // as an upload: an anonymous session (anyone who fetched the login page), or any
    // other form, must not make the server hold an upload's worth of memory.
    let signed_in = boundary.is_some()
        && crate::uploads::takes_files(req.uri().path())
        && session::user_id(session).await?.is_some();
    let (parts, body) = req.into_parts();
    let bytes = match &boundary {
        None => to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| AppError::Csrf)?,
        // The route's longer time for uploads (`crate::timeout`) is a signed-in user's:
        // anyone else's body must arrive within the ordinary limit.
        Some(_) if !signed_in => {
            match tokio::time::timeout(crate::timeout::DEFAULT, to_bytes(body, MAX_FORM_BYTES))
                .await
            {
                Ok(read) => {
                    read.map_err(|_| AppError::TooLarge(crate::uploads::TOO_LARGE.to_owned()))?
                }
                Err(_) => return Err(AppError::Timeout),
            }
        }
        Some(_) => to_bytes(body, crate::uploads::MAX_MULTIPART_BYTES)
            .await
            .map_err(|_| AppError::TooLarge(crate::uploads::TOO_LARGE.to_owned()))?,
    };
    let presented = match (header, &boundary) {
        (Some(h), _) => Some(h),
        (None, Some(boundary)) => multipart_token(bytes.clone(), boundary).await,
        (None, None) => url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == FIELD)
            .map(|(_, v)| v.into_owned()),
    };
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

/// The token field of a multipart body (forms put it first, so the files are not read).
async fn multipart_token(body: bytes::Bytes, boundary: &str) -> Option<String> {
    let stream = futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    while let Ok(Some(field)) = parts.next_field().await {
        if field.name() == Some(FIELD) && field.file_name().is_none() {
            return field.text().await.ok();
        }
    }
    None
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
