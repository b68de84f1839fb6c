//! The audit log: who did what, to what, from where and when. Written in the same
//! transaction as the change it records.

use crate::{Page, Paged, StoreError};
use herd_domain::{AuditId, OrgId, UserId};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// An entry to write.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub actor: Option<(UserId, &'a str)>,
    pub org: Option<OrgId>,
    pub action: &'a str,
    pub target: String,
    pub source_ip: Option<&'a str>,
    pub details: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub id: Uuid,
    pub at: OffsetDateTime,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    pub org_id: Option<Uuid>,
    pub org_slug: Option<String>,
    pub action: String,
    pub target: String,
    pub source_ip: Option<String>,
    pub details: serde_json::Value,
}

#[tracing::instrument(skip(conn, entry), fields(action = entry.action))]
pub async fn record(conn: &mut PgConnection, entry: NewEntry<'_>) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO audit_log (id, actor_id, actor_email, org_id, action, target, source_ip, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        AuditId::new().0,
        entry.actor.map(|(id, _)| id.0),
        entry.actor.map(|(_, email)| email),
        entry.org.map(|o| o.0),
        entry.action,
        entry.target,
        entry.source_ip,
        entry.details
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Filters for browsing the log; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact action name (`org.member.role_changed`) or a prefix ending in `.` (`org.`).
    pub action: String,
    /// Substring of the actor's email.
    pub actor: String,
    /// Organization slug.
    pub org: String,
}

#[tracing::instrument(skip(ex))]
pub async fn list(
    ex: impl PgExecutor<'_>,
    filter: &Filter,
    page: Page,
) -> Result<Paged<Entry>, StoreError> {
    let action_pattern = if filter.action.is_empty() {
        "%".to_owned()
    } else if filter.action.ends_with('.') {
        format!("{}%", crate::users::like_escape(&filter.action))
    } else {
        crate::users::like_escape(&filter.action)
    };
    let actor_pattern = format!("%{}%", crate::users::like_escape(&filter.actor));
    let rows = sqlx::query_as!(
        Entry,
        r#"SELECT a.id, a.at, a.actor_id, a.actor_email, a.org_id, o.slug AS "org_slug?",
                  a.action, a.target, a.source_ip, a.details
           FROM audit_log a LEFT JOIN organizations o ON o.id = a.org_id
           WHERE a.action LIKE $1
             AND ($2 = '%%' OR a.actor_email ILIKE $2)
             AND ($3 = '' OR o.slug = $3)
           ORDER BY a.at DESC, a.id DESC
           LIMIT $4 OFFSET $5"#,
        action_pattern,
        actor_pattern,
        filter.org,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(rows))
}

/// Entries about one organization, newest first (for its owners).
#[tracing::instrument(skip(ex))]
pub async fn for_org(
    ex: impl PgExecutor<'_>,
    org: OrgId,
    page: Page,
) -> Result<Paged<Entry>, StoreError> {
    let rows = sqlx::query_as!(
        Entry,
        r#"SELECT a.id, a.at, a.actor_id, a.actor_email, a.org_id, o.slug AS "org_slug?",
                  a.action, a.target, a.source_ip, a.details
           FROM audit_log a LEFT JOIN organizations o ON o.id = a.org_id
           WHERE a.org_id = $1
           ORDER BY a.at DESC, a.id DESC
           LIMIT $2 OFFSET $3"#,
        org.0,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(rows))
}
