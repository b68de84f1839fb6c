//! A fake of Mastodon's admin API on a local port, as strict as the real one where Herd
//! relies on it (docs.joinmastodon.org/methods/admin/reports, /methods/admin/accounts):
//! bearer tokens with scopes (401 for a missing, wrong or revoked token; 403 for a
//! missing scope), reports newest first paginated with `max_id` and a `Link` header,
//! 404 `Record not found` for a vanished report, resolve/reopen, account actions that
//! set the account's flag and resolve the report (or, for every type but `none`, every
//! open report on the account), 429 with `X-RateLimit-*` headers when told to. Every write
//! it receives is recorded, so tests can assert that an action was sent exactly once.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A misbehaviour for the next request(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this status (500, 502, 503) without doing anything.
    Status(u16),
    /// Answer 429 with `X-RateLimit-Reset` this many seconds ahead and `Retry-After`.
    RateLimited { secs: u64 },
    /// Do what was asked, then answer 500: the caller never learns it was applied.
    ApplyThen500,
}

/// A write the fake received: method and path, the form, and whether it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub path: String,
    pub form: BTreeMap<String, String>,
    pub applied: bool,
}

#[derive(Debug, Clone)]
struct Account {
    id: String,
    username: String,
    domain: Option<String>,
    suspended: bool,
    silenced: bool,
    disabled: bool,
    sensitized: bool,
}

#[derive(Debug, Clone)]
struct Report {
    id: u64,
    reporter: String,
    target: String,
    category: String,
    comment: String,
    created_at: String,
    action_taken: bool,
    statuses: Vec<Value>,
    rule_ids: Vec<String>,
}

#[derive(Default)]
struct Inner {
    base: String,
    /// token → scopes
    tokens: HashMap<String, Vec<String>>,
    accounts: HashMap<String, Account>,
    reports: BTreeMap<u64, Report>,
    rules: Vec<(String, String)>,
    next_id: u64,
    failures: VecDeque<Failure>,
    received: Vec<Received>,
    /// Every request's method and path (with query).
    requests: Vec<String>,
    /// The most reports a page holds (Mastodon: 200).
    max_limit: usize,
}

