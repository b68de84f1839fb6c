//! The moderator account's admin API token per server: supplied by the customer's owner
//! (or an admin) from the server's development settings, sealed with
//! `HERD_ENCRYPTION_KEY` for that server only, never shown back or logged, revocable.
//! Also the plans' moderation terms, which operators edit.

use crate::client::{AdminApi, AdminToken};
use crate::{record, ModerationError, Who};
use herd_domain::moderation::Terms;
use herd_domain::OrgId;
use herd_fleet::seal::SealKey;
use herd_store::moderation::{self as store, Instance};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// What a server's token is sealed for: it opens for this server only.
pub fn token_purpose(instance: Uuid) -> String {
    format!("herd:moderation-token:{instance}")
}

/// The message when the key to seal tokens is not configured.
pub const NO_KEY: &str = "Herd has no encryption key (HERD_ENCRYPTION_KEY), so it cannot keep the token: ask your provider.";

/// One of the organization's servers (not found for another organization's).
pub async fn org_instance(
    pool: &PgPool,
    org: OrgId,
    instance: Uuid,
) -> Result<Instance, ModerationError> {
    match store::instance(pool, instance).await? {
        Some(i) if i.org_id == org.0 => Ok(i),
        _ => Err(ModerationError::NotFound),
    }
}

/// Stores the token of the moderator account `moderator_account` for one of `org`'s
/// servers, replacing any earlier one, and fetches its reports. The plan must include
/// moderation. `base_url`: Herd's public address (for the overdue digest's links).
/// Audited (without the token).
pub async fn connect(
    pool: &PgPool,
    key: Option<&SealKey>,
    who: Who<'_>,
    org: OrgId,
    instance: Uuid,
    (moderator_account, token): (&str, &str),
    base_url: &str,
) -> Result<(), ModerationError> {
    let i = org_instance(pool, org, instance).await?;
    let mut errors = Vec::new();
    if !i.terms.included {
        errors.push((
            "token",
            format!(
                "The {} plan of {} does not include managed moderation.",
                i.plan_code, i.domain
            ),
        ));
    }
    let account = moderator_account.trim().trim_start_matches('@');
    if account.is_empty()
        || account.len() > 100
        || !account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        errors.push((
            "moderator_account",
            "Enter the moderator account's username (letters, digits and _).".to_owned(),
        ));
    }
    let token = AdminToken::parse(token)
        .map_err(|e| errors.push(("token", e.to_owned())))
        .ok();
    if key.is_none() {
        errors.push(("token", NO_KEY.to_owned()));
    }
    let (Some(token), Some(key), true) = (token, key, errors.is_empty()) else {
        return Err(ModerationError::Invalid(errors));
    };
    let sealed = key.seal(&token_purpose(instance), token.expose().as_bytes());
    let mut tx = pool.begin().await?;
    store::connect(&mut tx, instance, account, &sealed, who.id, base_url).await?;
    record(
        &mut tx,
        who,
        Some(i.org_id),
        "moderation.connection.connected",
        instance.to_string(),
        json!({ "domain": i.domain, "moderator_account": account }),
    )
    .await?;
    crate::jobs::enqueue_fetch_now(&mut *tx, instance).await?;
    tx.commit().await?;
    Ok(())
}

/// Revokes a server's token: it is wiped, nothing is called any more, its reports leave
/// the queue. Audited.
pub async fn revoke(
    pool: &PgPool,
    who: Who<'_>,
    org: OrgId,
    instance: Uuid,
) -> Result<(), ModerationError> {
    let i = org_instance(pool, org, instance).await?;
    let mut tx = pool.begin().await?;
    if !store::revoke(&mut tx, instance).await? {
        return Err(ModerationError::invalid(
            "revoke",
            "There is no token to revoke for this server.",
        ));
    }
    record(
        &mut tx,
        who,
        Some(i.org_id),
        "moderation.connection.revoked",
        instance.to_string(),
        json!({ "domain": i.domain }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The admin API of a server with a usable connection; `None` when it has none (revoked,
/// broken, never connected) or its token cannot be opened.
pub fn api(
    http: &reqwest::Client,
    key: Option<&SealKey>,
    i: &Instance,
) -> anyhow::Result<Option<AdminApi>> {
    let Some(c) = i.connection.as_ref().filter(|c| c.usable()) else {
        return Ok(None);
    };
    let key = key.ok_or_else(|| {
        anyhow::anyhow!(
            "no HERD_ENCRYPTION_KEY: the moderation token of {} cannot be opened",
            i.domain
        )
    })?;
    let plain = key
        .open(&token_purpose(i.id), &c.token_sealed)
        .map_err(|e| anyhow::anyhow!("the moderation token of {}: {e}", i.domain))?;
    let token = AdminToken::parse(&String::from_utf8_lossy(&plain)).map_err(|_| {
        anyhow::anyhow!("the stored moderation token of {} is not a token", i.domain)
    })?;
    Ok(Some(AdminApi::new(http.clone(), &i.api_base, token)?))
}

/// Sets a plan's moderation terms (operators). Audited.
pub async fn save_terms(
    pool: &PgPool,
    who: Who<'_>,
    plan: &str,
    included: bool,
    monthly_hours: &str,
    target_hours: &str,
) -> Result<Terms, ModerationError> {
    let terms =
        Terms::check(included, monthly_hours, target_hours).map_err(ModerationError::Invalid)?;
    let mut tx = pool.begin().await?;
    if !store::set_plan_terms(&mut tx, plan, terms).await? {
        return Err(ModerationError::NotFound);
    }
    record(
        &mut tx,
        who,
        None,
        "moderation.plan_terms.saved",
        plan,
        json!({ "included": terms.included, "monthly_hours": terms.monthly_hours, "response_target_hours": terms.response_target_hours }),
    )
    .await?;
    tx.commit().await?;
    Ok(terms)
}
