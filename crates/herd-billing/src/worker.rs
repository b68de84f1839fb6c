//! The worker side of billing: claims `stripe.event` jobs from the queue and processes them.

use crate::process::process_event;
use herd_store::billing;
use herd_store::jobs;
use sqlx::PgPool;
use std::time::Duration as StdDuration;
use time::Duration;

/// The job kind of a stored Stripe event; its payload is `{"event_id": "evt_…"}`.
pub const STRIPE_EVENT_JOB: &str = "stripe.event";
pub const PROCESSED: &str = "herd_stripe_events_processed_total";

/// The delay before retrying a failed job: 10 s doubling, at most an hour, with jitter.
pub fn retry_delay(attempt: i32) -> Duration {
    let base = 10i64 << attempt.clamp(1, 10).saturating_sub(1);
    let secs = base.min(3600) as f64 * (0.8 + 0.4 * rand::random::<f64>());
    Duration::seconds_f64(secs)
}

/// Claims and processes up to `limit` due jobs; returns how many were claimed.
pub async fn run_due(pool: &PgPool, limit: i64) -> Result<usize, herd_store::StoreError> {
    let claimed = jobs::claim(pool, &[STRIPE_EVENT_JOB], limit, Duration::minutes(5)).await?;
    for job in &claimed {
        let event_id = job.payload["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match process_event(pool, &event_id).await {
            Ok(outcome) => {
                tracing::info!(event = %event_id, ?outcome, "stripe event processed");
                metrics::counter!(PROCESSED, "outcome" => "ok").increment(1);
                jobs::complete(pool, job.id).await?;
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(event = %event_id, error = %message, attempt = job.attempts, "stripe event failed");
                metrics::counter!(PROCESSED, "outcome" => "error").increment(1);
                billing::mark_event(pool, &event_id, "failed", Some(&message)).await?;
                jobs::fail(pool, job.id, &message, retry_delay(job.attempts)).await?;
            }
        }
    }
    Ok(claimed.len())
}

/// Runs until `shutdown` resolves: processes due jobs, and waits a little when there are
/// none.
pub async fn run(pool: PgPool, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let idle = match run_due(&pool, 20).await {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "job queue unavailable");
                true
            }
        };
        if idle {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(StdDuration::from_millis(500)) => {}
            }
        }
    }
}
