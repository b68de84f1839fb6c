//! Customers' exports of their servers (`tenant_exports`): asked for in the portal, taken
//! by the cluster's operator, recorded by the status sync, downloaded until they expire.

use crate::StoreError;
use herd_domain::export::ExportState;
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// One export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub id: Uuid,
    pub instance_id: Uuid,
    /// The server's organization and slug (the objects live under the slug).
    pub org_id: Uuid,
    pub slug: String,
    pub domain: String,
    pub requested_by: Option<Uuid>,
    pub requested_by_email: Option<String>,
    pub requested_at: OffsetDateTime,
    pub outcome: ExportState,
    pub location: Option<String>,
    pub size_bytes: Option<i64>,
    pub checksum: Option<String>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub message: Option<String>,
    pub link_days: i32,
    pub expires_at: Option<OffsetDateTime>,
    pub download_count: i32,
    pub base_url: String,
    pub notified_at: Option<OffsetDateTime>,
    /// The age recipient the app secrets are sealed to in this export, if its owner gave
    /// one (else it carries none).
    pub secrets_recipient: Option<String>,
}

impl Export {
    /// Ready and not expired at `now`: it can be downloaded.
    pub fn downloadable(&self, now: OffsetDateTime) -> bool {
        self.outcome == ExportState::Succeeded && self.expires_at.is_some_and(|e| e > now)
    }
}

struct Raw {
    id: Uuid,
    instance_id: Uuid,
    org_id: Uuid,
    slug: String,
    domain: String,
    requested_by: Option<Uuid>,
    requested_by_email: Option<String>,
    requested_at: OffsetDateTime,
    outcome: String,
    location: Option<String>,
    size_bytes: Option<i64>,
    checksum: Option<String>,
    started_at: Option<OffsetDateTime>,
    finished_at: Option<OffsetDateTime>,
    message: Option<String>,
    link_days: i32,
    expires_at: Option<OffsetDateTime>,
    download_count: i32,
    base_url: String,
    notified_at: Option<OffsetDateTime>,
    secrets_recipient: Option<String>,
}

impl TryFrom<Raw> for Export {
    type Error = StoreError;
    fn try_from(r: Raw) -> Result<Self, StoreError> {
        Ok(Export {
            outcome: ExportState::parse(&r.outcome).ok_or_else(|| {
                StoreError::Invalid(format!("tenant_exports.outcome = {:?}", r.outcome))
            })?,
            id: r.id,
            instance_id: r.instance_id,
            org_id: r.org_id,
            slug: r.slug,
            domain: r.domain,
            requested_by: r.requested_by,
            requested_by_email: r.requested_by_email,
            requested_at: r.requested_at,
            location: r.location,
            size_bytes: r.size_bytes,
            checksum: r.checksum,
            started_at: r.started_at,
            finished_at: r.finished_at,
            message: r.message,
            link_days: r.link_days,
            expires_at: r.expires_at,
            download_count: r.download_count,
            base_url: r.base_url,
            notified_at: r.notified_at,
            secrets_recipient: r.secrets_recipient,
        })
    }
}

/// Records a new export of `instance`, asked by `by`, with the app secrets sealed to
/// `secrets_recipient` (an age recipient the caller checked) or without them. The caller
/// has checked that none is in progress (a unique index refuses a second one anyway).
pub async fn insert(
    conn: &mut PgConnection,
    instance: Uuid,
    by: Uuid,
    link_days: i32,
    base_url: &str,
    secrets_recipient: Option<&str>,
) -> Result<Uuid, StoreError> {
    Ok(sqlx::query_scalar!(
        "INSERT INTO tenant_exports (instance_id, requested_by, link_days, base_url, secrets_recipient)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
        instance,
        by,
        link_days,
        base_url,
        secrets_recipient
    )
    .fetch_one(conn)
    .await?)
}

/// The export in progress, as the Instance's `spec.export` asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub id: Uuid,
    pub secrets_recipient: Option<String>,
}

/// The export of `instance` in progress, if any (the one `spec.export` asks for).
pub async fn open_for(ex: impl PgExecutor<'_>, instance: Uuid) -> Result<Option<Open>, StoreError> {
    Ok(sqlx::query_as!(
        Open,
        "SELECT id, secrets_recipient FROM tenant_exports
         WHERE instance_id = $1 AND outcome IN ('requested', 'running')
         ORDER BY requested_at DESC LIMIT 1",
        instance
    )
    .fetch_optional(ex)
    .await?)
}

