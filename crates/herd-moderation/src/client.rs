//! A client of Mastodon's admin API (docs.joinmastodon.org/methods/admin/reports and
//! /methods/admin/accounts): the reports (listed page by page with the `Link` header),
//! resolving and reopening them, and actions on accounts. Errors are typed by what Herd
//! does about them: a refused token breaks the connection, a vanished report is recorded,
//! a rate limit is waited out, a server error is retried.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use url::Url;

/// An admin API token. Its `Debug` never shows it, and nothing renders it.
#[derive(Clone)]
pub struct AdminToken(String);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// Checks a token as pasted from the server's development settings: one word of
    /// visible ASCII, 8 to 512 characters.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let s = s.trim();
        if s.len() < 8 || s.len() > 512 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("Paste the access token of the moderator account's application (one word of letters, digits and symbols).");
        }
        Ok(Self(s.to_owned()))
    }

    /// The token, for the `Authorization` header and for sealing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 401: the token was revoked or is wrong.
    #[error("the server refused the token (401): {0}")]
    Unauthorized(String),
    /// 403: the token lacks a scope, or its account a permission.
    #[error("the token may not do this (403): {0}")]
    Forbidden(String),
    /// 404: the report or account is gone.
    #[error("not found on the server (404)")]
    NotFound,
    /// 429: wait until then.
    #[error("rate limited by the server until {until}")]
    RateLimited { until: OffsetDateTime },
    /// 5xx: retried with backoff.
    #[error("the server failed ({status})")]
    Server { status: u16 },
    /// Another status.
    #[error("unexpected answer {status}: {message}")]
    Unexpected { status: u16, message: String },
    /// The server could not be reached, or did not answer in time.
    #[error("the server could not be reached: {0}")]
    Transport(String),
    /// An answer Herd cannot read.
    #[error("unreadable answer: {0}")]
    Decode(String),
}

impl ApiError {
    /// Does the token no longer work (the connection is broken until a new one)?
    pub fn token_refused(&self) -> bool {
        matches!(self, ApiError::Unauthorized(_) | ApiError::Forbidden(_))
    }
}

/// An account as the admin API shows it (`Admin::Account`), with the fields Herd reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminAccount {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub suspended: bool,
    #[serde(default)]
    pub silenced: bool,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub sensitized: bool,
    pub account: Option<Account>,
}

impl AdminAccount {
    /// `user` for a local account, `user@domain` for a remote one.
    pub fn acct(&self) -> String {
        match (&self.account, &self.domain) {
            (Some(a), _) if !a.acct.is_empty() => a.acct.clone(),
            (_, Some(d)) => format!("{}@{d}", self.username),
            _ => self.username.clone(),
        }
    }
}

/// An account's moderation flags, as the admin API shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountFlags {
    pub suspended: bool,
    pub silenced: bool,
    pub disabled: bool,
    pub sensitized: bool,
}

impl AccountFlags {
    pub fn of(a: &AdminAccount) -> Self {
        Self {
            suspended: a.suspended,
            silenced: a.silenced,
            disabled: a.disabled,
            sensitized: a.sensitized,
        }
    }
}

/// The public side of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub acct: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub url: Option<String>,
}

/// A reported status (the fields Herd keeps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub id: String,
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub url: Option<String>,
}

/// A server rule the reporter says was broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub text: String,
}

/// A report as the admin API shows it (`Admin::Report`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReport {
    pub id: String,
    pub action_taken: bool,
    pub category: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub forwarded: bool,
    pub created_at: String,
    pub account: AdminAccount,
    pub target_account: AdminAccount,
    #[serde(default)]
    pub statuses: Vec<Status>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl AdminReport {
    /// When it was filed.
    pub fn filed_at(&self) -> Result<OffsetDateTime, ApiError> {
        OffsetDateTime::parse(&self.created_at, &Rfc3339)
            .map_err(|e| ApiError::Decode(format!("created_at {:?}: {e}", self.created_at)))
    }
}

/// An action on an account (`POST /api/v1/admin/accounts/:id/action`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionForm<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub report_id: &'a str,
    pub text: &'a str,
    pub send_email_notification: bool,
}

