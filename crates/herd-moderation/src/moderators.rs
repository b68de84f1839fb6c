//! Which operators may moderate: a role that operators who manage operators
//! ([`OperatorStanding::ManagesOperators`]) give and take in the console, audited.

use crate::{record, ModerationError, Who};
use herd_domain::role::OperatorStanding;
use herd_domain::UserId;
use herd_store::moderation as store;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// The refusal an operator who does not manage operators gets.
pub const NOT_AN_OPERATOR_MANAGER: &str =
    "Only operators who manage operators give or take the moderator role; ask one of them.";

/// May `who` give and take operators' roles?
pub async fn may_manage(pool: &PgPool, who: UserId) -> Result<bool, ModerationError> {
    Ok(store::operator_standing(pool, who)
        .await?
        .is_some_and(OperatorStanding::may_manage_operators))
}

async fn require_manager(pool: &PgPool, who: UserId) -> Result<(), ModerationError> {
    if may_manage(pool, who).await? {
        Ok(())
    } else {
        Err(ModerationError::Forbidden(NOT_AN_OPERATOR_MANAGER))
    }
}

/// Gives the moderator role to the operator with `email` (only an operator who manages
/// operators may). Audited.
pub async fn grant(pool: &PgPool, who: Who<'_>, email: &str) -> Result<(), ModerationError> {
    require_manager(pool, who.id).await?;
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

/// Takes the role away (only an operator who manages operators may). Audited.
pub async fn withdraw(pool: &PgPool, who: Who<'_>, user: Uuid) -> Result<(), ModerationError> {
    require_manager(pool, who.id).await?;
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
