//! Login attempts, for throttling per account and per source address.

use crate::StoreError;
use sqlx::PgExecutor;
use time::Duration;

#[tracing::instrument(skip(ex))]
pub async fn record(
    ex: impl PgExecutor<'_>,
    email: &str,
    source_ip: &str,
    succeeded: bool,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO login_attempts (email, source_ip, succeeded) VALUES ($1, $2, $3)",
        email,
        source_ip,
        succeeded
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Failed attempts within `window`: (for this email since its last success, from this IP).
#[tracing::instrument(skip(ex))]
pub async fn recent_failures(
    ex: impl PgExecutor<'_>,
    email: &str,
    source_ip: &str,
    window: Duration,
) -> Result<(i64, i64), StoreError> {
    let secs = window.as_seconds_f64();
    let row = sqlx::query!(
        r#"SELECT
             (SELECT count(*) FROM login_attempts a
               WHERE a.email = $1 AND NOT a.succeeded
                 AND a.at > now() - make_interval(secs => $3)
                 AND a.at > coalesce((SELECT max(s.at) FROM login_attempts s
                                       WHERE s.email = $1 AND s.succeeded), '-infinity')
             ) AS "by_email!",
             (SELECT count(*) FROM login_attempts a
               WHERE a.source_ip = $2 AND NOT a.succeeded
                 AND a.at > now() - make_interval(secs => $3)) AS "by_ip!""#,
        email,
        source_ip,
        secs
    )
    .fetch_one(ex)
    .await?;
    Ok((row.by_email, row.by_ip))
}

/// Deletes attempts older than `keep`; run from a periodic task.
#[tracing::instrument(skip(ex))]
pub async fn prune(ex: impl PgExecutor<'_>, keep: Duration) -> Result<u64, StoreError> {
    let r = sqlx::query!(
        "DELETE FROM login_attempts WHERE at < now() - make_interval(secs => $1)",
        keep.as_seconds_f64()
    )
    .execute(ex)
    .await?;
    Ok(r.rows_affected())
}
