//! The PostgreSQL job queue's statements (the job system itself, with typed jobs and the
//! runner, is `herd-jobs`). Jobs are claimed with `FOR UPDATE SKIP LOCKED`, so any number
//! of workers share the queue without blocking each other. A claim gives the job a lease
//! token and a short lease that the worker renews while the job runs; only the holder of
//! the token may record the outcome, so a worker whose lease ran out cannot overwrite the
//! run that replaced it. A job whose lease ran out (its worker died) counts that run as a
//! failed attempt and is retried after its backoff, or dies once its attempts are used.

use crate::StoreError;
use herd_domain::JobState;
use sqlx::PgExecutor;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A job to enqueue (built by `herd_jobs::enqueue` from a typed job).
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub kind: &'a str,
    pub payload: serde_json::Value,
    /// Enqueue at most once per key (e.g. the Stripe event id).
    pub dedupe_key: Option<&'a str>,
    /// Jobs of one group (e.g. one Stripe subscription) run one at a time: a claim takes
    /// at most one per group, and none while one of the group runs.
    pub group_key: Option<&'a str>,
    pub max_attempts: i32,
    /// Not before this time; `None` is now.
    pub run_at: Option<OffsetDateTime>,
}

/// A claimed job.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
    /// The token of this claim: completing, failing and renewing need it.
    pub lease_token: Uuid,
    /// This claim included (1 on the first run).
    pub attempts: i32,
    pub max_attempts: i32,
}

/// A job as listed for operators.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub state: JobState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub dedupe_key: Option<String>,
    pub run_at: OffsetDateTime,
    pub last_error: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub payload: serde_json::Value,
}

struct RawRow {
    id: Uuid,
    kind: String,
    state: String,
    attempts: i32,
    max_attempts: i32,
    dedupe_key: Option<String>,
    run_at: OffsetDateTime,
    last_error: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    payload: serde_json::Value,
}

impl RawRow {
    fn parse(self) -> Result<JobRow, StoreError> {
        let state = JobState::parse(&self.state)
            .ok_or_else(|| StoreError::Invalid(format!("job state {:?}", self.state)))?;
        Ok(JobRow {
            id: self.id,
            kind: self.kind,
            state,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            dedupe_key: self.dedupe_key,
            run_at: self.run_at,
            last_error: self.last_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
            payload: self.payload,
        })
    }
}

/// Enqueues a job; `None` when a job with the same dedupe key exists already.
pub async fn enqueue(ex: impl PgExecutor<'_>, job: NewJob<'_>) -> Result<Option<Uuid>, StoreError> {
    let id = Uuid::now_v7();
    let row = sqlx::query_scalar!(
        "INSERT INTO jobs (id, kind, payload, dedupe_key, group_key, max_attempts, run_at)
         VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, now()))
         ON CONFLICT (dedupe_key) DO NOTHING
         RETURNING id",
        id,
        job.kind,
        job.payload,
        job.dedupe_key,
        job.group_key,
        job.max_attempts,
        job.run_at
    )
    .fetch_optional(ex)
    .await?;
    Ok(row)
}

