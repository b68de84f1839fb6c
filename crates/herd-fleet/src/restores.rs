//! Restoring a tenant from one of its backups, asked by an operator from the console: in
//! place, or into a new tenant of the same organization (an "undo" beside the original,
//! or a move to another cluster). The restore is recorded (`tenant_restores`), put in the
//! Instance's `spec.restore` by the apply job queued in the same transaction, and followed
//! from the operator's `status.restore` by the status sync ([`record`]).
//!
//! Into another tenant, the source's `app-secrets` must reach the new namespace before the
//! new Instance is first applied (else the operator makes new ones, and the restored
//! database's encrypted columns and sessions are lost): the orchestrator's apply copies
//! them and, while it cannot (the source's cluster unreachable, its secrets gone), the
//! restore waits and says why ([`retry_waiting`] asks again every minute).

use crate::clusters::Actor;
use crate::jobs::ApplyInstance;
use crate::FleetError;
use herd_domain::restore::{RestoreMode, RestoreOutcome, RestoreStep};
use herd_domain::{Desired, DomainName, InstancePhase, OrgId, Slug};
use herd_store::audit::{self, NewEntry};
use herd_store::fleet::{self, EventKind, NewInstance};
use herd_store::restores::{self as store, NewRestore, Report, Restorable, Restore};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

pub use store::Rows;

/// Where to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Over the tenant itself.
    InPlace,
    /// Into a new tenant of the same organization, with this short name and domain, on
    /// this cluster (`None`: placed as a new server is).
    NewTenant {
        slug: String,
        domain: String,
        cluster: Option<Uuid>,
        /// A move: once the restore succeeds, the new tenant takes the source's order
        /// (billed and suspended with it from then on) and the source is left outside
        /// billing, to be deleted; until then, and if the restore fails or is
        /// cancelled, the order stays with the source. Otherwise the copy is outside
        /// billing (an undo, a look at old data).
        take_order: bool,
    },
}

/// What a restore request made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub restore: Uuid,
    /// The tenant restored into (the source itself in place).
    pub instance: Uuid,
}

/// What the console's restore form offers for tenant `id`.
pub async fn restorable(pool: &PgPool, id: Uuid) -> Result<Vec<Restorable>, FleetError> {
    Ok(store::restorable(pool, id).await?)
}

/// Restores tenant `id` from its backup `backup` to `target`; `typed` must be the tenant's
/// slug, as the operator typed it to confirm. In place, only a Running or Suspended tenant
/// with no other restore under way. Recorded in the history of both tenants and audited
/// (`fleet.instance.restore_requested`).
pub async fn request(
    pool: &PgPool,
    by: Actor<'_>,
    id: Uuid,
    backup: &str,
    target: &Target,
    typed: &str,
) -> Result<Requested, FleetError> {
    let mut tx = pool.begin().await?;
    let inst = fleet::lock_instance(&mut tx, id)
        .await?
        .ok_or(FleetError::NotFound)?;
    if typed.trim() != inst.slug {
        return Err(FleetError::Invalid(format!(
            "To confirm, type the tenant's short name: {}",
            inst.slug
        )));
    }
    let chosen = store::restorable(&mut *tx, id)
        .await?
        .into_iter()
        .find(|b| b.name == backup)
        .ok_or_else(|| {
            FleetError::Invalid(
                "Choose one of the backups listed: that one cannot be restored.".into(),
            )
        })?;
    let (into, mode) = match target {
        Target::InPlace => {
            // After a failed restore the tenant is held stopped (Failed): restoring
            // again is the way out, as is starting it as it is (`release`).
            let held = store::held(&mut *tx, id).await?.is_some();
            if inst.desired == Desired::Deleted
                || !(matches!(
                    inst.phase,
                    InstancePhase::Running | InstancePhase::Suspended
                ) || held)
            {
                return Err(FleetError::Invalid(format!(
                    "Only a running or suspended tenant is restored in place; this one is {}.",
                    inst.phase.label().to_lowercase()
                )));
            }
            if store::unfinished(&mut *tx, id).await?.is_some() {
                return Err(FleetError::Conflict(
                    "Another restore of this tenant is not finished yet.".into(),
                ));
            }
            (id, RestoreMode::InPlace)
        }
        Target::NewTenant {
            slug,
            domain,
            cluster,
            take_order,
        } => (
            new_tenant(&mut tx, &inst, slug, domain, *cluster, *take_order).await?,
            RestoreMode::NewTenant,
        ),
    };
    let restore = match store::insert(
        &mut tx,
        &NewRestore {
            instance: into,
            source_instance: Some(id),
            source_backup: &chosen.name,
            location: &chosen.location,
            mode,
            drill: false,
            requested_by: Some(by.id.0),
            moves_order: matches!(
                target,
                Target::NewTenant {
                    take_order: true,
                    ..
                }
            ),
        },
    )
    .await
    {
        Ok(r) => r,
        Err(e) if e.is_conflict_on("tenant_restores_one_open_idx") => {
            return Err(FleetError::Conflict(
                "Another restore of this tenant is not finished yet.".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let history = match target {
        Target::InPlace => format!("Restore from backup {} requested (in place)", chosen.name),
        Target::NewTenant {
            domain,
            take_order: true,
            ..
        } => format!(
            "Restore from backup {} requested, into a new tenant ({}), a move: once it runs, it takes this tenant's order, and this one is left outside billing",
            chosen.name,
            domain.trim()
        ),
        Target::NewTenant { domain, .. } => format!(
            "Restore from backup {} requested, into a new tenant ({}, outside billing)",
            chosen.name,
            domain.trim()
        ),
    };
    fleet::add_event(&mut tx, id, EventKind::Action, &history, Some(by.id.0)).await?;
    if into != id {
        fleet::add_event(
            &mut tx,
            into,
            EventKind::Action,
            &format!(
                "Made from backup {} of {} ({})",
                chosen.name, inst.domain, inst.slug
            ),
            Some(by.id.0),
        )
        .await?;
    }
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((by.id, by.email)),
            org: Some(OrgId(inst.org_id)),
            action: "fleet.instance.restore_requested",
            target: inst.domain.clone(),
            source_ip: Some(by.ip),
            details: serde_json::json!({
                "instance": id,
                "restore": restore,
                "backup": chosen.name,
                "location": chosen.location,
                "mode": mode.as_str(),
                "into": into,
                "order_moved": matches!(target, Target::NewTenant { take_order: true, .. }),
            }),
        },
    )
    .await?;
    herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: into }).await?;
    tx.commit().await?;
    tracing::info!(instance = %id, %restore, into = %into, mode = mode.as_str(), "restore requested");
    Ok(Requested {
        restore,
        instance: into,
    })
}

