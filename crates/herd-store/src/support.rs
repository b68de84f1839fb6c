//! The support desk's tables: plans' support tiers, tickets, their messages, the events
//! the SLA clock is computed from, and ratings. States are parsed into herd-domain's
//! enums here, at the edge.

use crate::{Page, Paged, StoreError};
use herd_domain::ids::TicketId;
use herd_domain::support::{Category, Priority, Status};
use herd_domain::{OrgId, UserId};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

fn parsed<T>(r: Result<T, herd_domain::support::UnknownValue>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Invalid(e.to_string()))
}

/// A plan's support tier as stored (targets in minutes, low to urgent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRow {
    pub plan_code: String,
    pub urgent_allowed: bool,
    pub around_the_clock: bool,
    pub business_start_minute: i32,
    pub business_end_minute: i32,
    pub time_zone: String,
    pub first_response_minutes: Vec<i32>,
    pub resolution_minutes: Vec<i32>,
}

/// A plan, and its tier when one is set.
#[derive(Debug, Clone)]
pub struct PlanTier {
    pub code: String,
    pub name: String,
    pub support_response_hours: i32,
    pub tier: Option<TierRow>,
}

struct PlanTierRow {
    code: String,
    name: String,
    support_response_hours: i32,
    urgent_allowed: Option<bool>,
    around_the_clock: Option<bool>,
    business_start_minute: Option<i32>,
    business_end_minute: Option<i32>,
    time_zone: Option<String>,
    first_response_minutes: Option<Vec<i32>>,
    resolution_minutes: Option<Vec<i32>>,
}

impl From<PlanTierRow> for PlanTier {
    fn from(r: PlanTierRow) -> Self {
        let tier = match (
            r.urgent_allowed,
            r.around_the_clock,
            r.business_start_minute,
            r.business_end_minute,
            r.time_zone,
            r.first_response_minutes,
            r.resolution_minutes,
        ) {
            (Some(u), Some(a), Some(s), Some(e), Some(z), Some(f), Some(res)) => Some(TierRow {
                plan_code: r.code.clone(),
                urgent_allowed: u,
                around_the_clock: a,
                business_start_minute: s,
                business_end_minute: e,
                time_zone: z,
                first_response_minutes: f,
                resolution_minutes: res,
            }),
            _ => None,
        };
        PlanTier {
            code: r.code,
            name: r.name,
            support_response_hours: r.support_response_hours,
            tier,
        }
    }
}

/// Every plan with its tier, in catalogue order.
#[tracing::instrument(skip(ex))]
pub async fn plan_tiers(ex: impl PgExecutor<'_>) -> Result<Vec<PlanTier>, StoreError> {
    let rows = sqlx::query_as!(
        PlanTierRow,
        r#"SELECT p.code, p.name, p.support_response_hours,
                  t.urgent_allowed AS "urgent_allowed?", t.around_the_clock AS "around_the_clock?",
                  t.business_start_minute AS "business_start_minute?",
                  t.business_end_minute AS "business_end_minute?", t.time_zone AS "time_zone?",
                  t.first_response_minutes AS "first_response_minutes?",
                  t.resolution_minutes AS "resolution_minutes?"
           FROM plans p LEFT JOIN plan_support_tiers t ON t.plan_code = p.code
           ORDER BY p.sort_order, p.price_minor, p.code"#
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(PlanTier::from).collect())
}

/// One plan with its tier.
#[tracing::instrument(skip(ex))]
pub async fn plan_tier(
    ex: impl PgExecutor<'_>,
    code: &str,
) -> Result<Option<PlanTier>, StoreError> {
    let row = sqlx::query_as!(
        PlanTierRow,
        r#"SELECT p.code, p.name, p.support_response_hours,
                  t.urgent_allowed AS "urgent_allowed?", t.around_the_clock AS "around_the_clock?",
                  t.business_start_minute AS "business_start_minute?",
                  t.business_end_minute AS "business_end_minute?", t.time_zone AS "time_zone?",
                  t.first_response_minutes AS "first_response_minutes?",
                  t.resolution_minutes AS "resolution_minutes?"
           FROM plans p LEFT JOIN plan_support_tiers t ON t.plan_code = p.code
           WHERE p.code = $1"#,
        code
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(PlanTier::from))
}

