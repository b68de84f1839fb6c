//! VAT on invoices and invoices frozen at issue: the issuer, the customer's name, country,
//! address and VAT id, the lines and totals stay as issued whatever happens to the
//! organization, the contract or the issuer settings afterwards, and the database refuses
//! to change them.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_billing::invoicing;
use herd_domain::invoice::Period;
use herd_domain::vat::{self, Country, TaxTreatment, VatId};
use herd_domain::OrgId;
use herd_store::invoicing::{self as store, Issuer, Terms};
use sqlx::PgPool;
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

async fn org(pool: &PgPool, slug: &str, name: &str) -> OrgId {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(slug)
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
    let user = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $2, 'x')",
    )
    .bind(user)
    .bind(format!("compta@{slug}.example"))
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, 'billing')")
        .bind(id)
        .bind(user)
        .execute(pool)
        .await
        .unwrap();
    OrgId(id)
}

fn country(code: &str) -> Country {
    Country::parse(code).unwrap()
}

fn issuer(details: &str, code: &str, vat_id: &str) -> Issuer {
    Issuer {
        details: details.into(),
        country: Some(country(code)),
        vat_id: Some(VatId::parse(vat_id, country(code)).unwrap()),
    }
}

fn terms(starts_on: Date, code: &str, vat_id: &str, address: &str, price_minor: i64) -> Terms {
    Terms {
        plan_code: "institution".into(),
        price_minor,
        currency: "EUR".into(),
        period: Period::Month,
        payment_terms_days: 30,
        po_reference: "PO-2026-7".into(),
        billing_address: address.into(),
        vat_id: vat_id.into(),
        country: Some(country(code)),
        starts_on,
        ends_on: None,
    }
}

async fn save(pool: &PgPool, org: OrgId, t: &Terms) {
    let mut conn = pool.acquire().await.unwrap();
    store::save_contract(&mut conn, org, t).await.unwrap();
}

