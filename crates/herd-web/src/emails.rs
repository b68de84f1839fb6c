//! The emails Herd sends about accounts (confirmation, password reset, a sign-up with an
//! address that has an account already, invitations), and the jobs that send them.

use crate::crypto;
use crate::error::AppError;
use crate::state::AppState;
use herd_domain::{InvitationId, UserId};
use herd_jobs::{Job, Registry};
use herd_mail::{Email, Mailer};
use herd_store::tokens::{self, Purpose};
use herd_store::{invitations, users};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

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

/// To the holder of an account when someone signs up with its address: the sign-up page
/// looks the same either way (it never tells whether an address has an account), so the
/// holder learns it here, with the ways in.
pub fn account_exists(to: &str, name: &str, login_link: &str, reset_link: &str) -> Email {
    Email {
        to: to.to_owned(),
        subject: "You already have a Herd account".to_owned(),
        body: format!(
            "Hello {name},\n\nsomeone (hopefully you) tried to sign up for Herd with this email address, which already has an account. No new account was made and nothing was changed.\n\nLog in here:\n\n{login_link}\n\nForgot your password? Ask for a new one here:\n\n{reset_link}\n\nIf it was not you, ignore this message.\n"
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

// Account emails go through the job queue, queued in the transaction of the change they
// follow (the sign-up, the reset request, the invitation): a crash or an SMTP outage
// loses none, and the worker retries. A job carries no secret: the one-time token is made
// when the email is built, and only its hash is stored; a retried job makes a new token
// (the newest email's link works; an earlier one that was never delivered does not matter).

/// Send the email-confirmation link to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendVerification {
    pub user_id: Uuid,
    /// Herd's public address when it was asked for (links start with it).
    pub base_url: String,
    /// Until when the link works.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Where to go after confirming (a same-site path, checked when queued).
    pub next: Option<String>,
}

impl Job for SendVerification {
    const KIND: &'static str = "accounts.send_verification";
    const MAX_ATTEMPTS: i32 = 10;
}

/// Send a password-reset link to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendPasswordReset {
    pub user_id: Uuid,
    pub base_url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Job for SendPasswordReset {
    const KIND: &'static str = "accounts.send_password_reset";
    const MAX_ATTEMPTS: i32 = 10;
}

/// Tell an account's holder that someone signed up with its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAccountExists {
    pub user_id: Uuid,
    pub base_url: String,
    /// When the sign-up was tried: at most one such email per account and hour, so
    /// repeated sign-ups cannot flood an inbox.
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
}

impl Job for SendAccountExists {
    const KIND: &'static str = "accounts.send_account_exists";
    const MAX_ATTEMPTS: i32 = 10;

    fn dedupe_key(&self) -> Option<String> {
        let hour = self.requested_at.unix_timestamp().div_euclid(3600);
        Some(format!("account-exists:{}:{hour}", self.user_id))
    }
}

/// Send an invitation's link to the invited address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendInvitation {
    pub invitation_id: Uuid,
    pub base_url: String,
}

impl Job for SendInvitation {
    const KIND: &'static str = "accounts.send_invitation";
    const MAX_ATTEMPTS: i32 = 10;
}

