//! Invoice billing: contracts, invoices issued with a gap-free number per year, payments.

use crate::{Page, Paged, StoreError};
use herd_domain::invoice::{self, Period};
use herd_domain::OrgId;
use sqlx::{PgConnection, PgExecutor};
use time::Date;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contract {
    pub id: Uuid,
    pub org_id: Uuid,
    pub plan_code: String,
    pub price_minor: i64,
    pub currency: String,
    pub period: String,
    pub payment_terms_days: i32,
    pub po_reference: String,
    pub billing_address: String,
    pub vat_id: String,
    pub starts_on: Date,
    pub next_invoice_on: Date,
    pub ends_on: Option<Date>,
}

/// A contract's terms, as an operator enters them.
#[derive(Debug, Clone)]
pub struct Terms {
    pub plan_code: String,
    pub price_minor: i64,
    pub currency: String,
    pub period: Period,
    pub payment_terms_days: i32,
    pub po_reference: String,
    pub billing_address: String,
    pub vat_id: String,
    pub starts_on: Date,
    pub ends_on: Option<Date>,
}

pub async fn contract_of(
    ex: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Option<Contract>, StoreError> {
    Ok(sqlx::query_as!(
        Contract,
        "SELECT id, org_id, plan_code, price_minor, currency, period, payment_terms_days, po_reference,
                billing_address, vat_id, starts_on, next_invoice_on, ends_on
         FROM contracts WHERE org_id = $1",
        org.0
    )
    .fetch_optional(ex)
    .await?)
}

pub async fn contract(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Contract>, StoreError> {
    Ok(sqlx::query_as!(
        Contract,
        "SELECT id, org_id, plan_code, price_minor, currency, period, payment_terms_days, po_reference,
                billing_address, vat_id, starts_on, next_invoice_on, ends_on
         FROM contracts WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await?)
}

/// Creates the organization's contract, or updates its terms (the start date of an
/// existing contract with invoices stays, so the schedule does not move under them). A
/// change of billing period after invoices were issued takes effect where the last issued
/// invoice ends: nothing is billed twice and no period is skipped.
pub async fn save_contract(
    conn: &mut PgConnection,
    org: OrgId,
    t: &Terms,
) -> Result<Contract, StoreError> {
    Ok(sqlx::query_as!(
        Contract,
        "INSERT INTO contracts (id, org_id, plan_code, price_minor, currency, period, payment_terms_days,
                                po_reference, billing_address, vat_id, starts_on, next_invoice_on, ends_on,
                                period_anchor)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $11)
         ON CONFLICT (org_id) DO UPDATE SET
             plan_code = EXCLUDED.plan_code, price_minor = EXCLUDED.price_minor,
             currency = EXCLUDED.currency, period = EXCLUDED.period,
             payment_terms_days = EXCLUDED.payment_terms_days, po_reference = EXCLUDED.po_reference,
             billing_address = EXCLUDED.billing_address, vat_id = EXCLUDED.vat_id,
             ends_on = EXCLUDED.ends_on, updated_at = now(),
             starts_on = CASE WHEN EXISTS (SELECT 1 FROM invoices i WHERE i.contract_id = contracts.id)
                              THEN contracts.starts_on ELSE EXCLUDED.starts_on END,
             next_invoice_on = CASE
                 WHEN NOT EXISTS (SELECT 1 FROM invoices i WHERE i.contract_id = contracts.id)
                     THEN EXCLUDED.starts_on
                 WHEN contracts.period <> EXCLUDED.period
                     THEN (SELECT max(i.period_end) + 1 FROM invoices i WHERE i.contract_id = contracts.id)
                 ELSE contracts.next_invoice_on END,
             period_anchor = CASE
                 WHEN NOT EXISTS (SELECT 1 FROM invoices i WHERE i.contract_id = contracts.id)
                     THEN EXCLUDED.starts_on
                 WHEN contracts.period <> EXCLUDED.period
                     THEN (SELECT max(i.period_end) + 1 FROM invoices i WHERE i.contract_id = contracts.id)
                 ELSE contracts.period_anchor END,
             anchor_count = CASE
                 WHEN NOT EXISTS (SELECT 1 FROM invoices i WHERE i.contract_id = contracts.id) THEN 0
                 WHEN contracts.period <> EXCLUDED.period
                     THEN (SELECT count(*)::int FROM invoices i WHERE i.contract_id = contracts.id)
                 ELSE contracts.anchor_count END
         RETURNING id, org_id, plan_code, price_minor, currency, period, payment_terms_days, po_reference,
                   billing_address, vat_id, starts_on, next_invoice_on, ends_on",
        Uuid::now_v7(),
        org.0,
        t.plan_code,
        t.price_minor,
        t.currency,
        t.period.as_str(),
        t.payment_terms_days,
        t.po_reference,
        t.billing_address,
        t.vat_id,
        t.starts_on,
        t.ends_on
    )
    .fetch_one(conn)
    .await?)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    pub id: Uuid,
    pub contract_id: Uuid,
    pub org_id: Uuid,
    pub number: String,
    pub issued_on: Date,
    pub due_on: Date,
    pub period_start: Date,
    pub period_end: Date,
    pub description: String,
    pub amount_minor: i64,
    pub currency: String,
    pub po_reference: String,
    pub billing_address: String,
    pub vat_id: String,
    pub status: String,
    pub paid_on: Option<Date>,
    pub payment_reference: Option<String>,
}

/// Takes the next number of `year`, in the caller's transaction: a rollback gives it back.
async fn next_number(conn: &mut PgConnection, year: i32) -> Result<i32, StoreError> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO invoice_numbers (year, last) VALUES ($1, 1)
         ON CONFLICT (year) DO UPDATE SET last = invoice_numbers.last + 1
         RETURNING last",
        year
    )
    .fetch_one(conn)
    .await?)
}

