//! Restores of tenants from their backups (`tenant_restores`): asked from the console or
//! by a restore drill, followed from what the operator reports, concluded as proven or not.

use crate::{Page, Paged, StoreError};
use herd_domain::restore::{RestoreMode, RestoreOutcome, RestoreStep};
use sqlx::{PgConnection, PgExecutor};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// Row counts of the main tables, by table.
pub type Rows = BTreeMap<String, i64>;

/// One restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    pub id: Uuid,
    /// The tenant restored into.
    pub instance_id: Uuid,
    /// The tenant whose backup is restored: none for an import, nor once that tenant
    /// was purged.
    pub source_instance_id: Option<Uuid>,
    pub source_backup: String,
    pub location: String,
    pub mode: RestoreMode,
    pub drill: bool,
    pub requested_by: Option<Uuid>,
    pub requested_at: OffsetDateTime,
    pub step: RestoreStep,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub source_rows: Rows,
    pub restored_rows: Rows,
    pub message: Option<String>,
    pub secrets_copied_at: Option<OffsetDateTime>,
    /// An import's manifest SHA-256, read when it was asked for.
    pub manifest_sha256: Option<String>,
    /// An import whose supplied app secrets are still sealed here (not yet written into
    /// the tenant's namespace).
    pub import_secrets_pending: bool,
    pub outcome: Option<RestoreOutcome>,
    pub outcome_reason: Option<String>,
    pub concluded_at: Option<OffsetDateTime>,
    pub time_to_restore_seconds: Option<i64>,
}

struct Raw {
    id: Uuid,
    instance_id: Uuid,
    source_instance_id: Option<Uuid>,
    source_backup: String,
    location: String,
    mode: String,
    drill: bool,
    requested_by: Option<Uuid>,
    requested_at: OffsetDateTime,
    step: String,
    started_at: Option<OffsetDateTime>,
    finished_at: Option<OffsetDateTime>,
    source_rows: serde_json::Value,
    restored_rows: serde_json::Value,
    message: Option<String>,
    secrets_copied_at: Option<OffsetDateTime>,
    manifest_sha256: Option<String>,
    import_secrets_pending: bool,
    outcome: Option<String>,
    outcome_reason: Option<String>,
    concluded_at: Option<OffsetDateTime>,
    time_to_restore_seconds: Option<i64>,
}

fn bad(what: &str, value: &str) -> StoreError {
    StoreError::Invalid(format!("tenant_restores.{what} = {value:?}"))
}

impl TryFrom<Raw> for Restore {
    type Error = StoreError;
    fn try_from(r: Raw) -> Result<Self, StoreError> {
        let rows = |v: serde_json::Value, what: &str| {
            serde_json::from_value::<Rows>(v).map_err(|e| bad(what, &e.to_string()))
        };
        Ok(Restore {
            mode: RestoreMode::parse(&r.mode).ok_or_else(|| bad("mode", &r.mode))?,
            step: RestoreStep::parse(&r.step).ok_or_else(|| bad("step", &r.step))?,
            outcome: match r.outcome {
                Some(o) => Some(RestoreOutcome::parse(&o).ok_or_else(|| bad("outcome", &o))?),
                None => None,
            },
            source_rows: rows(r.source_rows, "source_rows")?,
            restored_rows: rows(r.restored_rows, "restored_rows")?,
            id: r.id,
            instance_id: r.instance_id,
            source_instance_id: r.source_instance_id,
            source_backup: r.source_backup,
            location: r.location,
            drill: r.drill,
            requested_by: r.requested_by,
            requested_at: r.requested_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            message: r.message,
            secrets_copied_at: r.secrets_copied_at,
            manifest_sha256: r.manifest_sha256,
            import_secrets_pending: r.import_secrets_pending,
            outcome_reason: r.outcome_reason,
            concluded_at: r.concluded_at,
            time_to_restore_seconds: r.time_to_restore_seconds,
        })
    }
}

fn parse_all(rows: Vec<Raw>) -> Result<Vec<Restore>, StoreError> {
    rows.into_iter().map(Restore::try_from).collect()
}

/// A backup a restore can start from: a dump that succeeded, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restorable {
    pub name: String,
    pub finished_at: Option<OffsetDateTime>,
    pub size_bytes: Option<i64>,
    pub location: String,
}

