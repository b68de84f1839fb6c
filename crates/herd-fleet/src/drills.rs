//! Restore drills: backups proven by restoring them, on a schedule. Each day
//! (`HERD_RESTORE_DRILLS_PER_DAY`, default 1; 0 turns drills off) the installed tenants
//! whose last proven restore is oldest (never proven first) get a drill: a scratch tenant
//! (`spec.drill`: no ingress, no scheduled or final backup) on the same cluster, made from
//! the tenant's latest verified dump. The drill passes only when the restore succeeded,
//! the scratch tenant reached Running and every table counted as many rows as the backup's
//! manifest; after [`LIMIT`] it fails. Either way the scratch tenant is then deleted and
//! the outcome, its reason and the time to restore are kept (console: the tenant's page,
//! `/operator/backups/drills`).
//!
//! Scratch tenants belong to an internal organization ([`herd_store::restores::DRILL_ORG`])
//! that has no member and no order: no customer sees them and nothing bills them.

use crate::jobs::ApplyInstance;
use crate::restores::{time_to_restore, verdict};
use crate::FleetError;
use herd_domain::restore::{RestoreMode, RestoreOutcome, RestoreStep};
use herd_domain::{Desired, InstancePhase, OrgId};
use herd_jobs::{Job, Registry};
use herd_store::fleet::{self, EventKind, NewInstance};
use herd_store::restores::{self as store, NewRestore, Restore};
use herd_store::{Page, Paged};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// A drill not finished after this fails, and its scratch tenant is torn down.
pub const LIMIT: time::Duration = time::Duration::hours(2);

/// How often the drill job runs.
pub const EVERY: Duration = Duration::from_secs(60);

/// Start the drills due, conclude the finished ones, and ask again for the applies of
/// restores waiting for a source's secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreDrills {
    pub bucket: i64,
    /// Drills per day (`HERD_RESTORE_DRILLS_PER_DAY`); 0: none are started.
    pub per_day: u32,
}

impl Job for RestoreDrills {
    const KIND: &'static str = "fleet.restore_drills";
    const MAX_ATTEMPTS: i32 = 3;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("restore-drills:{}", self.bucket))
    }
}

/// What a round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub started: Vec<Uuid>,
    pub concluded: Vec<(Uuid, RestoreOutcome)>,
}

/// One round at `now`: concludes the drills that finished (or ran out of time), then
/// starts new ones while fewer than `per_day` started in the last 24 hours.
pub async fn run(pool: &PgPool, per_day: u32, now: OffsetDateTime) -> Result<Round, FleetError> {
    let mut round = Round::default();
    crate::restores::retry_waiting(pool).await?;
    for d in store::open_drills(pool).await? {
        if let Some(outcome) = supervise(pool, &d, now).await? {
            round.concluded.push((d.id, outcome));
        }
    }
    if per_day == 0 {
        return Ok(round);
    }
    let started = store::drills_since(pool, now - time::Duration::days(1)).await?;
    let due = i64::from(per_day) - started;
    if due <= 0 {
        return Ok(round);
    }
    for c in store::drill_candidates(pool, due).await? {
        round
            .started
            .push(start(pool, c.instance_id, &c.backup, &c.location).await?);
    }
    Ok(round)
}

