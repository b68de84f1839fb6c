//! The console's fleet: clusters (registered, checked, cordoned) and every tenant across
//! them, stuck ones first, each with its history and the kubectl command that shows more.

use super::servers::{answer_to, challenge_of, check_domain_now, delete_page_for, TypedForm};
use super::FieldErrors;
use crate::auth::Operator;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{datetime, render, render_status, ConfirmPage, Layout, Pager};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::InstancePhase;
use herd_fleet::clusters::{self, Actor, RegisterError, Registration};
use herd_fleet::instances::{self, Step};
use herd_fleet::lifecycle::{self, Action, Requester, When};
use herd_fleet::releases;
use herd_fleet::FleetError;
use herd_store::fleet::{Cluster, Event, Instance, Release, Search};
use herd_store::Page;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get("/operator/clusters", Operator, cluster_list)
        .get("/operator/clusters/new", Operator, cluster_form)
        .post("/operator/clusters", Operator, cluster_register)
        .post("/operator/clusters/{cluster}/cordon", Operator, cordon)
        .post("/operator/clusters/{cluster}/uncordon", Operator, uncordon)
        .get("/operator/instances", Operator, instance_list)
        .get("/operator/instances/{instance}", Operator, instance_page)
        .get(
            "/operator/instances/{instance}/suspend",
            Operator,
            suspend_confirm,
        )
        .post("/operator/instances/{instance}/suspend", Operator, suspend)
        .post("/operator/instances/{instance}/resume", Operator, resume)
        .post("/operator/instances/{instance}/upgrade", Operator, upgrade)
        .post(
            "/operator/instances/{instance}/upgrade/cancel",
            Operator,
            cancel_upgrade,
        )
        .get(
            "/operator/instances/{instance}/delete",
            Operator,
            delete_confirm,
        )
        .post("/operator/instances/{instance}/delete", Operator, delete)
        .get(
            "/operator/instances/{instance}/owner-password/reset",
            Operator,
            reset_password_confirm,
        )
        .post(
            "/operator/instances/{instance}/owner-password/reset",
            Operator,
            reset_password,
        )
        .post(
            "/operator/instances/{instance}/domain/check",
            Operator,
            check_domain,
        )
        .get("/operator/releases", Operator, release_list)
        .post("/operator/releases", Operator, release_add)
}

async fn suspend_confirm(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let i = instances::get(&state.pool, id).await?;
    let back = format!("/operator/instances/{id}");
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&op)).await?,
        title: format!("Suspend {}?", i.domain),
        message: format!(
            "{}'s server stops until it is resumed; its data is kept. The organization sees that it is suspended.",
            i.org_name
        ),
        action: format!("{back}/suspend"),
        button: "Suspend the server".into(),
        cancel: back,
    })
}

async fn lifecycle_action(
    state: &AppState,
    session: &Session,
    ip: &str,
    op: &herd_store::users::User,
    id: Uuid,
    action: Action,
) -> Result<Response, AppError> {
    let result = lifecycle::request(&state.pool, operator(op, ip), id, action).await;
    answer_to(
        session,
        &format!("/operator/instances/{id}"),
        result,
        REQUESTED,
    )
    .await
}

const REQUESTED: &str = "Requested; the cluster follows shortly.";

fn operator<'a>(op: &'a herd_store::users::User, ip: &'a str) -> Requester<'a> {
    Requester::Operator(Actor {
        id: op.id(),
        email: &op.email,
        ip,
    })
}

async fn check_domain(
    State(state): State<AppState>,
    session: Session,
    Operator(_op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let i = instances::get(&state.pool, id).await?;
    check_domain_now(&state, &session, &i, &format!("/operator/instances/{id}")).await
}

async fn reset_password_confirm(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let i = instances::get(&state.pool, id).await?;
    let back = format!("/operator/instances/{id}");
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&op)).await?,
        title: format!("Set a new password for @{} of {}?", i.owner_username, i.domain),
        message: format!(
            "The current password stops working. The new one is shown once to an owner or admin of {} on their server page, not here.",
            i.org_name
        ),
        action: format!("{back}/owner-password/reset"),
        button: "Set a new password".into(),
        cancel: back,
    })
}

async fn reset_password(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let result = lifecycle::reset_owner_password(&state.pool, operator(&op, &ip), id).await;
    let done = "A new password is being set; the organization's owners and admins see it once.";
    answer_to(&session, &format!("/operator/instances/{id}"), result, done).await
}

#[derive(Debug, Deserialize)]
struct UpgradeForm {
    version: String,
}

