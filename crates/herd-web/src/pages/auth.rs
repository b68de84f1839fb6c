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
use herd_store::{login_attempts, orgs};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tower_sessions::Session;

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

// ---------------------------------------------------------------- sign-up

#[derive(Debug, Default, Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    org_name: String,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "signup.html")]
struct SignupPage {
    l: Layout,
    form: SignupForm,
    errors: FieldErrors,
    rules: &'static str,
}

async fn signup_form(
    session: Session,
    MaybeUser(user): MaybeUser,
    Query(q): Query<NextQuery>,
) -> Result<Response, AppError> {
    let form = SignupForm {
        next: q.next,
        ..Default::default()
    };
    render(&SignupPage {
        l: Layout::new(&session, user.as_ref()).await?,
        form,
        errors: FieldErrors::default(),
        rules: PASSWORD_RULES,
    })
}

#[derive(Template)]
#[template(path = "signup_done.html")]
struct SignupDonePage {
    l: Layout,
    email: String,
    mail_failed: bool,
}

async fn signup(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Form(mut form): Form<SignupForm>,
) -> Result<Response, AppError> {
    let mut errors = FieldErrors::default();
    let name = form.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        errors.add("name", "Enter your name (at most 100 characters).");
    }
    let email = Email::parse(&form.email)
        .map_err(|e| errors.add("email", e))
        .ok();
    if let Some(email) = &email {
        if let Err(e) = check_password(&form.password, email.local_part()) {
            errors.add("password", e);
        }
    } else if form.password.is_empty() {
        errors.add("password", "Choose a password.");
    }
    let org_name = form.org_name.trim().to_owned();
    let slug = if org_name.is_empty() {
        None
    } else if org_name.chars().count() > 100 {
        errors.add("org_name", "At most 100 characters.");
        None
    } else {
        match Slug::suggest(&org_name) {
            Some(s) => Some(s),
            None => {
                errors.add("org_name", "Use a name with some letters in it.");
                None
            }
        }
    };
    let (Some(email), true) = (email, errors.is_empty()) else {
        form.password.clear();
        return render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &SignupPage {
                l: Layout::new(&session, None).await?,
                form,
                errors,
                rules: PASSWORD_RULES,
            },
        );
    };

    let hash = crypto::hash_password(form.password.clone())
        .await
        .map_err(AppError::Internal)?;
    let mut tx = state.pool.begin().await?;
    let user = match users::create(&mut tx, &email, &name, &hash, false).await {
        Ok(u) => u,
        Err(e) if e.is_conflict_on(users::EMAIL_TAKEN) => {
            drop(tx);
            errors.add("email", "An account with this email already exists. Log in, or reset your password if you forgot it.");
            form.password.clear();
            return render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &SignupPage {
                    l: Layout::new(&session, None).await?,
                    form,
                    errors,
                    rules: PASSWORD_RULES,
                },
            );
        }
        Err(e) => return Err(e.into()),
    };
    let actor = Actor {
        user: Some(&user),
        ip: &ip,
    };
    audit::record(
        &mut tx,
        actor,
        None,
        "user.signed_up",
        user.email.clone(),
        json!({}),
    )
    .await?;
    if let Some(slug) = slug {
        let org = create_org_unique_slug(&mut tx, &slug, &org_name, &user).await?;
        audit::record(
            &mut tx,
            actor,
            Some(org.id()),
            "org.created",
            org.slug.clone(),
            json!({ "name": org.name }),
        )
        .await?;
    }
    let link = issue_verification(&mut tx, &state, &user, form.next.as_deref()).await?;
    tx.commit().await?;

    let mail_failed = send_or_log(
        &state,
        emails::verify_email(&user.email, &user.display_name, &link),
    )
    .await;
    render(&SignupDonePage {
        l: Layout::new(&session, None).await?,
        email: user.email,
        mail_failed,
    })
}

