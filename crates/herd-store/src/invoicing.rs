//! Invoice billing: contracts, invoices issued with a gap-free number per year (each
//! frozen at issue: issuer, customer, lines, VAT and totals), payments.

use crate::{Page, Paged, StoreError};
use herd_domain::invoice::{self, Period};
use herd_domain::vat::{self, Country, TaxTreatment, VatId};
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
    /// The customer's country (ISO 3166-1 alpha-2), '' when not recorded.
    pub country: String,
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
    /// Checked against `country` (an EU VAT id's prefix is the country's).
    pub vat_id: String,
    /// Where the customer is established; VAT depends on it.
    pub country: Option<Country>,
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
                billing_address, vat_id, country, starts_on, next_invoice_on, ends_on
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
                billing_address, vat_id, country, starts_on, next_invoice_on, ends_on
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
                                period_anchor, country)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $11, $13)
         ON CONFLICT (org_id) DO UPDATE SET
             plan_code = EXCLUDED.plan_code, price_minor = EXCLUDED.price_minor,
             currency = EXCLUDED.currency, period = EXCLUDED.period,
             payment_terms_days = EXCLUDED.payment_terms_days, po_reference = EXCLUDED.po_reference,
             billing_address = EXCLUDED.billing_address, vat_id = EXCLUDED.vat_id,
             country = EXCLUDED.country, ends_on = EXCLUDED.ends_on, updated_at = now(),
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
                   billing_address, vat_id, country, starts_on, next_invoice_on, ends_on",
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
        t.ends_on,
        t.country.map(String::from).unwrap_or_default()
    )
    .fetch_one(conn)
    .await?)
}

/// An issued invoice. Everything but its payment (`status`, `paid_on`,
/// `payment_reference`) was copied when it was issued and never changes (the database
/// refuses it): a renamed organization or a changed contract leaves it as it was.
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
    /// The amount due: the gross.
    pub amount_minor: i64,
    pub currency: String,
    pub po_reference: String,
    pub billing_address: String,
    pub vat_id: String,
    /// The issuer block (name, address, bank details) as configured at issue.
    pub issuer: String,
    pub issuer_vat_id: String,
    pub customer_name: String,
    pub customer_country: String,
    pub net_minor: i64,
    pub tax_minor: i64,
    pub gross_minor: i64,
    pub vat_rate_bp: i32,
    pub tax_treatment: TaxTreatment,
    /// The VAT mention printed on the invoice (reverse charge, outside the scope of EU
    /// VAT, why VAT was not computed), or ''.
    pub tax_note: String,
    pub status: String,
    pub paid_on: Option<Date>,
    pub payment_reference: Option<String>,
}

/// An invoice as stored; its treatment is parsed at this edge.
struct InvoiceRow {
    id: Uuid,
    contract_id: Uuid,
    org_id: Uuid,
    number: String,
    issued_on: Date,
    due_on: Date,
    period_start: Date,
    period_end: Date,
    description: String,
    amount_minor: i64,
    currency: String,
    po_reference: String,
    billing_address: String,
    vat_id: String,
    issuer: String,
    issuer_vat_id: String,
    customer_name: String,
    customer_country: String,
    net_minor: i64,
    tax_minor: i64,
    gross_minor: i64,
    vat_rate_bp: i32,
    tax_treatment: String,
    tax_note: String,
    status: String,
    paid_on: Option<Date>,
    payment_reference: Option<String>,
}

impl From<InvoiceRow> for Invoice {
    fn from(r: InvoiceRow) -> Self {
        Self {
            id: r.id,
            contract_id: r.contract_id,
            org_id: r.org_id,
            number: r.number,
            issued_on: r.issued_on,
            due_on: r.due_on,
            period_start: r.period_start,
            period_end: r.period_end,
            description: r.description,
            amount_minor: r.amount_minor,
            currency: r.currency,
            po_reference: r.po_reference,
            billing_address: r.billing_address,
            vat_id: r.vat_id,
            issuer: r.issuer,
            issuer_vat_id: r.issuer_vat_id,
            customer_name: r.customer_name,
            customer_country: r.customer_country,
            net_minor: r.net_minor,
            tax_minor: r.tax_minor,
            gross_minor: r.gross_minor,
            vat_rate_bp: r.vat_rate_bp,
            // The column's check allows only the treatments the domain knows.
            tax_treatment: TaxTreatment::parse(&r.tax_treatment)
                .unwrap_or(TaxTreatment::NotComputed),
            tax_note: r.tax_note,
            status: r.status,
            paid_on: r.paid_on,
            payment_reference: r.payment_reference,
        }
    }
}

/// Who invoices are issued by, as `herd serve` records it at start from its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Issuer {
    /// Name, address and bank details, several lines (`HERD_INVOICE_ISSUER`).
    pub details: String,
    /// Where the issuer is established (`HERD_INVOICE_ISSUER_COUNTRY`); without it no VAT
    /// is computed.
    pub country: Option<Country>,
    /// The issuer's own VAT id (`HERD_INVOICE_ISSUER_VAT_ID`).
    pub vat_id: Option<VatId>,
}