fn link(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// Queues the confirmation email of `user`, in the caller's transaction.
pub async fn queue_verification(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    user: UserId,
    next: Option<&str>,
) -> Result<(), AppError> {
    let next = next
        .filter(|n| crate::session::safe_next(Some(n)) == *n)
        .map(str::to_owned);
    herd_jobs::enqueue(
        conn,
        &SendVerification {
            user_id: user.0,
            base_url: state.config.public_url.to_string(),
            expires_at: OffsetDateTime::now_utc() + state.config.verify_email_ttl,
            next,
        },
    )
    .await?;
    Ok(())
}

/// Queues a password-reset email for `user`, in the caller's transaction.
pub async fn queue_password_reset(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    user: UserId,
) -> Result<(), AppError> {
    herd_jobs::enqueue(
        conn,
        &SendPasswordReset {
            user_id: user.0,
            base_url: state.config.public_url.to_string(),
            expires_at: OffsetDateTime::now_utc() + state.config.reset_password_ttl,
        },
    )
    .await?;
    Ok(())
}

/// Queues the email telling `user` that someone signed up with their address, in the
/// caller's transaction (at most one per hour: a second within the hour is dropped).
pub async fn queue_account_exists(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    user: UserId,
) -> Result<(), AppError> {
    herd_jobs::enqueue(
        conn,
        &SendAccountExists {
            user_id: user.0,
            base_url: state.config.public_url.to_string(),
            requested_at: OffsetDateTime::now_utc(),
        },
    )
    .await?;
    Ok(())
}

/// Queues an invitation's email, in the caller's transaction.
pub async fn queue_invitation(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    invitation: InvitationId,
) -> Result<(), AppError> {
    herd_jobs::enqueue(
        conn,
        &SendInvitation {
            invitation_id: invitation.0,
            base_url: state.config.public_url.to_string(),
        },
    )
    .await?;
    Ok(())
}

/// Mints a one-time token for `user` and stores its hash.
async fn mint(
    pool: &PgPool,
    user: UserId,
    purpose: Purpose,
    expires_at: OffsetDateTime,
) -> anyhow::Result<String> {
    let token = crypto::random_token();
    let mut conn = pool.acquire().await?;
    tokens::issue(
        &mut conn,
        user,
        purpose,
        &crypto::token_hash(&token),
        expires_at,
    )
    .await?;
    Ok(token)
}

/// Registers the account emails' handlers (and the server's "export ready" email's)
/// with the worker's registry.
pub fn register(registry: &mut Registry, pool: &PgPool, mailer: &Mailer) {
    // The server's emails: an export is ready.
    herd_fleet::exports::register(registry, pool, mailer);
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: SendVerification| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            let Some(user) = users::by_id(&pool, UserId(job.user_id)).await? else {
                return Ok(()); // deleted meanwhile
            };
            if user.email_verified_at.is_some() || job.expires_at <= OffsetDateTime::now_utc() {
                return Ok(()); // confirmed meanwhile, or too late to be of use
            }
            let token = mint(&pool, user.id(), Purpose::VerifyEmail, job.expires_at).await?;
            let mut path = format!("/verify-email/{token}");
            if let Some(next) = &job.next {
                path.push_str("?next=");
                path.extend(url::form_urlencoded::byte_serialize(next.as_bytes()));
            }
            let email = verify_email(&user.email, &user.display_name, &link(&job.base_url, &path));
            Ok(mailer.send(&email).await?)
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: SendPasswordReset| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            let Some(user) = users::by_id(&pool, UserId(job.user_id)).await? else {
                return Ok(());
            };
            if job.expires_at <= OffsetDateTime::now_utc() {
                return Ok(());
            }
            let token = mint(&pool, user.id(), Purpose::ResetPassword, job.expires_at).await?;
            let email = reset_password(
                &user.email,
                &link(&job.base_url, &format!("/password/reset/{token}")),
            );
            Ok(mailer.send(&email).await?)
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: SendAccountExists| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            let Some(user) = users::by_id(&pool, UserId(job.user_id)).await? else {
                return Ok(());
            };
            let email = account_exists(
                &user.email,
                &user.display_name,
                &link(&job.base_url, "/login"),
                &link(&job.base_url, "/password/forgot"),
            );
            Ok(mailer.send(&email).await?)
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: SendInvitation| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            let id = InvitationId(job.invitation_id);
            let Some((inv, inviter)) = invitations::open_with_inviter(&pool, id).await? else {
                return Ok(()); // accepted, revoked or expired meanwhile
            };
            let token = crypto::random_token();
            if !invitations::replace_token(&pool, id, &crypto::token_hash(&token)).await? {
                return Ok(());
            }
            let email = invitation(
                &inv.email,
                &inviter,
                &inv.org_name,
                inv.role().label(),
                &link(&job.base_url, &format!("/invitations/{token}")),
            );
            Ok(mailer.send(&email).await?)
        }
    });
}