/// Sets a plan's tier; returns the tier before, if one was set.
#[tracing::instrument(skip(conn, tier))]
pub async fn set_tier(conn: &mut PgConnection, tier: &TierRow) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO plan_support_tiers (plan_code, urgent_allowed, around_the_clock,
                 business_start_minute, business_end_minute, time_zone,
                 first_response_minutes, resolution_minutes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (plan_code) DO UPDATE SET
             urgent_allowed = EXCLUDED.urgent_allowed,
             around_the_clock = EXCLUDED.around_the_clock,
             business_start_minute = EXCLUDED.business_start_minute,
             business_end_minute = EXCLUDED.business_end_minute,
             time_zone = EXCLUDED.time_zone,
             first_response_minutes = EXCLUDED.first_response_minutes,
             resolution_minutes = EXCLUDED.resolution_minutes,
             updated_at = now()",
        tier.plan_code,
        tier.urgent_allowed,
        tier.around_the_clock,
        tier.business_start_minute,
        tier.business_end_minute,
        tier.time_zone,
        &tier.first_response_minutes,
        &tier.resolution_minutes,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The plan whose support tier an organization has: the highest in the catalogue among
/// its servers', contracts' (not ended) and live subscriptions' plans.
#[tracing::instrument(skip(ex))]
pub async fn org_plan(ex: impl PgExecutor<'_>, org: OrgId) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT p.code FROM plans p
         WHERE p.code IN (
             SELECT plan_code FROM instances WHERE org_id = $1 AND desired <> 'deleted'
             UNION SELECT plan_code FROM contracts
                   WHERE org_id = $1 AND (ends_on IS NULL OR ends_on >= current_date)
             UNION SELECT plan_code FROM subscriptions
                   WHERE org_id = $1 AND plan_code IS NOT NULL
                     AND status IN ('active', 'trialing', 'past_due'))
         ORDER BY p.sort_order DESC, p.price_minor DESC LIMIT 1",
        org.0
    )
    .fetch_optional(ex)
    .await?)
}

/// A ticket with the names around it.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub id: Uuid,
    pub org_id: Uuid,
    pub org_slug: String,
    pub org_name: String,
    pub opener_id: Option<Uuid>,
    pub opener_name: Option<String>,
    pub subject: String,
    pub category: Category,
    pub priority: Priority,
    pub status: Status,
    pub instance_id: Option<Uuid>,
    pub instance_domain: Option<String>,
    pub shared_with_org: bool,
    pub assignee_id: Option<Uuid>,
    pub assignee_name: Option<String>,
    pub plan_code: Option<String>,
    pub first_response_due: Option<OffsetDateTime>,
    pub first_response_at: Option<OffsetDateTime>,
    pub resolution_due: Option<OffsetDateTime>,
    pub next_due: Option<OffsetDateTime>,
    pub first_response_breached: bool,
    pub resolution_breached: bool,
    pub resolved_at: Option<OffsetDateTime>,
    pub closed_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Its number for people ("#1234").
    pub number: i64,
    /// The ticket it was merged into, as a duplicate.
    pub merged_into: Option<Uuid>,
}

impl Ticket {
    pub fn id(&self) -> TicketId {
        TicketId(self.id)
    }
    pub fn org(&self) -> OrgId {
        OrgId(self.org_id)
    }
    pub fn breached(&self) -> bool {
        self.first_response_breached || self.resolution_breached
    }
}

struct TicketRow {
    id: Uuid,
    org_id: Uuid,
    org_slug: String,
    org_name: String,
    opener_id: Option<Uuid>,
    opener_name: Option<String>,
    subject: String,
    category: String,
    priority: String,
    status: String,
    instance_id: Option<Uuid>,
    instance_domain: Option<String>,
    shared_with_org: bool,
    assignee_id: Option<Uuid>,
    assignee_name: Option<String>,
    plan_code: Option<String>,
    first_response_due: Option<OffsetDateTime>,
    first_response_at: Option<OffsetDateTime>,
    resolution_due: Option<OffsetDateTime>,
    next_due: Option<OffsetDateTime>,
    first_response_breached: bool,
    resolution_breached: bool,
    resolved_at: Option<OffsetDateTime>,
    closed_at: Option<OffsetDateTime>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    number: i64,
    merged_into: Option<Uuid>,
}

