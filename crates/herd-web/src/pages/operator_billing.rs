//! The operators' billing console: subscriptions (payment problems first), and the Stripe
//! webhook event log with each event's processing state and error, its payload, and a
//! "reprocess" action (audited) for an event that failed; and each tenant's access state,
//! where operators extend a grace period or pause the clock, with the reason audited.

use super::FieldErrors;
use crate::audit::{self, Actor};
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
use herd_billing::jobs::StripeEvent;
use herd_store::access::{TenantAccess, Transition};
use herd_store::billing::{self, EventFilter, StoredEvent, SubscriptionRow};
use herd_store::jobs::{self, JobRow};
use herd_store::Page;
use serde::Deserialize;
use serde_json::json;
use tower_sessions::Session;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get("/operator/billing", Operator, subscriptions)
        .get("/operator/billing/events", Operator, events)
        .get("/operator/billing/events/{event}", Operator, event)
        .post(
            "/operator/billing/events/{event}/reprocess",
            Operator,
            reprocess,
        )
        .get("/operator/billing/access/{subject}", Operator, access_page)
        .post(
            "/operator/billing/access/{subject}/grace",
            Operator,
            extend_grace,
        )
        .post("/operator/billing/access/{subject}/clock", Operator, clock)
}

#[derive(Debug, Default, Deserialize)]
struct SubscriptionsQuery {
    #[serde(default)]
    problems: String,
    page: Option<u32>,
}

#[derive(Template)]
#[template(path = "operator_billing.html")]
struct SubscriptionsPage {
    l: Layout,
    problems_only: bool,
    rows: Vec<(SubscriptionRow, String, String)>,
    counts: Vec<(String, i64)>,
    pager: Pager,
}

async fn subscriptions(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<SubscriptionsQuery>,
) -> Result<Response, AppError> {
    let problems_only = q.problems == "1";
    let paged =
        billing::list_subscriptions(&state.pool, problems_only, Page::new(q.page, None)).await?;
    let pager = Pager::new(
        "/operator/billing",
        &[("problems", q.problems.as_str())],
        &paged,
    );
    render(&SubscriptionsPage {
        l: Layout::new(&session, Some(&op)).await?,
        problems_only,
        counts: billing::event_counts(&state.pool).await?,
        rows: paged
            .items
            .into_iter()
            .map(|s| {
                let since = datetime(s.status_since);
                let end = s.current_period_end.map(datetime).unwrap_or_default();
                (s, since, end)
            })
            .collect(),
        pager,
    })
}

#[derive(Debug, Default, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    r#type: String,
    page: Option<u32>,
}

#[derive(Template)]
#[template(path = "operator_events.html")]
struct EventsPage {
    l: Layout,
    q: EventsQuery,
    rows: Vec<(StoredEvent, String)>,
    pager: Pager,
}

