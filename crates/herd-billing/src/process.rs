//! Processing a stored event: recompute the subscription it concerns from all its stored
//! events, link the customer to its organization, and fulfil the order it paid for. Every
//! step is idempotent, so a job that runs twice (a worker died after the work but before
//! marking it done) changes nothing the second time.

use crate::event::Envelope;
use crate::stripe_api::{StripeApi, SubscriptionNow};
use crate::subscription::{self, View, READ_TYPE};
use herd_domain::OrgId;
use herd_store::billing::{self, Subscription};
use herd_store::StoreError;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The subscription was recomputed (and the order fulfilled the first time).
    Applied {
        subscription: String,
        fulfilled_order: bool,
    },
    /// Stored, not acted on (a type Herd does not handle, or about no subscription).
    Ignored,
    /// An order's Checkout Session expired unpaid: the order ended (`true` the first time).
    OrderExpired(bool),
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no stored event {0}")]
    Missing(String),
    #[error("stored event {id} cannot be read: {reason}")]
    Unreadable { id: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the order's server could not be created: {0}")]
    Fulfil(herd_fleet::FleetError),
}

impl From<herd_fleet::FleetError> for ProcessError {
    fn from(e: herd_fleet::FleetError) -> Self {
        match e {
            herd_fleet::FleetError::Store(s) => ProcessError::Store(s),
            other => ProcessError::Fulfil(other),
        }
    }
}

impl From<sqlx::Error> for ProcessError {
    fn from(e: sqlx::Error) -> Self {
        ProcessError::Store(e.into())
    }
}

fn to_row(v: &View, org: Option<OrgId>, plan_code: Option<String>) -> Subscription {
    Subscription {
        stripe_subscription_id: v.id.clone(),
        stripe_customer_id: v.customer.clone(),
        org_id: org.map(|o| o.0),
        order_id: v.order_id,
        status: v.status.clone(),
        status_since: v.status_since,
        price_id: v.price_id.clone(),
        plan_code,
        current_period_end: v.current_period_end,
        cancel_at_period_end: v.cancel_at_period_end,
        latest_invoice_id: v.latest_invoice_id.clone(),
        latest_invoice_status: v.latest_invoice_status.clone(),
        payment_problem: v.payment_problem.clone(),
        trial_end: v.trial_end,
        source_time: v.source_time,
    }
}

