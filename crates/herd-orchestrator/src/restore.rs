//! What the apply of an Instance does for a restore (`herd_fleet::restores`): the restore
//! under way goes into `spec.restore` (and a drill's scratch tenant gets `spec.drill`), and
//! a restore into another tenant first gets the source tenant's `app-secrets` copied into
//! the new namespace, before the operator's first reconcile would make new ones. Without
//! them (the source's cluster unreachable, its Secret gone) the restore waits and says why.
//! An import (`herd_fleet::imports`) has no source tenant: the app secrets the operator
//! supplied are written instead, then wiped from the database.

use crate::Orchestrator;
use herd_domain::restore::RestoreMode;
use herd_k8s::crd::{Instance, RestoreSpec};
use herd_k8s::render::namespace_name;
use herd_store::fleet::{self, Cluster};
use herd_store::imports;
use herd_store::restores::{self as store, Restore};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use sqlx::PgConnection;
use uuid::Uuid;

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
        // So does a cancelled restore that made this tenant: it holds no data, and is
        // never installed fresh.
        let held = match store::held(&mut *tx, row.id).await? {
            Some(r) => Some(r),
            None => match store::cancelled_held(&mut *tx, row.id).await? {
                Some(id) => store::get(&mut *tx, id).await?,
                None => None,
            },
        };
        let held = match held {
            Some(r) => Some(RestoreSpec {
                manifest_sha256: manifest_sha256(&mut *tx, &r).await?,
                id: r.id.to_string(),
                source_tenant: source_tenant(&mut *tx, &r, row).await?,
                source: r.location.clone(),
                media: true,
                import: r.mode == RestoreMode::Import,
                cancel: r.step == herd_domain::restore::RestoreStep::Cancelled,
                // The same spec as while it ran: an apply that changed it would be a new
                // ask to the operator (and drop the size it sized the scratch space by).
                size_bytes: backup_size(&mut *tx, &r).await?,
            }),
            None => None,
        };
        return Ok(Some((held, drill)));
    };
    // Asked to cancel: nothing more is copied, the operator cancels (spec.restore.cancel).
    let cancelling = store::cancel_requested(&mut *tx, r.id).await?.is_some();
    if cancelling {
        tracing::info!(instance = %row.id, restore = %r.id, "restore to be cancelled");
    } else if r.mode == RestoreMode::Import && r.secrets_copied_at.is_none() {
        match write_import_secrets(o, &mut *tx, &r, row, cluster).await {
            Ok(()) => {
                imports::mark_secrets_written(&mut *tx, r.id).await?;
                tracing::info!(instance = %row.id, restore = %r.id, "import's app-secrets written; wiped from the database");
            }
            Err(why) => {
                let message = format!("waiting to write the imported app secrets: {why}");
                waits(tx, row.id, r.id, &message).await?;
                tracing::warn!(instance = %row.id, restore = %r.id, reason = %why, "import waits to write its app-secrets");
                return Ok(None);
            }
        }
    } else if r.source_instance_id != Some(row.id) && r.secrets_copied_at.is_none() {
        match copy_app_secrets(o, &mut *tx, &r, row, cluster).await {
            Ok(()) => {
                store::mark_secrets_copied(&mut *tx, r.id).await?;
                tracing::info!(instance = %row.id, restore = %r.id, "source's app-secrets copied");
            }
            Err(why) => {
                let message = format!("waiting for the source tenant's app secrets: {why}");
                waits(tx, row.id, r.id, &message).await?;
                tracing::warn!(instance = %row.id, restore = %r.id, reason = %why, "restore waits for the source's app-secrets");
                return Ok(None);
            }
        }
    }
    let manifest_sha256 = manifest_sha256(&mut *tx, &r).await?;
    Ok(Some((
        Some(RestoreSpec {
            id: r.id.to_string(),
            source: r.location.clone(),
            media: true,
            manifest_sha256,
            source_tenant: source_tenant(&mut *tx, &r, row).await?,
            import: r.mode == RestoreMode::Import,
            cancel: cancelling,
            size_bytes: backup_size(&mut *tx, &r).await?,
        }),
        drill,
    )))
}

