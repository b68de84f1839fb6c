//! What Herd keeps in a browser session: the logged-in user, a login waiting for its
//! second factor, the CSRF token and a one-shot flash message.

use crate::crypto;
use crate::error::AppError;
use herd_domain::UserId;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

const USER: &str = "uid";
const PENDING_2FA: &str = "pending_2fa";
const CSRF: &str = "csrf";
const FLASH: &str = "flash";
/// A fingerprint of the password the session was opened with: changing the password ends
/// every other session.
const PASSWORD_VERSION: &str = "pwv";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Flash {
    /// `ok` or `error`: the banner's colour.
    pub kind: String,
    pub message: String,
}

pub async fn user_id(session: &Session) -> Result<Option<UserId>, AppError> {
    Ok(session.get::<UserId>(USER).await?)
}

/// Logs `user` in: a new session id (against fixation), a new CSRF token, and the
/// fingerprint of the current password.
pub async fn log_in(session: &Session, user: &herd_store::users::User) -> Result<(), AppError> {
    session.cycle_id().await?;
    session.remove_value(PENDING_2FA).await?;
    session.insert(USER, user.id()).await?;
    session
        .insert(PASSWORD_VERSION, password_version(&user.password_hash))
        .await?;
    session.insert(CSRF, crypto::random_token()).await?;
    Ok(())
}

/// A short fingerprint of a password hash (never the hash itself in the session).
pub fn password_version(password_hash: &str) -> String {
    hex::encode(&crypto::token_hash(password_hash)[..8])
}

/// Whether the session was opened with the user's current password.
pub async fn password_current(
    session: &Session,
    user: &herd_store::users::User,
) -> Result<bool, AppError> {
    Ok(session.get::<String>(PASSWORD_VERSION).await?.as_deref()
        == Some(password_version(&user.password_hash).as_str()))
}

pub async fn log_out(session: &Session) -> Result<(), AppError> {
    session.flush().await?;
    Ok(())
}

/// Password accepted, second factor still to come.
pub async fn set_pending_2fa(session: &Session, user: UserId, next: &str) -> Result<(), AppError> {
    session.cycle_id().await?;
    session.insert(PENDING_2FA, (user, next.to_owned())).await?;
    Ok(())
}

pub async fn pending_2fa(session: &Session) -> Result<Option<(UserId, String)>, AppError> {
    Ok(session.get::<(UserId, String)>(PENDING_2FA).await?)
}

/// The session's CSRF token, created on first use.
pub async fn csrf_token(session: &Session) -> Result<String, AppError> {
    if let Some(t) = session.get::<String>(CSRF).await? {
        return Ok(t);
    }
    let t = crypto::random_token();
    session.insert(CSRF, &t).await?;
    Ok(t)
}

pub async fn expected_csrf(session: &Session) -> Result<Option<String>, AppError> {
    Ok(session.get::<String>(CSRF).await?)
}

pub async fn flash(
    session: &Session,
    kind: &str,
    message: impl Into<String>,
) -> Result<(), AppError> {
    session
        .insert(
            FLASH,
            Flash {
                kind: kind.to_owned(),
                message: message.into(),
            },
        )
        .await?;
    Ok(())
}

pub async fn take_flash(session: &Session) -> Result<Option<Flash>, AppError> {
    Ok(session.remove::<Flash>(FLASH).await?)
}

/// `next` is followed after login only when it is a path on this site.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/orgs".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_site() {
        assert_eq!(safe_next(Some("/o/lyon")), "/o/lyon");
        assert_eq!(safe_next(Some("//evil.example")), "/orgs");
        assert_eq!(safe_next(Some("https://evil.example")), "/orgs");
        assert_eq!(safe_next(Some("/\\evil.example")), "/orgs");
        assert_eq!(safe_next(None), "/orgs");
    }
}
