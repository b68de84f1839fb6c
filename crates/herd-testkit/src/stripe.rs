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

/// A POST Stripe answered with an idempotency key: its path, its sorted form, its answer.
type Answered = (String, Vec<(String, String)>, Value);

#[derive(Default)]
struct FakeState {
    requests: Vec<Recorded>,
    objects: std::collections::HashMap<String, Value>,
    next: u64,
    /// POST answers by idempotency key, with the request they answered (path and form):
    /// Stripe replays them for a repeated key and refuses the key with other parameters.
    idempotent: std::collections::HashMap<String, Answered>,
    /// How many of the next requests to `stall_path` are answered only after `stall` (done
    /// first, answered late: the client gives up and cannot tell whether it happened).
    stalled: usize,
    stall_path: String,
    stall: std::time::Duration,
}

/// A client of Stripe's API pointed at `fake`.
pub fn api(fake: &FakeStripe) -> herd_billing::stripe_api::StripeApi {
    herd_billing::stripe_api::StripeApi::new(
        &secrecy::SecretString::from("sk_test_herd".to_owned()),
        &fake.base,
    )
    .expect("a Stripe client")
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
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let f = f.clone();
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let (reply, delay) =
                        f.answer_idempotent(method.as_str(), uri.path(), uri.query(), key, &body);
                    if let Some(d) = delay {
                        tokio::time::sleep(d).await;
                    }
                    reply
                }
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

    /// Makes the next `n` requests to `path` (`/v1/checkout/sessions`) take effect at once
    /// but be answered only after `delay` (a client with a shorter timeout gives up without
    /// knowing their outcome).
    pub fn stall_next(&self, path: &str, n: usize, delay: std::time::Duration) {
        let mut st = self.state.lock().unwrap();
        st.stalled = n;
        st.stall_path = path.to_owned();
        st.stall = delay;
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
        self.complete_checkout_with(session, subscription, "paid");
    }

    /// Plays the customer finishing Checkout with `payment_status` (`unpaid` for a delayed
    /// method such as SEPA Direct Debit, whose money arrives days later).
    pub fn complete_checkout_with(&self, session: &str, subscription: &str, payment_status: &str) {
        let mut st = self.state.lock().unwrap();
        let s = st.objects.get_mut(session).unwrap();
        s["status"] = json!("complete");
        s["payment_status"] = json!(payment_status);
        s["subscription"] = json!(subscription);
    }

    /// Sets what Stripe's API says of subscription `id` now (its status and latest invoice,
    /// stored as an invoice object that `expand[]=latest_invoice` returns), as Stripe would
    /// after events Herd may never have received.
    pub fn set_subscription(&self, subscription: Value, latest_invoice: Option<Value>) {
        let mut subscription = subscription;
        if let Some(inv) = &latest_invoice {
            subscription["latest_invoice"] = inv["id"].clone();
            self.put(inv.clone());
        }
        self.put(subscription);
    }

    /// Answers as Stripe does with an `Idempotency-Key`: the first answer again for the same
    /// key and parameters (without doing anything), 400 for the key with other parameters.
    fn answer_idempotent(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        key: Option<String>,
        body: &[u8],
    ) -> (axum::response::Response, Option<std::time::Duration>) {
        use axum::response::IntoResponse;
        let delay = {
            let mut st = self.state.lock().unwrap();
            (st.stalled > 0 && st.stall_path == path).then(|| {
                st.stalled -= 1;
                st.stall
            })
        };
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(body).into_owned().collect();
        // Stripe compares the parameters, not their order (a map's keys come in any order).
        let mut sorted = params.clone();
        sorted.sort();
        if let (Some(k), "POST") = (&key, method) {
            let mut st = self.state.lock().unwrap();
            if let Some((p, form, reply)) = st.idempotent.get(k).cloned() {
                st.requests.push(Recorded {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    params: params.clone(),
                });
                let reply = if p == path && form == sorted {
                    ([("idempotent-replayed", "true")], axum::Json(reply)).into_response()
                } else {
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        axum::Json(json!({ "error": { "type": "idempotency_error",
                            "message": format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{k}' if you meant to execute a different request.") } })),
                    )
                        .into_response()
                };
                return (reply, delay);
            }
        }
        let (status, reply) = self.answer(method, path, query, body);
        if let (Some(k), "POST", true) = (key, method, status.is_success()) {
            self.state
                .lock()
                .unwrap()
                .idempotent
                .insert(k, (path.to_owned(), sorted, reply.clone()));
        }
        ((status, axum::Json(reply)).into_response(), delay)
    }

    fn answer(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> (axum::http::StatusCode, Value) {
        // Stripe reads GET parameters from the query string and POST ones from the body.
        let params: Vec<(String, String)> = if method == "GET" {
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect()
        } else {
            url::form_urlencoded::parse(body).into_owned().collect()
        };
        let expand: Vec<String> = params
            .iter()
            .filter(|(k, _)| k.starts_with("expand"))
            .map(|(_, v)| v.clone())
            .collect();
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
            ("GET", ["checkout", "sessions", id]) => st.objects.get(*id).cloned(),
            ("GET", ["subscriptions", id]) => st.objects.get(*id).cloned().map(|mut s| {
                // An expanded field is the object itself, as Stripe answers it.
                if expand.iter().any(|e| e == "latest_invoice") {
                    if let Some(inv) = s["latest_invoice"].as_str().and_then(|i| st.objects.get(i))
                    {
                        s["latest_invoice"] = inv.clone();
                    }
                }
                s
            }),
            ("POST", ["billing_portal", "sessions"]) => Some(object(
                "billing_portal.session",
                json!({
                    "id": format!("bps_fake{n}"), "customer": p("customer"), "return_url": p("return_url"),
                    "url": format!("{}/portal/{n}", self.base),
                }),
            )),
            // Cancelling now, as Stripe does: once (a canceled subscription cannot be
            // canceled again: 400 there, not found here).
            ("DELETE", ["subscriptions", id]) => match st.objects.get_mut(*id) {
                Some(s) if s["status"] != "canceled" => {
                    s["status"] = json!("canceled");
                    s["canceled_at"] = json!(now());
                    Some(s.clone())
                }
                _ => None,
            },
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
            Some(v) => (axum::http::StatusCode::OK, v),
            None => (
                axum::http::StatusCode::NOT_FOUND,
                json!({ "error": { "type": "invalid_request_error", "message": format!("No such object: {path}") } }),
            ),
        }
    }
}
