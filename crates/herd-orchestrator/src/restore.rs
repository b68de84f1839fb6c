//! What the apply of an Instance does for a restore (`herd_fleet::restores`): the restore
//! under way goes into `spec.restore` (and a drill's scratch tenant gets `spec.drill`), and
//! a restore into another tenant first gets the source tenant's `app-secrets` copied into
//! the new namespace, before the operator's first reconcile would make new ones. Without
//! them (the source's cluster unreachable, its Secret gone) the restore waits and says why.

use crate::Orchestrator;
use herd_k8s::crd::{Instance, RestoreSpec};
use herd_k8s::render::namespace_name;
use herd_store::fleet::{self, Cluster};
use herd_store::restores::{self as store, Restore};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use sqlx::PgConnection;

/// The Secret of a tenant's application secrets, as the operator makes it.
pub const APP_SECRETS: &str = "app-secrets";

/// The field manager of the control plane's writes to a new tenant's namespace.
pub const SECRETS_FIELD_MANAGER: &str = "herd";

/// What an apply of instance `row` must carry for restores, once the secrets are in place:
/// `Ok(None)` when it waits for them (the reason is on the restore and the instance).
pub async fn prepare(
    o: &Orchestrator,
    tx: &mut PgConnection,
    row: &fleet::Instance,
    cluster: &Cluster,
) -> anyhow::Result<Option<(Option<RestoreSpec>, bool)>> {
    let drill = store::is_scratch(&mut *tx, row.id).await?;
    let Some(r) = store::unfinished(&mut *tx, row.id).await? else {
        // A failed restore keeps naming itself until an operator releases the tenant: the
        // operator keeps the app stopped while spec.restore names a failed restore (its
        // database may be half restored, and must not be served or federated).
        let held = match store::held(&mut *tx, row.id).await? {
            Some(r) => Some(RestoreSpec {
                manifest_sha256: store::backup_checksum(
                    &mut *tx,
                    r.source_instance_id,
                    &r.source_backup,
                )
                .await?,
                id: r.id.to_string(),
                source: r.location,
                media: true,
                source_tenant: None,
                import: false,
            }),
            None => None,
        };
        return Ok(Some((held, drill)));
    };
    if r.source_instance_id != row.id && r.secrets_copied_at.is_none() {
        match copy_app_secrets(o, &mut *tx, &r, row, cluster).await {
            Ok(()) => {
                store::mark_secrets_copied(&mut *tx, r.id).await?;
                tracing::info!(instance = %row.id, restore = %r.id, "source's app-secrets copied");
            }
            Err(why) => {
                let message = format!("waiting for the source tenant's app secrets: {why}");
                store::set_message(&mut *tx, r.id, Some(&message)).await?;
                fleet::set_phase(
                    tx,
                    row.id,
                    herd_domain::InstancePhase::Queued,
                    Some(&message),
                )
                .await?;
                tracing::warn!(instance = %row.id, restore = %r.id, reason = %why, "restore waits for the source's app-secrets");
                return Ok(None);
            }
        }
    }
    let manifest_sha256 =
        store::backup_checksum(&mut *tx, r.source_instance_id, &r.source_backup).await?;
    Ok(Some((
        Some(RestoreSpec {
            id: r.id.to_string(),
            source: r.location.clone(),
            media: true,
            manifest_sha256,
            source_tenant: None,
            import: false,
        }),
        drill,
    )))
}

