//! The operators' billing console: subscriptions (payment problems first), and the Stripe
//! webhook event log with each event's processing state and error, its payload, and a
//! "reprocess" action (audited) for an event that failed.

use crate::audit::{self, Actor};
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
use herd_billing::worker::STRIPE_EVENT_JOB;
use herd_store::billing::{self, EventFilter, StoredEvent, SubscriptionRow};
use herd_store::jobs::{self, JobRow, NewJob};
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
        jobs::enqueue(
            &mut *tx,
            NewJob {
                dedupe_key: Some(&e.id),
                ..NewJob::new(STRIPE_EVENT_JOB, json!({ "event_id": e.id }))
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
