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
        c.stripe_secret_key = Some(SecretString::from(stripe::KEY.to_owned()));
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
    app.run_jobs().await;
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
    // Before paying, the order's page leads back to its payment page.
    owner
        .get(&format!("/o/lyon/orders/{order}"))
        .await
        .assert_contains("data-state=\"awaiting-payment\"")
        .assert_contains(&format!("{}/pay/{session}", fake.base));

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
    // Every call passed Stripe's checks (key, parameters).
    assert_eq!(fake.refused().len(), 0, "{:#?}", fake.refused());
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
    let invitation = app.link_in_last_mail_to("max@lyon.example").await;
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
    // Stripe confirms the new price: the server moves to the plan (resources follow).
    let customer = fake.object(&session).unwrap()["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    let org = org_id(&pool, "lyon").await.to_string();
    webhook(
        &app,
        stripe::event(
            "evt_lyon_plan",
            "customer.subscription.updated",
            stripe::now() + 5,
            stripe::subscription(
                "sub_LyonPaid",
                &customer,
                "active",
                "price_institution",
                stripe::now() + 30 * 86_400,
                json!({ "herd_org_id": org, "herd_order_id": order.to_string() }),
            ),
        ),
    )
    .await;
    work(&app).await;
    let (plan, generation): (String, i64) =
        sqlx::query_as("SELECT plan_code, spec_generation FROM instances WHERE order_id = $1")
            .bind(order)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((plan.as_str(), generation), ("institution", 2));
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
    // Every call passed Stripe's checks (key, parameters).
    assert_eq!(fake.refused().len(), 0, "{:#?}", fake.refused());
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_wrong_stripe_key_shows_that_the_payment_page_could_not_be_opened(pool: PgPool) {
    // The key of another account (or a rolled one): Stripe answers 401.
    let fake = FakeStripe::start_with_key("sk_test_the_accounts_own_key").await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    owner.get("/o/lyon/order").await.assert_status(200);
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
    r.assert_status(502)
        .assert_contains("The payment page could not be opened (Stripe refused)")
        .assert_contains("Nothing was charged");
    assert!(!r.body.contains(stripe::KEY), "the key is never shown");
    // Stripe refused the first call, for the key: nothing was made there.
    let refused = fake.refused();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(
        (refused[0].path.as_str(), refused[0].status),
        ("/v1/customers", 401)
    );
    assert_eq!(fake.requests().len(), 1);
    let (state, session): (String, Option<String>) =
        sqlx::query_as("SELECT state, checkout_session_id FROM orders")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), session), ("pending", None));
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