/// Issues every invoice of the contract that is due by `today` (one per period, never
/// twice), in the caller's transaction, locking the contract first. Returns the invoices
/// issued.
pub async fn issue_due(
    conn: &mut PgConnection,
    contract: Uuid,
    today: Date,
    plan_name: &str,
) -> Result<Vec<Invoice>, StoreError> {
    let Some(c) = sqlx::query_as!(
        Contract,
        "SELECT id, org_id, plan_code, price_minor, currency, period, payment_terms_days, po_reference,
                billing_address, vat_id, starts_on, next_invoice_on, ends_on
         FROM contracts WHERE id = $1 FOR UPDATE",
        contract
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Vec::new());
    };
    let Some(period) = Period::parse(&c.period) else {
        return Ok(Vec::new());
    };
    let issued = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM invoices WHERE contract_id = $1"#,
        c.id
    )
    .fetch_one(&mut *conn)
    .await?;
    // Periods count from where the current billing period took effect.
    let anchor = sqlx::query!(
        r#"SELECT coalesce(period_anchor, starts_on) AS "period_anchor!", anchor_count
           FROM contracts WHERE id = $1"#,
        c.id
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut issued_count = u32::try_from(issued - i64::from(anchor.anchor_count)).unwrap_or(0);
    let mut out = Vec::new();
    loop {
        let start = period.nth(anchor.period_anchor, issued_count);
        if start > today || c.ends_on.is_some_and(|end| start > end) {
            sqlx::query!(
                "UPDATE contracts SET next_invoice_on = $2 WHERE id = $1",
                c.id,
                start
            )
            .execute(&mut *conn)
            .await?;
            return Ok(out);
        }
        let end = period.nth(anchor.period_anchor, issued_count + 1) - time::Duration::days(1);
        let year = today.year();
        let seq = next_number(conn, year).await?;
        let inv = sqlx::query_as!(
            Invoice,
            "INSERT INTO invoices (id, contract_id, org_id, number, year, seq, issued_on, due_on, period_start,
                                   period_end, description, amount_minor, currency, po_reference,
                                   billing_address, vat_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             RETURNING id, contract_id, org_id, number, issued_on, due_on, period_start, period_end, description,
                       amount_minor, currency, po_reference, billing_address, vat_id, status, paid_on,
                       payment_reference",
            Uuid::now_v7(),
            c.id,
            c.org_id,
            invoice::number(year, seq),
            year,
            seq,
            today,
            invoice::due_on(today, i64::from(c.payment_terms_days)),
            start,
            end,
            format!("Hosting, plan {plan_name}, {start} to {end}"),
            c.price_minor,
            c.currency,
            c.po_reference,
            c.billing_address,
            c.vat_id
        )
        .fetch_one(&mut *conn)
        .await?;
        out.push(inv);
        issued_count += 1;
    }
}

