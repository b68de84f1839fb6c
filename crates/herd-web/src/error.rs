//! The one HTTP error type. Maps to a status and a safe message; details of server errors
//! are logged once (with the request id, by [`log_server_errors`]) and never shown.

use crate::views::ErrorPage;
use askama::Template;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use herd_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    /// Not logged in: redirect to the login page, coming back to `next` afterwards.
    #[error("login required")]
    LoginRequired { next: String },
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("the form's security token is missing or stale")]
    Csrf,
    /// A request Herd cannot read (a broken form); the message says so.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A body larger than the route takes (files); the message says the limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The request's body did not arrive in time.
    #[error("request timeout")]
    Timeout,
    #[error("database unavailable")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

/// A server error's detail, handed from the response to the logging middleware.
#[derive(Debug, Clone)]
struct ErrorDetail(String);

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => AppError::Unavailable,
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<herd_fleet::FleetError> for AppError {
    fn from(e: herd_fleet::FleetError) -> Self {
        match e {
            herd_fleet::FleetError::NotFound => AppError::NotFound,
            herd_fleet::FleetError::Store(s) => s.into(),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<tower_sessions::session::Error> for AppError {
    fn from(e: tower_sessions::session::Error) -> Self {
        match e {
            // The session store is PostgreSQL: a failing store means the database is away.
            tower_sessions::session::Error::Store(e) => {
                tracing::warn!(error = %e, "session store failed");
                AppError::Unavailable
            }
            other => AppError::Internal(format!("session: {other}")),
        }
    }
}

impl From<askama::Error> for AppError {
    fn from(e: askama::Error) -> Self {
        AppError::Internal(format!("template: {e}"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            AppError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is nothing here, or you do not have access to it.".to_owned(),
            ),
            AppError::LoginRequired { next } => {
                let to = format!("/login?next={}", url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>());
                return Redirect::to(&to).into_response();
            }
            AppError::Forbidden(msg) => (StatusCode::FORBIDDEN, "Not allowed", msg.clone()),
            AppError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form's security token was missing or stale. Go back, reload the page and try again; nothing was changed.".to_owned(),
            ),
            AppError::BadRequest(msg) => (StatusCode::BAD_REQUEST, "Bad request", msg.clone()),
            AppError::TooLarge(msg) => (StatusCode::PAYLOAD_TOO_LARGE, "Too large", msg.clone()),
            AppError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "Too slow",
                "The form took too long to arrive; nothing was changed. Please try again.".to_owned(),
            ),
            AppError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "Herd cannot reach its database right now. Please try again in a minute.".to_owned(),
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "An unexpected error occurred; it has been logged. Please try again.".to_owned(),
            ),
        };
        let page = ErrorPage {
            title,
            message: &message,
            status: status.as_u16(),
        };
        let body = page.render().unwrap_or_else(|_| message.clone());
        let mut resp = (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("10"));
        }
        if let AppError::Internal(detail) = self {
            resp.extensions_mut().insert(ErrorDetail(detail));
        }
        resp
    }
}

/// Logs server errors once, inside the request's span (which carries the request id).
pub async fn log_server_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status().is_server_error() {
        match resp.extensions().get::<ErrorDetail>() {
            Some(ErrorDetail(detail)) => {
                tracing::error!(status = resp.status().as_u16(), error = %detail, "request failed")
            }
            None => tracing::warn!(status = resp.status().as_u16(), "request failed"),
        }
    }
    resp
}