/// Records who invoices are issued by from now on (invoices issued before keep theirs). A
/// process started without the issuer's country keeps the country (and VAT id) recorded
/// before: one replica started without the setting must not turn VAT off for everyone.
#[tracing::instrument(skip_all)]
pub async fn record_issuer(ex: impl PgExecutor<'_>, issuer: &Issuer) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO invoice_issuer (singleton, details, country, vat_id) VALUES (true, $1, $2, $3)
         ON CONFLICT (singleton) DO UPDATE SET details = EXCLUDED.details,
             country = CASE WHEN EXCLUDED.country = '' THEN invoice_issuer.country ELSE EXCLUDED.country END,
             vat_id = CASE WHEN EXCLUDED.country = '' THEN invoice_issuer.vat_id ELSE EXCLUDED.vat_id END,
             recorded_at = now()",
        issuer.details,
        issuer.country.map(String::from).unwrap_or_default(),
        issuer.vat_id.as_ref().map(VatId::as_str).unwrap_or_default()
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Who invoices are issued by: as last recorded, or nobody known (no VAT computed).
pub async fn issuer(ex: impl PgExecutor<'_>) -> Result<Issuer, StoreError> {
    let Some(row) = sqlx::query!("SELECT details, country, vat_id FROM invoice_issuer")
        .fetch_optional(ex)
        .await?
    else {
        return Ok(Issuer::default());
    };
    let country = Country::parse(&row.country).ok();
    Ok(Issuer {
        details: row.details,
        vat_id: country.and_then(|c| VatId::parse(&row.vat_id, c).ok()),
        country,
    })
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
                billing_address, vat_id, country, starts_on, next_invoice_on, ends_on
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
    // Frozen on each invoice: the issuer and the customer's name as they are now, and the
    // VAT the contract's terms give.
    let issuer = issuer(&mut *conn).await?;
    let customer_name =
        sqlx::query_scalar!("SELECT name FROM organizations WHERE id = $1", c.org_id)
            .fetch_one(&mut *conn)
            .await?;
    let customer = Country::parse(&c.country).ok();
    let customer_vat_id = customer
        .filter(|_| !c.vat_id.is_empty())
        .and_then(|country| VatId::parse(&c.vat_id, country).ok());
    let tax = vat::vat_for(issuer.country, customer, customer_vat_id.is_some());
    if let Some(reason) = vat::held(
        issuer.country,
        issuer.vat_id.is_some(),
        customer.is_some(),
        &tax,
    ) {
        // Nothing issued (a wrong VAT would be frozen on it); asked again every minute,
        // and the contract's page in the console says why.
        tracing::warn!(contract = %c.id, reason, "invoices held");
        return Ok(Vec::new());
    }
    let totals = vat::totals(c.price_minor, tax.rate_bp);
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
            InvoiceRow,
            "INSERT INTO invoices (id, contract_id, org_id, number, year, seq, issued_on, due_on, period_start,
                                   period_end, description, amount_minor, currency, po_reference,
                                   billing_address, vat_id, issuer, issuer_vat_id, customer_name,
                                   customer_country, net_minor, tax_minor, gross_minor, vat_rate_bp,
                                   tax_treatment, tax_note)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                     $20, $21, $22, $12, $23, $24, $25)
             RETURNING id, contract_id, org_id, number, issued_on, due_on, period_start, period_end, description,
                       amount_minor, currency, po_reference, billing_address, vat_id, issuer, issuer_vat_id,
                       customer_name, customer_country, net_minor, tax_minor, gross_minor, vat_rate_bp,
                       tax_treatment, tax_note, status, paid_on, payment_reference",
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
            totals.gross,
            c.currency,
            c.po_reference,
            c.billing_address,
            customer_vat_id.as_ref().map_or(c.vat_id.as_str(), VatId::as_str),
            issuer.details,
            issuer.vat_id.as_ref().map(VatId::as_str).unwrap_or_default(),
            customer_name,
            c.country,
            totals.net,
            totals.tax,
            i32::try_from(tax.rate_bp).unwrap_or(0),
            tax.treatment.as_str(),
            tax.note
        )
        .fetch_one(&mut *conn)
        .await?;
        out.push(inv.into());
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
        InvoiceRow,
        "SELECT id, contract_id, org_id, number, issued_on, due_on, period_start, period_end, description,
                amount_minor, currency, po_reference, billing_address, vat_id, issuer, issuer_vat_id,
                customer_name, customer_country, net_minor, tax_minor, gross_minor, vat_rate_bp,
                tax_treatment, tax_note, status, paid_on, payment_reference
         FROM invoices WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await?
    .map(Invoice::from))
}

pub async fn invoices_of_org(
    ex: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Vec<Invoice>, StoreError> {
    Ok(sqlx::query_as!(
        InvoiceRow,
        "SELECT id, contract_id, org_id, number, issued_on, due_on, period_start, period_end, description,
                amount_minor, currency, po_reference, billing_address, vat_id, issuer, issuer_vat_id,
                customer_name, customer_country, net_minor, tax_minor, gross_minor, vat_rate_bp,
                tax_treatment, tax_note, status, paid_on, payment_reference
         FROM invoices WHERE org_id = $1 ORDER BY issued_on DESC, number DESC LIMIT 100",
        org.0
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(Invoice::from)
    .collect())
}

/// Invoices for operators: all, or only open ones past their due date.
pub async fn list_invoices(
    ex: impl PgExecutor<'_>,
    overdue_only: bool,
    today: Date,
    page: Page,
) -> Result<Paged<Invoice>, StoreError> {
    let rows = sqlx::query_as!(
        InvoiceRow,
        "SELECT id, contract_id, org_id, number, issued_on, due_on, period_start, period_end, description,
                amount_minor, currency, po_reference, billing_address, vat_id, issuer, issuer_vat_id,
                customer_name, customer_country, net_minor, tax_minor, gross_minor, vat_rate_bp,
                tax_treatment, tax_note, status, paid_on, payment_reference
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
    Ok(page.finish(rows.into_iter().map(Invoice::from).collect()))
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
                billing_address, vat_id, country, starts_on, next_invoice_on, ends_on
         FROM contracts"
    )
    .fetch_all(ex)
    .await?)
}
