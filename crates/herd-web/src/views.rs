//! What every page shares (the layout's context) and how pages are rendered.

use crate::error::AppError;
use crate::session::{self, Flash};
use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use herd_store::users::User;
use time::OffsetDateTime;
use tower_sessions::Session;

/// The context of `base.html`: who is logged in, the CSRF token for forms, the flash.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub user_name: Option<String>,
    pub is_operator: bool,
    pub csrf: String,
    pub flash: Option<Flash>,
}

impl Layout {
    pub async fn new(session: &Session, user: Option<&User>) -> Result<Self, AppError> {
        Ok(Self {
            user_name: user.map(|u| u.display_name.clone()),
            is_operator: user.is_some_and(|u| u.is_operator),
            csrf: session::csrf_token(session).await?,
            flash: session::take_flash(session).await?,
        })
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub status: u16,
}

/// A confirmation step before a destructive action.
#[derive(Template)]
#[template(path = "confirm.html")]
pub struct ConfirmPage {
    pub l: Layout,
    pub title: String,
    pub message: String,
    pub action: String,
    pub button: String,
    pub cancel: String,
}

/// A confirmation for what cannot be undone: the user types `expected` (the server's
/// address, say) before the button does anything.
#[derive(Template)]
#[template(path = "confirm_typed.html")]
pub struct TypedConfirmPage {
    pub l: Layout,
    pub title: String,
    pub paragraphs: Vec<String>,
    pub expected: String,
    pub error: Option<String>,
    pub action: String,
    pub button: String,
    pub cancel: String,
}

/// A page with a title, a paragraph and a link onwards.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub l: Layout,
    pub title: String,
    pub message: String,
    pub link: Option<(String, String)>,
}

pub fn render(t: &impl Template) -> Result<Response, AppError> {
    Ok(Html(t.render()?).into_response())
}

/// Renders with a status other than 200 (a form with errors is 422).
pub fn render_status(status: StatusCode, t: &impl Template) -> Result<Response, AppError> {
    Ok((status, Html(t.render()?)).into_response())
}

/// `2026-11-29 14:03 UTC`
pub fn datetime(t: OffsetDateTime) -> String {
    herd_domain::utc_minute(t)
}

/// Links to neighbouring pages of a paginated list, keeping the other query parameters.
#[derive(Debug, Clone)]
pub struct Pager {
    pub number: u32,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    pub fn new<T>(base: &str, query: &[(&str, &str)], paged: &herd_store::Paged<T>) -> Self {
        let link = |n: u32| {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in query.iter().filter(|(_, v)| !v.is_empty()) {
                ser.append_pair(k, v);
            }
            ser.append_pair("page", &n.to_string());
            format!("{base}?{}", ser.finish())
        };
        let n = paged.page.number;
        Self {
            number: n,
            prev: (n > 1).then(|| link(n - 1)),
            next: paged.has_next.then(|| link(n + 1)),
        }
    }
}