/// The fake server. Dropping it stops it.
pub struct FakeMastodon {
    /// `http://127.0.0.1:<port>`: what Herd calls.
    pub base: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMastodon {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Shared = Arc<Mutex<Inner>>;

/// An ISO 8601 UTC time with milliseconds, as Mastodon writes them.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The scopes a token with admin read and write access has.
pub const ADMIN_SCOPES: &[&str] = &["admin:read", "admin:write"];

impl FakeMastodon {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Mutex::new(Inner {
            base: base.clone(),
            next_id: 100,
            max_limit: 200,
            rules: vec![
                ("1".into(), "No harassment.".into()),
                ("2".into(), "No spam.".into()),
            ],
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/api/v1/admin/reports", get(list_reports))
            .route("/api/v1/admin/reports/{id}", get(show_report))
            .route("/api/v1/admin/reports/{id}/resolve", post(resolve))
            .route("/api/v1/admin/reports/{id}/reopen", post(reopen))
            .route("/api/v1/admin/accounts/{id}", get(show_account))
            .route("/api/v1/admin/accounts/{id}/action", post(action))
            .with_state(inner.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            inner,
            server,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// Accepts `token` with `scopes` (e.g. [`ADMIN_SCOPES`]).
    pub fn add_token(&self, token: &str, scopes: &[&str]) {
        self.with(|i| {
            i.tokens.insert(
                token.to_owned(),
                scopes.iter().map(|s| (*s).to_owned()).collect(),
            )
        });
    }

    /// Pages hold at most `n` reports (a server configured lower than Mastodon's 200).
    pub fn set_max_limit(&self, n: usize) {
        self.with(|i| i.max_limit = n.max(1));
    }

    /// Revokes `token`: it gets 401 from now on.
    pub fn revoke_token(&self, token: &str) {
        self.with(|i| i.tokens.remove(token));
    }

    /// A local account; returns its id.
    pub fn add_account(&self, username: &str) -> String {
        self.with(|i| {
            i.next_id += 1;
            let id = format!("1090{}", i.next_id);
            i.accounts.insert(
                id.clone(),
                Account {
                    id: id.clone(),
                    username: username.to_owned(),
                    domain: None,
                    suspended: false,
                    silenced: false,
                    disabled: false,
                    sensitized: false,
                },
            );
            id
        })
    }

    /// A report by `reporter` on `target` (account ids), filed `age` ago, with one
    /// reported status; returns its id.
    pub fn add_report(
        &self,
        reporter: &str,
        target: &str,
        category: &str,
        comment: &str,
        age: Duration,
    ) -> String {
        self.with(|i| {
            i.next_id += 1;
            let id = i.next_id;
            let created = iso8601(SystemTime::now() - age);
            let status = json!({
                "id": format!("11{id}"),
                "created_at": created,
                "content": format!("<p>Reported post {id}</p>"),
                "url": format!("{}/@x/11{id}", i.base),
            });
            i.reports.insert(
                id,
                Report {
                    id,
                    reporter: reporter.to_owned(),
                    target: target.to_owned(),
                    category: category.to_owned(),
                    comment: comment.to_owned(),
                    created_at: created,
                    action_taken: false,
                    statuses: vec![status],
                    rule_ids: if category == "violation" {
                        vec!["1".into()]
                    } else {
                        vec![]
                    },
                },
            );
            id.to_string()
        })
    }

    /// Deletes a report: 404 from now on.
    pub fn remove_report(&self, id: &str) {
        self.with(|i| i.reports.remove(&id.parse().unwrap()));
    }

    /// Resolves a report as the server's own moderators would.
    pub fn resolve_locally(&self, id: &str) {
        self.with(|i| {
            if let Some(r) = i.reports.get_mut(&id.parse().unwrap()) {
                r.action_taken = true;
            }
        });
    }

    /// The next requests misbehave as listed, one each.
    pub fn fail_next(&self, failures: &[Failure]) {
        self.with(|i| i.failures.extend(failures.iter().copied()));
    }

    /// Every write received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.with(|i| i.received.clone())
    }

    /// The writes received and applied whose path ends with `suffix`.
    pub fn applied(&self, suffix: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.applied && r.path.ends_with(suffix))
            .collect()
    }

    /// Every request (method, path and query), in order.
    pub fn requests(&self) -> Vec<String> {
        self.with(|i| i.requests.clone())
    }

    /// Is the report resolved on the server?
    pub fn is_resolved(&self, id: &str) -> bool {
        self.with(|i| i.reports[&id.parse().unwrap()].action_taken)
    }

    /// (suspended, silenced, disabled, sensitized) of an account.
    pub fn flags(&self, account: &str) -> (bool, bool, bool, bool) {
        self.with(|i| {
            let a = &i.accounts[account];
            (a.suspended, a.silenced, a.disabled, a.sensitized)
        })
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Does `granted` cover `needed` (`admin:read` covers `admin:read:reports`)?
fn covers(granted: &[String], needed: &str) -> bool {
    granted
        .iter()
        .any(|g| g == needed || needed.starts_with(&format!("{g}:")))
}

/// The token check, the scope check and an injected failure, in Mastodon's order.
#[expect(
    clippy::result_large_err,
    reason = "a test fake: the refusal is the response itself"
)]
fn gate(
    inner: &mut Inner,
    headers: &HeaderMap,
    scope: &str,
    what: String,
) -> Result<Option<Failure>, Response> {
    inner.requests.push(what);
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(scopes) = token.and_then(|t| inner.tokens.get(t)) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "The access token is invalid",
        ));
    };
    if !covers(scopes, scope) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "This action is outside the authorized scopes",
        ));
    }
    match inner.failures.pop_front() {
        Some(Failure::Status(s)) => Err(error(
            StatusCode::from_u16(s).unwrap(),
            "Something went wrong",
        )),
        Some(Failure::RateLimited { secs }) => {
            let reset = iso8601(SystemTime::now() + Duration::from_secs(secs));
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            let h = r.headers_mut();
            h.insert("x-ratelimit-limit", HeaderValue::from_static("300"));
            h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
            h.insert("retry-after", HeaderValue::from(secs));
            Err(r)
        }
        other => Ok(other),
    }
}

