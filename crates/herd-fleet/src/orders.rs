//! Fulfilment: from an order that is paid (Stripe) or approved (invoice billing) to an
//! instance row and the job that provisions it, written in the caller's transaction so
//! that the order's new state and the work it starts commit together.

use crate::jobs::ApplyInstance;
use crate::{default_version, FleetError};
use herd_domain::instance::owner_username;
use herd_domain::{OrgId, Slug};
use herd_store::billing::Order;
use herd_store::fleet::{self, NewInstance};
use sqlx::PgConnection;
use uuid::Uuid;

/// A free short name for a server on `domain`: from its first label (`social.lyon.fr` →
/// `social-lyon-fr` shortened), with `-2`, `-3`… when taken.
async fn free_slug(conn: &mut PgConnection, domain: &str) -> Result<String, FleetError> {
    let base = Slug::suggest(domain)
        .map(|s| s.as_str().to_owned())
        .unwrap_or_else(|| "server".to_owned());
    let mut base = base;
    base.truncate(34);
    let base = base.trim_end_matches('-').to_owned();
    for n in 1..1000 {
        let candidate = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        if !fleet::slug_taken(&mut *conn, &candidate).await? {
            return Ok(candidate);
        }
    }
    Err(FleetError::Conflict(format!(
        "no free short name for {domain}"
    )))
}

fn domain_used(domain: &str) -> FleetError {
    FleetError::Conflict(format!(
        "the domain {domain} is already used by another server"
    ))
}

/// Why a server with a custom domain waits.
pub const WAITING_FOR_DOMAIN: &str = "queued: waiting for the domain's DNS record";

fn hex_token(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The newest release the provider offers for `app` (a new server starts on it), or
/// Herd's default when none is listed.
pub async fn newest_release(conn: &mut PgConnection, app: &str) -> Result<String, FleetError> {
    let releases = fleet::release_versions(&mut *conn, app).await?;
    Ok(releases
        .into_iter()
        .filter_map(|r| Some((herd_domain::version::Version::parse(&r)?, r)))
        .filter(|(_, r)| !r.contains('-'))
        .max_by_key(|(v, _)| *v)
        .map(|(_, r)| r)
        .unwrap_or_else(|| default_version(app).to_owned()))
}

/// Creates the instance an order pays for, with its provisioning job, once: a second
/// call for the same order returns the instance made the first time, or the one an
/// import brought in under it. A deleted server still naming the order (an import
/// deleted before the order was paid or approved) gives it up, and a new one is made.
pub async fn fulfil(conn: &mut PgConnection, order: &Order) -> Result<Uuid, FleetError> {
    herd_store::lock_key(conn, &format!("fulfil:{}", order.id)).await?;
    if let Some(id) = fleet::live_by_order(&mut *conn, order.id).await? {
        return Ok(id);
    }
    fleet::release_order_of_deleted(&mut *conn, order.id).await?;
    let email = fleet::order_owner_email(&mut *conn, order.id)
        .await?
        .ok_or_else(|| {
            FleetError::Invalid(format!(
                "order {} has no member to become the server's owner",
                order.id
            ))
        })?;
    // A domain held by another server (proven, or under the base domain) is refused here
    // rather than at its first check: the order keeps its payment and says why.
    if fleet::domain_in_use(&mut *conn, &order.domain).await? {
        return Err(domain_used(&order.domain));
    }
    let slug = free_slug(conn, &order.domain).await?;
    let version = newest_release(conn, &order.app).await?;
    // A custom domain is proven by a DNS record before the server is provisioned.
    let token = if fleet::order_domain_preverified(&mut *conn, order.id).await? {
        None
    } else {
        let mut bytes = [0u8; 18];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Some(hex_token(&bytes))
    };
    let id = match fleet::insert_instance(
        conn,
        &NewInstance {
            org: OrgId(order.org_id),
            order: Some(order.id),
            app: &order.app,
            version: &version,
            plan_code: &order.plan_code,
            slug: &slug,
            domain: &order.domain,
            owner_username: &owner_username(&email),
            owner_email: &email,
            domain_token: token.as_deref(),
        },
    )
    .await
    {
        Ok(id) => id,
        Err(e) if e.is_conflict_on("instances_domain_key") => {
            return Err(domain_used(&order.domain))
        }
        Err(e) => return Err(e.into()),
    };
    fleet::ask_moderator_account_if_moderated(conn, id).await?;
    if token.is_some() {
        fleet::set_phase(
            conn,
            id,
            herd_domain::InstancePhase::Queued,
            Some(WAITING_FOR_DOMAIN),
        )
        .await?;
        herd_jobs::enqueue(
            &mut *conn,
            &crate::domains::VerifyDomain { instance_id: id },
        )
        .await?;
    } else {
        herd_jobs::enqueue(&mut *conn, &ApplyInstance { instance_id: id }).await?;
    }
    tracing::info!(order = %order.id, instance = %id, %slug, "order fulfilled: instance queued");
    Ok(id)
}
