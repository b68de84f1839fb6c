//! Tickets: what customers and operators do with them. Every change is one transaction
//! holding the ticket's row lock, writes the audit entry, recomputes the SLA clock, and
//! queues the email that follows from it (an operator's public reply).

use crate::attachments::Extras;
use crate::jobs::enqueue_reply_emails;
use crate::sla::{clock, refresh};
use crate::{SupportError, Who};
use herd_domain::ids::TicketId;
use herd_domain::role::Capability;
use herd_domain::support::{
    check_body, check_subject, Category, Priority, Score, Sla, Status, SupportTier, REOPEN_WINDOW,
};
use herd_domain::{OrgId, Role, UserId};
use herd_store::audit::{self, NewEntry};
use herd_store::support::{self as store, Message, NewMessage, NewTicket, Rating, Ticket};
use herd_store::{Page, Paged};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// A member of the organization in the portal.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub org: OrgId,
    pub role: Role,
    pub who: Who<'a>,
}

impl Member<'_> {
    fn sees_all(&self) -> bool {
        self.role.can(Capability::SeeAllTickets)
    }

    /// May this member see `t`? Its organization's, and theirs, shared, or all by role.
    pub(crate) fn may_see(&self, t: &Ticket) -> bool {
        t.org_id == self.org.0
            && (self.sees_all() || t.shared_with_org || t.opener_id == Some(self.who.id.0))
    }
}

pub(crate) fn now() -> OffsetDateTime {
    // Microseconds, as PostgreSQL stores them, so that what is written reads back equal.
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
        .unwrap_or(t)
}

async fn record(
    conn: &mut PgConnection,
    who: Who<'_>,
    org: OrgId,
    action: &str,
    ticket: TicketId,
    details: Value,
) -> Result<(), SupportError> {
    audit::record(
        conn,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: Some(org),
            action,
            target: ticket.to_string(),
            source_ip: Some(who.ip),
            details,
        },
    )
    .await?;
    Ok(())
}

/// A new ticket as typed in the portal.
#[derive(Debug, Clone, Default)]
pub struct Opening {
    pub subject: String,
    pub body: String,
    pub category: String,
    pub priority: String,
    /// A server's id, or empty.
    pub instance: String,
    pub shared_with_org: bool,
}

/// What the new-ticket form offers the organization: its tier and its servers.
pub async fn opening_choices(
    pool: &PgPool,
    org: OrgId,
) -> Result<(SupportTier, Vec<(Uuid, String)>), SupportError> {
    let plan = store::org_plan(pool, org).await?;
    let tier = crate::tiers::tier_for(pool, plan.as_deref()).await?;
    Ok((tier, store::org_instances(pool, org).await?))
}

/// The message when a plan's tier does not allow urgent tickets.
pub const NO_URGENT: &str = "Your plan's support does not include urgent tickets: choose high priority, or move to a plan with urgent support.";

/// Opens a ticket with its first message; nothing is written if anything is wrong.
pub async fn open(pool: &PgPool, m: Member<'_>, o: &Opening) -> Result<TicketId, SupportError> {
    open_with(pool, m, o, Extras::default()).await
}

/// [`open`], with files or the email it came from ([`crate::attachments`],
/// [`crate::inbound`]).
pub(crate) async fn open_with(
    pool: &PgPool,
    m: Member<'_>,
    o: &Opening,
    extras: Extras<'_>,
) -> Result<TicketId, SupportError> {
    let mut errors = extras.errors.clone();
    let subject = check_subject(&o.subject)
        .map_err(|e| errors.push(("subject", e.to_owned())))
        .ok();
    let body = check_body(&o.body)
        .map_err(|e| errors.push(("body", e.to_owned())))
        .ok();
    let category = Category::parse(&o.category)
        .map_err(|_| errors.push(("category", "Choose a category.".to_owned())))
        .ok();
    let priority = Priority::parse(&o.priority)
        .map_err(|_| errors.push(("priority", "Choose a priority.".to_owned())))
        .ok();
    let instance = match o.instance.trim() {
        "" => None,
        s => match s.parse::<Uuid>() {
            Ok(id) if store::org_has_instance(pool, m.org, id).await? => Some(id),
            _ => {
                errors.push((
                    "instance",
                    "Choose one of your servers, or none.".to_owned(),
                ));
                None
            }
        },
    };
    let plan = store::org_plan(pool, m.org).await?;
    let tier = crate::tiers::tier_for(pool, plan.as_deref()).await?;
    if let Some(p) = priority.filter(|p| !tier.allows(*p)) {
        debug_assert_eq!(p, Priority::Urgent);
        errors.push(("priority", NO_URGENT.to_owned()));
    }
    let (Some(subject), Some(body), Some(category), Some(priority), true) =
        (subject, body, category, priority, errors.is_empty())
    else {
        return Err(SupportError::Invalid(errors));
    };
    let at = now();
    let id = TicketId::new();
    let mut tx = pool.begin().await?;
    store::insert_ticket(
        &mut tx,
        &NewTicket {
            id,
            org: m.org,
            opener: m.who.id,
            subject: &subject,
            category,
            priority,
            instance,
            shared_with_org: o.shared_with_org,
            plan_code: plan.as_deref(),
            tier: crate::tiers::snapshot(&tier),
            at,
        },
    )
    .await?;
    let message = store::add_message(
        &mut tx,
        &NewMessage {
            ticket: id,
            author: m.who.id,
            author_name: m.who.name,
            from_operator: false,
            internal: false,
            body: &body,
            at,
        },
    )
    .await?;
    record(
        &mut tx,
        m.who,
        m.org,
        "support.ticket.opened",
        id,
        json!({ "subject": subject, "category": category.as_str(), "priority": priority.as_str(), "shared_with_org": o.shared_with_org }),
    )
    .await?;
    refresh(&mut tx, id, at).await?;
    extras
        .attach_and_commit(tx, m.who, m.org, id, message, at)
        .await?;
    Ok(id)
}