/// Settles jobs whose lease ran out (their worker died or stalled): the run counts as a
/// failed attempt, so the job is queued again after `backoff_secs(attempts)`, or dies
/// once its attempts are used. The backoff is computed here as in
/// `herd_jobs::retry_delay`: `base` seconds doubling per attempt, at most an hour, ±20%.
/// Returns how many jobs were settled.
pub async fn reap_expired(ex: impl PgExecutor<'_>, base_secs: f64) -> Result<u64, StoreError> {
    let done = sqlx::query!(
        "UPDATE jobs SET
             state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
             run_at = now() + make_interval(secs =>
                 least($1::float8 * 2 ^ (greatest(attempts, 1) - 1), 3600) * (0.8 + 0.4 * random())),
             finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
             lease_token = NULL,
             locked_until = NULL,
             updated_at = now(),
             last_error = 'the worker running this job stopped before it finished (lease expired)'
         WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND locked_until < now()
                      FOR UPDATE SKIP LOCKED)",
        base_secs
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// Claims up to `limit` due jobs of the given kinds for `lease`, each with a fresh lease
/// token, oldest first: at most one job per group, and none of a group that has a job
/// running (its next job waits for it). The candidates are the `8 × limit` oldest due
/// jobs that no other claim holds (skipped, as every claim skips locked rows, so a claim
/// never comes back empty while unlocked jobs are due); two workers claiming at the same
/// instant may still each take a job of one group, which is why handlers that need one
/// at a time (billing's recompute) also lock.
pub async fn claim(
    ex: impl PgExecutor<'_>,
    kinds: &[&str],
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, StoreError> {
    let kinds: Vec<String> = kinds.iter().map(|k| (*k).to_owned()).collect();
    let lease_ms = lease.whole_milliseconds() as f64;
    let jobs = sqlx::query_as!(
        Claimed,
        r#"UPDATE jobs SET state = 'running', attempts = attempts + 1,
                lease_token = gen_random_uuid(), updated_at = now(),
                locked_until = now() + make_interval(secs => $3::float8 / 1000)
         WHERE id IN (
             SELECT d.id FROM (
                 SELECT DISTINCT ON (coalesce(c.group_key, c.id::text)) c.id, c.run_at
                 FROM (SELECT q.id, q.group_key, q.run_at FROM jobs q
                       WHERE q.kind = ANY($1) AND q.state = 'queued' AND q.run_at <= now()
                         AND (q.group_key IS NULL OR NOT EXISTS (
                             SELECT 1 FROM jobs r
                             WHERE r.group_key = q.group_key AND r.state = 'running'))
                       ORDER BY q.run_at
                       LIMIT $2::int8 * 8
                       FOR UPDATE SKIP LOCKED) c
                 ORDER BY coalesce(c.group_key, c.id::text), c.run_at) d
             ORDER BY d.run_at
             LIMIT $2)
         RETURNING id, kind, payload, lease_token AS "lease_token!", attempts, max_attempts"#,
        &kinds,
        limit,
        lease_ms
    )
    .fetch_all(ex)
    .await?;
    Ok(jobs)
}

/// Renews the lease of a running job; `false` when the claim is no longer this one's
/// (the lease ran out and the job was settled or claimed again, or it was cancelled).
pub async fn renew(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    token: Uuid,
    lease: Duration,
) -> Result<bool, StoreError> {
    let lease_ms = lease.whole_milliseconds() as f64;
    let done = sqlx::query!(
        "UPDATE jobs SET locked_until = now() + make_interval(secs => $3::float8 / 1000)
         WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        id,
        token,
        lease_ms
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks a job done; `false` (and nothing changed) when the claim is no longer this one's.
pub async fn complete(ex: impl PgExecutor<'_>, id: Uuid, token: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'done', finished_at = now(), locked_until = NULL,
                lease_token = NULL, last_error = NULL, updated_at = now()
         WHERE id = $1 AND lease_token = $2 AND state = 'running'",
        id,
        token
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks done the queued jobs of `kind` with these dedupe keys, whose work another job
/// did (a recompute that took their events into account); running jobs are left to
/// finish. Returns how many were marked.
pub async fn complete_queued(
    ex: impl PgExecutor<'_>,
    kind: &str,
    keys: &[String],
) -> Result<u64, StoreError> {
    if keys.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'done', finished_at = now(), locked_until = NULL,
                lease_token = NULL, last_error = NULL, updated_at = now()
         WHERE kind = $1 AND dedupe_key = ANY($2) AND state = 'queued'",
        kind,
        keys
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// What became of a failed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Queued again, to run after the delay.
    Retrying,
    /// Its attempts are used: dead, kept with the error.
    Dead,
    /// The claim was no longer this one's: nothing was recorded.
    LeaseLost,
}

/// Records a failed run: the job is tried again after `retry_in`, or dies once it has used
/// its attempts.
pub async fn fail(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    token: Uuid,
    error: &str,
    retry_in: Duration,
) -> Result<Failed, StoreError> {
    let retry_ms = retry_in.whole_milliseconds() as f64;
    let state = sqlx::query_scalar!(
        "UPDATE jobs SET
             state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
             run_at = now() + make_interval(secs => $4::float8 / 1000),
             finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
             locked_until = NULL,
             lease_token = NULL,
             updated_at = now(),
             last_error = $3
         WHERE id = $1 AND lease_token = $2 AND state = 'running'
         RETURNING state",
        id,
        token,
        error,
        retry_ms
    )
    .fetch_optional(ex)
    .await?;
    Ok(match state.as_deref() {
        Some("queued") => Failed::Retrying,
        Some(_) => Failed::Dead,
        None => Failed::LeaseLost,
    })
}

/// Puts a job back in the queue now with fresh attempts (an operator's "retry"). Returns
/// false when the job is not in a state that can be retried (running or done).
pub async fn retry(ex: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'queued', run_at = now(), attempts = 0, locked_until = NULL,
                lease_token = NULL, finished_at = NULL, updated_at = now()
         WHERE id = $1 AND state IN ('queued', 'dead', 'cancelled')",
        id
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Cancels a job that has not finished: it will not run again (a running one's outcome
/// is discarded, as its lease token is dropped). Returns false when it had finished.
pub async fn cancel(ex: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'cancelled', locked_until = NULL, lease_token = NULL,
                finished_at = now(), updated_at = now()
         WHERE id = $1 AND state IN ('queued', 'running', 'dead')",
        id
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Puts the job with this key back in the queue now, with fresh attempts (an operator's
/// "reprocess" of a webhook event), unless it is running (it must not run twice at once).
/// Returns false when no job with that key could be requeued.
pub async fn requeue_by_key(ex: impl PgExecutor<'_>, dedupe_key: &str) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE jobs SET state = 'queued', run_at = now(), attempts = 0, locked_until = NULL,
                lease_token = NULL, finished_at = NULL, updated_at = now()
         WHERE dedupe_key = $1 AND state <> 'running'",
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
    sqlx::query_as!(
        RawRow,
        "SELECT id, kind, state, attempts, max_attempts, dedupe_key, run_at, last_error,
                created_at, updated_at, payload
         FROM jobs WHERE dedupe_key = $1",
        dedupe_key
    )
    .fetch_optional(ex)
    .await?
    .map(RawRow::parse)
    .transpose()
}

/// One job by id.
pub async fn get(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<JobRow>, StoreError> {
    sqlx::query_as!(
        RawRow,
        "SELECT id, kind, state, attempts, max_attempts, dedupe_key, run_at, last_error,
                created_at, updated_at, payload
         FROM jobs WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await?
    .map(RawRow::parse)
    .transpose()
}

/// Which jobs an operator lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Dead jobs, and queued jobs whose last run failed (retrying).
    Attention,
    State(JobState),
    All,
}

/// Jobs for the console, newest change first, optionally of one kind.
pub async fn list(
    ex: impl PgExecutor<'_>,
    filter: Filter,
    kind: Option<&str>,
    page: crate::Page,
) -> Result<crate::Paged<JobRow>, StoreError> {
    let (attention, state) = match filter {
        Filter::Attention => (true, None),
        Filter::State(s) => (false, Some(s.as_str())),
        Filter::All => (false, None),
    };
    sqlx::query_as!(
        RawRow,
        "SELECT id, kind, state, attempts, max_attempts, dedupe_key, run_at, last_error,
                created_at, updated_at, payload
         FROM jobs
         WHERE ($1 = false OR state = 'dead' OR (state = 'queued' AND last_error IS NOT NULL))
           AND ($2::text IS NULL OR state = $2)
           AND ($3::text IS NULL OR kind = $3)
         ORDER BY updated_at DESC, id DESC
         LIMIT $4 OFFSET $5",
        attention,
        state,
        kind,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(RawRow::parse)
    .collect::<Result<Vec<_>, _>>()
    .map(|rows| page.finish(rows))
}

/// Per kind and state, how many jobs there are (done jobs left out).
#[derive(Debug, Clone)]
pub struct QueueCount {
    pub kind: String,
    pub state: JobState,
    pub n: i64,
}

pub async fn queue_counts(ex: impl PgExecutor<'_>) -> Result<Vec<QueueCount>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT kind, state, count(*) AS "n!" FROM jobs WHERE state <> 'done'
           GROUP BY kind, state ORDER BY kind, state"#
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(QueueCount {
                state: JobState::parse(&r.state)
                    .ok_or_else(|| StoreError::Invalid(format!("job state {:?}", r.state)))?,
                kind: r.kind,
                n: r.n,
            })
        })
        .collect()
}

/// Deletes jobs that finished (done or cancelled) before `older_than` ago; dead jobs stay
/// until an operator acts. Returns how many went.
pub async fn purge_finished(
    ex: impl PgExecutor<'_>,
    older_than: Duration,
) -> Result<u64, StoreError> {
    let secs = older_than.whole_seconds() as f64;
    let done = sqlx::query!(
        "DELETE FROM jobs WHERE state IN ('done', 'cancelled')
           AND finished_at < now() - make_interval(secs => $1::float8)",
        secs
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected())
}

/// How many jobs are in each state, for metrics.
pub async fn counts(ex: impl PgExecutor<'_>) -> Result<Vec<(String, i64)>, StoreError> {
    let rows =
        sqlx::query!(r#"SELECT state, count(*) AS "n!" FROM jobs GROUP BY state ORDER BY state"#)
            .fetch_all(ex)
            .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.n)).collect())
}
