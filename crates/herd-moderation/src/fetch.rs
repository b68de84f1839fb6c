//! Copying a server's open reports into Herd's tables, so that moderators work from Herd
//! even while the server is briefly unreachable. Reports Herd holds as open that the
//! server no longer lists are looked up one by one: resolved there, or gone (404).

use crate::client::{AdminApi, AdminReport, ApiError};
use crate::connections;
use herd_domain::moderation::{ReportCategory, ReportState, Terms};
use herd_fleet::seal::SealKey;
use herd_store::moderation::{self as store, FetchedReport};
use sqlx::PgPool;
use std::collections::HashSet;
use time::OffsetDateTime;
use uuid::Uuid;

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Reports copied (open ones listed, others looked up).
    Done { listed: usize, looked_up: usize },
    /// Nothing to do: no usable connection (revoked, broken, none).
    NotConnected,
    /// The server refused the token: the connection is marked broken.
    TokenRefused,
    /// The server asked to wait until then; a fetch is queued for that time.
    RateLimited(OffsetDateTime),
}

/// Reports looked up one by one per fetch at most.
const MAX_LOOKUPS: usize = 100;

fn fetched(r: &AdminReport, terms: Terms) -> Result<FetchedReport, ApiError> {
    let reported_at = r.filed_at()?;
    Ok(FetchedReport {
        remote_id: r.id.clone(),
        category: ReportCategory::parse(&r.category).unwrap_or(ReportCategory::Other),
        comment: r.comment.clone(),
        forwarded: r.forwarded,
        reporter_acct: r.account.acct(),
        target_account_id: r.target_account.id.clone(),
        target_acct: r.target_account.acct(),
        statuses: serde_json::to_value(&r.statuses).map_err(|e| ApiError::Decode(e.to_string()))?,
        rules: serde_json::to_value(&r.rules).map_err(|e| ApiError::Decode(e.to_string()))?,
        action_taken: r.action_taken,
        reported_at,
        due_at: terms.due(reported_at),
    })
}

/// Fetches one server's reports. An error is returned (for the job to retry with backoff)
/// when the server failed or could not be reached; a refused token and a rate limit are
/// outcomes, recorded on the connection.
pub async fn fetch(
    pool: &PgPool,
    http: &reqwest::Client,
    key: Option<&SealKey>,
    instance: Uuid,
) -> anyhow::Result<Fetched> {
    let Some(i) = store::instance(pool, instance).await? else {
        return Ok(Fetched::NotConnected);
    };
    let Some(api) = connections::api(http, key, &i)? else {
        return Ok(Fetched::NotConnected);
    };
    match copy(pool, &api, instance, i.terms).await {
        Ok((listed, looked_up)) => {
            store::record_fetch(pool, instance, None, None).await?;
            Ok(Fetched::Done { listed, looked_up })
        }
        Err(e) if e.token_refused() => {
            let reason = e.to_string();
            store::mark_broken(pool, instance, &reason).await?;
            store::record_fetch(pool, instance, Some(&reason), None).await?;
            tracing::warn!(%instance, domain = %i.domain, error = %reason, "moderation token refused; connection marked broken");
            Ok(Fetched::TokenRefused)
        }
        Err(ApiError::RateLimited { until }) => {
            store::record_fetch(
                pool,
                instance,
                Some("rate limited by the server"),
                Some(until),
            )
            .await?;
            crate::jobs::enqueue_fetch_at(pool, instance, until).await?;
            Ok(Fetched::RateLimited(until))
        }
        Err(e) => {
            store::record_fetch(pool, instance, Some(&e.to_string()), None).await?;
            Err(anyhow::anyhow!("fetching the reports of {}: {e}", i.domain))
        }
    }
}

async fn copy(
    pool: &PgPool,
    api: &AdminApi,
    instance: Uuid,
    terms: Terms,
) -> Result<(usize, usize), ApiError> {
    let open = api.open_reports().await?;
    let mut seen = HashSet::new();
    let store_err = |e: herd_store::StoreError| ApiError::Transport(format!("database: {e}"));
    for r in &open {
        let f = fetched(r, terms)?;
        let mut conn = pool.acquire().await.map_err(|e| store_err(e.into()))?;
        store::upsert_report(&mut conn, instance, &f)
            .await
            .map_err(store_err)?;
        seen.insert(r.id.clone());
    }
    let mut looked_up = 0;
    let pending = store::pending_remote_ids(pool, instance)
        .await
        .map_err(store_err)?;
    for (id, remote) in pending
        .into_iter()
        .filter(|(_, r)| !seen.contains(r))
        .take(MAX_LOOKUPS)
    {
        looked_up += 1;
        match api.report(&remote).await {
            Ok(r) => {
                let f = fetched(&r, terms)?;
                let mut conn = pool.acquire().await.map_err(|e| store_err(e.into()))?;
                store::upsert_report(&mut conn, instance, &f)
                    .await
                    .map_err(store_err)?;
            }
            Err(ApiError::NotFound) => {
                store::set_report_state(pool, id, ReportState::Vanished)
                    .await
                    .map_err(store_err)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok((open.len(), looked_up))
}

/// A moderator asks for the reports now: of one server, or of every connected one.
/// Returns how many fetches were queued.
pub async fn fetch_now(
    pool: &PgPool,
    who: herd_domain::UserId,
    instance: Option<Uuid>,
) -> Result<usize, crate::ModerationError> {
    crate::require_moderator(pool, who).await?;
    let all = store::fetchable(pool).await?;
    let chosen: Vec<Uuid> = all
        .into_iter()
        .filter(|i| instance.is_none_or(|x| x == *i))
        .collect();
    for i in &chosen {
        crate::jobs::enqueue_fetch_now(pool, *i).await?;
    }
    Ok(chosen.len())
}
