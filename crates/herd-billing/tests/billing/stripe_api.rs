//! Herd's Stripe calls against a local Stripe API serving Stripe's fixture objects: what is
//! sent (recorded) and what is read back (parsed by async-stripe).
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_billing::stripe_api::{CheckoutRequest, StripeApi, StripeApiError};
use herd_testkit::stripe::{self, FakeStripe};
use secrecy::SecretString;
use stripe_shared::{ApiErrorsCode, ApiErrorsType};
use uuid::Uuid;

async fn api() -> (FakeStripe, StripeApi) {
    let fake = FakeStripe::start().await;
    let api = StripeApi::new(&SecretString::from(stripe::KEY.to_owned()), &fake.base).unwrap();
    (fake, api)
}

/// Stripe's error object and HTTP status in `err`; panics for any other kind of error.
fn stripe_error(err: StripeApiError) -> (stripe_shared::ApiErrors, u16) {
    match err {
        StripeApiError::Stripe(::stripe::StripeError::Stripe(e, status)) => (*e, status),
        other => panic!("not an error Stripe answered: {other:?}"),
    }
}

fn checkout_request(customer: &str) -> CheckoutRequest<'_> {
    CheckoutRequest {
        customer,
        price_id: "price_community",
        org: Uuid::now_v7(),
        order: Uuid::now_v7(),
        success_url: "https://herd.example/o/lyon/orders/1?session_id={CHECKOUT_SESSION_ID}",
        cancel_url: "https://herd.example/o/lyon/order",
    }
}

#[tokio::test]
async fn checkout_carries_the_organization_and_the_order() {
    let (fake, api) = api().await;
    let org = Uuid::now_v7();
    let order = Uuid::now_v7();
    let customer = api
        .create_customer(org, "Ville de Lyon", "billing@lyon.example")
        .await
        .unwrap();
    assert!(customer.starts_with("cus_"));
    let created = &fake.requests()[0];
    assert_eq!(created.path, "/v1/customers");
    assert_eq!(
        created.param("metadata[herd_org_id]"),
        Some(org.to_string().as_str())
    );

    let session = api
        .create_checkout(&CheckoutRequest {
            customer: &customer,
            price_id: "price_community",
            org,
            order,
            success_url: "https://herd.example/o/lyon/orders/1?session_id={CHECKOUT_SESSION_ID}",
            cancel_url: "https://herd.example/o/lyon/order",
        })
        .await
        .unwrap();
    assert!(session.url.unwrap().contains(&session.id));
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.path, "/v1/checkout/sessions");
    for (k, v) in [
        ("mode", "subscription"),
        ("customer", customer.as_str()),
        ("client_reference_id", &order.to_string()),
        ("metadata[herd_org_id]", &org.to_string()),
        ("metadata[herd_order_id]", &order.to_string()),
        ("subscription_data[metadata][herd_org_id]", &org.to_string()),
        (
            "subscription_data[metadata][herd_order_id]",
            &order.to_string(),
        ),
        ("line_items[0][price]", "price_community"),
        ("line_items[0][quantity]", "1"),
        (
            "success_url",
            "https://herd.example/o/lyon/orders/1?session_id={CHECKOUT_SESSION_ID}",
        ),
    ] {
        assert_eq!(r.param(k), Some(v), "{k}");
    }

    fake.complete_checkout(&session.id, "sub_paid1");
    let read = api.checkout_session(&session.id).await.unwrap();
    assert_eq!(read.status.as_deref(), Some("complete"));
    assert_eq!(read.subscription.as_deref(), Some("sub_paid1"));
    assert_eq!(read.client_reference_id, Some(order.to_string()));
}

#[tokio::test]
async fn portal_plan_change_and_cancellation() {
    let (fake, api) = api().await;
    let url = api
        .portal("cus_x", "https://herd.example/o/lyon/billing")
        .await
        .unwrap();
    assert!(url.starts_with(&fake.base));
    let r = fake.requests().pop().unwrap();
    assert_eq!(
        r.param("return_url"),
        Some("https://herd.example/o/lyon/billing")
    );

    fake.put(stripe::subscription(
        "sub_change",
        "cus_x",
        "active",
        "price_small",
        stripe::now(),
        serde_json::json!({}),
    ));
    api.change_price("sub_change", "price_large").await.unwrap();
    let r = fake.requests().pop().unwrap();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/subscriptions/sub_change");
    assert_eq!(r.param("items[0][price]"), Some("price_large"));
    assert!(r
        .param("items[0][id]")
        .is_some_and(|id| id.starts_with("si_")));
    assert_eq!(r.param("proration_behavior"), Some("create_prorations"));

    api.cancel_at_period_end("sub_change", true).await.unwrap();
    assert_eq!(
        fake.requests().pop().unwrap().param("cancel_at_period_end"),
        Some("true")
    );
    assert_eq!(
        fake.object("sub_change").unwrap()["cancel_at_period_end"],
        true
    );
    api.cancel_at_period_end("sub_change", false).await.unwrap();
    assert_eq!(
        fake.object("sub_change").unwrap()["cancel_at_period_end"],
        false
    );
}