/// Recomputes subscription `id` from its stored events and writes it, under a lock so that
/// two workers recomputing it do not overwrite each other with an older view. With
/// `for_event`, returns `None` without recomputing when that event was taken into account
/// by a recompute that held the lock before (its job has nothing left to do).
pub async fn recompute_subscription(
    pool: &PgPool,
    id: &str,
    for_event: Option<&str>,
) -> Result<Option<Outcome>, ProcessError> {
    let mut tx = pool.begin().await?;
    herd_store::lock_key(&mut tx, &format!("subscription:{id}")).await?;
    if let Some(e) = for_event {
        if billing::event(&mut *tx, e)
            .await?
            .is_some_and(|s| s.state == "processed")
        {
            return Ok(None);
        }
    }
    let stored = billing::events_of_subscription(&mut *tx, id).await?;
    // An unreadable event fails on its own (when its job runs); it must not block the
    // subscription's other events.
    let mut settled = Vec::new();
    let events: Vec<Envelope> = stored
        .iter()
        .filter_map(|s| match Envelope::parse(s.payload.as_bytes()) {
            Ok(mut e) => {
                e.received = Some(s.received_at);
                // A failed event's job runs again to record its own outcome.
                if e.covered_by_recompute() && s.state != "failed" {
                    settled.push(e.id.clone());
                }
                Some(e)
            }
            Err(e) => {
                tracing::warn!(event = %s.id, error = %e, "skipping an unreadable stored event");
                None
            }
        })
        .collect();
    // Every handled event read here is reflected by this recompute: their own jobs, if
    // still to run, need not recompute the subscription again (a storm of one
    // subscription's events costs one recompute, not one per event).
    let included: Vec<String> = events
        .iter()
        .filter(|e| e.is_handled())
        .map(|e| e.id.clone())
        .collect();
    let Some(view) = subscription::recompute(id, &events) else {
        return Ok(Some(Outcome::Ignored));
    };
    let mut org = view.org_id.map(OrgId);
    if org.is_none() && !view.customer.is_empty() {
        org = billing::org_of_customer(&mut *tx, &view.customer).await?;
    }
    if let (Some(o), false) = (org, view.customer.is_empty()) {
        billing::link_customer(&mut tx, o, &view.customer).await?;
    }
    let plan_code = match &view.price_id {
        Some(p) => billing::plan_of_price(&mut *tx, p).await?,
        None => None,
    };
    let before = billing::subscription(&mut *tx, id)
        .await?
        .and_then(|s| s.plan_code);
    billing::upsert_subscription(&mut *tx, &to_row(&view, org, plan_code.clone())).await?;
    billing::mark_included(&mut *tx, &included).await?;
    // The queued jobs of events this recompute covers entirely have nothing left to do.
    herd_jobs::complete_queued::<crate::jobs::StripeEvent>(&mut *tx, &settled).await?;
    // A plan change on the subscription (and only a change: an operator's move of a server
    // stays until the subscription's plan changes again): its servers follow.
    if let (Some(plan), Some(before)) = (&plan_code, &before) {
        if plan != before {
            herd_fleet::lifecycle::follow_plan(
                &mut tx,
                &crate::access::card_subject(id),
                None,
                plan,
            )
            .await?;
        }
    }
    if let (true, false, Some(order), Some(org)) = (
        view.checkout_failed,
        view.checkout_completed,
        view.order_id,
        org,
    ) {
        // A delayed payment (SEPA Direct Debit) was refused: no server, and the order's
        // page says why.
        if billing::fail_card_order(&mut *tx, order, org, PAYMENT_FAILED).await? {
            herd_jobs::enqueue(
                &mut *tx,
                &crate::jobs::OrderPaymentFailed { order_id: order },
            )
            .await?;
            // No server will be made: Stripe must not retry the debit or bill it later.
            herd_jobs::enqueue(
                &mut *tx,
                &crate::jobs::CancelSubscription {
                    subscription: id.to_owned(),
                },
            )
            .await?;
            tracing::info!(order = %order, subscription = id, "the order's delayed payment failed");
        }
    }
    let mut fulfilled_order = false;
    if let (true, Some(order), Some(org)) = (view.checkout_completed, view.order_id, org) {
        fulfilled_order = crate::fulfil::fulfil_paid(&mut tx, order, org, id).await?;
        if fulfilled_order {
            tracing::info!(order = %order, subscription = id, "order fulfilled");
        }
    }
    tx.commit().await?;
    Ok(Some(Outcome::Applied {
        subscription: id.to_owned(),
        fulfilled_order,
    }))
}

