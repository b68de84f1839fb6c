//! Billing records: Stripe's webhook events (stored before they are acknowledged), Stripe
//! customers per organization, orders from the portal, and subscriptions as last
//! understood. Every write is an upsert keyed on Stripe's ids, so a redelivered or racing
//! event never makes a second row.

use crate::{Page, Paged, StoreError};
use herd_domain::OrgId;
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// A verified event to store.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub type_: &'a str,
    pub livemode: bool,
    pub created: OffsetDateTime,
    /// The body exactly as received.
    pub payload: &'a str,
    pub subscription_id: Option<&'a str>,
    pub customer_id: Option<&'a str>,
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: String,
    pub type_: String,
    pub livemode: bool,
    pub created: OffsetDateTime,
    pub payload: String,
    pub subscription_id: Option<String>,
    pub customer_id: Option<String>,
    pub received_at: OffsetDateTime,
    pub deliveries: i32,
    pub state: String,
    pub processed_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

/// Stores an event once. `true` when it is new; a redelivery only counts the delivery.
pub async fn insert_event(conn: &mut PgConnection, e: &NewEvent<'_>) -> Result<bool, StoreError> {
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO stripe_events (id, type, livemode, created, payload, subscription_id, customer_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET deliveries = stripe_events.deliveries + 1
           RETURNING (xmax = 0) AS "inserted!""#,
        e.id,
        e.type_,
        e.livemode,
        e.created,
        e.payload,
        e.subscription_id,
        e.customer_id
    )
    .fetch_one(conn)
    .await?;
    Ok(inserted)
}

pub async fn event(ex: impl PgExecutor<'_>, id: &str) -> Result<Option<StoredEvent>, StoreError> {
    Ok(sqlx::query_as!(
        StoredEvent,
        r#"SELECT id, type AS type_, livemode, created, payload, subscription_id, customer_id,
                  received_at, deliveries, state, processed_at, last_error
           FROM stripe_events WHERE id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?)
}

/// The processing state of a stored event (`pending`, `processed`, `ignored`, `failed`).
pub async fn event_state(ex: impl PgExecutor<'_>, id: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT state FROM stripe_events WHERE id = $1", id)
            .fetch_optional(ex)
            .await?,
    )
}

/// Every stored event about a subscription, oldest first by Stripe's time.
pub async fn events_of_subscription(
    ex: impl PgExecutor<'_>,
    subscription_id: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    Ok(sqlx::query_as!(
        StoredEvent,
        r#"SELECT id, type AS type_, livemode, created, payload, subscription_id, customer_id,
                  received_at, deliveries, state, processed_at, last_error
           FROM stripe_events WHERE subscription_id = $1 ORDER BY created, id"#,
        subscription_id
    )
    .fetch_all(ex)
    .await?)
}

/// Marks events processed that a recompute of their subscription took into account (in
/// its transaction), so that their own jobs need not recompute it again. Events already
/// processed keep their first processing time.
pub async fn mark_included(ex: impl PgExecutor<'_>, ids: &[String]) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE stripe_events SET state = 'processed', last_error = NULL,
                processed_at = coalesce(processed_at, now())
         WHERE id = ANY($1) AND state = 'pending'",
        ids
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Records the outcome of processing: `processed`, `ignored` or `failed` (with the error).
/// The first processing time is kept.
pub async fn mark_event(
    ex: impl PgExecutor<'_>,
    id: &str,
    state: &str,
    error: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE stripe_events SET state = $2, last_error = $3,
                processed_at = CASE WHEN $2 = 'failed' THEN processed_at ELSE coalesce(processed_at, now()) END
         WHERE id = $1",
        id,
        state,
        error
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Filters of the operators' event log; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub state: String,
    /// Exact type, or a prefix ending in `.` (`invoice.`).
    pub type_: String,
}

pub async fn list_events(
    ex: impl PgExecutor<'_>,
    filter: &EventFilter,
    page: Page,
) -> Result<Paged<StoredEvent>, StoreError> {
    let type_pattern = if filter.type_.is_empty() {
        "%".to_owned()
    } else if filter.type_.ends_with('.') {
        format!("{}%", crate::users::like_escape(&filter.type_))
    } else {
        crate::users::like_escape(&filter.type_)
    };
    let rows = sqlx::query_as!(
        StoredEvent,
        r#"SELECT id, type AS type_, livemode, created, payload, subscription_id, customer_id,
                  received_at, deliveries, state, processed_at, last_error
           FROM stripe_events
           WHERE ($1 = '' OR state = $1) AND type LIKE $2
           ORDER BY received_at DESC, id
           LIMIT $3 OFFSET $4"#,
        filter.state,
        type_pattern,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(rows))
}

/// The Stripe customer of an organization.
pub async fn customer_of(
    ex: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT stripe_customer_id FROM billing_customers WHERE org_id = $1",
        org.0
    )
    .fetch_optional(ex)
    .await?)
}