/// How long one call may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait a rate limit is honoured for; longer ones are cut to it.
pub const MAX_WAIT: time::Duration = time::Duration::hours(1);
/// Pages read per fetch at most (200 reports each).
pub const MAX_PAGES: usize = 50;

/// A client for one server's admin API.
#[derive(Clone)]
pub struct AdminApi {
    http: reqwest::Client,
    base: Url,
    token: AdminToken,
}

impl fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminApi")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// The HTTP client the admin API calls share (no redirects: a token is never sent on to
/// another address).
pub fn http_client() -> Result<reqwest::Client, ApiError> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herd-moderation/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ApiError::Transport(e.to_string()))
}

impl AdminApi {
    pub fn new(http: reqwest::Client, base: &str, token: AdminToken) -> Result<Self, ApiError> {
        let base =
            Url::parse(base).map_err(|e| ApiError::Transport(format!("address {base:?}: {e}")))?;
        Ok(Self { http, base, token })
    }

    fn url(&self, path: &str) -> Result<Url, ApiError> {
        self.base
            .join(path)
            .map_err(|e| ApiError::Transport(format!("address: {e}")))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ApiError::Transport(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let until = rate_limit_until(resp.headers(), OffsetDateTime::now_utc());
        let message = error_message(resp).await;
        Err(match status {
            401 => ApiError::Unauthorized(message),
            403 => ApiError::Forbidden(message),
            404 => ApiError::NotFound,
            429 => ApiError::RateLimited { until },
            500..=599 => ApiError::Server { status },
            _ => ApiError::Unexpected { status, message },
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, ApiError> {
        resp.json::<T>()
            .await
            .map_err(|e| ApiError::Decode(e.without_url().to_string()))
    }

    /// One page of open reports: from the start, or from a `next` link.
    pub async fn open_reports_page(
        &self,
        next: Option<&Url>,
    ) -> Result<(Vec<AdminReport>, Option<Url>), ApiError> {
        let url = match next {
            Some(u) => u.clone(),
            None => {
                let mut u = self.url("/api/v1/admin/reports")?;
                u.query_pairs_mut()
                    .append_pair("resolved", "false")
                    .append_pair("limit", "200");
                u
            }
        };
        let resp = self.send(self.http.get(url)).await?;
        let next = next_link(resp.headers(), &self.base);
        Ok((Self::json(resp).await?, next))
    }

    /// Every open report, following `next` links (at most [`MAX_PAGES`]).
    pub async fn open_reports(&self) -> Result<Vec<AdminReport>, ApiError> {
        let mut all = Vec::new();
        let mut next = None;
        for _ in 0..MAX_PAGES {
            let (page, more) = self.open_reports_page(next.as_ref()).await?;
            let empty = page.is_empty();
            all.extend(page);
            match more {
                Some(u) if !empty => next = Some(u),
                _ => break,
            }
        }
        Ok(all)
    }

    /// `GET /api/v1/admin/reports/:id`.
    pub async fn report(&self, id: &str) -> Result<AdminReport, ApiError> {
        let url = self.url(&format!("/api/v1/admin/reports/{}", segment(id)?))?;
        Self::json(self.send(self.http.get(url)).await?).await
    }

    /// `POST /api/v1/admin/reports/:id/resolve` (already resolved is fine).
    pub async fn resolve(&self, id: &str) -> Result<AdminReport, ApiError> {
        let url = self.url(&format!("/api/v1/admin/reports/{}/resolve", segment(id)?))?;
        Self::json(self.send(self.http.post(url)).await?).await
    }

    /// `POST /api/v1/admin/reports/:id/reopen` (already open is fine).
    pub async fn reopen(&self, id: &str) -> Result<AdminReport, ApiError> {
        let url = self.url(&format!("/api/v1/admin/reports/{}/reopen", segment(id)?))?;
        Self::json(self.send(self.http.post(url)).await?).await
    }

    /// `GET /api/v1/admin/accounts/:id`.
    pub async fn account(&self, id: &str) -> Result<AdminAccount, ApiError> {
        let url = self.url(&format!("/api/v1/admin/accounts/{}", segment(id)?))?;
        Self::json(self.send(self.http.get(url)).await?).await
    }

    /// `POST /api/v1/admin/accounts/:id/action`: with a report, it resolves the report too.
    pub async fn account_action(
        &self,
        account: &str,
        form: &ActionForm<'_>,
    ) -> Result<(), ApiError> {
        let url = self.url(&format!(
            "/api/v1/admin/accounts/{}/action",
            segment(account)?
        ))?;
        self.send(self.http.post(url).form(form)).await?;
        Ok(())
    }
}

/// An id as one path segment (Mastodon's ids are digits; anything else is refused).
fn segment(id: &str) -> Result<&str, ApiError> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(ApiError::Decode(format!(
            "an id Herd does not call with: {id:?}"
        )))
    }
}

async fn error_message(resp: reqwest::Response) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: String,
    }
    let text = resp.text().await.unwrap_or_default();
    serde_json::from_str::<Body>(&text)
        .map(|b| b.error)
        .unwrap_or_else(|_| text.chars().take(200).collect())
}

