//! The user's own account: profile overview and two-factor authentication (turning it
//! on, moving it to a new app, turning it off). Moving or turning it off asks for the
//! password first (a current code is not enough: a stolen session and one code relayed
//! from the owner's app must not move the second factor to someone else's app); operators
//! cannot turn it off at all while they are operators (the console needs it). Pages that
//! show a secret or recovery codes are never cached.

use crate::audit;
use crate::auth::CurrentUser;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::pages::auth::{reauthenticate, Refusal};
use crate::routes::{Access, Routes};
use crate::state::AppState;
use crate::views::{render, render_status, Layout, MessagePage};
use crate::{crypto, session, totp};
use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
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
        .post("/account/2fa/replace", User, replace_start)
        .post("/account/2fa/replace/confirm", User, replace_confirm)
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

/// The two-factor page: set-up when it is off, moving to a new app when it is on.
#[derive(Template)]
#[template(path = "totp_enrol.html")]
struct EnrolPage {
    l: Layout,
    enabled: bool,
    is_operator: bool,
    /// The secret being enrolled, with its QR code, once enrolment started.
    secret: Option<String>,
    qr_svg: String,
    /// The secret shown replaces the one in use (enrolment of a new app).
    replacing: bool,
    /// A wrong code for the secret shown.
    error: Option<String>,
    /// Why the password or code asked before moving to a new app was refused.
    reauth_error: Option<String>,
}

impl EnrolPage {
    async fn new(session: &Session, user: &User) -> Result<Self, AppError> {
        Ok(Self {
            l: Layout::new(session, Some(user)).await?,
            enabled: user.totp_enabled(),
            is_operator: user.is_operator,
            secret: None,
            qr_svg: String::new(),
            replacing: false,
            error: None,
            reauth_error: None,
        })
    }

    /// Shows `secret` to scan (as a QR code and as text).
    fn showing(mut self, user: &User, secret: String) -> Self {
        self.qr_svg = totp::qr_svg(&totp::otpauth_uri("Herd", &user.email, &secret));
        self.secret = Some(secret);
        self
    }
}

