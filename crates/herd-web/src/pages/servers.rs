//! The organization's servers: the list, each server's page with its install steps as the
//! cluster reports them (refreshing by itself while it moves), its history, and the
//! owner's one-time password shown once to an owner or admin.

use crate::auth::OrgCtx;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Capability, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{datetime, render, render_status, ConfirmPage, Layout, Pager, TypedConfirmPage};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::version::MaintenanceWindow;
use herd_domain::InstancePhase;
use herd_fleet::clusters::Actor;
use herd_fleet::instances::{self, Reveal, Step};
use herd_fleet::lifecycle::{self, Action, Outcome, Requester, When};
use herd_fleet::FleetError;
use herd_store::fleet::{Event, Instance};
use herd_store::Page;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    let view = Access::Org(Capability::View);
    let manage = Access::Org(Capability::ManageServers);
    r.get("/assets/server.js", Access::Public, script)
        .get("/o/{slug}/servers", view, list)
        .get("/o/{slug}/servers/{server}", view, show)
        .get("/o/{slug}/servers/{server}/events", view, events)
        .post("/o/{slug}/servers/{server}/owner-password", manage, reveal)
        .get(
            "/o/{slug}/servers/{server}/suspend",
            manage,
            suspend_confirm,
        )
        .post("/o/{slug}/servers/{server}/suspend", manage, suspend)
        .post("/o/{slug}/servers/{server}/resume", manage, resume)
        .post("/o/{slug}/servers/{server}/upgrade", manage, upgrade)
        .post(
            "/o/{slug}/servers/{server}/upgrade/cancel",
            manage,
            cancel_upgrade,
        )
        .get("/o/{slug}/servers/{server}/delete", manage, delete_confirm)
        .post("/o/{slug}/servers/{server}/delete", manage, delete)
        .post("/o/{slug}/maintenance-window", manage, set_window)
        .post(
            "/o/{slug}/servers/{server}/domain/check",
            manage,
            check_domain,
        )
        .get(
            "/o/{slug}/servers/{server}/owner-password/reset",
            manage,
            reset_password_confirm,
        )
        .post(
            "/o/{slug}/servers/{server}/owner-password/reset",
            manage,
            reset_password,
        )
}

/// The live page's script.
async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../assets/server.js"),
    )
        .into_response()
}

/// The server's state as the live page receives it.
#[derive(Debug, PartialEq, serde::Serialize)]
struct Live {
    phase: &'static str,
    label: &'static str,
    message: Option<String>,
    url: Option<String>,
    /// Something went wrong (the details are for operators).
    problem: bool,
    steps: Vec<LiveStep>,
}

#[derive(Debug, PartialEq, serde::Serialize)]
struct LiveStep {
    name: String,
    state: &'static str,
    label: &'static str,
    message: String,
}

fn live(i: &Instance) -> Live {
    Live {
        phase: i.phase.as_str(),
        label: i.phase.label(),
        message: i.phase_message.clone(),
        url: i.url.clone(),
        problem: i.last_error.is_some(),
        steps: instances::steps(i)
            .into_iter()
            .map(|s| LiveStep {
                name: s.name,
                state: s.state.css(),
                label: s.state.label(),
                message: s.message,
            })
            .collect(),
    }
}

