//! What Herd keeps in a browser session: the logged-in user, a login waiting for its
//! second factor, a replacement of the second factor under way, the CSRF token and a
//! one-shot flash message; and how long an unused session lives.

use crate::crypto;
use crate::error::AppError;
use herd_domain::UserId;
use serde::{Deserialize, Serialize};
use tower_sessions::{Expiry, Session};

/// A session nobody used for this long is over: the next request is anonymous (and a page
/// that needs a login leads to the login page). Each request of a logged-in user starts
/// the count again.
pub const IDLE_TIMEOUT: time::Duration = time::Duration::days(7);

const USER: &str = "uid";
const PENDING_2FA: &str = "pending_2fa";
/// The fingerprint of the new TOTP secret a user is moving to (after proving it was them),
/// and how they proved it; the secret itself is only on the page the user was shown.
const TOTP_REPLACEMENT: &str = "totp_replacement";
const CSRF: &str = "csrf";
const FLASH: &str = "flash";
/// A fingerprint of the password and the second factor in force when the session was
/// opened: changing the password, or turning on, moving or turning off two-factor
/// authentication, ends every other session.
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

/// A logged-in user's request: the session lives [`IDLE_TIMEOUT`] from now (every
/// request counts as activity, not only the ones that change the session).
pub fn touch(session: &Session) {
    session.set_expiry(Some(Expiry::OnInactivity(IDLE_TIMEOUT)));
}

/// Logs `user` in: a new session id (against fixation), a new CSRF token, and the
/// fingerprint of the current password and second factor (`user` as it now is).
pub async fn log_in(session: &Session, user: &herd_store::users::User) -> Result<(), AppError> {
    session.cycle_id().await?;
    session.remove_value(PENDING_2FA).await?;
    session.insert(USER, user.id()).await?;
    session
        .insert(PASSWORD_VERSION, credentials_version(user))
        .await?;
    session.insert(CSRF, crypto::random_token()).await?;
    Ok(())
}

/// A short fingerprint of the password hash and of the TOTP secret in force (never either
/// of them in the session). A secret still being set up does not count.
pub fn credentials_version(user: &herd_store::users::User) -> String {
    let totp = user
        .totp_secret
        .as_deref()
        .filter(|_| user.totp_enabled())
        .unwrap_or_default();
    let material = format!("{}\n{totp}", user.password_hash);
    hex::encode(&crypto::token_hash(&material)[..8])
}

/// Whether the session was opened with the user's current password and second factor.
pub async fn credentials_current(
    session: &Session,
    user: &herd_store::users::User,
) -> Result<bool, AppError> {
    Ok(session.get::<String>(PASSWORD_VERSION).await?.as_deref()
        == Some(credentials_version(user).as_str()))
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

/// The user proved it was them (`proof`) and was shown `secret` to scan: only a form
/// that carries this secret back may make it the account's second factor.
pub async fn set_totp_replacement(
    session: &Session,
    secret: &str,
    proof: &str,
) -> Result<(), AppError> {
    let fingerprint = hex::encode(crypto::token_hash(secret));
    session
        .insert(TOTP_REPLACEMENT, (fingerprint, proof.to_owned()))
        .await?;
    Ok(())
}

/// How the user proved it was them, when `secret` is the replacement they were shown in
/// this session.
pub async fn totp_replacement(session: &Session, secret: &str) -> Result<Option<String>, AppError> {
    let fingerprint = hex::encode(crypto::token_hash(secret));
    Ok(session
        .get::<(String, String)>(TOTP_REPLACEMENT)
        .await?
        .filter(|(f, _)| *f == fingerprint)
        .map(|(_, proof)| proof))
}

pub async fn clear_totp_replacement(session: &Session) -> Result<(), AppError> {
    session.remove_value(TOTP_REPLACEMENT).await?;
    Ok(())
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

/// Where a login (or a confirmation) goes on: `next` when it is a path on this site,
/// `/orgs` otherwise.
pub fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| is_local_path(n))
        .map_or_else(|| "/orgs".to_owned(), str::to_owned)
}

/// A relative reference that is only a path (and query) on this site: it starts with one
/// `/`, has no scheme or authority, and nothing a browser would read differently from
/// what is checked here. Browsers drop tabs and newlines (`/\t/evil` becomes `//evil`)
/// and read `\` as `/`, so control characters, whitespace, backslashes and non-ASCII
/// characters are refused, and so is a path that only looks harmless while
/// percent-encoded (`/%2F%2Fevil`).
fn is_local_path(next: &str) -> bool {
    let path = next.split(['?', '#']).next().unwrap_or_default();
    next.starts_with('/')
        && !next.starts_with("//")
        && next.chars().all(|c| c.is_ascii_graphic() && c != '\\')
        && percent_decode(path).is_some_and(|p| {
            !p.starts_with("//")
                && !p
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        })
        && same_origin(next)
}

/// `next` resolved against this site stays on it (the URL standard's own reading).
fn same_origin(next: &str) -> bool {
    let Ok(base) = url::Url::parse("https://herd.invalid/") else {
        return false;
    };
    base.join(next)
        .is_ok_and(|u| u.origin() == base.origin() && u.username().is_empty())
}

/// `%xx` decoded once; `None` when the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let encoded = format!("x={}", s.replace('+', "%2B"));
    let (_, value) = url::form_urlencoded::parse(encoded.as_bytes()).next()?;
    (!value.contains('\u{fffd}')).then(|| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_site() {
        assert_eq!(safe_next(Some("/o/lyon")), "/o/lyon");
        assert_eq!(
            safe_next(Some("/operator/orgs?q=Ville%20de%20Lyon")),
            "/operator/orgs?q=Ville%20de%20Lyon"
        );
        assert_eq!(safe_next(Some("/caf%C3%A9")), "/caf%C3%A9");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/%09/evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "/%5c/evil.example",
            "/%0a/evil.example",
            "javascript:alert(1)",
            "/ /evil",
            "/\u{0}",
            "/\u{3002}/evil.example",
            "/%ff",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/orgs", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/orgs");
    }
}