/// `page` with `status`, marked so that no cache keeps it: it may show a TOTP secret or
/// recovery codes.
fn render_secret(status: StatusCode, page: &impl Template) -> Result<Response, AppError> {
    let mut resp = render_status(status, page)?;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

async fn enrol_page(
    session: &Session,
    user: &User,
    error: Option<String>,
) -> Result<Response, AppError> {
    let mut page = EnrolPage::new(session, user).await?;
    if let Some(pending) = user.totp_secret.clone().filter(|_| !user.totp_enabled()) {
        page = page.showing(user, pending);
    }
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    page.error = error;
    render_secret(status, &page)
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
    /// The account's password: a session alone must not be enough to put an authenticator
    /// of someone else's on an account (its owner would be locked out).
    #[serde(default)]
    password: String,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    l: Layout,
    codes: Vec<String>,
}

/// New recovery codes, and the hashes to store.
fn new_recovery_codes() -> (Vec<String>, Vec<Vec<u8>>) {
    let codes = totp::recovery_codes();
    let hashes = codes
        .iter()
        .map(|c| crypto::token_hash(&totp::normalize_recovery_code(c)))
        .collect();
    (codes, hashes)
}

const WRONG_NEW_CODE: &str =
    "That code does not match. Check your app's clock and enter the current 6-digit code.";

async fn enrol_confirm(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    CurrentUser(mut user): CurrentUser,
    Form(form): Form<CodeForm>,
) -> Result<Response, AppError> {
    let Some(secret) = user.totp_secret.clone().filter(|_| !user.totp_enabled()) else {
        return Ok(Redirect::to("/account/2fa").into_response());
    };
    // The password first (two-factor authentication is not on yet, so only the password
    // is accepted): counted and throttled as at login.
    if let Err(Refusal { status, message }) =
        reauthenticate(&state, &user, &ip, &form.password).await?
    {
        let mut page = EnrolPage::new(&session, &user)
            .await?
            .showing(&user, secret);
        page.reauth_error = Some(message);
        return render_secret(status, &page);
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let Some(step) = totp::verify(&secret, &form.code, now) else {
        return enrol_page(&session, &user, Some(WRONG_NEW_CODE.into())).await;
    };
    let (codes, hashes) = new_recovery_codes();
    let mut tx = state.pool.begin().await?;
    users::enable_totp(&mut tx, user.id(), &hashes).await?;
    users::claim_totp_step(&mut tx, user.id(), step).await?;
    audit::record_own(&mut tx, &user, &ip, "user.2fa_enabled", json!({})).await?;
    tx.commit().await?;
    // A new session id now that the account's protection changed; other sessions end.
    user.totp_enabled_at = Some(OffsetDateTime::now_utc());
    session::log_in(&session, &user).await?;
    render_secret(
        StatusCode::OK,
        &RecoveryCodesPage {
            l: Layout::new(&session, Some(&user)).await?,
            codes,
        },
    )
}

/// The password, asked before the second factor is moved or removed.
#[derive(Debug, Deserialize)]
struct ReauthForm {
    #[serde(default)]
    credential: String,
}

/// Moving to a new authenticator app, step 1: the password (a current code is not enough),
/// then a new secret to scan. The one in use keeps working until the new one is confirmed.
async fn replace_start(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    CurrentUser(user): CurrentUser,
    Form(form): Form<ReauthForm>,
) -> Result<Response, AppError> {
    if !user.totp_enabled() {
        return Ok(Redirect::to("/account/2fa").into_response());
    }
    let proof = match reauthenticate(&state, &user, &ip, &form.credential).await? {
        Ok(proof) => proof,
        Err(Refusal { status, message }) => {
            let mut page = EnrolPage::new(&session, &user).await?;
            page.reauth_error = Some(message);
            return render_status(status, &page);
        }
    };
    let secret = totp::new_secret();
    session::set_totp_replacement(&session, &secret, proof.as_str()).await?;
    let mut page = EnrolPage::new(&session, &user)
        .await?
        .showing(&user, secret);
    page.replacing = true;
    render_secret(StatusCode::OK, &page)
}

#[derive(Debug, Deserialize)]
struct ReplaceForm {
    #[serde(default)]
    secret: String,
    #[serde(default)]
    code: String,
}

/// Moving to a new authenticator app, step 2: a code from the new app makes its secret the
/// account's, with new recovery codes. Only the secret shown after step 1 in this session
/// is accepted (it comes back with the form), so a session taken over later cannot finish
/// someone else's step 1.
async fn replace_confirm(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    CurrentUser(mut user): CurrentUser,
    Form(form): Form<ReplaceForm>,
) -> Result<Response, AppError> {
    let proof = match session::totp_replacement(&session, &form.secret).await? {
        Some(proof) if user.totp_enabled() => proof,
        _ => {
            session::flash(
                &session,
                "error",
                "Moving to a new app starts again: confirm it is you with your password.",
            )
            .await?;
            return Ok(Redirect::to("/account/2fa").into_response());
        }
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let Some(step) = totp::verify(&form.secret, &form.code, now) else {
        let mut page = EnrolPage::new(&session, &user)
            .await?
            .showing(&user, form.secret);
        page.replacing = true;
        page.error = Some(WRONG_NEW_CODE.into());
        return render_secret(StatusCode::UNPROCESSABLE_ENTITY, &page);
    };
    let (codes, hashes) = new_recovery_codes();
    let mut tx = state.pool.begin().await?;
    users::set_totp_pending(&mut tx, user.id(), &form.secret).await?;
    users::enable_totp(&mut tx, user.id(), &hashes).await?;
    // A step the old secret already used stays used (the claim then changes nothing).
    users::claim_totp_step(&mut tx, user.id(), step).await?;
    audit::record_own(
        &mut tx,
        &user,
        &ip,
        "user.2fa_replaced",
        json!({ "confirmed_by": proof }),
    )
    .await?;
    tx.commit().await?;
    session::clear_totp_replacement(&session).await?;
    // A new session id for this one; the user's other sessions end.
    user.totp_secret = Some(form.secret);
    session::log_in(&session, &user).await?;
    render_secret(
        StatusCode::OK,
        &RecoveryCodesPage {
            l: Layout::new(&session, Some(&user)).await?,
            codes,
        },
    )
}

/// Operators keep their second factor: the console needs it. Why, and what to do instead.
async fn operator_keeps_2fa(
    session: &Session,
    user: &User,
    status: StatusCode,
) -> Result<Response, AppError> {
    render_status(
        status,
        &MessagePage {
            l: Layout::new(session, Some(user)).await?,
            title: "Operators keep two-factor authentication".into(),
            message: "The operator console needs it, so it cannot be turned off while you are an operator. To use a new phone or app, move it there instead. To give up the console, ask another operator to remove your operator role first.".into(),
            link: Some(("/account/2fa".into(), "Move to a new app".into())),
        },
    )
}

#[derive(Template)]
#[template(path = "totp_disable.html")]
struct DisablePage {
    l: Layout,
    reauth_error: Option<String>,
}

async fn disable_confirm(
    session: Session,
    CurrentUser(user): CurrentUser,
) -> Result<Response, AppError> {
    if user.is_operator {
        return operator_keeps_2fa(&session, &user, StatusCode::OK).await;
    }
    if !user.totp_enabled() {
        return Ok(Redirect::to("/account").into_response());
    }
    render(&DisablePage {
        l: Layout::new(&session, Some(&user)).await?,
        reauth_error: None,
    })
}

async fn disable(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    CurrentUser(mut user): CurrentUser,
    Form(form): Form<ReauthForm>,
) -> Result<Response, AppError> {
    if user.is_operator {
        return operator_keeps_2fa(&session, &user, StatusCode::FORBIDDEN).await;
    }
    if !user.totp_enabled() {
        return Ok(Redirect::to("/account").into_response());
    }
    let proof = match reauthenticate(&state, &user, &ip, &form.credential).await? {
        Ok(proof) => proof,
        Err(Refusal { status, message }) => {
            return render_status(
                status,
                &DisablePage {
                    l: Layout::new(&session, Some(&user)).await?,
                    reauth_error: Some(message),
                },
            );
        }
    };
    let mut tx = state.pool.begin().await?;
    users::disable_totp(&mut tx, user.id()).await?;
    audit::record_own(
        &mut tx,
        &user,
        &ip,
        "user.2fa_disabled",
        json!({ "confirmed_by": proof.as_str() }),
    )
    .await?;
    tx.commit().await?;
    // A new session id for this one; the user's other sessions end.
    user.totp_secret = None;
    user.totp_enabled_at = None;
    session::log_in(&session, &user).await?;
    session::flash(&session, "ok", "Two-factor authentication is off.").await?;
    Ok(Redirect::to("/account").into_response())
}