/// `instance`'s backups that can be restored, newest first.
#[tracing::instrument(skip(ex))]
pub async fn restorable(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Vec<Restorable>, StoreError> {
    Ok(sqlx::query_as!(
        Restorable,
        r#"SELECT name, finished_at, size_bytes, location AS "location!"
           FROM tenant_backups
           WHERE instance_id = $1 AND method = 'dump' AND outcome = 'succeeded'
             AND location IS NOT NULL
           ORDER BY finished_at DESC NULLS LAST, name DESC"#,
        instance
    )
    .fetch_all(ex)
    .await?)
}

/// A restore to record.
#[derive(Debug, Clone)]
pub struct NewRestore<'a> {
    pub instance: Uuid,
    /// `None` for an import.
    pub source_instance: Option<Uuid>,
    pub source_backup: &'a str,
    pub location: &'a str,
    pub mode: RestoreMode,
    pub drill: bool,
    pub requested_by: Option<Uuid>,
    /// A move: the new tenant takes the source's order once the restore succeeds.
    pub moves_order: bool,
}

/// Records a restore (step `requested`) and bumps the target's spec generation, as its
/// Instance gets `spec.restore`. Conflict `tenant_restores_one_open_idx` while another is
/// unfinished.
#[tracing::instrument(skip(conn, r))]
pub async fn insert(conn: &mut PgConnection, r: &NewRestore<'_>) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO tenant_restores (id, instance_id, source_instance_id, source_backup,
                location, mode, drill, requested_by, moves_order)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        id,
        r.instance,
        r.source_instance,
        r.source_backup,
        r.location,
        r.mode.as_str(),
        r.drill,
        r.requested_by,
        r.moves_order
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE instances SET spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1",
        r.instance
    )
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// Whether restore `id` is a move (see [`NewRestore::moves_order`]).
pub async fn moves_order(ex: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT moves_order FROM tenant_restores WHERE id = $1", id)
            .fetch_optional(ex)
            .await?
            .unwrap_or(false),
    )
}

pub async fn get(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Restore>, StoreError> {
    sqlx::query_as!(
        Raw,
        r#"SELECT id, instance_id, source_instance_id, source_backup, location, mode, drill,
                requested_by, requested_at, step, started_at, finished_at, source_rows,
                restored_rows, message, secrets_copied_at, manifest_sha256,
                import_secrets IS NOT NULL AS "import_secrets_pending!", outcome,
                outcome_reason, concluded_at, time_to_restore_seconds
         FROM tenant_restores WHERE id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?
    .map(Restore::try_from)
    .transpose()
}

/// The restore into `instance` the operator has not finished (nor a drill given up), if
/// any: what its Instance's `spec.restore` carries.
pub async fn unfinished(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Option<Restore>, StoreError> {
    sqlx::query_as!(
        Raw,
        r#"SELECT id, instance_id, source_instance_id, source_backup, location, mode, drill,
                requested_by, requested_at, step, started_at, finished_at, source_rows,
                restored_rows, message, secrets_copied_at, manifest_sha256,
                import_secrets IS NOT NULL AS "import_secrets_pending!", outcome,
                outcome_reason, concluded_at, time_to_restore_seconds
         FROM tenant_restores
         WHERE instance_id = $1 AND step NOT IN ('succeeded', 'failed', 'cancelled')
           AND concluded_at IS NULL
         ORDER BY requested_at DESC LIMIT 1"#,
        instance
    )
    .fetch_optional(ex)
    .await?
    .map(Restore::try_from)
    .transpose()
}

/// The latest restores into `instance`, newest first.
pub async fn recent(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    limit: i64,
) -> Result<Vec<Restore>, StoreError> {
    parse_all(
        sqlx::query_as!(
            Raw,
            r#"SELECT id, instance_id, source_instance_id, source_backup, location, mode, drill,
                    requested_by, requested_at, step, started_at, finished_at, source_rows,
                    restored_rows, message, secrets_copied_at, manifest_sha256,
                    import_secrets IS NOT NULL AS "import_secrets_pending!", outcome,
                    outcome_reason, concluded_at, time_to_restore_seconds
             FROM tenant_restores WHERE instance_id = $1 AND NOT drill
             ORDER BY requested_at DESC LIMIT $2"#,
            instance,
            limit
        )
        .fetch_all(ex)
        .await?,
    )
}

/// Is `instance` a drill's scratch tenant?
pub async fn is_scratch(ex: impl PgExecutor<'_>, instance: Uuid) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM tenant_restores WHERE instance_id = $1 AND drill) AS "scratch!""#,
        instance
    )
    .fetch_one(ex)
    .await?)
}

/// What the operator reports of a restore.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    pub step: RestoreStep,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub source_rows: &'a Rows,
    pub restored_rows: &'a Rows,
    pub message: Option<&'a str>,
}