/// An operator's upgrade starts now (the organization schedules its own into its window).
async fn upgrade(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<UpgradeForm>,
) -> Result<Response, AppError> {
    let result = lifecycle::upgrade(
        &state.pool,
        operator(&op, &ip),
        id,
        &form.version,
        When::Now,
    )
    .await;
    answer_to(
        &session,
        &format!("/operator/instances/{id}"),
        result,
        REQUESTED,
    )
    .await
}

async fn cancel_upgrade(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let result = lifecycle::cancel_upgrade(&state.pool, operator(&op, &ip), id).await;
    answer_to(
        &session,
        &format!("/operator/instances/{id}"),
        result,
        "The scheduled upgrade is cancelled.",
    )
    .await
}

async fn delete_confirm(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let i = instances::get(&state.pool, id).await?;
    let l = Layout::new(&session, Some(&op)).await?;
    render(&delete_page_for(
        l,
        &i,
        format!("/operator/instances/{id}"),
        None,
    ))
}

async fn delete(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<TypedForm>,
) -> Result<Response, AppError> {
    let back = format!("/operator/instances/{id}");
    match lifecycle::delete(&state.pool, operator(&op, &ip), id, &form.confirm).await {
        Err(FleetError::Invalid(m)) => {
            let i = instances::get(&state.pool, id).await?;
            let l = Layout::new(&session, Some(&op)).await?;
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &delete_page_for(l, &i, back, Some(m)),
            )
        }
        result => answer_to(&session, &back, result, "The server is being deleted.").await,
    }
}

#[derive(Debug, Default, Deserialize)]
struct ReleaseForm {
    #[serde(default)]
    app: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    note: String,
}

#[derive(Template)]
#[template(path = "operator_releases.html")]
struct ReleasesPage {
    l: Layout,
    rows: Vec<(Release, String)>,
    form: ReleaseForm,
    errors: FieldErrors,
}

async fn releases_page(
    state: &AppState,
    session: &Session,
    op: &herd_store::users::User,
    form: ReleaseForm,
    errors: FieldErrors,
) -> Result<ReleasesPage, AppError> {
    Ok(ReleasesPage {
        l: Layout::new(session, Some(op)).await?,
        rows: releases::list(&state.pool)
            .await?
            .into_iter()
            .map(|r| {
                let at = datetime(r.created_at);
                (r, at)
            })
            .collect(),
        form,
        errors,
    })
}

async fn release_list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
) -> Result<Response, AppError> {
    render(
        &releases_page(
            &state,
            &session,
            &op,
            ReleaseForm::default(),
            FieldErrors::default(),
        )
        .await?,
    )
}

async fn release_add(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Form(form): Form<ReleaseForm>,
) -> Result<Response, AppError> {
    let who = Actor {
        id: op.id(),
        email: &op.email,
        ip: &ip,
    };
    match releases::add(&state.pool, who, &form.app, &form.version, &form.note).await {
        Ok(()) => {
            session::flash(
                &session,
                "ok",
                format!("{} {} is offered now.", form.app, form.version.trim()),
            )
            .await?;
            Ok(Redirect::to("/operator/releases").into_response())
        }
        Err(releases::AddError::Refused { field, message }) => {
            let mut errors = FieldErrors::default();
            errors.add(field, message);
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &releases_page(&state, &session, &op, form, errors).await?,
            )
        }
        Err(releases::AddError::Fleet(e)) => Err(e.into()),
    }
}

async fn suspend(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    lifecycle_action(&state, &session, &ip, &op, id, Action::Suspend).await
}

async fn resume(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    lifecycle_action(&state, &session, &ip, &op, id, Action::Resume).await
}

/// A cluster as the list shows it.
pub struct ClusterRow {
    pub c: Cluster,
    pub checked: String,
}

#[derive(Template)]
#[template(path = "operator_clusters.html")]
struct ClustersPage {
    l: Layout,
    rows: Vec<ClusterRow>,
    waiting: usize,
}

async fn cluster_list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
) -> Result<Response, AppError> {
    let rows = clusters::list(&state.pool)
        .await?
        .into_iter()
        .map(|c| ClusterRow {
            checked: c.checked_at.map(datetime).unwrap_or_else(|| "never".into()),
            c,
        })
        .collect();
    let waiting = herd_store::fleet::unplaced(&state.pool).await?.len();
    render(&ClustersPage {
        l: Layout::new(&session, Some(&op)).await?,
        rows,
        waiting,
    })
}

#[derive(Debug, Deserialize)]
struct ClusterForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    kubeconfig: String,
    #[serde(default)]
    operator_namespace: String,
    #[serde(default)]
    capacity: String,
}

impl Default for ClusterForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            region: String::new(),
            kubeconfig: String::new(),
            operator_namespace: "herd-system".into(),
            capacity: "100".into(),
        }
    }
}