fn account_json(inner: &Inner, id: &str) -> Value {
    let Some(a) = inner.accounts.get(id) else {
        return Value::Null;
    };
    let acct = match &a.domain {
        Some(d) => format!("{}@{d}", a.username),
        None => a.username.clone(),
    };
    json!({
        "id": a.id, "username": a.username, "domain": a.domain,
        "created_at": "2026-01-01T00:00:00.000Z", "email": format!("{}@example.invalid", a.username),
        "role": { "id": -99, "name": "", "permissions": 65536 },
        "confirmed": true, "approved": true, "locale": "en", "invite_request": null, "ips": [],
        "suspended": a.suspended, "silenced": a.silenced, "disabled": a.disabled,
        "sensitized": a.sensitized,
        "account": { "id": a.id, "username": a.username, "acct": acct, "display_name": a.username,
                     "url": format!("{}/@{}", inner.base, a.username) },
    })
}

fn report_json(inner: &Inner, r: &Report) -> Value {
    let rules: Vec<Value> = inner
        .rules
        .iter()
        .filter(|(id, _)| r.rule_ids.contains(id))
        .map(|(id, text)| json!({ "id": id, "text": text }))
        .collect();
    json!({
        "id": r.id.to_string(), "action_taken": r.action_taken,
        "action_taken_at": if r.action_taken { json!(r.created_at) } else { Value::Null },
        "category": r.category, "comment": r.comment, "forwarded": false,
        "created_at": r.created_at, "updated_at": r.created_at,
        "account": account_json(inner, &r.reporter),
        "target_account": account_json(inner, &r.target),
        "assigned_account": null, "action_taken_by_account": null,
        "statuses": r.statuses, "rules": rules,
    })
}

fn with_failure(failure: Option<Failure>, ok: Response) -> Response {
    if failure == Some(Failure::ApplyThen500) {
        error(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
    } else {
        ok
    }
}

async fn list_reports(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = s.lock().unwrap();
    let what = format!("GET /api/v1/admin/reports?{}", {
        let mut pairs: Vec<_> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        pairs.join("&")
    });
    if let Err(r) = gate(&mut inner, &headers, "admin:read:reports", what) {
        return r;
    }
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, inner.max_limit);
    let resolved = q.get("resolved").map(|v| v == "true");
    let max_id = q.get("max_id").and_then(|m| m.parse::<u64>().ok());
    // Newest first, below max_id.
    let all: Vec<&Report> = inner
        .reports
        .values()
        .rev()
        .filter(|r| resolved.is_none_or(|res| r.action_taken == res))
        .filter(|r| max_id.is_none_or(|m| r.id < m))
        .collect();
    let page: Vec<&Report> = all.iter().take(limit).copied().collect();
    let body: Vec<Value> = page.iter().map(|r| report_json(&inner, r)).collect();
    let mut resp = Json(body).into_response();
    if let (Some(last), Some(first)) = (page.last(), page.first()) {
        let mut extra = format!("limit={limit}");
        if let Some(res) = resolved {
            extra.push_str(&format!("&resolved={res}"));
        }
        let mut links = Vec::new();
        if all.len() > page.len() {
            links.push(format!(
                "<{}/api/v1/admin/reports?{extra}&max_id={}>; rel=\"next\"",
                inner.base, last.id
            ));
        }
        links.push(format!(
            "<{}/api/v1/admin/reports?{extra}&min_id={}>; rel=\"prev\"",
            inner.base, first.id
        ));
        resp.headers_mut()
            .insert("link", HeaderValue::from_str(&links.join(", ")).unwrap());
    }
    resp
}

