//! Tenant backups as the clusters report them (`tenant_backups`) and the alerts raised on
//! tenants whose backups went wrong (`tenant_backup_alerts`).

use crate::StoreError;
use herd_domain::backup::{
    BackupAlertKind, BackupMethod, BackupOutcome, BackupReason, BucketVersioning, Finished,
    MediaBucket, MediaReading,
};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// One backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub name: String,
    pub reason: BackupReason,
    pub method: BackupMethod,
    pub outcome: BackupOutcome,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub duration_seconds: Option<i64>,
    pub size_bytes: Option<i64>,
    pub location: Option<String>,
    pub checksum: Option<String>,
    pub message: Option<String>,
}

fn bad(what: &str, value: &str) -> StoreError {
    StoreError::Invalid(format!("tenant_backups.{what} = {value:?}"))
}

struct Raw {
    name: String,
    reason: String,
    method: String,
    outcome: String,
    started_at: Option<OffsetDateTime>,
    finished_at: Option<OffsetDateTime>,
    duration_seconds: Option<i64>,
    size_bytes: Option<i64>,
    location: Option<String>,
    checksum: Option<String>,
    message: Option<String>,
}

impl TryFrom<Raw> for Backup {
    type Error = StoreError;
    fn try_from(r: Raw) -> Result<Self, StoreError> {
        Ok(Backup {
            reason: BackupReason::parse(&r.reason).ok_or_else(|| bad("reason", &r.reason))?,
            method: BackupMethod::parse(&r.method).ok_or_else(|| bad("method", &r.method))?,
            outcome: BackupOutcome::parse(&r.outcome).ok_or_else(|| bad("outcome", &r.outcome))?,
            name: r.name,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_seconds: r.duration_seconds,
            size_bytes: r.size_bytes,
            location: r.location,
            checksum: r.checksum,
            message: r.message,
        })
    }
}

/// Records backup `b` of `instance`, or updates its row (by name). Returns whether the
/// row is new or changed.
#[tracing::instrument(skip(conn, b), fields(backup = %b.name))]
pub async fn upsert(
    conn: &mut PgConnection,
    instance: Uuid,
    b: &Backup,
) -> Result<bool, StoreError> {
    let changed = sqlx::query_scalar!(
        r#"INSERT INTO tenant_backups (instance_id, name, reason, method, outcome, started_at,
                finished_at, duration_seconds, size_bytes, location, checksum, message)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (instance_id, name) DO UPDATE SET
                outcome = EXCLUDED.outcome, started_at = EXCLUDED.started_at,
                finished_at = EXCLUDED.finished_at, duration_seconds = EXCLUDED.duration_seconds,
                size_bytes = EXCLUDED.size_bytes, location = EXCLUDED.location,
                checksum = EXCLUDED.checksum, message = EXCLUDED.message, updated_at = now()
           WHERE (tenant_backups.outcome, tenant_backups.started_at, tenant_backups.finished_at,
                  tenant_backups.size_bytes, tenant_backups.location, tenant_backups.checksum,
                  tenant_backups.message)
                 IS DISTINCT FROM
                 (EXCLUDED.outcome, EXCLUDED.started_at, EXCLUDED.finished_at,
                  EXCLUDED.size_bytes, EXCLUDED.location, EXCLUDED.checksum, EXCLUDED.message)
           RETURNING 1 AS "one!""#,
        instance,
        b.name,
        b.reason.as_str(),
        b.method.as_str(),
        b.outcome.as_str(),
        b.started_at,
        b.finished_at,
        b.duration_seconds,
        b.size_bytes,
        b.location,
        b.checksum,
        b.message,
    )
    .fetch_optional(conn)
    .await?;
    Ok(changed.is_some())
}

/// The newest backups of `instance`, newest first.
#[tracing::instrument(skip(ex))]
pub async fn recent(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    limit: i64,
) -> Result<Vec<Backup>, StoreError> {
    sqlx::query_as!(
        Raw,
        r#"SELECT name, reason, method, outcome, started_at, finished_at, duration_seconds,
                  size_bytes, location, checksum, message
           FROM tenant_backups WHERE instance_id = $1
           ORDER BY started_at DESC NULLS FIRST, name DESC LIMIT $2"#,
        instance,
        limit
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(Backup::try_from)
    .collect()
}

/// When the last backup of `instance` that succeeded finished.
#[tracing::instrument(skip(ex))]
pub async fn last_success(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Option<OffsetDateTime>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT max(finished_at) FROM tenant_backups WHERE instance_id = $1 AND outcome = 'succeeded'",
        instance
    )
    .fetch_one(ex)
    .await?)
}

