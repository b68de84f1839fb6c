//! Reading Instances' status back into the instance rows, repairing what went missing,
//! and collecting owners' one-time passwords and the moderator account's tokens.

use crate::apply::INSTANCE_ID_LABEL;
use crate::Orchestrator;
use anyhow::Context;
use herd_domain::restore::{RestoreMode, RestoreStep};
use herd_domain::{Desired, InstancePhase};
use herd_fleet::jobs::ApplyInstance;
use herd_fleet::seal::owner_password_purpose;
use herd_k8s::crd::{BackupRecord, Instance, Phase};
use herd_k8s::lifecycle::{
    MODERATOR_TOKEN_SECRET, OWNER_PASSWORD_SECRET, TOKEN_GENERATION_ANNOTATION,
};
use herd_k8s::reconcile::secret_strings;
use herd_k8s::render::namespace_name;
use herd_store::fleet::{self, Reported};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use std::collections::HashMap;
use uuid::Uuid;

/// The control plane's phase for an operator-reported one.
pub fn phase_of(p: Phase) -> InstancePhase {
    match p {
        Phase::Pending | Phase::Provisioning => InstancePhase::Provisioning,
        Phase::Running => InstancePhase::Running,
        Phase::Upgrading => InstancePhase::Upgrading,
        Phase::Restoring => InstancePhase::Restoring,
        Phase::Suspended => InstancePhase::Suspended,
        Phase::Deleting => InstancePhase::Deleting,
        Phase::Failed => InstancePhase::Failed,
    }
}

/// Writes one Instance's reported status onto its row (if it is one of ours).
pub async fn record(o: &Orchestrator, id: Uuid, i: &Instance) -> anyhow::Result<()> {
    record_at(o, id, i, time::OffsetDateTime::now_utc()).await
}

/// A backup record as the control plane keeps it.
pub fn backup_of(r: &BackupRecord) -> herd_store::backups::Backup {
    use herd_domain::backup::{BackupMethod, BackupOutcome, BackupReason};
    let at = |s: &Option<String>| {
        s.as_deref()
            .and_then(herd_k8s::backups::epoch_nanos)
            .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(n).ok())
    };
    herd_store::backups::Backup {
        name: r.name.clone(),
        reason: match r.reason {
            herd_k8s::crd::BackupReason::Scheduled => BackupReason::Scheduled,
            herd_k8s::crd::BackupReason::BeforeUpgrade => BackupReason::BeforeUpgrade,
        },
        method: match r.method {
            herd_k8s::crd::BackupMethod::Dump => BackupMethod::Dump,
            herd_k8s::crd::BackupMethod::Barman => BackupMethod::Barman,
        },
        outcome: match r.outcome {
            herd_k8s::crd::BackupOutcome::Running => BackupOutcome::Running,
            herd_k8s::crd::BackupOutcome::Succeeded => BackupOutcome::Succeeded,
            herd_k8s::crd::BackupOutcome::Failed => BackupOutcome::Failed,
        },
        started_at: at(&r.started_at),
        finished_at: at(&r.finished_at),
        duration_seconds: r.duration_seconds.filter(|d| *d >= 0),
        size_bytes: r.size_bytes.filter(|s| *s >= 0),
        location: r.location.clone(),
        checksum: r.checksum.clone(),
        message: r.message.clone(),
    }
}

/// A tenant's media as its cluster reports them: the bucket its spec names
/// (`spec.mediaS3`; `None` when they are on a volume) and the operator's reading of that
/// bucket (`status.mediaBucket`), when it is of that bucket and endpoint and its time
/// can be read.
pub fn media_of(i: &Instance) -> Option<herd_fleet::backups::MediaReport<'_>> {
    use herd_domain::backup::BucketVersioning as V;
    use herd_k8s::crd::BucketVersioning as Reported;
    let s3 = i.spec.media_s3.as_ref()?;
    let reading = i
        .status
        .as_ref()
        .and_then(|st| st.media_bucket.as_ref())
        .filter(|m| m.bucket == s3.bucket && m.endpoint == s3.endpoint)
        .and_then(|m| {
            let checked_at = herd_k8s::backups::epoch_nanos(&m.checked_at)
                .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(n).ok())?;
            Some(herd_domain::backup::MediaReading {
                versioning: match m.versioning {
                    Reported::Enabled => V::Enabled,
                    Reported::Suspended => V::Suspended,
                    Reported::Off => V::Off,
                    Reported::Unreadable => V::Unreadable,
                },
                message: m.message.clone(),
                checked_at,
            })
        });
    Some(herd_fleet::backups::MediaReport {
        bucket: &s3.bucket,
        reading,
    })
}