/// Contracts with an invoice due by `today`.
pub async fn contracts_due(
    ex: impl PgExecutor<'_>,
    today: Date,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    let rows = sqlx::query!(
        "SELECT id, plan_code FROM contracts WHERE next_invoice_on <= $1 AND (ends_on IS NULL OR next_invoice_on <= ends_on)",
        today
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.plan_code)).collect())
}

pub async fn invoice(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Invoice>, StoreError> {
    Ok(sqlx::query_as!(
        Invoice,
        "SELECT id, contract_id, org_id, number, issued_on, due_on, period_start, period_end, description,
                amount_minor, currency, po_reference, billing_address, vat_id, status, paid_on, payment_reference
         FROM invoices WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await?)
}

pub async fn invoices_of_org(
    ex: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Vec<Invoice>, StoreError> {
    Ok(sqlx::query_as!(
        Invoice,
        "SELECT id, contract_id, org_id, number, issued_on, due_on, period_start, period_end, description,
                amount_minor, currency, po_reference, billing_address, vat_id, status, paid_on, payment_reference
         FROM invoices WHERE org_id = $1 ORDER BY issued_on DESC, number DESC LIMIT 100",
        org.0
    )
    .fetch_all(ex)
    .await?)
}

/// Invoices for operators: all, or only open ones past their due date.
pub async fn list_invoices(
    ex: impl PgExecutor<'_>,
    overdue_only: bool,
    today: Date,
    page: Page,
) -> Result<Paged<Invoice>, StoreError> {
    let rows = sqlx::query_as!(
        Invoice,
        "SELECT id, contract_id, org_id, number, issued_on, due_on, period_start, period_end, description,
                amount_minor, currency, po_reference, billing_address, vat_id, status, paid_on, payment_reference
         FROM invoices
         WHERE NOT $1 OR (status = 'open' AND due_on < $2)
         ORDER BY issued_on DESC, number DESC
         LIMIT $3 OFFSET $4",
        overdue_only,
        today,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(rows))
}

/// Records a payment; `false` when the invoice was paid already.
pub async fn record_payment(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    paid_on: Date,
    reference: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE invoices SET status = 'paid', paid_on = $2, payment_reference = $3 WHERE id = $1 AND status = 'open'",
        id,
        paid_on,
        reference
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The oldest due date among a contract's unpaid invoices past due at `today`.
pub async fn overdue_since(
    ex: impl PgExecutor<'_>,
    contract: Uuid,
    today: Date,
) -> Result<Option<Date>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT min(due_on) FROM invoices WHERE contract_id = $1 AND status = 'open' AND due_on < $2",
        contract,
        today
    )
    .fetch_one(ex)
    .await?)
}

/// Every contract with its organization, for the access policy.
pub async fn all_contracts(ex: impl PgExecutor<'_>) -> Result<Vec<Contract>, StoreError> {
    Ok(sqlx::query_as!(
        Contract,
        "SELECT id, org_id, plan_code, price_minor, currency, period, payment_terms_days, po_reference,
                billing_address, vat_id, starts_on, next_invoice_on, ends_on
         FROM contracts"
    )
    .fetch_all(ex)
    .await?)
}
