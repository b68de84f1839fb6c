//! The console's moderation: the queue across every connected server (filters by
//! server, category and age; soonest due first), actions not applied yet, hours used
//! against each plan; a report's page with the customer's policy beside it and the
//! decision form; and the settings (who moderates, what each plan includes). The queue
//! and reports are for operators with the moderator role only (others get 403); every
//! action is audited by herd-moderation.

use super::{app_error, field_errors, rules, statuses, DecisionView, ReportRow};
use crate::auth::Operator;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::pages::FieldErrors;
use crate::routes::{Access, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{datetime, render, render_status, Layout, Pager};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::moderation::{Decision, ReportCategory, ReportState};
use herd_moderation::decide::{self, DecisionForm};
use herd_moderation::views::{self, ReportView};
use herd_moderation::{connections, moderators, ModerationError, Who};
use herd_store::moderation::{self as store, Instance, OperatorRow, PlanTerms, QueueFilter};
use herd_store::users::User;
use herd_store::Page;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get("/operator/moderation", Operator, queue)
        .post("/operator/moderation/fetch", Operator, fetch_now)
        .get("/operator/moderation/settings", Operator, settings)
        .post("/operator/moderation/moderators", Operator, grant)
        .post(
            "/operator/moderation/moderators/{user}/withdraw",
            Operator,
            withdraw,
        )
        .post("/operator/moderation/plans/{code}", Operator, save_terms)
        .get("/operator/moderation/reports/{report}", Operator, show)
        .post(
            "/operator/moderation/reports/{report}/decide",
            Operator,
            decide,
        )
        .post(
            "/operator/moderation/reports/{report}/time",
            Operator,
            log_time,
        )
        .post(
            "/operator/moderation/actions/{decision}/retry",
            Operator,
            retry,
        )
}

fn who<'a>(op: &'a User, ip: &'a str) -> Who<'a> {
    Who {
        id: op.id(),
        name: &op.display_name,
        email: &op.email,
        ip,
    }
}

#[derive(Debug, Default, Deserialize)]
struct QueueQuery {
    #[serde(default)]
    instance: String,
    #[serde(default)]
    category: String,
    /// Only reports older than this many hours.
    #[serde(default)]
    older_than: String,
    page: Option<u32>,
}

struct HoursRow {
    i: Instance,
    hours: String,
    over: bool,
    connection: String,
}

#[derive(Template)]
#[template(path = "operator_moderation.html")]
struct QueuePage {
    l: Layout,
    q: QueueQuery,
    instances: Vec<HoursRow>,
    categories: &'static [ReportCategory],
    rows: Vec<ReportRow>,
    unsent: Vec<DecisionView>,
    pager: Pager,
}

async fn queue(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<QueueQuery>,
) -> Result<Response, AppError> {
    let filter = QueueFilter {
        instance: q.instance.trim().parse().ok(),
        category: ReportCategory::parse(q.category.trim()).ok(),
        filed_before: q
            .older_than
            .trim()
            .parse::<u16>()
            .ok()
            .map(|h| time::OffsetDateTime::now_utc() - time::Duration::hours(i64::from(h))),
    };
    let v = views::queue(&state.pool, op.id(), &filter, Page::new(q.page, None))
        .await
        .map_err(app_error)?;
    let query = [
        ("instance", q.instance.as_str()),
        ("category", q.category.as_str()),
        ("older_than", q.older_than.as_str()),
    ];
    let pager = Pager::new("/operator/moderation", &query, &v.reports);
    render(&QueuePage {
        l: Layout::new(&session, Some(&op)).await?,
        instances: v
            .hours
            .into_iter()
            .map(|(i, hours, over)| HoursRow {
                connection: match i.connection.as_ref() {
                    Some(c) if c.revoked_at.is_some() => "token revoked".to_owned(),
                    Some(c) if c.broken_at.is_some() => format!(
                        "broken: {}",
                        c.broken_reason.as_deref().unwrap_or("token refused")
                    ),
                    Some(c) => match &c.last_fetch_error {
                        Some(e) => format!("last fetch failed: {e}"),
                        None => "connected".to_owned(),
                    },
                    None => "not connected".to_owned(),
                },
                i,
                hours,
                over,
            })
            .collect(),
        categories: ReportCategory::ALL,
        rows: v.reports.items.into_iter().map(ReportRow::from).collect(),
        unsent: v.unsent.into_iter().map(DecisionView::from).collect(),
        pager,
        q,
    })
}

