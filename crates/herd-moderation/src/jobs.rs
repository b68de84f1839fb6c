//! Managed moderation's background jobs: fetching a server's reports (every five minutes,
//! and on demand), sending a decision's action, emailing an escalation to the customer's
//! owners and admins, and every two minutes [`CheckOverdue`]: forgetting deleted servers'
//! moderation and emailing each moderator one digest of the reports newly past their due
//! time.
//! [`register`] hands their handlers to the worker; [`run_ticks`] queues the periodic
//! jobs.

use herd_fleet::seal::SealKey;
use herd_jobs::{Job, Registry};
use herd_mail::{Email, Mailer};
use herd_store::moderation as store;
use herd_store::StoreError;
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use std::time::Duration as StdDuration;
use time::OffsetDateTime;
use uuid::Uuid;

/// How often reports are fetched from every connected server.
pub const FETCH_EVERY_SECS: i64 = 300;

/// Copy one server's open reports (one job per server and `bucket`: the 5-minute period
/// of a scheduled fetch, the second a rate limit ends, the microsecond of an on-demand
/// fetch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchReports {
    pub instance: Uuid,
    pub bucket: i64,
}

impl Job for FetchReports {
    const KIND: &'static str = "moderation.fetch_reports";
    const MAX_ATTEMPTS: i32 = 5;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!(
            "moderation-fetch:{}:{}",
            self.instance, self.bucket
        ))
    }
}

/// Send a decision's action to the server (`round` 0 first; later rounds after a rate
/// limit or a moderator's retry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAction {
    pub decision: Uuid,
    pub round: i64,
}

impl Job for SendAction {
    const KIND: &'static str = "moderation.send_action";
    const MAX_ATTEMPTS: i32 = 10;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("moderation-send:{}:{}", self.decision, self.round))
    }
}

/// Email an escalation to one of the organization's owners or admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationEmail {
    pub escalation: Uuid,
    pub to: String,
    pub base_url: String,
}

impl Job for EscalationEmail {
    const KIND: &'static str = "moderation.escalation_email";
    const MAX_ATTEMPTS: i32 = 10;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!(
            "moderation-escalation:{}:{}",
            self.escalation, self.to
        ))
    }
}

/// How often overdue reports are looked for (and deleted servers forgotten).
pub const CHECK_OVERDUE_EVERY_SECS: i64 = 120;

/// Forget deleted servers' moderation, then alert the moderators about the reports that
/// passed their due time since the last run (one job per 2-minute `bucket`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOverdue {
    pub bucket: i64,
}

impl Job for CheckOverdue {
    const KIND: &'static str = "moderation.check_overdue";
    const MAX_ATTEMPTS: i32 = 5;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("moderation-overdue-check:{}", self.bucket))
    }
}

/// One overdue report in a digest, with Herd's public address for its link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertedReport {
    pub report: Uuid,
    pub base_url: String,
}

/// Email one moderator the reports that passed their due time since the last check, in
/// one digest (`bucket`: the check's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueEmail {
    pub to: String,
    pub bucket: i64,
    pub reports: Vec<AlertedReport>,
}

impl Job for OverdueEmail {
    const KIND: &'static str = "moderation.overdue_email";
    const MAX_ATTEMPTS: i32 = 10;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("moderation-overdue:{}:{}", self.bucket, self.to))
    }
}

/// What a [`CheckOverdue`] run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Deleted servers whose moderation was forgotten.
    pub forgotten: usize,
    /// Reports newly past their due time (each alerted once).
    pub overdue: usize,
    /// Digests queued (one per moderator).
    pub emails: usize,
}