/// Copies the source tenant's `app-secrets` into `row`'s namespace on `cluster` (made if
/// needed), with server-side apply. The values are never logged: errors name only where
/// it failed.
async fn copy_app_secrets(
    o: &Orchestrator,
    tx: &mut PgConnection,
    r: &Restore,
    row: &fleet::Instance,
    cluster: &Cluster,
) -> Result<(), String> {
    let internal = |e: &dyn std::fmt::Display| format!("the control plane failed to read it ({e})");
    let source = fleet::instance(&mut *tx, r.source_instance_id)
        .await
        .map_err(|e| internal(&e))?
        .ok_or("the source tenant is gone")?;
    let source_cluster = match source.cluster_id {
        Some(c) => fleet::cluster(&mut *tx, c)
            .await
            .map_err(|e| internal(&e))?
            .ok_or("the source tenant's cluster is gone")?,
        None => return Err("the source tenant was never placed on a cluster".into()),
    };
    let from = o.clusters.client(&source_cluster).await.map_err(|_| {
        format!(
            "the source tenant's cluster {} is unreachable; retried every minute",
            source_cluster.name
        )
    })?;
    let from_ns = namespace_name(&source.slug);
    let secret = Api::<Secret>::namespaced(from, &from_ns)
        .get_opt(APP_SECRETS)
        .await
        .map_err(|e| {
            format!(
                "reading Secret {APP_SECRETS} in {from_ns} on cluster {} failed ({}); retried every minute",
                source_cluster.name,
                kube_reason(&e)
            )
        })?
        .ok_or_else(|| {
            format!(
                "Secret {APP_SECRETS} is gone from {from_ns} on cluster {}; a deleted tenant's backup is restored by hand with its sealed secrets (docs/BACKUPS.md)",
                source_cluster.name
            )
        })?;
    let to = o.clusters.client(cluster).await.map_err(|_| {
        format!(
            "the new tenant's cluster {} is unreachable; retried every minute",
            cluster.name
        )
    })?;
    let to_ns = namespace_name(&row.slug);
    let params = PatchParams::apply(SECRETS_FIELD_MANAGER).force();
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(to_ns.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(to.clone())
        .patch(&to_ns, &params, &Patch::Apply(&namespace))
        .await
        .map_err(|e| format!("making namespace {to_ns} failed ({})", kube_reason(&e)))?;
    let copy = Secret {
        metadata: ObjectMeta {
            name: Some(APP_SECRETS.into()),
            namespace: Some(to_ns.clone()),
            ..Default::default()
        },
        type_: secret.type_,
        data: secret.data,
        string_data: secret.string_data,
        ..Default::default()
    };
    Api::<Secret>::namespaced(to, &to_ns)
        .patch(APP_SECRETS, &params, &Patch::Apply(&copy))
        .await
        .map_err(|e| {
            format!(
                "writing Secret {APP_SECRETS} in {to_ns} failed ({})",
                kube_reason(&e)
            )
        })?;
    Ok(())
}

/// What went wrong in a Kubernetes call, without the request (and so without a body).
fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.reason),
        _ => "no answer".into(),
    }
}

/// Sets what [`prepare`] found on the resource to apply.
pub fn carry(resource: &mut Instance, restore: Option<RestoreSpec>, drill: bool) {
    resource.spec.restore = restore;
    resource.spec.drill = drill;
}

/// A restore as the operator reports it (`status.restore`), in the control plane's terms.
pub fn reported(r: &herd_k8s::crd::RestoreStatus) -> herd_fleet::restores::Reported {
    use herd_domain::restore::RestoreStep as S;
    use herd_k8s::crd::RestoreStep as K;
    let at = |s: &Option<String>| {
        s.as_deref()
            .and_then(herd_k8s::backups::epoch_nanos)
            .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(n).ok())
    };
    herd_fleet::restores::Reported {
        id: r.id.clone(),
        step: match r.step {
            K::StoppingApp => S::StoppingApp,
            K::Restoring => S::Restoring,
            K::Migrating => S::Migrating,
            K::Starting => S::Starting,
            K::Succeeded => S::Succeeded,
            K::Failed => S::Failed,
        },
        started_at: at(&r.started_at),
        finished_at: at(&r.finished_at),
        source_rows: r.source_rows.clone(),
        restored_rows: r.restored_rows.clone(),
        message: r.message.clone(),
    }
}
