//! The console's support desk: the queue (unassigned, mine, all open, breaching soon,
//! breached; filters; soonest due first), a ticket's page with replies, internal notes,
//! assignment, status and priority, and the editor of each plan's support tier. Every
//! action is audited by herd-support. Canned replies ([`canned`]), merging duplicates
//! ([`merge`]) and the dashboard ([`dashboard`]) have their own modules.

mod canned;
mod charts;
mod dashboard;
pub(super) mod merge;

use super::support::{app_error, field_errors, sla_text, Row};
use super::FieldErrors;
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
use herd_domain::ids::TicketId;
use herd_domain::support::{Category, Priority, Status};
use herd_domain::UserId;
use herd_store::support::{self as store, Message, QueueFilter, View};
use herd_store::users::User;
use herd_store::Page;
use herd_support::tickets::{self, AfterReply, TicketView};
use herd_support::tiers::{self, TierForm};
use herd_support::{SupportError, Who};
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    let r = r
        .get("/operator/support", Operator, queue)
        .get("/operator/support/tiers", Operator, tier_list)
        .get("/operator/support/tiers/{code}", Operator, tier_form)
        .post("/operator/support/tiers/{code}", Operator, tier_save)
        .get("/operator/support/{ticket}", Operator, show)
        .post("/operator/support/{ticket}/reply", Operator, reply)
        .post("/operator/support/{ticket}/note", Operator, note)
        .post("/operator/support/{ticket}/assign", Operator, assign)
        .post("/operator/support/{ticket}/status", Operator, status)
        .post("/operator/support/{ticket}/priority", Operator, priority);
    let r = canned::routes(r);
    let r = merge::routes(r);
    dashboard::routes(r)
}

fn who<'a>(op: &'a User, ip: &'a str) -> Who<'a> {
    Who {
        id: op.id(),
        name: &op.display_name,
        email: &op.email,
        ip,
    }
}

/// How long before its due time a ticket counts as breaching soon.
const SOON: time::Duration = time::Duration::hours(2);

#[derive(Debug, Default, Deserialize)]
struct QueueQuery {
    #[serde(default)]
    view: String,
    #[serde(default)]
    org: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    assignee: String,
    page: Option<u32>,
}

/// A queue row with its due time in words.
struct QueueRow {
    r: Row,
    due: String,
}

#[derive(Template)]
#[template(path = "operator_support.html")]
struct QueuePage {
    l: Layout,
    q: QueueQuery,
    view: View,
    views: [View; 5],
    categories: &'static [Category],
    priorities: &'static [Priority],
    operators: Vec<(Uuid, String)>,
    plans: Vec<String>,
    rows: Vec<QueueRow>,
    pager: Pager,
}

async fn queue(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<QueueQuery>,
) -> Result<Response, AppError> {
    let view = View::parse(q.view.trim()).unwrap_or(View::AllOpen);
    let text = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let filter = QueueFilter {
        view,
        me: op.id(),
        soon: time::OffsetDateTime::now_utc() + SOON,
        org_slug: text(&q.org),
        plan_code: text(&q.plan),
        category: Category::parse(q.category.trim()).ok(),
        priority: Priority::parse(q.priority.trim()).ok(),
        assignee: q.assignee.trim().parse::<Uuid>().ok().map(UserId),
    };
    let paged = store::queue(&state.pool, &filter, Page::new(q.page, None)).await?;
    let query = [
        ("view", view.as_str()),
        ("org", q.org.as_str()),
        ("plan", q.plan.as_str()),
        ("category", q.category.as_str()),
        ("priority", q.priority.as_str()),
        ("assignee", q.assignee.as_str()),
    ];
    let pager = Pager::new("/operator/support", &query, &paged);
    let plans = tiers::all(&state.pool)
        .await
        .map_err(app_error)?
        .into_iter()
        .map(|(p, _)| p.code)
        .collect();
    let rows = paged
        .items
        .into_iter()
        .map(|t| {
            let due = match (t.next_due, t.status) {
                (_, Status::WaitingOnCustomer) => "paused".to_owned(),
                (Some(d), _) => datetime(d),
                (None, _) => "—".to_owned(),
            };
            QueueRow {
                r: Row::from(t),
                due,
            }
        })
        .collect();
    render(&QueuePage {
        l: Layout::new(&session, Some(&op)).await?,
        view,
        views: View::ALL,
        categories: Category::ALL,
        priorities: Priority::ALL,
        operators: store::operators(&state.pool).await?,
        plans,
        rows,
        pager,
        q,
    })
}

#[derive(Template)]
#[template(path = "operator_support_ticket.html")]
struct TicketPage {
    l: Layout,
    v: TicketView,
    messages: Vec<(Message, String)>,
    first_response: String,
    resolution: String,
    /// (id, name, assigned to this ticket)
    operators: Vec<(Uuid, String, bool)>,
    statuses: &'static [Status],
    priorities: &'static [Priority],
    errors: FieldErrors,
    body: String,
    note: String,
    opened: String,
    hours: String,
    /// Each message's files.
    files: Vec<(Uuid, Vec<super::support_files::FileLink>)>,
    /// Canned replies offered, grouped ("For billing tickets", "Other replies").
    canned: Vec<canned::Group>,
    canned_selected: String,
    merges: merge::Sections,
    /// Where this ticket may be merged (the organization's other open tickets).
    merge_candidates: Vec<herd_store::support_ops::TicketRef>,
    into: String,
}

