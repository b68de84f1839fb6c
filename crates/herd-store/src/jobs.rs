//! The PostgreSQL job queue: work that must survive a crash (processing a Stripe event,
//! later provisioning and emails). Jobs are claimed with `FOR UPDATE SKIP LOCKED`, so any
//! number of workers share the queue without blocking each other; a claimed job carries a
//! lease, and a job whose worker died is claimed again once the lease has run out. Handlers
//! must therefore be idempotent: a job runs at least once, and its effects happen once.

use crate::StoreError;
use sqlx::PgExecutor;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub payload: serde_json::Value,
    /// Enqueue at most once per key (e.g. the Stripe event id).
    pub dedupe_key: Option<&'a str>,
    pub max_attempts: i32,
}

impl<'a> NewJob<'a> {
    pub fn new(kind: &'a str, payload: serde_json::Value) -> Self {
        Self {
            kind,
            payload,
            dedupe_key: None,
            max_attempts: 10,
        }
    }
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
    /// This claim included (1 on the first run).
    pub attempts: i32,
    pub max_attempts: i32,
}

/// A job as listed for operators.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub attempts: i32,
    pub run_at: OffsetDateTime,
    pub last_error: Option<String>,
}

/// Enqueues a job; `None` when a job with the same dedupe key exists already.
pub async fn enqueue(ex: impl PgExecutor<'_>, job: NewJob<'_>) -> Result<Option<Uuid>, StoreError> {
    let id = Uuid::now_v7();
    let row = sqlx::query_scalar!(
        "INSERT INTO jobs (id, kind, payload, dedupe_key, max_attempts)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (dedupe_key) DO NOTHING
         RETURNING id",
        id,
        job.kind,
        job.payload,
        job.dedupe_key,
        job.max_attempts
    )
    .fetch_optional(ex)
    .await?;
    Ok(row)
}

/// Claims up to `limit` due jobs of the given kinds for `lease`: queued jobs whose time has
/// come, and running jobs whose lease ran out (their worker died).
pub async fn claim(
    ex: impl PgExecutor<'_>,
    kinds: &[&str],
    limit: i64,
    lease: Duration,
) -> Result<Vec<Job>, StoreError> {
    let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    let lease_ms = lease.whole_milliseconds() as f64;
    let jobs = sqlx::query_as!(
        Job,
        "UPDATE jobs SET state = 'running', attempts = attempts + 1,
                locked_until = now() + make_interval(secs => $3::float8 / 1000)
         WHERE id IN (
             SELECT id FROM jobs
             WHERE kind = ANY($1)
               AND ((state = 'queued' AND run_at <= now())
                    OR (state = 'running' AND locked_until < now()))
             ORDER BY run_at
             LIMIT $2
             FOR UPDATE SKIP LOCKED)
         RETURNING id, kind, payload, attempts, max_attempts",
        &kinds,
        limit,
        lease_ms
    )
    .fetch_all(ex)
    .await?;
    Ok(jobs)
}

/// Marks a job done.
pub async fn complete(ex: impl PgExecutor<'_>, id: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE jobs SET state = 'done', finished_at = now(), locked_until = NULL, last_error = NULL
         WHERE id = $1",
        id
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Records a failed run: the job is tried again after `retry_in`, or marked failed once it
/// has used its attempts. Returns whether it will be retried.
pub async fn fail(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    error: &str,
    retry_in: Duration,
) -> Result<bool, StoreError> {
    let retry_ms = retry_in.whole_milliseconds() as f64;
    let state = sqlx::query_scalar!(
        "UPDATE jobs SET
             state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
             run_at = now() + make_interval(secs => $3::float8 / 1000),
             finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
             locked_until = NULL,
             last_error = $2
         WHERE id = $1
         RETURNING state",
        id,
        error,
        retry_ms
    )
    .fetch_optional(ex)
    .await?;
    Ok(state.as_deref() == Some("queued"))
}

/// Puts a job back in the queue now, with fresh attempts (an operator's "reprocess").
/// Returns false when no job has that key.
pub async fn requeue_by_key(ex: impl PgExecutor<'_>, dedupe_key: &str) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'queued', run_at = now(), attempts = 0, locked_until = NULL,
                finished_at = NULL
         WHERE dedupe_key = $1",
        dedupe_key
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The job enqueued under a key.
pub async fn by_key(
    ex: impl PgExecutor<'_>,
    dedupe_key: &str,
) -> Result<Option<JobRow>, StoreError> {
    Ok(sqlx::query_as!(
        JobRow,
        "SELECT id, kind, state, attempts, run_at, last_error FROM jobs WHERE dedupe_key = $1",
        dedupe_key
    )
    .fetch_optional(ex)
    .await?)
}

/// How many jobs are in each state, for metrics.
pub async fn counts(ex: impl PgExecutor<'_>) -> Result<Vec<(String, i64)>, StoreError> {
    let rows =
        sqlx::query!(r#"SELECT state, count(*) AS "n!" FROM jobs GROUP BY state ORDER BY state"#)
            .fetch_all(ex)
            .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.n)).collect())
}