/// How often the live stream looks at the server, and how long one stream lasts (the
/// browser reconnects by itself).
const LIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
const LIVE_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Server-sent events: the server's state now, then each time it changes. The page works
/// without them (reload it); with JavaScript, `/assets/server.js` applies them.
async fn events(
    State(state): State<AppState>,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let org = ctx.org.id();
    let (slug, user) = (ctx.org.slug.clone(), ctx.user.id());
    // Not found for another organization's server, before any stream starts.
    instances::get_for_org(&state.pool, org, id).await?;
    let pool = state.pool.clone();
    let deadline = tokio::time::Instant::now() + LIVE_FOR;
    let stream = futures::stream::unfold((None::<String>, true), move |(last, first)| {
        let (pool, slug) = (pool.clone(), slug.clone());
        async move {
            loop {
                if !first {
                    tokio::time::sleep(LIVE_EVERY).await;
                }
                if tokio::time::Instant::now() > deadline {
                    return None;
                }
                // A member removed meanwhile stops receiving.
                herd_store::orgs::membership(&pool, &slug, user)
                    .await
                    .ok()??;
                let i = instances::get_for_org(&pool, org, id).await.ok()?;
                let data = serde_json::to_string(&live(&i)).ok()?;
                if last.as_deref() != Some(data.as_str()) {
                    let event = Event::default().event("status").data(data.clone());
                    return Some((
                        Ok::<_, std::convert::Infallible>(event),
                        (Some(data), false),
                    ));
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn suspend_confirm(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let i = instances::get_for_org(&state.pool, ctx.org.id(), id).await?;
    let back = format!("/o/{}/servers/{id}", ctx.org.slug);
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        title: format!("Suspend {}?", i.domain),
        message: "The server stops: its users cannot log in and visitors see a \"suspended\" page. Everything is kept, and you can resume it at any time.".into(),
        action: format!("{back}/suspend"),
        button: "Suspend the server".into(),
        cancel: back,
    })
}

fn member<'a>(ctx: &'a OrgCtx, ip: &'a str) -> Requester<'a> {
    Requester::Member {
        org: ctx.org.id(),
        who: Actor {
            id: ctx.user.id(),
            email: &ctx.user.email,
            ip,
        },
    }
}

/// Says how a lifecycle request went (a flash message) and goes back to the server page.
async fn answer(
    session: &Session,
    ctx: &OrgCtx,
    id: Uuid,
    result: Result<Outcome, FleetError>,
    done: &str,
) -> Result<Response, AppError> {
    let back = format!("/o/{}/servers/{id}", ctx.org.slug);
    answer_to(session, &back, result, done).await
}

/// Says how a lifecycle request went (a flash message) and goes to `back` (the portal's
/// or the console's page of the server).
pub(super) async fn answer_to(
    session: &Session,
    back: &str,
    result: Result<Outcome, FleetError>,
    done: &str,
) -> Result<Response, AppError> {
    let (kind, message) = match result {
        Ok(Outcome::Requested) => ("ok", done.to_owned()),
        Ok(Outcome::Scheduled(at)) => ("ok", format!("{done} It starts on {}.", datetime(at))),
        Ok(Outcome::AlreadySo) => ("ok", "Nothing to do: it was already so.".to_owned()),
        Err(FleetError::Invalid(m)) => ("error", m),
        Err(e) => return Err(e.into()),
    };
    session::flash(session, kind, message).await?;
    Ok(Redirect::to(back).into_response())
}

async fn lifecycle(
    state: &AppState,
    session: &Session,
    ip: &str,
    ctx: &OrgCtx,
    id: Uuid,
    action: Action,
) -> Result<Response, AppError> {
    let result = lifecycle::request(&state.pool, member(ctx, ip), id, action).await;
    let done = match action {
        Action::Suspend => "The server is being suspended.",
        Action::Resume => "The server is being resumed.",
    };
    answer(session, ctx, id, result, done).await
}

/// How long "Check now" waits for the DNS.
pub(super) const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a domain check found, in words for the flash message.
fn check_message(domain: &str, check: &herd_fleet::domains::Check) -> (&'static str, String) {
    use herd_fleet::domains::Check;
    match check {
        Check::Verified => ("ok", format!("{domain} is proven: the server is being set up.")),
        Check::AlreadyVerified => ("ok", format!("{domain} is proven already.")),
        Check::NotFound { seen } if seen.is_empty() => (
            "error",
            format!("No TXT record was found at _herd-challenge.{domain} yet. DNS changes can take a while to show; we look again every minute."),
        ),
        Check::NotFound { seen } => (
            "error",
            format!(
                "The TXT record at _herd-challenge.{domain} holds {} but not the value asked for; correct it and check again.",
                seen.iter()
                    .take(3)
                    .map(|s| format!("“{}”", s.chars().take(80).collect::<String>()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        Check::LookupFailed(e) => ("error", format!("The DNS could not be asked just now ({e}); we look again every minute.")),
        Check::HeldElsewhere => (
            "error",
            format!("{domain} was proven by another server first, so this server cannot be set up with it. Contact support about this order."),
        ),
    }
}

async fn check_domain(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let i = instances::get_for_org(&state.pool, ctx.org.id(), id).await?;
    let back = format!("/o/{}/servers/{id}", ctx.org.slug);
    check_domain_now(&state, &session, &i, &back).await
}

/// "Check now" for a server the caller may act on (portal or console): looks for its
/// domain's proof, waiting at most [`CHECK_TIMEOUT`], says what was found and goes `back`.
pub(super) async fn check_domain_now(
    state: &AppState,
    session: &Session,
    i: &Instance,
    back: &str,
) -> Result<Response, AppError> {
    let (kind, message) = match &state.dns {
        Some(dns) => {
            let check = tokio::time::timeout(
                CHECK_TIMEOUT,
                herd_fleet::domains::check(&state.pool, dns, i.id),
            )
            .await
            .unwrap_or_else(|_| {
                Ok(herd_fleet::domains::Check::LookupFailed(
                    "no answer within 10 seconds".into(),
                ))
            })?;
            check_message(&i.domain, &check)
        }
        None => (
            "error",
            "DNS lookups are not available on this web server; we look again every minute."
                .to_owned(),
        ),
    };
    session::flash(session, kind, message).await?;
    Ok(Redirect::to(back).into_response())
}

async fn reset_password_confirm(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let i = instances::get_for_org(&state.pool, ctx.org.id(), id).await?;
    let back = format!("/o/{}/servers/{id}", ctx.org.slug);
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        title: format!("Set a new password for @{}?", i.owner_username),
        message: format!(
            "The owner account @{} of {} gets a new password; the current one stops working. Once the server has set it, it is shown on this page once, to {} of {}.",
            i.owner_username, i.domain, Capability::ManageServers.who(), ctx.org.name
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
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let result = lifecycle::reset_owner_password(&state.pool, member(&ctx, &ip), id).await;
    let done = "A new password is being set; it appears on this page once the server has set it.";
    answer(&session, &ctx, id, result, done).await
}

#[derive(Debug, Deserialize)]
struct UpgradeForm {
    version: String,
    when: String,
}

async fn upgrade(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
    Form(form): Form<UpgradeForm>,
) -> Result<Response, AppError> {
    let (when, done) = match form.when.as_str() {
        "now" => (
            When::Now,
            "The upgrade has started; this page shows its progress.",
        ),
        "window" => (
            When::InWindow,
            "The upgrade is scheduled for the maintenance window.",
        ),
        _ => {
            let refused = Err(FleetError::Invalid("Choose when to upgrade.".into()));
            return answer(&session, &ctx, id, refused, "").await;
        }
    };
    let result = lifecycle::upgrade(&state.pool, member(&ctx, &ip), id, &form.version, when).await;
    answer(&session, &ctx, id, result, done).await
}

async fn cancel_upgrade(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let result = lifecycle::cancel_upgrade(&state.pool, member(&ctx, &ip), id).await;
    answer(
        &session,
        &ctx,
        id,
        result,
        "The scheduled upgrade is cancelled.",
    )
    .await
}

/// The TXT record a server's custom domain still needs: (name, value, last checked). None
/// once proven, and for a server stopped because another proved the domain first.
pub(super) fn challenge_of(i: &Instance) -> Option<(String, String, Option<String>)> {
    let token = i
        .domain_token
        .as_deref()
        .filter(|_| i.domain_verified_at.is_none() && i.phase != InstancePhase::Failed)?;
    Some((
        format!("{}.{}", herd_domain::domain::CHALLENGE_LABEL, i.domain),
        herd_domain::domain::challenge_value(token),
        i.domain_checked_at.map(datetime),
    ))
}

/// What deleting a server means, said before it is done (portal and console alike).
pub fn deletion_paragraphs(i: &Instance) -> Vec<String> {
    vec![
        format!("This deletes {} and everything on it: its accounts, posts and media. It cannot be undone.", i.domain),
        "Before anything is removed, the cluster takes a final dump of its database (kept for the provider's backup retention: ask support if you need it), or waits for an operator where no backup destination is set.".into(),
        format!("The address {} stays reserved: other servers still know its accounts, so no new server can take it.", i.domain),
        "Deleting the server does not end its subscription or contract: cancel or change that on the billing page.".into(),
    ]
}

pub(super) fn delete_page_for(
    l: Layout,
    i: &Instance,
    back: String,
    error: Option<String>,
) -> TypedConfirmPage {
    TypedConfirmPage {
        l,
        title: format!("Delete {}?", i.domain),
        paragraphs: deletion_paragraphs(i),
        expected: i.domain.clone(),
        error,
        action: format!("{back}/delete"),
        button: "Delete the server for good".into(),
        cancel: back,
    }
}

fn delete_page(l: Layout, ctx: &OrgCtx, i: &Instance, error: Option<String>) -> TypedConfirmPage {
    delete_page_for(l, i, format!("/o/{}/servers/{}", ctx.org.slug, i.id), error)
}

async fn delete_confirm(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let i = instances::get_for_org(&state.pool, ctx.org.id(), id).await?;
    render(&delete_page(
        Layout::new(&session, Some(&ctx.user)).await?,
        &ctx,
        &i,
        None,
    ))
}

#[derive(Debug, Deserialize)]
pub struct TypedForm {
    #[serde(default)]
    pub confirm: String,
}

async fn delete(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
    Form(form): Form<TypedForm>,
) -> Result<Response, AppError> {
    match lifecycle::delete(&state.pool, member(&ctx, &ip), id, &form.confirm).await {
        Err(FleetError::Invalid(m)) => {
            let i = instances::get_for_org(&state.pool, ctx.org.id(), id).await?;
            let l = Layout::new(&session, Some(&ctx.user)).await?;
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &delete_page(l, &ctx, &i, Some(m)),
            )
        }
        result => answer(&session, &ctx, id, result, "The server is being deleted.").await,
    }
}

#[derive(Debug, Deserialize)]
struct WindowForm {
    day: String,
    hour: String,
}

async fn set_window(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Form(form): Form<WindowForm>,
) -> Result<Response, AppError> {
    let window = match (form.day.parse::<u8>(), form.hour.parse::<u8>()) {
        (Ok(d), Ok(h)) => MaintenanceWindow::new(d, h),
        _ => Err("Choose a day and an hour.".to_owned()),
    };
    let (kind, message) = match window {
        Ok(w) => {
            let who = Actor {
                id: ctx.user.id(),
                email: &ctx.user.email,
                ip: &ip,
            };
            match lifecycle::set_maintenance_window(&state.pool, who, ctx.org.id(), w).await? {
                Outcome::AlreadySo => ("ok", "Nothing to do: it was already so.".to_owned()),
                _ => (
                    "ok",
                    format!("Upgrades scheduled from now on start on {}.", w.label()),
                ),
            }
        }
        Err(m) => ("error", m),
    };
    session::flash(&session, kind, message).await?;
    Ok(Redirect::to(&format!("/o/{}/servers", ctx.org.slug)).into_response())
}

async fn suspend(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    lifecycle(&state, &session, &ip, &ctx, id, Action::Suspend).await
}

async fn resume(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    lifecycle(&state, &session, &ip, &ctx, id, Action::Resume).await
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    page: Option<u32>,
}

/// A server as a list row shows it.
pub struct Row {
    pub i: Instance,
    pub created: String,
}

#[derive(Template)]
#[template(path = "servers.html")]
struct ListPage {
    l: Layout,
    ctx: OrgCtx,
    rows: Vec<Row>,
    pager: Pager,
    can_order: bool,
    can_manage: bool,
    window: MaintenanceWindow,
    days: Vec<(u8, &'static str)>,
    hours: Vec<u8>,
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Query(q): Query<ListQuery>,
) -> Result<Response, AppError> {
    let paged = instances::list_for_org(&state.pool, ctx.org.id(), Page::new(q.page, None)).await?;
    let pager = Pager::new(&format!("/o/{}/servers", ctx.org.slug), &[], &paged);
    render(&ListPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        rows: paged
            .items
            .into_iter()
            .map(|i| Row {
                created: datetime(i.created_at),
                i,
            })
            .collect(),
        pager,
        can_order: ctx.role.can(Capability::ManageBilling),
        can_manage: ctx.role.can(Capability::ManageServers),
        window: lifecycle::maintenance_window(&state.pool, ctx.org.id()).await?,
        days: (1..=7).zip(MaintenanceWindow::DAYS).collect(),
        hours: (0..24).collect(),
        ctx,
    })
}

#[derive(Template)]
#[template(path = "server.html")]
struct ServerPage {
    l: Layout,
    ctx: OrgCtx,
    i: Instance,
    steps: Vec<Step>,
    history: Vec<(Event, String)>,
    since: String,
    /// Still moving: the page follows it live (server-sent events).
    moving: bool,
    can_manage: bool,
    /// Who may see the owner's password, for those who may not.
    password_who: String,
    /// The owner's password was shown already, at this time.
    password_shown: Option<String>,
    /// The password, on the one response that shows it.
    revealed: Option<(String, String)>,
    /// Why the password cannot be shown yet.
    password_note: Option<String>,
    /// The upgrades on offer, oldest first (the last is checked by default).
    offered: Vec<String>,
    /// The organization's maintenance window.
    window: String,
    /// When a scheduled upgrade starts.
    upgrade_at: Option<String>,
    /// For a custom domain still to be proven: the TXT record's name and value, and when
    /// it was last looked for.
    challenge: Option<(String, String, Option<String>)>,
    /// The server's exports, newest first (for those who may take them).
    exports: Vec<super::exports::ExportRow>,
    /// How many days an export's link lasts.
    export_days: i32,
    /// An export may be asked for now (running or suspended).
    exportable: bool,
    /// The viewer is an owner and the server a Mastodon: they may have an export carry
    /// the app secrets.
    can_seal: bool,
}

async fn page(
    state: &AppState,
    session: &Session,
    ctx: OrgCtx,
    id: Uuid,
    revealed: Option<(String, String)>,
    password_note: Option<String>,
) -> Result<ServerPage, AppError> {
    let i = instances::get_for_org(&state.pool, ctx.org.id(), id).await?;
    let offered = lifecycle::upgrade_options(&state.pool, &i, false).await?;
    let window = lifecycle::maintenance_window(&state.pool, ctx.org.id())
        .await?
        .label();
    let exports = if ctx.role.can(Capability::ManageServers) {
        super::exports::rows(state, &ctx, id).await?
    } else {
        Vec::new()
    };
    let history = instances::history(&state.pool, id)
        .await?
        .into_iter()
        .map(|e| {
            let at = datetime(e.at);
            (e, at)
        })
        .collect();
    Ok(ServerPage {
        l: Layout::new(session, Some(&ctx.user)).await?,
        steps: instances::steps(&i),
        history,
        since: datetime(i.phase_since),
        moving: matches!(
            i.phase,
            InstancePhase::Queued
                | InstancePhase::Provisioning
                | InstancePhase::Upgrading
                | InstancePhase::Restoring
                | InstancePhase::Deleting
        ) && revealed.is_none(),
        can_manage: ctx.role.can(Capability::ManageServers),
        password_who: Capability::ManageServers.who_capitalized(),
        password_shown: i.owner_password_revealed_at.map(datetime),
        revealed,
        password_note,
        offered,
        window,
        upgrade_at: i.upgrade_at.map(datetime),
        challenge: challenge_of(&i),
        exports,
        export_days: state.config.export_link_days,
        exportable: herd_fleet::exports::exportable(i.desired, i.phase),
        can_seal: ctx.role == herd_domain::Role::Owner && i.app == "mastodon",
        i,
        ctx,
    })
}

async fn show(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    render(&page(&state, &session, ctx, id, None, None).await?)
}

async fn reveal(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let outcome = instances::reveal_owner_password(
        &state.pool,
        state.config.seal_key.as_ref(),
        Actor {
            id: ctx.user.id(),
            email: &ctx.user.email,
            ip: &ip,
        },
        ctx.org.id(),
        id,
    )
    .await?;
    let (revealed, note) = match outcome {
        Reveal::Password { username, password } => (Some((username, password)), None),
        Reveal::AlreadyShown(at) => (
            None,
            Some(format!(
                "The one-time password was shown on {}; it is not kept. Set a new one below, or use “Forgot your password?” on the server's login page with the owner's email.",
                datetime(at)
            )),
        ),
        Reveal::NotReady => (
            None,
            Some("The owner account is not ready yet. Come back once the server is running.".into()),
        ),
    };
    let mut resp = render(&page(&state, &session, ctx, id, revealed, note).await?)?;
    // The password must not linger in a cache.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(resp.into_response())
}
