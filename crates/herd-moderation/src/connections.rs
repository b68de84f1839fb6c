//! The moderator account's admin API token per server: made by a Job on the server's
//! cluster (account [`MODERATOR_USERNAME`], asked at provisioning, on a move to a plan
//! with moderation, or again by the customer; collected by the orchestrator), or supplied
//! by the customer's owner (or an admin) from the server's development settings. Either
//! way sealed with `HERD_ENCRYPTION_KEY` for that server only, never shown back or
//! logged, revocable. Also the plans' moderation terms, which operators edit.

use crate::client::{AdminApi, AdminToken};
use crate::{record, ModerationError, Who};
use herd_domain::moderation::Terms;
use herd_domain::OrgId;
use herd_fleet::jobs::ApplyInstance;
use herd_fleet::seal::SealKey;
use herd_store::audit::{self, NewEntry};
use herd_store::fleet::{self, EventKind, ModeratorToken};
use herd_store::moderation::{self as store, Instance};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// What a server's token is sealed for: it opens for this server only.
pub fn token_purpose(instance: Uuid) -> String {
    format!("herd:moderation-token:{instance}")
}

/// The username of the moderator account Herd makes on each moderated server (Mastodon
/// accepts letters, digits and `_`).
pub const MODERATOR_USERNAME: &str = "herd_moderation";

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
    herd_store::lock_key(&mut tx, &format!("moderator-token:{instance}")).await?;
    let made = fleet::moderator_token(&mut *tx, instance)
        .await?
        .unwrap_or_default();
    if made.making_recently(OffsetDateTime::now_utc()) {
        return Err(ModerationError::invalid("token", PASTE_WHILE_MAKING));
    }
    store::connect(&mut tx, instance, account, &sealed, who.id, base_url).await?;
    fleet::set_moderator_revoked_by_customer(&mut *tx, instance, false).await?;
    // The pasted token takes over: Herd's own tokens on the server stop working.
    let generation = if made.herd_tokens_live() {
        Some(revoke_herd_tokens(&mut tx, who, instance).await?)
    } else {
        None
    };
    record(
        &mut tx,
        who,
        Some(i.org_id),
        "moderation.connection.connected",
        instance.to_string(),
        json!({ "domain": i.domain, "moderator_account": account, "on_server_generation": generation }),
    )
    .await?;
    crate::jobs::enqueue_fetch_now(&mut *tx, instance).await?;
    tx.commit().await?;
    Ok(())
}

