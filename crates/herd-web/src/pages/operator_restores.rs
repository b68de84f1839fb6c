//! The console's restores: restoring a tenant from one of its backups (in place or into a
//! new tenant, behind a typed confirmation), the restores section of the tenant's page
//! (progress, followed live, and its last proven restore), and the list of restore drills.

use crate::auth::Operator;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{datetime, render, render_status, Layout, Pager};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::restore::{RestoreOutcome, RestoreStep};
use herd_fleet::clusters::{self, Actor};
use herd_fleet::restores::{self, Target, TenantRestores};
use herd_fleet::{drills, instances, FleetError};
use herd_store::fleet::{Cluster, Instance};
use herd_store::restores::{Restorable, Restore};
use herd_store::Page;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get(
        "/operator/instances/{instance}/restore",
        Operator,
        restore_form,
    )
    .post("/operator/instances/{instance}/restore", Operator, restore)
    .post(
        "/operator/instances/{instance}/restore/release",
        Operator,
        release,
    )
    .post(
        "/operator/instances/{instance}/restore/cancel",
        Operator,
        cancel,
    )
    .get(
        "/operator/instances/{instance}/restore/events",
        Operator,
        events,
    )
    .get("/operator/backups/drills", Operator, drill_list)
}

#[derive(Debug, Default, Deserialize)]
struct RestoreForm {
    #[serde(default)]
    backup: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    cluster: String,
    /// `take`: the new tenant takes the source's order.
    #[serde(default)]
    billing: String,
    #[serde(default)]
    confirm: String,
}

struct BackupChoice {
    b: Restorable,
    finished: String,
    size: String,
}

#[derive(Template)]
#[template(path = "operator_restore.html")]
struct RestorePage {
    l: Layout,
    i: Instance,
    backups: Vec<BackupChoice>,
    clusters: Vec<Cluster>,
    form: RestoreForm,
    error: Option<String>,
}

async fn restore_page(
    state: &AppState,
    session: &Session,
    op: &herd_store::users::User,
    id: Uuid,
    form: RestoreForm,
    error: Option<String>,
) -> Result<RestorePage, AppError> {
    let i = instances::get(&state.pool, id).await?;
    let backups = restores::restorable(&state.pool, id)
        .await?
        .into_iter()
        .map(|b| BackupChoice {
            finished: b.finished_at.map_or_else(|| "–".into(), datetime),
            size: b.size_bytes.map_or_else(
                || "size unknown".into(),
                |s| format!("{:.1} MiB", s as f64 / 1_048_576.0),
            ),
            b,
        })
        .collect();
    Ok(RestorePage {
        l: Layout::new(session, Some(op)).await?,
        i,
        backups,
        clusters: clusters::list(&state.pool).await?,
        form: RestoreForm {
            confirm: String::new(),
            ..form
        },
        error,
    })
}

async fn restore_form(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let form = RestoreForm {
        mode: "in_place".into(),
        ..RestoreForm::default()
    };
    render(&restore_page(&state, &session, &op, id, form, None).await?)
}