#[derive(Debug, Default, Deserialize)]
struct FetchForm {
    #[serde(default)]
    instance: String,
}

async fn fetch_now(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Form(f): Form<FetchForm>,
) -> Result<Response, AppError> {
    let n = herd_moderation::fetch::fetch_now(&state.pool, op.id(), f.instance.trim().parse().ok())
        .await
        .map_err(app_error)?;
    session::flash(
        &session,
        "ok",
        format!("Fetching the reports of {n} server(s) now."),
    )
    .await?;
    Ok(Redirect::to("/operator/moderation").into_response())
}

#[derive(Template)]
#[template(path = "operator_moderation_report.html")]
struct ReportPage {
    l: Layout,
    v: ReportView,
    row: ReportRow,
    statuses: Vec<(String, String)>,
    rules: Vec<String>,
    decisions: Vec<DecisionView>,
    choices: Vec<Decision>,
    can_reopen: bool,
    policy_at: String,
    form: DecideFields,
    time_form: TimeFields,
    time: Vec<(String, store::TimeEntry)>,
    errors: FieldErrors,
}

async fn report_page(
    state: &AppState,
    session: &Session,
    op: &User,
    id: Uuid,
    (form, time_form): (DecideFields, TimeFields),
    errors: FieldErrors,
) -> Result<ReportPage, AppError> {
    let v = views::report(&state.pool, op.id(), id)
        .await
        .map_err(app_error)?;
    Ok(ReportPage {
        l: Layout::new(session, Some(op)).await?,
        row: ReportRow::from(v.report.clone()),
        statuses: statuses(&v.report),
        rules: rules(&v.report),
        decisions: v
            .decisions
            .iter()
            .cloned()
            .map(DecisionView::from)
            .collect(),
        choices: Decision::moderator_choices(),
        can_reopen: v.report.state == ReportState::Resolved,
        policy_at: v
            .policy
            .as_ref()
            .map(|p| datetime(p.created_at))
            .unwrap_or_default(),
        time: v
            .time
            .iter()
            .map(|t| (datetime(t.created_at), t.clone()))
            .collect(),
        v,
        form,
        time_form: TimeFields {
            // A fresh one-time token for a form not posted yet.
            submission: if time_form.submission.is_empty() {
                Uuid::now_v7().to_string()
            } else {
                time_form.submission
            },
            ..time_form
        },
        errors,
    })
}

async fn show(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    render(
        &report_page(
            &state,
            &session,
            &op,
            id,
            Default::default(),
            FieldErrors::default(),
        )
        .await?,
    )
}

#[derive(Debug, Default, Deserialize)]
struct DecideFields {
    #[serde(default)]
    decision: String,
    #[serde(default)]
    note: String,
    notify_user: Option<String>,
    #[serde(default)]
    minutes: String,
}