/// Starts tenant `id`, held stopped by a failed restore, on its database as it is (the
/// operator's decision: the restore may have changed nothing, or left part of the
/// backup). `typed` must be the tenant's slug. Recorded in the history and audited
/// (`fleet.instance.restore_released`).
pub async fn release(
    pool: &PgPool,
    by: Actor<'_>,
    id: Uuid,
    typed: &str,
) -> Result<(), FleetError> {
    let mut tx = pool.begin().await?;
    let inst = fleet::lock_instance(&mut tx, id)
        .await?
        .ok_or(FleetError::NotFound)?;
    if typed.trim() != inst.slug {
        return Err(FleetError::Invalid(format!(
            "To confirm, type the tenant's short name: {}",
            inst.slug
        )));
    }
    let held = store::held(&mut *tx, id).await?.ok_or_else(|| {
        FleetError::Conflict("No failed restore holds this tenant stopped.".into())
    })?;
    if held.mode != RestoreMode::InPlace {
        // Without the restore, the operator would install a fresh server over the half
        // restored database with the source's secrets.
        return Err(FleetError::Conflict(
            "A tenant made by a failed restore cannot be started as it is: restore it again, or delete it.".into(),
        ));
    }
    store::release(&mut tx, held.id, by.id.0).await?;
    fleet::add_event(
        &mut tx,
        id,
        EventKind::Action,
        &format!(
            "Started on its database as it is, after the failed restore from backup {}",
            held.source_backup
        ),
        Some(by.id.0),
    )
    .await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((by.id, by.email)),
            org: Some(OrgId(inst.org_id)),
            action: "fleet.instance.restore_released",
            target: inst.domain.clone(),
            source_ip: Some(by.ip),
            details: serde_json::json!({
                "instance": id,
                "restore": held.id,
                "backup": held.source_backup,
                "message": held.message,
            }),
        },
    )
    .await?;
    herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
    tx.commit().await?;
    Ok(())
}