/// The size of the backup restore `r` reads, when the source tenant's records have it.
async fn backup_size(tx: &mut PgConnection, r: &Restore) -> anyhow::Result<Option<i64>> {
    Ok(match r.source_instance_id {
        Some(s) => store::backup_size(&mut *tx, s, &r.source_backup).await?,
        None => None,
    })
}

/// `spec.restore.sourceTenant` of restore `r` into `target`: the source's slug when it is
/// another tenant (a restore into a new tenant, a drill's copy), for the operator reads no
/// other tenant's backups than the one named there. The slug kept on the restore when it
/// was asked (`source_slug`), so a source purged since (its row gone, `source_instance_id`
/// NULL) still names its own backups; its row's for a restore older than that column.
async fn source_tenant(
    tx: &mut PgConnection,
    r: &Restore,
    target: &fleet::Instance,
) -> anyhow::Result<Option<String>> {
    // An import's source is not a tenant's backup; an in-place restore reads the target's.
    if r.mode == RestoreMode::Import || r.source_instance_id == Some(target.id) {
        return Ok(None);
    }
    let kept: Option<String> =
        sqlx::query_scalar("SELECT source_slug FROM tenant_restores WHERE id = $1")
            .bind(r.id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    if let Some(slug) = kept {
        return Ok((slug != target.slug).then_some(slug));
    }
    let Some(source) = r.source_instance_id else {
        // Purged before its slug was kept: the operator then refuses the source (not
        // one of the target's own backups), as before.
        return Ok(None);
    };
    match fleet::instance(&mut *tx, source).await? {
        Some(s) => Ok(Some(s.slug)),
        None => anyhow::bail!(
            "the source tenant {source} of a restore into {} is not in the database",
            target.id
        ),
    }
}

/// Copies the source tenant's `app-secrets` into `row`'s namespace on `cluster` (made if
/// needed), with server-side apply. The values are never logged: errors name only where
/// it failed.
/// A restore that waits before its Job (for app secrets to be written or copied): why, on
/// the restore and on its tenant, queued until the next apply.
async fn waits(
    tx: &mut PgConnection,
    instance: Uuid,
    restore: Uuid,
    message: &str,
) -> anyhow::Result<()> {
    store::set_message(&mut *tx, restore, Some(message)).await?;
    fleet::set_phase(
        tx,
        instance,
        herd_domain::InstancePhase::Queued,
        Some(message),
    )
    .await?;
    Ok(())
}

async fn copy_app_secrets(
    o: &Orchestrator,
    tx: &mut PgConnection,
    r: &Restore,
    row: &fleet::Instance,
    cluster: &Cluster,
) -> Result<(), String> {
    let internal = |e: &dyn std::fmt::Display| format!("the control plane failed to read it ({e})");
    let source = match r.source_instance_id {
        Some(id) => fleet::instance(&mut *tx, id)
            .await
            .map_err(|e| internal(&e))?,
        None => None,
    }
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
    write_app_secrets(to, &to_ns, &copy).await
}

/// The manifest checksum `spec.restore` carries for `r`: an import's, read when it was
/// asked for; a backup's, recorded when it was taken.
async fn manifest_sha256(tx: &mut PgConnection, r: &Restore) -> anyhow::Result<Option<String>> {
    if let Some(sum) = &r.manifest_sha256 {
        return Ok(Some(sum.clone()));
    }
    Ok(match r.source_instance_id {
        Some(source) => store::backup_checksum(&mut *tx, source, &r.source_backup).await?,
        None => None,
    })
}

/// Writes import `r`'s app secrets into `row`'s namespace on `cluster` (made if needed),
/// with server-side apply: the values the operator supplied from the old install, and
/// for the others new ones made as for a new server (the database and Redis passwords
/// always), or, when the namespace has its `app-secrets` already (an attempt that wrote
/// them, then failed, is retried), the values it holds: a retry never changes the
/// database's password under a database made with it. Checked as the cluster's operator
/// will read them. The values are never logged: errors name only where it failed, or
/// which key.
async fn write_import_secrets(
    o: &Orchestrator,
    tx: &mut PgConnection,
    r: &Restore,
    row: &fleet::Instance,
    cluster: &Cluster,
) -> Result<(), String> {
    use herd_k8s::secrets::{self as s, AppSecrets};
    let key = o.key.as_ref().ok_or(
        "HERD_ENCRYPTION_KEY is not set on the worker: the supplied secrets cannot be opened",
    )?;
    let sealed = imports::sealed_secrets(&mut *tx, r.id)
        .await
        .map_err(|e| format!("the control plane failed to read them ({e})"))?
        .ok_or(
            "the supplied secrets are gone from the database; delete this tenant and import again",
        )?;
    let supplied = herd_fleet::imports::Secrets::open(key, r.id, &sealed)
        .map_err(|_| "the supplied secrets cannot be opened with this HERD_ENCRYPTION_KEY")?;
    let to = o.clusters.client(cluster).await.map_err(|_| {
        format!(
            "the new tenant's cluster {} is unreachable; retried every minute",
            cluster.name
        )
    })?;
    let to_ns = namespace_name(&row.slug);
    let mut data = AppSecrets::generate().data().clone();
    // What an earlier attempt wrote is kept (then the supplied values written over it).
    let existing = Api::<Secret>::namespaced(to.clone(), &to_ns)
        .get_opt(APP_SECRETS)
        .await
        .map_err(|e| {
            format!(
                "reading Secret {APP_SECRETS} in {to_ns} failed ({})",
                kube_reason(&e)
            )
        })?;
    for (name, value) in existing.and_then(|e| e.data).unwrap_or_default() {
        if let (Some(slot), Ok(value)) = (data.get_mut(&name), String::from_utf8(value.0)) {
            *slot = value;
        }
    }
    for (name, value) in supplied.values() {
        data.insert(name.clone(), value.clone());
    }
    // A private VAPID key without its public one: the public one follows from it.
    if supplied.get(s::VAPID_PRIVATE_KEY).is_some() && supplied.get(s::VAPID_PUBLIC_KEY).is_none() {
        let public = s::vapid_public_from_private(&data[s::VAPID_PRIVATE_KEY])
            .map_err(|e| format!("the supplied secrets: {e}"))?;
        data.insert(s::VAPID_PUBLIC_KEY.to_owned(), public);
    }
    let secrets = AppSecrets::from_data(&data).map_err(|e| format!("the supplied secrets: {e}"))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(APP_SECRETS.into()),
            namespace: Some(to_ns.clone()),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            secrets
                .data()
                .iter()
                .map(|(k, v)| (k.clone(), k8s_openapi::ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    write_app_secrets(to, &to_ns, &secret).await
}

/// Makes namespace `to_ns` on cluster `to` if needed and writes `secret` there as
/// [`APP_SECRETS`] (server-side apply, Herd's secrets field manager). The error says which
/// step failed, never the Secret's data.
async fn write_app_secrets(to: kube::Client, to_ns: &str, secret: &Secret) -> Result<(), String> {
    let params = PatchParams::apply(SECRETS_FIELD_MANAGER).force();
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(to_ns.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(to.clone())
        .patch(to_ns, &params, &Patch::Apply(&namespace))
        .await
        .map_err(|e| format!("making namespace {to_ns} failed ({})", kube_reason(&e)))?;
    Api::<Secret>::namespaced(to, to_ns)
        .patch(APP_SECRETS, &params, &Patch::Apply(secret))
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
            K::Cancelled => S::Cancelled,
        },
        started_at: at(&r.started_at),
        finished_at: at(&r.finished_at),
        source_rows: r.source_rows.clone(),
        restored_rows: r.restored_rows.clone(),
        message: r.message.clone(),
    }
}