/// Writes what the operator reports of restore `id` into `instance`; returns the step it
/// had before, when the step changed (`None`: no such restore, or same step).
#[tracing::instrument(skip(conn, r))]
pub async fn record(
    conn: &mut PgConnection,
    id: Uuid,
    instance: Uuid,
    r: &Report<'_>,
) -> Result<Option<RestoreStep>, StoreError> {
    let Some(before) = sqlx::query_scalar!(
        "SELECT step FROM tenant_restores WHERE id = $1 AND instance_id = $2 FOR UPDATE",
        id,
        instance
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let before = RestoreStep::parse(&before).ok_or_else(|| bad("step", &before))?;
    sqlx::query!(
        "UPDATE tenant_restores SET step = $2, started_at = $3, finished_at = $4,
                source_rows = $5, restored_rows = $6, message = $7
         WHERE id = $1",
        id,
        r.step.as_str(),
        r.started_at,
        r.finished_at,
        serde_json::to_value(r.source_rows).map_err(|e| bad("source_rows", &e.to_string()))?,
        serde_json::to_value(r.restored_rows).map_err(|e| bad("restored_rows", &e.to_string()))?,
        r.message
    )
    .execute(&mut *conn)
    .await?;
    Ok((before != r.step).then_some(before))
}

/// Concludes restore `id`: proven or not, why, and how long it took (when it passed).
pub async fn conclude(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    outcome: RestoreOutcome,
    reason: Option<&str>,
    time_to_restore_seconds: Option<i64>,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE tenant_restores SET outcome = $2, outcome_reason = $3,
                time_to_restore_seconds = $4, concluded_at = $5
         WHERE id = $1 AND concluded_at IS NULL",
        id,
        outcome.as_str(),
        reason,
        time_to_restore_seconds,
        now
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Notes why restore `id` waits (`None`: it does not).
pub async fn set_message(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    message: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_restores SET message = $2 WHERE id = $1",
        id,
        message
    )
    .execute(ex)
    .await?;
    Ok(())
}

pub async fn mark_secrets_copied(ex: impl PgExecutor<'_>, id: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_restores SET secrets_copied_at = now(), message = NULL WHERE id = $1",
        id
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// The tenants whose restore into them waits for the source's app-secrets (or, for an
/// import, for the supplied ones to be written).
pub async fn waiting_for_secrets(ex: impl PgExecutor<'_>) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT r.instance_id FROM tenant_restores r JOIN instances i ON i.id = r.instance_id
         WHERE (r.mode = 'import' OR r.instance_id <> r.source_instance_id)
           AND r.secrets_copied_at IS NULL
           AND r.step = 'requested' AND r.concluded_at IS NULL AND i.desired <> 'deleted'"
    )
    .fetch_all(ex)
    .await?)
}

/// When a restore of `instance`'s backups last proved one (a drill that passed, or a
/// restore that brought back every row).
pub async fn last_proven(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Option<OffsetDateTime>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT max(concluded_at) FROM tenant_restores
         WHERE source_instance_id = $1 AND outcome = 'passed'",
        instance
    )
    .fetch_one(ex)
    .await?)
}

/// Drills not concluded yet, oldest first.
pub async fn open_drills(ex: impl PgExecutor<'_>) -> Result<Vec<Restore>, StoreError> {
    parse_all(
        sqlx::query_as!(
            Raw,
            r#"SELECT id, instance_id, source_instance_id, source_backup, location, mode, drill,
                    requested_by, requested_at, step, started_at, finished_at, source_rows,
                    restored_rows, message, secrets_copied_at, manifest_sha256,
                    import_secrets IS NOT NULL AS "import_secrets_pending!", outcome,
                    outcome_reason, concluded_at, time_to_restore_seconds
             FROM tenant_restores WHERE drill AND concluded_at IS NULL
             ORDER BY requested_at"#
        )
        .fetch_all(ex)
        .await?,
    )
}