/// Forgets deleted servers' moderation, then marks the reports newly past their due time
/// as alerted and queues one digest per moderator listing them, in one transaction (a
/// report is alerted once; again only after it is reopened and overdue again). With no
/// moderator to email, nothing is marked: a warning is logged and the next run tries
/// again.
pub async fn check_overdue(pool: &PgPool, bucket: i64) -> Result<Checked, StoreError> {
    let mut tx = pool.begin().await?;
    let forgotten = store::forget_deleted(&mut tx).await?;
    for instance in &forgotten {
        tracing::info!(%instance, "moderation of a deleted server forgotten");
    }
    let to = store::moderator_emails(&mut *tx).await?;
    let mut checked = Checked {
        forgotten: forgotten.len(),
        ..Checked::default()
    };
    if to.is_empty() {
        let n = store::overdue_count(&mut *tx, OffsetDateTime::now_utc()).await?;
        if n > 0 {
            tracing::warn!(
                overdue = n,
                "reports are past their due time and no operator with the moderator role has a verified email to alert"
            );
        }
    } else {
        let overdue = store::claim_overdue(&mut tx).await?;
        if !overdue.is_empty() {
            let reports: Vec<AlertedReport> = overdue
                .iter()
                .map(|o| AlertedReport {
                    report: o.id,
                    base_url: o.base_url.clone(),
                })
                .collect();
            for to in &to {
                herd_jobs::enqueue(
                    &mut *tx,
                    &OverdueEmail {
                        to: to.clone(),
                        bucket,
                        reports: reports.clone(),
                    },
                )
                .await?;
            }
            checked.overdue = overdue.len();
            checked.emails = to.len();
        }
    }
    tx.commit().await?;
    Ok(checked)
}

