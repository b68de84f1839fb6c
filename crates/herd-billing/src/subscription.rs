//! A subscription recomputed from every stored event about it, sorted in Stripe's order
//! (event time, then the lifecycle order of event types, then id). Delivery order and
//! duplicates cannot change the result, and an older event can never overwrite newer
//! state: each recomputation starts from scratch.

use crate::event::{id_of, Envelope};
use serde_json::Value;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// Metadata keys Herd puts on Checkout Sessions and subscriptions.
pub const META_ORG: &str = "herd_org_id";
pub const META_ORDER: &str = "herd_order_id";

/// The type of the events Herd stores itself when it re-reads a subscription from Stripe's
/// API (before a suspension or a deletion): the newest fact about it when it is read.
pub const READ_TYPE: &str = "herd.subscription.read";

/// Whether a Checkout Session's `payment_status` lets its order be fulfilled: `paid`, or
/// `no_payment_required` (a free trial); `unpaid` waits for
/// `checkout.session.async_payment_succeeded` (SEPA Direct Debit and other delayed
/// methods).
pub fn payment_settled(payment_status: &str) -> bool {
    matches!(payment_status, "paid" | "no_payment_required")
}

/// What Herd knows of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub id: String,
    pub customer: String,
    /// Stripe's status; `incomplete` until a subscription event says otherwise.
    pub status: String,
    pub status_since: OffsetDateTime,
    pub price_id: Option<String>,
    pub current_period_end: Option<OffsetDateTime>,
    pub cancel_at_period_end: bool,
    pub trial_end: Option<OffsetDateTime>,
    pub latest_invoice_id: Option<String>,
    pub latest_invoice_status: Option<String>,
    /// `payment_failed` or `action_required` while the latest invoice is unpaid.
    pub payment_problem: Option<String>,
    pub org_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    /// Whether a paid Checkout Session is among the events (the order is paid for):
    /// completed with `payment_status` `paid` or `no_payment_required`, or settled later
    /// (`checkout.session.async_payment_succeeded`).
    pub checkout_completed: bool,
    /// Whether the Checkout Session's delayed payment failed
    /// (`checkout.session.async_payment_failed`): the order gets no server.
    pub checkout_failed: bool,
    /// Stripe's time of the newest event.
    pub source_time: OffsetDateTime,
}

/// Same-second events are taken in the order Stripe emits them in a subscription's life.
fn rank(type_: &str) -> u8 {
    match type_ {
        "checkout.session.completed"
        | "checkout.session.async_payment_succeeded"
        | "checkout.session.async_payment_failed" => 0,
        "customer.subscription.created" => 1,
        t if t.starts_with("invoice.") => 2,
        "customer.subscription.trial_will_end" => 3,
        "customer.subscription.updated" => 4,
        "customer.subscription.deleted" => 5,
        _ => 6,
    }
}

fn time_of(v: &Value) -> Option<OffsetDateTime> {
    v.as_i64()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
}