/// How many drills started since `since`.
pub async fn drills_since(
    ex: impl PgExecutor<'_>,
    since: OffsetDateTime,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM tenant_restores WHERE drill AND requested_at >= $1"#,
        since
    )
    .fetch_one(ex)
    .await?)
}

/// A tenant a drill can prove, with its latest verified dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillCandidate {
    pub instance_id: Uuid,
    pub backup: String,
    pub location: String,
}

/// Installed tenants (running, not scratch, not being drilled) with a verified dump
/// backup, the one whose last proven restore is oldest first (never proven first).
pub async fn drill_candidates(
    ex: impl PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<DrillCandidate>, StoreError> {
    Ok(sqlx::query_as!(
        DrillCandidate,
        r#"SELECT i.id AS instance_id, b.name AS backup, b.location AS "location!"
           FROM instances i
           CROSS JOIN LATERAL (
               SELECT name, location FROM tenant_backups
               WHERE instance_id = i.id AND method = 'dump' AND outcome = 'succeeded'
                 AND location IS NOT NULL AND checksum IS NOT NULL
               ORDER BY finished_at DESC NULLS LAST, name DESC LIMIT 1) b
           WHERE i.phase = 'running' AND i.desired = 'running' AND i.cluster_id IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM tenant_restores r
                             WHERE r.instance_id = i.id AND r.drill)
             AND NOT EXISTS (SELECT 1 FROM tenant_restores r
                             WHERE r.source_instance_id = i.id AND r.drill
                               AND r.concluded_at IS NULL)
           ORDER BY (SELECT max(concluded_at) FROM tenant_restores r
                     WHERE r.source_instance_id = i.id AND r.outcome = 'passed') ASC NULLS FIRST,
                    i.created_at, i.id
           LIMIT $1"#,
        limit
    )
    .fetch_all(ex)
    .await?)
}

/// The organization that holds drills' scratch tenants, made on first use with the fixed
/// id [`DRILL_ORG_ID`] and the reserved short name [`DRILL_ORG`]: no member, no order, so
/// no customer sees them and nothing bills them. `None` (no drill) when a customer's
/// organization holds that short name (taken before it was reserved) or the drills'
/// organization has members.
pub async fn drill_org(conn: &mut PgConnection) -> Result<Option<Uuid>, StoreError> {
    sqlx::query!(
        "INSERT INTO organizations (id, slug, name) VALUES ($1, $2, 'Restore drills (internal)')
         ON CONFLICT DO NOTHING",
        DRILL_ORG_ID,
        DRILL_ORG
    )
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar!(
        r#"SELECT o.id FROM organizations o
           WHERE o.id = $1 AND o.slug = $2
             AND NOT EXISTS (SELECT 1 FROM memberships m WHERE m.org_id = o.id)"#,
        DRILL_ORG_ID,
        DRILL_ORG
    )
    .fetch_optional(&mut *conn)
    .await?)
}

/// The id of [`drill_org`], fixed.
pub const DRILL_ORG_ID: Uuid = Uuid::from_u128(0x00000000_0000_7000_8000_00000000d411);

/// The slug of [`drill_org`].
pub const DRILL_ORG: &str = "herd-restore-drills";

/// A drill as the console lists it.
#[derive(Debug, Clone)]
pub struct DrillLine {
    pub id: Uuid,
    pub requested_at: OffsetDateTime,
    pub source_instance_id: Uuid,
    pub source_domain: String,
    pub source_backup: String,
    pub step: String,
    pub outcome: Option<String>,
    pub outcome_reason: Option<String>,
    pub time_to_restore_seconds: Option<i64>,
}

