//! The worker side of billing: claims jobs from the queue (stored Stripe events, access
//! notices and invoices to email) and runs them; and every minute issues the invoices that
//! are due and sweeps the access policy, so that deadlines pass on time.

use crate::access::{self, NOTICE_JOB};
use crate::invoicing::{self, INVOICE_JOB};
use crate::process::process_event;
use herd_mail::Mailer;
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

/// Runs one claimed job.
async fn run_job(pool: &PgPool, mailer: &Mailer, job: &jobs::Job) -> Result<(), String> {
    match job.kind.as_str() {
        STRIPE_EVENT_JOB => {
            let event_id = job.payload["event_id"].as_str().unwrap_or_default();
            match process_event(pool, event_id).await {
                Ok(outcome) => {
                    tracing::info!(event = %event_id, ?outcome, "stripe event processed");
                    metrics::counter!(PROCESSED, "outcome" => "ok").increment(1);
                    Ok(())
                }
                Err(e) => {
                    let message = e.to_string();
                    metrics::counter!(PROCESSED, "outcome" => "error").increment(1);
                    billing::mark_event(pool, event_id, "failed", Some(&message))
                        .await
                        .map_err(|e| e.to_string())?;
                    Err(message)
                }
            }
        }
        NOTICE_JOB => {
            let id = job.payload["transition_id"]
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or("no transition id")?;
            for email in access::notice_emails(pool, id)
                .await
                .map_err(|e| e.to_string())?
            {
                mailer.send(&email).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        access::TRIAL_JOB => {
            let sub = job.payload["subscription"].as_str().unwrap_or_default();
            for email in access::trial_emails(pool, sub)
                .await
                .map_err(|e| e.to_string())?
            {
                mailer.send(&email).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        INVOICE_JOB => {
            let id = job.payload["invoice_id"]
                .as_str()
                .and_then(|s| uuid::Uuid::parse_str(s).ok())
                .ok_or("no invoice id")?;
            for email in invoicing::invoice_emails(pool, id)
                .await
                .map_err(|e| e.to_string())?
            {
                mailer.send(&email).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        other => Err(format!("unknown job kind {other}")),
    }
}

/// Claims and runs up to `limit` due jobs; returns how many were claimed.
pub async fn run_due(
    pool: &PgPool,
    mailer: &Mailer,
    limit: i64,
) -> Result<usize, herd_store::StoreError> {
    let claimed = jobs::claim(
        pool,
        &[STRIPE_EVENT_JOB, NOTICE_JOB, INVOICE_JOB, access::TRIAL_JOB],
        limit,
        Duration::minutes(5),
    )
    .await?;
    for job in &claimed {
        match run_job(pool, mailer, job).await {
            Ok(()) => jobs::complete(pool, job.id).await?,
            Err(message) => {
                tracing::warn!(job = %job.id, kind = %job.kind, error = %message, attempt = job.attempts, "job failed");
                jobs::fail(pool, job.id, &message, retry_delay(job.attempts)).await?;
            }
        }
    }
    Ok(claimed.len())
}

/// How often the access policy is swept.
pub const SWEEP_EVERY: StdDuration = StdDuration::from_secs(60);

/// Runs until `shutdown` resolves: runs due jobs, sweeps the access policy every minute,
/// and waits a little when there is nothing to do.
pub async fn run(pool: PgPool, mailer: Mailer, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            let now = time::OffsetDateTime::now_utc();
            match invoicing::issue_due(&pool, now.date()).await {
                Ok(issued) if !issued.is_empty() => {
                    tracing::info!(count = issued.len(), "invoices issued");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "issuing invoices failed"),
            }
            match access::sweep(&pool, now).await {
                Ok(n) if n > 0 => tracing::info!(changed = n, "access policy swept"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "access sweep failed"),
            }
            last_sweep = Some(tokio::time::Instant::now());
        }
        let idle = match run_due(&pool, &mailer, 20).await {
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
