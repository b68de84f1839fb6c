//! Fulfilment on the billing side: an order becomes fulfilled once, and in the same
//! transaction its server is created and queued for provisioning (`herd_fleet::orders`).
//! Stripe's webhook, the return from Checkout and an operator's approval of an invoice
//! order all come through here.

use herd_domain::OrgId;
use herd_fleet::FleetError;
use herd_store::billing;
use sqlx::PgConnection;
use uuid::Uuid;

/// Marks `order` (of `org`) fulfilled by `subscription` and starts its server. `true` the
/// first time; `false`, changing nothing, when it was fulfilled already or is not `org`'s.
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
    herd_fleet::orders::fulfil(conn, &row).await?;
    Ok(true)
}
