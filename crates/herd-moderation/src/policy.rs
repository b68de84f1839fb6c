//! The customer's moderation policy: house rules, what to remove, what to escalate,
//! urgent contacts, language. Every save is a new version; decisions record the version
//! in force.

use crate::connections::org_instance;
use crate::{record, ModerationError, Who};
use herd_domain::moderation::Policy;
use herd_domain::OrgId;
use herd_store::moderation as store;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Saves a new version of one of `org`'s servers' policy; returns its number. Audited.
pub async fn save(
    pool: &PgPool,
    who: Who<'_>,
    org: OrgId,
    instance: Uuid,
    policy: Policy,
) -> Result<i32, ModerationError> {
    let i = org_instance(pool, org, instance).await?;
    let policy = policy.check().map_err(ModerationError::Invalid)?;
    let mut tx = pool.begin().await?;
    let version = store::add_policy(&mut tx, instance, &policy, who.id, who.name).await?;
    record(
        &mut tx,
        who,
        Some(i.org_id),
        "moderation.policy.saved",
        instance.to_string(),
        json!({ "domain": i.domain, "version": version }),
    )
    .await?;
    tx.commit().await?;
    Ok(version)
}
