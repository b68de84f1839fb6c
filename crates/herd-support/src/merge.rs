//! Merging a duplicate ticket into another ticket of the same organization.
//!
//! The duplicate is closed and marked merged (it can no longer be reopened, answered or
//! rated); its messages stay its own and are shown on the ticket it went into, each to
//! those who could see the duplicate: a customer sees there only what they saw on the
//! duplicate, internal notes only operators. The ticket kept is not touched: no event is
//! added to it, so its SLA clock goes on as before. Tickets merged into the duplicate
//! earlier move along to the ticket kept. Audited as `support.ticket.merged`.

use crate::sla::refresh;
use crate::tickets::{now, Member};
use crate::{SupportError, Who};
use herd_domain::ids::TicketId;
use herd_domain::support::Status;
use herd_store::audit::{self, NewEntry};
use herd_store::support::{self as store, Message, Ticket};
use herd_store::support_ops::{self as ops, TicketRef};
use serde_json::json;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// The refusal of anything that would reopen, answer or rate a merged ticket.
pub const MERGED: &str =
    "This ticket was merged into another one and stays closed: continue on that ticket.";

/// What an operator confirms before merging `source` into `target`.
#[derive(Debug, Clone)]
pub struct MergePlan {
    pub source: Ticket,
    pub target: Ticket,
    /// The duplicate's messages to customers and internal notes.
    pub messages: usize,
    pub notes: usize,
    /// Members who see the duplicate but not the ticket kept: they will not follow the
    /// conversation there (names).
    pub left_out: Vec<String>,
}

/// Why `source` cannot go into `target`, if it cannot.
fn refusal(source: &Ticket, target: &Ticket) -> Option<String> {
    if source.id == target.id {
        return Some("A ticket cannot be merged into itself.".to_owned());
    }
    if source.merged_into.is_some() {
        return Some(format!(
            "#{} was merged into another ticket already.",
            source.number
        ));
    }
    if target.merged_into.is_some() {
        return Some(format!(
            "#{} was itself merged into another ticket: merge into that one.",
            target.number
        ));
    }
    if source.org_id != target.org_id {
        return Some(format!(
            "#{} belongs to {}, not to {}: only tickets of the same organization can be merged.",
            target.number, target.org_name, source.org_name
        ));
    }
    if target.status == Status::Closed {
        return Some(format!(
            "#{} is closed: merge into a ticket that is still open, or reopen it first.",
            target.number
        ));
    }
    None
}

/// The number an operator typed ("1234" or "#1234").
fn number(into: &str) -> Option<i64> {
    into.trim()
        .trim_start_matches('#')
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
}

/// The merge of `source` into the ticket numbered `into`, to confirm; a refusal names
/// the field `into`.
pub async fn plan(pool: &PgPool, source: TicketId, into: &str) -> Result<MergePlan, SupportError> {
    let source = store::ticket(pool, source)
        .await?
        .ok_or(SupportError::NotFound)?;
    let n = number(into).ok_or_else(|| {
        SupportError::invalid("into", "Enter the number of the ticket to keep, e.g. 1234.")
    })?;
    let target = match ops::ticket_by_number(pool, n).await? {
        Some(id) => store::ticket(pool, id).await?,
        None => None,
    }
    .ok_or_else(|| SupportError::invalid("into", format!("There is no ticket #{n}.")))?;
    if let Some(why) = refusal(&source, &target) {
        return Err(SupportError::invalid("into", why));
    }
    let messages = store::messages(pool, source.id(), true).await?;
    let notes = messages.iter().filter(|m| m.internal).count();
    let mut left_out = Vec::new();
    for m in herd_store::orgs::members(pool, source.org()).await? {
        let member = Member {
            org: source.org(),
            role: m.role,
            who: Who {
                id: herd_domain::UserId(m.user_id),
                name: &m.display_name,
                email: &m.email,
                ip: "",
            },
        };
        if member.may_see(&source) && !member.may_see(&target) {
            left_out.push(m.display_name);
        }
    }
    Ok(MergePlan {
        messages: messages.len() - notes,
        notes,
        source,
        target,
        left_out,
    })
}

