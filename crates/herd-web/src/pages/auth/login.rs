//! Logging in (with the second factor when enrolled) and out.

use super::*;

#[derive(Debug, Default, Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginPage {
    l: Layout,
    email: String,
    next: String,
    error: Option<String>,
    /// Offer a new confirmation link (after a refused password: the account may be one
    /// whose address is not confirmed yet, which the page must not tell apart).
    offer_resend: bool,
}

/// The answer to a wrong password, and to the right password of an account whose address
/// is not confirmed yet: the same, or signing up with someone's address and then logging
/// in with the password chosen would tell whether they had an account before.
const REFUSED: &str = "Wrong email or password, or the address is not confirmed yet: check your inbox for the confirmation link.";

pub(super) async fn login_form(
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
        offer_resend: false,
    })
}

/// Is this account or address throttled? Returns the message to show.
pub(super) async fn throttled(
    state: &AppState,
    email: &str,
    ip: &str,
) -> Result<Option<String>, AppError> {
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

pub(super) async fn login(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let next = session::safe_next(form.next.as_deref());
    let typed = form.email.trim().to_lowercase();
    // The form again, with what was typed (never the password) and the reason.
    let refuse = |status: StatusCode, error: String, offer_resend: bool| {
        let (session, form) = (&session, &form);
        async move {
            let page = LoginPage {
                l: Layout::new(session, None).await?,
                email: form.email.clone(),
                next: form.next.clone().unwrap_or_default(),
                error: Some(error),
                offer_resend,
            };
            render_status(status, &page)
        }
    };
    if let Some(msg) = throttled(&state, &typed, &ip).await? {
        return refuse(StatusCode::TOO_MANY_REQUESTS, msg, false).await;
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
        return refuse(StatusCode::UNAUTHORIZED, REFUSED.into(), true).await;
    };
    if user.email_verified_at.is_none() {
        return refuse(StatusCode::UNAUTHORIZED, REFUSED.into(), true).await;
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

pub(super) async fn complete_login(
    state: &AppState,
    session: &Session,
    user: &User,
    ip: &str,
    next: &str,
    method: &str,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    audit::record_own(
        &mut tx,
        user,
        ip,
        "user.logged_in",
        json!({ "method": method }),
    )
    .await?;
    tx.commit().await?;
    session::log_in(session, user).await?;
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
pub(super) struct SecondFactorPage {
    l: Layout,
    error: Option<String>,
}

pub(super) async fn second_factor_form(session: Session) -> Result<Response, AppError> {
    if session::pending_2fa(&session).await?.is_none() {
        return Ok(Redirect::to("/login").into_response());
    }
    render(&SecondFactorPage {
        l: Layout::new(&session, None).await?,
        error: None,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct CodeForm {
    #[serde(default)]
    code: String,
}

pub(super) async fn second_factor(
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
    // The second factor has its own count per account, which the password step does not
    // reset; taking a turn is atomic, so parallel guesses get no more turns.
    let cfg = &state.config;
    let Some(turn) = second_factor::take_turn(
        &state.pool,
        user.id(),
        &ip,
        cfg.login_window,
        cfg.login_max_per_account,
    )
    .await?
    else {
        let minutes = cfg.login_window.whole_minutes();
        return render_status(
            StatusCode::TOO_MANY_REQUESTS,
            &SecondFactorPage {
                l: Layout::new(&session, None).await?,
                error: Some(format!("Too many failed attempts for this account. Wait {minutes} minutes and try again.")),
            },
        );
    };
    let ok = check_second_factor(&state, &user, &form.code).await?;
    if ok.is_some() {
        second_factor::succeeded(&state.pool, turn).await?;
    }
    // Counted with the passwords too (per address, and per account until a success).
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

pub(super) async fn logout(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    MaybeUser(user): MaybeUser,
) -> Result<Response, AppError> {
    if let Some(user) = &user {
        let mut tx = state.pool.begin().await?;
        audit::record_own(&mut tx, user, &ip, "user.logged_out", json!({})).await?;
        tx.commit().await?;
    }
    session::log_out(&session).await?;
    Ok(Redirect::to("/").into_response())
}
