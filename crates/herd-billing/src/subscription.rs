//! A subscription recomputed from every stored event about it, sorted in Stripe's order
//! (event time, then the lifecycle order of event types, then id). Delivery order and
//! duplicates cannot change the result, and an older event can never overwrite newer
//! state: each recomputation starts from scratch.

use crate::event::{id_of, Envelope};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// Metadata keys Herd puts on Checkout Sessions and subscriptions.
pub const META_ORG: &str = "herd_org_id";
pub const META_ORDER: &str = "herd_order_id";

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
    /// Whether a completed Checkout Session is among the events (the order is paid for).
    pub checkout_completed: bool,
    /// Stripe's time of the newest event.
    pub source_time: OffsetDateTime,
}

/// Same-second events are taken in the order Stripe emits them in a subscription's life.
fn rank(type_: &str) -> u8 {
    match type_ {
        "checkout.session.completed" => 0,
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

/// Recomputes subscription `id` from its events (in any order, duplicates allowed); `None`
/// when none of them says anything about it.
pub fn recompute(id: &str, events: &[Envelope]) -> Option<View> {
    let mut sorted: Vec<&Envelope> = events.iter().collect();
    sorted.sort_by(|a, b| {
        (a.created, rank(&a.type_), &a.id).cmp(&(b.created, rank(&b.type_), &b.id))
    });
    sorted.dedup_by(|a, b| a.id == b.id);
    let mut view: Option<View> = None;
    for e in sorted {
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
            source_time: e.created,
        });
        v.source_time = e.created;
        if let Some(c) = e.customer_id() {
            v.customer = c;
        }
        match e.object_kind() {
            "subscription" => {
                let status = o["status"].as_str().unwrap_or("incomplete").to_owned();
                if status != v.status {
                    v.status = status;
                    v.status_since = e.created;
                }
                let item = &o["items"]["data"][0];
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
                v.latest_invoice_id = id_of(&o["id"]);
                v.latest_invoice_status = o["status"].as_str().map(str::to_owned);
                v.payment_problem = match e.type_.as_str() {
                    "invoice.payment_failed" => Some("payment_failed".into()),
                    "invoice.payment_action_required" => Some("action_required".into()),
                    "invoice.paid" | "invoice.payment_succeeded" => None,
                    _ => v.payment_problem.clone(),
                };
            }
            "checkout.session" => {
                v.checkout_completed |= e.type_ == "checkout.session.completed";
                v.org_id = uuid_of(&o["metadata"][META_ORG]).or(v.org_id);
                v.order_id = uuid_of(&o["metadata"][META_ORDER])
                    .or_else(|| uuid_of(&o["client_reference_id"]))
                    .or(v.order_id);
            }
            _ => {}
        }
    }
    view
}
