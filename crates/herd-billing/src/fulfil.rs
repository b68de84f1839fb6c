//! Fulfilment on the billing side: an order becomes fulfilled once, and in the same
//! transaction its server is created and queued for provisioning (`herd_fleet::orders`).
//! Stripe's webhook, the return from Checkout and an operator's approval of an invoice
//! order all come through here.

use herd_domain::invoice::Period;
use herd_domain::{OrgId, UserId};
use herd_fleet::FleetError;
use herd_store::audit::{self, NewEntry};
use herd_store::billing::{self, Order};
use herd_store::invoicing::{self, Terms};
use herd_store::{plans, StoreError};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Creates the order's server in a savepoint. When it cannot be created (its domain was
/// taken by another server since the order), the order keeps the reason, shown on its
/// page and to operators, and the caller's transaction goes on.
async fn start_server(conn: &mut PgConnection, order: &Order) -> Result<(), FleetError> {
    let mut server = sqlx::Connection::begin(&mut *conn).await?;
    match herd_fleet::orders::fulfil(&mut server, order).await {
        Ok(_) => server.commit().await?,
        Err(FleetError::Store(e)) => return Err(e.into()),
        Err(problem) => {
            server.rollback().await?;
            let problem = problem.to_string();
            tracing::error!(order = %order.id, %problem, "a paid order could not become a server");
            herd_store::fleet::set_order_problem(&mut *conn, order.id, &problem).await?;
        }
    }
    Ok(())
}

/// Marks `order` (of `org`) fulfilled by `subscription` and starts its server. `true` the
/// first time; `false`, changing nothing, when it was fulfilled already or is not `org`'s.
///
/// When the server cannot be created (its domain was taken by another server since the
/// order), the payment is still recorded: the order keeps the reason, shown on its page
/// and to operators, and the rest of the subscription's processing goes on.
pub async fn fulfil_paid(
    conn: &mut PgConnection,
    order: Uuid,
    org: OrgId,
    subscription: &str,
) -> Result<bool, FleetError> {
    if !billing::fulfil_order(&mut *conn, order, org, subscription).await? {
        return Ok(false);
    }
    let row = billing::order(&mut *conn, order)
        .await?
        .ok_or(FleetError::NotFound)?;
    start_server(conn, &row).await?;
    Ok(true)
}

/// Who approves or declines an invoice order (`None`: approved at once by the provider's
/// setting).
#[derive(Debug, Clone, Copy)]
pub struct Approver<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub ip: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("There is no such order.")]
    NotFound,
    #[error("This order does not wait for approval (it is {0}).")]
    NotAwaiting(String),
    #[error("The order's plan {0} no longer exists; change the order's plan first.")]
    NoPlan(String),
    #[error("A decline needs a reason the organization will read (at most 500 characters).")]
    NoReason,
    #[error("The server cannot be created: {0}. Nothing was changed; decline the order with this reason.")]
    NoServer(String),
    #[error("This organization's contract was ended for non-payment and its servers deleted; a new server under it would never be billed or suspended. Nothing was changed: settle the contract (a new one for this organization) before approving, or decline the order.")]
    ContractDeleted,
    #[error("This order has a server already (brought in by an import); declined, it would run outside billing. Nothing was changed: approve the order, or delete that server first.")]
    HasServer,
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

impl From<StoreError> for ApprovalError {
    fn from(e: StoreError) -> Self {
        ApprovalError::Fleet(FleetError::Store(e))
    }
}

impl From<sqlx::Error> for ApprovalError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

/// What an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub contract: Uuid,
    /// The organization had no contract: one was made from the plan and the order.
    pub new_contract: bool,
}

async fn awaiting(conn: &mut PgConnection, id: Uuid) -> Result<Order, ApprovalError> {
    let o = billing::lock_order(conn, id)
        .await?
        .ok_or(ApprovalError::NotFound)?;
    if o.payment != "invoice" || o.state != "pending" {
        return Err(ApprovalError::NotAwaiting(o.state));
    }
    Ok(o)
}

