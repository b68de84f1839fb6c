//! Merging a duplicate ticket in the console: on the duplicate's page the operator names
//! the ticket to keep, confirms on a page that says what will happen (and who will not
//! follow the conversation there), and the duplicate goes into it. Also what a ticket's
//! page shows of merges, for the console and the portal.

use super::{ticket_page, who};
use crate::auth::Operator;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::pages::support::{app_error, field_errors};
use crate::pages::support_files::{self, FileLink};
use crate::pages::FieldErrors;
use crate::routes::{Access, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{datetime, render, render_status, Layout};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::ids::TicketId;
use herd_store::support::{Message, Ticket};
use herd_support::attachments::Attachment;
use herd_support::merge::{self, MergePlan, MergedInto, Merges};
use herd_support::SupportError;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

pub(super) fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get("/operator/support/{ticket}/merge", Operator, confirm)
        .post("/operator/support/{ticket}/merge", Operator, merge)
}

/// A ticket merged into the one shown, with its messages, their times and files.
pub struct FromSection {
    pub ticket: Ticket,
    pub merged_at: String,
    pub messages: Vec<(Message, String)>,
    pub files: Vec<(Uuid, Vec<FileLink>)>,
}

/// What a ticket's page shows of merges.
#[derive(Default)]
pub struct Sections {
    pub into: Option<MergedInto>,
    pub from: Vec<FromSection>,
}

impl Sections {
    /// `base`: the ticket pages' path (`/o/acme/support` or `/operator/support`).
    fn new(m: Merges, base: &str) -> Self {
        Sections {
            into: m.into,
            from: m
                .from
                .into_iter()
                .map(|f| FromSection {
                    files: file_links(&f.attachments, base),
                    merged_at: datetime(f.merged_at),
                    messages: f
                        .messages
                        .into_iter()
                        .map(|m| {
                            let at = datetime(m.created_at);
                            (m, at)
                        })
                        .collect(),
                    ticket: f.ticket,
                })
                .collect(),
        }
    }

    /// For a member on the portal: only what they may see, no internal notes.
    pub(in crate::pages) async fn for_member(
        state: &AppState,
        m: herd_support::tickets::Member<'_>,
        t: &Ticket,
    ) -> Result<Self, AppError> {
        let merges = merge::for_member(&state.pool, m, t)
            .await
            .map_err(app_error)?;
        Ok(Self::new(merges, &format!("/o/{}/support", t.org_slug)))
    }

    pub(super) async fn for_operator(state: &AppState, t: &Ticket) -> Result<Self, AppError> {
        let merges = merge::for_operator(&state.pool, t)
            .await
            .map_err(app_error)?;
        Ok(Self::new(merges, "/operator/support"))
    }
}

/// Files by message, as `support_files.html` lists them.
fn file_links(attachments: &[Attachment], base: &str) -> Vec<(Uuid, Vec<FileLink>)> {
    let mut out: Vec<(Uuid, Vec<FileLink>)> = Vec::new();
    for a in attachments {
        let link = support_files::link(a, base);
        match out.iter_mut().find(|(m, _)| *m == a.message_id) {
            Some((_, list)) => list.push(link),
            None => out.push((a.message_id, vec![link])),
        }
    }
    out
}

#[derive(Template)]
#[template(path = "operator_support_merge.html")]
struct ConfirmMergePage {
    l: Layout,
    p: MergePlan,
}

#[derive(Debug, Default, Deserialize)]
struct IntoQuery {
    #[serde(default)]
    into: String,
}

/// The ticket's page again with the refusal next to the merge field.
async fn refused(
    state: &AppState,
    session: &Session,
    op: &herd_store::users::User,
    id: Uuid,
    errors: FieldErrors,
    into: String,
) -> Result<Response, AppError> {
    let mut page =
        ticket_page(state, session, op, id, errors, String::new(), String::new()).await?;
    page.into = into;
    render_status(StatusCode::UNPROCESSABLE_ENTITY, &page)
}

async fn confirm(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Query(q): Query<IntoQuery>,
) -> Result<Response, AppError> {
    match merge::plan(&state.pool, TicketId(id), &q.into).await {
        Ok(p) => render(&ConfirmMergePage {
            l: Layout::new(&session, Some(&op)).await?,
            p,
        }),
        Err(SupportError::Invalid(list)) => {
            refused(&state, &session, &op, id, field_errors(list), q.into).await
        }
        Err(e) => Err(app_error(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct MergeForm {
    /// The id of the ticket to keep.
    #[serde(default)]
    into: String,
}

async fn merge(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<MergeForm>,
) -> Result<Response, AppError> {
    let Ok(target) = form.into.trim().parse::<Uuid>() else {
        let mut errors = FieldErrors::default();
        errors.add("into", "Enter the number of the ticket to keep, e.g. 1234.");
        return refused(&state, &session, &op, id, errors, String::new()).await;
    };
    let base = state.config.public_url.as_str().trim_end_matches('/');
    match merge::merge(
        &state.pool,
        who(&op, &ip),
        TicketId(id),
        TicketId(target),
        base,
    )
    .await
    {
        Ok(()) => {
            session::flash(
                &session,
                "ok",
                "The duplicate was merged into this ticket and closed.",
            )
            .await?;
            Ok(Redirect::to(&format!("/operator/support/{target}")).into_response())
        }
        Err(SupportError::Invalid(list)) => {
            refused(&state, &session, &op, id, field_errors(list), String::new()).await
        }
        Err(e) => Err(app_error(e)),
    }
}