impl TryFrom<TicketRow> for Ticket {
    type Error = StoreError;
    fn try_from(r: TicketRow) -> Result<Self, StoreError> {
        Ok(Ticket {
            category: parsed(Category::parse(&r.category))?,
            priority: parsed(Priority::parse(&r.priority))?,
            status: parsed(Status::parse(&r.status))?,
            id: r.id,
            org_id: r.org_id,
            org_slug: r.org_slug,
            org_name: r.org_name,
            opener_id: r.opener_id,
            opener_name: r.opener_name,
            subject: r.subject,
            instance_id: r.instance_id,
            instance_domain: r.instance_domain,
            shared_with_org: r.shared_with_org,
            assignee_id: r.assignee_id,
            assignee_name: r.assignee_name,
            plan_code: r.plan_code,
            first_response_due: r.first_response_due,
            first_response_at: r.first_response_at,
            resolution_due: r.resolution_due,
            next_due: r.next_due,
            first_response_breached: r.first_response_breached,
            resolution_breached: r.resolution_breached,
            resolved_at: r.resolved_at,
            closed_at: r.closed_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            number: r.number,
            merged_into: r.merged_into,
        })
    }
}

fn tickets(rows: Vec<TicketRow>) -> Result<Vec<Ticket>, StoreError> {
    rows.into_iter().map(Ticket::try_from).collect()
}

/// A ticket to open.
#[derive(Debug, Clone)]
pub struct NewTicket<'a> {
    pub id: TicketId,
    pub org: OrgId,
    pub opener: UserId,
    pub subject: &'a str,
    pub category: Category,
    pub priority: Priority,
    pub instance: Option<Uuid>,
    pub shared_with_org: bool,
    pub plan_code: Option<&'a str>,
    /// The tier in force at opening (a snapshot).
    pub tier: serde_json::Value,
    pub at: OffsetDateTime,
}

/// Writes a new ticket, and its first events (its priority and plan at opening).
#[tracing::instrument(skip(conn, t), fields(ticket = %t.id))]
pub async fn insert_ticket(conn: &mut PgConnection, t: &NewTicket<'_>) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO tickets (id, org_id, opener_id, subject, category, priority, instance_id,
                              shared_with_org, plan_code, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        t.id.0,
        t.org.0,
        t.opener.0,
        t.subject,
        t.category.as_str(),
        t.priority.as_str(),
        t.instance,
        t.shared_with_org,
        t.plan_code,
        t.at,
    )
    .execute(&mut *conn)
    .await?;
    add_event(&mut *conn, t.id, t.at, Event::Priority(t.priority)).await?;
    add_event(
        conn,
        t.id,
        t.at,
        Event::Plan(t.plan_code.map(str::to_owned), Some(t.tier.clone())),
    )
    .await
}

/// Is this server one of the organization's (and not deleted)?
#[tracing::instrument(skip(ex))]
pub async fn org_has_instance(
    ex: impl PgExecutor<'_>,
    org: OrgId,
    instance: Uuid,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM instances WHERE id = $1 AND org_id = $2 AND desired <> 'deleted') AS "found!""#,
        instance,
        org.0
    )
    .fetch_one(ex)
    .await?)
}

/// The organization's servers a ticket may be about: (id, domain).
#[tracing::instrument(skip(ex))]
pub async fn org_instances(
    ex: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(sqlx::query!(
        "SELECT id, domain FROM instances WHERE org_id = $1 AND desired <> 'deleted' ORDER BY domain",
        org.0
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.id, r.domain))
    .collect())
}

/// A ticket by id.
#[tracing::instrument(skip(ex))]
pub async fn ticket(ex: impl PgExecutor<'_>, id: TicketId) -> Result<Option<Ticket>, StoreError> {
    sqlx::query_as!(
        TicketRow,
        "SELECT t.id, t.org_id, o.slug AS org_slug, o.name AS org_name, t.opener_id,
                    op.display_name AS \"opener_name?\", t.subject, t.category, t.priority,
                    t.status, t.instance_id, i.domain AS \"instance_domain?\", t.shared_with_org,
                    t.assignee_id, a.display_name AS \"assignee_name?\", t.plan_code,
                    t.first_response_due, t.first_response_at, t.resolution_due, t.next_due,
                    t.first_response_breached, t.resolution_breached, t.resolved_at,
                    t.closed_at, t.created_at, t.updated_at, t.number, t.merged_into
             FROM tickets t
             JOIN organizations o ON o.id = t.org_id
             LEFT JOIN users op ON op.id = t.opener_id
             LEFT JOIN users a ON a.id = t.assignee_id
             LEFT JOIN instances i ON i.id = t.instance_id WHERE t.id = $1",
        id.0
    )
    .fetch_optional(ex)
    .await?
    .map(Ticket::try_from)
    .transpose()
}