/// Approves an order paid by invoice: the organization's contract is made from the plan
/// and the order's billing details (a running contract is kept: the operator adjusts its
/// price for the new server), the order is fulfilled and its server created, audited, in
/// one transaction; then the invoices due go out.
pub async fn approve_invoice_order(
    pool: &PgPool,
    who: Option<Approver<'_>>,
    id: Uuid,
) -> Result<Approved, ApprovalError> {
    let mut tx = pool.begin().await?;
    let order = awaiting(&mut tx, id).await?;
    let org = OrgId(order.org_id);
    // Two approvals for one organization take turns: the second sees the first's contract.
    herd_store::lock_key(&mut tx, &format!("contract:{}", org.0)).await?;
    let today = time::OffsetDateTime::now_utc().date();
    // An ended contract is replaced by one for this order.
    let current = invoicing::contract_of(&mut *tx, org)
        .await?
        .filter(|c| c.ends_on.is_none_or(|end| end >= today));
    let (contract, new_contract) = match current {
        Some(c) => (c, false),
        None => {
            let plan = plans::by_code(&mut *tx, &order.plan_code)
                .await?
                .ok_or_else(|| ApprovalError::NoPlan(order.plan_code.clone()))?;
            let period = match plan.billing_interval.as_str() {
                "year" => Period::Year,
                _ => Period::Month,
            };
            let terms = Terms {
                plan_code: plan.code.clone(),
                price_minor: plan.price_minor,
                currency: plan.currency.to_ascii_uppercase(),
                period,
                payment_terms_days: 30,
                po_reference: order.po_reference.clone().unwrap_or_default(),
                billing_address: order.billing_address.clone().unwrap_or_default(),
                vat_id: order.vat_id.clone().unwrap_or_default(),
                // Orders do not ask for the country: until an operator enters it in the
                // contract, its invoices say VAT was not computed.
                country: None,
                starts_on: today,
                ends_on: None,
            };
            (invoicing::save_contract(&mut tx, org, &terms).await?, true)
        }
    };
    // A contract the access policy deleted is final: a server under it would run unbilled.
    let subject = crate::invoicing::contract_subject(contract.id);
    if herd_store::access::get(&mut *tx, &subject)
        .await?
        .is_some_and(|a| a.state == herd_domain::access::Access::Deleted.as_str())
    {
        return Err(ApprovalError::ContractDeleted);
    }
    billing::fulfil_invoice_order(&mut *tx, id).await?;
    // Nothing is paid yet: when the server cannot be created, nothing is approved.
    match herd_fleet::orders::fulfil(&mut tx, &order).await {
        Ok(_) => {}
        Err(FleetError::Store(e)) => return Err(e.into()),
        Err(refused) => return Err(ApprovalError::NoServer(refused.to_string())),
    }
    audit::record(
        &mut tx,
        NewEntry {
            actor: who.map(|w| (w.id, w.email)),
            org: Some(org),
            action: "billing.order.approved",
            target: id.to_string(),
            source_ip: who.map(|w| w.ip),
            details: serde_json::json!({
                "domain": order.domain, "plan": order.plan_code, "contract": contract.id,
                "new_contract": new_contract,
                "by": if who.is_some() { "operator" } else { "automatic approval" },
            }),
        },
    )
    .await?;
    tx.commit().await?;
    crate::invoicing::issue_for_contract(pool, contract.id, &contract.plan_code, today).await?;
    Ok(Approved {
        contract: contract.id,
        new_contract,
    })
}

/// The longest decline reason.
pub const MAX_REASON: usize = 500;

/// Whether an order may be approved without an operator: only an organization's first
/// contract (a second server needs its contract adjusted by hand).
pub async fn may_auto_approve(pool: &PgPool, org: OrgId) -> Result<bool, StoreError> {
    let today = time::OffsetDateTime::now_utc().date();
    Ok(invoicing::contract_of(pool, org)
        .await?
        .filter(|c| c.ends_on.is_none_or(|end| end >= today))
        .is_none())
}

/// Declines an order paid by invoice, with a reason the organization reads; audited.
pub async fn decline_invoice_order(
    pool: &PgPool,
    who: Approver<'_>,
    id: Uuid,
    reason: &str,
) -> Result<(), ApprovalError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(ApprovalError::NoReason);
    }
    let mut tx = pool.begin().await?;
    let order = awaiting(&mut tx, id).await?;
    // As fulfilment and imports do: after the order's row, its fulfilment lock.
    herd_store::lock_key(&mut tx, &format!("fulfil:{id}")).await?;
    if herd_store::fleet::live_by_order(&mut *tx, id)
        .await?
        .is_some()
    {
        return Err(ApprovalError::HasServer);
    }
    billing::decline_invoice_order(&mut *tx, id, reason).await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: Some(OrgId(order.org_id)),
            action: "billing.order.declined",
            target: id.to_string(),
            source_ip: Some(who.ip),
            details: serde_json::json!({ "domain": order.domain, "reason": reason }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
