//! Ordering without a card: an order paid by invoice waits for an operator, who approves
//! it (the contract is made, the first invoice goes out, the server is queued) or
//! declines it with a reason the organization reads; or the provider approves them at
//! once. Through the router, on a fresh install with no Stripe key.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::TestApp;
use sqlx::PgPool;
use uuid::Uuid;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

const GOOD: [(&str, &str); 7] = [
    ("plan", "community"),
    ("app", "mastodon"),
    ("domain", "lyon.social"),
    ("payment", "invoice"),
    (
        "billing_address",
        "Ville de Lyon\n1 place de la Comédie\n69001 Lyon",
    ),
    ("vat_id", "FR12345678901"),
    ("po_reference", "PO-2026-42"),
];

fn order_id(location: &str) -> Uuid {
    Uuid::parse_str(location.rsplit('/').next().unwrap()).unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_invoice_order_is_approved_by_an_operator_then_invoiced_and_its_server_queued(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool.clone()).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let form = owner.get("/o/lyon/order").await;
    form.assert_status(200)
        .assert_contains("By invoice")
        .assert_contains("value=\"invoice\" checked");

    // Bad input: each problem shown, nothing stored.
    let long = "x".repeat(101);
    let mut bad = GOOD.to_vec();
    bad[4] = ("billing_address", "  ");
    bad[6] = ("po_reference", &long);
    owner
        .post("/o/lyon/order", &bad)
        .await
        .assert_status(422)
        .assert_contains("Enter the address invoices go to")
        .assert_contains("at most 100 characters");
    let mut cash = GOOD.to_vec();
    cash[3] = ("payment", "cash");
    owner
        .post("/o/lyon/order", &cash)
        .await
        .assert_status(422)
        .assert_contains("Choose how to pay");
    assert_eq!(count(&pool, "SELECT count(*) FROM orders").await, 0);

    let r = owner.post("/o/lyon/order", &GOOD).await;
    r.assert_redirect("/o/lyon/orders/");
    let id = order_id(r.location.as_deref().unwrap());
    owner
        .get(&format!("/o/lyon/orders/{id}"))
        .await
        .assert_contains("data-state=\"awaiting-approval\"");
    assert_eq!(count(&pool, "SELECT count(*) FROM instances").await, 0);

    // The operator sees it with its billing details.
    let op = app.operator("ops@provider.example").await;
    let list = op.get("/operator/orders").await;
    list.assert_status(200)
        .assert_contains("lyon.social")
        .assert_contains("1 place de la Comédie")
        .assert_contains("PO-2026-42");
    // A decline needs a reason.
    op.post(
        &format!("/operator/orders/{id}/decline"),
        &[("reason", " ")],
    )
    .await
    .assert_status(422)
    .assert_contains("needs a reason");
    op.post(&format!("/operator/orders/{id}/approve"), &[])
        .await
        .assert_redirect("/operator/orders");
    // A second click changes nothing.
    op.get("/operator/orders").await;
    op.post(&format!("/operator/orders/{id}/approve"), &[])
        .await
        .assert_redirect("/operator/orders");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM audit_log WHERE action = 'billing.order.approved' AND actor_email = 'ops@provider.example'").await,
        1
    );

    // The contract follows the plan and the order; the first invoice is out.
    let (price, period, po, address, vat): (i64, String, String, String, String) = sqlx::query_as(
        "SELECT price_minor, period, po_reference, billing_address, vat_id FROM contracts",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let plan_price: i64 =
        sqlx::query_scalar("SELECT price_minor FROM plans WHERE code = 'community'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(price, plan_price);
    assert_eq!(period, "month");
    assert_eq!(po, "PO-2026-42");
    assert!(address.contains("69001 Lyon"));
    assert_eq!(vat, "FR12345678901");
    app.run_jobs().await;
    assert!(app
        .mails()
        .await
        .iter()
        .any(|m| m.to.contains("lea@lyon.example") && m.subject.starts_with("Invoice ")));

    // The order is fulfilled and its server waits for a cluster.
    let order_page = owner.get(&format!("/o/lyon/orders/{id}")).await;
    order_page.assert_contains("data-state=\"fulfilled\"");
    let server: Uuid = sqlx::query_scalar("SELECT id FROM instances WHERE order_id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    owner
        .get(&format!("/o/lyon/servers/{server}"))
        .await
        .assert_contains("data-phase=\"queued\"")
        .assert_contains("queued: no cluster connected");
    op.get("/operator/orders")
        .await
        .assert_contains("No order waits for approval");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_declined_order_says_why_and_the_provider_may_approve_at_once(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    owner.get("/o/lyon/order").await;
    let r = owner.post("/o/lyon/order", &GOOD).await;
    let id = order_id(r.location.as_deref().unwrap());
    let op = app.operator("ops@provider.example").await;
    op.get("/operator/orders").await;
    op.post(
        &format!("/operator/orders/{id}/decline"),
        &[("reason", "we need a signed purchase order first")],
    )
    .await
    .assert_redirect("/operator/orders");
    owner
        .get(&format!("/o/lyon/orders/{id}"))
        .await
        .assert_contains("data-state=\"declined\"")
        .assert_contains("we need a signed purchase order first");
    assert_eq!(count(&pool, "SELECT count(*) FROM contracts").await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM instances").await, 0);
    // Approving a declined order is refused, with a message.
    op.get("/operator/orders").await;
    op.post(&format!("/operator/orders/{id}/approve"), &[])
        .await
        .assert_redirect("/operator/orders");
    assert_eq!(count(&pool, "SELECT count(*) FROM contracts").await, 0);

    // A provider that approves invoice orders at once.
    let auto = TestApp::spawn_with(pool.clone(), |c| c.auto_approve_invoice_orders = true).await;
    let other = auto
        .signed_up("Max", "max@nantes.example", Some("Nantes"))
        .await;
    other.get("/o/nantes/order").await;
    let mut good = GOOD.to_vec();
    good[2] = ("domain", "nantes.social");
    let r = other.post("/o/nantes/order", &good).await;
    let id = order_id(r.location.as_deref().unwrap());
    other
        .get(&format!("/o/nantes/orders/{id}"))
        .await
        .assert_contains("data-state=\"fulfilled\"")
        .assert_contains("/o/nantes/servers/");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM audit_log WHERE action = 'billing.order.approved' AND actor_id IS NULL").await,
        1
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_approval_that_cannot_create_the_server_changes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let lyon = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let nantes = app
        .signed_up("Max", "max@nantes.example", Some("Nantes"))
        .await;
    // Two organizations order the same domain before either is approved.
    lyon.get("/o/lyon/order").await;
    let first = order_id(
        lyon.post("/o/lyon/order", &GOOD)
            .await
            .location
            .as_deref()
            .unwrap(),
    );
    nantes.get("/o/nantes/order").await;
    let second = order_id(
        nantes
            .post("/o/nantes/order", &GOOD)
            .await
            .location
            .as_deref()
            .unwrap(),
    );
    let op = app.operator("ops@provider.example").await;
    op.get("/operator/orders").await;
    op.post(&format!("/operator/orders/{first}/approve"), &[])
        .await
        .assert_redirect("/operator/orders");
    // Lyon's server proves the domain (the fake name server answers with its record).
    app.run_jobs().await;
    op.post(&format!("/operator/orders/{second}/approve"), &[])
        .await
        .assert_redirect("/operator/orders");
    op.get("/operator/orders")
        .await
        .assert_contains("The server cannot be created")
        .assert_contains("already used");
    // Nantes has no contract, no invoice, and its order still waits.
    assert_eq!(count(&pool, "SELECT count(*) FROM contracts").await, 1);
    let state: String = sqlx::query_scalar("SELECT state FROM orders WHERE id = $1")
        .bind(second)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "pending");
    app.run_jobs().await;
    assert!(!app
        .mails()
        .await
        .iter()
        .any(|m| m.to.contains("max@nantes.example") && m.subject.starts_with("Invoice ")));
}

/// A contract the billing policy deleted (unpaid) is final: a new order of that
/// organization is not approved under it (its server would never be billed or suspended);
/// the operator is told why and nothing changes.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn no_server_is_approved_under_a_contract_deleted_for_non_payment(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let lyon = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    lyon.get("/o/lyon/order").await;
    let first = order_id(
        lyon.post("/o/lyon/order", &GOOD)
            .await
            .location
            .as_deref()
            .unwrap(),
    );
    let op = app.operator("ops@provider.example").await;
    op.get("/operator/orders").await;
    op.post(&format!("/operator/orders/{first}/approve"), &[])
        .await
        .assert_redirect("/operator/orders");
    assert_eq!(count(&pool, "SELECT count(*) FROM instances").await, 1);
    // Unpaid for months: the access policy deleted it.
    let contract: uuid::Uuid = sqlx::query_scalar("SELECT id FROM contracts")
        .fetch_one(&pool)
        .await
        .unwrap();
    let org: uuid::Uuid = sqlx::query_scalar("SELECT org_id FROM contracts")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO tenant_access (subject, org_id, channel, state) VALUES ($1, $2, 'invoice', 'deleted')
         ON CONFLICT (subject) DO UPDATE SET state = 'deleted'",
    )
    .bind(format!("contract:{contract}"))
    .bind(org)
    .execute(&pool)
    .await
    .unwrap();
    // A second order, for another domain.
    lyon.get("/o/lyon/order").await;
    let mut again = GOOD.to_vec();
    again[2] = ("domain", "lyon2.social");
    let second = order_id(
        lyon.post("/o/lyon/order", &again)
            .await
            .location
            .as_deref()
            .unwrap(),
    );
    op.get("/operator/orders").await;
    op.post(&format!("/operator/orders/{second}/approve"), &[])
        .await
        .assert_redirect("/operator/orders");
    op.get("/operator/orders")
        .await
        .assert_contains("ended for non-payment");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM instances").await,
        1,
        "no server"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM orders WHERE id = $1")
        .bind(second)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "pending", "the order still waits");
}
