//! Tries at the second factor, throttled per account apart from passwords: a correct
//! password never resets the count, only a correct second factor does.

use crate::StoreError;
use herd_domain::UserId;
use sqlx::PgPool;
use time::Duration;

/// Takes a turn at the second factor for `user`, if the account has one left: its
/// failures within `window` since its last success are fewer than `max`. The turn is
/// recorded as a failure at once (see [`succeeded`]) while the account's row is locked, so
/// of many parallel tries at most `max` get a turn. Returns the turn's id, or `None` when
/// the account is throttled. Runs its own transaction, so it takes the pool.
#[tracing::instrument(skip(pool))]
pub async fn take_turn(
    pool: &PgPool,
    user: UserId,
    source_ip: &str,
    window: Duration,
    max: i64,
) -> Result<Option<i64>, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT id FROM users WHERE id = $1 FOR UPDATE", user.0)
        .fetch_optional(&mut *tx)
        .await?;
    // Older tries count for nothing: they go (so the table holds only recent ones).
    sqlx::query!(
        "DELETE FROM second_factor_attempts
          WHERE user_id = $1 AND at < now() - make_interval(secs => $2)",
        user.0,
        window.as_seconds_f64()
    )
    .execute(&mut *tx)
    .await?;
    let failures = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM second_factor_attempts a
            WHERE a.user_id = $1 AND NOT a.succeeded
              AND a.at > now() - make_interval(secs => $2)
              AND a.at > coalesce((SELECT max(s.at) FROM second_factor_attempts s
                                    WHERE s.user_id = $1 AND s.succeeded), '-infinity')"#,
        user.0,
        window.as_seconds_f64()
    )
    .fetch_one(&mut *tx)
    .await?;
    if failures >= max {
        return Ok(None);
    }
    let id = sqlx::query_scalar!(
        "INSERT INTO second_factor_attempts (user_id, source_ip) VALUES ($1, $2) RETURNING id",
        user.0,
        source_ip
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(id))
}

/// The turn's code was right: the account's count starts again.
#[tracing::instrument(skip(pool))]
pub async fn succeeded(pool: &PgPool, turn: i64) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE second_factor_attempts SET succeeded = true WHERE id = $1",
        turn
    )
    .execute(pool)
    .await?;
    Ok(())
}
