//! The console's orders paid by invoice: each waits for an operator, who approves it (the
//! contract is made, the server starts) or declines it with a reason the organization
//! reads. Both audited.

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
use herd_billing::fulfil::{self, ApprovalError, Approver};
use herd_store::billing::{self, AwaitingOrder};
use herd_store::Page;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get("/operator/orders", Operator, list)
        .post("/operator/orders/{order}/approve", Operator, approve)
        .post("/operator/orders/{order}/decline", Operator, decline)
}

/// An order as the list shows it.
pub struct Row {
    pub o: AwaitingOrder,
    pub at: String,
}

#[derive(Template)]
#[template(path = "operator_orders.html")]
struct OrdersPage {
    l: Layout,
    rows: Vec<Row>,
    pager: Pager,
    errors: FieldErrors,
    /// The order the errors are about.
    failed: Option<Uuid>,
}

async fn page(
    state: &AppState,
    session: &Session,
    op: &herd_store::users::User,
    errors: FieldErrors,
    failed: Option<Uuid>,
    page_no: Option<u32>,
) -> Result<OrdersPage, AppError> {
    let paged = billing::awaiting_approval(&state.pool, Page::new(page_no, None)).await?;
    let pager = Pager::new("/operator/orders", &[], &paged);
    Ok(OrdersPage {
        l: Layout::new(session, Some(op)).await?,
        pager,
        rows: paged
            .items
            .into_iter()
            .map(|o| Row {
                at: datetime(o.created_at),
                o,
            })
            .collect(),
        errors,
        failed,
    })
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<ListQuery>,
) -> Result<Response, AppError> {
    render(&page(&state, &session, &op, FieldErrors::default(), None, q.page).await?)
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    page: Option<u32>,
}

fn refused(e: ApprovalError) -> Result<String, AppError> {
    match e {
        ApprovalError::NotFound => Err(AppError::NotFound),
        ApprovalError::Fleet(f) => Err(f.into()),
        other => Ok(other.to_string()),
    }
}

async fn approve(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let who = Approver {
        id: op.id(),
        email: &op.email,
        ip: &ip,
    };
    match fulfil::approve_invoice_order(&state.pool, Some(who), id).await {
        Ok(a) => {
            let contract = if a.new_contract {
                "its contract was made from the plan"
            } else {
                "the organization's existing contract was kept"
            };
            session::flash(
                &session,
                "ok",
                format!("Order approved: the server is being set up, and {contract}."),
            )
            .await?;
        }
        Err(e) => session::flash(&session, "error", refused(e)?).await?,
    }
    Ok(Redirect::to("/operator/orders").into_response())
}

#[derive(Debug, Default, Deserialize)]
struct DeclineForm {
    #[serde(default)]
    reason: String,
}

async fn decline(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<DeclineForm>,
) -> Result<Response, AppError> {
    let who = Approver {
        id: op.id(),
        email: &op.email,
        ip: &ip,
    };
    match fulfil::decline_invoice_order(&state.pool, who, id, &form.reason).await {
        Ok(()) => {
            session::flash(&session, "ok", "Order declined; the organization sees why.").await?;
            Ok(Redirect::to("/operator/orders").into_response())
        }
        Err(ApprovalError::NoReason) => {
            let mut errors = FieldErrors::default();
            errors.add("reason", ApprovalError::NoReason);
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &page(&state, &session, &op, errors, Some(id), None).await?,
            )
        }
        Err(e) => {
            session::flash(&session, "error", refused(e)?).await?;
            Ok(Redirect::to("/operator/orders").into_response())
        }
    }
}
