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
    /// The status the fake answered with (401 for a missing or wrong key, 400 for a
    /// missing or unknown parameter, 404 for an unknown object).
    pub status: u16,
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
    /// The secret key it accepts.
    key: String,
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

/// The secret API key a [`FakeStripe`] accepts (from [`FakeStripe::start`]).
pub const KEY: &str = "sk_test_herd";

/// A client of Stripe's API pointed at `fake`, with the key it accepts.
pub fn api(fake: &FakeStripe) -> herd_billing::stripe_api::StripeApi {
    herd_billing::stripe_api::StripeApi::new(
        &secrecy::SecretString::from(KEY.to_owned()),
        &fake.base,
    )
    .expect("a Stripe client")
}

/// Stripe's API on a local port, answering with fixture objects and recording every
/// request: customers, Checkout Sessions, Customer Portal sessions and subscriptions. As
/// strict as Stripe where Herd could go wrong: a request without the account's secret key
/// (`Authorization: Bearer sk_…`) gets 401, one with a parameter the endpoint does not know
/// or without one it requires gets 400, each with Stripe's error object (the parameter
/// lists follow Stripe's API reference for the endpoints Herd calls).
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
    /// Starts it, accepting [`KEY`].
    pub async fn start() -> FakeStripe {
        Self::start_with_key(KEY).await
    }

    /// Starts it, accepting the secret key `key` only.
    pub async fn start_with_key(key: &str) -> FakeStripe {
        use axum::routing::any;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeStripe {
            base: base.clone(),
            state: std::sync::Arc::new(std::sync::Mutex::new(FakeState {
                key: key.to_owned(),
                ..FakeState::default()
            })),
        };
        let f = fake.clone();
        let app = axum::Router::new().fallback(any(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let f = f.clone();
                async move {
                    if let Some(refused) =
                        f.refuse(method.as_str(), uri.path(), uri.query(), &headers, &body)
                    {
                        return refused;
                    }
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

    /// The requests answered with an error (a wrong key, a bad parameter, an unknown
    /// object).
    pub fn refused(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.status >= 400)
            .collect()
    }

    /// Answers as Stripe does before looking at the request's objects: 401 without the
    /// account's secret key, 400 for a parameter the endpoint does not take or a required
    /// one missing. `None` when the request passes.
    fn refuse(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Option<axum::response::Response> {
        use axum::response::IntoResponse;
        let params: Vec<(String, String)> = if method == "GET" {
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect()
        } else {
            url::form_urlencoded::parse(body).into_owned().collect()
        };
        let key = self.state.lock().unwrap().key.clone();
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let (status, error) = match given {
            None => (
                axum::http::StatusCode::UNAUTHORIZED,
                json!({
                    "type": "invalid_request_error",
                    "message": "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
                }),
            ),
            Some(k) if k != key => (
                axum::http::StatusCode::UNAUTHORIZED,
                json!({
                    "type": "invalid_request_error",
                    "message": format!("Invalid API Key provided: {}", masked(k)),
                }),
            ),
            Some(_) => match schema::check(method, path, &params)? {
                schema::Refusal::Missing(p) => (
                    axum::http::StatusCode::BAD_REQUEST,
                    json!({
                        "type": "invalid_request_error", "code": "parameter_missing",
                        "doc_url": "https://stripe.com/docs/error-codes/parameter-missing",
                        "message": format!("Missing required param: {p}."), "param": p,
                    }),
                ),
                schema::Refusal::Unknown(p) => (
                    axum::http::StatusCode::BAD_REQUEST,
                    json!({
                        "type": "invalid_request_error", "code": "parameter_unknown",
                        "doc_url": "https://stripe.com/docs/error-codes/parameter-unknown",
                        "message": format!("Received unknown parameter: {p}"), "param": p,
                    }),
                ),
            },
        };
        self.state.lock().unwrap().requests.push(Recorded {
            method: method.to_owned(),
            path: path.to_owned(),
            params,
            status: status.as_u16(),
        });
        Some((status, axum::Json(json!({ "error": error }))).into_response())
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
                let same = p == path && form == sorted;
                st.requests.push(Recorded {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    params: params.clone(),
                    status: if same { 200 } else { 400 },
                });
                let reply = if same {
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
        let (status, reply) = match reply {
            Some(v) => (axum::http::StatusCode::OK, v),
            None => (
                axum::http::StatusCode::NOT_FOUND,
                json!({ "error": {
                    "type": "invalid_request_error", "code": "resource_missing",
                    "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
                    "message": format!("No such object: '{}'", parts.last().copied().unwrap_or_default()),
                    "param": "id",
                } }),
            ),
        };
        st.requests.push(Recorded {
            method: method.to_owned(),
            path: path.to_owned(),
            params,
            status: status.as_u16(),
        });
        (status, reply)
    }
}

/// A key as Stripe repeats it in an error: its prefix and last four characters.
fn masked(key: &str) -> String {
    let prefix = ["sk_test_", "sk_live_", "rk_test_", "rk_live_"]
        .into_iter()
        .find(|p| key.starts_with(p))
        .unwrap_or_default();
    let chars: Vec<char> = key[prefix.len()..].chars().collect();
    let shown = chars.len().saturating_sub(4);
    let last: String = chars[shown..].iter().collect();
    format!("{prefix}{}{last}", "*".repeat(shown))
}

/// The parameters of the endpoints Herd calls, as Stripe's API reference lists them (the
/// same lists async-stripe is generated from), and those Stripe requires: an unknown one
/// gets `parameter_unknown`, a missing one `parameter_missing`, as from Stripe.
mod schema {
    /// What a parameter holds, as form encoding spells it.
    #[derive(Clone, Copy)]
    pub enum Shape {
        /// A string, number or boolean: `name=value`.
        Value,
        /// Free keys (metadata): `name[key]=value`.
        Map,
        /// A list, each element of the inner shape: `name[0]…`.
        List(&'static Shape),
        /// Known keys only: `name[key]…`.
        Object(&'static [(&'static str, Shape)]),
        /// A hash Herd never sends, whose keys the fake does not list: anything below it.
        Any,
    }
    use Shape::{Any, List, Map, Object, Value};

    pub enum Refusal {
        Missing(String),
        Unknown(String),
    }

    const EXPAND: (&str, Shape) = ("expand", List(&Value));

    const CUSTOMER_CREATE: &[(&str, Shape)] = &[
        ("address", Any),
        ("balance", Value),
        ("business_name", Value),
        ("cash_balance", Any),
        ("description", Value),
        ("email", Value),
        EXPAND,
        ("individual_name", Value),
        ("invoice_prefix", Value),
        ("invoice_settings", Any),
        ("metadata", Map),
        ("name", Value),
        ("next_invoice_sequence", Value),
        ("payment_method", Value),
        ("phone", Value),
        ("preferred_locales", List(&Value)),
        ("shipping", Any),
        ("source", Value),
        ("tax", Any),
        ("tax_exempt", Value),
        ("tax_id_data", List(&Any)),
        ("test_clock", Value),
        ("validate", Value),
    ];

    const LINE_ITEM: &[(&str, Shape)] = &[
        ("adjustable_quantity", Any),
        ("dynamic_tax_rates", List(&Value)),
        ("metadata", Map),
        ("price", Value),
        ("price_data", Any),
        ("quantity", Value),
        ("tax_rates", List(&Value)),
    ];

    const CHECKOUT_SUBSCRIPTION_DATA: &[(&str, Shape)] = &[
        ("application_fee_percent", Value),
        ("billing_cycle_anchor", Value),
        ("billing_mode", Any),
        ("default_tax_rates", List(&Value)),
        ("description", Value),
        ("invoice_settings", Any),
        ("metadata", Map),
        ("on_behalf_of", Value),
        ("proration_behavior", Value),
        ("transfer_data", Any),
        ("trial_end", Value),
        ("trial_period_days", Value),
        ("trial_settings", Any),
    ];

    const CHECKOUT_CREATE: &[(&str, Shape)] = &[
        ("adaptive_pricing", Any),
        ("after_expiration", Any),
        ("allow_promotion_codes", Value),
        ("automatic_tax", Any),
        ("billing_address_collection", Value),
        ("branding_settings", Any),
        ("cancel_url", Value),
        ("client_reference_id", Value),
        ("consent_collection", Any),
        ("currency", Value),
        ("custom_fields", List(&Any)),
        ("custom_text", Any),
        ("customer", Value),
        ("customer_account", Value),
        ("customer_creation", Value),
        ("customer_email", Value),
        ("customer_update", Any),
        ("discounts", List(&Any)),
        ("excluded_payment_method_types", List(&Value)),
        EXPAND,
        ("expires_at", Value),
        ("invoice_creation", Any),
        ("line_items", List(&Object(LINE_ITEM))),
        ("locale", Value),
        ("metadata", Map),
        ("mode", Value),
        ("name_collection", Any),
        ("optional_items", List(&Any)),
        ("origin_context", Value),
        ("payment_intent_data", Any),
        ("payment_method_collection", Value),
        ("payment_method_configuration", Value),
        ("payment_method_data", Any),
        ("payment_method_options", Any),
        ("payment_method_types", List(&Value)),
        ("permissions", Any),
        ("phone_number_collection", Any),
        ("redirect_on_completion", Value),
        ("return_url", Value),
        ("saved_payment_method_options", Any),
        ("setup_intent_data", Any),
        ("shipping_address_collection", Any),
        ("shipping_options", List(&Any)),
        ("submit_type", Value),
        ("subscription_data", Object(CHECKOUT_SUBSCRIPTION_DATA)),
        ("success_url", Value),
        ("tax_id_collection", Any),
        ("ui_mode", Value),
        ("wallet_options", Any),
    ];

    const PORTAL_CREATE: &[(&str, Shape)] = &[
        ("configuration", Value),
        ("customer", Value),
        ("customer_account", Value),
        EXPAND,
        ("flow_data", Any),
        ("locale", Value),
        ("on_behalf_of", Value),
        ("return_url", Value),
    ];

    const SUBSCRIPTION_ITEM: &[(&str, Shape)] = &[
        ("billing_thresholds", Any),
        ("clear_usage", Value),
        ("current_trial", Any),
        ("deleted", Value),
        ("discounts", List(&Any)),
        ("id", Value),
        ("metadata", Map),
        ("plan", Value),
        ("price", Value),
        ("price_data", Any),
        ("quantity", Value),
        ("tax_rates", List(&Value)),
    ];

    const SUBSCRIPTION_UPDATE: &[(&str, Shape)] = &[
        ("add_invoice_items", List(&Any)),
        ("application_fee_percent", Value),
        ("automatic_tax", Any),
        ("billing_cycle_anchor", Value),
        ("billing_schedules", List(&Any)),
        ("billing_thresholds", Any),
        ("cancel_at", Value),
        ("cancel_at_period_end", Value),
        ("cancellation_details", Any),
        ("collection_method", Value),
        ("days_until_due", Value),
        ("default_payment_method", Value),
        ("default_source", Value),
        ("default_tax_rates", List(&Value)),
        ("description", Value),
        ("discounts", List(&Any)),
        EXPAND,
        ("invoice_settings", Any),
        ("items", List(&Object(SUBSCRIPTION_ITEM))),
        ("metadata", Map),
        ("off_session", Value),
        ("on_behalf_of", Value),
        ("pause_collection", Any),
        ("payment_behavior", Value),
        ("payment_settings", Any),
        ("pending_invoice_item_interval", Any),
        ("proration_behavior", Value),
        ("proration_date", Value),
        ("transfer_data", Any),
        ("trial_end", Value),
        ("trial_from_plan", Value),
        ("trial_settings", Any),
    ];

    const SUBSCRIPTION_CANCEL: &[(&str, Shape)] = &[
        ("cancellation_details", Any),
        EXPAND,
        ("invoice_now", Value),
        ("prorate", Value),
    ];

    const RETRIEVE: &[(&str, Shape)] = &[EXPAND];

    /// `name[a][b]` as `("name", ["a", "b"])`.
    fn split(key: &str) -> (&str, Vec<&str>) {
        match key.split_once('[') {
            None => (key, Vec::new()),
            Some((top, rest)) => (
                top,
                rest.trim_end_matches(']').split("][").collect::<Vec<_>>(),
            ),
        }
    }

    /// Whether `path` (the key's brackets, from `at` on) fits `shape`; the first bracket
    /// that does not, if any.
    fn fits(shape: Shape, path: &[&str], at: usize) -> Result<(), usize> {
        match (shape, &path[at..]) {
            // An empty value unsets a hash or a list, as in Stripe's form encoding.
            (_, []) | (Any, _) | (Map, [_]) => Ok(()),
            (List(inner), [i, ..]) if i.is_empty() || i.parse::<usize>().is_ok() => {
                fits(*inner, path, at + 1)
            }
            (Object(fields), [k, ..]) => match fields.iter().find(|(name, _)| name == k) {
                Some((_, inner)) => fits(*inner, path, at + 1),
                None => Err(at),
            },
            _ => Err(at),
        }
    }

    fn has(params: &[(String, String)], key: &str) -> bool {
        params.iter().any(|(k, v)| k == key && !v.is_empty())
    }

    /// What Stripe requires of a request (the API reference's "required", and "required
    /// conditionally" where Herd's requests meet the condition).
    fn missing(endpoint: &str, params: &[(String, String)]) -> Option<String> {
        match endpoint {
            "checkout" => {
                if !has(params, "mode") {
                    return Some("mode".into());
                }
                let mode = params
                    .iter()
                    .find(|(k, _)| k == "mode")
                    .map(|(_, v)| v.as_str());
                // Payment and subscription mode sell line items, each a price (or its
                // data) in a quantity.
                if mode != Some("setup") {
                    if !params.iter().any(|(k, _)| k.starts_with("line_items[")) {
                        return Some("line_items".into());
                    }
                    for i in 0.. {
                        let item = format!("line_items[{i}]");
                        if !params.iter().any(|(k, _)| k.starts_with(&item)) {
                            break;
                        }
                        if !has(params, &format!("{item}[price]"))
                            && !params
                                .iter()
                                .any(|(k, _)| k.starts_with(&format!("{item}[price_data]")))
                        {
                            return Some(format!("{item}[price]"));
                        }
                        if !has(params, &format!("{item}[quantity]")) {
                            return Some(format!("{item}[quantity]"));
                        }
                    }
                }
                // The hosted page (the default) sends the customer back there.
                let hosted = params
                    .iter()
                    .find(|(k, _)| k == "ui_mode")
                    .is_none_or(|(_, v)| v == "hosted");
                (hosted && !has(params, "success_url")).then(|| "success_url".into())
            }
            "portal" => (!has(params, "customer") && !has(params, "customer_account"))
                .then(|| "customer".into()),
            _ => None,
        }
    }

    /// Checks a request to one of the endpoints Herd calls; `None` when it passes or is
    /// not one of them (the fake answers 404 for those).
    pub fn check(method: &str, path: &str, params: &[(String, String)]) -> Option<Refusal> {
        let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        let (endpoint, known) = match (method, parts.as_slice()) {
            ("POST", ["customers"]) => ("customer", CUSTOMER_CREATE),
            ("POST", ["checkout", "sessions"]) => ("checkout", CHECKOUT_CREATE),
            ("GET", ["checkout", "sessions", _]) => ("retrieve", RETRIEVE),
            ("POST", ["billing_portal", "sessions"]) => ("portal", PORTAL_CREATE),
            ("GET", ["subscriptions", _]) => ("retrieve", RETRIEVE),
            ("POST", ["subscriptions", _]) => ("update", SUBSCRIPTION_UPDATE),
            ("DELETE", ["subscriptions", _]) => ("cancel", SUBSCRIPTION_CANCEL),
            _ => return None,
        };
        for (key, _) in params {
            let (top, path) = split(key);
            let Some((_, shape)) = known.iter().find(|(name, _)| *name == top) else {
                return Some(Refusal::Unknown(top.to_owned()));
            };
            if let Err(at) = fits(*shape, &path, 0) {
                // Named as far as its first bracket the endpoint does not take.
                let named = path[..=at]
                    .iter()
                    .fold(top.to_owned(), |n, p| format!("{n}[{p}]"));
                return Some(Refusal::Unknown(named));
            }
        }
        missing(endpoint, params).map(Refusal::Missing)
    }
}

#[cfg(test)]
mod tests {
    use super::{FakeStripe, KEY};

    /// The fake is as strict as Stripe: without a key, with an unknown parameter or without a
    /// required one, it answers as Stripe does (so Herd's calls passing it means something).
    #[tokio::test]
    async fn the_fake_refuses_what_stripe_refuses() {
        let fake = FakeStripe::start().await;
        let post = |path: &str, key: Option<&str>, form: &[(&str, &str)]| {
            let mut req = reqwest::Client::new()
                .post(format!("{}{path}", fake.base))
                .form(form);
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                (
                    status,
                    resp.json::<serde_json::Value>().await.unwrap()["error"].clone(),
                )
            }
        };
        let (status, e) = post("/v1/customers", None, &[("name", "Lyon")]).await;
        assert_eq!(status, 401);
        assert!(e["message"]
            .as_str()
            .unwrap()
            .starts_with("You did not provide an API key"));

        let key = Some(KEY);
        let (status, e) = post("/v1/customers", key, &[("nmae", "Lyon")]).await;
        assert_eq!(
            (status, &e["code"], &e["param"]),
            (400, &"parameter_unknown".into(), &"nmae".into())
        );
        assert_eq!(e["message"], "Received unknown parameter: nmae");

        let (status, e) = post(
            "/v1/billing_portal/sessions",
            key,
            &[("return_url", "https://x.example")],
        )
        .await;
        assert_eq!(
            (status, &e["code"], &e["param"]),
            (400, &"parameter_missing".into(), &"customer".into())
        );
        assert_eq!(e["message"], "Missing required param: customer.");

        let checkout = [
            ("mode", "subscription"),
            ("customer", "cus_x"),
            ("line_items[0][price]", "price_x"),
            ("success_url", "https://x.example/ok"),
        ];
        let (status, e) = post("/v1/checkout/sessions", key, &checkout).await;
        assert_eq!(
            (status, &e["param"]),
            (400, &"line_items[0][quantity]".into())
        );
        let mut with_quantity = checkout.to_vec();
        with_quantity.push(("line_items[0][quantity]", "1"));
        with_quantity.push(("subscription_data[metdata][herd_org_id]", "x"));
        let (status, e) = post("/v1/checkout/sessions", key, &with_quantity).await;
        assert_eq!(
            (status, &e["code"], &e["param"]),
            (
                400,
                &"parameter_unknown".into(),
                &"subscription_data[metdata]".into()
            )
        );
        with_quantity.pop();
        let (status, e) = post("/v1/checkout/sessions", key, &with_quantity[1..]).await;
        assert_eq!((status, &e["param"]), (400, &"mode".into()));
        assert_eq!(
            post("/v1/checkout/sessions", key, &with_quantity).await.0,
            200
        );

        let (status, e) = post(
            "/v1/subscriptions/sub_x",
            key,
            &[("items[0][prise]", "price_x")],
        )
        .await;
        assert_eq!((status, &e["param"]), (400, &"items[0][prise]".into()));
    }
}