async fn ticket_page(
    state: &AppState,
    session: &Session,
    op: &User,
    id: Uuid,
    errors: FieldErrors,
    body: String,
    note: String,
) -> Result<TicketPage, AppError> {
    let v = tickets::operator_view(&state.pool, TicketId(id))
        .await
        .map_err(app_error)?;
    let canned = canned::groups(state, v.ticket.category).await?;
    let merges = merge::Sections::for_operator(state, &v.ticket).await?;
    let merge_candidates = herd_support::merge::candidates(&state.pool, &v.ticket)
        .await
        .map_err(app_error)?;
    Ok(TicketPage {
        canned,
        canned_selected: String::new(),
        merges,
        merge_candidates,
        into: String::new(),
        l: Layout::new(session, Some(op)).await?,
        messages: v
            .messages
            .iter()
            .map(|m| (m.clone(), datetime(m.created_at)))
            .collect(),
        first_response: sla_text(&v.sla.first_response),
        resolution: sla_text(&v.sla.resolution),
        opened: datetime(v.ticket.created_at),
        files: super::support_files::links(&v, "/operator/support"),
        hours: v.tier.hours.label(),
        operators: store::operators(&state.pool)
            .await?
            .into_iter()
            .map(|(id, name)| (id, name, v.ticket.assignee_id == Some(id)))
            .collect(),
        statuses: Status::ALL,
        priorities: Priority::ALL,
        v,
        errors,
        body,
        note,
    })
}

async fn show(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    render(
        &ticket_page(
            &state,
            &session,
            &op,
            id,
            FieldErrors::default(),
            String::new(),
            String::new(),
        )
        .await?,
    )
}

