//! Which operators may moderate: a role operators give and take in the console, audited.

use crate::{record, ModerationError, Who};
use herd_domain::UserId;
use herd_store::moderation as store;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// Gives the moderator role to the operator with `email`. Audited.
pub async fn grant(pool: &PgPool, who: Who<'_>, email: &str) -> Result<(), ModerationError> {
    let email = email.trim().to_lowercase();
    let target = store::operators(pool)
        .await?
        .into_iter()
        .find(|o| o.email.to_lowercase() == email);
    let Some(target) = target else {
        return Err(ModerationError::invalid(
            "email",
            "No operator has this email: the moderator role is for operators.",
        ));
    };
    let mut tx = pool.begin().await?;
    if !store::grant(&mut tx, UserId(target.id), who.id).await? {
        return Err(ModerationError::invalid(
            "email",
            "This operator is a moderator already.",
        ));
    }
    record(
        &mut tx,
        who,
        None,
        "moderation.moderator.granted",
        target.email.clone(),
        json!({ "user_id": target.id }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Takes the role away. Audited.
pub async fn withdraw(pool: &PgPool, who: Who<'_>, user: Uuid) -> Result<(), ModerationError> {
    let target = store::operators(pool)
        .await?
        .into_iter()
        .find(|o| o.id == user && o.moderator)
        .ok_or(ModerationError::NotFound)?;
    let mut tx = pool.begin().await?;
    store::withdraw(&mut tx, UserId(user)).await?;
    record(
        &mut tx,
        who,
        None,
        "moderation.moderator.withdrawn",
        target.email.clone(),
        json!({ "user_id": target.id }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