/// Creates an organization, adding `-2`, `-3`… to the slug while it is taken.
pub async fn create_org_unique_slug(
    conn: &mut sqlx::PgConnection,
    slug: &Slug,
    name: &str,
    owner: &User,
) -> Result<orgs::Org, AppError> {
    for n in 1..=20 {
        let candidate = if n == 1 {
            slug.clone()
        } else {
            let base = slug.as_str();
            let base = &base[..base.len().min(herd_domain::slug::SLUG_MAX_LEN - 4)];
            Slug::parse(&format!("{}-{n}", base.trim_end_matches('-')))
                .map_err(|e| AppError::Internal(e.to_string()))?
        };
        let mut sp = sqlx::Connection::begin(&mut *conn).await?;
        match orgs::create(&mut sp, &candidate, name, owner.id()).await {
            Ok(org) => {
                sp.commit().await?;
                return Ok(org);
            }
            Err(e) if e.is_conflict_on(orgs::SLUG_TAKEN) => {
                sp.rollback().await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Internal("no free slug after 20 tries".into()))
}

async fn issue_verification(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    user: &User,
    next: Option<&str>,
) -> Result<String, AppError> {
    let token = crypto::random_token();
    let expires = OffsetDateTime::now_utc() + state.config.verify_email_ttl;
    tokens::issue(
        conn,
        user.id(),
        Purpose::VerifyEmail,
        &crypto::token_hash(&token),
        expires,
    )
    .await?;
    let mut path = format!("/verify-email/{token}");
    if let Some(next) = next.filter(|n| session::safe_next(Some(n)) == *n) {
        path.push_str("?next=");
        path.extend(url::form_urlencoded::byte_serialize(next.as_bytes()));
    }
    Ok(state.config.link(&path))
}

/// Sends an email; on failure logs it and returns true (the page then says so).
pub async fn send_or_log(state: &AppState, email: herd_mail::Email) -> bool {
    match state.mailer.send(&email).await {
        Ok(()) => false,
        Err(e) => {
            tracing::error!(error = %e, subject = %email.subject, "could not send email");
            true
        }
    }
}

// ---------------------------------------------------------------- email verification

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyPage {
    l: Layout,
    action: String,
}

async fn verify_form(
    session: Session,
    MaybeUser(user): MaybeUser,
    Path(token): Path<String>,
    Query(q): Query<NextQuery>,
) -> Result<Response, AppError> {
    // Confirming takes a click (a POST), so mail scanners that open links consume nothing.
    let mut action = format!("/verify-email/{token}");
    if let Some(next) = q.next {
        action.push_str("?next=");
        action.extend(url::form_urlencoded::byte_serialize(next.as_bytes()));
    }
    render(&VerifyPage {
        l: Layout::new(&session, user.as_ref()).await?,
        action,
    })
}

async fn verify(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    Query(q): Query<NextQuery>,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    let check = tokens::consume(&mut tx, Purpose::VerifyEmail, &crypto::token_hash(&token)).await?;
    let l = Layout::new(&session, None).await?;
    let next = session::safe_next(q.next.as_deref());
    let login = format!(
        "/login?next={}",
        url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
    );
    let (status, title, message, link) = match check {
        TokenCheck::Consumed(uid) => {
            users::mark_email_verified(&mut tx, uid).await?;
            let user = users::by_id(&mut *tx, uid).await?;
            audit::record(&mut tx, Actor { user: user.as_ref(), ip: &ip }, None, "user.email_verified", user.as_ref().map(|u| u.email.clone()).unwrap_or_default(), json!({})).await?;
            tx.commit().await?;
            (StatusCode::OK, "Email confirmed", "Thank you: your email address is confirmed. You can now log in.", (login, "Log in"))
        }
        TokenCheck::Expired => (StatusCode::GONE, "Link expired", "This confirmation link has expired. Ask for a new one below.", ("/verify-email/resend".to_owned(), "Send a new link")),
        TokenCheck::AlreadyUsed => (StatusCode::GONE, "Link already used", "This link was already used. If your email is confirmed, just log in.", (login, "Log in")),
        TokenCheck::Unknown => (StatusCode::NOT_FOUND, "Unknown link", "This confirmation link is not valid. Check that you copied all of it, or ask for a new one.", ("/verify-email/resend".to_owned(), "Send a new link")),
    };
    render_status(
        status,
        &MessagePage {
            l,
            title: title.into(),
            message: message.into(),
            link: Some((link.0, link.1.into())),
        },
    )
}

#[derive(Debug, Default, Deserialize)]
struct EmailForm {
    #[serde(default)]
    email: String,
}

#[derive(Template)]
#[template(path = "email_form.html")]
struct EmailFormPage {
    l: Layout,
    title: &'static str,
    intro: &'static str,
    action: &'static str,
    button: &'static str,
    email: String,
    error: Option<String>,
}

const RESEND: (&str, &str, &str, &str) = (
    "Confirm your email",
    "Enter the address you signed up with and we will send a new confirmation link.",
    "/verify-email/resend",
    "Send link",
);
const FORGOT: (&str, &str, &str, &str) = (
    "Forgot your password?",
    "Enter your account's email address and we will send a link to choose a new password.",
    "/password/forgot",
    "Send reset link",
);

async fn email_form_page(
    session: &Session,
    user: Option<&User>,
    which: (&'static str, &'static str, &'static str, &'static str),
    email: String,
    error: Option<String>,
) -> Result<Response, AppError> {
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    render_status(
        status,
        &EmailFormPage {
            l: Layout::new(session, user).await?,
            title: which.0,
            intro: which.1,
            action: which.2,
            button: which.3,
            email,
            error,
        },
    )
}

async fn resend_form(session: Session, MaybeUser(user): MaybeUser) -> Result<Response, AppError> {
    email_form_page(&session, user.as_ref(), RESEND, String::new(), None).await
}

async fn resend(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<EmailForm>,
) -> Result<Response, AppError> {
    let email = match Email::parse(&form.email) {
        Ok(e) => e,
        Err(e) => {
            return email_form_page(&session, None, RESEND, form.email, Some(e.to_string())).await
        }
    };
    if let Some(user) = users::by_email(&state.pool, &email).await? {
        if user.email_verified_at.is_none() {
            let mut tx = state.pool.begin().await?;
            let link = issue_verification(&mut tx, &state, &user, None).await?;
            tx.commit().await?;
            send_or_log(
                &state,
                emails::verify_email(&user.email, &user.display_name, &link),
            )
            .await;
        }
    }
    // The same answer whether or not the account exists.
    session::flash(
        &session,
        "ok",
        format!("If {email} has an unconfirmed account, a new confirmation link is on its way."),
    )
    .await?;
    Ok(Redirect::to("/login").into_response())
}

// ---------------------------------------------------------------- login

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    l: Layout,
    email: String,
    next: String,
    error: Option<String>,
    unverified: bool,
}

async fn login_form(
    session: Session,
    MaybeUser(user): MaybeUser,
    Query(q): Query<NextQuery>,
) -> Result<Response, AppError> {
    if user.is_some() {
        return Ok(Redirect::to(&session::safe_next(q.next.as_deref())).into_response());
    }
    render(&LoginPage {
        l: Layout::new(&session, None).await?,
        email: String::new(),
        next: q.next.unwrap_or_default(),
        error: None,
        unverified: false,
    })
}

/// Is this account or address throttled? Returns the message to show.
async fn throttled(state: &AppState, email: &str, ip: &str) -> Result<Option<String>, AppError> {
    let cfg = &state.config;
    let (by_email, by_ip) =
        login_attempts::recent_failures(&state.pool, email, ip, cfg.login_window).await?;
    let minutes = cfg.login_window.whole_minutes();
    Ok(if by_email >= cfg.login_max_per_account {
        Some(format!("Too many failed attempts for this account. Wait {minutes} minutes, or reset your password."))
    } else if by_ip >= cfg.login_max_per_ip {
        Some(format!("Too many failed sign-in attempts from your network. Wait {minutes} minutes and try again."))
    } else {
        None
    })
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let next = session::safe_next(form.next.as_deref());
    let typed = form.email.trim().to_lowercase();
    let page = |error: String, unverified: bool| LoginPage {
        l: Layout::default(),
        email: form.email.clone(),
        next: form.next.clone().unwrap_or_default(),
        error: Some(error),
        unverified,
    };
    if let Some(msg) = throttled(&state, &typed, &ip).await? {
        let mut p = page(msg, false);
        p.l = Layout::new(&session, None).await?;
        return render_status(StatusCode::TOO_MANY_REQUESTS, &p);
    }
    let user = match Email::parse(&form.email) {
        Ok(e) => users::by_email(&state.pool, &e).await?,
        Err(_) => None,
    };
    let hash = user
        .as_ref()
        .map_or(crypto::DUMMY_HASH.to_owned(), |u| u.password_hash.clone());
    let ok = crypto::verify_password(form.password.clone(), hash).await && user.is_some();
    login_attempts::record(&state.pool, &typed, &ip, ok).await?;
    let (Some(user), true) = (user, ok) else {
        let mut p = page("Wrong email or password.".into(), false);
        p.l = Layout::new(&session, None).await?;
        return render_status(StatusCode::UNAUTHORIZED, &p);
    };
    if user.email_verified_at.is_none() {
        let mut p = page(
            "Confirm your email address first: open the link we sent you.".into(),
            true,
        );
        p.l = Layout::new(&session, None).await?;
        return render_status(StatusCode::FORBIDDEN, &p);
    }
    if user.password_must_change {
        return replace_one_time_password(&state, &session, &user, &ip).await;
    }
    if user.totp_enabled() {
        session::set_pending_2fa(&session, user.id(), &next).await?;
        return Ok(Redirect::to("/login/2fa").into_response());
    }
    complete_login(&state, &session, &user, &ip, &next, "password").await
}

/// A one-time password was right: instead of logging in, send the user to choose their
/// own password through the reset flow (a fresh single-use token).
async fn replace_one_time_password(
    state: &AppState,
    session: &Session,
    user: &User,
    ip: &str,
) -> Result<Response, AppError> {
    let token = crypto::random_token();
    let mut tx = state.pool.begin().await?;
    let expires = OffsetDateTime::now_utc() + state.config.reset_password_ttl;
    tokens::issue(
        &mut tx,
        user.id(),
        Purpose::ResetPassword,
        &crypto::token_hash(&token),
        expires,
    )
    .await?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(user),
            ip,
        },
        None,
        "user.one_time_password_used",
        user.email.clone(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        session,
        "ok",
        "That was a one-time password. Choose your own password now, then log in with it.",
    )
    .await?;
    Ok(Redirect::to(&format!("/password/reset/{token}")).into_response())
}