/// Asks the cluster to cancel the restore under way into tenant `id`; `typed` must be the
/// tenant's slug. Only before its migrations (the operator honours it while the database
/// is untouched: before the restore Job, or while the Job only downloads; later it goes
/// on and says the cancel came too late), and not twice. The apply carries
/// `spec.restore.cancel`; the restore ends `cancelled` when the operator reports it.
/// Recorded in the history and audited (`fleet.instance.restore_cancel_requested`).
pub async fn cancel(pool: &PgPool, by: Actor<'_>, id: Uuid, typed: &str) -> Result<(), FleetError> {
    let mut tx = pool.begin().await?;
    let inst = fleet::lock_instance(&mut tx, id)
        .await?
        .ok_or(FleetError::NotFound)?;
    if typed.trim() != inst.slug {
        return Err(FleetError::Invalid(format!(
            "To confirm, type the tenant's short name: {}",
            inst.slug
        )));
    }
    let r = store::unfinished(&mut *tx, id)
        .await?
        .filter(|r| !r.drill)
        .ok_or_else(|| FleetError::Conflict("No restore of this tenant is under way.".into()))?;
    if !r.step.cancellable() {
        return Err(FleetError::Conflict(format!(
            "Too late to cancel: the restore is {} (the database already holds the backup, or is being migrated).",
            r.step.label()
        )));
    }
    // Asked while a failed restore held the tenant stopped: a cancel would start the app
    // on the database that one left, without the typed release it needs.
    if r.mode == RestoreMode::InPlace && store::asked_while_held(&mut *tx, id, r.id).await? {
        return Err(FleetError::Conflict(
            "This restore was asked while a failed restore held the tenant stopped: cancelling it would start the server on the database that one left. Let this restore finish; if it fails, start the server as it is from here.".into(),
        ));
    }
    if !store::request_cancel(&mut tx, r.id, by.id.0).await? {
        return Err(FleetError::Conflict(
            "A cancel of this restore was already asked for; the cluster follows shortly.".into(),
        ));
    }
    fleet::add_event(
        &mut tx,
        id,
        EventKind::Action,
        &format!(
            "Cancel of the restore from backup {} asked",
            r.source_backup
        ),
        Some(by.id.0),
    )
    .await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((by.id, by.email)),
            org: Some(OrgId(inst.org_id)),
            action: "fleet.instance.restore_cancel_requested",
            target: inst.domain.clone(),
            source_ip: Some(by.ip),
            details: serde_json::json!({
                "instance": id,
                "restore": r.id,
                "backup": r.source_backup,
                "step": r.step.as_str(),
            }),
        },
    )
    .await?;
    herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
    tx.commit().await?;
    Ok(())
}

/// Is tenant `id` held stopped by a failed restore?
pub async fn held(pool: &PgPool, id: Uuid) -> Result<Option<Restore>, FleetError> {
    Ok(store::held(pool, id).await?)
}

