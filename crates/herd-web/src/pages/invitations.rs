//! Accepting an invitation from its emailed link.

use crate::audit::{self, Actor};
use crate::auth::{CurrentUser, MaybeUser};
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::state::AppState;
use crate::views::{render, render_status, Layout, MessagePage};
use crate::{crypto, session};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use herd_domain::{InvitationId, OrgId, Role};
use herd_store::invitations::{self, Invitation};
use herd_store::orgs;
use serde_json::json;
use time::OffsetDateTime;
use tower_sessions::Session;

pub fn routes(r: Routes) -> Routes {
    r.get("/invitations/{token}", Access::Public, show).post(
        "/invitations/{token}/accept",
        Access::User,
        accept,
    )
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    l: Layout,
    org_name: String,
    role: Role,
    email: String,
    token: String,
    logged_in_as: Option<String>,
    email_matches: bool,
    next: String,
}

/// Why an invitation cannot be used, if it cannot.
fn problem(inv: Option<&Invitation>) -> Option<(StatusCode, &'static str, &'static str)> {
    let now = OffsetDateTime::now_utc();
    match inv {
        None => Some((
            StatusCode::NOT_FOUND,
            "Unknown invitation",
            "This invitation link is not valid. Ask the person who invited you to send a new one.",
        )),
        Some(i) if i.accepted_at.is_some() => Some((
            StatusCode::GONE,
            "Invitation already used",
            "This invitation was already accepted.",
        )),
        Some(i) if i.revoked_at.is_some() => Some((
            StatusCode::GONE,
            "Invitation revoked",
            "This invitation was withdrawn. Ask for a new one if you still need access.",
        )),
        Some(i) if i.expires_at <= now => Some((
            StatusCode::GONE,
            "Invitation expired",
            "This invitation has expired. Ask the person who invited you to send a new one.",
        )),
        Some(_) => None,
    }
}

async fn problem_page(
    session: &Session,
    user: Option<&herd_store::users::User>,
    p: (StatusCode, &str, &str),
) -> Result<Response, AppError> {
    render_status(
        p.0,
        &MessagePage {
            l: Layout::new(session, user).await?,
            title: p.1.into(),
            message: p.2.into(),
            link: Some(("/orgs".into(), "Your organizations".into())),
        },
    )
}

async fn show(
    State(state): State<AppState>,
    session: Session,
    MaybeUser(user): MaybeUser,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let inv = invitations::by_token(&state.pool, &crypto::token_hash(&token)).await?;
    if let Some(p) = problem(inv.as_ref()) {
        return problem_page(&session, user.as_ref(), p).await;
    }
    let Some(inv) = inv else {
        return Err(AppError::NotFound);
    };
    let next = format!("/invitations/{token}");
    render(&InvitationPage {
        l: Layout::new(&session, user.as_ref()).await?,
        org_name: inv.org_name.clone(),
        role: inv.role(),
        email_matches: user.as_ref().is_some_and(|u| u.email == inv.email),
        logged_in_as: user.map(|u| u.email),
        email: inv.email,
        token,
        next: url::form_urlencoded::byte_serialize(next.as_bytes()).collect(),
    })
}

async fn accept(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    CurrentUser(user): CurrentUser,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    let inv = invitations::by_token_for_update(&mut tx, &crypto::token_hash(&token)).await?;
    if let Some(p) = problem(inv.as_ref()) {
        drop(tx);
        return problem_page(&session, Some(&user), p).await;
    }
    let Some(inv) = inv else {
        return Err(AppError::NotFound);
    };
    if inv.email != user.email {
        drop(tx);
        return problem_page(
            &session,
            Some(&user),
            (StatusCode::FORBIDDEN, "Invitation for another address", "This invitation was sent to a different email address. Log in with that address to accept it."),
        )
        .await;
    }
    let org = OrgId(inv.org_id);
    let already = orgs::membership(&mut *tx, &inv.org_slug, user.id())
        .await?
        .is_some();
    if !already {
        orgs::add_member(&mut tx, org, user.id(), inv.role()).await?;
    }
    invitations::mark_accepted(&mut tx, InvitationId(inv.id), user.id()).await?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(&user),
            ip: &ip,
        },
        Some(org),
        "org.member.joined",
        user.email.clone(),
        json!({ "role": inv.role, "invitation": inv.id }),
    )
    .await?;
    tx.commit().await?;
    session::flash(&session, "ok", format!("Welcome to {}.", inv.org_name)).await?;
    Ok(Redirect::to(&format!("/o/{}", inv.org_slug)).into_response())
}