/// The organization's tickets this member may see, newest first.
pub async fn list(pool: &PgPool, m: Member<'_>, page: Page) -> Result<Paged<Ticket>, SupportError> {
    let only = (!m.sees_all()).then_some(m.who.id);
    Ok(store::org_tickets(pool, m.org, only, page).await?)
}

/// A ticket with what its page shows.
#[derive(Debug, Clone)]
pub struct TicketView {
    pub ticket: Ticket,
    /// Internal notes only for operators.
    pub messages: Vec<Message>,
    /// The files of those messages.
    pub attachments: Vec<crate::attachments::Attachment>,
    pub sla: Sla,
    pub tier: SupportTier,
    pub rating: Option<Rating>,
    /// The customer may reopen it (resolved or closed, within the window).
    pub can_reopen: bool,
    /// The customer may rate it (resolved or closed, not rated yet).
    pub can_rate: bool,
}

async fn view(pool: &PgPool, ticket: Ticket, operator: bool) -> Result<TicketView, SupportError> {
    let mut conn = pool.acquire().await?;
    let at = now();
    let (sla, tier) = clock(&mut conn, &ticket, at).await?;
    let messages = store::messages(&mut *conn, ticket.id(), operator).await?;
    let rating = store::rating(&mut *conn, ticket.id()).await?;
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let attachments =
        herd_store::support_attachments::of_messages(&mut *conn, &ids, operator).await?;
    Ok(TicketView {
        attachments,
        can_reopen: may_reopen(&ticket, at),
        can_rate: !ticket.status.is_active() && rating.is_none() && ticket.merged_into.is_none(),
        ticket,
        messages,
        sla,
        tier,
        rating,
    })
}

fn may_reopen(t: &Ticket, at: OffsetDateTime) -> bool {
    t.merged_into.is_none()
        && !t.status.is_active()
        && t.resolved_at.is_some_and(|r| at - r <= REOPEN_WINDOW)
}

/// A ticket for a member who may see it (anyone else: not found).
pub(crate) async fn visible(
    pool: &PgPool,
    m: Member<'_>,
    id: TicketId,
) -> Result<Ticket, SupportError> {
    store::ticket(pool, id)
        .await?
        .filter(|t| m.may_see(t))
        .ok_or(SupportError::NotFound)
}

/// The ticket's page for a member: no internal notes.
pub async fn customer_view(
    pool: &PgPool,
    m: Member<'_>,
    id: TicketId,
) -> Result<TicketView, SupportError> {
    let t = visible(pool, m, id).await?;
    view(pool, t, false).await
}

/// The ticket's page for operators, with internal notes.
pub async fn operator_view(pool: &PgPool, id: TicketId) -> Result<TicketView, SupportError> {
    let t = store::ticket(pool, id)
        .await?
        .ok_or(SupportError::NotFound)?;
    view(pool, t, true).await
}

/// Locks the ticket and reads it again inside the transaction.
async fn locked(conn: &mut PgConnection, id: TicketId) -> Result<Ticket, SupportError> {
    if !store::lock(&mut *conn, id).await? {
        return Err(SupportError::NotFound);
    }
    store::ticket(conn, id).await?.ok_or(SupportError::NotFound)
}

