//! The emails Herd sends from the portal.

use crate::state::AppState;
use herd_mail::Email;

pub fn verify_email(to: &str, name: &str, link: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: "Confirm your email address for Herd".to_owned(),
        body: format!(
            "Hello {name},\n\nplease confirm your email address by opening this link within 48 hours:\n\n{link}\n\nIf you did not sign up for Herd, ignore this message.\n"
        ),
    }
}

pub fn reset_password(to: &str, link: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: "Reset your Herd password".to_owned(),
        body: format!(
            "Hello,\n\nsomeone (hopefully you) asked to reset the password of this Herd account. Open this link within one hour to choose a new one; it works once:\n\n{link}\n\nIf you did not ask, ignore this message: your password stays as it is.\n"
        ),
    }
}

pub fn invitation(to: &str, inviter: &str, org: &str, role: &str, link: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: format!("{inviter} invited you to {org} on Herd"),
        body: format!(
            "Hello,\n\n{inviter} invited you to join {org} on Herd as {role}. Open this link within 7 days to accept; it works once:\n\n{link}\n\nIf you do not have a Herd account yet, sign up with this email address first.\n"
        ),
    }
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