/// Every drill, newest first.
pub async fn drills(ex: impl PgExecutor<'_>, page: Page) -> Result<Paged<DrillLine>, StoreError> {
    let rows = sqlx::query_as!(
        DrillLine,
        r#"SELECT r.id, r.requested_at, r.source_instance_id AS "source_instance_id!",
                i.domain AS source_domain,
                r.source_backup, r.step, r.outcome, r.outcome_reason, r.time_to_restore_seconds
         FROM tenant_restores r JOIN instances i ON i.id = r.source_instance_id
         WHERE r.drill
         ORDER BY r.requested_at DESC, r.id DESC
         LIMIT $1 OFFSET $2"#,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(rows))
}

/// The failed restore that holds tenant `instance` stopped, if any: its latest restore,
/// failed, not a drill, not released by an operator.
pub async fn held(ex: impl PgExecutor<'_>, instance: Uuid) -> Result<Option<Restore>, StoreError> {
    sqlx::query_as!(
        Raw,
        r#"SELECT id, instance_id, source_instance_id, source_backup, location, mode, drill,
                requested_by, requested_at, step, started_at, finished_at, source_rows,
                restored_rows, message, secrets_copied_at, manifest_sha256,
                import_secrets IS NOT NULL AS "import_secrets_pending!", outcome,
                outcome_reason, concluded_at, time_to_restore_seconds
         FROM (SELECT * FROM tenant_restores WHERE instance_id = $1
               ORDER BY requested_at DESC LIMIT 1) latest
         WHERE step = 'failed' AND NOT drill AND released_at IS NULL"#,
        instance
    )
    .fetch_optional(ex)
    .await?
    .map(Restore::try_from)
    .transpose()
}

/// Whether restore `id` of tenant `instance` was asked while an earlier failed restore held
/// the tenant stopped (not released): cancelling it would start the app on the database
/// that failed restore left.
pub async fn asked_while_held(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    id: Uuid,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (
             SELECT 1 FROM tenant_restores earlier, tenant_restores this
             WHERE this.id = $2 AND earlier.instance_id = $1 AND earlier.id <> this.id
               AND earlier.requested_at < this.requested_at
               AND earlier.step = 'failed' AND NOT earlier.drill AND earlier.released_at IS NULL
               AND NOT EXISTS (
                 SELECT 1 FROM tenant_restores between_them
                 WHERE between_them.instance_id = $1 AND between_them.step = 'succeeded'
                   AND between_them.requested_at > earlier.requested_at
                   AND between_them.requested_at < this.requested_at)
           ) AS "held!""#,
        instance,
        id
    )
    .fetch_one(ex)
    .await?)
}

/// Records that an operator started the tenant of failed restore `id` as it is.
pub async fn release(conn: &mut PgConnection, id: Uuid, by: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_restores SET released_at = now(), released_by = $2 WHERE id = $1",
        id,
        by
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The manifest checksum recorded for backup `name` of tenant `instance`.
pub async fn backup_checksum(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    name: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT checksum FROM tenant_backups WHERE instance_id = $1 AND name = $2",
        instance,
        name
    )
    .fetch_optional(ex)
    .await?
    .flatten())
}

/// Records that `by` asked to cancel restore `id`, while it has not reached its
/// migrations (nor been asked to cancel already); `false`: nothing changed.
pub async fn request_cancel(
    conn: &mut PgConnection,
    id: Uuid,
    by: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE tenant_restores SET cancel_requested_at = now(), cancel_requested_by = $2
         WHERE id = $1 AND cancel_requested_at IS NULL AND concluded_at IS NULL
           AND step IN ('requested', 'stopping_app', 'restoring')",
        id,
        by
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// When a cancel of restore `id` was asked for, if it was.
pub async fn cancel_requested(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<OffsetDateTime>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT cancel_requested_at FROM tenant_restores WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await?
    .flatten())
}

/// The cancelled restore that made tenant `instance` (into a new tenant, or an import), if
/// it is its latest: the tenant holds no data and is never installed fresh, so its
/// Instance keeps naming that restore (cancelled) until it is restored again or deleted.
pub async fn cancelled_held(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM (SELECT id, step, mode FROM tenant_restores WHERE instance_id = $1
                         ORDER BY requested_at DESC LIMIT 1) latest
         WHERE step = 'cancelled' AND mode <> 'in_place'",
        instance
    )
    .fetch_optional(ex)
    .await?)
}

/// The size recorded for backup `name` of tenant `instance`, when known.
pub async fn backup_size(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    name: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT size_bytes FROM tenant_backups WHERE instance_id = $1 AND name = $2",
        instance,
        name
    )
    .fetch_optional(ex)
    .await?
    .flatten())
}