/// The new tenant a restore goes into: same organization, app, version, plan and owner
/// as `source`, the short name and domain the operator chose (the operator vouches for
/// the domain: it needs no DNS proof), on the chosen cluster, outside billing until then;
/// with `take_order` (a move) the source must have an order and not be unpaid
/// ([`unpaid`]; the order moves when the restore succeeds: [`record`]).
async fn new_tenant(
    tx: &mut PgConnection,
    source: &fleet::Instance,
    slug: &str,
    domain: &str,
    cluster: Option<Uuid>,
    take_order: bool,
) -> Result<Uuid, FleetError> {
    let slug =
        Slug::parse(slug.trim()).map_err(|e| FleetError::Invalid(format!("Short name: {e}")))?;
    let domain = DomainName::parse(domain.trim())
        .map_err(|e| FleetError::Invalid(format!("Domain: {e}")))?;
    if fleet::slug_taken(&mut *tx, slug.as_str()).await? {
        return Err(FleetError::Invalid(format!(
            "Short name: {} is taken",
            slug.as_str()
        )));
    }
    if fleet::domain_in_use(&mut *tx, domain.as_str()).await? {
        return Err(FleetError::Invalid(format!(
            "Domain: {} is used by another server",
            domain.as_str()
        )));
    }
    let cluster = match cluster {
        Some(c) => Some(
            fleet::cluster(&mut *tx, c)
                .await?
                .ok_or_else(|| FleetError::Invalid("Cluster: no such cluster".into()))?,
        ),
        None => None,
    };
    let version = source
        .running_version
        .clone()
        .unwrap_or_else(|| source.version.clone());
    if take_order {
        if source.order_id.is_none() {
            return Err(FleetError::Invalid(
                "Billing: this tenant belongs to no order, so there is none to take; leave the new tenant outside billing.".into(),
            ));
        }
        if let Some(why) = unpaid(&mut *tx, source).await? {
            return Err(FleetError::Invalid(format!(
                "Billing: {why}; its order stays with it until paid."
            )));
        }
    }
    let id = match fleet::insert_instance(
        tx,
        &NewInstance {
            org: OrgId(source.org_id),
            order: None,
            app: &source.app,
            version: &version,
            plan_code: &source.plan_code,
            slug: slug.as_str(),
            domain: domain.as_str(),
            owner_username: &source.owner_username,
            owner_email: &source.owner_email,
            domain_token: None,
        },
    )
    .await
    {
        Ok(id) => id,
        Err(e) if e.is_conflict_on("instances_slug_key") => {
            return Err(FleetError::Invalid(format!(
                "Short name: {} is taken",
                slug.as_str()
            )))
        }
        Err(e) if e.is_conflict_on("instances_domain_key") => {
            return Err(FleetError::Invalid(format!(
                "Domain: {} is used by another server",
                domain.as_str()
            )))
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(c) = cluster {
        fleet::set_cluster(tx, id, c.id, &c.name).await?;
    }
    Ok(id)
}

/// The latest restores into tenant `id`, for its console page, and when its backups were
/// last proven by a restore.
#[derive(Debug, Clone)]
pub struct TenantRestores {
    pub recent: Vec<Restore>,
    pub last_proven: Option<OffsetDateTime>,
    /// When a cancel of the latest restore was asked for, if it was.
    pub cancel_requested: Option<OffsetDateTime>,
}

pub async fn for_console(pool: &PgPool, id: Uuid) -> Result<TenantRestores, FleetError> {
    let recent = store::recent(pool, id, 5).await?;
    let cancel_requested = match recent.first() {
        Some(r) => store::cancel_requested(pool, r.id).await?,
        None => None,
    };
    Ok(TenantRestores {
        recent,
        last_proven: store::last_proven(pool, id).await?,
        cancel_requested,
    })
}

/// What the operator reported of a restore (`status.restore`), in the control plane's
/// terms.
#[derive(Debug, Clone)]
pub struct Reported {
    /// `status.restore.id`: ours, when it parses.
    pub id: String,
    pub step: RestoreStep,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub source_rows: Rows,
    pub restored_rows: Rows,
    pub message: Option<String>,
}

/// Records what the operator reports of a restore into `instance`; a new step goes into
/// the tenant's history (and the source's, for a restore from another tenant's backup).
/// A finished restore (not a drill: the drill job concludes those) is concluded: proven
/// when it succeeded with every row of its backup. Returns the restore when its step
/// changed (decided under the restore's row lock: two syncs never both see the change),
/// `None` otherwise (the same step, or not a restore of `instance`).
pub async fn record(
    conn: &mut PgConnection,
    instance: Uuid,
    r: &Reported,
) -> Result<Option<Restore>, FleetError> {
    let Ok(id) = Uuid::parse_str(&r.id) else {
        return Ok(None);
    };
    let changed = store::record(
        &mut *conn,
        id,
        instance,
        &Report {
            step: r.step,
            started_at: r.started_at,
            finished_at: r.finished_at,
            source_rows: &r.source_rows,
            restored_rows: &r.restored_rows,
            message: r.message.as_deref(),
        },
    )
    .await?;
    if changed.is_none() {
        return Ok(None);
    }
    let Some(restore) = store::get(&mut *conn, id).await? else {
        return Ok(None);
    };
    let text = match (&r.step, &r.message) {
        (RestoreStep::Failed, Some(m)) => format!("Restore failed: {m}"),
        (RestoreStep::Cancelled, Some(m)) => format!("Restore cancelled: {m}"),
        (step, _) => format!("Restore: {}", step.label()),
    };
    let kind = if r.step == RestoreStep::Failed {
        EventKind::Error
    } else {
        EventKind::Phase
    };
    fleet::add_event(&mut *conn, instance, kind, &text, None).await?;
    if r.step == RestoreStep::Succeeded && store::moves_order(&mut *conn, id).await? {
        move_order(conn, &restore).await?;
    }
    if r.step.finished() && !restore.drill {
        let (outcome, reason) = verdict(&restore);
        store::conclude(
            &mut *conn,
            id,
            outcome,
            reason.as_deref(),
            time_to_restore(&restore),
            OffsetDateTime::now_utc(),
        )
        .await?;
    }
    Ok(Some(restore))
}

/// Why `source`'s order may not move (its server is held for non-payment, or what pays
/// for the order is suspended, scheduled for deletion or deleted by the access policy: a
/// new tenant under it would escape what it owes, or be taken away), or `None`.
async fn unpaid(
    conn: &mut PgConnection,
    source: &fleet::Instance,
) -> Result<Option<String>, FleetError> {
    if fleet::billing_hold(&mut *conn, source.id).await? {
        return Ok(Some("this tenant is suspended for non-payment".into()));
    }
    let Some(order) = source.order_id else {
        return Ok(None);
    };
    use herd_domain::access::Access;
    Ok(fleet::order_access_state(&mut *conn, order)
        .await?
        .as_deref()
        .and_then(Access::parse)
        .filter(|a| {
            matches!(
                a,
                Access::Suspended | Access::ScheduledForDeletion | Access::Deleted
            )
        })
        .map(|a| {
            format!(
                "what pays for its order is {}",
                a.as_str().replace('_', " ")
            )
        }))
}

/// A move that succeeded: the new tenant takes its source's order, and the source is
/// left outside billing, in the transaction that records the success; both histories
/// and the audit log (`fleet.instance.order_moved`) say so. When the source has no order
/// any more, or is unpaid ([`unpaid`]), the order stays and the new tenant's history says
/// it is outside billing.
async fn move_order(conn: &mut PgConnection, r: &Restore) -> Result<(), FleetError> {
    let Some(source_id) = r.source_instance_id else {
        return Ok(());
    };
    let Some(source) = fleet::lock_instance(&mut *conn, source_id).await? else {
        return Ok(());
    };
    let kept = match source.order_id {
        None => Some("the source has no order any more".to_owned()),
        Some(_) => unpaid(&mut *conn, &source).await?,
    };
    if let Some(why) = kept {
        let text =
            format!("The move's order stayed where it was ({why}): this tenant is outside billing");
        fleet::add_event(&mut *conn, r.instance_id, EventKind::Error, &text, None).await?;
        return Ok(());
    }
    let order = fleet::detach_order(&mut *conn, source_id).await?;
    let Some(order) = order else { return Ok(()) };
    if !fleet::attach_order(&mut *conn, r.instance_id, order).await? {
        return Err(FleetError::Conflict(format!(
            "tenant {} cannot take order {order}: it has one, or is deleted",
            r.instance_id
        )));
    }
    fleet::add_event(
        &mut *conn,
        source_id,
        EventKind::Action,
        "Its order moved to the tenant the move restored: this one is now outside billing",
        None,
    )
    .await?;
    fleet::add_event(
        &mut *conn,
        r.instance_id,
        EventKind::Action,
        &format!(
            "Took order {order} of {} ({}): billed under it from now on",
            source.domain, source.slug
        ),
        None,
    )
    .await?;
    audit::record(
        &mut *conn,
        NewEntry {
            actor: None,
            org: Some(OrgId(source.org_id)),
            action: "fleet.instance.order_moved",
            target: source.domain.clone(),
            source_ip: None,
            details: serde_json::json!({ "order": order, "from": source_id, "to": r.instance_id, "restore": r.id }),
        },
    )
    .await?;
    Ok(())
}

/// Did `r` (finished) prove its backup: succeeded, with as many rows as the backup had?
pub fn verdict(r: &Restore) -> (RestoreOutcome, Option<String>) {
    if r.step != RestoreStep::Succeeded {
        return (
            RestoreOutcome::Failed,
            Some(
                r.message
                    .clone()
                    .unwrap_or_else(|| format!("the restore {}", r.step.label())),
            ),
        );
    }
    // An import's manifest may count no rows: they are then counted, not compared.
    if r.source_rows.is_empty() && r.mode != RestoreMode::Import {
        return (
            RestoreOutcome::Failed,
            Some("the backup's manifest counted no rows to compare".into()),
        );
    }
    if r.source_rows != r.restored_rows {
        let differ: Vec<String> = r
            .source_rows
            .iter()
            .filter(|(t, n)| r.restored_rows.get(*t) != Some(n))
            .map(|(t, n)| {
                format!(
                    "{t}: {n} in the backup, {} restored",
                    r.restored_rows
                        .get(t)
                        .map_or_else(|| "none".to_owned(), i64::to_string)
                )
            })
            .collect();
        return (
            RestoreOutcome::Failed,
            Some(format!("rows differ ({})", differ.join("; "))),
        );
    }
    (RestoreOutcome::Passed, None)
}

/// Seconds from the request to the restore's end.
pub fn time_to_restore(r: &Restore) -> Option<i64> {
    r.finished_at
        .map(|f| (f - r.requested_at).whole_seconds().max(0))
}

/// Asks again for the applies of new tenants whose restore waits for the source's
/// app-secrets (its cluster was unreachable, or its Secret missing).
pub async fn retry_waiting(pool: &PgPool) -> Result<usize, FleetError> {
    let waiting = store::waiting_for_secrets(pool).await?;
    let mut tx = pool.begin().await?;
    for id in &waiting {
        herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: *id }).await?;
    }
    tx.commit().await?;
    Ok(waiting.len())
}