async fn answer(
    state: &AppState,
    session: &Session,
    op: &User,
    id: Uuid,
    result: Result<(), SupportError>,
    done: &str,
    (body, note): (String, String),
) -> Result<Response, AppError> {
    match result {
        Ok(()) => {
            session::flash(session, "ok", done).await?;
            Ok(Redirect::to(&format!("/operator/support/{id}")).into_response())
        }
        Err(SupportError::Invalid(list)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &ticket_page(state, session, op, id, field_errors(list), body, note).await?,
        ),
        Err(e) => Err(app_error(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ReplyForm {
    #[serde(default)]
    body: String,
    #[serde(default)]
    then: String,
}

async fn reply(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    crate::uploads::FormWithFiles(form, files): crate::uploads::FormWithFiles<ReplyForm>,
) -> Result<Response, AppError> {
    let after = match form.then.as_str() {
        "wait" => AfterReply::WaitOnCustomer,
        "resolve" => AfterReply::Resolve,
        _ => AfterReply::Keep,
    };
    let base = state
        .config
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let result = herd_support::attachments::operator_reply(
        &state.pool,
        &state.config.support_attachments,
        who(&op, &ip),
        TicketId(id),
        &form.body,
        after,
        &base,
        files,
    )
    .await;
    let done = "Reply sent; the customer is emailed.";
    answer(
        &state,
        &session,
        &op,
        id,
        result,
        done,
        (form.body, String::new()),
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
struct NoteForm {
    #[serde(default)]
    note: String,
}

async fn note(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<NoteForm>,
) -> Result<Response, AppError> {
    let result = tickets::note(&state.pool, who(&op, &ip), TicketId(id), &form.note).await;
    let done = "Internal note added.";
    answer(
        &state,
        &session,
        &op,
        id,
        result,
        done,
        (String::new(), form.note),
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
struct AssignForm {
    #[serde(default)]
    assignee: String,
}

async fn assign(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<AssignForm>,
) -> Result<Response, AppError> {
    let result = match form.assignee.trim() {
        "" => tickets::assign(&state.pool, who(&op, &ip), TicketId(id), None).await,
        s => match s.parse::<Uuid>() {
            Ok(a) => {
                tickets::assign(&state.pool, who(&op, &ip), TicketId(id), Some(UserId(a))).await
            }
            Err(_) => Err(SupportError::invalid("assignee", "Choose an operator.")),
        },
    };
    let done = "Assignment saved.";
    answer(&state, &session, &op, id, result, done, Default::default()).await
}

#[derive(Debug, Default, Deserialize)]
struct StatusForm {
    #[serde(default)]
    status: String,
}

async fn status(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<StatusForm>,
) -> Result<Response, AppError> {
    let result =
        tickets::change_status(&state.pool, who(&op, &ip), TicketId(id), form.status.trim()).await;
    let done = "Status changed.";
    answer(&state, &session, &op, id, result, done, Default::default()).await
}

#[derive(Debug, Default, Deserialize)]
struct PriorityForm {
    #[serde(default)]
    priority: String,
}

async fn priority(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<PriorityForm>,
) -> Result<Response, AppError> {
    let result = tickets::change_priority(
        &state.pool,
        who(&op, &ip),
        TicketId(id),
        form.priority.trim(),
    )
    .await;
    let done = "Priority changed.";
    answer(&state, &session, &op, id, result, done, Default::default()).await
}

/// A plan's tier in the list.
struct TierRowView {
    code: String,
    name: String,
    hours: String,
    urgent: bool,
    custom: bool,
    first: Vec<String>,
}

#[derive(Template)]
#[template(path = "operator_support_tiers.html")]
struct TiersPage {
    l: Layout,
    rows: Vec<TierRowView>,
}

async fn tier_list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
) -> Result<Response, AppError> {
    let rows = tiers::all(&state.pool)
        .await
        .map_err(app_error)?
        .into_iter()
        .map(|(p, t)| TierRowView {
            first: TierForm::from_tier(&t).first_response_hours.to_vec(),
            hours: t.hours.label(),
            urgent: t.urgent_allowed,
            custom: p.tier.is_some(),
            code: p.code,
            name: p.name,
        })
        .collect();
    render(&TiersPage {
        l: Layout::new(&session, Some(&op)).await?,
        rows,
    })
}

#[derive(Debug, Default, Deserialize)]
struct TierFields {
    urgent_allowed: Option<String>,
    around_the_clock: Option<String>,
    #[serde(default)]
    start: String,
    #[serde(default)]
    end: String,
    #[serde(default)]
    time_zone: String,
    #[serde(default)]
    first_low: String,
    #[serde(default)]
    first_normal: String,
    #[serde(default)]
    first_high: String,
    #[serde(default)]
    first_urgent: String,
    #[serde(default)]
    resolution_low: String,
    #[serde(default)]
    resolution_normal: String,
    #[serde(default)]
    resolution_high: String,
    #[serde(default)]
    resolution_urgent: String,
}

impl From<TierFields> for TierForm {
    fn from(f: TierFields) -> Self {
        TierForm {
            urgent_allowed: f.urgent_allowed.is_some(),
            around_the_clock: f.around_the_clock.is_some(),
            start: f.start,
            end: f.end,
            time_zone: f.time_zone,
            first_response_hours: [f.first_low, f.first_normal, f.first_high, f.first_urgent],
            resolution_hours: [
                f.resolution_low,
                f.resolution_normal,
                f.resolution_high,
                f.resolution_urgent,
            ],
        }
    }
}

/// One priority's fields in the editor.
struct TargetFields {
    label: &'static str,
    first_name: &'static str,
    first: String,
    resolution_name: &'static str,
    resolution: String,
}

#[derive(Template)]
#[template(path = "operator_support_tier_edit.html")]
struct TierEditPage {
    l: Layout,
    code: String,
    name: String,
    form: TierForm,
    targets: Vec<TargetFields>,
    errors: FieldErrors,
}

fn tier_edit_page(
    l: Layout,
    code: String,
    name: String,
    form: TierForm,
    errors: FieldErrors,
) -> TierEditPage {
    const FIRST: [&str; 4] = ["first_low", "first_normal", "first_high", "first_urgent"];
    const RES: [&str; 4] = [
        "resolution_low",
        "resolution_normal",
        "resolution_high",
        "resolution_urgent",
    ];
    let targets = Priority::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| TargetFields {
            label: p.label(),
            first_name: FIRST[i],
            first: form.first_response_hours[i].clone(),
            resolution_name: RES[i],
            resolution: form.resolution_hours[i].clone(),
        })
        .collect();
    TierEditPage {
        l,
        code,
        name,
        form,
        targets,
        errors,
    }
}

async fn tier_form(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(code): Path<String>,
) -> Result<Response, AppError> {
    let plan = store::plan_tier(&state.pool, &code)
        .await?
        .ok_or(AppError::NotFound)?;
    let form = TierForm::from_tier(&tiers::tier_of_plan(&plan));
    render(&tier_edit_page(
        Layout::new(&session, Some(&op)).await?,
        code,
        plan.name,
        form,
        FieldErrors::default(),
    ))
}

async fn tier_save(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(code): Path<String>,
    Form(fields): Form<TierFields>,
) -> Result<Response, AppError> {
    let plan = store::plan_tier(&state.pool, &code)
        .await?
        .ok_or(AppError::NotFound)?;
    let form = TierForm::from(fields);
    match tiers::save(&state.pool, who(&op, &ip), &code, &form).await {
        Ok(()) => {
            session::flash(
                &session,
                "ok",
                format!("Support tier of {} saved.", plan.name),
            )
            .await?;
            Ok(Redirect::to("/operator/support/tiers").into_response())
        }
        Err(SupportError::Invalid(list)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &tier_edit_page(
                Layout::new(&session, Some(&op)).await?,
                code,
                plan.name,
                form,
                field_errors(list),
            ),
        ),
        Err(e) => Err(app_error(e)),
    }
}