/// Locks a ticket's row for the rest of the transaction (changes to one ticket happen
/// one after the other).
#[tracing::instrument(skip(conn))]
pub async fn lock(conn: &mut PgConnection, id: TicketId) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM tickets WHERE id = $1 FOR UPDATE", id.0)
            .fetch_optional(conn)
            .await?
            .is_some(),
    )
}

/// An organization's tickets, newest first; with `only_for`, those the user opened and
/// those shared with the organization.
#[tracing::instrument(skip(ex))]
pub async fn org_tickets(
    ex: impl PgExecutor<'_>,
    org: OrgId,
    only_for: Option<UserId>,
    page: Page,
) -> Result<Paged<Ticket>, StoreError> {
    let rows = sqlx::query_as!(
        TicketRow,
        "SELECT t.id, t.org_id, o.slug AS org_slug, o.name AS org_name, t.opener_id,
                    op.display_name AS \"opener_name?\", t.subject, t.category, t.priority,
                    t.status, t.instance_id, i.domain AS \"instance_domain?\", t.shared_with_org,
                    t.assignee_id, a.display_name AS \"assignee_name?\", t.plan_code,
                    t.first_response_due, t.first_response_at, t.resolution_due, t.next_due,
                    t.first_response_breached, t.resolution_breached, t.resolved_at,
                    t.closed_at, t.created_at, t.updated_at, t.number, t.merged_into
             FROM tickets t
             JOIN organizations o ON o.id = t.org_id
             LEFT JOIN users op ON op.id = t.opener_id
             LEFT JOIN users a ON a.id = t.assignee_id
             LEFT JOIN instances i ON i.id = t.instance_id WHERE t.org_id = $1 AND ($2::uuid IS NULL OR t.opener_id = $2 OR t.shared_with_org)
             ORDER BY t.created_at DESC, t.id DESC LIMIT $3 OFFSET $4",
        org.0,
        only_for.map(|u| u.0),
        page.fetch_limit(),
        page.offset(),
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(tickets(rows)?))
}

/// Which of the queue's views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Unassigned,
    Mine,
    AllOpen,
    BreachingSoon,
    Breached,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Unassigned,
        View::Mine,
        View::AllOpen,
        View::BreachingSoon,
        View::Breached,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            View::Unassigned => "unassigned",
            View::Mine => "mine",
            View::AllOpen => "open",
            View::BreachingSoon => "breaching",
            View::Breached => "breached",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            View::Unassigned => "Unassigned",
            View::Mine => "Mine",
            View::AllOpen => "All open",
            View::BreachingSoon => "Breaching soon",
            View::Breached => "Breached",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// The operator queue's question.
#[derive(Debug, Clone)]
pub struct QueueFilter {
    pub view: View,
    /// The operator asking (for "mine").
    pub me: UserId,
    /// "Breaching soon" means due before this instant.
    pub soon: OffsetDateTime,
    pub org_slug: Option<String>,
    pub plan_code: Option<String>,
    pub category: Option<Category>,
    pub priority: Option<Priority>,
    pub assignee: Option<UserId>,
}

