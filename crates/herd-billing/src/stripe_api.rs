//! The calls Herd makes to Stripe's API, through async-stripe: customers, Checkout Sessions
//! (subscription mode), the Customer Portal, plan changes with proration, and cancelling at
//! period end. `STRIPE_API_BASE` points the client elsewhere (tests, staging).

use crate::subscription::{META_ORDER, META_ORG};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use stripe::StripeRequest;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::{
    CancelSubscription, RetrieveSubscription, UpdateSubscription, UpdateSubscriptionItems,
    UpdateSubscriptionProrationBehavior,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    RetrieveCheckoutSession,
};
use stripe_core::customer::CreateCustomer;
use uuid::Uuid;

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com/";

#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    #[error("Stripe: {0}")]
    Stripe(#[from] stripe::StripeError),
    #[error("Stripe answered without {0}")]
    Incomplete(&'static str),
    /// Herd's own side of a Stripe step failed (its database).
    #[error("{0}")]
    Local(String),
}

impl StripeApiError {
    /// Stripe answered that the object does not exist (404, `resource_missing`).
    pub fn not_found(&self) -> bool {
        matches!(
            self,
            StripeApiError::Stripe(stripe::StripeError::Stripe(_, 404))
        )
    }

    /// Stripe did not answer in time (or the connection broke): whether the write took
    /// effect is unknown. Repeating it with the same idempotency key finds out.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            StripeApiError::Stripe(
                stripe::StripeError::Timeout | stripe::StripeError::ClientError(_)
            )
        )
    }
}

/// How long one call to Stripe may take by default.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The idempotency key of a write to Stripe, derived from what it is for: Stripe answers
/// a repeated write (a double submission, a retry after a timeout) with the first one's
/// result for 24 hours, so nothing is created twice.
fn key(k: String) -> stripe::RequestStrategy {
    match stripe::IdempotencyKey::new(&k) {
        Ok(k) => stripe::RequestStrategy::Idempotent(k),
        // Unreachable with Herd's keys (short, never empty).
        Err(_) => stripe::RequestStrategy::Once,
    }
}

/// A Stripe API client.
#[derive(Clone)]
pub struct StripeApi {
    client: stripe::Client,
    /// The key's mode (`Some(true)` live, `Some(false)` test).
    livemode: Option<bool>,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeApi")
    }
}

/// What a new Checkout Session is for.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    pub customer: &'a str,
    pub price_id: &'a str,
    pub org: Uuid,
    pub order: Uuid,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
}

/// A Checkout Session as Herd needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
    /// `open`, `complete` or `expired`.
    pub status: Option<String>,
    pub customer: Option<String>,
    pub subscription: Option<String>,
    pub client_reference_id: Option<String>,
    /// `paid`, `unpaid` (a delayed method such as SEPA Direct Debit, not settled yet) or
    /// `no_payment_required`: only the first and the last fulfil an order.
    pub payment_status: String,
}

impl CheckoutSession {
    /// Whether the order it is for may be fulfilled: complete, and paid (or free).
    pub fn is_paid(&self) -> bool {
        self.status.as_deref() == Some("complete")
            && crate::subscription::payment_settled(&self.payment_status)
    }
}

/// A subscription as Stripe's API says it is now, with its latest invoice: what the access
/// policy re-reads before a suspension or a deletion takes effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionNow {
    pub id: String,
    pub customer: String,
    pub status: String,
    pub latest_invoice_id: Option<String>,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    pub latest_invoice_status: Option<String>,
    /// Read with a live key.
    pub livemode: bool,
}

fn herd_metadata(org: Uuid, order: Uuid) -> HashMap<String, String> {
    HashMap::from([
        (META_ORG.to_owned(), org.to_string()),
        (META_ORDER.to_owned(), order.to_string()),
    ])
}

