//! Stripe test data built from Stripe's own published fixtures (`fixtures/stripe/`), and
//! webhook deliveries signed exactly as Stripe signs them.

use serde_json::{json, Value};
use std::sync::OnceLock;

/// Every fixture object, by resource name (`subscription`, `invoice`, `checkout.session`…).
pub fn fixtures() -> &'static Value {
    static FIXTURES: OnceLock<Value> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let text = include_str!("../fixtures/stripe/fixtures3.json");
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("fixtures3.json: {e}"));
        v["resources"].clone()
    })
}

/// A copy of one fixture object.
pub fn fixture(resource: &str) -> Value {
    let v = fixtures()[resource].clone();
    assert!(v.is_object(), "no Stripe fixture {resource}");
    v
}

fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The fixture `resource` with `patch` merged in (objects merge, everything else replaces).
pub fn object(resource: &str, patch: Value) -> Value {
    let mut v = fixture(resource);
    merge(&mut v, patch);
    v
}

/// A subscription on `price` for `customer`, with Herd's metadata.
pub fn subscription(
    id: &str,
    customer: &str,
    status: &str,
    price: &str,
    period_end: i64,
    metadata: Value,
) -> Value {
    let mut s = object(
        "subscription",
        json!({
            "id": id, "customer": customer, "status": status, "metadata": metadata,
            "cancel_at_period_end": false, "trial_end": null, "latest_invoice": null,
        }),
    );
    let item = &mut s["items"]["data"][0];
    merge(
        item,
        json!({ "subscription": id, "current_period_end": period_end, "price": { "id": price } }),
    );
    s
}

/// An invoice of `subscription` in `status` (`paid`, `open`…), linked the way API versions
/// from 2025 do (under `parent.subscription_details`).
pub fn invoice(id: &str, customer: &str, subscription: &str, status: &str) -> Value {
    object(
        "invoice",
        json!({
            "id": id, "customer": customer, "status": status, "subscription": null,
            "parent": { "type": "subscription_details", "quote_details": null,
                        "subscription_details": { "subscription": subscription, "metadata": {} } },
        }),
    )
}

/// A completed Checkout Session in subscription mode.
pub fn checkout_session(
    id: &str,
    customer: &str,
    subscription: &str,
    order: &str,
    org: &str,
) -> Value {
    object(
        "checkout.session",
        json!({
            "id": id, "customer": customer, "subscription": subscription, "mode": "subscription",
            "status": "complete", "payment_status": "paid", "client_reference_id": order,
            "metadata": { "herd_org_id": org, "herd_order_id": order },
        }),
    )
}

/// An event envelope around `object`, from the `event` fixture.
pub fn event(id: &str, type_: &str, created: i64, object: Value) -> Value {
    let mut e = fixture("event");
    merge(
        &mut e,
        json!({ "id": id, "type": type_, "created": created, "livemode": false,
                "api_version": "2025-03-31.basil" }),
    );
    e["data"] = json!({ "object": object });
    e
}

/// A `Stripe-Signature` header for `body` at `timestamp`, as Stripe computes it:
/// hex HMAC-SHA256 of `"{t}.{body}"` keyed with the endpoint secret.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(format!("{timestamp}.").as_bytes());
    m.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(m.finalize().into_bytes())
    )
}

/// Now, in unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