/// Revokes a server's token: it is wiped, nothing is called any more, its reports leave
/// the queue. When Herd ever made a token on the server (whichever is in use now), the
/// cluster is asked to revoke Herd's tokens there too (a new generation that only
/// revokes). Audited.
pub async fn revoke(
    pool: &PgPool,
    who: Who<'_>,
    org: OrgId,
    instance: Uuid,
) -> Result<(), ModerationError> {
    let i = org_instance(pool, org, instance).await?;
    let mut tx = pool.begin().await?;
    herd_store::lock_key(&mut tx, &format!("moderator-token:{instance}")).await?;
    // Herd's tokens may be live: asked and not revoked since, or the last revocation
    // failed (asked again here).
    let made = fleet::moderator_token(&mut *tx, instance)
        .await?
        .is_some_and(|t| t.herd_tokens_live());
    let wiped = store::revoke(&mut tx, instance).await?;
    if !wiped && !made {
        return Err(ModerationError::invalid(
            "revoke",
            "There is no token to revoke for this server.",
        ));
    }
    fleet::set_moderator_revoked_by_customer(&mut *tx, instance, true).await?;
    let generation = if made {
        Some(revoke_herd_tokens(&mut tx, who, instance).await?)
    } else {
        None
    };
    record(
        &mut tx,
        who,
        Some(i.org_id),
        "moderation.connection.revoked",
        instance.to_string(),
        json!({ "domain": i.domain, "on_server_generation": generation }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The message when a token is pasted while Herd is making its own.
pub const PASTE_WHILE_MAKING: &str = "Herd is making its own moderator token for this server: wait until it is connected or fails (at most an hour), then paste yours if you prefer it.";

/// Asks the cluster for a generation that only revokes Herd's tokens on the server, in
/// the caller's transaction (which holds the server's moderator-token lock). Returns it.
async fn revoke_herd_tokens(
    tx: &mut sqlx::PgConnection,
    who: Who<'_>,
    instance: Uuid,
) -> Result<i32, ModerationError> {
    let g = fleet::ask_moderator_token(&mut *tx, instance, true).await?;
    fleet::add_event(
        &mut *tx,
        instance,
        EventKind::Action,
        "Herd's moderator tokens on the server are to be revoked",
        Some(who.id.0),
    )
    .await?;
    herd_jobs::enqueue(
        &mut *tx,
        &ApplyInstance {
            instance_id: instance,
        },
    )
    .await?;
    Ok(g)
}

/// Where Herd's own moderator account on a server stands (`None`: no such server).
pub async fn moderator_token(
    pool: &PgPool,
    instance: Uuid,
) -> Result<Option<ModeratorToken>, ModerationError> {
    Ok(fleet::moderator_token(pool, instance).await?)
}

/// Asks the server's cluster to make a new token for Herd's moderator account (creating
/// the account if needed; earlier tokens of Herd's are revoked). The plan must include
/// moderation; refused while one is being made (asked less than an hour ago), and after
/// [`fleet::MODERATOR_TOKEN_ASKS_PER_DAY`] asks in 24 hours. The new token replaces the
/// server's connection when collected, pasted or not. Audited, in the server's history.
pub async fn ask_for_token(
    pool: &PgPool,
    who: Who<'_>,
    org: OrgId,
    instance: Uuid,
) -> Result<u32, ModerationError> {
    let i = org_instance(pool, org, instance).await?;
    if !i.terms.included {
        return Err(ModerationError::invalid(
            "ask",
            format!(
                "The {} plan of {} does not include managed moderation.",
                i.plan_code, i.domain
            ),
        ));
    }
    let mut tx = pool.begin().await?;
    herd_store::lock_key(&mut tx, &format!("moderator-token:{instance}")).await?;
    let state = fleet::moderator_token(&mut *tx, instance)
        .await?
        .ok_or(ModerationError::NotFound)?;
    let app = fleet::instance(&mut *tx, instance)
        .await?
        .map(|r| r.app)
        .unwrap_or_default();
    if app != "mastodon" {
        return Err(ModerationError::invalid(
            "ask",
            "Herd makes its moderator account on Mastodon servers only: paste a token of an account of yours instead.",
        ));
    }
    let now = OffsetDateTime::now_utc();
    if state.making_recently(now) {
        return Err(ModerationError::invalid(
            "ask",
            "Herd is already making a moderator token for this server; wait until it is connected or fails (after an hour without it you can ask again).",
        ));
    }
    let asked =
        fleet::moderator_token_asks_since(&mut *tx, instance, now - time::Duration::days(1))
            .await?;
    if asked >= fleet::MODERATOR_TOKEN_ASKS_PER_DAY {
        return Err(ModerationError::invalid(
            "ask",
            format!(
                "A new moderator token was asked {asked} times for this server in the last 24 hours, the most allowed: try again tomorrow, or paste a token of an account of yours."
            ),
        ));
    }
    let generation = fleet::ask_moderator_token(&mut *tx, instance, false).await?;
    fleet::set_moderator_revoked_by_customer(&mut *tx, instance, false).await?;
    fleet::add_event(
        &mut tx,
        instance,
        EventKind::Action,
        "A new moderator token for Herd's moderator account was asked for",
        Some(who.id.0),
    )
    .await?;
    record(
        &mut tx,
        who,
        Some(i.org_id),
        "moderation.connection.token_asked",
        instance.to_string(),
        json!({ "domain": i.domain, "generation": generation }),
    )
    .await?;
    herd_jobs::enqueue(
        &mut *tx,
        &ApplyInstance {
            instance_id: instance,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(u32::try_from(generation).unwrap_or(0))
}

/// Stores the token the cluster made for Herd's moderator account (generation
/// `generation`, read from the tenant's Secret) as the server's connection, sealed for
/// that server, and fetches its reports. Audited as the system. Returns whether it was
/// stored: a server deleted since, or whose generation is no longer the current one (a
/// revoke, a pasted token or a newer ask came after it), stores nothing (its Secret is
/// deleted all the same). Never logs the token.
pub async fn store_made_token(
    pool: &PgPool,
    key: &SealKey,
    instance: Uuid,
    generation: i32,
    token: &str,
) -> Result<bool, ModerationError> {
    let token = AdminToken::parse(token)
        .map_err(|_| ModerationError::invalid("token", "the Secret holds no token"))?;
    let Some(i) = store::instance(pool, instance).await? else {
        return Ok(false);
    };
    let sealed = key.seal(&token_purpose(instance), token.expose().as_bytes());
    let mut tx = pool.begin().await?;
    herd_store::lock_key(&mut tx, &format!("moderator-token:{instance}")).await?;
    if !store::connect_made(&mut tx, instance, MODERATOR_USERNAME, &sealed, generation).await? {
        return Ok(false);
    }
    fleet::add_event(
        &mut tx,
        instance,
        EventKind::Phase,
        "Herd's moderator account is connected: the moderators can work on the server's reports",
        None,
    )
    .await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: None,
            org: Some(OrgId(i.org_id)),
            action: "moderation.connection.made",
            target: instance.to_string(),
            source_ip: None,
            details: json!({ "domain": i.domain, "moderator_account": MODERATOR_USERNAME, "generation": generation }),
        },
    )
    .await?;
    crate::jobs::enqueue_fetch_now(&mut *tx, instance).await?;
    tx.commit().await?;
    Ok(true)
}

/// The admin API of a server with a usable connection whose plan includes moderation;
/// `None` when it has none (revoked, broken, never connected, or the plan no longer
/// includes moderation) or its token cannot be opened.
pub fn api(
    http: &reqwest::Client,
    key: Option<&SealKey>,
    i: &Instance,
) -> anyhow::Result<Option<AdminApi>> {
    let Some(c) = i
        .connection
        .as_ref()
        .filter(|c| c.usable() && i.terms.included)
    else {
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

/// Sets a plan's moderation terms (operators). Turned off, every server on the plan is
/// withdrawn at once (see [`fleet::withdraw_moderation_on_plan`]). Audited.
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
    // Turned off: every server on the plan is withdrawn at once (connection wiped, Herd's
    // tokens there revoked), as a move to a plan without moderation does.
    let withdrawn = if terms.included {
        Vec::new()
    } else {
        fleet::withdraw_moderation_on_plan(&mut tx, plan).await?
    };
    for &instance_id in &withdrawn {
        herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id }).await?;
    }
    record(
        &mut tx,
        who,
        None,
        "moderation.plan_terms.saved",
        plan,
        json!({ "included": terms.included, "monthly_hours": terms.monthly_hours, "response_target_hours": terms.response_target_hours, "servers_withdrawn": withdrawn.len() }),
    )
    .await?;
    tx.commit().await?;
    Ok(terms)
}