async fn complete_login(
    state: &AppState,
    session: &Session,
    user: &User,
    ip: &str,
    next: &str,
    method: &str,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(user),
            ip,
        },
        None,
        "user.logged_in",
        user.email.clone(),
        json!({ "method": method }),
    )
    .await?;
    tx.commit().await?;
    session::log_in(session, user.id()).await?;
    if user.is_operator && !user.totp_enabled() {
        session::flash(
            session,
            "error",
            "Operators must enable two-factor authentication before using the console.",
        )
        .await?;
        return Ok(Redirect::to("/account/2fa").into_response());
    }
    Ok(Redirect::to(next).into_response())
}

#[derive(Template)]
#[template(path = "login_2fa.html")]
struct SecondFactorPage {
    l: Layout,
    error: Option<String>,
}

async fn second_factor_form(session: Session) -> Result<Response, AppError> {
    if session::pending_2fa(&session).await?.is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    render(&SecondFactorPage {
        l: Layout::new(&session, None).await?,
        error: None,
    })
}

#[derive(Debug, Deserialize)]
struct CodeForm {
    #[serde(default)]
    code: String,
}

async fn second_factor(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Form(form): Form<CodeForm>,
) -> Result<Response, AppError> {
    let Some((uid, next)) = session::pending_2fa(&session).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let user = users::by_id(&state.pool, uid)
        .await?
        .ok_or(AppError::NotFound)?;
    if let Some(msg) = throttled(&state, &user.email, &ip).await? {
        return render_status(
            StatusCode::TOO_MANY_REQUESTS,
            &SecondFactorPage {
                l: Layout::new(&session, None).await?,
                error: Some(msg),
            },
        );
    }
    let ok = check_second_factor(&state, &user, &form.code).await?;
    login_attempts::record(&state.pool, &user.email, &ip, ok.is_some()).await?;
    match ok {
        Some(method) => complete_login(&state, &session, &user, &ip, &next, method).await,
        None => render_status(
            StatusCode::UNAUTHORIZED,
            &SecondFactorPage { l: Layout::new(&session, None).await?, error: Some("That code is not valid. Enter the current code from your app, or a recovery code.".into()) },
        ),
    }
}