/// An export as the cluster reports it (`status.export`).
pub fn export_of(e: &herd_k8s::crd::ExportStatus) -> herd_fleet::exports::Reported<'_> {
    use herd_domain::export::ExportState;
    let at = |s: &Option<String>| {
        s.as_deref()
            .and_then(herd_k8s::backups::epoch_nanos)
            .and_then(|n| time::OffsetDateTime::from_unix_timestamp_nanos(n).ok())
    };
    herd_fleet::exports::Reported {
        outcome: match e.outcome {
            herd_k8s::crd::BackupOutcome::Running => ExportState::Running,
            herd_k8s::crd::BackupOutcome::Succeeded => ExportState::Succeeded,
            herd_k8s::crd::BackupOutcome::Failed => ExportState::Failed,
        },
        location: e.location.as_deref(),
        started_at: at(&e.started_at),
        finished_at: at(&e.finished_at),
        size_bytes: e.size_bytes,
        checksum: e.checksum.as_deref(),
        message: e.message.as_deref(),
        secrets_sealed_to: e.secrets_sealed_to.as_deref(),
    }
}

/// [`record`] at `now` (tests play the hours and days after a backup).
pub async fn record_at(
    o: &Orchestrator,
    id: Uuid,
    i: &Instance,
    now: time::OffsetDateTime,
) -> anyhow::Result<()> {
    let Some(status) = &i.status else {
        return Ok(());
    };
    let mut tx = o.pool.begin().await?;
    fleet::record_status(
        &mut tx,
        id,
        &Reported {
            phase: phase_of(status.phase),
            conditions: serde_json::to_value(&status.conditions)?,
            url: status.url.as_deref(),
            running_version: status.running_version.as_deref(),
            last_error: status.last_error.as_deref(),
        },
    )
    .await?;
    // The backups it reports, and the alert they call for.
    let backups: Vec<_> = status.backups.iter().map(backup_of).collect();
    let interval = i32::try_from(i.spec.backup.interval_hours).unwrap_or(24);
    herd_fleet::backups::record(&mut tx, id, interval, &backups, media_of(i).as_ref(), now).await?;
    if let Some(e) = &status.export {
        herd_fleet::exports::record(&mut tx, id, &e.id, &export_of(e)).await?;
    }
    if let Some(r) = &status.restore {
        let reported = crate::restore::reported(r);
        let changed = herd_fleet::restores::record(&mut tx, id, &reported).await?;
        let succeeded_now = changed.is_some_and(|r| {
            r.step == RestoreStep::Succeeded && !r.drill && r.mode == RestoreMode::InPlace
        });
        if succeeded_now {
            redo_moderator_token_after_restore(&mut tx, id).await?;
        }
    }
    if let Some(done) = status.owner_password_generation.filter(|g| *g > 0) {
        let done = i32::try_from(done).unwrap_or(i32::MAX);
        if fleet::record_owner_password_done(&mut *tx, id, done).await? {
            fleet::add_event(
                &mut tx,
                id,
                fleet::EventKind::Phase,
                "The owner's new password is set",
                None,
            )
            .await?;
        }
    }
    // A failed reset, reported for the spec the operator last saw (a status older than the
    // spec may speak of the reset before the one now asked for). The operator's message
    // (with its kubectl command) is kept for the console; the history, which the
    // organization reads too, says only what happened.
    let asked = i32::try_from(i.spec.owner.password_generation).unwrap_or(i32::MAX);
    let current =
        status.observed_generation.is_some() && status.observed_generation == i.metadata.generation;
    if let Some(failed) = status
        .conditions
        .iter()
        .find(|c| current && c.type_ == "OwnerPassword" && c.reason == "JobFailed")
    {
        if fleet::record_owner_password_failed(&mut *tx, id, asked, &failed.message).await? {
            fleet::add_event(
                &mut tx,
                id,
                fleet::EventKind::Phase,
                "Setting the owner's new password failed; the server runs on",
                None,
            )
            .await?;
            herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
        }
    }
    record_moderator_token(&mut tx, id, i, current).await?;
    tx.commit().await?;
    Ok(())
}