fn uuid_of(v: &Value) -> Option<Uuid> {
    v.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

/// Statuses a subscription never leaves.
fn is_terminal(status: &str) -> bool {
    matches!(status, "canceled" | "incomplete_expired")
}

/// What the events say of one invoice of the subscription.
struct InvoiceFacts {
    created: OffsetDateTime,
    /// When its last event was taken, among the others (ties of `created`).
    seen: usize,
    status: Option<String>,
    problem: Option<String>,
}

/// Recomputes subscription `id` from its events (in any order, duplicates allowed); `None`
/// when none of them says anything about it.
pub fn recompute(id: &str, events: &[Envelope]) -> Option<View> {
    // Within one second, Herd's reads of the API are placed by when they were made: after
    // the events received before them (the API reflected those), before the events
    // received after them. Other same-second events keep Stripe's lifecycle order.
    let reads: Vec<(OffsetDateTime, OffsetDateTime)> = events
        .iter()
        .filter(|e| e.type_ == READ_TYPE)
        .filter_map(|e| Some((e.created, e.received?)))
        .collect();
    let key = |e: &Envelope| {
        let received = e.received.unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let is_read = e.type_ == READ_TYPE;
        let bucket = reads
            .iter()
            .filter(|(c, r)| *c == e.created && (*r < received || (is_read && *r == received)))
            .count();
        let rank = if is_read { 0 } else { 1 + rank(&e.type_) };
        (e.created, bucket, rank)
    };
    let mut sorted: Vec<&Envelope> = events.iter().collect();
    sorted.sort_by(|a, b| (key(a), &a.id).cmp(&(key(b), &b.id)));
    sorted.dedup_by(|a, b| a.id == b.id);
    let mut view: Option<View> = None;
    let mut invoices: BTreeMap<String, InvoiceFacts> = BTreeMap::new();
    // The subscription's own `latest_invoice` in its newest snapshot, with that time.
    let mut named: Option<(String, OffsetDateTime)> = None;
    // The billing period of the newest subscription snapshot taken.
    let mut period_start: Option<OffsetDateTime> = None;
    for (seen, e) in sorted.into_iter().enumerate() {
        if e.subscription_id().as_deref() != Some(id) {
            continue;
        }
        let o = &e.object;
        let v = view.get_or_insert_with(|| View {
            id: id.to_owned(),
            customer: String::new(),
            status: "incomplete".into(),
            status_since: e.created,
            price_id: None,
            current_period_end: None,
            cancel_at_period_end: false,
            trial_end: None,
            latest_invoice_id: None,
            latest_invoice_status: None,
            payment_problem: None,
            org_id: None,
            order_id: None,
            checkout_completed: false,
            checkout_failed: false,
            source_time: e.created,
        });
        v.source_time = e.created;
        if let Some(c) = e.customer_id() {
            v.customer = c;
        }
        if e.type_ == READ_TYPE {
            // Stripe's API, read now: its status and latest invoice, nothing else.
            if let Some(status) = o["status"].as_str() {
                if status != v.status {
                    v.status = status.to_owned();
                    v.status_since = e.created;
                }
            }
            if let Some(inv) = id_of(&o["latest_invoice"]) {
                let status = o["latest_invoice"]["status"].as_str().map(str::to_owned);
                let f = invoices.entry(inv.clone()).or_insert(InvoiceFacts {
                    created: e.created,
                    seen: 0,
                    status: None,
                    problem: None,
                });
                f.seen = seen;
                if status.as_deref() == Some("paid") {
                    f.problem = None;
                }
                f.status = status.or(f.status.take());
                named = Some((inv, e.created));
            }
            continue;
        }
        match e.object_kind() {
            "subscription" => {
                // The object's own state orders its snapshots where Stripe gives one: a
                // snapshot of an earlier billing period is older, whatever its event's
                // place in the second; and an ended subscription never starts again.
                let item = &o["items"]["data"][0];
                let started = time_of(&item["current_period_start"])
                    .or_else(|| time_of(&o["current_period_start"]));
                let status = o["status"].as_str().unwrap_or("incomplete");
                if started.is_some() && started < period_start
                    || (is_terminal(&v.status) && !is_terminal(status))
                {
                    continue;
                }
                period_start = started.or(period_start);
                if let Some(inv) = id_of(&o["latest_invoice"]) {
                    named = Some((inv, e.created));
                }
                if status != v.status {
                    v.status = status.to_owned();
                    v.status_since = e.created;
                }
                v.price_id = id_of(&item["price"]).or_else(|| v.price_id.clone());
                // Since API version 2025-03-31 the period is on the items.
                v.current_period_end = time_of(&item["current_period_end"])
                    .or_else(|| time_of(&o["current_period_end"]));
                v.cancel_at_period_end = o["cancel_at_period_end"].as_bool().unwrap_or(false);
                v.trial_end = time_of(&o["trial_end"]);
                v.org_id = uuid_of(&o["metadata"][META_ORG]).or(v.org_id);
                v.order_id = uuid_of(&o["metadata"][META_ORDER]).or(v.order_id);
            }
            "invoice" => {
                let Some(inv) = id_of(&o["id"]) else {
                    continue;
                };
                let f = invoices.entry(inv).or_insert(InvoiceFacts {
                    created: time_of(&o["created"]).unwrap_or(e.created),
                    seen: 0,
                    status: None,
                    problem: None,
                });
                f.seen = seen;
                f.status = o["status"].as_str().map(str::to_owned);
                f.problem = match e.type_.as_str() {
                    "invoice.payment_failed" => Some("payment_failed".into()),
                    "invoice.payment_action_required" => Some("action_required".into()),
                    "invoice.paid" | "invoice.payment_succeeded" => None,
                    _ => f.problem.take(),
                };
            }
            "checkout.session" => {
                v.checkout_completed |= match e.type_.as_str() {
                    "checkout.session.completed" => {
                        payment_settled(o["payment_status"].as_str().unwrap_or_default())
                    }
                    "checkout.session.async_payment_succeeded" => true,
                    _ => false,
                };
                v.checkout_failed |= e.type_ == "checkout.session.async_payment_failed";
                v.org_id = uuid_of(&o["metadata"][META_ORG]).or(v.org_id);
                v.order_id = uuid_of(&o["metadata"][META_ORDER])
                    .or_else(|| uuid_of(&o["client_reference_id"]))
                    .or(v.order_id);
            }
            _ => {}
        }
    }
    // The payment problem is the latest invoice's: the one the subscription names in its
    // newest snapshot, unless an invoice created after that snapshot was seen since; never
    // merely the invoice whose event came last (a late retry of an older invoice).
    let newest_seen = invoices
        .iter()
        .max_by_key(|(_, f)| (f.created, f.seen))
        .map(|(id, f)| (id.clone(), f.created));
    let latest = match (named, newest_seen) {
        (Some((n, at)), Some((seen, created))) if seen != n && created > at => Some(seen),
        (Some((n, _)), _) => Some(n),
        (None, seen) => seen.map(|(id, _)| id),
    };
    if let (Some(v), Some(latest)) = (view.as_mut(), latest) {
        let facts = invoices.get(&latest);
        v.latest_invoice_status = facts.and_then(|f| f.status.clone());
        v.payment_problem = facts.and_then(|f| f.problem.clone());
        v.latest_invoice_id = Some(latest);
    }
    view
}
