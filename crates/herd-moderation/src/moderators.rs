//! Which operators may moderate: a role that operators who manage operators
//! ([`OperatorStanding::ManagesOperators`]) give and take in the console, audited. That
//! standing itself is given and taken by those who have it in the console, or with
//! `herd admin set-operator`, through [`set_manages_operators`]: never from the last one
//! who has it.

use crate::{record, ModerationError, Who};
use herd_domain::role::OperatorStanding;
use herd_domain::UserId;
use herd_store::audit::{self, NewEntry};
use herd_store::moderation::{self as store, OperatorRow};
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

/// The refusal when the standing would be taken from the last operator who has it.
pub const LAST_OPERATOR_MANAGER: &str = "This operator is the last one who manages operators: let another operator manage operators first.";

/// An operator whose standing a manager is about to change (for the confirmation page):
/// only an operator who manages operators may see it; not found for a user who is no
/// operator.
pub async fn operator_to_manage(
    pool: &PgPool,
    who: UserId,
    user: Uuid,
) -> Result<OperatorRow, ModerationError> {
    require_manager(pool, who).await?;
    store::operator(pool, UserId(user))
        .await?
        .ok_or(ModerationError::NotFound)
}

/// Lets the operator `user` manage operators, or not. `by`: the operator doing it in the
/// console (who must manage operators), or `None` for `herd admin set-operator` on the
/// server itself. Refused when it would leave no operator who manages operators. Returns
/// whether anything changed; a change is audited (`operator.changed`, who and whom).
pub async fn set_manages_operators(
    pool: &PgPool,
    by: Option<Who<'_>>,
    user: UserId,
    manages: bool,
) -> Result<bool, ModerationError> {
    let mut tx = pool.begin().await?;
    // Locked first: a concurrent change waits, then sees this one's result.
    let managers = store::lock_operator_managers(&mut tx).await?;
    if let Some(who) = by {
        if !managers.contains(&who.id.0) {
            return Err(ModerationError::Forbidden(NOT_AN_OPERATOR_MANAGER));
        }
    }
    let target = store::operator(&mut *tx, user)
        .await?
        .ok_or(ModerationError::NotFound)?;
    if target.manages_operators == manages {
        return Ok(false);
    }
    if !manages && managers.iter().all(|m| *m == target.id) {
        return Err(ModerationError::invalid("manages", LAST_OPERATOR_MANAGER));
    }
    store::set_manages_operators(&mut tx, user, manages).await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: by.map(|w| (w.id, w.email)),
            org: None,
            action: "operator.changed",
            target: target.email.clone(),
            source_ip: by.map(|w| w.ip),
            details: json!({
                "user_id": target.id,
                "manages_operators": manages,
                "via": if by.is_some() { "console" } else { "herd admin set-operator" },
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