/// The latest finished backup of each method of `instance`.
#[tracing::instrument(skip(ex))]
pub async fn latest_finished(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Vec<Finished>, StoreError> {
    sqlx::query!(
        r#"SELECT DISTINCT ON (method) name, method, outcome, message
           FROM tenant_backups
           WHERE instance_id = $1 AND outcome <> 'running' AND finished_at IS NOT NULL
           ORDER BY method, finished_at DESC"#,
        instance
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| {
        Ok(Finished {
            method: BackupMethod::parse(&r.method).ok_or_else(|| bad("method", &r.method))?,
            outcome: BackupOutcome::parse(&r.outcome).ok_or_else(|| bad("outcome", &r.outcome))?,
            name: r.name,
            message: r.message,
        })
    })
    .collect()
}

/// The hours between `instance`'s scheduled backups.
pub async fn interval(ex: impl PgExecutor<'_>, instance: Uuid) -> Result<i32, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT backup_interval_hours FROM instances WHERE id = $1",
        instance
    )
    .fetch_optional(ex)
    .await?
    .unwrap_or(24))
}

/// Sets the hours between `instance`'s scheduled backups.
pub async fn set_interval(
    conn: &mut PgConnection,
    instance: Uuid,
    hours: i32,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE instances SET backup_interval_hours = $2 WHERE id = $1 AND backup_interval_hours <> $2",
        instance,
        hours
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The media bucket of `instance` and the cluster's last reading of it; `None` when its
/// media are not in object storage.
#[tracing::instrument(skip(conn))]
pub async fn media_bucket(
    conn: &mut PgConnection,
    instance: Uuid,
) -> Result<Option<MediaBucket>, StoreError> {
    let row = sqlx::query!(
        "SELECT media_bucket, media_bucket_since, media_versioning, media_versioning_message,
                media_versioning_checked_at, media_unreadable_since
         FROM instances WHERE id = $1",
        instance
    )
    .fetch_optional(conn)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let (Some(bucket), Some(since)) = (r.media_bucket, r.media_bucket_since) else {
        return Ok(None);
    };
    let reading = match (r.media_versioning, r.media_versioning_checked_at) {
        (Some(v), Some(checked_at)) => Some(MediaReading {
            versioning: BucketVersioning::parse(&v).ok_or_else(|| {
                StoreError::Invalid(format!("instances.media_versioning = {v:?}"))
            })?,
            message: r.media_versioning_message,
            checked_at,
        }),
        _ => None,
    };
    Ok(Some(MediaBucket {
        bucket,
        since,
        reading,
        unreadable_since: r.media_unreadable_since,
    }))
}

/// Records `instance`'s media bucket as its Instance names it at `now` (`None`: its media
/// are not in object storage) and the cluster's last reading of that bucket (`None`: not
/// read yet). A bucket named anew, or whose reading went (its endpoint changed), counts
/// from `now`; unreadable readings in a row keep the time of the first.
#[tracing::instrument(skip(conn))]
pub async fn set_media_bucket(
    conn: &mut PgConnection,
    instance: Uuid,
    bucket: Option<&str>,
    reading: Option<&MediaReading>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let reading = bucket.and(reading);
    sqlx::query!(
        "UPDATE instances SET
             media_bucket = $2,
             media_bucket_since = CASE WHEN $2::text IS NULL THEN NULL
                                       WHEN media_bucket IS DISTINCT FROM $2 THEN $6
                                       WHEN $3::text IS NULL AND media_versioning IS NOT NULL THEN $6
                                       ELSE media_bucket_since END,
             media_versioning = $3,
             media_versioning_message = $4,
             media_versioning_checked_at = $5,
             media_unreadable_since = CASE WHEN $3 = 'unreadable' THEN
                                          CASE WHEN media_versioning = 'unreadable' AND media_bucket = $2
                                               THEN media_unreadable_since ELSE $5 END
                                      END
         WHERE id = $1
           AND (media_bucket, media_versioning, media_versioning_message, media_versioning_checked_at)
               IS DISTINCT FROM ($2, $3, $4, $5)",
        instance,
        bucket,
        reading.map(|r| r.versioning.as_str()),
        reading.and_then(|r| r.message.as_deref()),
        reading.map(|r| r.checked_at),
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An alert on a tenant's backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub kind: BackupAlertKind,
    pub message: String,
    pub opened_at: OffsetDateTime,
    pub closed_at: Option<OffsetDateTime>,
    pub notified_at: Option<OffsetDateTime>,
}

struct RawAlert {
    id: Uuid,
    instance_id: Uuid,
    kind: String,
    message: String,
    opened_at: OffsetDateTime,
    closed_at: Option<OffsetDateTime>,
    notified_at: Option<OffsetDateTime>,
}

impl TryFrom<RawAlert> for Alert {
    type Error = StoreError;
    fn try_from(r: RawAlert) -> Result<Self, StoreError> {
        Ok(Alert {
            kind: BackupAlertKind::parse(&r.kind).ok_or_else(|| {
                StoreError::Invalid(format!("tenant_backup_alerts.kind = {:?}", r.kind))
            })?,
            id: r.id,
            instance_id: r.instance_id,
            message: r.message,
            opened_at: r.opened_at,
            closed_at: r.closed_at,
            notified_at: r.notified_at,
        })
    }
}

/// The open alert of `instance` on its media in object storage (`media`) or on its
/// database's backups, locked when `conn` is in a transaction.
#[tracing::instrument(skip(conn))]
pub async fn open_alert(
    conn: &mut PgConnection,
    instance: Uuid,
    media: bool,
) -> Result<Option<Alert>, StoreError> {
    sqlx::query_as!(
        RawAlert,
        "SELECT id, instance_id, kind, message, opened_at, closed_at, notified_at
         FROM tenant_backup_alerts
         WHERE instance_id = $1 AND closed_at IS NULL AND (kind = 'media_unprotected') = $2
         FOR UPDATE",
        instance,
        media
    )
    .fetch_optional(conn)
    .await?
    .map(Alert::try_from)
    .transpose()
}

/// The open alerts of `instance` (at most one on its database's backups, then one on its
/// media).
pub async fn open_alerts(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Vec<Alert>, StoreError> {
    sqlx::query_as!(
        RawAlert,
        "SELECT id, instance_id, kind, message, opened_at, closed_at, notified_at
         FROM tenant_backup_alerts WHERE instance_id = $1 AND closed_at IS NULL
         ORDER BY kind = 'media_unprotected', opened_at",
        instance
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(Alert::try_from)
    .collect()
}

/// One alert.
pub async fn alert(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Alert>, StoreError> {
    sqlx::query_as!(
        RawAlert,
        "SELECT id, instance_id, kind, message, opened_at, closed_at, notified_at
         FROM tenant_backup_alerts WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await?
    .map(Alert::try_from)
    .transpose()
}

/// Opens an alert on `instance` at `at`.
pub async fn open(
    conn: &mut PgConnection,
    instance: Uuid,
    kind: BackupAlertKind,
    message: &str,
    at: OffsetDateTime,
) -> Result<Uuid, StoreError> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO tenant_backup_alerts (instance_id, kind, message, opened_at)
         VALUES ($1, $2, $3, $4) RETURNING id",
        instance,
        kind.as_str(),
        message,
        at
    )
    .fetch_one(conn)
    .await?)
}

/// Updates what an open alert says (no new email: the incident is the same).
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    kind: BackupAlertKind,
    message: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_backup_alerts SET kind = $2, message = $3 WHERE id = $1",
        id,
        kind.as_str(),
        message
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn close(
    conn: &mut PgConnection,
    id: Uuid,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_backup_alerts SET closed_at = $2 WHERE id = $1 AND closed_at IS NULL",
        id,
        at
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_notified(ex: impl PgExecutor<'_>, id: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_backup_alerts SET notified_at = coalesce(notified_at, now()) WHERE id = $1",
        id
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Every tenant that is installed and not being deleted, with the age at `now` of its
/// last successful backup (or, without one, of the tenant): (slug, seconds).
#[tracing::instrument(skip(ex))]
pub async fn ages(
    ex: impl PgExecutor<'_>,
    now: OffsetDateTime,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query!(
        r#"SELECT i.slug,
                  EXTRACT(EPOCH FROM ($1 - coalesce(max(b.finished_at), i.created_at)))::bigint AS "age!"
           FROM instances i
           LEFT JOIN tenant_backups b ON b.instance_id = i.id AND b.outcome = 'succeeded'
           WHERE i.running_version IS NOT NULL AND i.phase NOT IN ('deleting', 'deleted')
             AND NOT EXISTS (SELECT 1 FROM tenant_restores r WHERE r.instance_id = i.id AND r.drill)
           GROUP BY i.id, i.slug, i.created_at
           ORDER BY i.slug"#,
        now
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.slug, r.age))
    .collect())
}

/// Per installed tenant with media in object storage (as its cluster last read them),
/// whether its bucket's versioning is on: slug → on.
pub async fn media_versioning(ex: impl PgExecutor<'_>) -> Result<Vec<(String, bool)>, StoreError> {
    Ok(sqlx::query!(
        r#"SELECT i.slug, i.media_versioning = 'enabled' AS "on!"
           FROM instances i
           WHERE i.media_versioning IS NOT NULL
             AND i.running_version IS NOT NULL AND i.phase NOT IN ('deleting', 'deleted')
             AND NOT EXISTS (SELECT 1 FROM tenant_restores r WHERE r.instance_id = i.id AND r.drill)
           ORDER BY i.slug"#
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.slug, r.on))
    .collect())
}

/// The operators' email addresses.
pub async fn operator_emails(ex: impl PgExecutor<'_>) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT email FROM users WHERE is_operator AND email_verified_at IS NOT NULL ORDER BY email"
    )
    .fetch_all(ex)
    .await?)
}
