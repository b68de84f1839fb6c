//! Invoice billing's moving parts: issuing the invoices contracts are due for (each emailed
//! to the organization's owners and billing members), and what overdue invoices mean for
//! the access policy.
//!
//! An invoice is frozen when it is issued: the issuer (as `herd serve` recorded it at start,
//! see [`record_issuer`]), the customer's name and country, its lines, VAT and totals are
//! copied onto it, and its page and email read only that copy.

use crate::jobs::InvoiceEmail;
use herd_domain::access::Standing;
use herd_domain::OrgId;
use herd_store::invoicing::{self, Contract, Invoice, Issuer};
use herd_store::{plans, StoreError};
use sqlx::PgPool;
use time::{Date, OffsetDateTime, Time};

pub fn contract_subject(contract: uuid::Uuid) -> String {
    format!("contract:{contract}")
}

/// Creates an organization's contract or changes its terms, in the caller's transaction.
/// A change of plan moves the servers billed under the contract on its old plan to the new
/// one (their replicas and resources follow through their apply jobs, queued in this
/// transaction; a server ordered on another plan under the same contract stays on it);
/// invoices already issued stand, and the contract's price applies from the next period it
/// invoices (invoice billing does not prorate). Returns the contract and the servers moved.
pub async fn save_contract(
    conn: &mut sqlx::PgConnection,
    org: OrgId,
    terms: &invoicing::Terms,
) -> Result<(Contract, Vec<uuid::Uuid>), herd_fleet::FleetError> {
    herd_store::lock_key(&mut *conn, &format!("contract:{}", org.0)).await?;
    let before = invoicing::contract_of(&mut *conn, org).await?;
    let saved = invoicing::save_contract(&mut *conn, org, terms).await?;
    let moved = match before {
        Some(b) if b.plan_code != saved.plan_code => {
            herd_fleet::lifecycle::follow_plan(
                &mut *conn,
                &contract_subject(saved.id),
                Some(&b.plan_code),
                &saved.plan_code,
            )
            .await?
        }
        _ => Vec::new(),
    };
    Ok((saved, moved))
}

/// Records who invoices are issued by from now on (`herd serve` does at start, from
/// HERD_INVOICE_ISSUER, HERD_INVOICE_ISSUER_COUNTRY and HERD_INVOICE_ISSUER_VAT_ID): every
/// process that issues invoices, a separate `herd worker` included, reads it at issue.
pub async fn record_issuer(pool: &PgPool, issuer: &Issuer) -> Result<(), StoreError> {
    invoicing::record_issuer(pool, issuer).await?;
    match issuer.country {
        None => tracing::warn!(
            "HERD_INVOICE_ISSUER_COUNTRY is not set: invoices are issued without VAT, saying it was not computed"
        ),
        Some(c) if !c.is_eu() => tracing::warn!(
            country = %c,
            "the invoice issuer is outside the EU: invoices are issued without VAT, saying it was not computed"
        ),
        Some(_) if issuer.vat_id.is_none() => tracing::warn!(
            "HERD_INVOICE_ISSUER_VAT_ID is not set: invoices do not show the issuer's VAT id"
        ),
        Some(_) => {}
    }
    Ok(())
}

/// Issues every invoice due by `today`; returns them.
pub async fn issue_due(pool: &PgPool, today: Date) -> Result<Vec<Invoice>, StoreError> {
    let mut all = Vec::new();
    for (contract, plan_code) in invoicing::contracts_due(pool, today).await? {
        all.extend(issue_for_contract(pool, contract, &plan_code, today).await?);
    }
    Ok(all)
}

/// Issues the invoices one contract is due for by `today`, each queued to be emailed.
pub async fn issue_for_contract(
    pool: &PgPool,
    contract: uuid::Uuid,
    plan_code: &str,
    today: Date,
) -> Result<Vec<Invoice>, StoreError> {
    let plan_name = plans::by_code(pool, plan_code)
        .await?
        .map_or(plan_code.to_owned(), |p| p.name);
    let mut tx = pool.begin().await?;
    let issued = invoicing::issue_due(&mut tx, contract, today, &plan_name).await?;
    for inv in &issued {
        herd_jobs::enqueue(&mut *tx, &InvoiceEmail { invoice_id: inv.id }).await?;
    }
    tx.commit().await?;
    for inv in &issued {
        tracing::info!(number = %inv.number, org = %inv.org_id, "invoice issued");
    }
    Ok(issued)
}

/// Where a contract stands at `today`: not started, paid up, overdue since the oldest
/// unpaid due date, or ended.
pub async fn standing(
    conn: &mut sqlx::PgConnection,
    c: &Contract,
    today: Date,
) -> Result<Standing, StoreError> {
    let at = |d: Date| d.with_time(Time::MIDNIGHT).assume_utc();
    if c.starts_on > today {
        return Ok(Standing::NotStarted);
    }
    if let Some(end) = c.ends_on.filter(|e| *e < today) {
        return Ok(Standing::Ended { since: at(end) });
    }
    Ok(match invoicing::overdue_since(conn, c.id, today).await? {
        Some(due) => Standing::Overdue { since: at(due) },
        None => Standing::Good,
    })
}

/// Recomputes every contract's access, each decided under its row lock from the invoices
/// read under it (a payment recorded while the sweep runs wins); returns how many changed.
pub async fn sweep(pool: &PgPool, now: OffsetDateTime) -> Result<usize, StoreError> {
    let mut changed = 0;
    for c in invoicing::all_contracts(pool).await? {
        let subject = contract_subject(c.id);
        if crate::access::refresh(pool, &subject, OrgId(c.org_id), "invoice", now, None)
            .await?
            .is_some()
        {
            changed += 1;
        }
    }
    Ok(changed)
}

/// The emails of an issued invoice, written from the invoice alone (its customer's name as
/// issued; only the recipients are the organization's current billing contacts).
pub async fn invoice_emails(
    pool: &PgPool,
    id: uuid::Uuid,
) -> Result<Vec<herd_mail::Email>, StoreError> {
    let Some(inv) = invoicing::invoice(pool, id).await? else {
        return Ok(Vec::new());
    };
    let money = |minor| herd_domain::Money {
        minor,
        currency: inv.currency.clone(),
    };
    let subject = format!("Invoice {} for {}", inv.number, inv.customer_name);
    let vat = if inv.tax_treatment.charges_vat() {
        format!(
            "net {}, VAT {} {}, total {}",
            money(inv.net_minor),
            herd_domain::vat::percent(u32::try_from(inv.vat_rate_bp).unwrap_or(0)),
            money(inv.tax_minor),
            money(inv.gross_minor)
        )
    } else {
        format!("{}, no VAT charged", money(inv.gross_minor))
    };
    let body = format!(
        "Invoice {} for {}, {}: {vat}. It is due on {}{}.{} You can see and print it in Herd (Billing › Invoices).",
        inv.number,
        inv.customer_name,
        inv.description,
        inv.due_on,
        if inv.po_reference.is_empty() {
            String::new()
        } else {
            format!(" (purchase order {})", inv.po_reference)
        },
        if inv.tax_note.is_empty() {
            String::new()
        } else {
            format!("\n\n{}.", inv.tax_note)
        }
    );
    crate::access::to_billing_contacts(pool, OrgId(inv.org_id), &subject, &body).await
}