/// Turns per key (a subscription) among the tasks of this process: one holds a key's turn
/// at a time, the others wait in memory. Entries go when their last holder or waiter does.
#[derive(Default)]
struct Turns(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

static TURNS: std::sync::LazyLock<Turns> = std::sync::LazyLock::new(Turns::default);

/// A key's turn, held until dropped.
struct Turn {
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Another task held the turn when this one asked.
    waited: bool,
}

impl Turns {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn take(&'static self, key: &str) -> Turn {
        let lock = self.map().entry(key.to_owned()).or_default().clone();
        // Made before waiting, so that a wait cancelled (its job stopped) still removes
        // the entry when nobody else holds or waits for the key.
        let mut turn = Turn {
            key: key.to_owned(),
            guard: None,
            waited: false,
        };
        match lock.clone().try_lock_owned() {
            Ok(g) => turn.guard = Some(g),
            Err(_) => {
                turn.waited = true;
                turn.guard = Some(lock.lock_owned().await);
            }
        }
        turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = TURNS.map();
        // Only the map holds it: nobody holds or waits for this key.
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// What an order whose Checkout Session expired unpaid says.
pub const CHECKOUT_EXPIRED: &str =
    "the payment page expired before a payment was made (Stripe keeps it open for 24 hours), so nothing was charged and no server was made: place the order again";

/// Ends the pending card order of an expired Checkout Session (its `client_reference_id`,
/// checked against the organization in its metadata); `true` the first time.
async fn expire_order(pool: &PgPool, event: &Envelope) -> Result<bool, ProcessError> {
    let o = &event.object;
    let order = o["client_reference_id"]
        .as_str()
        .and_then(|v| uuid::Uuid::parse_str(v).ok());
    let org = o["metadata"][crate::subscription::META_ORG]
        .as_str()
        .and_then(|v| uuid::Uuid::parse_str(v).ok());
    let (Some(order), Some(org)) = (order, org) else {
        return Ok(false);
    };
    let ended = billing::fail_card_order(pool, order, OrgId(org), CHECKOUT_EXPIRED).await?;
    if ended {
        tracing::info!(order = %order, "the order's payment page expired unpaid");
    }
    Ok(ended)
}

/// What an order whose delayed payment failed says.
pub const PAYMENT_FAILED: &str =
    "the bank refused the payment (it was made with a delayed method such as SEPA Direct Debit), so no server was made";

/// Stores what Stripe's API said of a subscription just now as the newest fact about it (an
/// event of Herd's own, [`READ_TYPE`]), and recomputes the subscription from all its facts.
pub async fn record_read(pool: &PgPool, read: &SubscriptionNow) -> Result<(), ProcessError> {
    // A read that tells nothing new is not kept (a change held back is asked again at each
    // sweep).
    if billing::subscription(pool, &read.id)
        .await?
        .is_some_and(|s| {
            s.status == read.status
                && s.latest_invoice_id == read.latest_invoice_id
                && s.latest_invoice_status == read.latest_invoice_status
        })
    {
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    let id = format!("evt_herd_read_{}", uuid::Uuid::now_v7().simple());
    let payload = serde_json::json!({
        "id": id, "object": "event", "type": READ_TYPE, "created": now.unix_timestamp(),
        "livemode": read.livemode,
        "data": { "object": {
            "id": read.id, "object": "subscription", "customer": read.customer,
            "status": read.status,
            "latest_invoice": read.latest_invoice_id.as_ref().map(|i| serde_json::json!({
                "id": i, "object": "invoice", "status": read.latest_invoice_status,
            })),
        } },
    })
    .to_string();
    let mut tx = pool.begin().await?;
    billing::insert_event(
        &mut tx,
        &billing::NewEvent {
            id: &id,
            type_: READ_TYPE,
            livemode: read.livemode,
            created: now,
            payload: &payload,
            subscription_id: Some(&read.id),
            customer_id: Some(&read.customer),
        },
    )
    .await?;
    tx.commit().await?;
    recompute_subscription(pool, &read.id, None).await?;
    Ok(())
}

/// Keeps the invoice of an `invoice.*` event for the customer's invoice list.
async fn record_invoice(pool: &PgPool, e: &Envelope) -> Result<(), ProcessError> {
    let o = &e.object;
    let Some(id) = crate::event::id_of(&o["id"]) else {
        return Ok(());
    };
    let rank = match e.type_.as_str() {
        "invoice.paid" | "invoice.payment_succeeded" => 2,
        _ => 1,
    };
    let invoice = billing::StripeInvoice {
        stripe_invoice_id: id,
        subscription_id: e.subscription_id(),
        customer_id: e.customer_id(),
        number: o["number"].as_str().map(str::to_owned),
        status: o["status"].as_str().map(str::to_owned),
        amount_due: o["amount_due"].as_i64().unwrap_or(0),
        currency: o["currency"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_uppercase(),
        hosted_invoice_url: o["hosted_invoice_url"].as_str().map(str::to_owned),
        created: o["created"]
            .as_i64()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .unwrap_or(e.created),
    };
    billing::upsert_stripe_invoice(pool, &invoice, e.created, rank).await?;
    Ok(())
}

/// Processes stored event `id` and records the outcome on it. `stripe` confirms a
/// suspension or deletion the event leads to (see [`crate::access::refresh`]).
pub async fn process_event(
    pool: &PgPool,
    id: &str,
    stripe: Option<&StripeApi>,
) -> Result<Outcome, ProcessError> {
    let stored = billing::event(pool, id)
        .await?
        .ok_or_else(|| ProcessError::Missing(id.to_owned()))?;
    let event =
        Envelope::parse(stored.payload.as_bytes()).map_err(|e| ProcessError::Unreadable {
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
    if event.is_handled() && event.object_kind() == "invoice" {
        record_invoice(pool, &event).await?;
    }
    if event.type_ == "checkout.session.expired" {
        let ended = expire_order(pool, &event).await?;
        billing::mark_event(pool, id, "processed", None).await?;
        return Ok(Outcome::OrderExpired(ended));
    }
    let outcome = match (event.is_handled(), event.subscription_id()) {
        (true, Some(sub)) => {
            // An event a recompute already took into account (one made for a later event
            // of the same subscription, which also refreshed the access policy) needs
            // nothing more: a storm of one subscription's events costs one recompute.
            let recomputed = if stored.state == "processed" {
                None
            } else {
                // One recompute of a subscription at a time in this worker: the jobs of its
                // other events wait here, in memory, rather than in a transaction on the
                // database lock, and mostly find their event covered when their turn comes.
                let turn = TURNS.take(&sub).await;
                if turn.waited
                    && billing::event_state(pool, id).await?.as_deref() == Some("processed")
                {
                    None
                } else {
                    recompute_subscription(pool, &sub, Some(&event.id)).await?
                }
            };
            let outcome = match recomputed {
                Some(outcome) => {
                    crate::access::refresh_subscription(
                        pool,
                        &sub,
                        time::OffsetDateTime::now_utc(),
                        stripe,
                    )
                    .await?;
                    outcome
                }
                None => Outcome::Applied {
                    subscription: sub.clone(),
                    fulfilled_order: false,
                },
            };
            // After the recompute, so that the subscription (and its trial end) is stored
            // when the email is written.
            if event.type_ == "customer.subscription.trial_will_end" {
                herd_jobs::enqueue(
                    pool,
                    &crate::jobs::TrialEnding {
                        subscription: sub,
                        event_id: event.id.clone(),
                    },
                )
                .await?;
            }
            outcome
        }
        _ => Outcome::Ignored,
    };
    let state = match outcome {
        Outcome::Applied { .. } | Outcome::OrderExpired(_) => "processed",
        Outcome::Ignored => "ignored",
    };
    // A pending event a recompute took into account is marked processed by it already
    // (`mark_included`); a failed one is marked here.
    let marked = matches!(outcome, Outcome::Applied { .. })
        && matches!(stored.state.as_str(), "pending" | "processed");
    if !marked {
        billing::mark_event(pool, id, state, None).await?;
    }
    Ok(outcome)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::TURNS;
    use std::time::Duration;

    #[tokio::test]
    async fn one_turn_per_key_at_a_time_and_a_free_key_is_forgotten() {
        let first = TURNS.take("sub_turns_a").await;
        assert!(!first.waited);
        let mut second = tokio::spawn(TURNS.take("sub_turns_a"));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "a second turn on a held key must wait"
        );
        // Another key does not wait.
        let other = TURNS.take("sub_turns_b").await;
        assert!(!other.waited);
        drop(first);
        let second = second.await.unwrap();
        assert!(second.waited);
        drop((second, other));
        let map = TURNS.map();
        assert!(!map.contains_key("sub_turns_a") && !map.contains_key("sub_turns_b"));
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_no_entry_behind() {
        let holder = TURNS.take("sub_turns_c").await;
        // A waiter whose job is stopped as its turn comes: the holder leaves while the
        // waiter still waits (so the entry stays for it), then the waiter is cancelled
        // before it runs again (this test's runtime runs one task at a time).
        let waiter = tokio::spawn(TURNS.take("sub_turns_c"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(holder);
        assert!(TURNS.map().contains_key("sub_turns_c"));
        waiter.abort();
        assert!(matches!(waiter.await, Err(e) if e.is_cancelled()));
        assert!(!TURNS.map().contains_key("sub_turns_c"));
    }
}
