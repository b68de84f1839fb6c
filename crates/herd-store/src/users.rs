//! User accounts.

use crate::{Page, Paged, StoreError};
use herd_domain::{Email, UserId};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// The unique constraint on `users.email`.
pub const EMAIL_TAKEN: &str = "users_email_key";

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub email_verified_at: Option<OffsetDateTime>,
    pub is_operator: bool,
    pub totp_secret: Option<String>,
    pub totp_enabled_at: Option<OffsetDateTime>,
    pub password_must_change: bool,
    pub created_at: OffsetDateTime,
}

impl User {
    pub fn id(&self) -> UserId {
        UserId(self.id)
    }
    pub fn totp_enabled(&self) -> bool {
        self.totp_enabled_at.is_some()
    }
}

#[tracing::instrument(skip(conn, password_hash))]
pub async fn create(
    conn: &mut PgConnection,
    email: &Email,
    display_name: &str,
    password_hash: &str,
    is_operator: bool,
) -> Result<User, StoreError> {
    let user = sqlx::query_as!(
        User,
        r#"INSERT INTO users (id, email, display_name, password_hash, is_operator)
           VALUES ($1, $2, $3, $4, $5)
           RETURNING id, email, display_name, password_hash, email_verified_at, is_operator,
                     totp_secret, totp_enabled_at, password_must_change, created_at"#,
        UserId::new().0,
        email.as_str(),
        display_name,
        password_hash,
        is_operator,
    )
    .fetch_one(conn)
    .await?;
    Ok(user)
}

#[tracing::instrument(skip(ex))]
pub async fn by_email(ex: impl PgExecutor<'_>, email: &Email) -> Result<Option<User>, StoreError> {
    Ok(sqlx::query_as!(
        User,
        r#"SELECT id, email, display_name, password_hash, email_verified_at, is_operator,
                  totp_secret, totp_enabled_at, password_must_change, created_at
           FROM users WHERE email = $1"#,
        email.as_str()
    )
    .fetch_optional(ex)
    .await?)
}

#[tracing::instrument(skip(ex))]
pub async fn by_id(ex: impl PgExecutor<'_>, id: UserId) -> Result<Option<User>, StoreError> {
    Ok(sqlx::query_as!(
        User,
        r#"SELECT id, email, display_name, password_hash, email_verified_at, is_operator,
                  totp_secret, totp_enabled_at, password_must_change, created_at
           FROM users WHERE id = $1"#,
        id.0
    )
    .fetch_optional(ex)
    .await?)
}

#[tracing::instrument(skip(conn))]
pub async fn mark_email_verified(conn: &mut PgConnection, id: UserId) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE users SET email_verified_at = coalesce(email_verified_at, now()), updated_at = now()
         WHERE id = $1",
        id.0
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip(conn, password_hash))]
pub async fn set_password(
    conn: &mut PgConnection,
    id: UserId,
    password_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE users SET password_hash = $2, password_must_change = false, updated_at = now()
         WHERE id = $1",
        id.0,
        password_hash
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the password as one-time: the user must choose a new one at first login.
#[tracing::instrument(skip(conn))]
pub async fn require_password_change(
    conn: &mut PgConnection,
    id: UserId,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE users SET password_must_change = true, updated_at = now() WHERE id = $1",
        id.0
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores a TOTP secret being enrolled (not yet enabled).
#[tracing::instrument(skip(conn, secret))]
pub async fn set_totp_pending(
    conn: &mut PgConnection,
    id: UserId,
    secret: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE users SET totp_secret = $2, totp_enabled_at = NULL, updated_at = now() WHERE id = $1",
        id.0,
        secret
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Enables TOTP and replaces the recovery codes with the given hashes.
#[tracing::instrument(skip(conn, recovery_hashes))]
pub async fn enable_totp(
    conn: &mut PgConnection,
    id: UserId,
    recovery_hashes: &[Vec<u8>],
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE users SET totp_enabled_at = now(), updated_at = now()
         WHERE id = $1 AND totp_secret IS NOT NULL",
        id.0
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("DELETE FROM totp_recovery_codes WHERE user_id = $1", id.0)
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "INSERT INTO totp_recovery_codes (user_id, code_hash) SELECT $1, unnest($2::bytea[])",
        id.0,
        recovery_hashes
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip(conn))]
pub async fn disable_totp(conn: &mut PgConnection, id: UserId) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE users SET totp_secret = NULL, totp_enabled_at = NULL, updated_at = now() WHERE id = $1",
        id.0
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("DELETE FROM totp_recovery_codes WHERE user_id = $1", id.0)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Uses up a recovery code; true when it existed and was unused.
#[tracing::instrument(skip(conn, code_hash))]
pub async fn use_recovery_code(
    conn: &mut PgConnection,
    id: UserId,
    code_hash: &[u8],
) -> Result<bool, StoreError> {
    let r = sqlx::query!(
        "UPDATE totp_recovery_codes SET used_at = now()
         WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
        id.0,
        code_hash
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

#[tracing::instrument(skip(ex))]
pub async fn unused_recovery_codes(ex: impl PgExecutor<'_>, id: UserId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM totp_recovery_codes WHERE user_id = $1 AND used_at IS NULL"#,
        id.0
    )
    .fetch_one(ex)
    .await?)
}

/// A row of the operator's user list.
#[derive(Debug, Clone)]
pub struct UserSummary {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub email_verified: bool,
    pub is_operator: bool,
    pub org_count: i64,
    pub created_at: OffsetDateTime,
}

/// Users whose email or name contains `query` (case-insensitive), newest first.
#[tracing::instrument(skip(ex))]
pub async fn search(
    ex: impl PgExecutor<'_>,
    query: &str,
    page: Page,
) -> Result<Paged<UserSummary>, StoreError> {
    let pattern = format!("%{}%", like_escape(query));
    let rows = sqlx::query_as!(
        UserSummary,
        r#"SELECT u.id, u.email, u.display_name,
                  (u.email_verified_at IS NOT NULL) AS "email_verified!",
                  u.is_operator,
                  (SELECT count(*) FROM memberships m WHERE m.user_id = u.id) AS "org_count!",
                  u.created_at
           FROM users u
           WHERE u.email ILIKE $1 OR u.display_name ILIKE $1
           ORDER BY u.created_at DESC, u.id DESC
           LIMIT $2 OFFSET $3"#,
        pattern,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(rows))
}

/// Escapes `%`, `_` and `\` for use inside an ILIKE pattern.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Records the TOTP time step just accepted; false if that step (or a later one) was
/// already used, which means the code is being replayed.
#[tracing::instrument(skip(conn))]
pub async fn claim_totp_step(
    conn: &mut PgConnection,
    id: UserId,
    step: i64,
) -> Result<bool, StoreError> {
    let r = sqlx::query!(
        "UPDATE users SET totp_last_step = $2
         WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
        id.0,
        step
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}
