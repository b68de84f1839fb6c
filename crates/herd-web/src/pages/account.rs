//! The user's own account: profile overview and two-factor authentication.

use crate::audit;
use crate::auth::CurrentUser;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::state::AppState;
use crate::views::{render, render_status, ConfirmPage, Layout};
use crate::{crypto, session, totp};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_store::users::{self, User};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tower_sessions::Session;

pub fn routes(r: Routes) -> Routes {
    use Access::User;
    r.get("/account", User, overview)
        .get("/account/2fa", User, enrol_form)
        .post("/account/2fa/start", User, enrol_start)
        .post("/account/2fa/confirm", User, enrol_confirm)
        .get("/account/2fa/disable", User, disable_confirm)
        .post("/account/2fa/disable", User, disable)
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    l: Layout,
    user: User,
    recovery_left: i64,
}

async fn overview(
    State(state): State<AppState>,
    session: Session,
    CurrentUser(user): CurrentUser,
) -> Result<Response, AppError> {
    let recovery_left = users::unused_recovery_codes(&state.pool, user.id()).await?;
    render(&AccountPage {
        l: Layout::new(&session, Some(&user)).await?,
        user,
        recovery_left,
    })
}

#[derive(Template)]
#[template(path = "totp_enrol.html")]
struct EnrolPage {
    l: Layout,
    enabled: bool,
    /// The secret being enrolled, with its QR code, once enrolment started.
    secret: Option<String>,
    qr_svg: String,
    error: Option<String>,
}

async fn enrol_page(
    session: &Session,
    user: &User,
    error: Option<String>,
) -> Result<Response, AppError> {
    let pending = user.totp_secret.clone().filter(|_| !user.totp_enabled());
    let qr_svg = pending
        .as_deref()
        .map(|s| totp::qr_svg(&totp::otpauth_uri("Herd", &user.email, s)))
        .unwrap_or_default();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render_status(
        status,
        &EnrolPage {
            l: Layout::new(session, Some(user)).await?,
            enabled: user.totp_enabled(),
            secret: pending,
            qr_svg,
            error,
        },
    )
}

async fn enrol_form(
    session: Session,
    CurrentUser(user): CurrentUser,
) -> Result<Response, AppError> {
    enrol_page(&session, &user, None).await
}

async fn enrol_start(
    State(state): State<AppState>,
    session: Session,
    CurrentUser(mut user): CurrentUser,
) -> Result<Response, AppError> {
    if user.totp_enabled() {
        return Ok(Redirect::to("/account/2fa").into_response());
    }
    let secret = totp::new_secret();
    let mut conn = state.pool.acquire().await?;
    users::set_totp_pending(&mut conn, user.id(), &secret).await?;
    user.totp_secret = Some(secret);
    enrol_page(&session, &user, None).await
}

#[derive(Debug, Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    l: Layout,
    codes: Vec<String>,
}

async fn enrol_confirm(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    CurrentUser(user): CurrentUser,
    Form(form): Form<CodeForm>,
) -> Result<Response, AppError> {
    let Some(secret) = user.totp_secret.clone().filter(|_| !user.totp_enabled()) else {
        return Ok(Redirect::to("/account/2fa").into_response());
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let Some(step) = totp::verify(&secret, &form.code, now) else {
        return enrol_page(&session, &user, Some("That code does not match. Check your app's clock and enter the current 6-digit code.".into())).await;
    };
    let codes = totp::recovery_codes();
    let hashes: Vec<Vec<u8>> = codes
        .iter()
        .map(|c| crypto::token_hash(&totp::normalize_recovery_code(c)))
        .collect();
    let mut tx = state.pool.begin().await?;
    users::enable_totp(&mut tx, user.id(), &hashes).await?;
    users::claim_totp_step(&mut tx, user.id(), step).await?;
    audit::record_own(&mut tx, &user, &ip, "user.2fa_enabled", json!({})).await?;
    tx.commit().await?;
    // A new session id now that the account's protection changed.
    session::log_in(&session, &user).await?;
    render(&RecoveryCodesPage {
        l: Layout::new(&session, Some(&user)).await?,
        codes,
    })
}

async fn disable_confirm(
    session: Session,
    CurrentUser(user): CurrentUser,
) -> Result<Response, AppError> {
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&user)).await?,
        title: "Turn off two-factor authentication?".into(),
        message: if user.is_operator {
            "Operators cannot use the console without it; you will have to enrol again.".into()
        } else {
            "Your account will be protected by your password alone.".into()
        },
        action: "/account/2fa/disable".into(),
        button: "Turn off".into(),
        cancel: "/account".into(),
    })
}

async fn disable(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    CurrentUser(user): CurrentUser,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    users::disable_totp(&mut tx, user.id()).await?;
    audit::record_own(&mut tx, &user, &ip, "user.2fa_disabled", json!({})).await?;
    tx.commit().await?;
    session::flash(&session, "ok", "Two-factor authentication is off.").await?;
    Ok(Redirect::to("/account").into_response())
}