async fn move_to(
    conn: &mut PgConnection,
    t: &Ticket,
    to: Status,
    at: OffsetDateTime,
) -> Result<(), SupportError> {
    if t.merged_into.is_some() {
        return Err(SupportError::invalid("status", crate::merge::MERGED));
    }
    if !t.status.can_move_to(to) {
        return Err(SupportError::invalid(
            "status",
            format!(
                "A ticket that is {} cannot become {}.",
                t.status.label().to_lowercase(),
                to.label().to_lowercase()
            ),
        ));
    }
    store::set_status(conn, t.id(), to, at).await?;
    Ok(())
}

/// A member's reply. A ticket waiting on the customer is open again (its clock runs on);
/// resolved or closed tickets take no replies (reopen first).
pub async fn customer_reply(
    pool: &PgPool,
    m: Member<'_>,
    id: TicketId,
    body: &str,
) -> Result<(), SupportError> {
    customer_reply_with(pool, m, id, body, Extras::default()).await
}

/// [`customer_reply`], with files or the email it came from.
pub(crate) async fn customer_reply_with(
    pool: &PgPool,
    m: Member<'_>,
    id: TicketId,
    body: &str,
    extras: Extras<'_>,
) -> Result<(), SupportError> {
    let body = extras.body("body", check_body(body))?;
    visible(pool, m, id).await?;
    let at = now();
    let mut tx = pool.begin().await?;
    let t = locked(&mut tx, id).await?;
    if !t.status.is_active() {
        return Err(SupportError::invalid(
            "body",
            "This ticket is resolved or closed: reopen it to reply.",
        ));
    }
    let message = store::add_message(
        &mut tx,
        &NewMessage {
            ticket: id,
            author: m.who.id,
            author_name: m.who.name,
            from_operator: false,
            internal: false,
            body: &body,
            at,
        },
    )
    .await?;
    if t.status == Status::WaitingOnCustomer {
        store::set_status(&mut tx, id, Status::Open, at).await?;
    }
    record(
        &mut tx,
        m.who,
        t.org(),
        "support.ticket.replied",
        id,
        json!({}),
    )
    .await?;
    refresh(&mut tx, id, at).await?;
    extras
        .attach_and_commit(tx, m.who, t.org(), id, message, at)
        .await
}

/// A member closes the ticket (solved for them, or no longer needed).
pub async fn customer_close(
    pool: &PgPool,
    m: Member<'_>,
    id: TicketId,
) -> Result<(), SupportError> {
    visible(pool, m, id).await?;
    let at = now();
    let mut tx = pool.begin().await?;
    let t = locked(&mut tx, id).await?;
    move_to(&mut tx, &t, Status::Closed, at).await?;
    record(
        &mut tx,
        m.who,
        t.org(),
        "support.ticket.closed",
        id,
        json!({ "from": t.status.as_str() }),
    )
    .await?;
    refresh(&mut tx, id, at).await?;
    tx.commit().await?;
    Ok(())
}

/// A member reopens a resolved or closed ticket, within [`REOPEN_WINDOW`] of its
/// resolution.
pub async fn reopen(pool: &PgPool, m: Member<'_>, id: TicketId) -> Result<(), SupportError> {
    visible(pool, m, id).await?;
    let at = now();
    let mut tx = pool.begin().await?;
    let t = locked(&mut tx, id).await?;
    if t.status.is_active() {
        return Err(SupportError::invalid(
            "status",
            "This ticket is open already.",
        ));
    }
    if t.merged_into.is_some() {
        return Err(SupportError::invalid("status", crate::merge::MERGED));
    }
    if !may_reopen(&t, at) {
        return Err(SupportError::invalid(
            "status",
            "This ticket was resolved more than 7 days ago and cannot be reopened: open a new ticket instead.",
        ));
    }
    move_to(&mut tx, &t, Status::Open, at).await?;
    record(
        &mut tx,
        m.who,
        t.org(),
        "support.ticket.reopened",
        id,
        json!({ "from": t.status.as_str() }),
    )
    .await?;
    refresh(&mut tx, id, at).await?;
    tx.commit().await?;
    Ok(())
}

