//! Writing the audit log from handlers: the actor and source address come from the
//! request, the entry goes into the caller's transaction.

use crate::error::AppError;
use herd_domain::OrgId;
use herd_store::audit::{self, NewEntry};
use herd_store::users::User;
use sqlx::PgConnection;

/// Who is acting, and from where.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user: Option<&'a User>,
    pub ip: &'a str,
}

/// Records `action` on `target` in the same transaction as the change.
pub async fn record(
    conn: &mut PgConnection,
    actor: Actor<'_>,
    org: Option<OrgId>,
    action: &str,
    target: impl Into<String>,
    details: serde_json::Value,
) -> Result<(), AppError> {
    audit::record(
        conn,
        NewEntry {
            actor: actor.user.map(|u| (u.id(), u.email.as_str())),
            org,
            action,
            target: target.into(),
            source_ip: Some(actor.ip),
            details,
        },
    )
    .await?;
    Ok(())
}

/// Records an action a user took on their own account (target: their email).
pub async fn record_own(
    conn: &mut PgConnection,
    user: &User,
    ip: &str,
    action: &str,
    details: serde_json::Value,
) -> Result<(), AppError> {
    record(
        conn,
        Actor {
            user: Some(user),
            ip,
        },
        None,
        action,
        user.email.clone(),
        details,
    )
    .await
}