/// Merges `source` into `target` (see the module's documentation) and tells the
/// duplicate's customers by email where their conversation went ([`MergedEmail`], one job
/// each, queued in the merge's transaction); a refusal names the field `into`.
/// `base_url`: Herd's public address, for the emails' links.
pub async fn merge(
    pool: &PgPool,
    op: Who<'_>,
    source: TicketId,
    target: TicketId,
    base_url: &str,
) -> Result<(), SupportError> {
    let at = now();
    let mut tx = pool.begin().await?;
    // Both rows locked, in one order whoever merges what.
    let (first, second) = if source.0 < target.0 {
        (source, target)
    } else {
        (target, source)
    };
    for id in [first, second] {
        if !store::lock(&mut tx, id).await? {
            return Err(SupportError::NotFound);
        }
    }
    let s = store::ticket(&mut *tx, source)
        .await?
        .ok_or(SupportError::NotFound)?;
    let t = store::ticket(&mut *tx, target)
        .await?
        .ok_or(SupportError::NotFound)?;
    if let Some(why) = refusal(&s, &t) {
        return Err(SupportError::invalid("into", why));
    }
    if s.status != Status::Closed {
        store::set_status(&mut tx, source, Status::Closed, at).await?;
    }
    let moved = ops::set_merged(&mut tx, source, target, at).await?;
    refresh(&mut tx, source, at).await?;
    for to in store::customer_recipients(&mut *tx, source).await? {
        herd_jobs::enqueue(
            &mut *tx,
            &MergedEmail {
                source: source.0,
                target: target.0,
                to,
                base_url: base_url.to_owned(),
            },
        )
        .await?;
    }
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((op.id, op.email)),
            org: Some(s.org()),
            action: "support.ticket.merged",
            target: source.to_string(),
            source_ip: Some(op.ip),
            details: json!({
                "number": s.number,
                "into": t.id,
                "into_number": t.number,
                "status_before": s.status.as_str(),
                "moved_along": moved,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The email telling one of a duplicate's customers (its opener, or every member when it
/// was shared) that it was merged: with the kept ticket's link when they may see it, and
/// otherwise only that the conversation goes on there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MergedEmail {
    pub source: Uuid,
    pub target: Uuid,
    pub to: String,
    pub base_url: String,
}

impl herd_jobs::Job for MergedEmail {
    const KIND: &'static str = "support.merged_email";
    const MAX_ATTEMPTS: i32 = 10;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("support-merged:{}:{}", self.source, self.to))
    }
}

/// The email of [`MergedEmail`] as things are when it is sent; `None` when the tickets or
/// the recipient's account are gone.
pub async fn merged_email(
    pool: &PgPool,
    job: &MergedEmail,
) -> Result<Option<herd_mail::Email>, SupportError> {
    let (Some(source), Some(target)) = (
        store::ticket(pool, TicketId(job.source)).await?,
        store::ticket(pool, TicketId(job.target)).await?,
    ) else {
        return Ok(None);
    };
    let Ok(address) = herd_domain::Email::parse(&job.to) else {
        return Ok(None);
    };
    let Some(user) = herd_store::users::by_email(pool, &address).await? else {
        return Ok(None);
    };
    let membership = herd_store::orgs::for_user(pool, user.id())
        .await?
        .into_iter()
        .find(|m| m.org.id == source.org_id);
    let Some(membership) = membership else {
        return Ok(None);
    };
    let member = Member {
        org: membership.org.id(),
        role: membership.role,
        who: Who {
            id: herd_domain::UserId(user.id),
            name: &user.display_name,
            email: &user.email,
            ip: "",
        },
    };
    let base = job.base_url.trim_end_matches('/');
    let next = if member.may_see(&target) {
        format!(
            "It continues on ticket #{} \"{}\": follow and answer it there (answers to the old ticket's emails go there too):\n\n{base}/o/{}/support/{}\n",
            target.number, target.subject, target.org_slug, target.id
        )
    } else {
        format!(
            "Support continues the conversation on a ticket you cannot see. If you need more help, open a new ticket:\n\n{base}/o/{}/support/new\n",
            source.org_slug
        )
    };
    Ok(Some(herd_mail::Email {
        to: job.to.clone(),
        subject: format!("[Support] #{} merged: {}", source.number, source.subject),
        body: format!(
            "Hello,\n\nYour ticket #{} \"{}\" ({}) was the same question as another ticket, so support merged the two and closed #{}. Its messages and files are kept.\n\n{next}",
            source.number, source.subject, source.org_name, source.number
        ),
    }))
}