/// Unresolved tickets for operators, soonest due first (paused ones last).
#[tracing::instrument(skip(ex))]
pub async fn queue(
    ex: impl PgExecutor<'_>,
    f: &QueueFilter,
    page: Page,
) -> Result<Paged<Ticket>, StoreError> {
    let rows = sqlx::query_as!(
        TicketRow,
        "SELECT t.id, t.org_id, o.slug AS org_slug, o.name AS org_name, t.opener_id,
                    op.display_name AS \"opener_name?\", t.subject, t.category, t.priority,
                    t.status, t.instance_id, i.domain AS \"instance_domain?\", t.shared_with_org,
                    t.assignee_id, a.display_name AS \"assignee_name?\", t.plan_code,
                    t.first_response_due, t.first_response_at, t.resolution_due, t.next_due,
                    t.first_response_breached, t.resolution_breached, t.resolved_at,
                    t.closed_at, t.created_at, t.updated_at, t.number, t.merged_into
             FROM tickets t
             JOIN organizations o ON o.id = t.org_id
             LEFT JOIN users op ON op.id = t.opener_id
             LEFT JOIN users a ON a.id = t.assignee_id
             LEFT JOIN instances i ON i.id = t.instance_id WHERE t.status IN ('new', 'open', 'waiting_on_customer')
               AND CASE $1::text
                   WHEN 'unassigned' THEN t.assignee_id IS NULL
                   WHEN 'mine' THEN t.assignee_id = $2
                   WHEN 'breaching' THEN t.next_due <= $3
                   WHEN 'breached' THEN t.first_response_breached OR t.resolution_breached
                   ELSE true END
               AND ($4::text IS NULL OR o.slug = $4)
               AND ($5::text IS NULL OR t.plan_code = $5)
               AND ($6::text IS NULL OR t.category = $6)
               AND ($7::text IS NULL OR t.priority = $7)
               AND ($8::uuid IS NULL OR t.assignee_id = $8)
             ORDER BY t.next_due ASC NULLS LAST, t.created_at, t.id
             LIMIT $9 OFFSET $10",
        f.view.as_str(),
        f.me.0,
        f.soon,
        f.org_slug.as_deref(),
        f.plan_code.as_deref(),
        f.category.map(Category::as_str),
        f.priority.map(Priority::as_str),
        f.assignee.map(|a| a.0),
        page.fetch_limit(),
        page.offset(),
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(tickets(rows)?))
}

/// A message on a ticket.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: Uuid,
    pub author_id: Option<Uuid>,
    pub author_name: String,
    pub from_operator: bool,
    pub internal: bool,
    pub from_email: bool,
    pub body: String,
    pub created_at: OffsetDateTime,
}

/// A message to add.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub ticket: TicketId,
    pub author: UserId,
    pub author_name: &'a str,
    pub from_operator: bool,
    pub internal: bool,
    pub body: &'a str,
    pub at: OffsetDateTime,
}

