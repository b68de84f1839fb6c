//! Asking a logged-in user to prove again that they hold the account before a change to
//! its protection (turning off or replacing two-factor authentication): a stolen session
//! alone must not be enough. The answer is the password or a current code from the
//! authenticator app, counted by the same throttles as a login.

use super::*;

/// How the user proved it was them, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    Password,
    Totp,
}

impl Proof {
    pub fn as_str(self) -> &'static str {
        match self {
            Proof::Password => "password",
            Proof::Totp => "totp",
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

/// A TOTP code as typed (six digits, spaces allowed), which no password can be (they have
/// at least 12 characters).
fn looks_like_code(answer: &str) -> bool {
    let digits: Vec<char> = answer.chars().filter(|c| !c.is_whitespace()).collect();
    digits.len() == totp::DIGITS as usize && digits.iter().all(char::is_ascii_digit)
}

/// Checks `answer`, the user's password or (when two-factor authentication is on) the
/// current code from their app. Throttled and counted as at login: per account and per
/// address with the passwords (a success resets the account's count), and codes also
/// with the second factor's own count. A code is taken once (no replay).
pub async fn reauthenticate(
    state: &AppState,
    user: &User,
    ip: &str,
    answer: &str,
) -> Result<Result<Proof, Refusal>, AppError> {
    if answer.trim().is_empty() {
        return Ok(Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your password or the current code from your app.",
        )));
    }
    if let Some(msg) = throttled(state, &user.email, ip).await? {
        return Ok(Err(Refusal::new(StatusCode::TOO_MANY_REQUESTS, msg)));
    }
    let proof = match &user.totp_secret {
        Some(secret) if user.totp_enabled() && looks_like_code(answer) => {
            let cfg = &state.config;
            let Some(turn) = second_factor::take_turn(
                &state.pool,
                user.id(),
                ip,
                cfg.login_window,
                cfg.login_max_per_account,
            )
            .await?
            else {
                let minutes = cfg.login_window.whole_minutes();
                return Ok(Err(Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many wrong codes for this account. Wait {minutes} minutes and try again."),
                )));
            };
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let ok = match totp::verify(secret, answer, now) {
                Some(step) => {
                    let mut conn = state.pool.acquire().await?;
                    users::claim_totp_step(&mut conn, user.id(), step).await?
                }
                None => false,
            };
            if ok {
                second_factor::succeeded(&state.pool, turn).await?;
            }
            ok.then_some(Proof::Totp)
        }
        _ => crypto::verify_password(answer.to_owned(), user.password_hash.clone())
            .await
            .then_some(Proof::Password),
    };
    login_attempts::record(&state.pool, &user.email, ip, proof.is_some()).await?;
    Ok(proof.ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "That is neither your password nor the current code from your app. Nothing was changed.",
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::looks_like_code;

    #[test]
    fn codes_are_six_digits_and_passwords_are_not() {
        assert!(looks_like_code("123456"));
        assert!(looks_like_code(" 123 456 "));
        assert!(!looks_like_code("12345"));
        assert!(!looks_like_code("1234567"));
        assert!(!looks_like_code("violet tram harbour 42"));
        assert!(!looks_like_code("123456789012"));
    }
}
