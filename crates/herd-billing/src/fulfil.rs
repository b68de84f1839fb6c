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
    // A savepoint: a refusal undoes the server's half only.
    let mut server = sqlx::Connection::begin(&mut *conn).await?;
    match herd_fleet::orders::fulfil(&mut server, &row).await {
        Ok(_) => server.commit().await?,
        Err(FleetError::Store(e)) => return Err(e.into()),
        Err(problem) => {
            server.rollback().await?;
            let problem = problem.to_string();
            tracing::error!(%order, %problem, "a paid order could not become a server");
            herd_store::fleet::set_order_problem(&mut *conn, order, &problem).await?;
        }
    }
    Ok(true)
}