#[tracing::instrument(skip(conn, m), fields(ticket = %m.ticket))]
pub async fn add_message(conn: &mut PgConnection, m: &NewMessage<'_>) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO ticket_messages (id, ticket_id, author_id, author_name, from_operator, internal, body, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        id,
        m.ticket.0,
        m.author.0,
        m.author_name,
        m.from_operator,
        m.internal,
        m.body,
        m.at,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE tickets SET updated_at = $2 WHERE id = $1",
        m.ticket.0,
        m.at
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// A ticket's messages, oldest first; internal notes only when `with_internal`.
#[tracing::instrument(skip(ex))]
pub async fn messages(
    ex: impl PgExecutor<'_>,
    ticket: TicketId,
    with_internal: bool,
) -> Result<Vec<Message>, StoreError> {
    Ok(sqlx::query_as!(
        Message,
        "SELECT id, author_id, author_name, from_operator, internal, from_email, body, created_at
         FROM ticket_messages WHERE ticket_id = $1 AND ($2 OR NOT internal)
         ORDER BY created_at, id",
        ticket.0,
        with_internal
    )
    .fetch_all(ex)
    .await?)
}

/// One message with its ticket's id (for the reply email).
#[tracing::instrument(skip(ex))]
pub async fn message(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<(TicketId, Message)>, StoreError> {
    Ok(sqlx::query!(
        "SELECT ticket_id, id, author_id, author_name, from_operator, internal, from_email, body, created_at
         FROM ticket_messages WHERE id = $1",
        id
    )
    .fetch_optional(ex)
    .await?
    .map(|r| {
        (
            TicketId(r.ticket_id),
            Message {
                id: r.id,
                author_id: r.author_id,
                author_name: r.author_name,
                from_operator: r.from_operator,
                internal: r.internal,
                from_email: r.from_email,
                body: r.body,
                created_at: r.created_at,
            },
        )
    }))
}

/// What the SLA clock reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Status(Status),
    Priority(Priority),
    /// The plan whose tier applies from now (`None`: no plan, the default tier), with the
    /// tier as it was then (a snapshot; `None` on events written before snapshots).
    Plan(Option<String>, Option<serde_json::Value>),
    FirstResponse,
}

#[tracing::instrument(skip(conn))]
pub async fn add_event(
    conn: &mut PgConnection,
    ticket: TicketId,
    at: OffsetDateTime,
    event: Event,
) -> Result<(), StoreError> {
    let (kind, status, priority, plan, tier) = match &event {
        Event::Status(s) => ("status", Some(s.as_str()), None, None, None),
        Event::Priority(p) => ("priority", None, Some(p.as_str()), None, None),
        Event::Plan(p, t) => ("plan", None, None, p.as_deref(), t.as_ref()),
        Event::FirstResponse => ("first_response", None, None, None, None),
    };
    sqlx::query!(
        "INSERT INTO ticket_events (ticket_id, at, kind, status, priority, plan_code, tier)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        ticket.0,
        at,
        kind,
        status,
        priority,
        plan,
        tier
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A ticket's events, in order.
#[tracing::instrument(skip(ex))]
pub async fn events(
    ex: impl PgExecutor<'_>,
    ticket: TicketId,
) -> Result<Vec<(OffsetDateTime, Event)>, StoreError> {
    let rows = sqlx::query!(
        "SELECT at, kind, status, priority, plan_code, tier FROM ticket_events
         WHERE ticket_id = $1 ORDER BY at, id",
        ticket.0
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|r| {
            let event = match (r.kind.as_str(), r.status, r.priority) {
                ("status", Some(s), _) => Event::Status(parsed(Status::parse(&s))?),
                ("priority", _, Some(p)) => Event::Priority(parsed(Priority::parse(&p))?),
                ("plan", _, _) => Event::Plan(r.plan_code, r.tier),
                ("first_response", _, _) => Event::FirstResponse,
                (k, _, _) => return Err(StoreError::Invalid(format!("ticket event {k:?}"))),
            };
            Ok((r.at, event))
        })
        .collect()
}

/// Sets the status, and when it was resolved or closed.
#[tracing::instrument(skip(conn))]
pub async fn set_status(
    conn: &mut PgConnection,
    id: TicketId,
    status: Status,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tickets SET status = $2, updated_at = $3,
                resolved_at = CASE WHEN $2 = 'resolved' THEN $3
                                   WHEN $2 = 'closed' THEN coalesce(resolved_at, $3)
                                   ELSE NULL END,
                closed_at = CASE WHEN $2 = 'closed' THEN $3 ELSE NULL END
         WHERE id = $1",
        id.0,
        status.as_str(),
        at
    )
    .execute(&mut *conn)
    .await?;
    add_event(conn, id, at, Event::Status(status)).await
}

#[tracing::instrument(skip(conn))]
pub async fn set_priority(
    conn: &mut PgConnection,
    id: TicketId,
    priority: Priority,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tickets SET priority = $2, updated_at = $3 WHERE id = $1",
        id.0,
        priority.as_str(),
        at
    )
    .execute(&mut *conn)
    .await?;
    add_event(conn, id, at, Event::Priority(priority)).await
}

#[tracing::instrument(skip(conn))]
pub async fn set_plan(
    conn: &mut PgConnection,
    id: TicketId,
    plan: Option<&str>,
    tier: serde_json::Value,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tickets SET plan_code = $2 WHERE id = $1",
        id.0,
        plan
    )
    .execute(&mut *conn)
    .await?;
    add_event(
        conn,
        id,
        at,
        Event::Plan(plan.map(str::to_owned), Some(tier)),
    )
    .await
}

/// The unresolved tickets following plan `code`'s tier, in id order (to lock them).
#[tracing::instrument(skip(ex))]
pub async fn active_tickets_on_plan(
    ex: impl PgExecutor<'_>,
    code: &str,
) -> Result<Vec<TicketId>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM tickets
         WHERE plan_code = $1 AND status IN ('new', 'open', 'waiting_on_customer')
         ORDER BY id",
        code
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(TicketId)
    .collect())
}

#[tracing::instrument(skip(conn))]
pub async fn set_first_response(
    conn: &mut PgConnection,
    id: TicketId,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tickets SET first_response_at = $2 WHERE id = $1 AND first_response_at IS NULL",
        id.0,
        at
    )
    .execute(&mut *conn)
    .await?;
    add_event(conn, id, at, Event::FirstResponse).await
}