/// Makes the scratch tenant of a drill of `source` from its backup `backup`.
async fn start(
    pool: &PgPool,
    source: Uuid,
    backup: &str,
    location: &str,
) -> Result<Uuid, FleetError> {
    let mut tx = pool.begin().await?;
    let s = fleet::lock_instance(&mut tx, source)
        .await?
        .ok_or(FleetError::NotFound)?;
    let cluster = s
        .cluster_id
        .and_then(|c| s.cluster_name.clone().map(|n| (c, n)))
        .ok_or_else(|| FleetError::Invalid("the tenant is on no cluster".into()))?;
    let org = store::drill_org(&mut tx).await?.ok_or_else(|| {
        FleetError::Invalid(format!(
            "the drills' organization ({}) is missing or has members: a customer's organization may have taken its short name; rename that organization's short name (docs/FLEET.md)",
            store::DRILL_ORG
        ))
    })?;
    let tag = Uuid::now_v7().simple().to_string();
    let slug = format!("drill-{}", &tag[20..]);
    let domain = format!("{slug}.restore-drill.invalid");
    let version = s
        .running_version
        .clone()
        .unwrap_or_else(|| s.version.clone());
    let scratch = fleet::insert_instance(
        &mut tx,
        &NewInstance {
            org: OrgId(org),
            order: None,
            app: &s.app,
            version: &version,
            plan_code: &s.plan_code,
            slug: &slug,
            domain: &domain,
            owner_username: &s.owner_username,
            owner_email: &s.owner_email,
            domain_token: None,
        },
    )
    .await?;
    fleet::set_cluster(&mut tx, scratch, cluster.0, &cluster.1).await?;
    let id = store::insert(
        &mut tx,
        &NewRestore {
            instance: scratch,
            source_instance: Some(source),
            source_backup: backup,
            location,
            mode: RestoreMode::NewTenant,
            drill: true,
            requested_by: None,
            moves_order: false,
        },
    )
    .await?;
    // Nothing in the source tenant's history: its organization reads that history, and
    // a drill is the provider's check (the console's drills list and tenant page show it).
    fleet::add_event(
        &mut tx,
        scratch,
        EventKind::Action,
        &format!(
            "Restore drill of {} ({}) from backup {backup}",
            s.domain, s.slug
        ),
        None,
    )
    .await?;
    herd_jobs::enqueue(
        &mut *tx,
        &ApplyInstance {
            instance_id: scratch,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(tenant = %s.slug, drill = %id, scratch = %slug, "restore drill started");
    Ok(id)
}

/// Concludes drill `d` if it is over: passed, failed, or out of time. The scratch tenant
/// is then deleted (no final backup: it is a drill).
async fn supervise(
    pool: &PgPool,
    d: &Restore,
    now: OffsetDateTime,
) -> Result<Option<RestoreOutcome>, FleetError> {
    let scratch = fleet::instance(pool, d.instance_id).await?;
    let running = scratch
        .as_ref()
        .is_some_and(|s| s.phase == InstancePhase::Running);
    let (outcome, reason, ttr) = match d.step {
        RestoreStep::Failed | RestoreStep::Cancelled => {
            let (o, r) = verdict(d);
            (o, r, None)
        }
        RestoreStep::Succeeded if running => {
            let (o, r) = verdict(d);
            let ttr = (o == RestoreOutcome::Passed)
                .then(|| time_to_restore(d))
                .flatten();
            (o, r, ttr)
        }
        _ if now - d.requested_at > LIMIT => (
            RestoreOutcome::Failed,
            Some(format!(
                "not finished within {} hours (at: {}{})",
                LIMIT.whole_hours(),
                d.step.label(),
                match (&d.message, d.step) {
                    (_, RestoreStep::Succeeded) => ", the scratch tenant never ran".to_owned(),
                    (Some(m), _) => format!("; {m}"),
                    (None, _) => String::new(),
                }
            )),
            None,
        ),
        _ => return Ok(None),
    };
    let mut tx = pool.begin().await?;
    if !store::conclude(&mut *tx, d.id, outcome, reason.as_deref(), ttr, now).await? {
        return Ok(None);
    }
    let text = match (&outcome, &reason) {
        (RestoreOutcome::Passed, _) => format!(
            "Restore drill passed: backup {} restored with every row{}",
            d.source_backup,
            ttr.map_or_else(String::new, |s| format!(" in {}m {:02}s", s / 60, s % 60))
        ),
        (RestoreOutcome::Failed, r) => format!(
            "Restore drill failed: backup {}: {}",
            d.source_backup,
            r.as_deref().unwrap_or("no reason given")
        ),
    };
    let kind = if outcome == RestoreOutcome::Passed {
        EventKind::Phase
    } else {
        EventKind::Error
    };
    // On the scratch tenant only (see `start`); the outcome is in the drills list.
    fleet::add_event(&mut tx, d.instance_id, kind, &text, None).await?;
    if scratch.is_some_and(|s| s.desired != Desired::Deleted) {
        fleet::set_desired(&mut *tx, d.instance_id, Desired::Deleted).await?;
        fleet::add_event(
            &mut tx,
            d.instance_id,
            EventKind::Action,
            "Drill over: scratch tenant deleted",
            None,
        )
        .await?;
        herd_jobs::enqueue(
            &mut *tx,
            &ApplyInstance {
                instance_id: d.instance_id,
            },
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(drill = %d.id, outcome = outcome.as_str(), "restore drill concluded");
    Ok(Some(outcome))
}

/// Every drill, newest first, for the console.
pub async fn list(pool: &PgPool, page: Page) -> Result<Paged<store::DrillLine>, FleetError> {
    Ok(store::drills(pool, page).await?)
}

/// Registers the drill job's handler.
pub fn register(registry: &mut Registry, pool: &PgPool) {
    let p = pool.clone();
    registry.register(move |job: RestoreDrills| {
        let pool = p.clone();
        async move {
            let round = run(&pool, job.per_day, OffsetDateTime::now_utc()).await?;
            if !round.started.is_empty() || !round.concluded.is_empty() {
                tracing::info!(
                    started = round.started.len(),
                    concluded = round.concluded.len(),
                    "restore drills"
                );
            }
            Ok(())
        }
    });
}

/// Enqueues the drill job every [`EVERY`] until `shutdown` resolves (every worker ticks;
/// the job's dedupe key makes one of them run it).
pub async fn run_ticks(
    pool: PgPool,
    per_day: u32,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = every.tick() => {
                let job = RestoreDrills {
                    bucket: crate::jobs::bucket(OffsetDateTime::now_utc(), EVERY.as_secs() as i64),
                    per_day,
                };
                if let Err(e) = herd_jobs::enqueue(&pool, &job).await {
                    tracing::warn!(error = %e, "restore drill tick failed");
                }
            }
        }
    }
}