async fn decide(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(f): Form<DecideFields>,
) -> Result<Response, AppError> {
    let form = DecisionForm {
        decision: f.decision.clone(),
        note: f.note.clone(),
        notify_user: f.notify_user.is_some(),
        minutes: f.minutes.clone(),
    };
    let base = state
        .config
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    match decide::decide(&state.pool, who(&op, &ip), id, &form, &base).await {
        Ok(_) => {
            session::flash(
                &session,
                "ok",
                "Decision recorded; it is on its way to the server.",
            )
            .await?;
            Ok(Redirect::to(&format!("/operator/moderation/reports/{id}")).into_response())
        }
        Err(ModerationError::Invalid(list)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &report_page(
                &state,
                &session,
                &op,
                id,
                (f, TimeFields::default()),
                field_errors(list),
            )
            .await?,
        ),
        Err(e) => Err(app_error(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct TimeFields {
    #[serde(default)]
    time_minutes: String,
    #[serde(default)]
    time_note: String,
    /// The form's one-time token: the same form posted twice logs the time once.
    #[serde(default)]
    submission: String,
}

async fn log_time(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(f): Form<TimeFields>,
) -> Result<Response, AppError> {
    match decide::log_time(
        &state.pool,
        who(&op, &ip),
        id,
        (&f.time_minutes, &f.time_note),
        Uuid::parse_str(&f.submission).ok(),
    )
    .await
    {
        Ok(logged) => {
            let said = if logged {
                "Time logged."
            } else {
                "This time was logged already (the form was sent twice)."
            };
            session::flash(&session, "ok", said).await?;
            Ok(Redirect::to(&format!("/operator/moderation/reports/{id}#time")).into_response())
        }
        Err(ModerationError::Invalid(list)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &report_page(
                &state,
                &session,
                &op,
                id,
                (DecideFields::default(), f),
                field_errors(list),
            )
            .await?,
        ),
        Err(e) => Err(app_error(e)),
    }
}

async fn retry(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(decision): Path<Uuid>,
) -> Result<Response, AppError> {
    match decide::retry(&state.pool, who(&op, &ip), decision).await {
        Ok(()) => session::flash(&session, "ok", "The action is queued again.").await?,
        Err(ModerationError::Invalid(list)) => {
            let message: Vec<String> = list.into_iter().map(|(_, m)| m).collect();
            session::flash(&session, "error", message.join(" ")).await?;
        }
        Err(e) => return Err(app_error(e)),
    }
    Ok(Redirect::to("/operator/moderation").into_response())
}

#[derive(Template)]
#[template(path = "operator_moderation_settings.html")]
struct SettingsPage {
    l: Layout,
    operators: Vec<OperatorRow>,
    plans: Vec<PlanTerms>,
    /// May this operator give and take the moderator role?
    may_manage: bool,
    email: String,
    errors: FieldErrors,
}

async fn settings_page(
    state: &AppState,
    session: &Session,
    op: &User,
    email: String,
    errors: FieldErrors,
) -> Result<SettingsPage, AppError> {
    Ok(SettingsPage {
        l: Layout::new(session, Some(op)).await?,
        operators: store::operators(&state.pool).await?,
        plans: store::plan_terms(&state.pool).await?,
        may_manage: moderators::may_manage(&state.pool, op.id())
            .await
            .map_err(app_error)?,
        email,
        errors,
    })
}

async fn settings(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
) -> Result<Response, AppError> {
    render(&settings_page(&state, &session, &op, String::new(), FieldErrors::default()).await?)
}

/// After a settings form (here or in [`super::standing`]): a flash and back to the
/// settings, or the settings with the refusal by its field.
pub(super) async fn settings_answer(
    state: &AppState,
    session: &Session,
    op: &User,
    result: Result<(), ModerationError>,
    done: &str,
    email: String,
) -> Result<Response, AppError> {
    match result {
        Ok(()) => {
            session::flash(session, "ok", done).await?;
            Ok(Redirect::to("/operator/moderation/settings").into_response())
        }
        Err(ModerationError::Invalid(list)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &settings_page(state, session, op, email, field_errors(list)).await?,
        ),
        Err(e) => Err(app_error(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct GrantForm {
    #[serde(default)]
    email: String,
}

async fn grant(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Form(f): Form<GrantForm>,
) -> Result<Response, AppError> {
    let result = moderators::grant(&state.pool, who(&op, &ip), &f.email).await;
    settings_answer(
        &state,
        &session,
        &op,
        result,
        "The operator may moderate now.",
        f.email,
    )
    .await
}

async fn withdraw(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(user): Path<Uuid>,
) -> Result<Response, AppError> {
    let result = moderators::withdraw(&state.pool, who(&op, &ip), user).await;
    settings_answer(
        &state,
        &session,
        &op,
        result,
        "The moderator role is withdrawn.",
        String::new(),
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
struct TermsForm {
    included: Option<String>,
    #[serde(default)]
    monthly_hours: String,
    #[serde(default)]
    response_target_hours: String,
}

async fn save_terms(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(code): Path<String>,
    Form(f): Form<TermsForm>,
) -> Result<Response, AppError> {
    let result = connections::save_terms(
        &state.pool,
        who(&op, &ip),
        &code,
        f.included.is_some(),
        &f.monthly_hours,
        &f.response_target_hours,
    )
    .await
    .map(drop);
    settings_answer(
        &state,
        &session,
        &op,
        result,
        "The plan's moderation terms are saved.",
        String::new(),
    )
    .await
}
