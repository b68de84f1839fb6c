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
        country: None,
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
    herd_billing::access::sweep(&pool, now, None).await.unwrap();
    herd_testkit::jobs::run_jobs(&pool, &mailer).await;
    let state = |pool: PgPool| async move {
        herd_store::access::get(&pool, &contract_subject(c))
            .await
            .unwrap()
            .unwrap()
            .state
    };
    assert_eq!(state(pool.clone()).await, "grace");
    herd_billing::access::sweep(&pool, now + Duration::days(5), None)
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
    herd_billing::access::sweep(&pool, now + Duration::days(5), None)
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

/// Whether another backend waits for a row lock on `tenant_access`.
async fn waits_for_the_row(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT count(*) > 0 FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND query ILIKE '%FROM tenant_access%FOR UPDATE%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_payment_recorded_while_the_sweep_waits_for_the_row_wins(pool: PgPool) {
    let nantes = org(&pool, "nantes").await;
    let issued_on = today() - Duration::days(33);
    let c = contract(&pool, nantes, &terms(issued_on, Period::Year, 30)).await;
    let inv = invoicing::issue_due(&pool, issued_on)
        .await
        .unwrap()
        .remove(0);
    let now = OffsetDateTime::now_utc();
    herd_billing::access::sweep(&pool, now, None).await.unwrap();
    let subject = contract_subject(c);
    // Another transaction holds the subject's row (a payment being recorded, say).
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tenant_access WHERE subject = $1 FOR UPDATE")
        .bind(&subject)
        .execute(&mut *holder)
        .await
        .unwrap();
    // The sweep, five days on (past the grace period), reaches the row and waits.
    let sweep = tokio::spawn({
        let pool = pool.clone();
        async move {
            herd_billing::access::sweep(&pool, now + Duration::days(5), None)
                .await
                .unwrap()
        }
    });
    while !waits_for_the_row(&pool).await {
        assert!(!sweep.is_finished(), "the sweep did not wait for the row");
        tokio::task::yield_now().await;
    }
    // Meanwhile the payment is recorded, then the row is let go.
    assert!(
        store::record_payment(&pool, inv.id, today(), "VIR-2026-556")
            .await
            .unwrap()
    );
    holder.commit().await.unwrap();
    sweep.await.unwrap();
    let a = herd_store::access::get(&pool, &subject)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.state, "running", "the payment wins");
    let to: Vec<String> = herd_store::access::transitions_of(&pool, &subject)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.to_state)
        .collect();
    assert!(!to.contains(&"suspended".to_owned()), "{to:?}");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_period_change_after_invoices_neither_bills_again_nor_skips(pool: PgPool) {
    // Yearly, invoiced once; then monthly: the months the year covers are not billed again.
    let lyon = org(&pool, "lyon").await;
    let start = today() - Duration::days(70);
    contract(&pool, lyon, &terms(start, Period::Year, 30)).await;
    let year = invoicing::issue_due(&pool, today()).await.unwrap();
    assert_eq!(year.len(), 1);
    contract(&pool, lyon, &terms(start, Period::Month, 30)).await;
    assert!(
        invoicing::issue_due(&pool, today())
            .await
            .unwrap()
            .is_empty(),
        "the year is paid for"
    );
    let after_year = year[0].period_end + Duration::days(1);
    let next = invoicing::issue_due(&pool, after_year).await.unwrap();
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(
        next[0].period_start, after_year,
        "starts where the year ended"
    );
    assert_eq!(
        next[0].period_end,
        Period::Month.next(after_year) - Duration::days(1)
    );

    // Monthly, invoiced three times; then yearly: the next period starts after the third
    // month, not three years on.
    let nantes = org(&pool, "nantes").await;
    contract(&pool, nantes, &terms(start, Period::Month, 30)).await;
    let months = invoicing::issue_due(&pool, today()).await.unwrap();
    let months: Vec<_> = months
        .into_iter()
        .filter(|i| i.org_id == nantes.0)
        .collect();
    assert_eq!(months.len(), 3);
    contract(&pool, nantes, &terms(start, Period::Year, 30)).await;
    let after_months = months[2].period_end + Duration::days(1);
    let next: Vec<_> = invoicing::issue_due(&pool, after_months)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.org_id == nantes.0)
        .collect();
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(next[0].period_start, after_months, "no period skipped");
    assert_eq!(
        next[0].period_end,
        Period::Year.next(after_months) - Duration::days(1)
    );
}