async fn server_of(pool: &PgPool, order: Uuid) -> (Uuid, String) {
    sqlx::query_as("SELECT id, slug FROM instances WHERE order_id = $1")
        .bind(order)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_paid_order_waits_for_a_cluster_then_runs_and_shows_the_owner_password_once(
    pool: PgPool,
) {
    use herd_k8s::crd::Instance;
    use herd_testkit::fake_cluster;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, Patch, PatchParams, PostParams};

    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let (order, session) = order(&owner, &fake, &pool).await;
    paid(&app, &fake, &pool, order, &session).await;
    work(&app).await;

    // No cluster is registered: the order is complete and the server waits, visibly.
    let (id, slug) = server_of(&pool, order).await;
    assert_eq!(slug, "lyon-social");
    owner
        .get(&format!("/o/lyon/orders/{order}"))
        .await
        .assert_contains(&format!("/o/lyon/servers/{id}"));
    owner
        .get("/o/lyon/servers")
        .await
        .assert_status(200)
        .assert_contains("lyon.social")
        .assert_contains("queued: no cluster connected");
    let page = owner.get(&format!("/o/lyon/servers/{id}")).await;
    page.assert_status(200)
        .assert_contains("data-phase=\"queued\"")
        .assert_contains("src=\"/assets/server.js\"");
    // The live stream starts with the state as it is.
    let (status, kind, first) = owner
        .first_event(&format!("/o/lyon/servers/{id}/events"))
        .await;
    assert_eq!((status, kind.as_str()), (200, "text/event-stream"));
    assert!(first.starts_with("event: status\n"), "{first:?}");
    assert!(first.contains("\"phase\":\"queued\""), "{first:?}");
    assert!(first.contains("queued: no cluster connected"), "{first:?}");
    let script = app.client().get("/assets/server.js").await;
    script.assert_status(200).assert_contains("EventSource");
    assert!(script.content_type.starts_with("text/javascript"));

    // An operator connects a cluster; the worker checks it and places the server there.
    let cluster = fake_cluster::start_with(|b| b.with_resource::<Instance>()).await;
    app.clusters.plug("eu-1", cluster.client.clone());
    let op = app.operator("ops@provider.example").await;
    op.get("/operator/clusters")
        .await
        .assert_contains("1 server waits for a cluster");
    op.get("/operator/clusters/new").await.assert_status(200);
    op.post(
        "/operator/clusters",
        &[
            ("name", "eu-1"),
            ("region", "eu-west"),
            ("capacity", "10"),
            ("operator_namespace", "herd-system"),
            ("kubeconfig", ""),
        ],
    )
    .await
    .assert_redirect("/operator/clusters");
    work(&app).await;
    let clusters = op.get("/operator/clusters").await;
    clusters
        .assert_contains("data-health=\"healthy\"")
        .assert_contains("v1.34.1")
        .assert_contains("1 / 10");

    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), "herd-system");
    let applied = api.get(&slug).await.unwrap();
    assert_eq!(applied.spec.local_domain, "lyon.social");
    assert_eq!(applied.spec.plan, "community");
    assert_eq!(applied.spec.owner.email, "lea@lyon.example");
    assert_eq!(applied.spec.owner.username, "lea");
    assert!(!applied.spec.suspended);
    owner
        .get(&format!("/o/lyon/servers/{id}"))
        .await
        .assert_contains("data-phase=\"provisioning\"")
        .assert_contains("placed on eu-1");

    // The operator on the cluster reports the server running; the owner account exists.
    api.patch_status(
        &slug,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "phase": "Running",
            "url": "https://lyon.social",
            "runningVersion": "v4.7.6",
            "conditions": [
                { "type": "Database", "status": "True", "reason": "Ready", "message": "PostgreSQL accepts connections" },
                { "type": "Migrations", "status": "True", "reason": "Done", "message": "no migration pending" },
                { "type": "Web", "status": "True", "reason": "Ready", "message": "web is ready" },
                { "type": "Ingress", "status": "True", "reason": "Ready", "message": "the ingress has an address" }
            ]
        }})),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "herd-lyon-social");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "owner-password", "namespace": "herd-lyon-social" },
        "stringData": { "password": "5f1c0ffee5f1c0ffee5f1c0ffee5f1c0", "username": "lea" }
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    herd_orchestrator::tick(&pool).await.unwrap();
    work(&app).await;
    // Collected into the database (sealed), and gone from the cluster.
    assert!(secrets.get_opt("owner-password").await.unwrap().is_none());
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT owner_password_sealed FROM instances WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!String::from_utf8_lossy(&sealed.unwrap()).contains("c0ffee"));

    let page = owner.get(&format!("/o/lyon/servers/{id}")).await;
    page.assert_contains("data-phase=\"running\"")
        .assert_contains("href=\"https://lyon.social\"")
        .assert_contains("data-state=\"done\"");
    assert!(
        !page.body.contains("/assets/server.js"),
        "a running server's page is still"
    );
    let (_, _, now) = owner
        .first_event(&format!("/o/lyon/servers/{id}/events"))
        .await;
    assert!(
        now.contains("\"phase\":\"running\"") && now.contains("https://lyon.social"),
        "{now:?}"
    );

    // Suspending asks for confirmation, is idempotent, audited, and reaches the cluster.
    let confirm = owner.get(&format!("/o/lyon/servers/{id}/suspend")).await;
    confirm
        .assert_status(200)
        .assert_contains("Suspend lyon.social?");
    owner
        .post(&format!("/o/lyon/servers/{id}/suspend"), &[])
        .await
        .assert_redirect(&format!("/o/lyon/servers/{id}"));
    owner.get(&format!("/o/lyon/servers/{id}/suspend")).await;
    owner
        .post(&format!("/o/lyon/servers/{id}/suspend"), &[])
        .await
        .assert_redirect(&format!("/o/lyon/servers/{id}"));
    work(&app).await;
    assert!(api.get(&slug).await.unwrap().spec.suspended);
    let suspended: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'instance.suspended'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(suspended, 1, "the second click changed nothing");
    owner
        .get(&format!("/o/lyon/servers/{id}"))
        .await
        .assert_contains("Resume the server");
    owner
        .post(&format!("/o/lyon/servers/{id}/resume"), &[])
        .await
        .assert_redirect(&format!("/o/lyon/servers/{id}"));
    work(&app).await;
    assert!(!api.get(&slug).await.unwrap().spec.suspended);

    // A plain member sees the server but not the password.
    let member = app.signed_up("Max", "max@lyon.example", None).await;
    sqlx::query("INSERT INTO memberships (org_id, user_id, role) SELECT $1, id, 'member' FROM users WHERE email = 'max@lyon.example'")
        .bind(org_id(&pool, "lyon").await)
        .execute(&pool)
        .await
        .unwrap();
    member
        .get(&format!("/o/lyon/servers/{id}"))
        .await
        .assert_status(200)
        .assert_contains("Owners and admins of Lyon can see");
    member
        .post(&format!("/o/lyon/servers/{id}/owner-password"), &[])
        .await
        .assert_status(403);
    member
        .get(&format!("/o/lyon/servers/{id}/suspend"))
        .await
        .assert_status(403);
    member.get(&format!("/o/lyon/servers/{id}")).await;
    member
        .post(&format!("/o/lyon/servers/{id}/suspend"), &[])
        .await
        .assert_status(403);

    // The owner sees it once, uncached; the showing is audited.
    let shown = owner
        .post(&format!("/o/lyon/servers/{id}/owner-password"), &[])
        .await;
    shown
        .assert_status(200)
        .assert_contains("5f1c0ffee5f1c0ffee5f1c0ffee5f1c0");
    assert_eq!(shown.cache_control.as_deref(), Some("no-store"));
    owner
        .post(&format!("/o/lyon/servers/{id}/owner-password"), &[])
        .await
        .assert_contains("was shown on");
    assert!(!owner
        .get(&format!("/o/lyon/servers/{id}"))
        .await
        .body
        .contains("5f1c0ffee"));
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'instance.owner_password.revealed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // The domain is taken now: a new order for it is refused before any payment.
    owner.get("/o/lyon/order").await;
    owner
        .post(
            "/o/lyon/order",
            &[
                ("plan", "community"),
                ("app", "mastodon"),
                ("domain", "lyon.social"),
            ],
        )
        .await
        .assert_status(422)
        .assert_contains("A server with this domain exists already");

    // Someone of another organization cannot see that the server exists.
    let other = app
        .signed_up("Eve", "eve@elsewhere.example", Some("Elsewhere"))
        .await;
    other
        .get(&format!("/o/elsewhere/servers/{id}"))
        .await
        .assert_status(404);
    // (with a valid form token from a page of its own)
    other.get("/o/elsewhere/servers").await.assert_status(200);
    other
        .post(&format!("/o/elsewhere/servers/{id}/owner-password"), &[])
        .await
        .assert_status(404);
    other
        .post(&format!("/o/elsewhere/servers/{id}/suspend"), &[])
        .await
        .assert_status(404);
    assert_eq!(
        other
            .first_event(&format!("/o/elsewhere/servers/{id}/events"))
            .await
            .0,
        404
    );

    // Operators see the tenant with its cluster and history.
    let tenants = op.get("/operator/instances?q=lyon").await;
    tenants
        .assert_contains("lyon.social")
        .assert_contains("eu-1")
        .assert_contains("data-phase=\"running\"");
    op.get(&format!("/operator/instances/{id}"))
        .await
        .assert_contains("kubectl -n herd-system describe instance lyon-social")
        .assert_contains("Placed on cluster eu-1");
    // Operators suspend too, with a confirmation and an audit entry naming them.
    op.get(&format!("/operator/instances/{id}/suspend"))
        .await
        .assert_contains("Suspend lyon.social?");
    op.post(&format!("/operator/instances/{id}/suspend"), &[])
        .await
        .assert_redirect(&format!("/operator/instances/{id}"));
    let by_operator: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'instance.suspended' AND actor_email = 'ops@provider.example'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(by_operator, 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_bank_debit_checkout_waits_for_its_money_and_a_refusal_says_so(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let (order, session) = order(&owner, &fake, &pool).await;
    // SEPA Direct Debit: Checkout completes, the money is not there yet.
    fake.complete_checkout_with(&session, "sub_LyonSepa", "unpaid");
    owner
        .get(&format!("/o/lyon/orders/{order}?session_id={session}"))
        .await
        .assert_contains("data-state=\"pending\"")
        .assert_contains("SEPA Direct Debit");
    let org = org_id(&pool, "lyon").await.to_string();
    let customer = fake.object(&session).unwrap()["customer"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut s = stripe::checkout_session(
        &session,
        &customer,
        "sub_LyonSepa",
        &order.to_string(),
        &org,
    );
    s["payment_status"] = json!("unpaid");
    let now = stripe::now();
    webhook(
        &app,
        stripe::event(
            "evt_sepa_done",
            "checkout.session.completed",
            now,
            s.clone(),
        ),
    )
    .await;
    work(&app).await;
    let servers: i64 = sqlx::query_scalar("SELECT count(*) FROM instances")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(servers, 0, "no server before the money arrives");
    webhook(
        &app,
        stripe::event(
            "evt_sepa_failed",
            "checkout.session.async_payment_failed",
            now + 1,
            s,
        ),
    )
    .await;
    work(&app).await;
    owner
        .get(&format!("/o/lyon/orders/{order}"))
        .await
        .assert_contains("data-state=\"payment-failed\"")
        .assert_contains("refused the payment");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_ended_subscription_says_only_a_new_order_brings_a_server(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let (order, session) = order(&owner, &fake, &pool).await;
    paid(&app, &fake, &pool, order, &session).await;
    work(&app).await;
    let mut canceled = fake.object("sub_LyonPaid").unwrap();
    canceled["status"] = json!("canceled");
    fake.put(canceled.clone());
    webhook(
        &app,
        stripe::event(
            "evt_lyon_canceled",
            "customer.subscription.deleted",
            stripe::now() + 5,
            canceled,
        ),
    )
    .await;
    work(&app).await;
    let page = owner.get("/o/lyon/billing").await;
    page.assert_contains("Ended")
        .assert_contains("it cannot be paid again")
        .assert_contains("Your server is suspended");
    assert!(!page.body.contains("brings it back"));
    let mails = herd_mail::read_outbox(&app.outbox).unwrap();
    let suspended = herd_testkit::find_mail(&mails, "is suspended").unwrap();
    assert!(
        !suspended.body.contains("brings it back") && suspended.body.contains("new order"),
        "{}",
        suspended.body
    );
}

/// The order form's one-time token, as the page renders it.
async fn submission_token(owner: &Client) -> String {
    let page = owner.get("/o/lyon/order").await;
    let needle = "name=\"submission\" value=\"";
    let at = page.body.find(needle).unwrap() + needle.len();
    page.body[at..at + 36].to_owned()
}

fn posts(fake: &FakeStripe, path: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .count()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_double_submission_makes_one_order_one_customer_and_one_session(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let app = app(pool.clone(), &fake).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let token = submission_token(&owner).await;
    let form = [
        ("plan", "community"),
        ("app", "mastodon"),
        ("domain", "lyon.social"),
        ("submission", token.as_str()),
    ];
    let first = owner.post("/o/lyon/order", &form).await.location.unwrap();
    let second = owner.post("/o/lyon/order", &form).await.location.unwrap();
    assert!(first.starts_with(&format!("{}/pay/", fake.base)), "{first}");
    assert_eq!(first, second, "the same payment page");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orders, 1);
    assert_eq!(posts(&fake, "/v1/customers"), 1);
    assert_eq!(posts(&fake, "/v1/checkout/sessions"), 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn after_a_stripe_timeout_the_order_page_finds_the_session_stripe_made(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let base = fake.base.clone();
    let app = TestApp::spawn_with(pool.clone(), move |c| {
        c.stripe_secret_key = Some(SecretString::from(stripe::KEY.to_owned()));
        c.stripe_api_base = base;
        c.stripe_webhook_secrets = vec![SecretString::from(WHSEC.to_owned())];
        c.stripe_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    sqlx::query("UPDATE plans SET provider_price_id = 'price_' || code")
        .execute(&pool)
        .await
        .unwrap();
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    // Stripe makes the session but answers too late.
    fake.stall_next(
        "/v1/checkout/sessions",
        1,
        std::time::Duration::from_secs(2),
    );
    owner.get("/o/lyon/order").await.assert_status(200);
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
    let to = r
        .location
        .clone()
        .unwrap_or_else(|| panic!("{} {}", r.status, r.body));
    assert!(to.starts_with("/o/lyon/orders/"), "{to}");
    let page = owner.get(&to).await;
    page.assert_contains("cannot tell yet whether the payment page was opened")
        .assert_contains("data-state=\"awaiting-payment\"");
    // The page asked again with the order's key: Stripe's first session, not a second.
    let sessions: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/checkout/sessions")
        .map(|r| r.param("client_reference_id").unwrap().to_owned())
        .collect();
    assert_eq!(sessions.len(), 2, "asked twice");
    let made: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE checkout_session_id IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(made, 1);
    let session: String = sqlx::query_scalar("SELECT checkout_session_id FROM orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(fake.object(&session).is_some());
    page.assert_contains(&format!("{}/pay/{session}", fake.base));
    let created = (1..=20)
        .filter(|n| fake.object(&format!("cs_test_fake{n}")).is_some())
        .count();
    assert_eq!(created, 1, "one session made");
}
