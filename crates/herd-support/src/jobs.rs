//! The support desk's background jobs: the email of an operator's reply (with the
//! ticket's signed reply address), the bounce of an email not taken, the SLA check
//! that records breaches, and the automatic closing of resolved tickets. [`register`]
//! hands their handlers to the worker; [`run_ticks`] queues the periodic ones.

use crate::inbound::{BounceEmail, ReplyAddresses};
use herd_domain::ids::TicketId;
use herd_jobs::{Job, Registry};
use herd_mail::{Email, Headers, Mailer};
use herd_store::support as store;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::time::Duration as StdDuration;
use uuid::Uuid;

/// Email an operator's reply to one of the ticket's customers: its opener, or every member
/// of the organization when it is shared with them (one job each, so that an address
/// that fails does not make the others be sent again on each retry). Internal notes are
/// never sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyEmail {
    pub message_id: Uuid,
    /// Herd's public address (the link starts with it).
    pub base_url: String,
    /// The recipient; empty in jobs queued before there was one job per recipient, which
    /// queue one job per recipient when they run.
    #[serde(default)]
    pub to: String,
}

impl Job for ReplyEmail {
    const KIND: &'static str = "support.reply_email";
    const MAX_ATTEMPTS: i32 = 10;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("support-reply:{}:{}", self.message_id, self.to))
    }
}

/// Queues the email of reply `message_id` to each of the ticket's customers, as they are
/// now.
pub async fn enqueue_reply_emails(
    conn: &mut sqlx::PgConnection,
    ticket: TicketId,
    message_id: Uuid,
    base_url: &str,
) -> Result<(), herd_store::StoreError> {
    for to in store::customer_recipients(&mut *conn, ticket).await? {
        herd_jobs::enqueue(
            &mut *conn,
            &ReplyEmail {
                message_id,
                base_url: base_url.to_owned(),
                to,
            },
        )
        .await?;
    }
    Ok(())
}

/// Recompute every unresolved ticket's clock and record breaches (each minute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSlas {
    pub bucket: i64,
}

impl Job for CheckSlas {
    const KIND: &'static str = "support.check_slas";
    const MAX_ATTEMPTS: i32 = 3;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("support-sla:{}", self.bucket))
    }
}

/// Close tickets resolved more than `after_days` days ago (each hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoClose {
    pub bucket: i64,
    pub after_days: u16,
}

impl Job for AutoClose {
    const KIND: &'static str = "support.auto_close";
    const MAX_ATTEMPTS: i32 = 3;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("support-close:{}", self.bucket))
    }
}

/// The email of reply `message_id` to `to`; none for an internal note or a customer's
/// message. With `replies`, it carries the ticket's signed reply address (Reply-To), so
/// that answering the email adds to the ticket.
pub async fn reply_email_to(
    pool: &PgPool,
    message_id: Uuid,
    to: &str,
    base_url: &str,
    replies: Option<&ReplyAddresses>,
) -> anyhow::Result<Option<(Email, Headers)>> {
    let Some((ticket_id, message)) = store::message(pool, message_id).await? else {
        return Ok(None);
    };
    if message.internal || !message.from_operator {
        return Ok(None);
    }
    let Some(ticket) = store::ticket(pool, ticket_id).await? else {
        return Ok(None);
    };
    let headers = Headers {
        reply_to: replies.map(|r| r.for_ticket(ticket.id())),
        auto_replied: false,
    };
    let email = reply_email(to, &ticket, &message, base_url, headers.reply_to.is_some());
    Ok(Some((email, headers)))
}

fn reply_email(
    to: &str,
    t: &store::Ticket,
    m: &store::Message,
    base_url: &str,
    by_email: bool,
) -> Email {
    let link = format!(
        "{}/o/{}/support/{}",
        base_url.trim_end_matches('/'),
        t.org_slug,
        t.id
    );
    Email {
        to: to.to_owned(),
        subject: format!("[Support] Re: {}", t.subject),
        body: format!(
            "Hello,\n\n{} from support answered your ticket \"{}\" ({}):\n\n{}\n\n{}\n\n{link}\n",
            m.author_name,
            t.subject,
            t.org_name,
            m.body.trim(),
            if by_email {
                "Reply to this email to answer (your reply is added to the ticket), or see the ticket and its files here:"
            } else {
                "See the ticket and reply here:"
            },
        ),
    }
}