/// The moderator account's token generation the cluster reports done, or its failure
/// (the `ModeratorAccount` condition, for the spec the operator last saw). The
/// operator's message is kept for the console; the history says only what happened.
async fn record_moderator_token(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    i: &Instance,
    current: bool,
) -> anyhow::Result<()> {
    let Some(status) = &i.status else {
        return Ok(());
    };
    if let Some(done) = status.moderator_token_generation.filter(|g| *g > 0) {
        let done = i32::try_from(done).unwrap_or(i32::MAX);
        if fleet::record_moderator_token_done(&mut *tx, id, done).await? {
            let revoked = i
                .spec
                .moderator
                .as_ref()
                .is_some_and(|m| m.revoked && i64::from(m.token_generation) == i64::from(done));
            let what = if revoked {
                "Herd's moderator tokens on the server are revoked"
            } else {
                "Herd's moderator account has a new token on the server"
            };
            fleet::add_event(tx, id, fleet::EventKind::Phase, what, None).await?;
        }
    }
    let Some(asked) = &i.spec.moderator else {
        return Ok(());
    };
    let asked = i32::try_from(asked.token_generation).unwrap_or(i32::MAX);
    if let Some(failed) = status
        .conditions
        .iter()
        .find(|c| current && c.type_ == "ModeratorAccount" && c.reason == "JobFailed")
    {
        if fleet::record_moderator_token_failed(&mut *tx, id, asked, &failed.message).await? {
            fleet::add_event(
                tx,
                id,
                fleet::EventKind::Error,
                "Making Herd's moderator account or its token failed; the server runs on",
                None,
            )
            .await?;
            herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
        }
    }
    Ok(())
}

/// A full resync of one cluster: every instance placed there gets the status its
/// Instance reports; an Instance that went missing is applied again (or, for a deleted
/// server, the row is marked deleted); then owners' passwords are collected.
pub async fn sync_cluster(o: &Orchestrator, cluster_id: Uuid) -> anyhow::Result<()> {
    let cluster = fleet::cluster(&o.pool, cluster_id)
        .await?
        .context("no such cluster")?;
    // An unreachable cluster is reported by its health check (every minute), not by a
    // failed sync every 15 seconds: skip this round.
    let client = match o.clusters.client(&cluster).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(cluster = %cluster.name, error = %format!("{e:#}"), "status sync skipped: no client");
            return Ok(());
        }
    };
    let api: Api<Instance> = Api::namespaced(client.clone(), &cluster.operator_namespace);
    let listed = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(cluster = %cluster.name, error = %e, "status sync skipped: listing Instances failed");
            return Ok(());
        }
    };
    let by_name: HashMap<String, Instance> = listed
        .items
        .into_iter()
        .filter_map(|i| i.metadata.name.clone().map(|n| (n, i)))
        .collect();
    for (slug, id) in fleet::on_cluster(&o.pool, cluster_id).await? {
        match by_name.get(&slug) {
            Some(i) => {
                // Another tenant's Instance of the same name is not ours to read.
                let ours = i
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(INSTANCE_ID_LABEL))
                    .is_none_or(|v| *v == id.to_string());
                if ours {
                    record(o, id, i).await?;
                }
            }
            None => missing(o, id).await?,
        }
    }
    collect_owner_passwords(o, cluster_id, &client).await?;
    collect_moderator_tokens(o, cluster_id, &client).await
}

/// An instance placed on the cluster has no Instance there.
async fn missing(o: &Orchestrator, id: Uuid) -> anyhow::Result<()> {
    let Some(row) = fleet::instance(&o.pool, id).await? else {
        return Ok(());
    };
    if row.applied_generation == 0 {
        // Not applied yet: its apply job is queued or running.
        return Ok(());
    }
    let mut tx = o.pool.begin().await?;
    if row.desired == Desired::Deleted {
        fleet::set_phase(&mut tx, id, InstancePhase::Deleted, None).await?;
    } else {
        fleet::add_event(
            &mut tx,
            id,
            fleet::EventKind::Error,
            "The Instance was missing on its cluster; applied again",
            None,
        )
        .await?;
        herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// For each running instance whose owner password is not collected yet: read it from the
/// tenant's Secret, keep it sealed in the database, then delete the Secret (in that
/// order, so a crash in between loses nothing). Without HERD_ENCRYPTION_KEY the Secret
/// stays where it is.
async fn collect_owner_passwords(
    o: &Orchestrator,
    cluster: Uuid,
    client: &kube::Client,
) -> anyhow::Result<()> {
    let waiting = fleet::awaiting_owner_password(&o.pool, cluster).await?;
    if waiting.is_empty() {
        return Ok(());
    }
    let Some(key) = &o.key else {
        tracing::warn!(
            count = waiting.len(),
            "owners' one-time passwords stay on the cluster: HERD_ENCRYPTION_KEY is not set"
        );
        return Ok(());
    };
    for (id, slug, collected) in waiting {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace_name(&slug));
        let Some(secret) = secrets.get_opt(OWNER_PASSWORD_SECRET).await? else {
            continue;
        };
        // Collected already (the delete failed last time): only the delete is left.
        if !collected {
            let Some(password) = secret_strings(secret).remove("password") else {
                continue;
            };
            let sealed = key.seal(&owner_password_purpose(id), password.as_bytes());
            fleet::store_owner_password(&o.pool, id, &sealed).await?;
        }
        match secrets
            .delete(OWNER_PASSWORD_SECRET, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context("deleting the owner's password Secret"))
            }
        }
        tracing::info!(instance = %id, "owner's one-time password collected");
    }
    Ok(())
}

