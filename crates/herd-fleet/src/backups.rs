//! Tenant backups on the control plane: the records the status sync copies from each
//! cluster, the alert raised when a tenant's last backup failed or none succeeded in time
//! (shown on its console page, emailed to operators once per incident, closed by the next
//! success; media in object storage without bucket versioning are an alert too), and the age of each tenant's last good backup for Prometheus
//! (`herd_tenant_backup_age_seconds`).

use crate::FleetError;
use herd_domain::backup::{
    assess, assess_media, BackupAlertKind, BackupHealth, MediaBucket, MediaReading,
};
use herd_domain::InstancePhase;
use herd_jobs::{Job, Registry};
use herd_mail::{Email, Mailer};
use herd_store::backups::{self as store, Alert, Backup};
use herd_store::fleet::{self, EventKind};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// What the cluster reports of a tenant's media: the bucket its Instance puts them in,
/// and the operator's last reading of that bucket's versioning (`None`: not read yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaReport<'a> {
    pub bucket: &'a str,
    pub reading: Option<MediaReading>,
}

/// Records what the cluster reports of `instance`'s backups (`interval_hours`: its
/// schedule, from its Instance) and of its media (`media`: `None` when they are on a
/// volume), then checks them at `now`.
pub async fn record(
    conn: &mut PgConnection,
    instance: Uuid,
    interval_hours: i32,
    backups: &[Backup],
    media: Option<&MediaReport<'_>>,
    now: OffsetDateTime,
) -> Result<(), FleetError> {
    store::set_interval(&mut *conn, instance, interval_hours.max(1)).await?;
    store::set_media_bucket(
        &mut *conn,
        instance,
        media.map(|m| m.bucket),
        media.and_then(|m| m.reading.as_ref()),
        now,
    )
    .await?;
    for b in backups {
        store::upsert(&mut *conn, instance, b).await?;
    }
    check(conn, instance, now).await
}

/// Opens, updates or closes `instance`'s alerts at `now`: one on its database's backups,
/// one on its media in object storage (each its own incident, so a standing media alert
/// never hides a failed backup). A new alert queues one email to the operators; a changed
/// one only changes what it says.
pub async fn check(
    conn: &mut PgConnection,
    instance: Uuid,
    now: OffsetDateTime,
) -> Result<(), FleetError> {
    let Some(inst) = fleet::instance(&mut *conn, instance).await? else {
        return Ok(());
    };
    // A restore drill's scratch copy takes no backups (spec.drill): never alerted.
    let watched = inst.running_version.is_some()
        && !matches!(inst.phase, InstancePhase::Deleting | InstancePhase::Deleted)
        && !herd_store::restores::is_scratch(&mut *conn, instance).await?;
    let bucket = store::media_bucket(&mut *conn, instance).await?;
    let (database, media) = if watched {
        (
            assess(
                now,
                store::interval(&mut *conn, instance).await?,
                inst.created_at,
                store::last_success(&mut *conn, instance).await?,
                &store::latest_finished(&mut *conn, instance).await?,
            ),
            // A restore (up to six hours) holds the operator's other work, the bucket's
            // reading among it: not known meanwhile, rather than stale.
            match inst.phase {
                InstancePhase::Restoring => BackupHealth::Pending,
                _ => assess_media(bucket.as_ref(), now),
            },
        )
    } else {
        (BackupHealth::Healthy, BackupHealth::Healthy)
    };
    let (closed_db, closed_media) = (closed(false, false), closed(true, bucket.is_some()));
    settle(conn, instance, false, database, closed_db, watched, now).await?;
    settle(conn, instance, true, media, closed_media, watched, now).await
}

/// What the history says when an alert closes: of the database's backups, or of its media
/// (`bucket`: whether they are still in object storage).
fn closed(media: bool, bucket: bool) -> &'static str {
    match (media, bucket) {
        (false, _) => "Backups are healthy again",
        (true, true) => {
            "The media in object storage are backed up again (the bucket's versioning is on)"
        }
        (true, false) => {
            "The media are no longer in object storage (each backup archives them): their alert is closed"
        }
    }
}

/// Brings `instance`'s open alert on its media (`media`) or its database's backups in
/// line with `health`; a closed one is noted in the history as `closes` says.
async fn settle(
    conn: &mut PgConnection,
    instance: Uuid,
    media: bool,
    health: BackupHealth,
    closes: &str,
    watched: bool,
    now: OffsetDateTime,
) -> Result<(), FleetError> {
    let open = store::open_alert(&mut *conn, instance, media).await?;
    match (health, open) {
        (BackupHealth::Healthy | BackupHealth::Pending, None)
        | (BackupHealth::Pending, Some(_)) => {}
        (BackupHealth::Healthy, Some(a)) => {
            store::close(&mut *conn, a.id, now).await?;
            if watched {
                fleet::add_event(&mut *conn, instance, EventKind::Phase, closes, None).await?;
            }
        }
        (BackupHealth::Alert { kind, message }, None) => {
            let id = store::open(&mut *conn, instance, kind, &message, now).await?;
            fleet::add_event(
                &mut *conn,
                instance,
                EventKind::Error,
                &format!("Backup alert: {message}"),
                None,
            )
            .await?;
            herd_jobs::enqueue(&mut *conn, &BackupAlertEmail { alert_id: id }).await?;
            tracing::warn!(%instance, kind = kind.as_str(), %message, "backup alert opened");
        }
        (BackupHealth::Alert { kind, message }, Some(a)) => {
            if a.kind != kind || a.message != message {
                store::update(&mut *conn, a.id, kind, &message).await?;
            }
        }
    }
    Ok(())
}

