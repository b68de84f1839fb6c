//! The portal's support desk: the organization's tickets (members see those they opened
//! and those shared with the organization; owners and admins see all), opening a ticket,
//! and a ticket's page to reply, close, reopen and rate. Another organization's ticket,
//! or one the member may not see, is not found; internal notes are never shown here.

use super::FieldErrors;
use crate::auth::OrgCtx;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Capability, Routes};
use crate::session;
use crate::state::AppState;
use crate::uploads::FormWithFiles;
use crate::views::{datetime, render, render_status, Layout, Pager};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::ids::TicketId;
use herd_domain::support::{Category, Priority, SlaTarget};
use herd_store::support::{Message, Ticket};
use herd_store::Page;
use herd_support::attachments;
use herd_support::tickets::{self, Member, Opening, TicketView};
use herd_support::{SupportError, Who};
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    let view = Access::Org(Capability::View);
    r.get("/o/{slug}/support", view, list)
        .get("/o/{slug}/support/new", view, new_form)
        .post("/o/{slug}/support", view, open)
        .get("/o/{slug}/support/{ticket}", view, show)
        .post("/o/{slug}/support/{ticket}/reply", view, reply)
        .post("/o/{slug}/support/{ticket}/close", view, close)
        .post("/o/{slug}/support/{ticket}/reopen", view, reopen)
        .post("/o/{slug}/support/{ticket}/rate", view, rate)
}

/// A support error as the web answers it when no form is re-rendered.
pub(super) fn app_error(e: SupportError) -> AppError {
    match e {
        SupportError::NotFound => AppError::NotFound,
        SupportError::Store(s) => s.into(),
        SupportError::Invalid(m) => AppError::Internal(format!("unexpected refusal: {m:?}")),
        SupportError::Attachments(m) => AppError::Internal(m),
    }
}

pub(super) fn field_errors(list: Vec<(&'static str, String)>) -> FieldErrors {
    let mut errors = FieldErrors::default();
    for (field, message) in list {
        errors.add(field, message);
    }
    errors
}

/// A target's state in words: "due 2026-12-07 10:00 UTC (3 h 20 min left)".
pub(super) fn sla_text(t: &SlaTarget) -> String {
    let span = |secs: i64| {
        let m = secs.abs() / 60;
        if m >= 60 {
            format!("{} h {} min", m / 60, m % 60)
        } else {
            format!("{m} min")
        }
    };
    if let Some(met) = t.met_at {
        return if t.breached() {
            format!("met late, {}", datetime(met))
        } else {
            format!("met, {}", datetime(met))
        };
    }
    if t.paused {
        return format!(
            "paused, {} of support time left",
            span(t.remaining().max(0))
        );
    }
    match t.due {
        Some(due) if t.breached() => format!(
            "overdue since {} ({} over)",
            datetime(due),
            span(t.remaining())
        ),
        Some(due) => format!("due {} ({} left)", datetime(due), span(t.remaining())),
        None => "not running".to_owned(),
    }
}

pub(super) fn member<'a>(ctx: &'a OrgCtx, ip: &'a str) -> Member<'a> {
    Member {
        org: ctx.org.id(),
        role: ctx.role,
        who: Who {
            id: ctx.user.id(),
            name: &ctx.user.display_name,
            email: &ctx.user.email,
            ip,
        },
    }
}

/// A ticket in a list.
pub(super) struct Row {
    pub t: Ticket,
    pub opened: String,
}

impl From<Ticket> for Row {
    fn from(t: Ticket) -> Self {
        Self {
            opened: datetime(t.created_at),
            t,
        }
    }
}

#[derive(Template)]
#[template(path = "support.html")]
struct ListPage {
    l: Layout,
    ctx: OrgCtx,
    sees_all: bool,
    rows: Vec<Row>,
    pager: Pager,
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<u32>,
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Query(q): Query<PageQuery>,
) -> Result<Response, AppError> {
    let paged = tickets::list(&state.pool, member(&ctx, &ip), Page::new(q.page, None))
        .await
        .map_err(app_error)?;
    let base = format!("/o/{}/support", ctx.org.slug);
    render(&ListPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        sees_all: ctx.role.can(Capability::SeeAllTickets),
        pager: Pager::new(&base, &[], &paged),
        rows: paged.items.into_iter().map(Row::from).collect(),
        ctx,
    })
}

/// The new-ticket form as typed.
#[derive(Debug, Default, Deserialize)]
struct OpenForm {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    instance: String,
    shared: Option<String>,
}

#[derive(Template)]
#[template(path = "support_new.html")]
struct NewPage {
    l: Layout,
    ctx: OrgCtx,
    form: OpenForm,
    errors: FieldErrors,
    categories: &'static [Category],
    priorities: Vec<Priority>,
    urgent_allowed: bool,
    servers: Vec<(Uuid, String)>,
    hours: String,
}

async fn new_page(
    state: &AppState,
    session: &Session,
    ctx: OrgCtx,
    form: OpenForm,
    errors: FieldErrors,
) -> Result<NewPage, AppError> {
    let (tier, servers) = tickets::opening_choices(&state.pool, ctx.org.id())
        .await
        .map_err(app_error)?;
    Ok(NewPage {
        l: Layout::new(session, Some(&ctx.user)).await?,
        ctx,
        form,
        errors,
        categories: Category::ALL,
        priorities: Priority::ALL.to_vec(),
        urgent_allowed: tier.urgent_allowed,
        servers,
        hours: tier.hours.label(),
    })
}