/// A member rates the answer, once, after resolution.
pub async fn rate(
    pool: &PgPool,
    m: Member<'_>,
    id: TicketId,
    score: &str,
    comment: &str,
) -> Result<(), SupportError> {
    visible(pool, m, id).await?;
    let score = score
        .trim()
        .parse::<i64>()
        .ok()
        .and_then(Score::new)
        .ok_or_else(|| SupportError::invalid("score", "Choose a score from 1 to 5."))?;
    let comment = comment.trim();
    if comment.chars().count() > 2000 {
        return Err(SupportError::invalid(
            "comment",
            "Keep the comment under 2,000 characters.",
        ));
    }
    let mut tx = pool.begin().await?;
    // The status as it is under the ticket's lock: a reopen racing with the rating waits.
    let t = locked(&mut tx, id).await?;
    if t.status.is_active() {
        return Err(SupportError::invalid(
            "score",
            "Tickets are rated once resolved.",
        ));
    }
    if t.merged_into.is_some() {
        return Err(SupportError::invalid("score", crate::merge::MERGED));
    }
    if !store::rate(&mut tx, id, i16::from(score.get()), comment, m.who.id).await? {
        return Err(SupportError::invalid(
            "score",
            "This ticket was rated already.",
        ));
    }
    record(
        &mut tx,
        m.who,
        t.org(),
        "support.ticket.rated",
        id,
        json!({ "score": score.get() }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What an operator's reply does to the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReply {
    /// New tickets become open; others keep their status.
    Keep,
    WaitOnCustomer,
    Resolve,
}

/// An operator's public reply: the first one stops the first-response clock; the
/// customers are emailed (through the job queue) with the text and a link starting with
/// `base_url`.
pub async fn operator_reply(
    pool: &PgPool,
    op: Who<'_>,
    id: TicketId,
    body: &str,
    after: AfterReply,
    base_url: &str,
) -> Result<(), SupportError> {
    operator_reply_with(pool, op, id, body, after, base_url, Extras::default()).await
}

/// [`operator_reply`], with files.
pub(crate) async fn operator_reply_with(
    pool: &PgPool,
    op: Who<'_>,
    id: TicketId,
    body: &str,
    after: AfterReply,
    base_url: &str,
    extras: Extras<'_>,
) -> Result<(), SupportError> {
    let body = extras.body("body", check_body(body))?;
    let at = now();
    let mut tx = pool.begin().await?;
    let t = locked(&mut tx, id).await?;
    if t.status == Status::Closed {
        return Err(SupportError::invalid("body", "This ticket is closed."));
    }
    let message = store::add_message(
        &mut tx,
        &NewMessage {
            ticket: id,
            author: op.id,
            author_name: op.name,
            from_operator: true,
            internal: false,
            body: &body,
            at,
        },
    )
    .await?;
    if t.first_response_at.is_none() {
        store::set_first_response(&mut tx, id, at).await?;
    }
    let to = match after {
        AfterReply::Keep if t.status == Status::New => Some(Status::Open),
        AfterReply::Keep => None,
        AfterReply::WaitOnCustomer => Some(Status::WaitingOnCustomer),
        AfterReply::Resolve => Some(Status::Resolved),
    };
    if let Some(to) = to.filter(|s| *s != t.status) {
        move_to(&mut tx, &t, to, at).await?;
    }
    enqueue_reply_emails(&mut tx, id, message, base_url).await?;
    record(
        &mut tx,
        op,
        t.org(),
        "support.ticket.answered",
        id,
        json!({ "status": to.map(Status::as_str) }),
    )
    .await?;
    refresh(&mut tx, id, at).await?;
    extras
        .attach_and_commit(tx, op, t.org(), id, message, at)
        .await
}

/// An operator's internal note: only operators see it; nobody is emailed.
pub async fn note(
    pool: &PgPool,
    op: Who<'_>,
    id: TicketId,
    body: &str,
) -> Result<(), SupportError> {
    note_with(pool, op, id, body, Extras::default()).await
}

/// [`note`], with files (only operators ever get them).
pub(crate) async fn note_with(
    pool: &PgPool,
    op: Who<'_>,
    id: TicketId,
    body: &str,
    extras: Extras<'_>,
) -> Result<(), SupportError> {
    let body = extras.body("note", check_body(body))?;
    let at = now();
    let mut tx = pool.begin().await?;
    let t = locked(&mut tx, id).await?;
    let message = store::add_message(
        &mut tx,
        &NewMessage {
            ticket: id,
            author: op.id,
            author_name: op.name,
            from_operator: true,
            internal: true,
            body: &body,
            at,
        },
    )
    .await?;
    record(&mut tx, op, t.org(), "support.ticket.noted", id, json!({})).await?;
    extras
        .attach_and_commit(tx, op, t.org(), id, message, at)
        .await
}

/// Assigns the ticket to an operator, or to nobody.
pub async fn assign(
    pool: &PgPool,
    op: Who<'_>,
    id: TicketId,
    assignee: Option<UserId>,
) -> Result<(), SupportError> {
    let mut tx = pool.begin().await?;
    let t = locked(&mut tx, id).await?;
    if let Some(a) = assignee {
        let operators = store::operators(&mut *tx).await?;
        if !operators.iter().any(|(id, _)| *id == a.0) {
            return Err(SupportError::invalid("assignee", "Choose an operator."));
        }
    }
    store::set_assignee(&mut tx, id, assignee).await?;
    record(
        &mut tx,
        op,
        t.org(),
        "support.ticket.assigned",
        id,
        json!({ "from": t.assignee_id, "to": assignee.map(|a| a.0) }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The message when an operator would stop the first-response clock without answering.
pub const UNANSWERED: &str = "Answer the customer first: a ticket cannot wait on the customer or be resolved before its first response.";

/// An operator moves the ticket to another status. Before the first public answer it
/// cannot wait on the customer or be resolved: that would stop the first-response clock
/// without a response (reply with "then wait" or "then resolve" instead). Closing stays
/// possible (spam, duplicates) and does not count as a response.
pub async fn change_status(
    pool: &PgPool,
    op: Who<'_>,
    id: TicketId,
    status: &str,
) -> Result<(), SupportError> {
    let to =
        Status::parse(status).map_err(|_| SupportError::invalid("status", "Choose a status."))?;
    let at = now();
    let mut tx = pool.begin().await?;
    let t = locked(&mut tx, id).await?;
    if t.first_response_at.is_none() && matches!(to, Status::WaitingOnCustomer | Status::Resolved) {
        return Err(SupportError::invalid("status", UNANSWERED));
    }
    move_to(&mut tx, &t, to, at).await?;
    record(
        &mut tx,
        op,
        t.org(),
        "support.ticket.status_changed",
        id,
        json!({ "from": t.status.as_str(), "to": to.as_str() }),
    )
    .await?;
    refresh(&mut tx, id, at).await?;
    tx.commit().await?;
    Ok(())
}

/// An operator changes the priority (any priority: the tier's limit is for customers).
pub async fn change_priority(
    pool: &PgPool,
    op: Who<'_>,
    id: TicketId,
    priority: &str,
) -> Result<(), SupportError> {
    let to = Priority::parse(priority)
        .map_err(|_| SupportError::invalid("priority", "Choose a priority."))?;
    let at = now();
    let mut tx = pool.begin().await?;
    let t = locked(&mut tx, id).await?;
    if t.priority == to {
        return Ok(());
    }
    store::set_priority(&mut tx, id, to, at).await?;
    record(
        &mut tx,
        op,
        t.org(),
        "support.ticket.priority_changed",
        id,
        json!({ "from": t.priority.as_str(), "to": to.as_str() }),
    )
    .await?;
    refresh(&mut tx, id, at).await?;
    tx.commit().await?;
    Ok(())
}

/// Closes resolved tickets resolved before `cutoff` (the automatic closing); returns how
/// many were closed.
pub async fn close_resolved_before(
    pool: &PgPool,
    cutoff: OffsetDateTime,
) -> Result<usize, SupportError> {
    let ids = store::resolved_before(pool, cutoff, 500).await?;
    let mut closed = 0;
    for id in ids {
        let mut tx = pool.begin().await?;
        let t = locked(&mut tx, id).await?;
        if t.status != Status::Resolved || t.resolved_at.is_none_or(|r| r >= cutoff) {
            continue;
        }
        store::set_status(&mut tx, id, Status::Closed, now()).await?;
        audit::record(
            &mut tx,
            NewEntry {
                actor: None,
                org: Some(t.org()),
                action: "support.ticket.auto_closed",
                target: id.to_string(),
                source_ip: None,
                details: json!({ "resolved_at": t.resolved_at.map(|r| r.unix_timestamp()) }),
            },
        )
        .await?;
        tx.commit().await?;
        closed += 1;
    }
    Ok(closed)
}

/// Recomputes the clock of every unresolved ticket and records new breaches (audited);
/// returns how many breaches were recorded.
pub async fn check_slas(pool: &PgPool) -> Result<usize, SupportError> {
    let ids = store::to_check(pool, 5000).await?;
    let mut breaches = 0;
    for id in ids {
        let mut tx = pool.begin().await?;
        locked(&mut tx, id).await?;
        let (first, resolution) = refresh(&mut tx, id, now()).await?;
        breaches += usize::from(first) + usize::from(resolution);
        tx.commit().await?;
    }
    Ok(breaches)
}