/// One export.
pub async fn get(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Export>, StoreError> {
    sqlx::query_as!(
        Raw,
        r#"SELECT e.id, e.instance_id, i.org_id, i.slug, i.domain, e.requested_by,
                  u.email AS "requested_by_email?", e.requested_at, e.outcome, e.location,
                  e.size_bytes, e.checksum, e.started_at, e.finished_at, e.message, e.link_days,
                  e.expires_at, e.download_count, e.base_url, e.notified_at,
                  e.secrets_recipient
           FROM tenant_exports e JOIN instances i ON i.id = e.instance_id
           LEFT JOIN users u ON u.id = e.requested_by
           WHERE e.id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?
    .map(Export::try_from)
    .transpose()
}

/// The exports of `instance`, newest first (at most `limit`).
pub async fn recent(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    limit: i64,
) -> Result<Vec<Export>, StoreError> {
    sqlx::query_as!(
        Raw,
        r#"SELECT e.id, e.instance_id, i.org_id, i.slug, i.domain, e.requested_by,
                  u.email AS "requested_by_email?", e.requested_at, e.outcome, e.location,
                  e.size_bytes, e.checksum, e.started_at, e.finished_at, e.message, e.link_days,
                  e.expires_at, e.download_count, e.base_url, e.notified_at,
                  e.secrets_recipient
           FROM tenant_exports e JOIN instances i ON i.id = e.instance_id
           LEFT JOIN users u ON u.id = e.requested_by
           WHERE e.instance_id = $1
           ORDER BY e.requested_at DESC, e.id DESC LIMIT $2"#,
        instance,
        limit
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(Export::try_from)
    .collect()
}

/// What the cluster reports of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported<'a> {
    pub outcome: ExportState,
    pub location: Option<&'a str>,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub size_bytes: Option<i64>,
    pub checksum: Option<&'a str>,
    pub message: Option<&'a str>,
    /// The age recipient the cluster sealed the app secrets in it to, if any.
    pub secrets_sealed_to: Option<&'a str>,
}

/// Records what the cluster reports of export `id` of `instance`, while the export is in
/// progress (a finished or corrupt one keeps what it has). A success starts its link's
/// days. Returns the new state when it changed.
pub async fn record(
    conn: &mut PgConnection,
    instance: Uuid,
    id: Uuid,
    r: &Reported<'_>,
) -> Result<Option<ExportState>, StoreError> {
    let changed = sqlx::query_scalar!(
        r#"UPDATE tenant_exports SET outcome = $3, location = $4, started_at = $5,
                finished_at = CASE WHEN $3 IN ('succeeded', 'failed')
                                   THEN coalesce($6, now()) ELSE $6 END,
                size_bytes = $7, checksum = $8, message = $9,
                expires_at = CASE WHEN $3 = 'succeeded'
                                  THEN coalesce($6, now()) + make_interval(days => link_days)
                                  END
           WHERE id = $1 AND instance_id = $2 AND outcome IN ('requested', 'running')
             AND (outcome, location, started_at, finished_at, size_bytes, checksum, message)
                 IS DISTINCT FROM ($3, $4, $5, $6, $7, $8, $9)
           RETURNING outcome"#,
        id,
        instance,
        r.outcome.as_str(),
        r.location,
        r.started_at,
        r.finished_at,
        r.size_bytes.filter(|s| *s >= 0),
        r.checksum,
        r.message,
    )
    .fetch_optional(conn)
    .await?;
    Ok(changed.and_then(|o| ExportState::parse(&o)))
}

/// Marks export `id` corrupt (its bytes did not match its manifest), saying why. Returns
/// whether it was not so already.
pub async fn mark_corrupt(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    why: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query!(
        "UPDATE tenant_exports SET outcome = 'corrupt', message = $2
         WHERE id = $1 AND outcome <> 'corrupt'",
        id,
        why
    )
    .execute(ex)
    .await?
    .rows_affected()
        > 0)
}

/// Counts a download of export `id`.
pub async fn count_download(ex: impl PgExecutor<'_>, id: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_exports SET download_count = download_count + 1 WHERE id = $1",
        id
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Notes that the "export ready" email of `id` went out. Returns false when it had
/// already (a retried job sends nothing twice).
pub async fn mark_notified(ex: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    Ok(sqlx::query!(
        "UPDATE tenant_exports SET notified_at = now() WHERE id = $1 AND notified_at IS NULL",
        id
    )
    .execute(ex)
    .await?
    .rows_affected()
        > 0)
}