async fn new_form(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
) -> Result<Response, AppError> {
    let form = OpenForm {
        priority: "normal".into(),
        category: "technical".into(),
        ..OpenForm::default()
    };
    render(&new_page(&state, &session, ctx, form, FieldErrors::default()).await?)
}

async fn open(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    FormWithFiles(form, files): FormWithFiles<OpenForm>,
) -> Result<Response, AppError> {
    let opening = Opening {
        subject: form.subject.clone(),
        body: form.body.clone(),
        category: form.category.clone(),
        priority: form.priority.clone(),
        instance: form.instance.clone(),
        shared_with_org: form.shared.is_some(),
    };
    let store = &state.config.support_attachments;
    match attachments::open(&state.pool, store, member(&ctx, &ip), &opening, files).await {
        Ok(id) => {
            session::flash(
                &session,
                "ok",
                "Your ticket is open; we answer by email and on this page.",
            )
            .await?;
            Ok(Redirect::to(&format!("/o/{}/support/{id}", ctx.org.slug)).into_response())
        }
        Err(SupportError::Invalid(list)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &new_page(&state, &session, ctx, form, field_errors(list)).await?,
        ),
        Err(e) => Err(app_error(e)),
    }
}

#[derive(Template)]
#[template(path = "support_ticket.html")]
struct TicketPage {
    l: Layout,
    ctx: OrgCtx,
    v: TicketView,
    messages: Vec<(Message, String)>,
    /// Each message's files.
    files: Vec<(Uuid, Vec<super::support_files::FileLink>)>,
    first_response: String,
    resolution: String,
    errors: FieldErrors,
    body: String,
    /// Who sees every ticket, in words ("owners and admins").
    who_sees_all: String,
    /// Merged into another ticket, or others merged into this one.
    merges: super::operator_support::merge::Sections,
}

async fn ticket_page(
    state: &AppState,
    session: &Session,
    ip: &str,
    ctx: OrgCtx,
    id: Uuid,
    errors: FieldErrors,
    body: String,
) -> Result<TicketPage, AppError> {
    let v = tickets::customer_view(&state.pool, member(&ctx, ip), TicketId(id))
        .await
        .map_err(app_error)?;
    let merges =
        super::operator_support::merge::Sections::for_member(state, member(&ctx, ip), &v.ticket)
            .await?;
    Ok(TicketPage {
        merges,
        l: Layout::new(session, Some(&ctx.user)).await?,
        messages: v
            .messages
            .iter()
            .map(|m| (m.clone(), datetime(m.created_at)))
            .collect(),
        first_response: sla_text(&v.sla.first_response),
        resolution: sla_text(&v.sla.resolution),
        files: super::support_files::links(&v, &format!("/o/{}/support", ctx.org.slug)),
        v,
        ctx,
        errors,
        body,
        who_sees_all: Capability::SeeAllTickets.who(),
    })
}

async fn show(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    render(
        &ticket_page(
            &state,
            &session,
            &ip,
            ctx,
            id,
            FieldErrors::default(),
            String::new(),
        )
        .await?,
    )
}

#[derive(Debug, Default, Deserialize)]
struct ReplyForm {
    #[serde(default)]
    body: String,
}

/// After an action on the ticket: a flash and back to its page, or the page again with
/// the refusal next to the field.
async fn answer(
    state: &AppState,
    session: &Session,
    ip: &str,
    ctx: OrgCtx,
    id: Uuid,
    result: Result<(), SupportError>,
    (done, body): (&str, String),
) -> Result<Response, AppError> {
    match result {
        Ok(()) => {
            session::flash(session, "ok", done).await?;
            Ok(Redirect::to(&format!("/o/{}/support/{id}", ctx.org.slug)).into_response())
        }
        Err(SupportError::Invalid(list)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &ticket_page(state, session, ip, ctx, id, field_errors(list), body).await?,
        ),
        Err(e) => Err(app_error(e)),
    }
}

async fn reply(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
    FormWithFiles(form, files): FormWithFiles<ReplyForm>,
) -> Result<Response, AppError> {
    let store = &state.config.support_attachments;
    let m = member(&ctx, &ip);
    let result =
        attachments::customer_reply(&state.pool, store, m, TicketId(id), &form.body, files).await;
    answer(
        &state,
        &session,
        &ip,
        ctx,
        id,
        result,
        ("Your reply was added.", form.body),
    )
    .await
}

async fn close(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let result = tickets::customer_close(&state.pool, member(&ctx, &ip), TicketId(id)).await;
    answer(
        &state,
        &session,
        &ip,
        ctx,
        id,
        result,
        ("The ticket is closed.", String::new()),
    )
    .await
}

async fn reopen(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let result = tickets::reopen(&state.pool, member(&ctx, &ip), TicketId(id)).await;
    answer(
        &state,
        &session,
        &ip,
        ctx,
        id,
        result,
        ("The ticket is open again.", String::new()),
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
struct RateForm {
    #[serde(default)]
    score: String,
    #[serde(default)]
    comment: String,
}

async fn rate(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
    Form(form): Form<RateForm>,
) -> Result<Response, AppError> {
    let result = tickets::rate(
        &state.pool,
        member(&ctx, &ip),
        TicketId(id),
        &form.score,
        &form.comment,
    )
    .await;
    answer(
        &state,
        &session,
        &ip,
        ctx,
        id,
        result,
        ("Thank you for your rating.", String::new()),
    )
    .await
}