#[derive(Template)]
#[template(path = "operator_cluster_new.html")]
struct ClusterFormPage {
    l: Layout,
    form: ClusterForm,
    errors: FieldErrors,
    has_key: bool,
}

async fn cluster_form(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
) -> Result<Response, AppError> {
    render(&ClusterFormPage {
        l: Layout::new(&session, Some(&op)).await?,
        form: ClusterForm::default(),
        errors: FieldErrors::default(),
        has_key: state.config.seal_key.is_some(),
    })
}

async fn cluster_register(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Form(form): Form<ClusterForm>,
) -> Result<Response, AppError> {
    let reg = Registration {
        name: form.name.clone(),
        region: form.region.clone(),
        kubeconfig: form.kubeconfig.clone(),
        operator_namespace: form.operator_namespace.clone(),
        capacity: form.capacity.clone(),
    };
    let who = Actor {
        id: op.id(),
        email: &op.email,
        ip: &ip,
    };
    match clusters::register(&state.pool, state.config.seal_key.as_ref(), Some(who), &reg).await {
        Ok(_) => {
            session::flash(
                &session,
                "ok",
                format!(
                    "Cluster {} registered. Its health check and the placement of waiting servers are queued.",
                    form.name.trim()
                ),
            )
            .await?;
            Ok(Redirect::to("/operator/clusters").into_response())
        }
        Err(RegisterError::Invalid(problems)) => {
            let mut errors = FieldErrors::default();
            for (field, msg) in problems.0 {
                errors.add(field, msg);
            }
            // The kubeconfig is never sent back into the page.
            let form = ClusterForm {
                kubeconfig: String::new(),
                ..form
            };
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ClusterFormPage {
                    l: Layout::new(&session, Some(&op)).await?,
                    form,
                    errors,
                    has_key: state.config.seal_key.is_some(),
                },
            )
        }
        Err(RegisterError::Fleet(e)) => Err(e.into()),
    }
}

async fn set_cordon(
    state: &AppState,
    session: &Session,
    ip: &str,
    op: &herd_store::users::User,
    id: Uuid,
    cordoned: bool,
) -> Result<Response, AppError> {
    let who = Actor {
        id: op.id(),
        email: &op.email,
        ip,
    };
    clusters::set_cordoned(&state.pool, who, id, cordoned).await?;
    let c = clusters::get(&state.pool, id).await?;
    session::flash(
        session,
        "ok",
        if cordoned {
            format!(
                "Cluster {} is cordoned: no new server is placed there.",
                c.name
            )
        } else {
            format!("Cluster {} takes new servers again.", c.name)
        },
    )
    .await?;
    Ok(Redirect::to("/operator/clusters").into_response())
}

async fn cordon(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    set_cordon(&state, &session, &ip, &op, id, true).await
}

async fn uncordon(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    set_cordon(&state, &session, &ip, &op, id, false).await
}

#[derive(Debug, Default, Deserialize)]
struct InstanceQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    phase: String,
    #[serde(default)]
    version: String,
    page: Option<u32>,
}

/// A tenant as the console's list shows it.
pub struct TenantRow {
    pub i: Instance,
    pub since: String,
}

#[derive(Template)]
#[template(path = "operator_instances.html")]
struct InstancesPage {
    l: Layout,
    q: InstanceQuery,
    clusters: Vec<Cluster>,
    phases: [InstancePhase; 9],
    rows: Vec<TenantRow>,
    pager: Pager,
    /// Paid orders that could not become servers.
    stuck: Vec<herd_store::fleet::StuckOrder>,
}

async fn instance_list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<InstanceQuery>,
) -> Result<Response, AppError> {
    let search = Search {
        q: q.q.trim().to_owned(),
        cluster: Uuid::parse_str(q.cluster.trim()).ok(),
        phase: InstancePhase::parse(q.phase.trim()),
        org: None,
        version: q.version.trim().to_owned(),
    };
    let paged = instances::search(&state.pool, &search, Page::new(q.page, None)).await?;
    let pager = Pager::new(
        "/operator/instances",
        &[
            ("q", q.q.as_str()),
            ("cluster", q.cluster.as_str()),
            ("phase", q.phase.as_str()),
            ("version", q.version.as_str()),
        ],
        &paged,
    );
    render(&InstancesPage {
        l: Layout::new(&session, Some(&op)).await?,
        clusters: clusters::list(&state.pool).await?,
        stuck: herd_store::fleet::stuck_orders(&state.pool).await?,
        phases: InstancePhase::ALL,
        rows: paged
            .items
            .into_iter()
            .map(|i| TenantRow {
                since: datetime(i.phase_since),
                i,
            })
            .collect(),
        q,
        pager,
    })
}