/// The ticket a merged one went into, as its page points to it.
#[derive(Debug, Clone)]
pub struct MergedInto {
    pub id: Uuid,
    pub number: i64,
    pub subject: String,
    /// May the viewer open it? (Operators: always.)
    pub visible: bool,
}

/// A ticket merged into the one shown, with its messages the viewer may read.
#[derive(Debug, Clone)]
pub struct MergedFrom {
    pub ticket: Ticket,
    pub merged_at: OffsetDateTime,
    pub messages: Vec<Message>,
    /// The files of those messages (they stay the merged ticket's: their links go
    /// through it, and its rules).
    pub attachments: Vec<crate::attachments::Attachment>,
}

/// What a ticket's page shows of merges.
#[derive(Debug, Clone, Default)]
pub struct Merges {
    /// This ticket was merged into that one.
    pub into: Option<MergedInto>,
    /// These were merged into this one.
    pub from: Vec<MergedFrom>,
}

/// `viewer`: a member (only what they may see, no internal notes), or `None` for
/// operators.
async fn merges(
    pool: &PgPool,
    t: &Ticket,
    viewer: Option<Member<'_>>,
) -> Result<Merges, SupportError> {
    let may_see = |other: &Ticket| viewer.is_none_or(|m| m.may_see(other));
    let into = match t.merged_into {
        Some(id) => store::ticket(pool, TicketId(id))
            .await?
            .map(|target| MergedInto {
                visible: may_see(&target),
                id: target.id,
                number: target.number,
                subject: target.subject,
            }),
        None => None,
    };
    let mut from = Vec::new();
    for (id, merged_at) in ops::merged_into(pool, t.id()).await? {
        let Some(source) = store::ticket(pool, id).await? else {
            continue;
        };
        if !may_see(&source) {
            continue;
        }
        let messages = store::messages(pool, id, viewer.is_none()).await?;
        let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
        let attachments =
            herd_store::support_attachments::of_messages(pool, &ids, viewer.is_none()).await?;
        from.push(MergedFrom {
            ticket: source,
            merged_at,
            messages,
            attachments,
        });
    }
    Ok(Merges { into, from })
}

/// The merges on the page of ticket `t` for a member who may see `t`.
pub async fn for_member(pool: &PgPool, m: Member<'_>, t: &Ticket) -> Result<Merges, SupportError> {
    if !m.may_see(t) {
        return Err(SupportError::NotFound);
    }
    merges(pool, t, Some(m)).await
}

/// The merges on the console's page of ticket `t`, internal notes included.
pub async fn for_operator(pool: &PgPool, t: &Ticket) -> Result<Merges, SupportError> {
    merges(pool, t, None).await
}

/// The organization's other unresolved tickets, newest first (where a duplicate may go).
pub async fn candidates(pool: &PgPool, t: &Ticket) -> Result<Vec<TicketRef>, SupportError> {
    Ok(ops::other_active_tickets(pool, t.org(), t.id(), 20).await?)
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn ticket_numbers_are_read_with_or_without_the_hash() {
        assert_eq!(number(" #1234 "), Some(1234));
        assert_eq!(number("77"), Some(77));
        assert_eq!(number("0"), None);
        assert_eq!(number("abc"), None);
        assert_eq!(number(""), None);
    }
}
