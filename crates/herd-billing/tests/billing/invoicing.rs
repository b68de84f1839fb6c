//! Invoice billing against a real PostgreSQL: invoices issued on schedule, once per period,
//! with gap-free numbers (also under concurrency and rollback), emailed, and overdue ones
//! driving the same access policy as card payments.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_billing::invoicing::{self, contract_subject};
use herd_domain::invoice::Period;
use herd_domain::OrgId;
use herd_mail::{read_outbox, Mailer};
use herd_store::invoicing::{self as store, Terms};
use sqlx::PgPool;
use time::{Date, Duration, OffsetDateTime};
use uuid::Uuid;

async fn org(pool: &PgPool, slug: &str) -> OrgId {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, $2, $2)")
        .bind(id)
        .bind(slug)
        .execute(pool)
        .await
        .unwrap();
    for (email, role) in [
        (format!("owner@{slug}.example"), "owner"),
        (format!("compta@{slug}.example"), "billing"),
    ] {
        let user = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $2, 'x')",
        )
        .bind(user)
        .bind(&email)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(user)
            .bind(role)
            .execute(pool)
            .await
            .unwrap();
    }
    OrgId(id)
}

fn terms(starts_on: Date, period: Period, terms_days: i32) -> Terms {
    Terms {
        plan_code: "institution".into(),
        price_minor: 120_000,
        currency: "EUR".into(),
        period,
        payment_terms_days: terms_days,
        po_reference: "PO-2026-118".into(),
        billing_address: "Hôtel de Ville\n1 place de la Comédie\n69001 Lyon".into(),
        vat_id: "FR12345678901".into(),
        starts_on,
        ends_on: None,
    }
}

async fn contract(pool: &PgPool, org: OrgId, t: &Terms) -> Uuid {
    let mut conn = pool.acquire().await.unwrap();
    store::save_contract(&mut conn, org, t).await.unwrap().id
}

fn today() -> Date {
    OffsetDateTime::now_utc().date()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn invoices_are_issued_once_per_period_with_gap_free_numbers(pool: PgPool) {
    let lyon = org(&pool, "lyon").await;
    let start = today() - Duration::days(70);
    contract(&pool, lyon, &terms(start, Period::Month, 30)).await;

    let issued = invoicing::issue_due(&pool, today()).await.unwrap();
    assert_eq!(
        issued.len(),
        3,
        "the periods started 70, ~40 and ~10 days ago"
    );
    let year = today().year();
    let numbers: Vec<_> = issued.iter().map(|i| i.number.clone()).collect();
    assert_eq!(
        numbers,
        [1, 2, 3].map(|n| herd_domain::invoice::number(year, n))
    );
    assert_eq!(issued[0].period_start, start);
    assert_eq!(issued[1].period_start, Period::Month.nth(start, 1));
    assert_eq!(
        issued[0].period_end,
        Period::Month.nth(start, 1) - Duration::days(1)
    );
    assert_eq!(issued[0].due_on, today() + Duration::days(30));
    assert_eq!(issued[0].po_reference, "PO-2026-118");
    assert!(
        invoicing::issue_due(&pool, today())
            .await
            .unwrap()
            .is_empty(),
        "never twice"
    );

    // A rolled-back issue gives its number back: the next one follows without a gap.
    let paris = org(&pool, "paris").await;
    let c = contract(&pool, paris, &terms(today(), Period::Year, 30)).await;
    let mut tx = pool.begin().await.unwrap();
    let rolled = store::issue_due(&mut tx, c, today(), "Institution")
        .await
        .unwrap();
    assert_eq!(rolled[0].number, herd_domain::invoice::number(year, 4));
    tx.rollback().await.unwrap();
    let again = invoicing::issue_due(&pool, today()).await.unwrap();
    assert_eq!(again[0].number, herd_domain::invoice::number(year, 4));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn concurrent_issuing_leaves_no_gap_and_no_duplicate(pool: PgPool) {
    for i in 0..8 {
        let o = org(&pool, &format!("city{i}")).await;
        contract(
            &pool,
            o,
            &terms(today() - Duration::days(35), Period::Month, 30),
        )
        .await;
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            invoicing::issue_due(&pool, today()).await.unwrap().len()
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(
        total, 16,
        "two periods for each of the eight contracts, issued once"
    );
    let seqs: Vec<i32> = sqlx::query_scalar("SELECT seq FROM invoices ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(seqs, (1..=16).collect::<Vec<_>>());
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_overdue_invoice_starts_the_grace_period_and_payment_ends_it(pool: PgPool) {
    let outbox = std::env::temp_dir().join(format!("herd-invoicing-{}", Uuid::now_v7()));
    let mailer = Mailer::outbox(&outbox, "Herd <billing@herd.test>").unwrap();
    let nantes = org(&pool, "nantes").await;
    // Issued 33 days ago with 30 days to pay: 3 days overdue.
    let issued_on = today() - Duration::days(33);
    let c = contract(&pool, nantes, &terms(issued_on, Period::Year, 30)).await;
    let inv = invoicing::issue_due(&pool, issued_on)
        .await
        .unwrap()
        .remove(0);
    let now = OffsetDateTime::now_utc();
    herd_billing::access::sweep(&pool, now).await.unwrap();
    herd_testkit::jobs::run_jobs(&pool, &mailer).await;
    let state = |pool: PgPool| async move {
        herd_store::access::get(&pool, &contract_subject(c))
            .await
            .unwrap()
            .unwrap()
            .state
    };
    assert_eq!(state(pool.clone()).await, "grace");
    herd_billing::access::sweep(&pool, now + Duration::days(5))
        .await
        .unwrap();
    assert_eq!(
        state(pool.clone()).await,
        "suspended",
        "grace ends 7 days after the due date"
    );

    assert!(
        store::record_payment(&pool, inv.id, today(), "VIR-2026-555")
            .await
            .unwrap()
    );
    assert!(
        !store::record_payment(&pool, inv.id, today(), "again")
            .await
            .unwrap(),
        "paid once"
    );
    herd_billing::access::sweep(&pool, now + Duration::days(5))
        .await
        .unwrap();
    assert_eq!(state(pool.clone()).await, "running");
    herd_testkit::jobs::run_jobs(&pool, &mailer).await;

    let mails = read_outbox(&outbox).unwrap();
    let subjects: Vec<&str> = mails
        .iter()
        .filter(|m| m.to == "compta@nantes.example")
        .map(|m| m.subject.as_str())
        .collect();
    assert!(
        subjects.iter().any(|s| s.starts_with("Invoice HERD-")),
        "{subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.starts_with("Payment problem")),
        "{subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.contains("suspended")),
        "{subjects:?}"
    );
    assert!(
        subjects.iter().any(|s| s.contains("runs normally again")),
        "{subjects:?}"
    );
    let invoice_mail = mails
        .iter()
        .find(|m| m.subject.starts_with("Invoice HERD-"))
        .unwrap();
    assert!(
        invoice_mail.body.contains("PO-2026-118"),
        "{}",
        invoice_mail.body
    );
}