/// A restore that replaced the server's database brought back its moderator tokens as
/// they were in the backup: Herd's tokens revoked since work again, the one in use (made
/// after the backup) is gone, while the recorded generation still says done. When Herd
/// ever made a token there, a new generation is asked: a new token when the connection in
/// use is Herd's (its Job revokes every other token of Herd's application and stores the
/// new one), else a revocation only. Noted in the server's history; the Instance is
/// applied again.
async fn redo_moderator_token_after_restore(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
) -> anyhow::Result<()> {
    let Some(t) = fleet::moderator_token(&mut *tx, id).await? else {
        return Ok(());
    };
    if t.generation == 0 {
        return Ok(());
    }
    // A new token when Herd's is in use or being made (a revocation would undo the
    // customer's ask); a revocation only when none of Herd's is wanted.
    let new_token = !t.revoked && (t.connection_generation.is_some() || t.making());
    fleet::ask_moderator_token(&mut *tx, id, !new_token).await?;
    let message = if new_token {
        "The restore brought back the moderator tokens of the backup: a new moderator token was asked for, and Herd's others on the server are revoked"
    } else {
        "The restore brought back the moderator tokens of the backup: Herd's tokens on the server are revoked again"
    };
    fleet::add_event(&mut *tx, id, fleet::EventKind::Action, message, None).await?;
    herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
    Ok(())
}

/// The moderator-token generation Secret `moderator-token` was made for (its annotation
/// [`TOKEN_GENERATION_ANNOTATION`]).
fn made_for(secret: &Secret) -> Option<u32> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(TOKEN_GENERATION_ANNOTATION)?
        .parse()
        .ok()
}

/// For each instance whose new moderator token is made and not collected yet: read it
/// from the tenant's Secret, store it sealed as the server's moderation connection, then
/// delete the Secret (in that order, so a crash in between loses nothing: a token stored
/// already only has its Secret deleted). Without HERD_ENCRYPTION_KEY the Secret stays
/// where it is. The token is never logged.
async fn collect_moderator_tokens(
    o: &Orchestrator,
    cluster: Uuid,
    client: &kube::Client,
) -> anyhow::Result<()> {
    let waiting = fleet::awaiting_moderator_token(&o.pool, cluster).await?;
    if waiting.is_empty() {
        return Ok(());
    }
    let Some(key) = &o.key else {
        tracing::warn!(
            count = waiting.len(),
            "moderator tokens stay on the cluster: HERD_ENCRYPTION_KEY is not set"
        );
        return Ok(());
    };
    for w in waiting {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace_name(&w.slug));
        // Only the Secret of the generation being collected: one of a later generation
        // (asked between the query and this read) is that generation's token, for its Job.
        let secret = secrets
            .get_opt(MODERATOR_TOKEN_SECRET)
            .await?
            .filter(|s| made_for(s).and_then(|g| i32::try_from(g).ok()) == Some(w.generation));
        // Deleted only as it was read (its uid and resource version): a Secret replaced
        // since by a later generation's is that generation's token, and stays.
        let read_as = secret.as_ref().map(|s| Preconditions {
            uid: s.metadata.uid.clone(),
            resource_version: s.metadata.resource_version.clone(),
        });
        if !w.stored {
            let Some(token) = secret.and_then(|s| secret_strings(s).remove("token")) else {
                tracing::warn!(instance = %w.id, generation = w.generation, "the moderator token's Secret of this generation is missing or has no token; waiting");
                continue;
            };
            if let Err(e) = herd_moderation::connections::store_made_token(
                &o.pool,
                key,
                w.id,
                w.generation,
                &token,
            )
            .await
            {
                // The error never carries the token.
                tracing::warn!(instance = %w.id, error = %e, "the moderator token could not be stored");
                continue;
            }
        }
        if let Some(read_as) = read_as {
            let params = DeleteParams {
                preconditions: Some(read_as),
                ..DeleteParams::default()
            };
            match secrets.delete(MODERATOR_TOKEN_SECRET, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    return Err(
                        anyhow::Error::new(e).context("deleting the moderator token's Secret")
                    )
                }
            }
        }
        fleet::mark_moderator_token_collected(&o.pool, w.id, w.generation).await?;
        tracing::info!(instance = %w.id, generation = w.generation, "moderator token collected");
    }
    Ok(())
}
