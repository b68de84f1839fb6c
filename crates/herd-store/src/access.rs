//! The access state of each billing subject (a Stripe subscription), operators' overrides,
//! and the record of every change.

use crate::StoreError;
use herd_domain::OrgId;
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantAccess {
    pub subject: String,
    pub org_id: Uuid,
    pub channel: String,
    pub state: String,
    pub next_state: Option<String>,
    pub next_at: Option<OffsetDateTime>,
    pub grace_until: Option<OffsetDateTime>,
    pub paused_since: Option<OffsetDateTime>,
    pub paused_before_s: i64,
}

/// The row of `subject`, locked for the transaction.
pub async fn lock(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<Option<TenantAccess>, StoreError> {
    Ok(sqlx::query_as!(
        TenantAccess,
        "SELECT subject, org_id, channel, state, next_state, next_at, grace_until, paused_since, paused_before_s
         FROM tenant_access WHERE subject = $1 FOR UPDATE",
        subject
    )
    .fetch_optional(conn)
    .await?)
}

pub async fn get(
    ex: impl PgExecutor<'_>,
    subject: &str,
) -> Result<Option<TenantAccess>, StoreError> {
    Ok(sqlx::query_as!(
        TenantAccess,
        "SELECT subject, org_id, channel, state, next_state, next_at, grace_until, paused_since, paused_before_s
         FROM tenant_access WHERE subject = $1",
        subject
    )
    .fetch_optional(ex)
    .await?)
}

/// Creates the row of a new subject in `state` (no-op when it exists).
pub async fn create(
    conn: &mut PgConnection,
    subject: &str,
    org: OrgId,
    channel: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO tenant_access (subject, org_id, channel, state) VALUES ($1, $2, $3, 'not_provisioned')
         ON CONFLICT (subject) DO NOTHING",
        subject,
        org.0,
        channel
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes the computed state and next step.
pub async fn set_state(
    conn: &mut PgConnection,
    subject: &str,
    state: &str,
    next: Option<(&str, OffsetDateTime)>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_access SET state = $2, next_state = $3, next_at = $4, updated_at = now() WHERE subject = $1",
        subject,
        state,
        next.map(|(s, _)| s),
        next.map(|(_, t)| t)
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a change of state; returns its id.
pub async fn record_transition(
    conn: &mut PgConnection,
    a: &TenantAccess,
    to: &str,
    next: Option<(&str, OffsetDateTime)>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO access_transitions (id, subject, org_id, from_state, to_state, next_state, next_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id,
        a.subject,
        a.org_id,
        a.state,
        to,
        next.map(|(s, _)| s),
        next.map(|(_, t)| t)
    )
    .execute(conn)
    .await?;
    Ok(id)
}

#[derive(Debug, Clone)]
pub struct Transition {
    pub id: Uuid,
    pub subject: String,
    pub org_id: Uuid,
    pub from_state: String,
    pub to_state: String,
    pub next_state: Option<String>,
    pub next_at: Option<OffsetDateTime>,
    pub at: OffsetDateTime,
}

pub async fn transition(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Transition>, StoreError> {
    Ok(sqlx::query_as!(
        Transition,
        "SELECT id, subject, org_id, from_state, to_state, next_state, next_at, at FROM access_transitions WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await?)
}

pub async fn transitions_of(
    ex: impl PgExecutor<'_>,
    subject: &str,
) -> Result<Vec<Transition>, StoreError> {
    Ok(sqlx::query_as!(
        Transition,
        "SELECT id, subject, org_id, from_state, to_state, next_state, next_at, at
         FROM access_transitions WHERE subject = $1 ORDER BY at, id",
        subject
    )
    .fetch_all(ex)
    .await?)
}

/// Operators' overrides.
pub async fn set_grace_until(
    conn: &mut PgConnection,
    subject: &str,
    until: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_access SET grace_until = $2 WHERE subject = $1",
        subject,
        until
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends operators' overrides (grace extension, paused clock) with the episode they were
/// granted for: the subject is paid up again, and a later payment problem starts afresh.
pub async fn end_overrides(conn: &mut PgConnection, subject: &str) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE tenant_access SET grace_until = NULL, paused_since = NULL, paused_before_s = 0
         WHERE subject = $1
           AND (grace_until IS NOT NULL OR paused_since IS NOT NULL OR paused_before_s <> 0)",
        subject
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Pauses the clock (`true`) or resumes it, adding the paused time to `paused_before_s`.
pub async fn set_paused(
    conn: &mut PgConnection,
    subject: &str,
    paused: bool,
) -> Result<(), StoreError> {
    if paused {
        sqlx::query!(
            "UPDATE tenant_access SET paused_since = coalesce(paused_since, now()) WHERE subject = $1",
            subject
        )
        .execute(conn)
        .await?;
    } else {
        sqlx::query!(
            "UPDATE tenant_access SET
                 paused_before_s = paused_before_s + greatest(coalesce(extract(epoch FROM now() - paused_since)::bigint, 0), 0),
                 paused_since = NULL
             WHERE subject = $1",
            subject
        )
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Every subject with a Stripe subscription linked to an organization: (subject, org). The
/// policy reads each one's facts again under its row lock.
pub async fn card_subjects(ex: impl PgExecutor<'_>) -> Result<Vec<(String, Uuid)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT 'stripe:' || stripe_subscription_id AS "subject!", org_id AS "org_id!"
           FROM subscriptions WHERE org_id IS NOT NULL"#
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(|r| (r.subject, r.org_id)).collect())
}

/// Notes that a payment arrived after `subject` was deleted; `true` the first time.
pub async fn mark_paid_after_deletion(
    conn: &mut PgConnection,
    subject: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE tenant_access SET paid_after_deletion_at = now()
         WHERE subject = $1 AND state = 'deleted' AND paid_after_deletion_at IS NULL",
        subject
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
