//! Invoice billing through the router: an operator puts an organization on a contract
//! (validated, audited), the first invoice is issued at once, the customer reads and prints
//! it, and the operator records its payment.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{Client, TestApp};
use herd_web::WebConfig;
use sqlx::PgPool;

async fn operator(app: &TestApp, _pool: &PgPool) -> Client {
    // An operator with two-factor authentication (enrolled through the pages: turning it
    // on behind the session's back ends the session, as any change of the second factor).
    app.operator("ops@provider.example").await
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn contract_invoice_print_and_payment(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c: &mut WebConfig| {
        c.invoice_issuer = "Hosting Coop SCIC\n12 rue des Serveurs, Lyon\nVAT FR99999999999".into();
    })
    .await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let op = operator(&app, &pool).await;

    let form = op.get("/operator/orgs/lyon/contract").await;
    form.assert_status(200)
        .assert_contains("Invoice billing of Lyon");
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let good = [
        ("plan", "institution"),
        ("price", "4800.00"),
        ("currency", "EUR"),
        ("period", "year"),
        ("terms_days", "30"),
        ("po_reference", "BC-2026-0042"),
        ("billing_address", "Hôtel de Ville\n69001 Lyon"),
        ("vat_id", "FR12345678901"),
        ("starts_on", today.as_str()),
        ("ends_on", ""),
        ("country", "FR"),
    ];
    let mut bad = good.to_vec();
    bad[1] = ("price", "lots");
    bad[4] = ("terms_days", "365");
    bad[6] = ("billing_address", " ");
    bad[9] = ("ends_on", "2020-01-01");
    let r = op.post("/operator/orgs/lyon/contract", &bad).await;
    r.assert_status(422)
        .assert_contains("Enter a price like")
        .assert_contains("from 0 to 120")
        .assert_contains("Enter the billing address")
        .assert_contains("after the start");
    let contracts: i64 = sqlx::query_scalar("SELECT count(*) FROM contracts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(contracts, 0);

    op.post("/operator/orgs/lyon/contract", &good)
        .await
        .assert_redirect("/operator/orgs/lyon/contract");
    let (id, number): (uuid::Uuid, String) = sqlx::query_as("SELECT id, number FROM invoices")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(number.starts_with("HERD-"), "{number}");

    // The customer sees it on the billing page and opens the printable invoice.
    owner
        .get("/o/lyon/billing")
        .await
        .assert_contains(&number)
        .assert_contains("invoiced every year");
    let page = owner.get(&format!("/o/lyon/invoices/{id}")).await;
    page.assert_status(200)
        .assert_contains("Hosting Coop SCIC")
        .assert_contains("BC-2026-0042")
        .assert_contains("FR12345678901")
        .assert_contains("4800.00 EUR")
        .assert_contains(r#"id="print""#)
        .assert_contains(r#"<script src="/assets/invoice.js" defer></script>"#);
    owner
        .get("/assets/invoice.js")
        .await
        .assert_status(200)
        .assert_contains(r#"getElementById("print")"#)
        .assert_contains("window.print()");
    assert!(
        !page.body.contains("Record a payment"),
        "customers do not record payments"
    );

    // Another organization cannot read it.
    let other = app
        .signed_up("Olga", "olga@paris.example", Some("Paris"))
        .await;
    other
        .get(&format!("/o/paris/invoices/{id}"))
        .await
        .assert_status(404);

    // The operator records the payment (validated, once, audited).
    op.get(&format!("/operator/invoices/{id}"))
        .await
        .assert_contains("Record a payment");
    let r = op
        .post(
            &format!("/operator/invoices/{id}/payment"),
            &[("paid_on", "2999-01-01"), ("reference", "")],
        )
        .await;
    r.assert_status(422)
        .assert_contains("not in the future")
        .assert_contains("Enter the bank transfer");
    op.post(
        &format!("/operator/invoices/{id}/payment"),
        &[("paid_on", today.as_str()), ("reference", "VIR 2026 555")],
    )
    .await
    .assert_redirect(&format!("/operator/invoices/{id}"));
    owner
        .get(&format!("/o/lyon/invoices/{id}"))
        .await
        .assert_contains(&format!("Paid on {today}"));
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'billing.%' ORDER BY at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(actions, ["billing.contract.saved", "billing.invoice.paid"]);
    op.get("/operator/invoices")
        .await
        .assert_contains(&number)
        .assert_contains("/operator/orgs/lyon/contract");
    op.get("/operator/invoices?overdue=1")
        .await
        .assert_contains("No invoice overdue");
}