async fn events(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<EventsQuery>,
) -> Result<Response, AppError> {
    let filter = EventFilter {
        state: q.state.trim().to_owned(),
        type_: q.r#type.trim().to_owned(),
    };
    let paged = billing::list_events(&state.pool, &filter, Page::new(q.page, None)).await?;
    let pager = Pager::new(
        "/operator/billing/events",
        &[("state", q.state.as_str()), ("type", q.r#type.as_str())],
        &paged,
    );
    render(&EventsPage {
        l: Layout::new(&session, Some(&op)).await?,
        rows: paged
            .items
            .into_iter()
            .map(|e| {
                let at = datetime(e.received_at);
                (e, at)
            })
            .collect(),
        q,
        pager,
    })
}

#[derive(Template)]
#[template(path = "operator_event.html")]
struct EventPage {
    l: Layout,
    e: StoredEvent,
    received: String,
    created: String,
    payload: String,
    job: Option<JobRow>,
}

async fn event(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let e = billing::event(&state.pool, &id)
        .await?
        .ok_or(AppError::NotFound)?;
    let payload = serde_json::from_str::<serde_json::Value>(&e.payload)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| e.payload.clone());
    render(&EventPage {
        l: Layout::new(&session, Some(&op)).await?,
        received: datetime(e.received_at),
        created: datetime(e.created),
        job: jobs::by_key(&state.pool, &e.id).await?,
        payload,
        e,
    })
}

async fn reprocess(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let e = billing::event(&state.pool, &id)
        .await?
        .ok_or(AppError::NotFound)?;
    let mut tx = state.pool.begin().await?;
    if !jobs::requeue_by_key(&mut *tx, &e.id).await? {
        herd_jobs::enqueue(
            &mut *tx,
            &StripeEvent {
                event_id: e.id.clone(),
                subscription: e.subscription_id.clone(),
            },
        )
        .await?;
    }
    billing::mark_event(&mut *tx, &e.id, "pending", None).await?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(&op),
            ip: &ip,
        },
        None,
        "billing.event.reprocessed",
        e.id.clone(),
        json!({ "type": e.type_, "previous_state": e.state, "previous_error": e.last_error }),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &session,
        "ok",
        format!("{} is queued for processing again.", e.id),
    )
    .await?;
    Ok(Redirect::to(&format!("/operator/billing/events/{}", e.id)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct OverrideForm {
    #[serde(default)]
    until: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    pause: String,
}

#[derive(Template)]
#[template(path = "operator_access.html")]
struct AccessPage {
    l: Layout,
    a: TenantAccess,
    next_at: String,
    grace_until: String,
    paused_since: String,
    transitions: Vec<(Transition, String)>,
    form: OverrideForm,
    errors: FieldErrors,
}

async fn access_view(
    state: &AppState,
    session: &Session,
    op: &herd_store::users::User,
    subject: &str,
    form: OverrideForm,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, AppError> {
    let a = herd_store::access::get(&state.pool, subject)
        .await?
        .ok_or(AppError::NotFound)?;
    let transitions = herd_store::access::transitions_of(&state.pool, subject)
        .await?
        .into_iter()
        .map(|t| {
            let at = datetime(t.at);
            (t, at)
        })
        .collect();
    render_status(
        status,
        &AccessPage {
            l: Layout::new(session, Some(op)).await?,
            next_at: a.next_at.map(datetime).unwrap_or_default(),
            grace_until: a.grace_until.map(datetime).unwrap_or_default(),
            paused_since: a.paused_since.map(datetime).unwrap_or_default(),
            transitions,
            a,
            form,
            errors,
        },
    )
}

async fn access_page(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(subject): Path<String>,
) -> Result<Response, AppError> {
    access_view(
        &state,
        &session,
        &op,
        &subject,
        OverrideForm::default(),
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

/// Records an operator's override with its reason, then recomputes the subject.
async fn apply_override(
    state: &AppState,
    session: &Session,
    op: &herd_store::users::User,
    ip: &str,
    subject: &str,
    (action, details): (&str, serde_json::Value),
    change: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<(), herd_store::StoreError>,
) -> Result<Response, AppError> {
    let a = herd_store::access::get(&state.pool, subject)
        .await?
        .ok_or(AppError::NotFound)?;
    let mut tx = state.pool.begin().await?;
    change(&mut tx).await?;
    audit::record(
        &mut tx,
        Actor { user: Some(op), ip },
        Some(herd_domain::OrgId(a.org_id)),
        action,
        subject.to_owned(),
        details,
    )
    .await?;
    tx.commit().await?;
    herd_billing::access::refresh_subject(
        &state.pool,
        subject,
        time::OffsetDateTime::now_utc(),
        state.stripe.as_ref(),
    )
    .await?;
    session::flash(
        session,
        "ok",
        "Saved; the tenant's state is recomputed.".to_owned(),
    )
    .await?;
    Ok(Redirect::to(&format!("/operator/billing/access/{subject}")).into_response())
}

fn reason(form: &OverrideForm, errors: &mut FieldErrors) -> String {
    let r = form.reason.trim().to_owned();
    if r.is_empty() || r.chars().count() > 500 {
        errors.add(
            "reason",
            "Say why (at most 500 characters); it goes to the audit log.",
        );
    }
    r
}

async fn extend_grace(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(subject): Path<String>,
    Form(form): Form<OverrideForm>,
) -> Result<Response, AppError> {
    let mut errors = FieldErrors::default();
    let why = reason(&form, &mut errors);
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let today = time::OffsetDateTime::now_utc().date();
    let until = match time::Date::parse(form.until.trim(), &format) {
        Ok(d) if d > today && d <= today + time::Duration::days(366) => Some(d),
        _ => {
            errors.add(
                "until",
                "Enter a date within the next year, like 2026-12-31.",
            );
            None
        }
    };
    let Some(until) = until.filter(|_| errors.is_empty()) else {
        return access_view(
            &state,
            &session,
            &op,
            &subject,
            form,
            errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let until = until
        .with_hms(23, 59, 59)
        .unwrap_or(until.midnight())
        .assume_utc();
    apply_override(
        &state,
        &session,
        &op,
        &ip,
        &subject,
        (
            "billing.access.grace_extended",
            json!({ "until": until.to_string(), "reason": why }),
        ),
        async |conn| herd_store::access::set_grace_until(conn, &subject, until).await,
    )
    .await
}

async fn clock(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(subject): Path<String>,
    Form(form): Form<OverrideForm>,
) -> Result<Response, AppError> {
    let mut errors = FieldErrors::default();
    let why = reason(&form, &mut errors);
    if !errors.is_empty() {
        return access_view(
            &state,
            &session,
            &op,
            &subject,
            form,
            errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let pause = form.pause == "1";
    apply_override(
        &state,
        &session,
        &op,
        &ip,
        &subject,
        (
            if pause {
                "billing.access.clock_paused"
            } else {
                "billing.access.clock_resumed"
            },
            json!({ "reason": why }),
        ),
        async |conn| herd_store::access::set_paused(conn, &subject, pause).await,
    )
    .await
}
