//! VAT through the router: the contract form checks the customer's country and VAT id
//! (re-rendered with messages, nothing saved), and the printable invoice shows the issuer,
//! the customer and the lines as issued, with the VAT (or the mention replacing it) in the
//! currency's own minor units.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::{Country, VatId};
use herd_testkit::{Client, TestApp};
use herd_web::WebConfig;
use sqlx::PgPool;

fn french_issuer(c: &mut WebConfig) {
    let fr = Country::parse("FR").unwrap();
    c.invoice_issuer = "Hosting Coop SCIC\n12 rue des Serveurs, Lyon".into();
    c.invoice_issuer_country = Some(fr);
    c.invoice_issuer_vat_id = Some(VatId::parse("FR99999999999", fr).unwrap());
}

fn form<'a>(
    price: &'a str,
    currency: &'a str,
    country: &'a str,
    vat_id: &'a str,
    today: &'a str,
) -> Vec<(&'static str, &'a str)> {
    vec![
        ("plan", "institution"),
        ("price", price),
        ("currency", currency),
        ("period", "year"),
        ("terms_days", "30"),
        ("po_reference", ""),
        ("billing_address", "Rathaus\n50667 Köln"),
        ("country", country),
        ("vat_id", vat_id),
        ("starts_on", today),
        ("ends_on", ""),
    ]
}

