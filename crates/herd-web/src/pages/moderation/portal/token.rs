//! The server page's part about Herd's own moderator account (issue 13): where it stands,
//! and asking Herd for a new token (confirmed, audited). The token itself is never shown.

use super::{answer, who};
use crate::auth::OrgCtx;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::pages::moderation::app_error;
use crate::state::AppState;
use crate::views::{render, ConfirmPage, Layout};
use axum::extract::{Path, State};
use axum::response::Response;
use herd_moderation::connections;
use herd_store::fleet::ModeratorToken;
use herd_store::moderation::Connection;
use time::OffsetDateTime;
use tower_sessions::Session;
use uuid::Uuid;

/// Where Herd's own moderator account on the server stands, for the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MadeState {
    /// Herd made none that is in use, and none is being made.
    None,
    /// A token is being made on the server (or collected), asked less than an hour ago.
    Making,
    /// A token was asked over an hour ago and never arrived: it may be asked again.
    Late,
    /// The last one asked failed (the operators see why).
    Failed,
    /// The last revocation of Herd's tokens on the server failed: they may still work.
    RevokeFailed,
    /// The connection in use holds Herd's token.
    InUseMadeByHerd,
    /// The connection in use holds a token pasted by the customer.
    InUsePasted,
}

impl MadeState {
    pub fn of(t: &ModeratorToken, c: Option<&Connection>, now: OffsetDateTime) -> Self {
        if t.making_recently(now) {
            MadeState::Making
        } else if t.making() {
            MadeState::Late
        } else if t.failed().is_some() && t.revoked {
            MadeState::RevokeFailed
        } else if t.failed().is_some() {
            MadeState::Failed
        } else if c.is_some_and(Connection::usable) {
            if t.connection_generation.is_some() {
                MadeState::InUseMadeByHerd
            } else {
                MadeState::InUsePasted
            }
        } else {
            MadeState::None
        }
    }
}

impl MadeState {
    /// The state in words, for the customer.
    pub fn text(&self) -> String {
        let account = connections::MODERATOR_USERNAME;
        match self {
            MadeState::None => "Herd has made no moderator token in use on this server: have it make one, or paste a token below.".to_owned(),
            MadeState::Making => format!("Herd is making the moderator account @{account} and its token on the server; it is connected by itself once made (reload the page)."),
            MadeState::Late => "Herd asked for its moderator token over an hour ago and it has not arrived; you can ask again, or paste a token below.".to_owned(),
            MadeState::Failed => "Making Herd's moderator account or its token failed; the server runs on. Our operators see the details; you can ask again, or paste a token below.".to_owned(),
            MadeState::RevokeFailed => "Revoking Herd's token on your server failed; try again (Revoke the token below). Until then Herd's earlier token may still work there.".to_owned(),
            MadeState::InUseMadeByHerd => format!("In use: the token Herd made for its moderator account @{account}."),
            MadeState::InUsePasted => "In use: the token you pasted (your choice). Herd can make its own instead.".to_owned(),
        }
    }

    /// Whether the page offers to ask for a new token.
    pub fn can_ask(&self) -> bool {
        *self != MadeState::Making
    }

    /// Whether the last one failed (shown as an error).
    pub fn failed(&self) -> bool {
        matches!(self, MadeState::Failed | MadeState::RevokeFailed)
    }

    /// Whether the page offers to revoke again (the last revocation failed).
    pub fn revoke_failed(&self) -> bool {
        *self == MadeState::RevokeFailed
    }
}

/// The state of `server`'s account (never the token).
pub async fn state_of(
    state: &AppState,
    server: Uuid,
    c: Option<&Connection>,
) -> Result<MadeState, AppError> {
    let t = connections::moderator_token(&state.pool, server)
        .await
        .map_err(app_error)?
        .unwrap_or_default();
    Ok(MadeState::of(&t, c, OffsetDateTime::now_utc()))
}

pub async fn new_token_page(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, server)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let i = connections::org_instance(&state.pool, ctx.org.id(), server)
        .await
        .map_err(app_error)?;
    let back = format!("/o/{}/moderation/{server}", ctx.org.slug);
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        title: format!("Have Herd make a new moderator token for {}?", i.domain),
        message: format!(
            "Herd makes (or keeps) the moderator account @{} on {} and gives it a new token with the scopes admin:read and admin:write; Herd's earlier tokens there stop working. Once made, it replaces the token in use, also one you pasted. It is stored encrypted and never shown.",
            connections::MODERATOR_USERNAME,
            i.domain
        ),
        action: format!("{back}/new-token"),
        button: "Make a new moderator token".into(),
        cancel: back,
    })
}

pub async fn ask_token(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, server)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let result = connections::ask_for_token(&state.pool, who(&ctx, &ip), ctx.org.id(), server)
        .await
        .map(drop);
    let done =
        "Herd is making a new moderator token on your server; it is connected by itself once made.";
    answer(&state, &session, ctx, server, result, done, None).await
}
