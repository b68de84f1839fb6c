//! Confirming the email address, and sending a new confirmation link.

use super::*;

#[derive(Template)]
#[template(path = "verify.html")]
pub(super) struct VerifyPage {
    l: Layout,
    action: String,
}

pub(super) async fn verify_form(
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

pub(super) async fn verify(
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
pub(super) struct EmailForm {
    #[serde(default)]
    pub(super) email: String,
}

#[derive(Template)]
#[template(path = "email_form.html")]
pub(super) struct EmailFormPage {
    l: Layout,
    title: &'static str,
    intro: &'static str,
    action: &'static str,
    button: &'static str,
    email: String,
    error: Option<String>,
}

pub(super) const RESEND: (&str, &str, &str, &str) = (
    "Confirm your email",
    "Enter the address you signed up with and we will send a new confirmation link.",
    "/verify-email/resend",
    "Send link",
);
pub(super) const FORGOT: (&str, &str, &str, &str) = (
    "Forgot your password?",
    "Enter your account's email address and we will send a link to choose a new password.",
    "/password/forgot",
    "Send reset link",
);

pub(super) async fn email_form_page(
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

pub(super) async fn resend_form(
    session: Session,
    MaybeUser(user): MaybeUser,
) -> Result<Response, AppError> {
    email_form_page(&session, user.as_ref(), RESEND, String::new(), None).await
}

pub(super) async fn resend(
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
            emails::queue_verification(&mut tx, &state, user.id(), None).await?;
            tx.commit().await?;
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
