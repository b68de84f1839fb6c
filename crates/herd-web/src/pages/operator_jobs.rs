//! The console's job queues: counts per kind and state, the jobs that need attention
//! (dead, or retrying after a failure) with their last error, and retrying or cancelling
//! one, audited.

use crate::auth::Operator;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{datetime, render, Layout, Pager};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use herd_domain::JobState;
use herd_jobs::admin::{self, ActionError};
use herd_store::jobs::{Filter, JobRow, QueueCount};
use herd_store::Page;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get("/operator/jobs", Operator, list)
        .post("/operator/jobs/{job}/retry", Operator, retry)
        .post("/operator/jobs/{job}/cancel", Operator, cancel)
}

#[derive(Debug, Default, Deserialize)]
struct JobQuery {
    /// `attention` (default), a state, or `all`.
    #[serde(default)]
    show: String,
    #[serde(default)]
    kind: String,
    page: Option<u32>,
}

/// A job as the list shows it.
pub struct JobView {
    pub j: JobRow,
    pub updated: String,
    pub run_at: String,
}

#[derive(Template)]
#[template(path = "operator_jobs.html")]
struct JobsPage {
    l: Layout,
    q: JobQuery,
    counts: Vec<QueueCount>,
    states: [JobState; 5],
    rows: Vec<JobView>,
    pager: Pager,
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<JobQuery>,
) -> Result<Response, AppError> {
    let filter = match q.show.as_str() {
        "" | "attention" => Filter::Attention,
        "all" => Filter::All,
        s => JobState::parse(s).map_or(Filter::Attention, Filter::State),
    };
    let kind = Some(q.kind.trim()).filter(|k| !k.is_empty());
    let paged = admin::list(&state.pool, filter, kind, Page::new(q.page, None)).await?;
    let pager = Pager::new(
        "/operator/jobs",
        &[("show", q.show.as_str()), ("kind", q.kind.as_str())],
        &paged,
    );
    render(&JobsPage {
        l: Layout::new(&session, Some(&op)).await?,
        counts: admin::overview(&state.pool).await?,
        states: JobState::ALL,
        rows: paged
            .items
            .into_iter()
            .map(|j| JobView {
                updated: datetime(j.updated_at),
                run_at: datetime(j.run_at),
                j,
            })
            .collect(),
        q,
        pager,
    })
}

async fn act(
    state: &AppState,
    session: &Session,
    ip: &str,
    op: &herd_store::users::User,
    id: Uuid,
    retry: bool,
) -> Result<Response, AppError> {
    let who = admin::Operator {
        id: op.id(),
        email: &op.email,
        ip,
    };
    let outcome = if retry {
        admin::retry(&state.pool, who, id).await
    } else {
        admin::cancel(&state.pool, who, id).await
    };
    match outcome {
        Ok(job) => {
            let verb = if retry { "queued again" } else { "cancelled" };
            session::flash(session, "ok", format!("The {} job was {verb}.", job.kind)).await?;
        }
        Err(ActionError::NotFound) => return Err(AppError::NotFound),
        Err(ActionError::Store(e)) => return Err(e.into()),
        Err(refused) => session::flash(session, "error", refused.to_string()).await?,
    }
    Ok(Redirect::to("/operator/jobs").into_response())
}

async fn retry(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    act(&state, &session, &ip, &op, id, true).await
}

async fn cancel(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    act(&state, &session, &ip, &op, id, false).await
}
