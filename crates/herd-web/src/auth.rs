//! Who is calling: extractors for the logged-in user, the organization context of
//! `/o/{slug}/…` routes, and operators; and the middleware that enforces each route's
//! declared [`Access`](crate::routes::Access).

use crate::error::AppError;
use crate::session;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herd_domain::role::Capability;
use herd_domain::Role;
use herd_store::orgs::{self, Org};
use herd_store::users::{self, User};
use std::collections::HashMap;
use tower_sessions::Session;

/// The logged-in user; anonymous callers are sent to the login page.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

/// The logged-in user, if any.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<User>);

/// A member's view of the organization in the path (`/o/{slug}/…`). Outsiders get 404, as
/// if the organization did not exist.
#[derive(Debug, Clone)]
pub struct OrgCtx {
    pub user: User,
    pub org: Org,
    pub role: Role,
}

/// An operator (the provider's staff) with two-factor authentication enabled.
#[derive(Debug, Clone)]
pub struct Operator(pub User);

fn path_and_query(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned())
}

async fn load_user(parts: &mut Parts, state: &AppState) -> Result<Option<User>, AppError> {
    if let Some(u) = parts.extensions.get::<CurrentUser>() {
        return Ok(Some(u.0.clone()));
    }
    let session = Session::from_request_parts(parts, state)
        .await
        .map_err(|(_, msg)| AppError::Internal(format!("session layer missing: {msg}")))?;
    let Some(id) = session::user_id(&session).await? else {
        return Ok(None);
    };
    let mut user = users::by_id(&state.pool, id).await?;
    let current = match &user {
        Some(u) => session::credentials_current(&session, u).await?,
        None => false,
    };
    if !current {
        // The account is gone, or its password or second factor changed since this
        // session began (that ends every other session): end it.
        session::log_out(&session).await?;
        user = None;
    }
    if let Some(u) = &user {
        session::touch(&session);
        parts.extensions.insert(CurrentUser(u.clone()));
    }
    Ok(user)
}

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(MaybeUser(load_user(parts, state).await?))
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        match load_user(parts, state).await? {
            Some(u) => Ok(CurrentUser(u)),
            None => Err(AppError::LoginRequired {
                next: path_and_query(parts),
            }),
        }
    }
}

impl FromRequestParts<AppState> for OrgCtx {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(ctx) = parts.extensions.get::<OrgCtx>() {
            return Ok(ctx.clone());
        }
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::NotFound)?;
        let slug = params.get("slug").ok_or(AppError::NotFound)?;
        let m = orgs::membership(&state.pool, slug, user.id())
            .await?
            .ok_or(AppError::NotFound)?;
        let ctx = OrgCtx {
            user,
            org: m.org,
            role: m.role,
        };
        parts.extensions.insert(ctx.clone());
        Ok(ctx)
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        if !user.is_operator {
            // The console does not exist for customers.
            return Err(AppError::NotFound);
        }
        if !user.totp_enabled() {
            return Err(AppError::Forbidden(
                "Operators must enable two-factor authentication first: open Account → Two-factor authentication.".into(),
            ));
        }
        Ok(Operator(user))
    }
}

/// Route middleware for [`Access::User`](crate::routes::Access::User).
pub async fn require_user(
    user: Result<CurrentUser, AppError>,
    req: Request,
    next: Next,
) -> Response {
    match user {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Route middleware for [`Access::Org`](crate::routes::Access::Org): non-members get 404,
/// members whose role lacks `capability` get 403 with the rule in words.
pub async fn require_org(
    capability: Capability,
    ctx: Result<OrgCtx, AppError>,
    mut req: Request,
    next: Next,
) -> Response {
    match ctx {
        Ok(ctx) if !ctx.role.can(capability) => {
            AppError::Forbidden(capability.refusal()).into_response()
        }
        Ok(ctx) => {
            req.extensions_mut().insert(ctx);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Route middleware for [`Access::Operator`](crate::routes::Access::Operator).
pub async fn require_operator(
    op: Result<Operator, AppError>,
    req: Request,
    next: Next,
) -> Response {
    match op {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}
