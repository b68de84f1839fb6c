//! Ordering through the router, with Stripe's API served locally from Stripe's fixtures and
//! webhooks signed as Stripe signs them: order → Checkout Session with the right metadata →
//! webhook → subscription active → order fulfilled; then the billing page's actions.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::stripe::{self, FakeStripe};
use herd_testkit::{Client, TestApp};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const WHSEC: &str = "whsec_checkout_test";

async fn app(pool: PgPool, fake: &FakeStripe) -> TestApp {
    let base = fake.base.clone();
    let app = TestApp::spawn_with(pool.clone(), move |c| {
        c.stripe_secret_key = Some(SecretString::from("sk_test_herd".to_owned()));
        c.stripe_api_base = base;
        c.stripe_webhook_secrets = vec![SecretString::from(WHSEC.to_owned())];
    })
    .await;
    sqlx::query("UPDATE plans SET provider_price_id = 'price_' || code")
        .execute(&pool)
        .await
        .unwrap();
    app
}

async fn webhook(app: &TestApp, event: serde_json::Value) {
    let body = event.to_string();
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", app.base))
        .header(
            "stripe-signature",
            stripe::signature(WHSEC, stripe::now(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn work(app: &TestApp) {
    while herd_billing::worker::run_due(&app.pool, &app.mailer, 50)
        .await
        .unwrap()
        > 0
    {}
}

async fn org_id(pool: &PgPool, slug: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1")
        .bind(slug)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Orders community/mastodon/lyon.social and returns (order id, session id).
async fn order(owner: &Client, fake: &FakeStripe, pool: &PgPool) -> (Uuid, String) {
    owner.get("/o/lyon/order").await.assert_status(200);
    let r = owner
        .post(
            "/o/lyon/order",
            &[
                ("plan", "community"),
                ("app", "mastodon"),
                ("domain", "Lyon.Social"),
            ],
        )
        .await;
    r.assert_redirect(&format!("{}/pay/", fake.base));
    let (id, session): (Uuid, String) =
        sqlx::query_as("SELECT id, checkout_session_id FROM orders WHERE domain = 'lyon.social'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert!(r.location.unwrap().ends_with(&session));
    (id, session)
}

/// Stripe tells Herd the customer paid: the session completed and the subscription is
/// active, with the metadata Herd put on the session.
async fn paid(app: &TestApp, fake: &FakeStripe, pool: &PgPool, order: Uuid, session: &str) {
    let org = org_id(pool, "lyon").await.to_string();
    let customer = fake.object(session).unwrap()["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.complete_checkout(session, "sub_LyonPaid");
    let sub = stripe::subscription(
        "sub_LyonPaid",
        &customer,
        "active",
        "price_community",
        stripe::now() + 30 * 86_400,
        json!({ "herd_org_id": org, "herd_order_id": order.to_string() }),
    );
    fake.put(sub.clone());
    let now = stripe::now();
    webhook(
        app,
        stripe::event(
            "evt_lyon_checkout",
            "checkout.session.completed",
            now,
            stripe::checkout_session(session, &customer, "sub_LyonPaid", &order.to_string(), &org),
        ),
    )
    .await;
    webhook(
        app,
        stripe::event("evt_lyon_sub", "customer.subscription.created", now, sub),
    )
    .await;
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn order_to_checkout_to_webhook_to_fulfilled_order(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let (order, session) = order(&owner, &fake, &pool).await;
    let org = org_id(&pool, "lyon").await;

    // The Checkout Session carries the organization and the order.
    let requests = fake.requests();
    let customer = requests.iter().find(|r| r.path == "/v1/customers").unwrap();
    assert_eq!(customer.param("email"), Some("lea@lyon.example"));
    let checkout = requests
        .iter()
        .find(|r| r.path == "/v1/checkout/sessions")
        .unwrap();
    assert_eq!(checkout.param("mode"), Some("subscription"));
    assert_eq!(
        checkout.param("client_reference_id"),
        Some(order.to_string().as_str())
    );
    assert_eq!(
        checkout.param("metadata[herd_org_id]"),
        Some(org.to_string().as_str())
    );
    assert_eq!(
        checkout.param("subscription_data[metadata][herd_order_id]"),
        Some(order.to_string().as_str())
    );
    assert_eq!(
        checkout.param("line_items[0][price]"),
        Some("price_community")
    );
    let success = checkout.param("success_url").unwrap();
    assert!(
        success.ends_with(&format!(
            "/o/lyon/orders/{order}?session_id={{CHECKOUT_SESSION_ID}}"
        )),
        "{success}"
    );
    owner
        .get(&format!("/o/lyon/orders/{order}"))
        .await
        .assert_contains("data-state=\"pending\"");

    paid(&app, &fake, &pool, order, &session).await;
    work(&app).await;
    let (status, sub_org): (String, Option<Uuid>) = sqlx::query_as(
        "SELECT status, org_id FROM subscriptions WHERE stripe_subscription_id = 'sub_LyonPaid'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), sub_org), ("active", Some(org)));
    let state: String = sqlx::query_scalar("SELECT state FROM orders WHERE id = $1")
        .bind(order)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "fulfilled");

    // The customer comes back from Checkout.
    owner
        .get(&format!("/o/lyon/orders/{order}?session_id={session}"))
        .await
        .assert_status(200)
        .assert_contains("data-state=\"fulfilled\"");
    let billing = owner.get("/o/lyon/billing").await;
    billing
        .assert_status(200)
        .assert_contains("Active")
        .assert_contains("Next invoice on");
    // Only one customer was created for the organization.
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.path == "/v1/customers")
            .count(),
        1
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_success_page_fulfils_first_and_the_webhook_changes_nothing(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let (order, session) = order(&owner, &fake, &pool).await;
    fake.complete_checkout(&session, "sub_LyonPaid");
    owner
        .get(&format!("/o/lyon/orders/{order}?session_id={session}"))
        .await
        .assert_contains("data-state=\"fulfilled\"");
    let first: time::OffsetDateTime =
        sqlx::query_scalar("SELECT fulfilled_at FROM orders WHERE id = $1")
            .bind(order)
            .fetch_one(&pool)
            .await
            .unwrap();
    paid(&app, &fake, &pool, order, &session).await;
    work(&app).await;
    let again: time::OffsetDateTime =
        sqlx::query_scalar("SELECT fulfilled_at FROM orders WHERE id = $1")
            .bind(order)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(first, again, "fulfilled once");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn bad_orders_rerender_and_change_nothing(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    owner.get("/o/lyon/order").await;
    let r = owner
        .post(
            "/o/lyon/order",
            &[
                ("plan", "platinum"),
                ("app", "friendica"),
                ("domain", "not a domain"),
            ],
        )
        .await;
    r.assert_status(422)
        .assert_contains("Choose one of the plans.")
        .assert_contains("Choose Mastodon or GoToSocial.")
        .assert_contains("Use a full domain name");
    assert!(
        r.body.contains("value=\"not a domain\""),
        "the input is kept"
    );
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 0);
    assert!(fake.requests().is_empty(), "Stripe was not called");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn without_a_stripe_key_the_portal_says_card_billing_is_off(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    owner
        .get("/o/lyon/order")
        .await
        .assert_status(200)
        .assert_contains("Card payment is not available");
    let r = owner
        .post(
            "/o/lyon/order",
            &[
                ("plan", "community"),
                ("app", "mastodon"),
                ("domain", "lyon.social"),
            ],
        )
        .await;
    r.assert_status(422).assert_contains("invoice");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 0);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn members_cannot_order_and_other_organizations_see_nothing(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let (order, _) = order(&owner, &fake, &pool).await;
    // A plain member of Lyon.
    owner.get("/o/lyon/members").await;
    owner
        .post(
            "/o/lyon/invitations",
            &[("email", "max@lyon.example"), ("role", "member")],
        )
        .await;
    let invitation = app.link_in_last_mail_to("max@lyon.example");
    let member = app.signed_up("Max", "max@lyon.example", None).await;
    member.get(&invitation).await.assert_status(200);
    member.post(&format!("{invitation}/accept"), &[]).await;
    member.get("/o/lyon").await.assert_status(200);
    member.get("/o/lyon/order").await.assert_status(403);
    member.get("/o/lyon/billing").await.assert_status(403);
    // Another organization's owner.
    let other = app
        .signed_up("Olga", "olga@paris.example", Some("Paris"))
        .await;
    other
        .get(&format!("/o/paris/orders/{order}"))
        .await
        .assert_status(404);
    other
        .get(&format!("/o/lyon/orders/{order}"))
        .await
        .assert_status(404);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn billing_page_cancels_resumes_changes_plan_and_opens_the_portal(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let (order, session) = order(&owner, &fake, &pool).await;
    paid(&app, &fake, &pool, order, &session).await;
    work(&app).await;

    let page = owner.get("/o/lyon/billing").await;
    page.assert_status(200);
    let confirm = owner
        .get("/o/lyon/billing/subscriptions/sub_LyonPaid/cancel")
        .await;
    confirm
        .assert_status(200)
        .assert_contains("Cancel at the end of the period");
    owner
        .post("/o/lyon/billing/subscriptions/sub_LyonPaid/cancel", &[])
        .await
        .assert_redirect("/o/lyon/billing");
    assert_eq!(
        fake.object("sub_LyonPaid").unwrap()["cancel_at_period_end"],
        true
    );
    owner.get("/o/lyon/billing").await;
    owner
        .post("/o/lyon/billing/subscriptions/sub_LyonPaid/resume", &[])
        .await
        .assert_redirect("/o/lyon/billing");
    assert_eq!(
        fake.object("sub_LyonPaid").unwrap()["cancel_at_period_end"],
        false
    );

    owner.get("/o/lyon/billing").await;
    owner
        .post(
            "/o/lyon/billing/subscriptions/sub_LyonPaid/plan",
            &[("plan", "institution")],
        )
        .await
        .assert_redirect("/o/lyon/billing");
    let change = fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.param("items[0][price]").is_some())
        .unwrap();
    assert_eq!(change.param("items[0][price]"), Some("price_institution"));
    assert_eq!(
        change.param("proration_behavior"),
        Some("create_prorations")
    );
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'billing.%' ORDER BY at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "billing.order.created",
            "billing.subscription.cancel_requested",
            "billing.subscription.cancel_undone",
            "billing.subscription.plan_changed"
        ]
    );

    owner.get("/o/lyon/billing").await;
    owner
        .post("/o/lyon/billing/portal", &[])
        .await
        .assert_redirect(&format!("{}/portal/", fake.base));

    // Another organization cannot act on this subscription.
    let other = app
        .signed_up("Olga", "olga@paris.example", Some("Paris"))
        .await;
    other.get("/o/paris/billing").await;
    other
        .post("/o/paris/billing/subscriptions/sub_LyonPaid/cancel", &[])
        .await
        .assert_status(404);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_failed_payment_shows_a_banner_with_the_next_step(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let (order, session) = order(&owner, &fake, &pool).await;
    paid(&app, &fake, &pool, order, &session).await;
    let customer = fake.object(&session).unwrap()["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    let later = stripe::now() + 5;
    webhook(
        &app,
        stripe::event(
            "evt_lyon_failed",
            "invoice.payment_failed",
            later,
            stripe::invoice("in_lyon2", &customer, "sub_LyonPaid", "open"),
        ),
    )
    .await;
    let mut past_due = fake.object("sub_LyonPaid").unwrap();
    past_due["status"] = json!("past_due");
    webhook(
        &app,
        stripe::event(
            "evt_lyon_pastdue",
            "customer.subscription.updated",
            later,
            past_due,
        ),
    )
    .await;
    work(&app).await;
    let page = owner.get("/o/lyon/billing").await;
    page.assert_contains("Payment overdue")
        .assert_contains("The last payment failed")
        .assert_contains("it will be suspended on")
        .assert_contains("Card invoices")
        .assert_contains("https://invoice.stripe.com/i/in_lyon2")
        .assert_contains("49.00 EUR");
}
