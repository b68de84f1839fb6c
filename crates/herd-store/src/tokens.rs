//! Single-use, expiring tokens sent by email (email verification, password reset).
//! Only the SHA-256 hash of a token is stored; the caller hashes.

use crate::StoreError;
use herd_domain::UserId;
use sqlx::PgConnection;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
        }
    }
}

/// What presenting a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCheck {
    /// Valid: it is now used up.
    Consumed(UserId),
    /// Known but past its expiry.
    Expired,
    /// Known but already used.
    AlreadyUsed,
    /// Never issued (or for another purpose).
    Unknown,
}

#[tracing::instrument(skip(conn, token_hash))]
pub async fn issue(
    conn: &mut PgConnection,
    user: UserId,
    purpose: Purpose,
    token_hash: &[u8],
    expires_at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO user_tokens (token_hash, user_id, purpose, expires_at) VALUES ($1, $2, $3, $4)",
        token_hash,
        user.0,
        purpose.as_str(),
        expires_at
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Checks a token and, when valid, marks it used, in the caller's transaction. Concurrent
/// presentations of the same token serialize on the row lock: only one consumes it.
#[tracing::instrument(skip(conn, token_hash))]
pub async fn consume(
    conn: &mut PgConnection,
    purpose: Purpose,
    token_hash: &[u8],
) -> Result<TokenCheck, StoreError> {
    let row = sqlx::query!(
        r#"SELECT user_id, used_at, expires_at < now() AS "expired!"
           FROM user_tokens WHERE token_hash = $1 AND purpose = $2 FOR UPDATE"#,
        token_hash,
        purpose.as_str()
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(TokenCheck::Unknown);
    };
    if row.used_at.is_some() {
        return Ok(TokenCheck::AlreadyUsed);
    }
    if row.expired {
        return Ok(TokenCheck::Expired);
    }
    sqlx::query!(
        "UPDATE user_tokens SET used_at = now() WHERE token_hash = $1",
        token_hash
    )
    .execute(&mut *conn)
    .await?;
    Ok(TokenCheck::Consumed(UserId(row.user_id)))
}

/// Voids every open token of a purpose for a user (after a password change, say).
#[tracing::instrument(skip(conn))]
pub async fn revoke_all(
    conn: &mut PgConnection,
    user: UserId,
    purpose: Purpose,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE user_tokens SET used_at = now() WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        user.0,
        purpose.as_str()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Like [`consume`] but leaves the token unused: `Consumed` here means "valid".
#[tracing::instrument(skip(ex, token_hash))]
pub async fn peek(
    ex: impl sqlx::PgExecutor<'_>,
    purpose: Purpose,
    token_hash: &[u8],
) -> Result<TokenCheck, StoreError> {
    let row = sqlx::query!(
        r#"SELECT user_id, used_at, expires_at < now() AS "expired!"
           FROM user_tokens WHERE token_hash = $1 AND purpose = $2"#,
        token_hash,
        purpose.as_str()
    )
    .fetch_optional(ex)
    .await?;
    Ok(match row {
        None => TokenCheck::Unknown,
        Some(r) if r.used_at.is_some() => TokenCheck::AlreadyUsed,
        Some(r) if r.expired => TokenCheck::Expired,
        Some(r) => TokenCheck::Consumed(UserId(r.user_id)),
    })
}
