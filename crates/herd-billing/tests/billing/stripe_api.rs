//! Herd's Stripe calls against a local Stripe API serving Stripe's fixture objects: what is
//! sent (recorded) and what is read back (parsed by async-stripe).
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_billing::stripe_api::{CheckoutRequest, StripeApi};
use herd_testkit::stripe::{self, FakeStripe};
use secrecy::SecretString;
use uuid::Uuid;

async fn api() -> (FakeStripe, StripeApi) {
    let fake = FakeStripe::start().await;
    let api = StripeApi::new(&SecretString::from("sk_test_herd".to_owned()), &fake.base).unwrap();
    (fake, api)
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
async fn stripe_errors_are_errors() {
    let (_fake, api) = api().await;
    let err = api.checkout_session("cs_missing").await.unwrap_err();
    assert!(err.to_string().contains("Stripe"), "{err}");
}