async fn show_report(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut inner = s.lock().unwrap();
    let what = format!("GET /api/v1/admin/reports/{id}");
    if let Err(r) = gate(&mut inner, &headers, "admin:read:reports", what) {
        return r;
    }
    match id.parse::<u64>().ok().and_then(|n| inner.reports.get(&n)) {
        Some(r) => Json(report_json(&inner, r)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Record not found"),
    }
}

async fn set_report(s: Shared, headers: HeaderMap, id: String, resolve: bool) -> Response {
    let mut inner = s.lock().unwrap();
    let verb = if resolve { "resolve" } else { "reopen" };
    let path = format!("/api/v1/admin/reports/{id}/{verb}");
    let failure = match gate(
        &mut inner,
        &headers,
        "admin:write:reports",
        format!("POST {path}"),
    ) {
        Ok(f) => f,
        Err(r) => {
            inner.received.push(Received {
                path,
                form: BTreeMap::new(),
                applied: false,
            });
            return r;
        }
    };
    let Some(n) = id
        .parse::<u64>()
        .ok()
        .filter(|n| inner.reports.contains_key(n))
    else {
        inner.received.push(Received {
            path,
            form: BTreeMap::new(),
            applied: false,
        });
        return error(StatusCode::NOT_FOUND, "Record not found");
    };
    if let Some(r) = inner.reports.get_mut(&n) {
        r.action_taken = resolve;
    }
    inner.received.push(Received {
        path,
        form: BTreeMap::new(),
        applied: true,
    });
    let body = report_json(&inner, &inner.reports[&n]);
    with_failure(failure, Json(body).into_response())
}

async fn resolve(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    set_report(s, headers, id, true).await
}

async fn reopen(State(s): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    set_report(s, headers, id, false).await
}

async fn show_account(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut inner = s.lock().unwrap();
    let what = format!("GET /api/v1/admin/accounts/{id}");
    if let Err(r) = gate(&mut inner, &headers, "admin:read:accounts", what) {
        return r;
    }
    if inner.accounts.contains_key(&id) {
        Json(account_json(&inner, &id)).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "Record not found")
    }
}

async fn action(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let mut inner = s.lock().unwrap();
    let path = format!("/api/v1/admin/accounts/{id}/action");
    let refuse = |inner: &mut Inner, r: Response| {
        inner.received.push(Received {
            path: path.clone(),
            form: form.clone(),
            applied: false,
        });
        r
    };
    let failure = match gate(
        &mut inner,
        &headers,
        "admin:write:accounts",
        format!("POST {path}"),
    ) {
        Ok(f) => f,
        Err(r) => return refuse(&mut inner, r),
    };
    if !inner.accounts.contains_key(&id) {
        return refuse(&mut inner, error(StatusCode::NOT_FOUND, "Record not found"));
    }
    let kind = form.get("type").cloned().unwrap_or_default();
    if !["none", "sensitive", "disable", "silence", "suspend"].contains(&kind.as_str()) {
        return refuse(
            &mut inner,
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Validation failed: Type is not included in the list",
            ),
        );
    }
    let report = match form.get("report_id").filter(|r| !r.is_empty()) {
        Some(r) => match r
            .parse::<u64>()
            .ok()
            .filter(|n| inner.reports.contains_key(n))
        {
            Some(n) => Some(n),
            None => return refuse(&mut inner, error(StatusCode::NOT_FOUND, "Record not found")),
        },
        None => None,
    };
    if let Some(a) = inner.accounts.get_mut(&id) {
        match kind.as_str() {
            "sensitive" => a.sensitized = true,
            "disable" => a.disabled = true,
            "silence" => a.silenced = true,
            "suspend" => a.suspended = true,
            _ => {}
        }
    }
    // Mastodon's Admin::AccountAction: `none` resolves the given report only; other
    // types resolve every unresolved report on the account.
    for r in inner.reports.values_mut() {
        let this = Some(r.id) == report;
        if this || (kind != "none" && r.target == id) {
            r.action_taken = true;
        }
    }
    inner.received.push(Received {
        path: path.clone(),
        form: form.clone(),
        applied: true,
    });
    with_failure(failure, Json(json!({})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_millis(1_796_040_000_123)),
            "2026-11-30T12:00:00.123Z"
        );
    }
}