/// A TOTP code (not replayed) or an unused recovery code: which one matched.
pub async fn check_second_factor(
    state: &AppState,
    user: &User,
    code: &str,
) -> Result<Option<&'static str>, AppError> {
    let Some(secret) = &user.totp_secret else {
        return Ok(None);
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if let Some(step) = totp::verify(secret, code, now) {
        let mut conn = state.pool.acquire().await?;
        return Ok(users::claim_totp_step(&mut conn, user.id(), step)
            .await?
            .then_some("totp"));
    }
    let normalized = totp::normalize_recovery_code(code);
    if normalized.len() == 12 {
        let mut conn = state.pool.acquire().await?;
        if users::use_recovery_code(&mut conn, user.id(), &crypto::token_hash(&normalized)).await? {
            return Ok(Some("recovery_code"));
        }
    }
    Ok(None)
}

async fn logout(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    MaybeUser(user): MaybeUser,
) -> Result<Response, AppError> {
    if let Some(user) = &user {
        let mut tx = state.pool.begin().await?;
        audit::record(
            &mut tx,
            Actor {
                user: Some(user),
                ip: &ip,
            },
            None,
            "user.logged_out",
            user.email.clone(),
            json!({}),
        )
        .await?;
        tx.commit().await?;
    }
    session::log_out(&session).await?;
    Ok(Redirect::to("/").into_response())
}