/// The digest of overdue reports for one moderator: the reports still open, if the
/// recipient is still a verified operator with the moderator role (else nothing).
pub async fn overdue_email(pool: &PgPool, job: &OverdueEmail) -> anyhow::Result<Option<Email>> {
    if !store::is_moderator_email(pool, &job.to).await? {
        tracing::info!("an overdue digest's recipient is no moderator any more: not sent");
        return Ok(None);
    }
    let mut lines = Vec::new();
    for a in &job.reports {
        let Some(r) = store::report(pool, a.report).await? else {
            continue;
        };
        if r.state != herd_domain::moderation::ReportState::Open {
            continue;
        }
        lines.push(format!(
            "- {} ({}) on {} ({}), due {} UTC\n  {}/operator/moderation/reports/{}\n",
            r.target_acct,
            r.category.label(),
            r.instance_domain,
            r.org_name,
            r.due_at,
            a.base_url.trim_end_matches('/'),
            r.id,
        ));
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let n = lines.len();
    Ok(Some(Email {
        to: job.to.clone(),
        subject: if n == 1 {
            "[Moderation] Overdue: 1 report passed its due time".to_owned()
        } else {
            format!("[Moderation] Overdue: {n} reports passed their due time")
        },
        body: format!(
            "Hello,\n\nThese reports passed their due time, the response target of the customer's plan, and are still open:\n\n{}\nEach report is in one digest only; again only if it is reopened and overdue again.\n",
            lines.concat()
        ),
    }))
}

/// Queues a fetch of `instance` now (on demand: after connecting, or a moderator's
/// "fetch now"). Its key is the microsecond: every request fetches, even one right after
/// another fetch (the token may have changed in between).
pub async fn enqueue_fetch_now(ex: impl PgExecutor<'_>, instance: Uuid) -> Result<(), StoreError> {
    let micros = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000;
    let bucket = i64::try_from(micros).unwrap_or(i64::MAX);
    herd_jobs::enqueue(ex, &FetchReports { instance, bucket }).await?;
    Ok(())
}

/// Queues a fetch of `instance` at `at` (after a rate limit).
pub async fn enqueue_fetch_at(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let job = FetchReports {
        instance,
        bucket: at.unix_timestamp(),
    };
    herd_jobs::enqueue_at(ex, &job, Some(at)).await?;
    Ok(())
}

/// Queues the sending of `decision`'s action.
pub async fn enqueue_send(
    ex: impl PgExecutor<'_>,
    decision: Uuid,
    round: i64,
) -> Result<(), StoreError> {
    herd_jobs::enqueue(ex, &SendAction { decision, round }).await?;
    Ok(())
}

/// Queues the sending of `decision`'s action at `at` (after a rate limit).
pub async fn enqueue_send_at(
    ex: impl PgExecutor<'_>,
    decision: Uuid,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let job = SendAction {
        decision,
        round: at.unix_timestamp(),
    };
    herd_jobs::enqueue_at(ex, &job, Some(at)).await?;
    Ok(())
}

/// Queues the escalation's email to each owner and admin of `org`.
pub async fn enqueue_escalation_emails(
    conn: &mut sqlx::PgConnection,
    escalation: Uuid,
    org: Uuid,
    base_url: &str,
) -> Result<(), StoreError> {
    for to in store::deciders(&mut *conn, org).await? {
        herd_jobs::enqueue(
            &mut *conn,
            &EscalationEmail {
                escalation,
                to,
                base_url: base_url.to_owned(),
            },
        )
        .await?;
    }
    Ok(())
}

/// The email of an escalation, while it waits.
pub async fn escalation_email(
    pool: &PgPool,
    job: &EscalationEmail,
) -> anyhow::Result<Option<Email>> {
    let Some(e) = store::escalation(pool, job.escalation).await? else {
        return Ok(None);
    };
    let Some(i) = store::instance(pool, e.instance_id).await? else {
        return Ok(None);
    };
    let link = format!(
        "{}/o/{}/moderation/{}#escalations",
        job.base_url.trim_end_matches('/'),
        i.org_slug,
        i.id
    );
    Ok(Some(Email {
        to: job.to.clone(),
        subject: format!("[Moderation] Your decision is needed on {}", i.domain),
        body: format!(
            "Hello,\n\nA moderator ({}) asks you to decide on a report about {} ({}) on {}:\n\n{}\n\nDecide here:\n\n{link}\n",
            e.asked_by,
            e.target_acct,
            e.category.label(),
            i.domain,
            e.question.trim(),
        ),
    }))
}

/// Registers the handlers. `key` opens the servers' tokens (`HERD_ENCRYPTION_KEY`).
pub fn register(registry: &mut Registry, pool: &PgPool, mailer: &Mailer, key: Option<SealKey>) {
    let http = match crate::client::http_client() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for the moderation API; its jobs are not registered");
            return;
        }
    };
    let (p, h, k) = (pool.clone(), http.clone(), key.clone());
    registry.register(move |job: FetchReports| {
        let (pool, http, key) = (p.clone(), h.clone(), k.clone());
        async move {
            let outcome = crate::fetch::fetch(&pool, &http, key.as_ref(), job.instance).await?;
            tracing::debug!(instance = %job.instance, ?outcome, "moderation reports fetched");
            Ok(())
        }
    });
    let (p, h, k) = (pool.clone(), http, key);
    registry.register(move |job: SendAction| {
        let (pool, http, key) = (p.clone(), h.clone(), k.clone());
        async move {
            let outcome = crate::send::send(&pool, &http, key.as_ref(), job.decision).await?;
            tracing::info!(decision = %job.decision, ?outcome, "moderation action");
            Ok(())
        }
    });
    let p = pool.clone();
    registry.register(move |job: CheckOverdue| {
        let pool = p.clone();
        async move {
            let checked = check_overdue(&pool, job.bucket).await?;
            tracing::debug!(?checked, "moderation overdue check");
            Ok(())
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: OverdueEmail| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            if let Some(email) = overdue_email(&pool, &job).await? {
                mailer.send(&email).await?;
            }
            Ok(())
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: EscalationEmail| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            if let Some(email) = escalation_email(&pool, &job).await? {
                mailer.send(&email).await?;
            }
            Ok(())
        }
    });
}

/// Queues this period's fetch of every connected server, and this period's overdue check.
pub async fn tick(pool: &PgPool) -> Result<usize, StoreError> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    herd_jobs::enqueue(
        pool,
        &CheckOverdue {
            bucket: now.div_euclid(CHECK_OVERDUE_EVERY_SECS),
        },
    )
    .await?;
    let bucket = now.div_euclid(FETCH_EVERY_SECS);
    let instances = store::fetchable(pool).await?;
    for instance in &instances {
        herd_jobs::enqueue(
            pool,
            &FetchReports {
                instance: *instance,
                bucket,
            },
        )
        .await?;
    }
    Ok(instances.len())
}

/// Runs [`tick`] every minute until `shutdown` resolves (a period's fetch and check are
/// queued once).
pub async fn run_ticks(pool: PgPool, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(StdDuration::from_secs(60));
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = every.tick() => {
                if let Err(e) = tick(&pool).await {
                    tracing::warn!(error = %e, "queueing the moderation fetches failed");
                }
            }
        }
    }
}