#[tracing::instrument(skip(conn))]
pub async fn set_assignee(
    conn: &mut PgConnection,
    id: TicketId,
    assignee: Option<UserId>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tickets SET assignee_id = $2, updated_at = now() WHERE id = $1",
        id.0,
        assignee.map(|a| a.0)
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[tracing::instrument(skip(conn))]
pub async fn set_shared(
    conn: &mut PgConnection,
    id: TicketId,
    shared: bool,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tickets SET shared_with_org = $2, updated_at = now() WHERE id = $1",
        id.0,
        shared
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What the SLA clock says of a ticket now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaColumns {
    pub first_response_due: Option<OffsetDateTime>,
    pub resolution_due: Option<OffsetDateTime>,
    pub next_due: Option<OffsetDateTime>,
    pub first_response_breached: bool,
    pub resolution_breached: bool,
}

/// Stores the clock's due times; breaches stay recorded once seen. Returns the breaches
/// newly recorded (first response, resolution).
#[tracing::instrument(skip(conn))]
pub async fn set_sla(
    conn: &mut PgConnection,
    id: TicketId,
    sla: SlaColumns,
) -> Result<(bool, bool), StoreError> {
    let r = sqlx::query!(
        r#"WITH old AS (SELECT first_response_breached, resolution_breached FROM tickets WHERE id = $1)
           UPDATE tickets t SET first_response_due = $2, resolution_due = $3, next_due = $4,
                  first_response_breached = t.first_response_breached OR $5,
                  resolution_breached = t.resolution_breached OR $6
           FROM old WHERE t.id = $1
           RETURNING old.first_response_breached AS "fr_before!", old.resolution_breached AS "res_before!""#,
        id.0,
        sla.first_response_due,
        sla.resolution_due,
        sla.next_due,
        sla.first_response_breached,
        sla.resolution_breached,
    )
    .fetch_optional(conn)
    .await?;
    Ok(r.map_or((false, false), |r| {
        (
            sla.first_response_breached && !r.fr_before,
            sla.resolution_breached && !r.res_before,
        )
    }))
}

/// Tickets whose clock may still need recording: unresolved and not breached on both.
#[tracing::instrument(skip(ex))]
pub async fn to_check(ex: impl PgExecutor<'_>, limit: i64) -> Result<Vec<TicketId>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM tickets
         WHERE status IN ('new', 'open', 'waiting_on_customer')
           AND NOT (first_response_breached AND resolution_breached)
         ORDER BY next_due NULLS LAST LIMIT $1",
        limit
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(TicketId)
    .collect())
}

/// Resolved tickets resolved before `cutoff`.
#[tracing::instrument(skip(ex))]
pub async fn resolved_before(
    ex: impl PgExecutor<'_>,
    cutoff: OffsetDateTime,
    limit: i64,
) -> Result<Vec<TicketId>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM tickets WHERE status = 'resolved' AND resolved_at < $1
         ORDER BY resolved_at LIMIT $2",
        cutoff,
        limit
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(TicketId)
    .collect())
}

/// A ticket's rating.
#[derive(Debug, Clone)]
pub struct Rating {
    pub score: i16,
    pub comment: String,
    pub created_at: OffsetDateTime,
}

/// Records a rating; `false` when the ticket was rated already.
#[tracing::instrument(skip(conn, comment))]
pub async fn rate(
    conn: &mut PgConnection,
    id: TicketId,
    score: i16,
    comment: &str,
    by: UserId,
) -> Result<bool, StoreError> {
    Ok(sqlx::query!(
        "INSERT INTO ticket_ratings (ticket_id, score, comment, rated_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (ticket_id) DO NOTHING",
        id.0,
        score,
        comment,
        by.0
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

#[tracing::instrument(skip(ex))]
pub async fn rating(ex: impl PgExecutor<'_>, id: TicketId) -> Result<Option<Rating>, StoreError> {
    Ok(sqlx::query_as!(
        Rating,
        "SELECT score, comment, created_at FROM ticket_ratings WHERE ticket_id = $1",
        id.0
    )
    .fetch_optional(ex)
    .await?)
}

/// Operators, for assignment: (id, name).
#[tracing::instrument(skip(ex))]
pub async fn operators(ex: impl PgExecutor<'_>) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(sqlx::query!(
        "SELECT id, display_name FROM users WHERE is_operator ORDER BY display_name, id"
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.id, r.display_name))
    .collect())
}

/// The addresses a ticket's customer emails go to: the opener, or every member when the
/// ticket is shared with the organization.
#[tracing::instrument(skip(ex))]
pub async fn customer_recipients(
    ex: impl PgExecutor<'_>,
    id: TicketId,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT DISTINCT u.email FROM tickets t
         JOIN memberships m ON m.org_id = t.org_id
         JOIN users u ON u.id = m.user_id
         WHERE t.id = $1 AND (u.id = t.opener_id OR t.shared_with_org)
         ORDER BY u.email",
        id.0
    )
    .fetch_all(ex)
    .await?)
}
