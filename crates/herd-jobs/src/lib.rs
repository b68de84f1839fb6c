//! Herd's job system: work that must survive a crash (processing a Stripe event, emailing
//! an invoice, applying an Instance to a cluster) as typed jobs in PostgreSQL.
//!
//! - A [`Job`] is a serde payload with a `KIND`, an attempt budget and an optional dedupe
//!   key. [`enqueue`] writes it with the executor it is given, so a state change and the
//!   job that follows from it commit together (the outbox pattern).
//! - One [`Runner`] runs the jobs of every capability: billing, provisioning and mail
//!   [`Registry::register`] a handler per kind. It runs up to `concurrency` jobs at once,
//!   wakes on `NOTIFY herd_jobs` (polling as a fallback), and renews each job's short lease
//!   while it runs, so the jobs of a worker killed with `kill -9` run again within
//!   [`Settings::lease`], plus a third of it until a worker settles the expired lease, plus
//!   the first backoff (about 20 s with the defaults; `herd`'s tests kill a worker to show it).
//! - Outcomes are recorded only with the lease token of the claim: a worker whose lease ran
//!   out cannot overwrite the run that replaced it. Failed runs are retried with
//!   exponential backoff and jitter; a job that has used its attempts is kept `dead` with
//!   its last error for an operator to retry or cancel ([`admin`]).
//!
//! A job runs at least once; handlers make their effects happen once (they are idempotent).

pub mod admin;
mod runner;
pub mod supervise;
mod wakeup;

pub use runner::{Registry, Runner, Settings, Stats};
pub use supervise::{supervise, WorkerHealth};
pub use wakeup::{defer_wakeup, wake};

use herd_store::jobs::NewJob;
use herd_store::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::PgExecutor;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// A kind of background work, and its payload.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name stored in the queue; never change it once jobs of this kind exist.
    const KIND: &'static str;
    /// Runs before the job is kept dead.
    const MAX_ATTEMPTS: i32 = 10;

    /// Enqueue at most one job per key, ever (e.g. the Stripe event id).
    fn dedupe_key(&self) -> Option<String> {
        None
    }

    /// Jobs of one group run one at a time, oldest first (e.g. the events of one Stripe
    /// subscription): a worker never takes several of them at once.
    fn group_key(&self) -> Option<String> {
        None
    }
}

/// Enqueues `job` to run now; `None` when a job with its dedupe key exists already.
pub async fn enqueue<J: Job>(ex: impl PgExecutor<'_>, job: &J) -> Result<Option<Uuid>, StoreError> {
    enqueue_at(ex, job, None).await
}

/// Enqueues `job` to run at `at` (now when `None`).
pub async fn enqueue_at<J: Job>(
    ex: impl PgExecutor<'_>,
    job: &J,
    at: Option<OffsetDateTime>,
) -> Result<Option<Uuid>, StoreError> {
    let payload = serde_json::to_value(job)
        .map_err(|e| StoreError::Invalid(format!("payload of a {} job: {e}", J::KIND)))?;
    let key = job.dedupe_key();
    let group = job.group_key();
    herd_store::jobs::enqueue(
        ex,
        NewJob {
            kind: J::KIND,
            payload,
            dedupe_key: key.as_deref(),
            group_key: group.as_deref(),
            max_attempts: J::MAX_ATTEMPTS,
            run_at: at,
        },
    )
    .await
}

/// Marks done the queued jobs of type `J` with these dedupe keys: another job did their
/// work in the transaction `ex` belongs to (billing's recompute of a subscription covers
/// the other events of that subscription). Jobs already running are left to finish.
pub async fn complete_queued<J: Job>(
    ex: impl PgExecutor<'_>,
    keys: &[String],
) -> Result<u64, StoreError> {
    herd_store::jobs::complete_queued(ex, J::KIND, keys).await
}

/// The delay before retrying a job after its `attempt`-th failed run: `base` doubling per
/// attempt, at most an hour, with ±20% jitter so that jobs failing together do not retry
/// together. (`herd_store::jobs::reap_expired` uses the same formula in SQL.)
pub fn retry_delay(base: std::time::Duration, attempt: i32) -> Duration {
    let doubled = base.as_secs_f64() * 2f64.powi(attempt.clamp(1, 20) - 1);
    let secs = doubled.min(3600.0) * (0.8 + 0.4 * rand::random::<f64>());
    Duration::seconds_f64(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_with_jitter_and_is_capped() {
        let base = std::time::Duration::from_secs(5);
        for attempt in 1..=4 {
            let d = retry_delay(base, attempt).as_seconds_f64();
            let mid = 5.0 * 2f64.powi(attempt - 1);
            assert!(d >= mid * 0.8 && d <= mid * 1.2, "attempt {attempt}: {d}");
        }
        assert!(retry_delay(base, 40).as_seconds_f64() <= 3600.0 * 1.2);
        // Jitter: forty draws are not all the same.
        let draws: std::collections::BTreeSet<u64> = (0..40)
            .map(|_| retry_delay(base, 3).whole_milliseconds() as u64)
            .collect();
        assert!(draws.len() > 1);
    }
}