/// The organization of a Stripe customer.
pub async fn org_of_customer(
    ex: impl PgExecutor<'_>,
    customer: &str,
) -> Result<Option<OrgId>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT org_id FROM billing_customers WHERE stripe_customer_id = $1",
        customer
    )
    .fetch_optional(ex)
    .await?
    .map(OrgId))
}

/// Links an organization to its Stripe customer, once: returns the customer that is linked
/// afterwards (an earlier one wins a race).
pub async fn link_customer(
    conn: &mut PgConnection,
    org: OrgId,
    customer: &str,
) -> Result<String, StoreError> {
    sqlx::query!(
        "INSERT INTO billing_customers (org_id, stripe_customer_id) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
        org.0,
        customer
    )
    .execute(&mut *conn)
    .await?;
    customer_of(&mut *conn, org).await?.ok_or_else(|| {
        StoreError::Conflict(format!(
            "customer {customer} belongs to another organization"
        ))
    })
}

/// An order from the portal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub org_id: Uuid,
    pub plan_code: String,
    pub app: String,
    pub domain: String,
    pub state: String,
    pub checkout_session_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub fulfilled_at: Option<OffsetDateTime>,
    /// Why the paid order has no server, when it could not be created (or why an invoice
    /// order was declined).
    pub problem: Option<String>,
    /// `card` (Stripe Checkout) or `invoice` (approved by an operator).
    pub payment: String,
    pub billing_address: Option<String>,
    pub vat_id: Option<String>,
    pub po_reference: Option<String>,
}

/// What an order paid by invoice adds.
#[derive(Debug, Clone)]
pub struct InvoiceDetails<'a> {
    pub billing_address: &'a str,
    pub vat_id: &'a str,
    pub po_reference: &'a str,
}

#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    pub org: OrgId,
    pub plan_code: &'a str,
    pub app: &'a str,
    pub domain: &'a str,
    pub created_by: Option<Uuid>,
    /// Paid by invoice (with these details) rather than by card.
    pub invoice: Option<InvoiceDetails<'a>>,
    /// The domain needs no proof (a name under the provider's base domain).
    pub domain_preverified: bool,
    /// The order form's one-time token: the same token again (a double submission) makes
    /// no second order.
    pub submission: Option<Uuid>,
}

