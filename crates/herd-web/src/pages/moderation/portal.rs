//! The portal's moderation pages (owners and admins): the organization's servers, and per
//! server its connection (the moderator account's token, never shown back), the policy
//! editor with its versions, open reports, decisions with the policy version they
//! followed, escalations to decide, hours used this month, and the monthly CSV.

use super::{app_error, field_errors, DecisionView, ReportRow};
use crate::auth::OrgCtx;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::pages::FieldErrors;
use crate::routes::{Access, Capability, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{datetime, render, render_status, Layout, Pager};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::moderation::{Decision, EscalationState, Policy};
use herd_moderation::decide::{self, DecisionForm};
use herd_moderation::views::{self, CustomerView};
use herd_moderation::{connections, policy, ModerationError, Who};
use herd_store::moderation::{Escalation, Instance, PolicyVersion};
use herd_store::Page;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

mod token;
use token::{ask_token, new_token_page};

pub fn routes(r: Routes) -> Routes {
    let m = Access::Org(Capability::ManageModeration);
    r.get("/o/{slug}/moderation", m, index)
        .get("/o/{slug}/moderation/{server}", m, show)
        .post("/o/{slug}/moderation/{server}/connect", m, connect)
        .post("/o/{slug}/moderation/{server}/revoke", m, revoke)
        .get("/o/{slug}/moderation/{server}/new-token", m, new_token_page)
        .post("/o/{slug}/moderation/{server}/new-token", m, ask_token)
        .post("/o/{slug}/moderation/{server}/policy", m, save_policy)
        .post("/o/{slug}/moderation/{server}/decide", m, decide_escalation)
        .get("/o/{slug}/moderation/{server}/report.csv", m, csv)
}

fn who<'a>(ctx: &'a OrgCtx, ip: &'a str) -> Who<'a> {
    Who {
        id: ctx.user.id(),
        name: &ctx.user.display_name,
        email: &ctx.user.email,
        ip,
    }
}

/// A server in the index, with its connection in words.
struct ServerRow {
    i: Instance,
    connection: String,
}

/// A connection's state in words (never the token).
fn connection_text(i: &Instance) -> String {
    match &i.connection {
        None => "not connected".to_owned(),
        Some(c) if c.revoked_at.is_some() => "token revoked".to_owned(),
        Some(c) if c.broken_at.is_some() => format!(
            "broken: {}",
            c.broken_reason
                .as_deref()
                .unwrap_or("the server refused the token")
        ),
        Some(c) => format!("connected (moderator account @{})", c.moderator_account),
    }
}

#[derive(Template)]
#[template(path = "moderation_index.html")]
struct IndexPage {
    l: Layout,
    ctx: OrgCtx,
    rows: Vec<ServerRow>,
    /// Deleted servers that had moderation, with their months in words.
    deleted: Vec<super::history::DeletedRow>,
    pager: Pager,
}

#[derive(Debug, Deserialize)]
struct IndexQuery {
    /// The page of deleted servers.
    page: Option<u32>,
}

async fn index(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Query(q): Query<IndexQuery>,
) -> Result<Response, AppError> {
    let index = views::customer_index(&state.pool, ctx.org.id(), Page::new(q.page, None))
        .await
        .map_err(app_error)?;
    let rows = index
        .servers
        .into_iter()
        .map(|i| ServerRow {
            connection: connection_text(&i),
            i,
        })
        .collect();
    let pager = Pager::new(
        &format!("/o/{}/moderation", ctx.org.slug),
        &[],
        &index.deleted,
    );
    render(&IndexPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        deleted: index
            .deleted
            .items
            .into_iter()
            .map(super::history::DeletedRow::from)
            .collect(),
        pager,
        ctx,
        rows,
    })
}

/// What the forms of the server page hold when re-rendered.
#[derive(Debug, Default, Deserialize)]
struct Forms {
    #[serde(default)]
    moderator_account: String,
    #[serde(default)]
    house_rules: String,
    #[serde(default)]
    remove: String,
    #[serde(default)]
    escalate: String,
    #[serde(default)]
    urgent_contacts: String,
    #[serde(default)]
    language: String,
}

struct EscalationRow {
    e: Escalation,
    at: String,
}

#[derive(Template)]
#[template(path = "moderation_server.html")]
struct ServerPage {
    l: Layout,
    ctx: OrgCtx,
    i: Instance,
    connection: String,
    connected: bool,
    /// Herd's own moderator account: being made, failed, or which token is in use.
    made: token::MadeState,
    policies: Vec<(PolicyVersion, String)>,
    open: Vec<ReportRow>,
    decisions: Vec<DecisionView>,
    waiting: Vec<EscalationRow>,
    answered: Vec<EscalationRow>,
    choices: Vec<Decision>,
    hours: String,
    over: bool,
    month: String,
    form: Forms,
    errors: FieldErrors,
}

