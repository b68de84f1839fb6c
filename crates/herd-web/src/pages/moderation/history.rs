//! A deleted server's moderation history in the portal (owners and admins, as the live
//! monthly report): the months from its first moderation activity to its last, each with
//! its monthly report as CSV, for transparency reports. The server's personal data was
//! erased when it was deleted; these pages show only its address, plan and months, and the
//! CSV only counts, categories, actions and times.

use super::app_error;
use crate::auth::OrgCtx;
use crate::error::AppError;
use crate::routes::{Access, Capability, Routes};
use crate::state::AppState;
use crate::views::{render, Layout};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use herd_moderation::views;
use herd_store::moderation::DeletedServer;
use serde::Deserialize;
use time::OffsetDateTime;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    let m = Access::Org(Capability::ManageModeration);
    r.get("/o/{slug}/moderation/deleted/{server}", m, show).get(
        "/o/{slug}/moderation/deleted/{server}/report.csv",
        m,
        csv,
    )
}

/// `YYYY-MM` of a month's first instant.
fn month_of(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}", t.year(), u8::from(t.month()))
}

/// A deleted server in the moderation index, with its months in words.
pub struct DeletedRow {
    pub d: DeletedServer,
    /// "2026-03 to 2026-11" (or one month).
    pub months: String,
}

impl From<DeletedServer> for DeletedRow {
    fn from(d: DeletedServer) -> Self {
        let (first, last) = (month_of(d.first_month), month_of(d.last_month));
        Self {
            months: if first == last {
                first
            } else {
                format!("{first} to {last}")
            },
            d,
        }
    }
}

#[derive(Template)]
#[template(path = "moderation_deleted.html")]
struct HistoryPage {
    l: Layout,
    ctx: OrgCtx,
    d: DeletedServer,
    months: Vec<String>,
}

async fn show(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, server)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let h = views::deleted_history(&state.pool, ctx.org.id(), server)
        .await
        .map_err(app_error)?;
    render(&HistoryPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        ctx,
        d: h.server,
        months: h.months,
    })
}

#[derive(Debug, Deserialize)]
struct MonthQuery {
    month: Option<String>,
}

async fn csv(
    State(state): State<AppState>,
    ctx: OrgCtx,
    Path((_slug, server)): Path<(String, Uuid)>,
    Query(q): Query<MonthQuery>,
) -> Result<Response, AppError> {
    // Without a month (or with one that is no month): the server's last.
    let month = q.month.as_deref().and_then(views::parse_month);
    let report = views::deleted_monthly(&state.pool, ctx.org.id(), server, month)
        .await
        .map_err(app_error)?;
    Ok(super::csv_download(&report))
}
