//! Billing's background jobs, typed: each is enqueued in the transaction of the change it
//! follows from, and run by the control plane's one job runner (`herd-jobs`).

use herd_jobs::Job;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Process a stored Stripe event (once per event id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeEvent {
    pub event_id: String,
    /// The subscription the event is about: its events' jobs run one at a time, so one
    /// recompute covers those stored before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
}

impl Job for StripeEvent {
    const KIND: &'static str = "stripe.event";
    fn dedupe_key(&self) -> Option<String> {
        Some(self.event_id.clone())
    }
    fn group_key(&self) -> Option<String> {
        self.subscription
            .as_ref()
            .map(|s| format!("subscription:{s}"))
    }
}

/// Email the organization about a recorded access transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessNotice {
    pub transition_id: Uuid,
}

impl Job for AccessNotice {
    const KIND: &'static str = "billing.notice";
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("notice:{}", self.transition_id))
    }
}

/// Tell an organization its trial ends soon (once per Stripe event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialEnding {
    pub subscription: String,
    /// The `customer.subscription.trial_will_end` event this follows from.
    #[serde(default)]
    pub event_id: String,
}

impl Job for TrialEnding {
    const KIND: &'static str = "billing.trial_ending";
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("trial:{}", self.event_id))
    }
}

/// Email an issued invoice to the organization's owners and billing members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceEmail {
    pub invoice_id: Uuid,
}

impl Job for InvoiceEmail {
    const KIND: &'static str = "billing.invoice";
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("invoice:{}", self.invoice_id))
    }
}

/// Tell an organization that a payment arrived after its server was deleted (once per
/// subject): the server does not come back, a new order makes a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaidAfterDeletion {
    pub subject: String,
}

impl Job for PaidAfterDeletion {
    const KIND: &'static str = "billing.paid_after_deletion";
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("paid-after-deletion:{}", self.subject))
    }
}

/// Tell an organization that the delayed payment of its order failed (no server was made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaymentFailed {
    pub order_id: Uuid,
}

impl Job for OrderPaymentFailed {
    const KIND: &'static str = "billing.order_payment_failed";
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("order-payment-failed:{}", self.order_id))
    }
}

/// Cancel a Stripe subscription now: its servers were deleted by the access policy, or its
/// order's delayed payment failed and no server was made. Retried until Stripe answers;
/// without Stripe's key it fails, visibly, among the failing jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelSubscription {
    pub subscription: String,
}

impl Job for CancelSubscription {
    const KIND: &'static str = "billing.cancel_subscription";
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("cancel:{}", self.subscription))
    }
}