async fn restore(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<RestoreForm>,
) -> Result<Response, AppError> {
    let target = match form.mode.as_str() {
        "in_place" => Some(Target::InPlace),
        "new_tenant" => Some(Target::NewTenant {
            slug: form.slug.clone(),
            domain: form.domain.clone(),
            cluster: Uuid::parse_str(form.cluster.trim()).ok(),
            take_order: form.billing == "take",
        }),
        _ => None,
    };
    let result = match &target {
        Some(t) => {
            let who = Actor {
                id: op.id(),
                email: &op.email,
                ip: &ip,
            };
            restores::request(&state.pool, who, id, &form.backup, t, &form.confirm).await
        }
        None => Err(FleetError::Invalid(
            "Choose where to restore: in place or into a new tenant.".into(),
        )),
    };
    match result {
        Ok(done) => {
            session::flash(
                &session,
                "ok",
                "Restore requested; the cluster follows shortly. Its progress shows below.",
            )
            .await?;
            Ok(Redirect::to(&format!("/operator/instances/{}", done.instance)).into_response())
        }
        Err(FleetError::Invalid(m) | FleetError::Conflict(m)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &restore_page(&state, &session, &op, id, form, Some(m)).await?,
        ),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct ReleaseForm {
    #[serde(default)]
    confirm: String,
}

/// Starts a tenant held stopped by a failed restore on its database as it is.
async fn release(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<ReleaseForm>,
) -> Result<Response, AppError> {
    let who = Actor {
        id: op.id(),
        email: &op.email,
        ip: &ip,
    };
    match restores::release(&state.pool, who, id, &form.confirm).await {
        Ok(()) => {
            session::flash(
                &session,
                "ok",
                "The tenant starts on its database as it is; the cluster follows shortly.",
            )
            .await?;
        }
        Err(FleetError::Invalid(m) | FleetError::Conflict(m)) => {
            session::flash(&session, "error", &m).await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Redirect::to(&format!("/operator/instances/{id}#tenant-restores")).into_response())
}

/// Cancels the restore under way into a tenant (before its migrations).
async fn cancel(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<ReleaseForm>,
) -> Result<Response, AppError> {
    let who = Actor {
        id: op.id(),
        email: &op.email,
        ip: &ip,
    };
    match restores::cancel(&state.pool, who, id, &form.confirm).await {
        Ok(()) => {
            session::flash(
                &session,
                "ok",
                "Cancel asked: the cluster stops the restore and starts the server on its database as it was, or says it came too late.",
            )
            .await?;
        }
        Err(FleetError::Invalid(m) | FleetError::Conflict(m)) => {
            session::flash(&session, "error", &m).await?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Redirect::to(&format!("/operator/instances/{id}#tenant-restores")).into_response())
}

/// A restore as the tenant's page shows it.
pub struct RestoreLine {
    pub r: Restore,
    pub requested: String,
    pub rows: String,
    pub outcome: &'static str,
}

/// One of the operator's steps of a restore, for the live list.
pub struct RestoreStepView {
    pub name: &'static str,
    pub state: &'static str,
    pub label: &'static str,
}

/// The restores section of a tenant's console page.
pub struct RestoresView {
    pub last_proven: String,
    /// The failed restore that holds the tenant stopped.
    pub held: Option<RestoreLine>,
    /// The latest restore into this tenant, while it moves.
    pub current: Option<RestoreLine>,
    pub steps: Vec<RestoreStepView>,
    pub recent: Vec<RestoreLine>,
    /// The current restore may be cancelled (not a drill, before its migrations, no
    /// cancel asked yet).
    pub cancellable: bool,
    /// When a cancel of the current restore was asked for.
    pub cancel_requested: Option<String>,
}

impl RestoresView {
    /// Still moving: the page follows it live.
    pub fn moving(&self) -> bool {
        self.current.is_some()
    }
}

fn line(r: Restore) -> RestoreLine {
    let rows = if r.restored_rows.is_empty() {
        "–".into()
    } else {
        r.restored_rows
            .iter()
            .map(|(t, n)| match r.source_rows.get(t) {
                Some(s) => format!("{t} {n} of {s}"),
                None => format!("{t} {n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    RestoreLine {
        requested: datetime(r.requested_at),
        outcome: match r.outcome {
            Some(RestoreOutcome::Passed) => "proven",
            Some(RestoreOutcome::Failed) => "not proven",
            None => "–",
        },
        rows,
        r,
    }
}

fn steps_of(step: RestoreStep) -> Vec<RestoreStepView> {
    const ORDER: [RestoreStep; 4] = [
        RestoreStep::StoppingApp,
        RestoreStep::Restoring,
        RestoreStep::Migrating,
        RestoreStep::Starting,
    ];
    let at = ORDER.iter().position(|s| *s == step);
    ORDER
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let (state, label) = match (at, step) {
                (_, RestoreStep::Succeeded) => ("done", "done"),
                (Some(a), _) if n < a => ("done", "done"),
                (Some(a), _) if n == a => ("current", "under way"),
                _ => ("pending", "waiting"),
            };
            RestoreStepView {
                name: s.label(),
                state,
                label,
            }
        })
        .collect()
}

/// The restores section of tenant `id`'s page.
pub async fn view(state: &AppState, id: Uuid) -> Result<RestoresView, AppError> {
    let TenantRestores {
        recent,
        last_proven,
        cancel_requested,
    } = restores::for_console(&state.pool, id).await?;
    let current = recent
        .first()
        .filter(|r| !r.step.finished() && r.concluded_at.is_none())
        .cloned()
        .map(line);
    let cancel_requested = cancel_requested.filter(|_| current.is_some());
    let cancellable = current
        .as_ref()
        .is_some_and(|c| c.r.step.cancellable() && !c.r.drill && cancel_requested.is_none());
    let held = restores::held(&state.pool, id).await?.map(line);
    Ok(RestoresView {
        held,
        last_proven: last_proven.map_or_else(|| "never".into(), datetime),
        steps: current
            .as_ref()
            .map(|c| steps_of(c.r.step))
            .unwrap_or_default(),
        current,
        recent: recent.into_iter().map(line).collect(),
        cancellable,
        cancel_requested: cancel_requested.map(datetime),
    })
}

/// What the live stream sends: the shape `/assets/server.js` applies.
#[derive(serde::Serialize)]
struct Live {
    phase: &'static str,
    label: &'static str,
    message: Option<String>,
    steps: Vec<LiveStep>,
}

#[derive(serde::Serialize)]
struct LiveStep {
    name: &'static str,
    state: &'static str,
    label: &'static str,
}

fn live(r: &Restore) -> Live {
    Live {
        phase: r.step.as_str(),
        label: r.step.label(),
        message: r.message.clone(),
        steps: steps_of(r.step)
            .into_iter()
            .map(|s| LiveStep {
                name: s.name,
                state: s.state,
                label: s.label,
            })
            .collect(),
    }
}

const LIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
const LIVE_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Server-sent events: the latest restore's step now, then each time it changes (the
/// page works without them: reload it).
async fn events(
    State(state): State<AppState>,
    Operator(_op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    instances::get(&state.pool, id).await?;
    let pool = state.pool.clone();
    let deadline = tokio::time::Instant::now() + LIVE_FOR;
    let stream = futures::stream::unfold((None::<String>, true), move |(last, first)| {
        let pool = pool.clone();
        async move {
            loop {
                if !first {
                    tokio::time::sleep(LIVE_EVERY).await;
                }
                if tokio::time::Instant::now() > deadline {
                    return None;
                }
                let latest = herd_store::restores::recent(&pool, id, 1).await.ok()?;
                let data = serde_json::to_string(&live(latest.first()?)).ok()?;
                if last.as_deref() != Some(data.as_str()) {
                    let event = Event::default().event("status").data(data.clone());
                    return Some((
                        Ok::<_, std::convert::Infallible>(event),
                        (Some(data), false),
                    ));
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
struct DrillQuery {
    page: Option<u32>,
}

struct DrillRow {
    d: herd_store::restores::DrillLine,
    at: String,
    outcome: &'static str,
    time_to_restore: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "operator_drills.html")]
struct DrillsPage {
    l: Layout,
    rows: Vec<DrillRow>,
    pager: Pager,
}

async fn drill_list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<DrillQuery>,
) -> Result<Response, AppError> {
    let paged = drills::list(&state.pool, Page::new(q.page, None)).await?;
    let pager = Pager::new("/operator/backups/drills", &[], &paged);
    let rows = paged
        .items
        .into_iter()
        .map(|d| DrillRow {
            at: datetime(d.requested_at),
            outcome: match d.outcome.as_deref().and_then(RestoreOutcome::parse) {
                Some(RestoreOutcome::Passed) => "passed",
                Some(RestoreOutcome::Failed) => "failed",
                None => "under way",
            },
            time_to_restore: d
                .time_to_restore_seconds
                .map_or_else(|| "–".into(), |s| format!("{}m {:02}s", s / 60, s % 60)),
            reason: d.outcome_reason.clone().unwrap_or_else(|| {
                RestoreStep::parse(&d.step)
                    .filter(|_| d.outcome.is_none())
                    .map(|s| format!("at: {}", s.label()))
                    .unwrap_or_default()
            }),
            d,
        })
        .collect();
    render(&DrillsPage {
        l: Layout::new(&session, Some(&op)).await?,
        rows,
        pager,
    })
}