/// Registers the support desk's job handlers; with `replies` (the support address and the
/// key of its signed reply addresses), reply emails can be answered by email.
pub fn register(
    registry: &mut Registry,
    pool: &PgPool,
    mailer: &Mailer,
    replies: Option<&ReplyAddresses>,
) {
    let (p, m, r) = (pool.clone(), mailer.clone(), replies.cloned());
    registry.register(move |job: ReplyEmail| {
        let (pool, mailer, replies) = (p.clone(), m.clone(), r.clone());
        async move {
            if job.to.is_empty() {
                // A job of before: one job per recipient now.
                let Some(ticket) = ticket_of_message(&pool, job.message_id).await? else {
                    return Ok(());
                };
                let mut tx = pool.begin().await?;
                enqueue_reply_emails(&mut tx, ticket, job.message_id, &job.base_url).await?;
                tx.commit().await?;
                return Ok(());
            }
            if let Some((email, headers)) = reply_email_to(
                &pool,
                job.message_id,
                &job.to,
                &job.base_url,
                replies.as_ref(),
            )
            .await?
            {
                mailer.send_with(&email, &headers).await?;
            }
            Ok(())
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: crate::merge::MergedEmail| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            if let Some(email) = crate::merge::merged_email(&pool, &job).await? {
                mailer.send(&email).await?;
            }
            Ok(())
        }
    });
    let m = mailer.clone();
    registry.register(move |job: BounceEmail| {
        let mailer = m.clone();
        async move {
            let headers = Headers {
                reply_to: None,
                auto_replied: true,
            };
            mailer.send_with(&job.email(), &headers).await?;
            Ok(())
        }
    });
    let p = pool.clone();
    registry.register(move |_: CheckSlas| {
        let pool = p.clone();
        async move {
            let n = crate::tickets::check_slas(&pool).await?;
            if n > 0 {
                tracing::info!(breaches = n, "SLA breaches recorded");
            }
            Ok(())
        }
    });
    let p = pool.clone();
    registry.register(move |job: AutoClose| {
        let pool = p.clone();
        async move {
            let cutoff =
                time::OffsetDateTime::now_utc() - time::Duration::days(i64::from(job.after_days));
            let n = crate::tickets::close_resolved_before(&pool, cutoff).await?;
            if n > 0 {
                tracing::info!(closed = n, "resolved tickets closed");
            }
            Ok(())
        }
    });
}

/// How old a stored file without a row must be before the sweep removes it: far longer
/// than any message takes to be saved.
pub const ORPHAN_AFTER: time::Duration = time::Duration::hours(1);

/// Sweeps `files` of orphaned files every hour (see
/// [`AttachmentStore::sweep_orphans`](crate::attachments::AttachmentStore::sweep_orphans)),
/// from `herd serve`, which holds the store, like its other hourly clean-ups; several
/// replicas sweeping at once remove nothing twice.
pub async fn run_sweeps(pool: PgPool, files: crate::attachments::AttachmentStore) {
    let mut every = tokio::time::interval(StdDuration::from_secs(3600));
    loop {
        every.tick().await;
        let cutoff = time::OffsetDateTime::now_utc() - ORPHAN_AFTER;
        match files.sweep_orphans(&pool, cutoff).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "orphaned support attachments removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping support attachments failed"),
        }
    }
}

/// How long resolved tickets stay resolved before they are closed, by default.
pub const AUTO_CLOSE_AFTER_DAYS: u16 = 7;

/// Queues the SLA check (one per minute) and the automatic closing (one per hour).
pub async fn tick(pool: &PgPool, auto_close_after_days: u16) -> Result<(), herd_store::StoreError> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    herd_jobs::enqueue(
        pool,
        &CheckSlas {
            bucket: now.div_euclid(60),
        },
    )
    .await?;
    herd_jobs::enqueue(
        pool,
        &AutoClose {
            bucket: now.div_euclid(3600),
            after_days: auto_close_after_days,
        },
    )
    .await?;
    Ok(())
}

/// Runs [`tick`] every minute until `shutdown` resolves.
pub async fn run_ticks(
    pool: PgPool,
    auto_close_after_days: u16,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(StdDuration::from_secs(60));
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = every.tick() => {
                if let Err(e) = tick(&pool, auto_close_after_days).await {
                    tracing::warn!(error = %e, "queueing the support desk's checks failed");
                }
            }
        }
    }
}

/// The ticket a job's message belongs to (for tests and logs).
pub async fn ticket_of_message(
    pool: &PgPool,
    message_id: Uuid,
) -> anyhow::Result<Option<TicketId>> {
    Ok(store::message(pool, message_id).await?.map(|(t, _)| t))
}