// ---------------------------------------------------------------- password reset

async fn forgot_form(session: Session, MaybeUser(user): MaybeUser) -> Result<Response, AppError> {
    email_form_page(&session, user.as_ref(), FORGOT, String::new(), None).await
}

async fn forgot(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Form(form): Form<EmailForm>,
) -> Result<Response, AppError> {
    let email = match Email::parse(&form.email) {
        Ok(e) => e,
        Err(e) => {
            return email_form_page(&session, None, FORGOT, form.email, Some(e.to_string())).await
        }
    };
    if let Some(user) = users::by_email(&state.pool, &email).await? {
        let token = crypto::random_token();
        let mut tx = state.pool.begin().await?;
        let expires = OffsetDateTime::now_utc() + state.config.reset_password_ttl;
        tokens::issue(
            &mut tx,
            user.id(),
            Purpose::ResetPassword,
            &crypto::token_hash(&token),
            expires,
        )
        .await?;
        audit::record(
            &mut tx,
            Actor {
                user: None,
                ip: &ip,
            },
            None,
            "user.password_reset_requested",
            user.email.clone(),
            json!({}),
        )
        .await?;
        tx.commit().await?;
        let link = state.config.link(&format!("/password/reset/{token}"));
        send_or_log(&state, emails::reset_password(&user.email, &link)).await;
    }
    session::flash(&session, "ok", format!("If an account exists for {email}, a link to reset its password is on its way. It works once, within an hour.")).await?;
    Ok(Redirect::to("/login").into_response())
}

