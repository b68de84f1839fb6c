//! Choosing a cluster for an instance, under a lock so that concurrent placements take
//! turns, and recording the choice (or why it waits).

use crate::FleetError;
use herd_domain::instance::{place, NoPlacement};
use herd_domain::InstancePhase;
use herd_store::fleet;
use sqlx::PgPool;
use uuid::Uuid;

/// Where an instance stands after [`place_instance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// On this cluster (now or before).
    On { cluster: Uuid },
    /// Still waiting, for this reason.
    Waiting(NoPlacement),
    /// It is to be deleted: nothing to place.
    Gone,
    /// Its custom domain is not proven yet.
    DomainUnproven,
}

/// Places instance `id` if it has no cluster yet: by the organization's preferred region,
/// then free room. When no cluster can take it, the instance shows why it waits. With
/// `then_apply`, a newly placed instance's apply job is queued in the same transaction.
pub async fn place_instance(
    pool: &PgPool,
    id: Uuid,
    then_apply: bool,
) -> Result<Placed, FleetError> {
    let mut tx = pool.begin().await?;
    let candidates = fleet::placement_candidates(&mut tx).await?;
    let inst = fleet::lock_instance(&mut tx, id)
        .await?
        .ok_or(FleetError::NotFound)?;
    if let Some(cluster) = inst.cluster_id {
        return Ok(Placed::On { cluster });
    }
    if inst.desired == herd_domain::Desired::Deleted {
        return Ok(Placed::Gone);
    }
    if inst.domain_verified_at.is_none() {
        return Ok(Placed::DomainUnproven);
    }
    let region = fleet::preferred_region(&mut *tx, inst.org_id).await?;
    match place(&candidates, region.as_deref()) {
        Ok(cluster) => {
            let name = fleet::cluster(&mut *tx, cluster)
                .await?
                .map(|c| c.name)
                .unwrap_or_default();
            fleet::set_cluster(&mut tx, id, cluster, &name).await?;
            fleet::set_phase(
                &mut tx,
                id,
                InstancePhase::Provisioning,
                Some(&format!("sent to cluster {name}")),
            )
            .await?;
            if then_apply {
                herd_jobs::enqueue(&mut *tx, &crate::jobs::ApplyInstance { instance_id: id })
                    .await?;
            }
            tx.commit().await?;
            tracing::info!(instance = %id, cluster = %name, "instance placed");
            Ok(Placed::On { cluster })
        }
        Err(why) => {
            fleet::set_phase(&mut tx, id, InstancePhase::Queued, Some(why.message())).await?;
            tx.commit().await?;
            Ok(Placed::Waiting(why))
        }
    }
}