/// Selects rustls's ring provider for the process (several crates of the build enable more
/// than one, and rustls then refuses to guess). Harmless when one is installed already.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl StripeApi {
    pub fn new(secret_key: &SecretString, api_base: &str) -> Result<Self, StripeApiError> {
        Self::with_timeout(secret_key, api_base, DEFAULT_TIMEOUT)
    }

    /// A client whose calls give up after `timeout` (their outcome is then unknown).
    pub fn with_timeout(
        secret_key: &SecretString,
        api_base: &str,
        timeout: std::time::Duration,
    ) -> Result<Self, StripeApiError> {
        install_crypto_provider();
        let mut base = api_base.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        let client = stripe::ClientBuilder::new(secret_key.expose_secret())
            .url(base)
            .app_info("herd", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
            .timeout(timeout)
            .build()?;
        Ok(Self {
            client,
            livemode: crate::ingest::key_livemode(secret_key.expose_secret()),
        })
    }

    /// Creates the Stripe customer of an organization, once: the idempotency key is the
    /// organization's, so two first orders at once get the same customer.
    pub async fn create_customer(
        &self,
        org: Uuid,
        name: &str,
        email: &str,
    ) -> Result<String, StripeApiError> {
        let c = CreateCustomer::new()
            .name(name)
            .email(email)
            .metadata(HashMap::from([(META_ORG.to_owned(), org.to_string())]))
            .customize()
            .request_strategy(key(format!("herd-customer-{org}")))
            .send(&self.client)
            .await?;
        Ok(c.id.to_string())
    }

    /// A Checkout Session in subscription mode for one plan, carrying the organization and
    /// the order (as `client_reference_id` and metadata, on the session and on the
    /// subscription it creates). The idempotency key is the order's: repeating it (a double
    /// submission, a retry after a timeout) returns the same session.
    pub async fn create_checkout(
        &self,
        r: &CheckoutRequest<'_>,
    ) -> Result<CheckoutSession, StripeApiError> {
        let item = CreateCheckoutSessionLineItems {
            price: Some(r.price_id.to_owned()),
            quantity: Some(1),
            ..Default::default()
        };
        let subscription_data = CreateCheckoutSessionSubscriptionData {
            metadata: Some(herd_metadata(r.org, r.order)),
            ..Default::default()
        };
        let s = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Subscription)
            .customer(r.customer)
            .client_reference_id(r.order.to_string())
            .metadata(herd_metadata(r.org, r.order))
            .line_items(vec![item])
            .subscription_data(subscription_data)
            .success_url(r.success_url)
            .cancel_url(r.cancel_url)
            .customize()
            .request_strategy(key(format!("herd-checkout-{}", r.order)))
            .send(&self.client)
            .await?;
        Ok(session(s))
    }

    pub async fn checkout_session(&self, id: &str) -> Result<CheckoutSession, StripeApiError> {
        let s = RetrieveCheckoutSession::new(id).send(&self.client).await?;
        Ok(session(s))
    }

    /// A Customer Portal session (payment methods, invoices); returns its URL.
    pub async fn portal(&self, customer: &str, return_url: &str) -> Result<String, StripeApiError> {
        let s = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url)
            .send(&self.client)
            .await?;
        Ok(s.url)
    }

    /// Moves a subscription to another price, prorated.
    pub async fn change_price(
        &self,
        subscription: &str,
        price_id: &str,
    ) -> Result<(), StripeApiError> {
        let current = RetrieveSubscription::new(subscription)
            .send(&self.client)
            .await?;
        let item = current
            .items
            .data
            .first()
            .ok_or(StripeApiError::Incomplete("a subscription item"))?;
        UpdateSubscription::new(subscription)
            .items(vec![UpdateSubscriptionItems {
                id: Some(item.id.to_string()),
                price: Some(price_id.to_owned()),
                ..Default::default()
            }])
            .proration_behavior(UpdateSubscriptionProrationBehavior::CreateProrations)
            .send(&self.client)
            .await?;
        Ok(())
    }

    /// Reads subscription `id` as it is now, with its latest invoice expanded.
    pub async fn subscription_now(&self, id: &str) -> Result<SubscriptionNow, StripeApiError> {
        let s = RetrieveSubscription::new(id)
            .expand(vec!["latest_invoice".to_owned()])
            .send(&self.client)
            .await?;
        let latest = s.latest_invoice.as_ref();
        let latest_invoice_id = latest.and_then(|i| i.id().as_ref().map(ToString::to_string));
        let latest_invoice_status = latest
            .and_then(|i| i.as_object())
            .and_then(|i| i.status.as_ref())
            .map(|x| x.as_str().to_owned());
        Ok(SubscriptionNow {
            id: s.id.to_string(),
            customer: s.customer.id().to_string(),
            status: s.status.as_str().to_owned(),
            latest_invoice_id,
            latest_invoice_status,
            livemode: self.livemode.unwrap_or(s.livemode),
        })
    }

    /// Cancels subscription `id` now, without proration or a final invoice: its servers are
    /// gone (deleted by the access policy, or never made), so Stripe must stop billing it.
    /// The idempotency key is the subscription's, so a retried job cancels it once.
    pub async fn cancel_now(&self, id: &str) -> Result<(), StripeApiError> {
        CancelSubscription::new(id)
            .invoice_now(false)
            .prorate(false)
            .customize()
            .request_strategy(key(format!("herd-cancel-{id}")))
            .send(&self.client)
            .await?;
        Ok(())
    }

    /// Cancels at the end of the period (`true`), or undoes that (`false`).
    pub async fn cancel_at_period_end(
        &self,
        subscription: &str,
        cancel: bool,
    ) -> Result<(), StripeApiError> {
        UpdateSubscription::new(subscription)
            .cancel_at_period_end(cancel)
            .send(&self.client)
            .await?;
        Ok(())
    }
}

fn session(s: stripe_shared::CheckoutSession) -> CheckoutSession {
    CheckoutSession {
        id: s.id.to_string(),
        url: s.url,
        status: s.status.map(|x| x.as_str().to_owned()),
        customer: s.customer.as_ref().map(|c| c.id().to_string()),
        subscription: s.subscription.as_ref().map(|c| c.id().to_string()),
        client_reference_id: s.client_reference_id,
        payment_status: s.payment_status.as_str().to_owned(),
    }
}