fn today() -> Date {
    OffsetDateTime::now_utc().date()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_issued_invoice_keeps_what_it_said_when_everything_else_changes(pool: PgPool) {
    let org = org(&pool, "koeln", "Stadt Köln").await;
    invoicing::record_issuer(
        &pool,
        &issuer(
            "Hosting Coop SCIC\n12 rue des Serveurs, Lyon",
            "FR",
            "FR99999999999",
        ),
    )
    .await
    .unwrap();
    // A German public body with a VAT id, invoiced from France: reverse charge.
    save(
        &pool,
        org,
        &terms(
            today(),
            "DE",
            "de 123 456 789",
            "Rathaus\n50667 Köln",
            120_000,
        ),
    )
    .await;
    let first = invoicing::issue_due(&pool, today())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(first.tax_treatment, TaxTreatment::ReverseCharge);
    assert_eq!(
        (
            first.net_minor,
            first.tax_minor,
            first.gross_minor,
            first.amount_minor
        ),
        (120_000, 0, 120_000, 120_000)
    );
    assert_eq!(first.vat_rate_bp, 0);
    assert_eq!(first.tax_note, vat::REVERSE_CHARGE_NOTE);
    assert_eq!(first.customer_name, "Stadt Köln");
    assert_eq!(first.customer_country, "DE");
    assert_eq!(first.vat_id, "DE123456789");
    assert_eq!(first.billing_address, "Rathaus\n50667 Köln");
    assert_eq!(first.issuer, "Hosting Coop SCIC\n12 rue des Serveurs, Lyon");
    assert_eq!(first.issuer_vat_id, "FR99999999999");

    // Afterwards: the organization is renamed, the contract moves to France without a
    // VAT id at a new price, and the provider changes its name.
    sqlx::query("UPDATE organizations SET name = 'Metropole Köln' WHERE id = $1")
        .bind(org.0)
        .execute(&pool)
        .await
        .unwrap();
    save(
        &pool,
        org,
        &terms(today(), "FR", "", "Hôtel de Ville\n69001 Lyon", 200_000),
    )
    .await;
    invoicing::record_issuer(
        &pool,
        &issuer("Hosting Coop SAS\n1 quai Nord, Lyon", "FR", "FR88888888888"),
    )
    .await
    .unwrap();

    // The issued invoice is as it was, and so is its email.
    assert_eq!(
        store::invoice(&pool, first.id).await.unwrap().unwrap(),
        first
    );
    let mail = invoicing::invoice_emails(&pool, first.id)
        .await
        .unwrap()
        .remove(0);
    assert!(mail.subject.ends_with("for Stadt Köln"), "{}", mail.subject);
    assert!(
        mail.body.contains("1200.00 EUR, no VAT charged"),
        "{}",
        mail.body
    );
    assert!(mail.body.contains("Article 196"), "{}", mail.body);
    assert!(!mail.body.contains("Metropole"), "{}", mail.body);

    // The next invoice is issued with what holds now: a domestic sale at 20%.
    let next = invoicing::issue_due(&pool, Period::Month.next(today()))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(next.tax_treatment, TaxTreatment::Domestic);
    assert_eq!(
        (
            next.net_minor,
            next.vat_rate_bp,
            next.tax_minor,
            next.gross_minor
        ),
        (200_000, 2000, 40_000, 240_000)
    );
    assert_eq!(next.amount_minor, 240_000, "the amount due is the gross");
    assert_eq!(next.customer_name, "Metropole Köln");
    assert_eq!(next.issuer_vat_id, "FR88888888888");
    assert_eq!(next.tax_note, "");
    let mail = invoicing::invoice_emails(&pool, next.id)
        .await
        .unwrap()
        .remove(0);
    assert!(
        mail.body
            .contains("net 2000.00 EUR, VAT 20% 400.00 EUR, total 2400.00 EUR"),
        "{}",
        mail.body
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn vat_follows_the_customer_and_is_not_invented_without_the_issuer(pool: PgPool) {
    let start = today() - Duration::days(1);
    // No issuer recorded: no VAT, and the invoice says why.
    let a = org(&pool, "a", "A").await;
    save(&pool, a, &terms(start, "FI", "", "Helsinki", 10_000)).await;
    let inv = invoicing::issue_due(&pool, today())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(inv.tax_treatment, TaxTreatment::NotComputed);
    assert_eq!(inv.tax_note, vat::NO_ISSUER_COUNTRY_NOTE);
    assert_eq!(
        (inv.net_minor, inv.tax_minor, inv.gross_minor),
        (10_000, 0, 10_000)
    );

    invoicing::record_issuer(&pool, &issuer("Coop", "FR", "FR99999999999"))
        .await
        .unwrap();
    // A Finnish customer without a VAT id pays Finland's 25.5%, rounded half up:
    // 99.99 × 25.5% = 25.49745.
    let b = org(&pool, "b", "B").await;
    save(&pool, b, &terms(start, "FI", "", "Helsinki", 9_999)).await;
    // A Swiss customer: outside the scope of EU VAT.
    let c = org(&pool, "c", "C").await;
    save(
        &pool,
        c,
        &terms(start, "CH", "CHE-123.456.789 MWST", "Genève", 10_000),
    )
    .await;
    let issued = invoicing::issue_due(&pool, today()).await.unwrap();
    let of = |o: OrgId| issued.iter().find(|i| i.org_id == o.0).unwrap();
    let fi = of(b);
    assert_eq!(fi.tax_treatment, TaxTreatment::DestinationRate);
    assert_eq!(
        (fi.net_minor, fi.vat_rate_bp, fi.tax_minor, fi.gross_minor),
        (9_999, 2550, 2_550, 12_549)
    );
    let ch = of(c);
    assert_eq!(ch.tax_treatment, TaxTreatment::OutsideScope);
    assert_eq!(ch.tax_note, vat::OUTSIDE_SCOPE_NOTE);
    assert_eq!((ch.tax_minor, ch.gross_minor), (0, 10_000));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_database_refuses_to_change_an_issued_invoice(pool: PgPool) {
    let org = org(&pool, "lyon", "Ville de Lyon").await;
    invoicing::record_issuer(&pool, &issuer("Coop", "FR", "FR99999999999"))
        .await
        .unwrap();
    save(&pool, org, &terms(today(), "FR", "", "Lyon", 120_000)).await;
    let inv = invoicing::issue_due(&pool, today())
        .await
        .unwrap()
        .remove(0);

    for change in [
        "customer_name = 'Someone else'",
        "billing_address = 'Elsewhere'",
        "vat_id = 'FR00000000000'",
        "issuer = 'Another provider'",
        "issuer_vat_id = ''",
        "customer_country = 'DE'",
        "net_minor = 1, gross_minor = 1, amount_minor = 1",
        "tax_minor = 0, gross_minor = net_minor, amount_minor = net_minor",
        "vat_rate_bp = 0",
        "tax_treatment = 'reverse_charge'",
        "tax_note = 'Reverse charge'",
        "description = 'Something else'",
        "due_on = due_on + 30",
        "number = 'HERD-1999-000001'",
    ] {
        let refused = sqlx::query(&format!("UPDATE invoices SET {change} WHERE id = $1"))
            .bind(inv.id)
            .execute(&pool)
            .await
            .expect_err(change);
        assert!(
            refused.to_string().contains("is issued"),
            "{change}: {refused}"
        );
    }
    let refused = sqlx::query("DELETE FROM invoices WHERE id = $1")
        .bind(inv.id)
        .execute(&pool)
        .await
        .expect_err("an issued invoice is not deleted");
    assert!(
        refused.to_string().contains("cannot be deleted"),
        "{refused}"
    );
    assert_eq!(store::invoice(&pool, inv.id).await.unwrap().unwrap(), inv);

    // Its payment is recorded, and nothing else changes.
    assert!(store::record_payment(&pool, inv.id, today(), "VIR 42")
        .await
        .unwrap());
    let paid = store::invoice(&pool, inv.id).await.unwrap().unwrap();
    assert_eq!(paid.status, "paid");
    assert_eq!(paid.payment_reference.as_deref(), Some("VIR 42"));
    assert_eq!(
        (paid.gross_minor, paid.tax_minor, &paid.customer_name),
        (144_000, 24_000, &inv.customer_name)
    );
}