/// A tenant's backups as its console page shows them.
#[derive(Debug, Clone)]
pub struct TenantBackups {
    pub recent: Vec<Backup>,
    pub last_success: Option<OffsetDateTime>,
    /// Open alerts: the database's backups first, then the media's.
    pub alerts: Vec<Alert>,
    pub interval_hours: i32,
    /// The media bucket and the cluster's last reading of its versioning (media in object
    /// storage).
    pub media_bucket: Option<MediaBucket>,
}

pub async fn for_console(pool: &PgPool, instance: Uuid) -> Result<TenantBackups, FleetError> {
    let mut conn = pool.acquire().await?;
    Ok(TenantBackups {
        recent: store::recent(&mut *conn, instance, 10).await?,
        last_success: store::last_success(&mut *conn, instance).await?,
        alerts: store::open_alerts(&mut *conn, instance).await?,
        interval_hours: store::interval(&mut *conn, instance).await?,
        media_bucket: store::media_bucket(&mut conn, instance).await?,
    })
}

/// The Prometheus text of `herd_tenant_backup_age_seconds`: per installed tenant, the age
/// at `now` of its last successful backup (of the tenant itself while it has none); and
/// of `herd_tenant_media_versioning_enabled` per tenant with media in object storage.
/// Read from the database at each scrape, so a deleted tenant's series goes with it.
pub async fn metrics_text(pool: &PgPool, now: OffsetDateTime) -> Result<String, FleetError> {
    let mut out = String::from(
        "# HELP herd_tenant_backup_age_seconds Seconds since the tenant's last successful backup finished (since the tenant was created while it has none).\n# TYPE herd_tenant_backup_age_seconds gauge\n",
    );
    for (slug, age) in store::ages(pool, now).await? {
        // Slugs are [a-z0-9-]: nothing to escape in a label value.
        out.push_str(&format!(
            "herd_tenant_backup_age_seconds{{tenant=\"{slug}\"}} {}\n",
            age.max(0)
        ));
    }
    out.push_str("# HELP herd_tenant_media_versioning_enabled 1 when the bucket holding the tenant's media has versioning on (their only backup), 0 otherwise; tenants with media on a volume have no series.\n# TYPE herd_tenant_media_versioning_enabled gauge\n");
    for (slug, on) in store::media_versioning(pool).await? {
        out.push_str(&format!(
            "herd_tenant_media_versioning_enabled{{tenant=\"{slug}\"}} {}\n",
            u8::from(on)
        ));
    }
    Ok(out)
}

/// Email the operators that alert `alert_id` opened (once per incident).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupAlertEmail {
    pub alert_id: Uuid,
}

impl Job for BackupAlertEmail {
    const KIND: &'static str = "fleet.backup_alert_email";
    const MAX_ATTEMPTS: i32 = 10;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("backup-alert:{}", self.alert_id))
    }
}

/// The emails of an alert, one per operator; none once it closed or was sent.
pub async fn alert_emails(pool: &PgPool, alert_id: Uuid) -> Result<Vec<Email>, FleetError> {
    let Some(a) = store::alert(pool, alert_id).await? else {
        return Ok(Vec::new());
    };
    if a.closed_at.is_some() || a.notified_at.is_some() {
        return Ok(Vec::new());
    }
    let Some(inst) = fleet::instance(pool, a.instance_id).await? else {
        return Ok(Vec::new());
    };
    let what = match a.kind {
        BackupAlertKind::Failed => "failed",
        BackupAlertKind::Missed => "missed",
        BackupAlertKind::MediaUnprotected => "incomplete, media not protected",
    };
    let closes = match a.kind {
        BackupAlertKind::MediaUnprotected => {
            "the cluster reads the media bucket's versioning as on (it reads it every hour)"
        }
        BackupAlertKind::Failed | BackupAlertKind::Missed => "a backup succeeds again",
    };
    Ok(store::operator_emails(pool)
        .await?
        .into_iter()
        .map(|to| Email {
            to,
            subject: format!("[Herd] Backup {what}: {} ({})", inst.domain, inst.slug),
            body: format!(
                "The backups of {} ({}, organization {}) need attention since {}:\n\n{}\n\nThe tenant's page in the console shows its recent backups: /operator/instances/{}\nRunbook: docs/BACKUPS.md, \"When a backup alert fires\".\n\nThis alert is sent once; it closes when {closes}.\n",
                inst.domain,
                inst.slug,
                inst.org_name,
                a.opened_at,
                a.message,
                inst.id,
            ),
        })
        .collect())
}

/// Registers the alert email's handler.
pub fn register(registry: &mut Registry, pool: &PgPool, mailer: &Mailer) {
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: BackupAlertEmail| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            for email in alert_emails(&pool, job.alert_id).await? {
                mailer.send(&email).await?;
            }
            store::mark_notified(&pool, job.alert_id).await?;
            Ok(())
        }
    });
}