/// Until when a 429 asks to wait: `X-RateLimit-Reset` (an ISO 8601 time, as Mastodon
/// sends it), else `Retry-After` (seconds), else a minute; at most [`MAX_WAIT`].
pub fn rate_limit_until(
    headers: &reqwest::header::HeaderMap,
    now: OffsetDateTime,
) -> OffsetDateTime {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let reset = header("x-ratelimit-reset").and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok());
    let after = header("retry-after")
        .and_then(|v| v.parse::<u32>().ok())
        .map(|s| now + time::Duration::seconds(i64::from(s)));
    let until = reset.or(after).unwrap_or(now + time::Duration::minutes(1));
    until.clamp(now, now + MAX_WAIT)
}

/// The `rel="next"` link of a `Link` header, when it points at the same server (a token
/// is never sent elsewhere).
pub fn next_link(headers: &reqwest::header::HeaderMap, base: &Url) -> Option<Url> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let mut pieces = part.split(';');
            let Some(target) = pieces.next().map(str::trim) else {
                continue;
            };
            let is_next = pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            if !is_next {
                continue;
            }
            let url = target.strip_prefix('<').and_then(|t| t.strip_suffix('>'))?;
            let url = base.join(url).ok()?;
            return (url.origin() == base.origin()).then_some(url);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, LINK};

    #[test]
    fn tokens_are_checked_and_never_shown() {
        assert!(AdminToken::parse("short").is_err());
        assert!(AdminToken::parse("has a space inside").is_err());
        let t = AdminToken::parse("  tok_abcdefgh123  ").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.expose(), "tok_abcdefgh123");
        assert_eq!(format!("{t:?}"), "AdminToken(..)");
    }

    #[test]
    fn next_links_are_followed_only_on_the_same_server() {
        let base = Url::parse("https://lyon.social").unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static("<https://lyon.social/api/v1/admin/reports?limit=2&max_id=7>; rel=\"next\", <https://lyon.social/api/v1/admin/reports?limit=2&since_id=9>; rel=\"prev\""));
        assert_eq!(
            next_link(&h, &base).map(String::from),
            Some("https://lyon.social/api/v1/admin/reports?limit=2&max_id=7".to_owned())
        );
        h.insert(
            LINK,
            HeaderValue::from_static("<https://evil.example/steal>; rel=\"next\""),
        );
        assert_eq!(next_link(&h, &base), None);
        h.insert(
            LINK,
            HeaderValue::from_static("<https://lyon.social/x?since_id=1>; rel=\"prev\""),
        );
        assert_eq!(next_link(&h, &base), None);
    }

    #[test]
    fn rate_limits_are_honoured_within_bounds() {
        let now = time::macros::datetime!(2026-12-08 10:00 UTC);
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_until(&h, now), now + time::Duration::minutes(1));
        h.insert("retry-after", HeaderValue::from_static("30"));
        assert_eq!(rate_limit_until(&h, now), now + time::Duration::seconds(30));
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_static("2026-12-08T10:05:00.000Z"),
        );
        assert_eq!(rate_limit_until(&h, now), now + time::Duration::minutes(5));
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_static("2026-12-09T10:05:00Z"),
        );
        assert_eq!(rate_limit_until(&h, now), now + MAX_WAIT);
    }

    #[test]
    fn ids_are_one_segment() {
        assert!(segment("123").is_ok());
        assert!(segment("../x").is_err());
        assert!(segment("").is_err());
    }
}
