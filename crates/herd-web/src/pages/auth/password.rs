//! Forgotten passwords: the emailed reset link, and one-time passwords.

use super::*;

/// Issues a reset token for `user` and records `action`, in one transaction; returns the
/// path of the page where the new password is chosen.
async fn issue_reset(
    state: &AppState,
    user: &User,
    actor: Actor<'_>,
    action: &str,
) -> Result<String, AppError> {
    let mut tx = state.pool.begin().await?;
    let token = issue_token(
        &mut tx,
        user,
        Purpose::ResetPassword,
        state.config.reset_password_ttl,
    )
    .await?;
    audit::record(&mut tx, actor, None, action, user.email.clone(), json!({})).await?;
    tx.commit().await?;
    Ok(format!("/password/reset/{token}"))
}

/// A one-time password was right: instead of logging in, send the user to choose their
/// own password through the reset flow.
pub(super) async fn replace_one_time_password(
    state: &AppState,
    session: &Session,
    user: &User,
    ip: &str,
) -> Result<Response, AppError> {
    let actor = Actor {
        user: Some(user),
        ip,
    };
    let path = issue_reset(state, user, actor, "user.one_time_password_used").await?;
    session::flash(
        session,
        "ok",
        "That was a one-time password. Choose your own password now, then log in with it.",
    )
    .await?;
    Ok(Redirect::to(&path).into_response())
}

pub(super) async fn forgot_form(
    session: Session,
    MaybeUser(user): MaybeUser,
) -> Result<Response, AppError> {
    email_form_page(&session, user.as_ref(), FORGOT, String::new(), None).await
}

pub(super) async fn forgot(
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
        let actor = Actor {
            user: None,
            ip: &ip,
        };
        let mut tx = state.pool.begin().await?;
        emails::queue_password_reset(&mut tx, &state, user.id()).await?;
        audit::record(
            &mut tx,
            actor,
            None,
            "user.password_reset_requested",
            user.email.clone(),
            json!({}),
        )
        .await?;
        tx.commit().await?;
    }
    session::flash(&session, "ok", format!("If an account exists for {email}, a link to reset its password is on its way. It works once, within an hour.")).await?;
    Ok(Redirect::to("/login").into_response())
}

#[derive(Template)]
#[template(path = "reset.html")]
pub(super) struct ResetPage {
    l: Layout,
    action: String,
    error: Option<String>,
    rules: &'static str,
}

pub(super) fn token_problem(check: TokenCheck) -> Option<(StatusCode, &'static str, &'static str)> {
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

pub(super) async fn token_problem_page(
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

pub(super) async fn reset_form(
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
pub(super) struct ResetForm {
    #[serde(default)]
    password: String,
}

pub(super) async fn reset(
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
    // ...and lifts the account's password lockout, as the throttled login page promises:
    // it counts as the account's success. Failures counted per source address, and the
    // second factor's own count, stay (the link proves neither).
    login_attempts::record(&mut *tx, &user.email, &ip, true).await?;
    audit::record_own(&mut tx, &user, &ip, "user.password_reset", json!({})).await?;
    tx.commit().await?;
    session::flash(
        &session,
        "ok",
        "Your password was changed. Log in with the new one.",
    )
    .await?;
    Ok(Redirect::to("/login").into_response())
}