async fn contracts(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM contracts")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn the_invoice(owner: &Client, pool: &PgPool, slug: &str) -> String {
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM invoices")
        .fetch_one(pool)
        .await
        .unwrap();
    let page = owner.get(&format!("/o/{slug}/invoices/{id}")).await;
    page.assert_status(200);
    page.body.clone()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_contract_form_checks_the_country_and_vat_id_and_the_invoice_shows_reverse_charge(
    pool: PgPool,
) {
    let app = TestApp::spawn_with(pool.clone(), french_issuer).await;
    let owner = app
        .signed_up("Anna", "anna@koeln.example", Some("Koeln"))
        .await;
    let op = app.operator("ops@provider.example").await;
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let today = today.as_str();

    let page = op.get("/operator/orgs/koeln/contract").await;
    page.assert_status(200)
        .assert_contains(r#"name="country""#)
        .assert_contains("excluding VAT");
    assert!(!page.body.contains("vat-notice"), "VAT is computed");

    for (country, vat_id, message) in [
        // VAT depends on the country: with the issuer's set, it is required.
        ("", "", "the VAT on its invoices"),
        ("", "DE123456789", "the VAT on its invoices"),
        ("XX", "", "two-letter ISO code"),
        ("EL", "EL123456789", "two-letter ISO code"),
        // Greece's VAT ids start with EL.
        ("GR", "GR123456789", "A VAT id from Greece starts with EL"),
        // The prefix is the customer's country's.
        ("FR", "DE123456789", "A VAT id from France starts with FR"),
        ("DE", "DE12345", "not the format of a VAT id from Germany"),
        (
            "NL",
            "NL123456789X01",
            "not the format of a VAT id from the Netherlands",
        ),
    ] {
        let r = op
            .post(
                "/operator/orgs/koeln/contract",
                &form("4800.00", "EUR", country, vat_id, today),
            )
            .await;
        r.assert_status(422).assert_contains(message);
        assert_eq!(
            r.field_value("vat_id").as_deref(),
            Some(vat_id),
            "the form keeps what was typed"
        );
        assert_eq!(
            contracts(&pool).await,
            0,
            "{country} {vat_id}: nothing saved"
        );
    }

    op.post(
        "/operator/orgs/koeln/contract",
        &form("4800.00", "EUR", " de ", "de 123 456 789", today),
    )
    .await
    .assert_redirect("/operator/orgs/koeln/contract");
    let (country, vat_id): (String, String) =
        sqlx::query_as("SELECT country, vat_id FROM contracts")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((country.as_str(), vat_id.as_str()), ("DE", "DE123456789"));
    let audited: serde_json::Value =
        sqlx::query_scalar("SELECT details FROM audit_log WHERE action = 'billing.contract.saved'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audited["country"], "DE");

    // The organization is renamed and the provider's settings change after the invoice
    // was issued: the invoice still says what it said.
    sqlx::query("UPDATE organizations SET name = 'Stadt Köln' WHERE slug = 'koeln'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE invoice_issuer SET details = 'Another provider', vat_id = ''")
        .execute(&pool)
        .await
        .unwrap();
    let body = the_invoice(&owner, &pool, "koeln").await;
    for shown in [
        "Hosting Coop SCIC",
        "VAT id FR99999999999",
        "Koeln\nRathaus\n50667 Köln\nDE\nVAT id DE123456789",
        "Total excluding VAT",
        "4800.00 EUR",
        "Reverse charge: VAT to be accounted for by the customer, Article 196 of Directive 2006/112/EC",
    ] {
        assert!(body.contains(shown), "{shown:?} in {body}");
    }
    assert!(!body.contains("Stadt Köln"), "the name as issued");
    assert!(!body.contains("Another provider"), "the issuer as issued");
    assert!(!body.contains("VAT at"), "no VAT rate under reverse charge");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_yen_invoice_counts_in_whole_yen(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), french_issuer).await;
    let owner = app
        .signed_up("Jean", "jean@lyon.example", Some("Lyon"))
        .await;
    let op = app.operator("ops@provider.example").await;
    let today = time::OffsetDateTime::now_utc().date().to_string();

    let r = op
        .post(
            "/operator/orgs/lyon/contract",
            &form("1234.50", "JPY", "FR", "", &today),
        )
        .await;
    r.assert_status(422)
        .assert_contains("JPY has no minor unit");
    assert_eq!(contracts(&pool).await, 0);

    op.post(
        "/operator/orgs/lyon/contract",
        &form("1234", "JPY", "FR", "", &today),
    )
    .await
    .assert_redirect("/operator/orgs/lyon/contract");
    // The form shows the price back in whole yen.
    assert_eq!(
        op.get("/operator/orgs/lyon/contract")
            .await
            .field_value("price")
            .as_deref(),
        Some("1234")
    );
    // A domestic sale: 20% of ¥1,234 is ¥246.8, rounded to ¥247.
    let body = the_invoice(&owner, &pool, "lyon").await;
    for shown in ["1234 JPY", "VAT at 20%", "247 JPY", "1481 JPY"] {
        assert!(body.contains(shown), "{shown:?} in {body}");
    }
    assert!(!body.contains(".00 JPY"), "yen have no decimals: {body}");
    let amount: i64 = sqlx::query_scalar("SELECT amount_minor FROM invoices")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(amount, 1_481, "the amount due is the gross, in yen");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn without_the_issuer_country_invoices_say_vat_was_not_computed(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let owner = app
        .signed_up("Jean", "jean@lyon.example", Some("Lyon"))
        .await;
    let op = app.operator("ops@provider.example").await;
    let today = time::OffsetDateTime::now_utc().date().to_string();

    op.get("/operator/orgs/lyon/contract")
        .await
        .assert_contains(r#"id="vat-notice""#)
        .assert_contains("HERD_INVOICE_ISSUER_COUNTRY is not set");
    // The country is not required then, but a VAT id is still checked against one.
    op.post(
        "/operator/orgs/lyon/contract",
        &form("4800", "EUR", "DE", "DE12", &today),
    )
    .await
    .assert_status(422)
    .assert_contains("not the format of a VAT id from Germany");
    op.post(
        "/operator/orgs/lyon/contract",
        &form("4800", "EUR", "", "", &today),
    )
    .await
    .assert_redirect("/operator/orgs/lyon/contract");
    let body = the_invoice(&owner, &pool, "lyon").await;
    assert!(
        body.contains("VAT not computed: HERD_INVOICE_ISSUER_COUNTRY is not set"),
        "{body}"
    );
    assert!(body.contains("4800.00 EUR"), "{body}");
}

/// A contract without the customer's country (one made before VAT, or from an order) gets
/// no invoice while the issuer computes VAT, and its page in the console says why; an
/// invoice issued before issuers were kept on invoices shows the issuer recorded now.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_contract_without_its_country_is_held_and_says_why(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), french_issuer).await;
    let owner = app
        .signed_up("Anna", "anna@koeln.example", Some("Koeln"))
        .await;
    let op = app.operator("ops@provider.example").await;
    // A contract from before VAT: no country.
    sqlx::query(
        "INSERT INTO contracts (id, org_id, plan_code, price_minor, currency, period,
                                payment_terms_days, po_reference, billing_address, vat_id,
                                starts_on, next_invoice_on)
         SELECT gen_random_uuid(), id, 'institution', 480000, 'EUR', 'year', 30, '', 'Köln', '',
                current_date, current_date FROM organizations WHERE slug = 'koeln'",
    )
    .execute(&pool)
    .await
    .unwrap();
    herd_billing::invoicing::issue_due(&pool, time::OffsetDateTime::now_utc().date())
        .await
        .unwrap();
    let invoices: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(invoices, 0, "held");
    op.get("/operator/orgs/koeln/contract")
        .await
        .assert_status(200)
        .assert_contains("invoices are held until the customer");

    // An invoice issued before issuers were kept on invoices (its issuer empty).
    sqlx::query(
        "INSERT INTO invoices (id, contract_id, org_id, number, year, seq, issued_on, due_on,
                               period_start, period_end, description, amount_minor, currency,
                               po_reference, billing_address, vat_id)
         SELECT gen_random_uuid(), c.id, c.org_id, 'HERD-2025-000001', 2025, 1, '2025-12-01',
                '2025-12-31', '2025-12-01', '2026-11-30', 'Hosting', 480000, 'EUR', '', 'Köln', ''
         FROM contracts c",
    )
    .execute(&pool)
    .await
    .unwrap();
    let page = the_invoice(&owner, &pool, "koeln").await;
    assert!(page.contains("Hosting Coop SCIC"), "{page}");
}
