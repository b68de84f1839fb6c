//! Signing up, confirming the email address, logging in (with a second factor when
//! enrolled), logging out, and resetting a forgotten password.

use super::FieldErrors;
use crate::audit::{self, Actor};
use crate::auth::MaybeUser;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::state::AppState;
use crate::views::{render, render_status, Layout, MessagePage};
use crate::{crypto, emails, session, totp};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::{check_password, Email, Slug, PASSWORD_RULES};
use herd_store::tokens::{self, Purpose, TokenCheck};
use herd_store::users::{self, User};
use herd_store::{login_attempts, orgs, second_factor};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tower_sessions::Session;

mod login;
mod password;
mod reauth;
mod signup;
mod verify;

pub use login::check_second_factor;
use login::*;
use password::*;
pub use reauth::{reauthenticate, Proof, Refusal};
pub use signup::create_org_unique_slug;
use signup::*;
use verify::*;

pub fn routes(r: Routes) -> Routes {
    use Access::Public;
    r.get("/signup", Public, signup_form)
        .post("/signup", Public, signup)
        .get("/verify-email/resend", Public, resend_form)
        .post("/verify-email/resend", Public, resend)
        .get("/verify-email/{token}", Public, verify_form)
        .post("/verify-email/{token}", Public, verify)
        .get("/login", Public, login_form)
        .post("/login", Public, login)
        .get("/login/2fa", Public, second_factor_form)
        .post("/login/2fa", Public, second_factor)
        .post("/logout", Public, logout)
        .get("/password/forgot", Public, forgot_form)
        .post("/password/forgot", Public, forgot)
        .get("/password/reset/{token}", Public, reset_form)
        .post("/password/reset/{token}", Public, reset)
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    pub next: Option<String>,
}

/// Issues a single-use token for `user`, valid for `ttl`; only its hash is stored.
async fn issue_token(
    conn: &mut sqlx::PgConnection,
    user: &User,
    purpose: Purpose,
    ttl: time::Duration,
) -> Result<String, AppError> {
    let token = crypto::random_token();
    let expires = OffsetDateTime::now_utc() + ttl;
    tokens::issue(
        conn,
        user.id(),
        purpose,
        &crypto::token_hash(&token),
        expires,
    )
    .await?;
    Ok(token)
}
