//! Login throttling counts and their clean-up.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_store::login_attempts::{prune, recent_failures, record};
use sqlx::PgPool;
use time::Duration;

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn failures_count_until_a_success_and_old_rows_are_pruned(pool: PgPool) {
    for _ in 0..3 {
        record(&pool, "a@example.org", "10.0.0.1", false)
            .await
            .unwrap();
    }
    record(&pool, "b@example.org", "10.0.0.1", false)
        .await
        .unwrap();
    assert_eq!(
        recent_failures(&pool, "a@example.org", "10.0.0.1", Duration::minutes(15))
            .await
            .unwrap(),
        (3, 4)
    );
    record(&pool, "a@example.org", "10.0.0.2", true)
        .await
        .unwrap();
    let (by_email, by_ip) =
        recent_failures(&pool, "a@example.org", "10.0.0.1", Duration::minutes(15))
            .await
            .unwrap();
    assert_eq!(
        (by_email, by_ip),
        (0, 4),
        "a success resets the account's count, not the address's"
    );

    sqlx::query(
        "UPDATE login_attempts SET at = now() - interval '2 days' WHERE email = 'b@example.org'",
    )
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(prune(&pool, Duration::days(1)).await.unwrap(), 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM login_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 4);
}