async fn server_page(
    state: &AppState,
    session: &Session,
    ctx: OrgCtx,
    server: Uuid,
    form: Option<Forms>,
    errors: FieldErrors,
) -> Result<ServerPage, AppError> {
    let v: CustomerView = views::customer(&state.pool, ctx.org.id(), server)
        .await
        .map_err(app_error)?;
    let form = form.unwrap_or_else(|| {
        let current = v
            .policies
            .first()
            .map(|p| p.policy.clone())
            .unwrap_or_default();
        Forms {
            moderator_account: v
                .instance
                .connection
                .as_ref()
                .map(|c| c.moderator_account.clone())
                .unwrap_or_default(),
            house_rules: current.house_rules,
            remove: current.remove,
            escalate: current.escalate,
            urgent_contacts: current.urgent_contacts,
            language: current.language,
        }
    });
    let (waiting, answered): (Vec<_>, Vec<_>) = v
        .escalations
        .into_iter()
        .map(|e| EscalationRow {
            at: datetime(e.created_at),
            e,
        })
        .partition(|r| r.e.state == EscalationState::Waiting);
    let (y, m) = views::this_month();
    Ok(ServerPage {
        l: Layout::new(session, Some(&ctx.user)).await?,
        made: token::state_of(state, server, v.instance.connection.as_ref()).await?,
        connection: connection_text(&v.instance),
        connected: v
            .instance
            .connection
            .as_ref()
            .is_some_and(|c| c.revoked_at.is_none()),
        policies: v
            .policies
            .into_iter()
            .map(|p| {
                let at = datetime(p.created_at);
                (p, at)
            })
            .collect(),
        open: v.open.into_iter().map(ReportRow::from).collect(),
        decisions: v.decisions.into_iter().map(DecisionView::from).collect(),
        waiting,
        answered,
        choices: Decision::customer_choices(),
        hours: v.hours.0,
        over: v.hours.1,
        month: format!("{y:04}-{:02}", u8::from(m)),
        i: v.instance,
        ctx,
        form,
        errors,
    })
}

async fn show(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, server)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    render(&server_page(&state, &session, ctx, server, None, FieldErrors::default()).await?)
}

/// After a form: a flash and back to the page, or the page with the refusal by its field.
async fn answer(
    state: &AppState,
    session: &Session,
    ctx: OrgCtx,
    server: Uuid,
    result: Result<(), ModerationError>,
    done: &str,
    form: Option<Forms>,
) -> Result<Response, AppError> {
    match result {
        Ok(()) => {
            session::flash(session, "ok", done).await?;
            Ok(Redirect::to(&format!("/o/{}/moderation/{server}", ctx.org.slug)).into_response())
        }
        Err(ModerationError::Invalid(list)) => render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &server_page(state, session, ctx, server, form, field_errors(list)).await?,
        ),
        Err(e) => Err(app_error(e)),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ConnectForm {
    #[serde(default)]
    moderator_account: String,
    #[serde(default)]
    token: String,
}

async fn connect(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, server)): Path<(String, Uuid)>,
    Form(f): Form<ConnectForm>,
) -> Result<Response, AppError> {
    let result = connections::connect(
        &state.pool,
        state.config.seal_key.as_ref(),
        who(&ctx, &ip),
        ctx.org.id(),
        server,
        (&f.moderator_account, &f.token),
        state.config.public_url.as_str(),
    )
    .await;
    // The token typed is never put back in the form.
    let form = result.is_err().then(|| Forms {
        moderator_account: f.moderator_account.clone(),
        ..Forms::default()
    });
    let done = "The token is stored; the moderators can work on this server's reports.";
    answer(&state, &session, ctx, server, result, done, form).await
}

async fn revoke(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, server)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let result = connections::revoke(&state.pool, who(&ctx, &ip), ctx.org.id(), server).await;
    let done = "The token is revoked and wiped in Herd; Herd's own tokens on your server are being revoked (this page says so if that fails; a token you pasted: revoke it there yourself).";
    answer(&state, &session, ctx, server, result, done, None).await
}

async fn save_policy(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, server)): Path<(String, Uuid)>,
    Form(f): Form<Forms>,
) -> Result<Response, AppError> {
    let p = Policy {
        house_rules: f.house_rules.clone(),
        remove: f.remove.clone(),
        escalate: f.escalate.clone(),
        urgent_contacts: f.urgent_contacts.clone(),
        language: f.language.clone(),
    };
    let result = policy::save(&state.pool, who(&ctx, &ip), ctx.org.id(), server, p)
        .await
        .map(drop);
    let done = "A new version of the policy is in force.";
    answer(&state, &session, ctx, server, result, done, Some(f)).await
}

#[derive(Debug, Default, Deserialize)]
struct EscalationForm {
    #[serde(default)]
    escalation: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    note: String,
    notify_user: Option<String>,
}

async fn decide_escalation(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, server)): Path<(String, Uuid)>,
    Form(f): Form<EscalationForm>,
) -> Result<Response, AppError> {
    let result = decide::customer_decide(
        &state.pool,
        who(&ctx, &ip),
        ctx.org.id(),
        server,
        &f.escalation,
        &DecisionForm {
            decision: f.decision,
            note: f.note,
            notify_user: f.notify_user.is_some(),
            minutes: String::new(),
        },
    )
    .await;
    let done = "Your decision is recorded and sent to your server.";
    answer(&state, &session, ctx, server, result, done, None).await
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
    let (y, m) = q
        .month
        .as_deref()
        .and_then(views::parse_month)
        .unwrap_or_else(views::this_month);
    let report = views::monthly(&state.pool, ctx.org.id(), server, y, m)
        .await
        .map_err(app_error)?;
    Ok(super::csv_download(&report))
}
