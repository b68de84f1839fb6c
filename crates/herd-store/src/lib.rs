//! Herd's storage: every SQL statement, as free functions over a sqlx executor, checked at
//! compile time against the migrations in `migrations/` (offline data in `.sqlx/`).
//!
//! Functions that change state take a `&mut PgConnection` so the caller decides the
//! transaction; the audit entry of a change is written in the same one.

pub mod access;
pub mod audit;
pub mod backups;
pub mod billing;
pub mod error;
pub mod exports;
pub mod fleet;
pub mod imports;
pub mod invitations;
pub mod invoicing;
pub mod jobs;
pub mod login_attempts;
pub mod moderation;
pub mod orgs;
pub mod page;
pub mod plans;
pub mod restores;
pub mod second_factor;
pub mod support;
pub mod support_attachments;
pub mod support_ops;
pub mod tokens;
pub mod users;

pub use error::StoreError;
pub use page::{Page, Paged};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// The migrations under the workspace's `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How long a request waits for a database connection before giving up. Short, so that
/// pages answer 503 quickly while PostgreSQL is away.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens a pool without connecting yet: the server starts (and answers `/readyz` with 503)
/// even when the database is down, and connects once it is back.
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let opts = PgConnectOptions::from_str(url)?.application_name("herd");
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
        .connect_lazy_with(opts))
}

/// Applies pending migrations.
#[tracing::instrument(skip_all)]
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// `SELECT 1`: is the database reachable?
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query_scalar!("SELECT 1 AS \"one!\"")
        .fetch_one(pool)
        .await?;
    Ok(())
}

/// Tries to take a session advisory lock on `key` on this connection, without waiting: held
/// until the connection closes (or the process holding it dies), so one holder at a time
/// does what the key names (e.g. one worker watches a cluster).
pub async fn try_session_lock(
    conn: &mut sqlx::PgConnection,
    key: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS "got!""#,
        key
    )
    .fetch_one(conn)
    .await?)
}

/// Takes a transaction-scoped advisory lock on `key`: concurrent transactions taking the
/// same key run one after the other (e.g. two workers recomputing one subscription).
pub async fn lock_key(conn: &mut sqlx::PgConnection, key: &str) -> Result<(), StoreError> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
        .execute(conn)
        .await?;
    Ok(())
}
