//! The worker side of billing: the handlers of billing's jobs (stored Stripe events,
//! access notices, trial reminders and invoices to email), registered with the control
//! plane's job runner; and the minute tick that issues the invoices that are due and
//! sweeps the access policy, so that deadlines pass on time.

use crate::access;
use crate::invoicing;
use crate::jobs::{
    AccessNotice, InvoiceEmail, OrderPaymentFailed, PaidAfterDeletion, StripeEvent, TrialEnding,
};
use crate::process::process_event;
use crate::stripe_api::StripeApi;
use anyhow::Context;
use herd_jobs::Registry;
use herd_mail::Mailer;
use herd_store::billing;
use sqlx::PgPool;
use std::time::Duration as StdDuration;

pub const PROCESSED: &str = "herd_stripe_events_processed_total";

async fn stripe_event(
    pool: &PgPool,
    stripe: Option<&StripeApi>,
    job: StripeEvent,
) -> anyhow::Result<()> {
    let event_id = job.event_id.as_str();
    match process_event(pool, event_id, stripe).await {
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
                .context("recording the event's failure")?;
            Err(anyhow::Error::new(e))
        }
    }
}

async fn send_all(mailer: &Mailer, emails: Vec<herd_mail::Email>) -> anyhow::Result<()> {
    for email in emails {
        mailer.send(&email).await.context("sending an email")?;
    }
    Ok(())
}

/// Registers billing's job handlers, without Stripe's API: card suspensions and deletions
/// are held back (nothing can confirm them), see [`register_with`].
pub fn register(registry: &mut Registry, pool: &PgPool, mailer: &Mailer) {
    register_with(registry, pool, mailer, None);
}

/// Registers billing's job handlers; `stripe` confirms each card suspension or deletion
/// with Stripe before it takes effect.
pub fn register_with(
    registry: &mut Registry,
    pool: &PgPool,
    mailer: &Mailer,
    stripe: Option<StripeApi>,
) {
    let s2 = stripe.clone();
    registry.register(move |job: crate::jobs::CancelSubscription| {
        let stripe = s2.clone();
        async move {
            let Some(stripe) = stripe else {
                anyhow::bail!(
                    "no Stripe key: subscription {} cannot be cancelled; set STRIPE_SECRET_KEY for the worker",
                    job.subscription
                );
            };
            match stripe.cancel_now(&job.subscription).await {
                Ok(()) => {
                    tracing::info!(subscription = %job.subscription, "subscription cancelled at Stripe");
                    Ok(())
                }
                // Already gone (cancelled by the customer and removed, or never made).
                Err(e) if e.not_found() => {
                    tracing::info!(subscription = %job.subscription, error = %e, "subscription already cancelled");
                    Ok(())
                }
                Err(e) => Err(anyhow::Error::new(e)),
            }
        }
    });
    let (p, s) = (pool.clone(), stripe);
    registry.register(move |job: StripeEvent| {
        let (pool, stripe) = (p.clone(), s.clone());
        async move { stripe_event(&pool, stripe.as_ref(), job).await }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: OrderPaymentFailed| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            let emails = access::order_payment_failed_emails(&pool, job.order_id).await?;
            send_all(&mailer, emails).await
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: PaidAfterDeletion| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            let emails = access::paid_after_deletion_emails(&pool, &job.subject).await?;
            send_all(&mailer, emails).await
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: AccessNotice| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            let emails = access::notice_emails(&pool, job.transition_id).await?;
            send_all(&mailer, emails).await
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: TrialEnding| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            let emails = access::trial_emails(&pool, &job.subscription).await?;
            send_all(&mailer, emails).await
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: InvoiceEmail| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            let emails = invoicing::invoice_emails(&pool, job.invoice_id).await?;
            send_all(&mailer, emails).await
        }
    });
}

/// How often the access policy is swept.
pub const SWEEP_EVERY: StdDuration = StdDuration::from_secs(60);

/// Issues due invoices and sweeps the access policy once (`stripe` confirms card
/// suspensions and deletions).
pub async fn tick(pool: &PgPool, stripe: Option<&StripeApi>) {
    let now = time::OffsetDateTime::now_utc();
    match invoicing::issue_due(pool, now.date()).await {
        Ok(issued) if !issued.is_empty() => {
            tracing::info!(count = issued.len(), "invoices issued");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "issuing invoices failed"),
    }
    match access::sweep(pool, now, stripe).await {
        Ok(n) if n > 0 => tracing::info!(changed = n, "access policy swept"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "access sweep failed"),
    }
}

/// Runs [`tick`] every minute until `shutdown` resolves.
pub async fn run_ticks(
    pool: PgPool,
    stripe: Option<StripeApi>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = every.tick() => tick(&pool, stripe.as_ref()).await,
        }
    }
}
