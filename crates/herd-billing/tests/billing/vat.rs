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
    // A recorded payment is final: the invoice is not made unpaid again, its reference
    // not rewritten; and the table is not emptied by TRUNCATE either.
    for change in [
        "status = 'open', paid_on = NULL",
        "payment_reference = 'VIR 43'",
    ] {
        let refused = sqlx::query(&format!("UPDATE invoices SET {change} WHERE id = $1"))
            .bind(inv.id)
            .execute(&pool)
            .await
            .expect_err(change);
        assert!(
            refused.to_string().contains("is paid"),
            "{change}: {refused}"
        );
    }
    let refused = sqlx::query("TRUNCATE invoices CASCADE")
        .execute(&pool)
        .await
        .expect_err("issued invoices are not truncated away");
    assert!(refused.to_string().contains("truncated"), "{refused}");
    assert_eq!(store::invoice(&pool, inv.id).await.unwrap().unwrap(), paid);
}

/// An invoice that would freeze a wrong VAT is not issued: a contract without the
/// customer's country while the issuer computes VAT (made before VAT, or from an order),
/// or a reverse charge while the issuer's VAT id is not set. Entering what is missing
/// issues it.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn invoices_that_would_freeze_a_wrong_vat_are_held(pool: PgPool) {
    let start = today() - Duration::days(1);
    invoicing::record_issuer(&pool, &issuer("Coop", "FR", "FR99999999999"))
        .await
        .unwrap();
    let lyon = org(&pool, "lyon", "Ville de Lyon").await;
    let mut t = terms(start, "FR", "", "Lyon", 10_000);
    t.country = None;
    save(&pool, lyon, &t).await;
    assert!(invoicing::issue_due(&pool, today())
        .await
        .unwrap()
        .is_empty());
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM invoices")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 0);
    save(&pool, lyon, &terms(start, "FR", "", "Lyon", 10_000)).await;
    let inv = invoicing::issue_due(&pool, today())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (inv.tax_treatment, inv.tax_minor),
        (TaxTreatment::Domestic, 2_000)
    );

    // Reverse charge without the issuer's VAT id: held until it is set.
    invoicing::record_issuer(
        &pool,
        &Issuer {
            details: "Coop".into(),
            country: Some(country("FR")),
            vat_id: None,
        },
    )
    .await
    .unwrap();
    let berlin = org(&pool, "berlin", "Berlin").await;
    save(
        &pool,
        berlin,
        &terms(start, "DE", "DE123456789", "Berlin", 10_000),
    )
    .await;
    assert!(invoicing::issue_due(&pool, today())
        .await
        .unwrap()
        .is_empty());
    invoicing::record_issuer(&pool, &issuer("Coop", "FR", "FR99999999999"))
        .await
        .unwrap();
    let inv = invoicing::issue_due(&pool, today())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(inv.tax_treatment, TaxTreatment::ReverseCharge);
    assert_eq!(count().await, 2);
}

/// A process started without the issuer's country keeps the one recorded before (one
/// replica started without the setting must not turn VAT off for everyone).
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_start_without_the_issuer_country_keeps_the_recorded_one(pool: PgPool) {
    invoicing::record_issuer(&pool, &issuer("Coop", "FR", "FR99999999999"))
        .await
        .unwrap();
    invoicing::record_issuer(
        &pool,
        &Issuer {
            details: "Coop, new address".into(),
            country: None,
            vat_id: None,
        },
    )
    .await
    .unwrap();
    let now = store::issuer(&pool).await.unwrap();
    assert_eq!(now.details, "Coop, new address");
    assert_eq!(now.country, Some(country("FR")));
    assert_eq!(
        now.vat_id.map(|v| v.to_string()).as_deref(),
        Some("FR99999999999")
    );
}

/// Amounts stored before money knew each currency's minor unit (every price was read with
/// two decimals) are rescaled to what was typed: a JPY price "1200" stored as 120000 is
/// 1200 yen again; a KWD "1.23" stored as 123 is 1230 fils.
#[sqlx::test(migrations = false)]
async fn amounts_stored_with_two_decimals_are_rescaled_to_the_currency(pool: PgPool) {
    const FIX: i64 = 20261207300001;
    let mut before = herd_store::MIGRATOR
        .iter()
        .filter(|m| m.version < FIX)
        .cloned()
        .collect::<Vec<_>>();
    let migrator = |ms: Vec<sqlx::migrate::Migration>| sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(ms),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    migrator(std::mem::take(&mut before))
        .run(&pool)
        .await
        .unwrap();
    for (code, currency, minor) in [
        ("yen", "JPY", 120_000_i64),
        ("dinar", "KWD", 123),
        ("euro", "EUR", 4_990),
    ] {
        sqlx::query(
            "INSERT INTO plans (id, code, name, price_minor, currency, billing_interval,
                                max_active_users, media_storage_gb, custom_domain,
                                support_response_hours, moderation_hours_per_month, compute_size)
             VALUES (gen_random_uuid(), $1, $1, $2, $3, 'month', 10, 10, false, 24, 0, 'small')",
        )
        .bind(code)
        .bind(minor)
        .bind(currency)
        .execute(&pool)
        .await
        .unwrap();
    }
    herd_store::MIGRATOR.run(&pool).await.unwrap();
    let price = |code: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT price_minor FROM plans WHERE code = $1")
                .bind(code)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(price("yen").await, 1_200);
    assert_eq!(price("dinar").await, 1_230);
    assert_eq!(price("euro").await, 4_990);
}