#[derive(Template)]
#[template(path = "operator_instance.html")]
struct InstancePage {
    l: Layout,
    i: Instance,
    steps: Vec<Step>,
    history: Vec<(Event, String)>,
    kubectl: String,
    namespace: String,
    offered: Vec<String>,
    challenge: Option<(String, String, Option<String>)>,
    backups: BackupsView,
    restores: super::operator_restores::RestoresView,
    /// Why making Herd's moderator account (managed moderation) last failed.
    moderator_failed: Option<String>,
}

/// A tenant's backups as its console page shows them.
struct BackupsView {
    /// Open alerts: the database's backups, then the media's.
    alerts: Vec<String>,
    last_success: String,
    interval_hours: i32,
    /// Where media in object storage stand (their bucket's versioning is their backup).
    media: Option<String>,
    recent: Vec<BackupLine>,
}

struct BackupLine {
    name: String,
    what: String,
    outcome: &'static str,
    started: String,
    duration: String,
    size: String,
    location: String,
    checksum: String,
    message: String,
}

fn backups_view(b: herd_fleet::backups::TenantBackups) -> BackupsView {
    use herd_domain::backup::{BackupMethod, BackupOutcome, BackupReason};
    BackupsView {
        alerts: b
            .alerts
            .into_iter()
            .map(|a| format!("{} (since {})", a.message, datetime(a.opened_at)))
            .collect(),
        last_success: b.last_success.map_or_else(|| "none yet".into(), datetime),
        interval_hours: b.interval_hours,
        media: b.media_bucket.map(|m| {
            use herd_domain::backup::BucketVersioning;
            let read = match m.reading {
                None => "not read yet by the cluster's operator".to_owned(),
                Some(r) => {
                    let state = match r.versioning {
                        BucketVersioning::Enabled => {
                            "on: the bucket keeps every version of its objects"
                        }
                        BucketVersioning::Suspended => "suspended",
                        BucketVersioning::Off => "off",
                        BucketVersioning::Unreadable => "unreadable",
                    };
                    let why = r.message.map(|w| format!(" ({w})")).unwrap_or_default();
                    format!("{state}{why}, as read {}", datetime(r.checked_at))
                }
            };
            format!(
                "Media: in object storage, bucket {}, not copied by the backups; its versioning is {read}.",
                m.bucket
            )
        }),
        recent: b
            .recent
            .into_iter()
            .map(|r| BackupLine {
                what: format!(
                    "{}, {}",
                    match r.reason {
                        BackupReason::Scheduled => "scheduled",
                        BackupReason::BeforeUpgrade => "before an upgrade",
                    },
                    match r.method {
                        BackupMethod::Dump => "dump",
                        BackupMethod::Barman => "CloudNativePG",
                    }
                ),
                outcome: match r.outcome {
                    BackupOutcome::Running => "running",
                    BackupOutcome::Succeeded => "succeeded",
                    BackupOutcome::Failed => "failed",
                },
                started: r.started_at.map_or_else(|| "–".into(), datetime),
                duration: r
                    .duration_seconds
                    .map_or_else(|| "–".into(), |d| format!("{}m {:02}s", d / 60, d % 60)),
                size: r.size_bytes.map_or_else(
                    || "–".into(),
                    |b| format!("{:.1} MiB", b as f64 / 1_048_576.0),
                ),
                location: r.location.unwrap_or_default(),
                checksum: r
                    .checksum
                    .map(|c| c.chars().take(12).collect())
                    .unwrap_or_default(),
                message: r.message.unwrap_or_default(),
                name: r.name,
            })
            .collect(),
    }
}

async fn instance_page(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let i = instances::get(&state.pool, id).await?;
    let history = instances::history(&state.pool, id)
        .await?
        .into_iter()
        .map(|e| {
            let at = datetime(e.at);
            (e, at)
        })
        .collect();
    let operator_ns = match i.cluster_id {
        Some(c) => clusters::get(&state.pool, c).await?.operator_namespace,
        None => "herd-system".into(),
    };
    render(&InstancePage {
        l: Layout::new(&session, Some(&op)).await?,
        steps: instances::steps(&i),
        history,
        kubectl: format!("kubectl -n {operator_ns} describe instance {}", i.slug),
        namespace: format!("herd-{}", i.slug),
        offered: lifecycle::upgrade_options(&state.pool, &i, true).await?,
        challenge: challenge_of(&i),
        backups: backups_view(herd_fleet::backups::for_console(&state.pool, id).await?),
        restores: super::operator_restores::view(&state, id).await?,
        moderator_failed: herd_store::fleet::moderator_token(&state.pool, id)
            .await?
            .and_then(|t| t.failed().map(str::to_owned)),
        i,
    })
}
