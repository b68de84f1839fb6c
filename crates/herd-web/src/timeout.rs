//! How long a request may take before it is answered 408: 30 seconds, except a form
//! with files on a route that takes them ([`crate::uploads::takes_files`]), which may
//! take [`UPLOAD`] (the CSRF layer still holds anyone not signed in to [`DEFAULT`] for the
//! body): 25 MB on a slow office line (2 Mbit/s) takes nearly two minutes to
//! arrive. Only the time to the response's head counts; a download's body streams on.

use axum::extract::Request;
use axum::http::{header::CONTENT_TYPE, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// Any request.
pub const DEFAULT: Duration = Duration::from_secs(30);
/// A form with files, where files are taken.
pub const UPLOAD: Duration = Duration::from_secs(300);

/// The time `req` may take.
pub fn limit_for(path: &str, content_type: Option<&str>) -> Duration {
    if crate::uploads::multipart_boundary(content_type).is_some()
        && crate::uploads::takes_files(path)
    {
        UPLOAD
    } else {
        DEFAULT
    }
}

pub async fn limit(req: Request, next: Next) -> Response {
    let limit = limit_for(
        req.uri().path(),
        req.headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forms_with_files_where_files_are_taken_get_longer() {
        let multipart = Some("multipart/form-data; boundary=x");
        assert_eq!(limit_for("/o/acme/support", multipart), UPLOAD);
        assert_eq!(limit_for("/operator/support/0190/reply", multipart), UPLOAD);
        assert_eq!(
            limit_for("/o/acme/support", Some("application/x-www-form-urlencoded")),
            DEFAULT
        );
        assert_eq!(limit_for("/login", multipart), DEFAULT);
        assert_eq!(limit_for("/o/acme/support/0190/close", multipart), DEFAULT);
        assert_eq!(limit_for("/o/acme/support", None), DEFAULT);
    }
}
