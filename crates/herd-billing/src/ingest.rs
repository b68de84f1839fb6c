//! Webhook ingestion: verify the raw body, store the event and enqueue its processing in one
//! transaction, then acknowledge. Nothing is processed in the request, so a crash after the
//! 2xx loses nothing: the job is in the queue.

use crate::event::{Envelope, MalformedEvent};
use crate::jobs::StripeEvent;
use crate::signature::{self, SignatureError};
use herd_store::billing::{self, NewEvent};
use herd_store::StoreError;
use secrecy::SecretString;
use sqlx::PgPool;

pub const RECEIVED: &str = "herd_stripe_webhooks_total";
pub const REJECTED: &str = "herd_stripe_webhook_rejections_total";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// New: stored and queued.
    Stored,
    /// Seen before: acknowledged, not queued again.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
    #[error("the event is from Stripe's {event} mode, and Herd's key is for {key} mode")]
    WrongMode {
        event: &'static str,
        key: &'static str,
    },
    #[error("storing the event: {0}")]
    Store(#[from] StoreError),
}

fn mode(livemode: bool) -> &'static str {
    if livemode {
        "live"
    } else {
        "test"
    }
}

/// The mode of a Stripe API key: `Some(true)` for live keys (`sk_live_…`, `rk_live_…`),
/// `Some(false)` for test keys, `None` for anything else.
pub fn key_livemode(key: &str) -> Option<bool> {
    let key = key.trim();
    if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
        Some(true)
    } else if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
        Some(false)
    } else {
        None
    }
}

impl IngestError {
    /// The sender's fault (answer 400, do not store) rather than ours (answer 5xx so that
    /// Stripe retries).
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, IngestError::Store(_))
    }

    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Signature(s) => s.reason(),
            IngestError::Malformed(_) => "malformed_payload",
            IngestError::WrongMode { .. } => "livemode_mismatch",
            IngestError::Store(_) => "store",
        }
    }
}

/// Verifies, stores and queues one delivery, whatever its mode (see [`ingest_in_mode`]).
pub async fn ingest(
    pool: &PgPool,
    body: &[u8],
    signature_header: Option<&str>,
    secrets: &[SecretString],
    now: i64,
) -> Result<Ingested, IngestError> {
    ingest_in_mode(pool, body, signature_header, secrets, now, None).await
}

/// Verifies, stores and queues one delivery; with `livemode`, an event of the other mode
/// (a test event at a live installation, or the reverse) is refused and not stored.
pub async fn ingest_in_mode(
    pool: &PgPool,
    body: &[u8],
    signature_header: Option<&str>,
    secrets: &[SecretString],
    now: i64,
    livemode: Option<bool>,
) -> Result<Ingested, IngestError> {
    let result = ingest_inner(pool, body, signature_header, secrets, now, livemode).await;
    match &result {
        Ok(Ingested::Stored) => metrics::counter!(RECEIVED, "outcome" => "stored").increment(1),
        Ok(Ingested::Duplicate) => {
            metrics::counter!(RECEIVED, "outcome" => "duplicate").increment(1);
        }
        Err(e) => {
            metrics::counter!(RECEIVED, "outcome" => "rejected").increment(1);
            metrics::counter!(REJECTED, "reason" => e.reason()).increment(1);
        }
    }
    result
}

async fn ingest_inner(
    pool: &PgPool,
    body: &[u8],
    signature_header: Option<&str>,
    secrets: &[SecretString],
    now: i64,
    livemode: Option<bool>,
) -> Result<Ingested, IngestError> {
    signature::verify(
        body,
        signature_header,
        secrets,
        now,
        signature::TOLERANCE_SECS,
    )?;
    let event = Envelope::parse(body)?;
    if let Some(key) = livemode.filter(|k| *k != event.livemode) {
        return Err(IngestError::WrongMode {
            event: mode(event.livemode),
            key: mode(key),
        });
    }
    let payload =
        std::str::from_utf8(body).map_err(|_| MalformedEvent("the body is not UTF-8".into()))?;
    let subscription = event.subscription_id();
    let customer = event.customer_id();
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let new = billing::insert_event(
        &mut tx,
        &NewEvent {
            id: &event.id,
            type_: &event.type_,
            livemode: event.livemode,
            created: event.created,
            payload,
            subscription_id: subscription.as_deref(),
            customer_id: customer.as_deref(),
        },
    )
    .await?;
    if new {
        // Woken after the commit: a commit that notifies waits for every other one that
        // does (see `herd_jobs::wake`), and a storm's deliveries would commit one by one.
        herd_jobs::defer_wakeup(&mut tx)
            .await
            .map_err(StoreError::from)?;
        herd_jobs::enqueue(
            &mut *tx,
            &StripeEvent {
                event_id: event.id.clone(),
                subscription: subscription.clone(),
            },
        )
        .await?;
    }
    tx.commit().await.map_err(StoreError::from)?;
    if new {
        herd_jobs::wake(pool);
    }
    Ok(if new {
        Ingested::Stored
    } else {
        Ingested::Duplicate
    })
}
