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
            "number": format!("INV-{id}"), "amount_due": 4900, "currency": "eur",
            "hosted_invoice_url": format!("https://invoice.stripe.com/i/{id}"),
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

/// One request the fake Stripe API received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The form parameters, in order (`metadata[herd_org_id]`, `line_items[0][price]`…).
    pub params: Vec<(String, String)>,
}

impl Recorded {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct FakeState {
    requests: Vec<Recorded>,
    objects: std::collections::HashMap<String, Value>,
    next: u64,
}

/// Stripe's API on a local port, answering with fixture objects and recording every
/// request: customers, Checkout Sessions, Customer Portal sessions and subscriptions.
#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    state: std::sync::Arc<std::sync::Mutex<FakeState>>,
}

fn metadata_of(params: &[(String, String)], prefix: &str) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in params {
        if let Some(key) = k
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('['))
            .and_then(|r| r.strip_suffix(']'))
        {
            m.insert(key.to_owned(), json!(v));
        }
    }
    Value::Object(m)
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        use axum::routing::any;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeStripe {
            base: base.clone(),
            state: std::sync::Arc::default(),
        };
        let f = fake.clone();
        let app = axum::Router::new().fallback(any(
            move |method: axum::http::Method, uri: axum::http::Uri, body: axum::body::Bytes| {
                let f = f.clone();
                async move { f.answer(method.as_str(), uri.path(), &body) }
            },
        ));
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        fake
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The stored object with this id (a session, customer or subscription).
    pub fn object(&self, id: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(id).cloned()
    }

    /// Stores (or replaces) an object the API will answer with.
    pub fn put(&self, object: Value) {
        let id = object["id"].as_str().unwrap().to_owned();
        self.state.lock().unwrap().objects.insert(id, object);
    }

    /// Plays the customer paying: the session is complete and has a subscription.
    pub fn complete_checkout(&self, session: &str, subscription: &str) {
        let mut st = self.state.lock().unwrap();
        let s = st.objects.get_mut(session).unwrap();
        s["status"] = json!("complete");
        s["payment_status"] = json!("paid");
        s["subscription"] = json!(subscription);
    }

    fn answer(&self, method: &str, path: &str, body: &[u8]) -> axum::response::Response {
        use axum::response::IntoResponse;
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let mut st = self.state.lock().unwrap();
        st.requests.push(Recorded {
            method: method.to_owned(),
            path: path.to_owned(),
            params: params.clone(),
        });
        st.next += 1;
        let n = st.next;
        let p = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        let reply = match (method, parts.as_slice()) {
            ("POST", ["customers"]) => {
                let c = object(
                    "customer",
                    json!({
                        "id": format!("cus_fake{n}"), "name": p("name"), "email": p("email"),
                        "metadata": metadata_of(&params, "metadata"),
                    }),
                );
                st.objects
                    .insert(c["id"].as_str().unwrap().to_owned(), c.clone());
                Some(c)
            }
            ("POST", ["checkout", "sessions"]) => {
                let id = format!("cs_test_fake{n}");
                let s = object(
                    "checkout.session",
                    json!({
                        "id": id, "object": "checkout.session", "mode": "subscription", "status": "open",
                        "payment_status": "unpaid", "customer": p("customer"),
                        "client_reference_id": p("client_reference_id"), "subscription": null,
                        "metadata": metadata_of(&params, "metadata"),
                        "success_url": p("success_url"), "cancel_url": p("cancel_url"),
                        "url": format!("{}/pay/{id}", self.base),
                    }),
                );
                st.objects.insert(id, s.clone());
                Some(s)
            }
            ("GET", ["checkout", "sessions", id]) | ("GET", ["subscriptions", id]) => {
                st.objects.get(*id).cloned()
            }
            ("POST", ["billing_portal", "sessions"]) => Some(object(
                "billing_portal.session",
                json!({
                    "id": format!("bps_fake{n}"), "customer": p("customer"), "return_url": p("return_url"),
                    "url": format!("{}/portal/{n}", self.base),
                }),
            )),
            ("POST", ["subscriptions", id]) => match st.objects.get_mut(*id) {
                Some(s) => {
                    if let Some(c) = p("cancel_at_period_end") {
                        s["cancel_at_period_end"] = json!(c == "true");
                    }
                    if let Some(price) = p("items[0][price]") {
                        s["items"]["data"][0]["price"]["id"] = json!(price);
                    }
                    Some(s.clone())
                }
                None => None,
            },
            _ => None,
        };
        match reply {
            Some(v) => axum::Json(v).into_response(),
            None => (
                axum::http::StatusCode::NOT_FOUND,
                axum::Json(json!({ "error": { "type": "invalid_request_error", "message": format!("No such object: {path}") } })),
            )
                .into_response(),
        }
    }
}