#[derive(Template)]
#[template(path = "reset.html")]
struct ResetPage {
    l: Layout,
    action: String,
    error: Option<String>,
    rules: &'static str,
}

fn token_problem(check: TokenCheck) -> Option<(StatusCode, &'static str, &'static str)> {
    match check {
        TokenCheck::Consumed(_) => None,
        TokenCheck::Expired => Some((
            StatusCode::GONE,
            "Link expired",
            "This reset link has expired. Ask for a new one.",
        )),
        TokenCheck::AlreadyUsed => Some((
            StatusCode::GONE,
            "Link already used",
            "This reset link was already used. Ask for a new one if you still need it.",
        )),
        TokenCheck::Unknown => Some((
            StatusCode::NOT_FOUND,
            "Unknown link",
            "This reset link is not valid. Ask for a new one.",
        )),
    }
}

async fn token_problem_page(
    session: &Session,
    p: (StatusCode, &str, &str),
) -> Result<Response, AppError> {
    render_status(
        p.0,
        &MessagePage {
            l: Layout::new(session, None).await?,
            title: p.1.into(),
            message: p.2.into(),
            link: Some(("/password/forgot".into(), "Reset password".into())),
        },
    )
}

async fn reset_form(
    State(state): State<AppState>,
    session: Session,
    Path(token): Path<String>,
) -> Result<Response, AppError> {
    let check = tokens::peek(
        &state.pool,
        Purpose::ResetPassword,
        &crypto::token_hash(&token),
    )
    .await?;
    if let Some(p) = token_problem(check) {
        return token_problem_page(&session, p).await;
    }
    render(&ResetPage {
        l: Layout::new(&session, None).await?,
        action: format!("/password/reset/{token}"),
        error: None,
        rules: PASSWORD_RULES,
    })
}

#[derive(Debug, Deserialize)]
struct ResetForm {
    #[serde(default)]
    password: String,
}

async fn reset(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    Form(form): Form<ResetForm>,
) -> Result<Response, AppError> {
    let hash = crypto::token_hash(&token);
    let check = tokens::peek(&state.pool, Purpose::ResetPassword, &hash).await?;
    let TokenCheck::Consumed(uid) = check else {
        return token_problem_page(
            &session,
            token_problem(check).unwrap_or((StatusCode::NOT_FOUND, "Unknown link", "")),
        )
        .await;
    };
    let user = users::by_id(&state.pool, uid)
        .await?
        .ok_or(AppError::NotFound)?;
    let local = user.email.split('@').next().unwrap_or_default().to_owned();
    if let Err(e) = check_password(&form.password, &local) {
        return render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &ResetPage {
                l: Layout::new(&session, None).await?,
                action: format!("/password/reset/{token}"),
                error: Some(e.to_string()),
                rules: PASSWORD_RULES,
            },
        );
    }
    let new_hash = crypto::hash_password(form.password)
        .await
        .map_err(AppError::Internal)?;
    let mut tx = state.pool.begin().await?;
    // Consumed under a row lock: of two concurrent submissions only one gets through.
    let check = tokens::consume(&mut tx, Purpose::ResetPassword, &hash).await?;
    if let Some(p) = token_problem(check) {
        drop(tx);
        return token_problem_page(&session, p).await;
    }
    users::set_password(&mut tx, uid, &new_hash).await?;
    tokens::revoke_all(&mut tx, uid, Purpose::ResetPassword).await?;
    // Following the emailed link proves the address too.
    users::mark_email_verified(&mut tx, uid).await?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(&user),
            ip: &ip,
        },
        None,
        "user.password_reset",
        user.email.clone(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &session,
        "ok",
        "Your password was changed. Log in with the new one.",
    )
    .await?;
    Ok(Redirect::to("/login").into_response())
}