/// Creates an order; returns its id and whether it is new (`false`: the form's token was
/// used by an earlier order of the organization, whose id is returned).
pub async fn create_order(
    conn: &mut PgConnection,
    o: &NewOrder<'_>,
) -> Result<(Uuid, bool), StoreError> {
    if let Some(token) = o.submission {
        let existing = sqlx::query_scalar!(
            "SELECT id FROM orders WHERE org_id = $1 AND submission = $2",
            o.org.0,
            token
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = existing {
            return Ok((id, false));
        }
    }
    let id = Uuid::now_v7();
    let inv = o.invoice.as_ref();
    let inserted = sqlx::query!(
        "INSERT INTO orders (id, org_id, plan_code, app, domain, created_by, payment,
                             billing_address, vat_id, po_reference, domain_preverified, submission)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (org_id, submission) DO NOTHING",
        id,
        o.org.0,
        o.plan_code,
        o.app,
        o.domain,
        o.created_by,
        if inv.is_some() { "invoice" } else { "card" },
        inv.map(|i| i.billing_address),
        inv.map(|i| i.vat_id),
        inv.map(|i| i.po_reference),
        o.domain_preverified,
        o.submission
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok((id, true));
    }
    // A concurrent submission of the same form won.
    let existing = sqlx::query_scalar!(
        "SELECT id FROM orders WHERE org_id = $1 AND submission = $2",
        o.org.0,
        o.submission
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((existing, false))
}

pub async fn order(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Order>, StoreError> {
    Ok(sqlx::query_as!(
        Order,
        "SELECT id, org_id, plan_code, app, domain, state, checkout_session_id, stripe_subscription_id,
                created_at, fulfilled_at, problem, payment, billing_address, vat_id, po_reference
         FROM orders WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await?)
}

/// An order a server can be brought in under (an import): paid or approved without a
/// live server (none was made, or it was deleted), or paid by invoice and awaiting
/// approval (a card order not paid yet may still expire, and is not offered).
#[derive(Debug, Clone)]
pub struct OpenOrder {
    pub id: Uuid,
    pub org_slug: String,
    pub org_name: String,
    pub plan_code: String,
    pub domain: String,
    /// `pending` (not paid or approved yet) or `fulfilled` (paid or approved, its server
    /// could not be made).
    pub state: String,
    /// `card` or `invoice`.
    pub payment: String,
    pub created_at: OffsetDateTime,
}

/// The orders of `app` an import may be billed under (see [`OpenOrder`]), newest first
/// (at most 200).
pub async fn open_orders(ex: impl PgExecutor<'_>, app: &str) -> Result<Vec<OpenOrder>, StoreError> {
    Ok(sqlx::query_as!(
        OpenOrder,
        "SELECT o.id, g.slug AS org_slug, g.name AS org_name, o.plan_code, o.domain, o.state,
                o.payment, o.created_at
         FROM orders o JOIN organizations g ON g.id = o.org_id
         WHERE o.app = $1
           AND (o.state = 'fulfilled' OR (o.state = 'pending' AND o.payment = 'invoice'))
           AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.order_id = o.id AND i.desired <> 'deleted')
         ORDER BY o.created_at DESC
         LIMIT 200",
        app
    )
    .fetch_all(ex)
    .await?)
}

pub async fn set_checkout_session(
    ex: impl PgExecutor<'_>,
    order: Uuid,
    session: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE orders SET checkout_session_id = $2 WHERE id = $1",
        order,
        session
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Locks an order for the rest of the transaction and returns it.
pub async fn lock_order(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
) -> Result<Option<Order>, StoreError> {
    sqlx::query_scalar!("SELECT id FROM orders WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(&mut *conn)
        .await?;
    order(&mut *conn, id).await
}

/// Marks an invoice order approved and fulfilled, once: `true` the first time.
pub async fn fulfil_invoice_order(
    ex: impl PgExecutor<'_>,
    order: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE orders SET state = 'fulfilled', fulfilled_at = now(), problem = NULL
         WHERE id = $1 AND payment = 'invoice' AND state = 'pending'",
        order
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Declines an invoice order that waits for approval, with the reason shown to the
/// organization; `true` the first time.
pub async fn decline_invoice_order(
    ex: impl PgExecutor<'_>,
    order: Uuid,
    reason: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE orders SET state = 'abandoned', problem = $2
         WHERE id = $1 AND payment = 'invoice' AND state = 'pending'",
        order,
        reason
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An invoice order waiting for approval, with its organization, for operators.
#[derive(Debug, Clone)]
pub struct AwaitingOrder {
    pub id: Uuid,
    pub org_name: String,
    pub org_slug: String,
    pub plan_code: String,
    pub app: String,
    pub domain: String,
    pub billing_address: String,
    pub vat_id: String,
    pub po_reference: String,
    pub ordered_by: Option<String>,
    pub created_at: time::OffsetDateTime,
}

/// Invoice orders waiting for approval, oldest first, a page at a time.
pub async fn awaiting_approval(
    ex: impl PgExecutor<'_>,
    page: crate::Page,
) -> Result<crate::Paged<AwaitingOrder>, StoreError> {
    let rows = sqlx::query_as!(
        AwaitingOrder,
        r#"SELECT o.id, g.name AS org_name, g.slug AS org_slug, o.plan_code, o.app, o.domain,
                  o.billing_address AS "billing_address!", coalesce(o.vat_id, '') AS "vat_id!",
                  coalesce(o.po_reference, '') AS "po_reference!", u.email AS "ordered_by?",
                  o.created_at
           FROM orders o JOIN organizations g ON g.id = o.org_id
           LEFT JOIN users u ON u.id = o.created_by
           WHERE o.payment = 'invoice' AND o.state = 'pending'
           ORDER BY o.created_at, o.id
           LIMIT $1 OFFSET $2"#,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(rows))
}

/// Marks an order fulfilled by a subscription, once: `true` the first time, `false` when
/// it was fulfilled already (or is not an order of `org`).
pub async fn fulfil_order(
    ex: impl PgExecutor<'_>,
    order: Uuid,
    org: OrgId,
    subscription: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE orders SET state = 'fulfilled', fulfilled_at = now(), stripe_subscription_id = $3
         WHERE id = $1 AND org_id = $2 AND state = 'pending'",
        order,
        org.0,
        subscription
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends a card order whose delayed payment failed (SEPA Direct Debit refused), with the
/// reason shown on its page; `true` the first time. A fulfilled order is left alone.
pub async fn fail_card_order(
    ex: impl PgExecutor<'_>,
    order: Uuid,
    org: OrgId,
    problem: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE orders SET state = 'abandoned', problem = $3
         WHERE id = $1 AND org_id = $2 AND payment = 'card' AND state = 'pending'",
        order,
        org.0,
        problem
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A subscription as last understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub stripe_subscription_id: String,
    pub stripe_customer_id: String,
    pub org_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub status: String,
    pub status_since: OffsetDateTime,
    pub price_id: Option<String>,
    pub plan_code: Option<String>,
    pub current_period_end: Option<OffsetDateTime>,
    pub cancel_at_period_end: bool,
    pub latest_invoice_id: Option<String>,
    pub latest_invoice_status: Option<String>,
    pub payment_problem: Option<String>,
    pub trial_end: Option<OffsetDateTime>,
    pub source_time: OffsetDateTime,
}

/// Writes a subscription's recomputed state (insert or replace).
pub async fn upsert_subscription(
    ex: impl PgExecutor<'_>,
    s: &Subscription,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, org_id, order_id, status,
             status_since, price_id, plan_code, current_period_end, cancel_at_period_end, latest_invoice_id,
             latest_invoice_status, payment_problem, trial_end, source_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (stripe_subscription_id) DO UPDATE SET
             stripe_customer_id = EXCLUDED.stripe_customer_id,
             org_id = coalesce(EXCLUDED.org_id, subscriptions.org_id),
             order_id = coalesce(EXCLUDED.order_id, subscriptions.order_id),
             status = EXCLUDED.status, status_since = EXCLUDED.status_since,
             price_id = EXCLUDED.price_id, plan_code = EXCLUDED.plan_code,
             current_period_end = EXCLUDED.current_period_end,
             cancel_at_period_end = EXCLUDED.cancel_at_period_end,
             latest_invoice_id = EXCLUDED.latest_invoice_id,
             latest_invoice_status = EXCLUDED.latest_invoice_status,
             payment_problem = EXCLUDED.payment_problem, trial_end = EXCLUDED.trial_end,
             source_time = EXCLUDED.source_time, updated_at = now()",
        s.stripe_subscription_id,
        s.stripe_customer_id,
        s.org_id,
        s.order_id,
        s.status,
        s.status_since,
        s.price_id,
        s.plan_code,
        s.current_period_end,
        s.cancel_at_period_end,
        s.latest_invoice_id,
        s.latest_invoice_status,
        s.payment_problem,
        s.trial_end,
        s.source_time
    )
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn subscription(
    ex: impl PgExecutor<'_>,
    id: &str,
) -> Result<Option<Subscription>, StoreError> {
    Ok(sqlx::query_as!(
        Subscription,
        "SELECT stripe_subscription_id, stripe_customer_id, org_id, order_id, status, status_since, price_id,
                plan_code, current_period_end, cancel_at_period_end, latest_invoice_id, latest_invoice_status,
                payment_problem, trial_end, source_time
         FROM subscriptions WHERE stripe_subscription_id = $1",
        id
    )
    .fetch_optional(ex)
    .await?)
}

/// The plan code whose Stripe price is `price_id`.
pub async fn plan_of_price(
    ex: impl PgExecutor<'_>,
    price_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT code FROM plans WHERE provider_price_id = $1",
        price_id
    )
    .fetch_optional(ex)
    .await?)
}

/// An organization's subscriptions, newest first.
pub async fn subscriptions_of_org(
    ex: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Vec<Subscription>, StoreError> {
    Ok(sqlx::query_as!(
        Subscription,
        "SELECT stripe_subscription_id, stripe_customer_id, org_id, order_id, status, status_since, price_id,
                plan_code, current_period_end, cancel_at_period_end, latest_invoice_id, latest_invoice_status,
                payment_problem, trial_end, source_time
         FROM subscriptions WHERE org_id = $1 ORDER BY source_time DESC",
        org.0
    )
    .fetch_all(ex)
    .await?)
}

/// An organization's orders, newest first.
pub async fn orders_of_org(ex: impl PgExecutor<'_>, org: OrgId) -> Result<Vec<Order>, StoreError> {
    Ok(sqlx::query_as!(
        Order,
        "SELECT id, org_id, plan_code, app, domain, state, checkout_session_id, stripe_subscription_id,
                created_at, fulfilled_at, problem, payment, billing_address, vat_id, po_reference
         FROM orders WHERE org_id = $1 ORDER BY created_at DESC LIMIT 50",
        org.0
    )
    .fetch_all(ex)
    .await?)
}

/// A subscription with its organization, for operators.
#[derive(Debug, Clone)]
pub struct SubscriptionRow {
    pub stripe_subscription_id: String,
    pub org_slug: Option<String>,
    pub status: String,
    pub status_since: OffsetDateTime,
    pub plan_code: Option<String>,
    pub current_period_end: Option<OffsetDateTime>,
    pub cancel_at_period_end: bool,
    pub payment_problem: Option<String>,
}

/// Subscriptions, those with a payment problem first when `problems_only` is false, or only
/// those (past due, unpaid, or a failed or unconfirmed payment) when it is true.
pub async fn list_subscriptions(
    ex: impl PgExecutor<'_>,
    problems_only: bool,
    page: Page,
) -> Result<Paged<SubscriptionRow>, StoreError> {
    let rows = sqlx::query_as!(
        SubscriptionRow,
        r#"SELECT s.stripe_subscription_id, o.slug AS "org_slug?", s.status, s.status_since, s.plan_code,
                  s.current_period_end, s.cancel_at_period_end, s.payment_problem
           FROM subscriptions s LEFT JOIN organizations o ON o.id = s.org_id
           WHERE NOT $1 OR s.status IN ('past_due', 'unpaid') OR s.payment_problem IS NOT NULL
           ORDER BY (s.status IN ('past_due', 'unpaid') OR s.payment_problem IS NOT NULL) DESC,
                    s.status_since DESC, s.stripe_subscription_id
           LIMIT $2 OFFSET $3"#,
        problems_only,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(rows))
}

/// Events per processing state, for the console's summary.
pub async fn event_counts(ex: impl PgExecutor<'_>) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT state, count(*) AS "n!" FROM stripe_events GROUP BY state ORDER BY state"#
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|r| (r.state, r.n)).collect())
}

/// A Stripe invoice as its events report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeInvoice {
    pub stripe_invoice_id: String,
    pub subscription_id: Option<String>,
    pub customer_id: Option<String>,
    pub number: Option<String>,
    pub status: Option<String>,
    pub amount_due: i64,
    pub currency: String,
    pub hosted_invoice_url: Option<String>,
    pub created: OffsetDateTime,
}

/// Writes what an invoice event says, unless newer facts are stored: the later event time
/// wins, and at the same time the higher `rank` (a payment over a failure).
pub async fn upsert_stripe_invoice(
    ex: impl PgExecutor<'_>,
    i: &StripeInvoice,
    source_time: OffsetDateTime,
    rank: i32,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO stripe_invoices (stripe_invoice_id, subscription_id, customer_id, number, status, amount_due,
                                      currency, hosted_invoice_url, created, source_time, source_rank)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (stripe_invoice_id) DO UPDATE SET
             subscription_id = EXCLUDED.subscription_id, customer_id = EXCLUDED.customer_id,
             number = EXCLUDED.number, status = EXCLUDED.status, amount_due = EXCLUDED.amount_due,
             currency = EXCLUDED.currency, hosted_invoice_url = EXCLUDED.hosted_invoice_url,
             created = EXCLUDED.created, source_time = EXCLUDED.source_time, source_rank = EXCLUDED.source_rank
         WHERE (EXCLUDED.source_time, EXCLUDED.source_rank) > (stripe_invoices.source_time, stripe_invoices.source_rank)",
        i.stripe_invoice_id,
        i.subscription_id,
        i.customer_id,
        i.number,
        i.status,
        i.amount_due,
        i.currency,
        i.hosted_invoice_url,
        i.created,
        source_time,
        rank
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// The Stripe invoices of an organization's customer, newest first.
pub async fn stripe_invoices_of_org(
    ex: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Vec<StripeInvoice>, StoreError> {
    Ok(sqlx::query_as!(
        StripeInvoice,
        "SELECT i.stripe_invoice_id, i.subscription_id, i.customer_id, i.number, i.status, i.amount_due,
                i.currency, i.hosted_invoice_url, i.created
         FROM stripe_invoices i JOIN billing_customers c ON c.stripe_customer_id = i.customer_id
         WHERE c.org_id = $1 ORDER BY i.created DESC LIMIT 50",
        org.0
    )
    .fetch_all(ex)
    .await?)
}
