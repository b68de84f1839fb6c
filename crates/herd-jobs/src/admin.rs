//! The queue as operators manage it: what is queued, failing or dead, and retrying or
//! cancelling one job, each action audited in the same transaction.

use herd_domain::{JobState, UserId};
use herd_store::audit::{self, NewEntry};
use herd_store::jobs::{self, Filter, JobRow, QueueCount};
use herd_store::{Page, Paged, StoreError};
use sqlx::PgPool;
use uuid::Uuid;

/// Who acts, for the audit entry.
#[derive(Debug, Clone, Copy)]
pub struct Operator<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub ip: &'a str,
}

/// Why an operator's action on a job was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("There is no such job.")]
    NotFound,
    #[error("This job is {0}; only queued, dead or cancelled jobs can be retried.")]
    CannotRetry(JobState),
    #[error("This job is {0}; only jobs that have not finished can be cancelled.")]
    CannotCancel(JobState),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ActionError {
    fn from(e: sqlx::Error) -> Self {
        ActionError::Store(e.into())
    }
}

/// Counts per kind and state (done jobs left out).
pub async fn overview(pool: &PgPool) -> Result<Vec<QueueCount>, StoreError> {
    jobs::queue_counts(pool).await
}

/// One page of jobs.
pub async fn list(
    pool: &PgPool,
    filter: Filter,
    kind: Option<&str>,
    page: Page,
) -> Result<Paged<JobRow>, StoreError> {
    jobs::list(pool, filter, kind, page).await
}

/// Dead jobs and jobs retrying after a failure: what needs an operator's eye. Tests assert
/// this is empty after running the queue.
pub async fn failing(pool: &PgPool) -> Result<Vec<JobRow>, StoreError> {
    Ok(
        jobs::list(pool, Filter::Attention, None, Page::new(Some(1), Some(100)))
            .await?
            .items,
    )
}

async fn act(
    pool: &PgPool,
    who: Operator<'_>,
    id: Uuid,
    retry: bool,
) -> Result<JobRow, ActionError> {
    let mut tx = pool.begin().await?;
    let job = jobs::get(&mut *tx, id)
        .await?
        .ok_or(ActionError::NotFound)?;
    let (changed, action) = if retry {
        if !job.state.can_retry() {
            return Err(ActionError::CannotRetry(job.state));
        }
        (jobs::retry(&mut *tx, id).await?, "jobs.retried")
    } else {
        if !job.state.can_cancel() {
            return Err(ActionError::CannotCancel(job.state));
        }
        (jobs::cancel(&mut *tx, id).await?, "jobs.cancelled")
    };
    if !changed {
        // It moved on between the read and the write (a worker finished it).
        let now = jobs::get(&mut *tx, id)
            .await?
            .ok_or(ActionError::NotFound)?;
        return Err(if retry {
            ActionError::CannotRetry(now.state)
        } else {
            ActionError::CannotCancel(now.state)
        });
    }
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: None,
            action,
            target: id.to_string(),
            source_ip: Some(who.ip),
            details: serde_json::json!({
                "kind": job.kind,
                "previous_state": job.state.as_str(),
                "attempts": job.attempts,
                "last_error": job.last_error,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(job)
}

/// Puts a dead, cancelled or waiting job back in the queue now, with fresh attempts.
pub async fn retry(pool: &PgPool, who: Operator<'_>, id: Uuid) -> Result<JobRow, ActionError> {
    act(pool, who, id, true).await
}

/// Cancels a job that has not finished; a running one's outcome is discarded.
pub async fn cancel(pool: &PgPool, who: Operator<'_>, id: Uuid) -> Result<JobRow, ActionError> {
    act(pool, who, id, false).await
}
