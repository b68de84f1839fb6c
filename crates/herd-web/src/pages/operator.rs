//! The operator console (first version): organizations, users and the audit log, each
//! searchable and paginated.

use crate::auth::Operator;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::state::AppState;
use crate::views::{datetime, render, Layout, Pager};
use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use herd_store::audit::{self, Entry, Filter};
use herd_store::orgs::{self, OrgSummary};
use herd_store::users::{self, UserSummary};
use herd_store::Page;
use serde::Deserialize;
use tower_sessions::Session;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get("/operator", Operator, home)
        .get("/operator/orgs", Operator, org_list)
        .get("/operator/users", Operator, user_list)
        .get("/operator/audit", Operator, audit_log)
}

async fn home() -> Response {
    Redirect::to("/operator/orgs").into_response()
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    page: Option<u32>,
}

#[derive(Template)]
#[template(path = "operator_orgs.html")]
struct OrgsPage {
    l: Layout,
    q: String,
    rows: Vec<(OrgSummary, String)>,
    pager: Pager,
}

async fn org_list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<ListQuery>,
) -> Result<Response, AppError> {
    let paged = orgs::search(&state.pool, q.q.trim(), Page::new(q.page, None)).await?;
    let pager = Pager::new("/operator/orgs", &[("q", q.q.as_str())], &paged);
    render(&OrgsPage {
        l: Layout::new(&session, Some(&op)).await?,
        rows: paged
            .items
            .into_iter()
            .map(|o| {
                let d = datetime(o.created_at);
                (o, d)
            })
            .collect(),
        q: q.q,
        pager,
    })
}

#[derive(Template)]
#[template(path = "operator_users.html")]
struct UsersPage {
    l: Layout,
    q: String,
    rows: Vec<(UserSummary, String)>,
    pager: Pager,
}

async fn user_list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<ListQuery>,
) -> Result<Response, AppError> {
    let paged = users::search(&state.pool, q.q.trim(), Page::new(q.page, None)).await?;
    let pager = Pager::new("/operator/users", &[("q", q.q.as_str())], &paged);
    render(&UsersPage {
        l: Layout::new(&session, Some(&op)).await?,
        rows: paged
            .items
            .into_iter()
            .map(|u| {
                let d = datetime(u.created_at);
                (u, d)
            })
            .collect(),
        q: q.q,
        pager,
    })
}

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    org: String,
    page: Option<u32>,
}

#[derive(Template)]
#[template(path = "operator_audit.html")]
struct AuditPage {
    l: Layout,
    q: AuditQuery,
    rows: Vec<(Entry, String)>,
    pager: Pager,
}

async fn audit_log(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AppError> {
    let filter = Filter {
        action: q.action.trim().to_owned(),
        actor: q.actor.trim().to_owned(),
        org: q.org.trim().to_owned(),
    };
    let paged = audit::list(&state.pool, &filter, Page::new(q.page, None)).await?;
    let pager = Pager::new(
        "/operator/audit",
        &[
            ("action", q.action.as_str()),
            ("actor", q.actor.as_str()),
            ("org", q.org.as_str()),
        ],
        &paged,
    );
    render(&AuditPage {
        l: Layout::new(&session, Some(&op)).await?,
        rows: paged
            .items
            .into_iter()
            .map(|e| {
                let d = datetime(e.at);
                (e, d)
            })
            .collect(),
        q,
        pager,
    })
}
