//! A Stripe event's envelope: the few fields Herd reads to store and route it. The payload
//! itself is kept as received; objects are read as JSON so that fields Herd does not use can
//! change with Stripe's API versions without breaking ingestion.

use serde_json::Value;
use time::OffsetDateTime;

/// The event types Herd acts on; others are stored and marked ignored.
pub const HANDLED: [&str; 13] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.payment_succeeded",
    crate::subscription::READ_TYPE,
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not a Stripe event: {0}")]
pub struct MalformedEvent(pub String);

/// The parts of an event Herd reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub id: String,
    pub type_: String,
    pub created: OffsetDateTime,
    pub livemode: bool,
    /// `data.object`.
    pub object: Value,
    /// When Herd stored it (set from the stored row; `None` for a body parsed alone).
    pub received: Option<OffsetDateTime>,
}

/// An id field that may be a string or an expanded object with an `id`.
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl Envelope {
    pub fn parse(body: &[u8]) -> Result<Envelope, MalformedEvent> {
        let mut v: Value = serde_json::from_slice(body)
            .map_err(|e| MalformedEvent(format!("invalid JSON: {e}")))?;
        let field = |k: &str| v.get(k).ok_or_else(|| MalformedEvent(format!("no `{k}`")));
        let id = field("id")?
            .as_str()
            .filter(|s| s.starts_with("evt_"))
            .ok_or_else(|| MalformedEvent("`id` is not an event id".into()))?
            .to_owned();
        let type_ = field("type")?
            .as_str()
            .ok_or_else(|| MalformedEvent("`type` is not a string".into()))?
            .to_owned();
        let created = field("created")?
            .as_i64()
            .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .ok_or_else(|| MalformedEvent("`created` is not a time".into()))?;
        let livemode = v.get("livemode").and_then(Value::as_bool).unwrap_or(false);
        // Taken out of the parsed body rather than copied (a storm parses thousands).
        let object = v
            .get_mut("data")
            .and_then(|d| d.get_mut("object"))
            .filter(|o| o.is_object())
            .map(Value::take)
            .ok_or_else(|| MalformedEvent("no `data.object`".into()))?;
        Ok(Envelope {
            id,
            type_,
            created,
            livemode,
            object,
            received: None,
        })
    }

    /// The kind of `data.object` (`subscription`, `invoice`, `checkout.session`, …).
    pub fn object_kind(&self) -> &str {
        self.object
            .get("object")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The subscription the event is about, when it is about one.
    pub fn subscription_id(&self) -> Option<String> {
        let o = &self.object;
        match self.object_kind() {
            "subscription" => id_of(&o["id"]),
            // Older API versions name it on the invoice; newer ones under `parent`.
            "invoice" => id_of(&o["subscription"])
                .or_else(|| id_of(&o["parent"]["subscription_details"]["subscription"])),
            "checkout.session" => id_of(&o["subscription"]),
            _ => None,
        }
    }

    pub fn customer_id(&self) -> Option<String> {
        match self.object_kind() {
            "customer" => id_of(&self.object["id"]),
            _ => id_of(&self.object["customer"]),
        }
    }

    pub fn is_handled(&self) -> bool {
        HANDLED.contains(&self.type_.as_str())
    }

    /// Does recomputing its subscription do all that processing this event does? Invoice
    /// events also keep the invoice, a trial's end is emailed, and an expired Checkout
    /// Session ends its order: those need their own job's run.
    pub fn covered_by_recompute(&self) -> bool {
        self.is_handled()
            && self.object_kind() != "invoice"
            && !matches!(
                self.type_.as_str(),
                "customer.subscription.trial_will_end" | "checkout.session.expired"
            )
    }
}