#[tokio::test]
async fn an_unknown_object_is_stripes_404() {
    let (_fake, api) = api().await;
    let err = api.checkout_session("cs_missing").await.unwrap_err();
    assert!(err.not_found(), "{err:?}");
    assert!(!err.outcome_unknown());
    let (e, status) = stripe_error(err);
    assert_eq!(status, 404);
    assert_eq!(e.type_, ApiErrorsType::InvalidRequestError);
    assert_eq!(e.code, Some(ApiErrorsCode::ResourceMissing));
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_stripes_401_and_nothing_is_made() {
    let fake = FakeStripe::start().await;
    let wrong = StripeApi::new(
        &SecretString::from("sk_test_rolled_last_week".to_owned()),
        &fake.base,
    )
    .unwrap();
    let err = wrong
        .create_customer(Uuid::now_v7(), "Ville de Lyon", "billing@lyon.example")
        .await
        .unwrap_err();
    // Neither "not found" (a cancellation job would take it for done) nor "outcome unknown"
    // (the order page would ask again): refused.
    assert!(!err.not_found() && !err.outcome_unknown(), "{err:?}");
    let (e, status) = stripe_error(err);
    assert_eq!(status, 401);
    assert_eq!(e.type_, ApiErrorsType::InvalidRequestError);
    let message = e.message.unwrap();
    assert!(
        message.starts_with("Invalid API Key provided: sk_test_"),
        "{message}"
    );
    assert!(
        !message.contains("rolled_last"),
        "Stripe shows only the key's end: {message}"
    );
    for call in [
        wrong
            .portal("cus_x", "https://herd.example/o/lyon/billing")
            .await
            .map(|_| ()),
        wrong.cancel_now("sub_x").await,
        wrong.subscription_now("sub_x").await.map(|_| ()),
    ] {
        assert_eq!(stripe_error(call.unwrap_err()).1, 401);
    }
    assert!(fake.refused().iter().all(|r| r.status == 401));
    assert_eq!(fake.refused().len(), 4);
    assert!(fake.object("cus_fake1").is_none(), "nothing was made");
}

/// Every call Herd makes to Stripe, each once: all pass the fake's checks of the key and
/// the parameters (the endpoints' own tests check what they carry).
#[tokio::test]
async fn every_call_herd_makes_passes_stripes_checks() {
    let (fake, api) = api().await;
    let customer = api
        .create_customer(Uuid::now_v7(), "Ville de Lyon", "billing@lyon.example")
        .await
        .unwrap();
    let session = api
        .create_checkout(&checkout_request(&customer))
        .await
        .unwrap();
    api.checkout_session(&session.id).await.unwrap();
    api.portal(&customer, "https://herd.example/o/lyon/billing")
        .await
        .unwrap();
    fake.set_subscription(
        stripe::subscription(
            "sub_all",
            &customer,
            "active",
            "price_community",
            stripe::now(),
            serde_json::json!({}),
        ),
        Some(stripe::invoice("in_all", &customer, "sub_all", "paid")),
    );
    api.change_price("sub_all", "price_institution")
        .await
        .unwrap();
    api.cancel_at_period_end("sub_all", true).await.unwrap();
    let now = api.subscription_now("sub_all").await.unwrap();
    assert_eq!(now.latest_invoice_status.as_deref(), Some("paid"));
    api.cancel_now("sub_all").await.unwrap();

    assert_eq!(fake.refused().len(), 0, "{:#?}", fake.refused());
    let mut calls: Vec<(String, String)> = fake
        .requests()
        .into_iter()
        .map(|r| {
            let path = r
                .path
                .replace(&customer, "{customer}")
                .replace(&session.id, "{session}")
                .replace("sub_all", "{subscription}");
            (r.method, path)
        })
        .collect();
    calls.sort();
    calls.dedup();
    let call = |m: &str, p: &str| (m.to_owned(), p.to_owned());
    assert_eq!(
        calls,
        [
            call("DELETE", "/v1/subscriptions/{subscription}"),
            call("GET", "/v1/checkout/sessions/{session}"),
            call("GET", "/v1/subscriptions/{subscription}"),
            call("POST", "/v1/billing_portal/sessions"),
            call("POST", "/v1/checkout/sessions"),
            call("POST", "/v1/customers"),
            call("POST", "/v1/subscriptions/{subscription}"),
        ]
    );
}
