//! Asking a logged-in user to prove again that they hold the account before a change to
//! its protection (turning off or replacing two-factor authentication): a stolen session
//! alone must not be enough, nor a stolen session with one code relayed from the owner's
//! app (that would let someone move the second factor to their own app and lock the owner
//! out). The answer is the password, counted by the same throttles as a login.

use super::*;

/// How the user proved it was them, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Password,
}

impl Proof {
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Password => "password",
        }
    }
}

/// Why the answer was not accepted: the status of the re-rendered form and what it says.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

/// Checks `answer`, the user's password (a code from the authenticator app is not
/// enough). Throttled and counted as at login, per account and per address (a success
/// resets the account's count).
pub async fn reauthenticate(
    state: &AppState,
    user: &User,
    ip: &str,
    answer: &str,
) -> Result<Result<Proof, Refusal>, AppError> {
    if answer.trim().is_empty() {
        return Ok(Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your password.",
        )));
    }
    if let Some(msg) = throttled(state, &user.email, ip).await? {
        return Ok(Err(Refusal::new(StatusCode::TOO_MANY_REQUESTS, msg)));
    }
    let ok = crypto::verify_password(answer.to_owned(), user.password_hash.clone()).await;
    login_attempts::record(&state.pool, &user.email, ip, ok).await?;
    if ok {
        Ok(Ok(Proof::Password))
    } else {
        Ok(Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "That is not your password. Nothing was changed.",
        )))
    }
}
