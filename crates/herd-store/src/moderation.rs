//! Managed moderation's tables: each moderated server's admin API connection (its token
//! sealed), the customer's versioned policy, reports copied from the server, decisions,
//! the outbox of actions to send, escalations, the operators who moderate, and what each
//! plan includes. States are parsed into herd-domain's enums here, at the edge.

use crate::{Page, Paged, StoreError};
use herd_domain::moderation::{
    AccountAction, Decision, DecisionKind, EscalationState, OutboxState, Policy, ReportCategory,
    ReportState, Terms,
};
use herd_domain::role::OperatorStanding;
use herd_domain::support::UnknownValue;
use herd_domain::{OrgId, UserId};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

fn parsed<T>(r: Result<T, UnknownValue>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Invalid(e.to_string()))
}

fn terms_of(
    included: Option<bool>,
    monthly: Option<i32>,
    target: Option<i32>,
    plan_hours: i32,
) -> Terms {
    match (included, monthly, target) {
        (Some(included), Some(m), Some(t)) => Terms {
            included,
            monthly_hours: u32::try_from(m).unwrap_or(0),
            response_target_hours: u32::try_from(t).unwrap_or(1),
        },
        _ => Terms::from_plan_hours(plan_hours),
    }
}

// ---------------------------------------------------------------------------------------
// Plans' terms

/// A plan and what it includes of moderation (`custom`: it has its own row).
#[derive(Debug, Clone)]
pub struct PlanTerms {
    pub code: String,
    pub name: String,
    pub terms: Terms,
    pub custom: bool,
}

/// Every plan with its moderation terms, in catalogue order.
#[tracing::instrument(skip(ex))]
pub async fn plan_terms(ex: impl PgExecutor<'_>) -> Result<Vec<PlanTerms>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT p.code, p.name, p.moderation_hours_per_month,
                  m.included AS "included?", m.monthly_hours AS "monthly_hours?",
                  m.response_target_hours AS "response_target_hours?"
           FROM plans p LEFT JOIN plan_moderation m ON m.plan_code = p.code
           ORDER BY p.sort_order, p.price_minor, p.code"#
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PlanTerms {
            custom: r.included.is_some(),
            terms: terms_of(
                r.included,
                r.monthly_hours,
                r.response_target_hours,
                r.moderation_hours_per_month,
            ),
            code: r.code,
            name: r.name,
        })
        .collect())
}

/// Sets a plan's terms.
#[tracing::instrument(skip(conn))]
pub async fn set_plan_terms(
    conn: &mut PgConnection,
    plan: &str,
    t: Terms,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "INSERT INTO plan_moderation (plan_code, included, monthly_hours, response_target_hours)
         SELECT code, $2, $3, $4 FROM plans WHERE code = $1
         ON CONFLICT (plan_code) DO UPDATE SET included = EXCLUDED.included,
             monthly_hours = EXCLUDED.monthly_hours,
             response_target_hours = EXCLUDED.response_target_hours, updated_at = now()",
        plan,
        t.included,
        i32::try_from(t.monthly_hours).unwrap_or(i32::MAX),
        i32::try_from(t.response_target_hours).unwrap_or(i32::MAX),
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------------------------------
// Moderated servers

/// A hosted server as moderation sees it: its organization, plan terms, connection.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: Uuid,
    pub org_id: Uuid,
    pub org_slug: String,
    pub org_name: String,
    pub slug: String,
    pub domain: String,
    /// Where its API answers: the URL its status reports, else `https://<domain>`.
    pub api_base: String,
    pub plan_code: String,
    pub terms: Terms,
    pub connection: Option<Connection>,
}

/// The admin API connection of a server. The sealed token is only read to call the API.
#[derive(Clone)]
pub struct Connection {
    pub moderator_account: String,
    pub token_sealed: Vec<u8>,
    pub connected_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub broken_at: Option<OffsetDateTime>,
    pub broken_reason: Option<String>,
    pub last_fetch_at: Option<OffsetDateTime>,
    pub last_fetch_error: Option<String>,
    pub rate_limited_until: Option<OffsetDateTime>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("moderator_account", &self.moderator_account)
            .field("token_sealed", &"..")
            .field("revoked_at", &self.revoked_at)
            .field("broken_at", &self.broken_at)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Is the token usable (neither revoked nor refused by the server)?
    pub fn usable(&self) -> bool {
        self.revoked_at.is_none() && self.broken_at.is_none()
    }
}

struct InstanceRow {
    id: Uuid,
    org_id: Uuid,
    org_slug: String,
    org_name: String,
    slug: String,
    domain: String,
    api_base: String,
    plan_code: String,
    moderation_hours_per_month: i32,
    included: Option<bool>,
    monthly_hours: Option<i32>,
    response_target_hours: Option<i32>,
    moderator_account: Option<String>,
    token_sealed: Option<Vec<u8>>,
    connected_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    broken_at: Option<OffsetDateTime>,
    broken_reason: Option<String>,
    last_fetch_at: Option<OffsetDateTime>,
    last_fetch_error: Option<String>,
    rate_limited_until: Option<OffsetDateTime>,
}

impl From<InstanceRow> for Instance {
    fn from(r: InstanceRow) -> Self {
        let connection = match (r.moderator_account, r.token_sealed, r.connected_at) {
            (Some(moderator_account), Some(token_sealed), Some(connected_at)) => Some(Connection {
                moderator_account,
                token_sealed,
                connected_at,
                revoked_at: r.revoked_at,
                broken_at: r.broken_at,
                broken_reason: r.broken_reason,
                last_fetch_at: r.last_fetch_at,
                last_fetch_error: r.last_fetch_error,
                rate_limited_until: r.rate_limited_until,
            }),
            _ => None,
        };
        Instance {
            terms: terms_of(
                r.included,
                r.monthly_hours,
                r.response_target_hours,
                r.moderation_hours_per_month,
            ),
            id: r.id,
            org_id: r.org_id,
            org_slug: r.org_slug,
            org_name: r.org_name,
            slug: r.slug,
            domain: r.domain,
            api_base: r.api_base,
            plan_code: r.plan_code,
            connection,
        }
    }
}

/// One server (not deleted).
#[tracing::instrument(skip(ex))]
pub async fn instance(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Instance>, StoreError> {
    let row = sqlx::query_as!(
        InstanceRow,
        r#"SELECT i.id, i.org_id, o.slug AS org_slug, o.name AS org_name, i.slug, i.domain,
                  coalesce(i.url, 'https://' || i.domain) AS "api_base!", i.plan_code,
                  p.moderation_hours_per_month,
                  m.included AS "included?", m.monthly_hours AS "monthly_hours?",
                  m.response_target_hours AS "response_target_hours?",
                  c.moderator_account AS "moderator_account?", c.token_sealed AS "token_sealed?",
                  c.connected_at AS "connected_at?", c.revoked_at, c.broken_at, c.broken_reason,
                  c.last_fetch_at, c.last_fetch_error, c.rate_limited_until
           FROM instances i
           JOIN organizations o ON o.id = i.org_id
           JOIN plans p ON p.code = i.plan_code
           LEFT JOIN plan_moderation m ON m.plan_code = i.plan_code
           LEFT JOIN moderation_connections c ON c.instance_id = i.id
           WHERE i.id = $1 AND i.desired <> 'deleted'"#,
        id
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(Instance::from))
}

/// An organization's servers (not deleted), oldest first.
#[tracing::instrument(skip(ex))]
pub async fn org_instances(
    ex: impl PgExecutor<'_>,
    org: OrgId,
) -> Result<Vec<Instance>, StoreError> {
    let rows = sqlx::query_as!(
        InstanceRow,
        r#"SELECT i.id, i.org_id, o.slug AS org_slug, o.name AS org_name, i.slug, i.domain,
                  coalesce(i.url, 'https://' || i.domain) AS "api_base!", i.plan_code,
                  p.moderation_hours_per_month,
                  m.included AS "included?", m.monthly_hours AS "monthly_hours?",
                  m.response_target_hours AS "response_target_hours?",
                  c.moderator_account AS "moderator_account?", c.token_sealed AS "token_sealed?",
                  c.connected_at AS "connected_at?", c.revoked_at, c.broken_at, c.broken_reason,
                  c.last_fetch_at, c.last_fetch_error, c.rate_limited_until
           FROM instances i
           JOIN organizations o ON o.id = i.org_id
           JOIN plans p ON p.code = i.plan_code
           LEFT JOIN plan_moderation m ON m.plan_code = i.plan_code
           LEFT JOIN moderation_connections c ON c.instance_id = i.id
           WHERE i.org_id = $1 AND i.desired <> 'deleted'
           ORDER BY i.created_at"#,
        org.0
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(Instance::from).collect())
}

/// Every server with a connection (usable or not), by domain: the queue's filter.
#[tracing::instrument(skip(ex))]
pub async fn connected_instances(ex: impl PgExecutor<'_>) -> Result<Vec<Instance>, StoreError> {
    let rows = sqlx::query_as!(
        InstanceRow,
        r#"SELECT i.id, i.org_id, o.slug AS org_slug, o.name AS org_name, i.slug, i.domain,
                  coalesce(i.url, 'https://' || i.domain) AS "api_base!", i.plan_code,
                  p.moderation_hours_per_month,
                  m.included AS "included?", m.monthly_hours AS "monthly_hours?",
                  m.response_target_hours AS "response_target_hours?",
                  c.moderator_account AS "moderator_account?", c.token_sealed AS "token_sealed?",
                  c.connected_at AS "connected_at?", c.revoked_at, c.broken_at, c.broken_reason,
                  c.last_fetch_at, c.last_fetch_error, c.rate_limited_until
           FROM instances i
           JOIN organizations o ON o.id = i.org_id
           JOIN plans p ON p.code = i.plan_code
           LEFT JOIN plan_moderation m ON m.plan_code = i.plan_code
           JOIN moderation_connections c ON c.instance_id = i.id
           WHERE i.desired <> 'deleted'
           ORDER BY i.domain"#,
    )
    .fetch_all(ex)
    .await?;
    Ok(rows.into_iter().map(Instance::from).collect())
}

/// Stores a (new) token for a server: clears revocation and breakage. `base_url`: Herd's
/// public address as the request came (the overdue digest's links).
#[tracing::instrument(skip(conn, token_sealed))]
pub async fn connect(
    conn: &mut PgConnection,
    instance: Uuid,
    moderator_account: &str,
    token_sealed: &[u8],
    by: UserId,
    base_url: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO moderation_connections (instance_id, moderator_account, token_sealed, connected_by,
                                             base_url)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (instance_id) DO UPDATE SET moderator_account = EXCLUDED.moderator_account,
             token_sealed = EXCLUDED.token_sealed, connected_by = EXCLUDED.connected_by,
             base_url = EXCLUDED.base_url, token_generation = NULL,
             connected_at = now(), revoked_at = NULL, broken_at = NULL, broken_reason = NULL,
             last_fetch_error = NULL, rate_limited_until = NULL",
        instance,
        moderator_account,
        token_sealed,
        by.0,
        base_url
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the token Herd made on the server (moderator-token `generation`), as [`connect`]
/// does a pasted one; no one connected it, and Herd's address for the digest's links stays.
/// Only while `generation` is still the server's current one and not a revocation
/// (checked under the instance's row lock, in the caller's transaction): a revoke, a
/// pasted token or a newer ask since it was made stores nothing and returns false.
#[tracing::instrument(skip(conn, token_sealed))]
pub async fn connect_made(
    conn: &mut PgConnection,
    instance: Uuid,
    moderator_account: &str,
    token_sealed: &[u8],
    generation: i32,
) -> Result<bool, StoreError> {
    let current = sqlx::query_scalar!(
        "SELECT moderator_token_generation = $2 AND NOT moderator_token_revoked AS \"current!\"
         FROM instances WHERE id = $1 FOR UPDATE",
        instance,
        generation
    )
    .fetch_optional(&mut *conn)
    .await?;
    if current != Some(true) {
        return Ok(false);
    }
    sqlx::query!(
        "INSERT INTO moderation_connections (instance_id, moderator_account, token_sealed,
                                             token_generation)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (instance_id) DO UPDATE SET moderator_account = EXCLUDED.moderator_account,
             token_sealed = EXCLUDED.token_sealed, connected_by = NULL,
             token_generation = EXCLUDED.token_generation,
             connected_at = now(), revoked_at = NULL, broken_at = NULL, broken_reason = NULL,
             last_fetch_error = NULL, rate_limited_until = NULL",
        instance,
        moderator_account,
        token_sealed,
        generation
    )
    .execute(conn)
    .await?;
    Ok(true)
}

/// Revokes a server's token: it is wiped and nothing is called any more. False when there
/// was no usable connection.
#[tracing::instrument(skip(conn))]
pub async fn revoke(conn: &mut PgConnection, instance: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE moderation_connections SET revoked_at = now(), token_sealed = '\\x'::bytea
         WHERE instance_id = $1 AND revoked_at IS NULL",
        instance
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The server refused the token (401): shown until a new one is connected.
#[tracing::instrument(skip(ex))]
pub async fn mark_broken(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE moderation_connections SET broken_at = coalesce(broken_at, now()), broken_reason = $2
         WHERE instance_id = $1",
        instance,
        reason
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Records a fetch's outcome (`error` None: it worked).
#[tracing::instrument(skip(ex))]
pub async fn record_fetch(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    error: Option<&str>,
    rate_limited_until: Option<OffsetDateTime>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE moderation_connections SET last_fetch_at = now(), last_fetch_error = $2,
                rate_limited_until = $3
         WHERE instance_id = $1",
        instance,
        error,
        rate_limited_until
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Servers whose reports are fetched on schedule: usable connection, moderation included
/// in the plan (a plan's own terms, else moderation hours above 0).
#[tracing::instrument(skip(ex))]
pub async fn fetchable(ex: impl PgExecutor<'_>) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT c.instance_id FROM moderation_connections c
         JOIN instances i ON i.id = c.instance_id
         JOIN plans p ON p.code = i.plan_code
         LEFT JOIN plan_moderation m ON m.plan_code = i.plan_code
         WHERE c.revoked_at IS NULL AND c.broken_at IS NULL AND i.desired <> 'deleted'
           AND coalesce(m.included, p.moderation_hours_per_month > 0)
         ORDER BY c.instance_id"
    )
    .fetch_all(ex)
    .await?)
}

// ---------------------------------------------------------------------------------------
// Policies

/// One version of a server's policy.
#[derive(Debug, Clone)]
pub struct PolicyVersion {
    pub version: i32,
    pub policy: Policy,
    pub written_by_name: String,
    pub created_at: OffsetDateTime,
}

/// Every version of a server's policy, newest first.
#[tracing::instrument(skip(ex))]
pub async fn policies(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Vec<PolicyVersion>, StoreError> {
    let rows = sqlx::query!(
        "SELECT version, house_rules, remove, escalate, urgent_contacts, language, written_by_name, created_at
         FROM moderation_policies WHERE instance_id = $1 ORDER BY version DESC",
        instance
    )
    .fetch_all(ex)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| PolicyVersion {
            version: r.version,
            policy: Policy {
                house_rules: r.house_rules,
                remove: r.remove,
                escalate: r.escalate,
                urgent_contacts: r.urgent_contacts,
                language: r.language,
            },
            written_by_name: r.written_by_name,
            created_at: r.created_at,
        })
        .collect())
}

/// The version in force (the newest).
pub async fn current_policy(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Option<PolicyVersion>, StoreError> {
    Ok(policies(ex, instance).await?.into_iter().next())
}

/// Writes a new version; returns its number. Takes the server's lock so that two
/// writers get consecutive numbers.
#[tracing::instrument(skip(conn, p))]
pub async fn add_policy(
    conn: &mut PgConnection,
    instance: Uuid,
    p: &Policy,
    by: UserId,
    by_name: &str,
) -> Result<i32, StoreError> {
    crate::lock_key(&mut *conn, &format!("moderation-policy:{instance}")).await?;
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO moderation_policies (instance_id, version, house_rules, remove, escalate,
                  urgent_contacts, language, written_by, written_by_name)
           SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6, $7, $8
           FROM moderation_policies WHERE instance_id = $1
           RETURNING version"#,
        instance,
        p.house_rules,
        p.remove,
        p.escalate,
        p.urgent_contacts,
        p.language,
        by.0,
        by_name
    )
    .fetch_one(conn)
    .await?)
}

// ---------------------------------------------------------------------------------------
// Reports

/// A report as fetched from the server.
#[derive(Debug, Clone)]
pub struct FetchedReport {
    pub remote_id: String,
    pub category: ReportCategory,
    pub comment: String,
    pub forwarded: bool,
    pub reporter_acct: String,
    pub target_account_id: String,
    pub target_acct: String,
    pub statuses: serde_json::Value,
    pub rules: serde_json::Value,
    pub action_taken: bool,
    pub reported_at: OffsetDateTime,
    pub due_at: OffsetDateTime,
}

/// Inserts or refreshes a report. A report the server shows as resolved is resolved here
/// too (when it was open); one the server shows open again is open here again, unless a
/// decision of ours is still on its way to the server; reopened, it is due again the
/// plan's response target from now (and alerted again only then). Returns its id.
#[tracing::instrument(skip(conn, r), fields(remote_id = %r.remote_id))]
pub async fn upsert_report(
    conn: &mut PgConnection,
    instance: Uuid,
    r: &FetchedReport,
) -> Result<Uuid, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"INSERT INTO moderation_reports AS m (id, instance_id, remote_id, state, category, comment,
                  forwarded, reporter_acct, target_account_id, target_acct, statuses, rules,
                  action_taken, reported_at, due_at, resolved_at)
           VALUES ($1, $2, $3, CASE WHEN $12 THEN 'resolved' ELSE 'open' END, $4, $5, $6, $7, $8,
                   $9, $10, $11, $12, $13, $14, CASE WHEN $12 THEN now() END)
           ON CONFLICT (instance_id, remote_id) DO UPDATE SET
               category = EXCLUDED.category, comment = EXCLUDED.comment,
               forwarded = EXCLUDED.forwarded, reporter_acct = EXCLUDED.reporter_acct,
               target_account_id = EXCLUDED.target_account_id, target_acct = EXCLUDED.target_acct,
               statuses = EXCLUDED.statuses, rules = EXCLUDED.rules,
               action_taken = EXCLUDED.action_taken, fetched_at = now(), vanished_at = NULL,
               state = CASE
                   WHEN EXCLUDED.action_taken AND m.state = 'open' THEN 'resolved'
                   WHEN NOT EXCLUDED.action_taken AND m.state IN ('resolved', 'vanished')
                        AND NOT EXISTS (SELECT 1 FROM moderation_outbox o
                                        JOIN moderation_decisions d ON d.id = o.decision_id
                                        WHERE d.report_id = m.id AND o.state IN ('pending', 'sending'))
                       THEN 'open'
                   ELSE m.state END,
               resolved_at = CASE
                   WHEN EXCLUDED.action_taken AND m.state = 'open' THEN now()
                   WHEN NOT EXCLUDED.action_taken AND m.state IN ('resolved', 'vanished')
                        AND NOT EXISTS (SELECT 1 FROM moderation_outbox o
                                        JOIN moderation_decisions d ON d.id = o.decision_id
                                        WHERE d.report_id = m.id AND o.state IN ('pending', 'sending'))
                       THEN NULL
                   ELSE m.resolved_at END,
               overdue_alerted_at = CASE
                   WHEN NOT EXCLUDED.action_taken AND m.state IN ('resolved', 'vanished')
                        AND NOT EXISTS (SELECT 1 FROM moderation_outbox o
                                        JOIN moderation_decisions d ON d.id = o.decision_id
                                        WHERE d.report_id = m.id AND o.state IN ('pending', 'sending'))
                       THEN NULL
                   ELSE m.overdue_alerted_at END,
               due_at = CASE
                   WHEN NOT EXCLUDED.action_taken AND m.state IN ('resolved', 'vanished')
                        AND NOT EXISTS (SELECT 1 FROM moderation_outbox o
                                        JOIN moderation_decisions d ON d.id = o.decision_id
                                        WHERE d.report_id = m.id AND o.state IN ('pending', 'sending'))
                       THEN now() + (EXCLUDED.due_at - EXCLUDED.reported_at)
                   ELSE m.due_at END
           RETURNING id"#,
        Uuid::now_v7(),
        instance,
        r.remote_id,
        r.category.as_str(),
        r.comment,
        r.forwarded,
        r.reporter_acct,
        r.target_account_id,
        r.target_acct,
        r.statuses,
        r.rules,
        r.action_taken,
        r.reported_at,
        r.due_at,
    )
    .fetch_one(conn)
    .await?)
}

/// A report with its server's names.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub instance_domain: String,
    pub org_id: Uuid,
    pub org_slug: String,
    pub org_name: String,
    pub remote_id: String,
    pub state: ReportState,
    pub category: ReportCategory,
    pub comment: String,
    pub forwarded: bool,
    pub reporter_acct: String,
    pub target_account_id: String,
    pub target_acct: String,
    pub statuses: serde_json::Value,
    pub rules: serde_json::Value,
    pub action_taken: bool,
    pub reported_at: OffsetDateTime,
    pub due_at: OffsetDateTime,
    pub fetched_at: OffsetDateTime,
    pub vanished_at: Option<OffsetDateTime>,
    pub resolved_at: Option<OffsetDateTime>,
    /// When the moderators were emailed that it passed its due time (cleared on reopening).
    pub overdue_alerted_at: Option<OffsetDateTime>,
}

struct ReportRow {
    id: Uuid,
    instance_id: Uuid,
    instance_domain: String,
    org_id: Uuid,
    org_slug: String,
    org_name: String,
    remote_id: String,
    state: String,
    category: String,
    comment: String,
    forwarded: bool,
    reporter_acct: String,
    target_account_id: String,
    target_acct: String,
    statuses: serde_json::Value,
    rules: serde_json::Value,
    action_taken: bool,
    reported_at: OffsetDateTime,
    due_at: OffsetDateTime,
    fetched_at: OffsetDateTime,
    vanished_at: Option<OffsetDateTime>,
    resolved_at: Option<OffsetDateTime>,
    overdue_alerted_at: Option<OffsetDateTime>,
}

impl TryFrom<ReportRow> for Report {
    type Error = StoreError;
    fn try_from(r: ReportRow) -> Result<Self, StoreError> {
        Ok(Report {
            state: parsed(ReportState::parse(&r.state))?,
            category: parsed(ReportCategory::parse(&r.category))?,
            id: r.id,
            instance_id: r.instance_id,
            instance_domain: r.instance_domain,
            org_id: r.org_id,
            org_slug: r.org_slug,
            org_name: r.org_name,
            remote_id: r.remote_id,
            comment: r.comment,
            forwarded: r.forwarded,
            reporter_acct: r.reporter_acct,
            target_account_id: r.target_account_id,
            target_acct: r.target_acct,
            statuses: r.statuses,
            rules: r.rules,
            action_taken: r.action_taken,
            reported_at: r.reported_at,
            due_at: r.due_at,
            fetched_at: r.fetched_at,
            vanished_at: r.vanished_at,
            resolved_at: r.resolved_at,
            overdue_alerted_at: r.overdue_alerted_at,
        })
    }
}

fn reports(rows: Vec<ReportRow>) -> Result<Vec<Report>, StoreError> {
    rows.into_iter().map(Report::try_from).collect()
}

/// One report.
#[tracing::instrument(skip(ex))]
pub async fn report(ex: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Report>, StoreError> {
    sqlx::query_as!(
        ReportRow,
        "SELECT r.id, r.instance_id, i.domain AS instance_domain, i.org_id, o.slug AS org_slug,
                o.name AS org_name, r.remote_id, r.state, r.category, r.comment, r.forwarded,
                r.reporter_acct, r.target_account_id, r.target_acct, r.statuses, r.rules,
                r.action_taken, r.reported_at, r.due_at, r.fetched_at, r.vanished_at, r.resolved_at,
                r.overdue_alerted_at
         FROM moderation_reports r
         JOIN instances i ON i.id = r.instance_id
         JOIN organizations o ON o.id = i.org_id
         WHERE r.id = $1",
        id
    )
    .fetch_optional(ex)
    .await?
    .map(Report::try_from)
    .transpose()
}

/// Locks a report's row for a decision; false when there is none.
pub async fn lock_report(conn: &mut PgConnection, id: Uuid) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM moderation_reports WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(conn)
    .await?
    .is_some())
}

/// A server's reports in `states`, newest first (at most `limit`).
#[tracing::instrument(skip(ex))]
pub async fn instance_reports(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    states: &[ReportState],
    limit: i64,
) -> Result<Vec<Report>, StoreError> {
    let states: Vec<String> = states.iter().map(|s| s.as_str().to_owned()).collect();
    let rows = sqlx::query_as!(
        ReportRow,
        "SELECT r.id, r.instance_id, i.domain AS instance_domain, i.org_id, o.slug AS org_slug,
                o.name AS org_name, r.remote_id, r.state, r.category, r.comment, r.forwarded,
                r.reporter_acct, r.target_account_id, r.target_acct, r.statuses, r.rules,
                r.action_taken, r.reported_at, r.due_at, r.fetched_at, r.vanished_at, r.resolved_at,
                r.overdue_alerted_at
         FROM moderation_reports r
         JOIN instances i ON i.id = r.instance_id
         JOIN organizations o ON o.id = i.org_id
         WHERE r.instance_id = $1 AND r.state = ANY($2)
         ORDER BY r.reported_at DESC LIMIT $3",
        instance,
        &states,
        limit
    )
    .fetch_all(ex)
    .await?;
    reports(rows)
}

/// The queue's filters; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    pub instance: Option<Uuid>,
    pub category: Option<ReportCategory>,
    /// Only reports filed before this (older than an age).
    pub filed_before: Option<OffsetDateTime>,
}

/// Open reports of every connected server, soonest due first.
#[tracing::instrument(skip(ex))]
pub async fn queue(
    ex: impl PgExecutor<'_>,
    f: &QueueFilter,
    page: Page,
) -> Result<Paged<Report>, StoreError> {
    let rows = sqlx::query_as!(
        ReportRow,
        "SELECT r.id, r.instance_id, i.domain AS instance_domain, i.org_id, o.slug AS org_slug,
                o.name AS org_name, r.remote_id, r.state, r.category, r.comment, r.forwarded,
                r.reporter_acct, r.target_account_id, r.target_acct, r.statuses, r.rules,
                r.action_taken, r.reported_at, r.due_at, r.fetched_at, r.vanished_at, r.resolved_at,
                r.overdue_alerted_at
         FROM moderation_reports r
         JOIN instances i ON i.id = r.instance_id
         JOIN organizations o ON o.id = i.org_id
         JOIN moderation_connections c ON c.instance_id = r.instance_id AND c.revoked_at IS NULL
         WHERE r.state = 'open' AND i.desired <> 'deleted'
           AND ($1::uuid IS NULL OR r.instance_id = $1)
           AND ($2::text IS NULL OR r.category = $2)
           AND ($3::timestamptz IS NULL OR r.reported_at < $3)
         ORDER BY r.due_at, r.reported_at
         LIMIT $4 OFFSET $5",
        f.instance,
        f.category.map(|c| c.as_str()),
        f.filed_before,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(reports(rows)?))
}

/// Reports of a server that are open or escalated here: after a full fetch, those the
/// server no longer lists as open are looked up one by one.
#[tracing::instrument(skip(ex))]
pub async fn pending_remote_ids(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(sqlx::query!(
        "SELECT id, remote_id FROM moderation_reports
         WHERE instance_id = $1 AND state IN ('open', 'escalated') ORDER BY reported_at",
        instance
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.id, r.remote_id))
    .collect())
}

/// Sets a report's state (with the time it was resolved or vanished). Reopened, it is due
/// again from now plus the response target it was filed with, and alerted again only then.
#[tracing::instrument(skip(ex))]
pub async fn set_report_state(
    ex: impl PgExecutor<'_>,
    id: Uuid,
    state: ReportState,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE moderation_reports SET state = $2,
                overdue_alerted_at = CASE WHEN $2 = 'open' AND state <> 'open' THEN NULL
                                          ELSE overdue_alerted_at END,
                due_at = CASE WHEN $2 = 'open' AND state <> 'open' THEN now() + (due_at - reported_at)
                              ELSE due_at END,
                resolved_at = CASE WHEN $2 = 'resolved' THEN coalesce(resolved_at, now())
                                   WHEN $2 IN ('open', 'escalated') THEN NULL ELSE resolved_at END,
                vanished_at = CASE WHEN $2 = 'vanished' THEN coalesce(vanished_at, now()) ELSE NULL END
         WHERE id = $1",
        id,
        state.as_str()
    )
    .execute(ex)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Decisions and the outbox

/// A decision to write.
#[derive(Debug, Clone)]
pub struct NewDecision<'a> {
    pub id: Uuid,
    pub report: Uuid,
    pub decision: Decision,
    pub note: &'a str,
    pub notify_user: bool,
    pub policy_version: Option<i32>,
    pub by: UserId,
    pub by_name: &'a str,
    pub by_customer: bool,
    pub minutes_spent: i32,
}

#[tracing::instrument(skip(conn, d), fields(report = %d.report))]
pub async fn insert_decision(
    conn: &mut PgConnection,
    d: &NewDecision<'_>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO moderation_decisions (id, report_id, kind, account_action, note, notify_user,
                policy_version, decided_by, decided_by_name, by_customer, minutes_spent)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        d.id,
        d.report,
        d.decision.kind().as_str(),
        d.decision.account_action().map(AccountAction::as_str),
        d.note,
        d.notify_user,
        d.policy_version,
        d.by.0,
        d.by_name,
        d.by_customer,
        d.minutes_spent
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues a decision's action for the server.
pub async fn insert_outbox(conn: &mut PgConnection, decision: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO moderation_outbox (decision_id) VALUES ($1)",
        decision
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A decision with where its action is.
#[derive(Debug, Clone)]
pub struct DecisionRow {
    pub id: Uuid,
    pub report_id: Uuid,
    pub decision: Decision,
    pub note: String,
    pub notify_user: bool,
    pub policy_version: Option<i32>,
    pub decided_by_name: String,
    pub by_customer: bool,
    pub minutes_spent: i32,
    pub created_at: OffsetDateTime,
    pub category: ReportCategory,
    pub target_acct: String,
    pub outbox: Option<OutboxState>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

struct DecisionSql {
    id: Uuid,
    report_id: Uuid,
    kind: String,
    account_action: Option<String>,
    note: String,
    notify_user: bool,
    policy_version: Option<i32>,
    decided_by_name: String,
    by_customer: bool,
    minutes_spent: i32,
    created_at: OffsetDateTime,
    category: String,
    target_acct: String,
    outbox: Option<String>,
    attempts: Option<i32>,
    last_error: Option<String>,
}

impl TryFrom<DecisionSql> for DecisionRow {
    type Error = StoreError;
    fn try_from(r: DecisionSql) -> Result<Self, StoreError> {
        let kind = parsed(DecisionKind::parse(&r.kind))?;
        let action = r
            .account_action
            .as_deref()
            .map(AccountAction::parse)
            .transpose();
        let decision = Decision::from_parts(kind, parsed(action)?)
            .ok_or_else(|| StoreError::Invalid(format!("decision {} without its action", r.id)))?;
        Ok(DecisionRow {
            id: r.id,
            report_id: r.report_id,
            decision,
            note: r.note,
            notify_user: r.notify_user,
            policy_version: r.policy_version,
            decided_by_name: r.decided_by_name,
            by_customer: r.by_customer,
            minutes_spent: r.minutes_spent,
            created_at: r.created_at,
            category: parsed(ReportCategory::parse(&r.category))?,
            target_acct: r.target_acct,
            outbox: r
                .outbox
                .as_deref()
                .map(OutboxState::parse)
                .transpose()
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
            attempts: r.attempts.unwrap_or(0),
            last_error: r.last_error,
        })
    }
}

/// A report's decisions, oldest first.
#[tracing::instrument(skip(ex))]
pub async fn report_decisions(
    ex: impl PgExecutor<'_>,
    report: Uuid,
) -> Result<Vec<DecisionRow>, StoreError> {
    let rows = sqlx::query_as!(
        DecisionSql,
        r#"SELECT d.id, d.report_id, d.kind, d.account_action, d.note, d.notify_user,
                  d.policy_version, d.decided_by_name, d.by_customer, d.minutes_spent, d.created_at,
                  r.category, r.target_acct, o.state AS "outbox?", o.attempts AS "attempts?",
                  o.last_error AS "last_error?"
           FROM moderation_decisions d
           JOIN moderation_reports r ON r.id = d.report_id
           LEFT JOIN moderation_outbox o ON o.decision_id = d.id
           WHERE d.report_id = $1 ORDER BY d.created_at, d.id"#,
        report
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter().map(DecisionRow::try_from).collect()
}

/// A server's decisions, newest first (at most `limit`).
#[tracing::instrument(skip(ex))]
pub async fn instance_decisions(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    limit: i64,
) -> Result<Vec<DecisionRow>, StoreError> {
    let rows = sqlx::query_as!(
        DecisionSql,
        r#"SELECT d.id, d.report_id, d.kind, d.account_action, d.note, d.notify_user,
                  d.policy_version, d.decided_by_name, d.by_customer, d.minutes_spent, d.created_at,
                  r.category, r.target_acct, o.state AS "outbox?", o.attempts AS "attempts?",
                  o.last_error AS "last_error?"
           FROM moderation_decisions d
           JOIN moderation_reports r ON r.id = d.report_id
           LEFT JOIN moderation_outbox o ON o.decision_id = d.id
           WHERE r.instance_id = $1 ORDER BY d.created_at DESC, d.id DESC LIMIT $2"#,
        instance,
        limit
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter().map(DecisionRow::try_from).collect()
}

/// Actions not applied yet, oldest first: shown in the console until they are.
#[tracing::instrument(skip(ex))]
pub async fn unsent(ex: impl PgExecutor<'_>) -> Result<Vec<DecisionRow>, StoreError> {
    let rows = sqlx::query_as!(
        DecisionSql,
        r#"SELECT d.id, d.report_id, d.kind, d.account_action, d.note, d.notify_user,
                  d.policy_version, d.decided_by_name, d.by_customer, d.minutes_spent, d.created_at,
                  r.category, r.target_acct, o.state AS "outbox?", o.attempts AS "attempts?",
                  o.last_error AS "last_error?"
           FROM moderation_outbox o
           JOIN moderation_decisions d ON d.id = o.decision_id
           JOIN moderation_reports r ON r.id = d.report_id
           WHERE o.state <> 'sent' ORDER BY d.created_at LIMIT 200"#,
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter().map(DecisionRow::try_from).collect()
}

/// An action to send, with what the call needs.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub decision_id: Uuid,
    pub decision: Decision,
    pub note: String,
    pub notify_user: bool,
    pub report_id: Uuid,
    pub instance_id: Uuid,
    pub remote_id: String,
    pub target_account_id: String,
    pub state: OutboxState,
    pub attempts: i32,
    pub first_attempt_at: Option<OffsetDateTime>,
    pub not_before: Option<OffsetDateTime>,
}

/// Locks an outbox row (until the transaction ends) and reads what sending it needs.
#[tracing::instrument(skip(conn))]
pub async fn lock_outgoing(
    conn: &mut PgConnection,
    decision: Uuid,
) -> Result<Option<Outgoing>, StoreError> {
    let Some(r) = sqlx::query!(
        "SELECT o.state, o.attempts, o.first_attempt_at, o.not_before, d.kind, d.account_action,
                d.note, d.notify_user, d.report_id, r.instance_id, r.remote_id, r.target_account_id
         FROM moderation_outbox o
         JOIN moderation_decisions d ON d.id = o.decision_id
         JOIN moderation_reports r ON r.id = d.report_id
         WHERE o.decision_id = $1
         FOR UPDATE OF o",
        decision
    )
    .fetch_optional(conn)
    .await?
    else {
        return Ok(None);
    };
    let kind = parsed(DecisionKind::parse(&r.kind))?;
    let action = parsed(
        r.account_action
            .as_deref()
            .map(AccountAction::parse)
            .transpose(),
    )?;
    Ok(Some(Outgoing {
        decision_id: decision,
        decision: Decision::from_parts(kind, action).ok_or_else(|| {
            StoreError::Invalid(format!("decision {decision} without its action"))
        })?,
        note: r.note,
        notify_user: r.notify_user,
        report_id: r.report_id,
        instance_id: r.instance_id,
        remote_id: r.remote_id,
        target_account_id: r.target_account_id,
        state: parsed(OutboxState::parse(&r.state))?,
        attempts: r.attempts,
        first_attempt_at: r.first_attempt_at,
        not_before: r.not_before,
    }))
}

/// Marks an attempt as begun, before the call: committed first, so that a later attempt
/// knows an earlier one may have reached the server.
pub async fn begin_attempt(conn: &mut PgConnection, decision: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE moderation_outbox SET state = 'sending', attempts = attempts + 1,
                first_attempt_at = coalesce(first_attempt_at, now()), not_before = NULL,
                updated_at = now()
         WHERE decision_id = $1",
        decision
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The action is applied on the server (`by_reread`: a retry found it so, and did not
/// send it again).
pub async fn mark_sent(
    ex: impl PgExecutor<'_>,
    decision: Uuid,
    by_reread: bool,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE moderation_outbox SET state = 'sent', sent_at = now(), confirmed_by_reread = $2,
                last_error = NULL, updated_at = now()
         WHERE decision_id = $1",
        decision,
        by_reread
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Records a failed attempt: `failed` when it will not be retried (the token was refused,
/// the report is gone), else pending again (from `not_before`, when the server said so).
pub async fn mark_error(
    ex: impl PgExecutor<'_>,
    decision: Uuid,
    error: &str,
    failed: bool,
    not_before: Option<OffsetDateTime>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE moderation_outbox SET state = CASE WHEN $3 THEN 'failed' ELSE 'pending' END,
                last_error = $2, not_before = $4, updated_at = now()
         WHERE decision_id = $1",
        decision,
        error,
        failed,
        not_before
    )
    .execute(ex)
    .await?;
    Ok(())
}

/// Puts a failed action back in line (after a new token was connected, say).
pub async fn requeue_failed(ex: impl PgExecutor<'_>, decision: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE moderation_outbox SET state = 'pending', updated_at = now()
         WHERE decision_id = $1 AND state = 'failed'",
        decision
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Minutes moderators logged on a server's reports in `[from, to)`: with their decisions
/// and on their own (time entries).
#[tracing::instrument(skip(ex))]
pub async fn minutes_used(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT (coalesce((SELECT sum(d.minutes_spent)
                             FROM moderation_decisions d JOIN moderation_reports r ON r.id = d.report_id
                             WHERE r.instance_id = $1 AND NOT d.by_customer
                               AND d.created_at >= $2 AND d.created_at < $3), 0)
                 + coalesce((SELECT sum(t.minutes)
                             FROM moderation_time_entries t JOIN moderation_reports r ON r.id = t.report_id
                             WHERE r.instance_id = $1
                               AND t.created_at >= $2 AND t.created_at < $3), 0))::bigint AS "m!""#,
        instance,
        from,
        to
    )
    .fetch_one(ex)
    .await?)
}

/// A decision of a month, for the monthly report.
#[derive(Debug, Clone)]
pub struct MonthRow {
    pub category: ReportCategory,
    pub decision: Decision,
    /// Seconds from the report being filed to this decision.
    pub seconds_to_decision: i64,
    /// Is it the report's first decision other than an escalation?
    pub first_action: bool,
}

/// The decisions of `[from, to)` on a server's reports.
#[tracing::instrument(skip(ex))]
pub async fn month(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<MonthRow>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT r.category, d.kind, d.account_action,
                  extract(epoch FROM d.created_at - r.reported_at)::bigint AS "secs!",
                  NOT EXISTS (SELECT 1 FROM moderation_decisions e
                              WHERE e.report_id = d.report_id AND e.kind <> 'escalate'
                                AND (e.created_at, e.id) < (d.created_at, d.id)) AS "first!"
           FROM moderation_decisions d JOIN moderation_reports r ON r.id = d.report_id
           WHERE r.instance_id = $1 AND d.created_at >= $2 AND d.created_at < $3
           ORDER BY d.created_at"#,
        instance,
        from,
        to
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|r| {
            let kind = parsed(DecisionKind::parse(&r.kind))?;
            let action = parsed(
                r.account_action
                    .as_deref()
                    .map(AccountAction::parse)
                    .transpose(),
            )?;
            Ok(MonthRow {
                category: parsed(ReportCategory::parse(&r.category))?,
                decision: Decision::from_parts(kind, action)
                    .ok_or_else(|| StoreError::Invalid("decision without its action".into()))?,
                seconds_to_decision: r.secs.max(0),
                first_action: r.first && kind != DecisionKind::Escalate,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Escalations

#[tracing::instrument(skip(conn))]
pub async fn insert_escalation(
    conn: &mut PgConnection,
    id: Uuid,
    report: Uuid,
    decision: Uuid,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO moderation_escalations (id, report_id, decision_id) VALUES ($1, $2, $3)",
        id,
        report,
        decision
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An escalation with the moderator's question.
#[derive(Debug, Clone)]
pub struct Escalation {
    pub id: Uuid,
    pub report_id: Uuid,
    pub instance_id: Uuid,
    pub org_id: Uuid,
    pub state: EscalationState,
    pub question: String,
    pub asked_by: String,
    pub policy_version: Option<i32>,
    pub created_at: OffsetDateTime,
    pub decided_at: Option<OffsetDateTime>,
    pub target_acct: String,
    pub category: ReportCategory,
}

struct EscalationSql {
    id: Uuid,
    report_id: Uuid,
    instance_id: Uuid,
    org_id: Uuid,
    state: String,
    question: String,
    asked_by: String,
    policy_version: Option<i32>,
    created_at: OffsetDateTime,
    decided_at: Option<OffsetDateTime>,
    target_acct: String,
    category: String,
}

impl TryFrom<EscalationSql> for Escalation {
    type Error = StoreError;
    fn try_from(r: EscalationSql) -> Result<Self, StoreError> {
        Ok(Escalation {
            state: parsed(EscalationState::parse(&r.state))?,
            category: parsed(ReportCategory::parse(&r.category))?,
            id: r.id,
            report_id: r.report_id,
            instance_id: r.instance_id,
            org_id: r.org_id,
            question: r.question,
            asked_by: r.asked_by,
            policy_version: r.policy_version,
            created_at: r.created_at,
            decided_at: r.decided_at,
            target_acct: r.target_acct,
        })
    }
}

/// One escalation.
#[tracing::instrument(skip(ex))]
pub async fn escalation(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Escalation>, StoreError> {
    sqlx::query_as!(
        EscalationSql,
        "SELECT e.id, e.report_id, r.instance_id, i.org_id, e.state, d.note AS question,
                d.decided_by_name AS asked_by, d.policy_version, e.created_at, e.decided_at,
                r.target_acct, r.category
         FROM moderation_escalations e
         JOIN moderation_decisions d ON d.id = e.decision_id
         JOIN moderation_reports r ON r.id = e.report_id
         JOIN instances i ON i.id = r.instance_id
         WHERE e.id = $1",
        id
    )
    .fetch_optional(ex)
    .await?
    .map(Escalation::try_from)
    .transpose()
}

/// A server's escalations, waiting ones first, then newest first.
#[tracing::instrument(skip(ex))]
pub async fn instance_escalations(
    ex: impl PgExecutor<'_>,
    instance: Uuid,
) -> Result<Vec<Escalation>, StoreError> {
    let rows = sqlx::query_as!(
        EscalationSql,
        "SELECT e.id, e.report_id, r.instance_id, i.org_id, e.state, d.note AS question,
                d.decided_by_name AS asked_by, d.policy_version, e.created_at, e.decided_at,
                r.target_acct, r.category
         FROM moderation_escalations e
         JOIN moderation_decisions d ON d.id = e.decision_id
         JOIN moderation_reports r ON r.id = e.report_id
         JOIN instances i ON i.id = r.instance_id
         WHERE r.instance_id = $1
         ORDER BY e.state = 'waiting' DESC, e.created_at DESC LIMIT 100",
        instance
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter().map(Escalation::try_from).collect()
}

/// Records the customer's decision on a waiting escalation; false when it was decided
/// already.
#[tracing::instrument(skip(conn))]
pub async fn decide_escalation(
    conn: &mut PgConnection,
    id: Uuid,
    customer_decision: Uuid,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE moderation_escalations SET state = 'decided', customer_decision_id = $2,
                decided_at = now()
         WHERE id = $1 AND state = 'waiting'",
        id,
        customer_decision
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Emails of an organization's owners and admins (who decide escalations).
#[tracing::instrument(skip(ex))]
pub async fn deciders(ex: impl PgExecutor<'_>, org: Uuid) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.org_id = $1 AND m.role IN ('owner', 'admin') ORDER BY u.email",
        org
    )
    .fetch_all(ex)
    .await?)
}

// ---------------------------------------------------------------------------------------
// Operators who moderate

/// May this operator moderate?
#[tracing::instrument(skip(ex))]
pub async fn is_moderator(ex: impl PgExecutor<'_>, user: UserId) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM operator_moderators m JOIN users u ON u.id = m.user_id
                          WHERE m.user_id = $1 AND u.is_operator) AS "x!""#,
        user.0
    )
    .fetch_one(ex)
    .await?)
}

/// An operator, whether they moderate and whether they manage operators.
#[derive(Debug, Clone)]
pub struct OperatorRow {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    pub moderator: bool,
    pub manages_operators: bool,
}

/// Every operator, moderators first.
#[tracing::instrument(skip(ex))]
pub async fn operators(ex: impl PgExecutor<'_>) -> Result<Vec<OperatorRow>, StoreError> {
    Ok(sqlx::query_as!(
        OperatorRow,
        r#"SELECT u.id, u.display_name AS name, u.email,
                  (m.user_id IS NOT NULL) AS "moderator!", u.manages_operators
           FROM users u LEFT JOIN operator_moderators m ON m.user_id = u.id
           WHERE u.is_operator
           ORDER BY (m.user_id IS NULL), u.display_name, u.email"#
    )
    .fetch_all(ex)
    .await?)
}

/// Gives an operator the moderator role; false when they are not an operator or have it.
#[tracing::instrument(skip(conn))]
pub async fn grant(conn: &mut PgConnection, user: UserId, by: UserId) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "INSERT INTO operator_moderators (user_id, granted_by)
         SELECT id, $2 FROM users WHERE id = $1 AND is_operator
         ON CONFLICT (user_id) DO NOTHING",
        user.0,
        by.0
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Takes the role away; false when they did not have it.
#[tracing::instrument(skip(conn))]
pub async fn withdraw(conn: &mut PgConnection, user: UserId) -> Result<bool, StoreError> {
    let done = sqlx::query!("DELETE FROM operator_moderators WHERE user_id = $1", user.0)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Is this operator one who manages operators (and so gives or takes the moderator role)?
#[tracing::instrument(skip(ex))]
pub async fn operator_standing(
    ex: impl PgExecutor<'_>,
    user: UserId,
) -> Result<Option<OperatorStanding>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT manages_operators FROM users WHERE id = $1 AND is_operator",
        user.0
    )
    .fetch_optional(ex)
    .await?
    .map(OperatorStanding::from_flag))
}

/// Lets an operator manage operators, or not (`herd admin create-operator
/// --manages-operators`, `herd admin set-operator`). False when `user` is no operator.
#[tracing::instrument(skip(conn))]
pub async fn set_manages_operators(
    conn: &mut PgConnection,
    user: UserId,
    manages: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE users SET manages_operators = $2 WHERE id = $1 AND is_operator",
        user.0,
        manages
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Verified emails of the operators with the moderator role (overdue alerts).
#[tracing::instrument(skip(ex))]
pub async fn moderator_emails(ex: impl PgExecutor<'_>) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT u.email FROM operator_moderators m JOIN users u ON u.id = m.user_id
         WHERE u.is_operator AND u.email_verified_at IS NOT NULL ORDER BY u.email"
    )
    .fetch_all(ex)
    .await?)
}

/// Is `email` (still) a verified operator's with the moderator role? Checked when an alert
/// is sent: a role withdrawn meanwhile gets nothing.
#[tracing::instrument(skip(ex))]
pub async fn is_moderator_email(ex: impl PgExecutor<'_>, email: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM operator_moderators m JOIN users u ON u.id = m.user_id
                          WHERE u.is_operator AND u.email_verified_at IS NOT NULL
                            AND lower(u.email) = lower($1)) AS "e!""#,
        email
    )
    .fetch_one(ex)
    .await?)
}

// ---------------------------------------------------------------------------------------
// Time logged without a decision

/// Minutes a moderator logged on a report.
#[derive(Debug, Clone)]
pub struct TimeEntry {
    pub minutes: i32,
    pub note: String,
    pub logged_by_name: String,
    pub created_at: OffsetDateTime,
}

/// Logs minutes on a report. `submission`: the form's one-time token; the same token again
/// (a double submission) logs nothing and returns false.
#[tracing::instrument(skip(conn, note))]
pub async fn insert_time(
    conn: &mut PgConnection,
    report: Uuid,
    minutes: i32,
    note: &str,
    (by, by_name): (UserId, &str),
    submission: Option<Uuid>,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "INSERT INTO moderation_time_entries (id, report_id, minutes, note, logged_by, logged_by_name,
                                              submission)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (submission) DO NOTHING",
        Uuid::now_v7(),
        report,
        minutes,
        note,
        by.0,
        by_name,
        submission
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A report's time entries, oldest first.
#[tracing::instrument(skip(ex))]
pub async fn report_time(
    ex: impl PgExecutor<'_>,
    report: Uuid,
) -> Result<Vec<TimeEntry>, StoreError> {
    Ok(sqlx::query_as!(
        TimeEntry,
        "SELECT minutes, note, logged_by_name, created_at FROM moderation_time_entries
         WHERE report_id = $1 ORDER BY created_at, id",
        report
    )
    .fetch_all(ex)
    .await?)
}

// ---------------------------------------------------------------------------------------
// Overdue reports and deleted servers
//
// A server counts as deleted once its deletion is asked for (`desired = 'deleted'`, which
// is final): its reports leave the overdue alerts and the metric, and the next overdue
// check forgets its moderation.

/// An open report newly past its due time, with Herd's public address for its link.
#[derive(Debug, Clone)]
pub struct Overdue {
    pub id: Uuid,
    pub base_url: String,
}

/// Marks the open reports past their due time that were not alerted yet (of servers not
/// deleted, whose connection is not revoked) as alerted now; returns them. Run in the
/// transaction that queues their emails.
#[tracing::instrument(skip(conn))]
pub async fn claim_overdue(conn: &mut PgConnection) -> Result<Vec<Overdue>, StoreError> {
    Ok(sqlx::query_as!(
        Overdue,
        "UPDATE moderation_reports r SET overdue_alerted_at = now()
         FROM instances i, moderation_connections c
         WHERE i.id = r.instance_id AND c.instance_id = r.instance_id AND c.revoked_at IS NULL
           AND i.desired <> 'deleted' AND r.state = 'open' AND r.overdue_alerted_at IS NULL
           AND r.due_at < now()
         RETURNING r.id, c.base_url"
    )
    .fetch_all(conn)
    .await?)
}

/// How many reports in the queue are past their due time (`herd_moderation_reports_overdue`).
#[tracing::instrument(skip(ex))]
pub async fn overdue_count(
    ex: impl PgExecutor<'_>,
    now: OffsetDateTime,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM moderation_reports r
           JOIN instances i ON i.id = r.instance_id
           JOIN moderation_connections c ON c.instance_id = r.instance_id AND c.revoked_at IS NULL
           WHERE r.state = 'open' AND i.desired <> 'deleted' AND r.due_at < $1"#,
        now
    )
    .fetch_one(ex)
    .await?)
}

/// Forgets the moderation of deleted servers: their connection (and its sealed token) is
/// wiped; their open and escalated reports are recorded as gone (they leave the queue)
/// and their waiting escalations closed; actions not sent yet fail (one being sent is
/// left to its job); and the personal data is erased: reports' comments, accounts,
/// statuses and rules, decisions' and time entries' notes and authors, the policy's
/// urgent contacts and authors. What the monthly counts need stays (categories, times,
/// decision kinds, minutes). Returns the servers.
#[tracing::instrument(skip(conn))]
pub async fn forget_deleted(conn: &mut PgConnection) -> Result<Vec<Uuid>, StoreError> {
    let mut servers = sqlx::query_scalar!(
        "DELETE FROM moderation_connections c USING instances i
         WHERE i.id = c.instance_id AND i.desired = 'deleted'
         RETURNING c.instance_id"
    )
    .fetch_all(&mut *conn)
    .await?;
    servers.extend(
        sqlx::query_scalar!(
            r#"SELECT r.instance_id AS "id!" FROM moderation_reports r
               JOIN instances i ON i.id = r.instance_id
               WHERE i.desired = 'deleted' AND r.erased_at IS NULL
               UNION
               SELECT p.instance_id FROM moderation_policies p
               JOIN instances i ON i.id = p.instance_id
               WHERE i.desired = 'deleted' AND (p.urgent_contacts <> '' OR p.written_by_name <> '')"#
        )
        .fetch_all(&mut *conn)
        .await?,
    );
    servers.sort_unstable();
    servers.dedup();
    if servers.is_empty() {
        return Ok(servers);
    }
    sqlx::query!(
        "UPDATE moderation_escalations e SET state = 'decided', decided_at = now()
         FROM moderation_reports r
         WHERE r.id = e.report_id AND r.instance_id = ANY($1) AND e.state = 'waiting'",
        &servers
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE moderation_reports SET state = 'vanished', vanished_at = coalesce(vanished_at, now())
         WHERE instance_id = ANY($1) AND state IN ('open', 'escalated')",
        &servers
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE moderation_outbox o SET state = 'failed', last_error = 'the server was deleted',
                updated_at = now()
         FROM moderation_decisions d, moderation_reports r
         WHERE d.id = o.decision_id AND r.id = d.report_id AND r.instance_id = ANY($1)
           AND o.state = 'pending'",
        &servers
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE moderation_reports SET comment = '', reporter_acct = '', target_account_id = '',
                target_acct = '', statuses = '[]', rules = '[]', erased_at = now()
         WHERE instance_id = ANY($1) AND erased_at IS NULL",
        &servers
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE moderation_decisions d SET note = '', decided_by = NULL, decided_by_name = ''
         FROM moderation_reports r
         WHERE r.id = d.report_id AND r.instance_id = ANY($1)
           AND (d.note <> '' OR d.decided_by_name <> '')",
        &servers
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE moderation_time_entries t SET note = '', logged_by = NULL, logged_by_name = ''
         FROM moderation_reports r
         WHERE r.id = t.report_id AND r.instance_id = ANY($1)
           AND (t.note <> '' OR t.logged_by_name <> '')",
        &servers
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE moderation_policies SET urgent_contacts = '', written_by = NULL, written_by_name = ''
         WHERE instance_id = ANY($1) AND (urgent_contacts <> '' OR written_by_name <> '')",
        &servers
    )
    .execute(&mut *conn)
    .await?;
    Ok(servers)
}

// ---------------------------------------------------------------------------------------
// Operators who manage operators

/// One operator (not found when `user` is no operator).
#[tracing::instrument(skip(ex))]
pub async fn operator(
    ex: impl PgExecutor<'_>,
    user: UserId,
) -> Result<Option<OperatorRow>, StoreError> {
    Ok(sqlx::query_as!(
        OperatorRow,
        r#"SELECT u.id, u.display_name AS name, u.email,
                  EXISTS (SELECT 1 FROM operator_moderators m WHERE m.user_id = u.id) AS "moderator!",
                  u.manages_operators
           FROM users u WHERE u.id = $1 AND u.is_operator"#,
        user.0
    )
    .fetch_optional(ex)
    .await?)
}

/// Locks the operators who manage operators (until the transaction ends) and returns them:
/// two operators taking the standing from the last two at once cannot both succeed.
#[tracing::instrument(skip(conn))]
pub async fn lock_operator_managers(conn: &mut PgConnection) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM users WHERE is_operator AND manages_operators ORDER BY id FOR UPDATE"
    )
    .fetch_all(conn)
    .await?)
}

// ---------------------------------------------------------------------------------------
// Deleted servers' moderation history
//
// A deleted server's moderation is forgotten ([`forget_deleted`]), but what the monthly
// reports count stays: its organization still downloads them for the months it ran
// (transparency reports). Only the server's address and plan are read here; nothing the
// erasure wiped.

/// A deleted server that had moderation (reports), with the months of its activity.
#[derive(Debug, Clone)]
pub struct DeletedServer {
    pub id: Uuid,
    pub org_id: Uuid,
    pub domain: String,
    pub plan_code: String,
    /// The first instant of the first and of the last month with moderation activity
    /// (a report filed, a decision, time logged), UTC.
    pub first_month: OffsetDateTime,
    pub last_month: OffsetDateTime,
}

/// Deleted servers with moderation activity, with the bounds of that activity: of the
/// organization `org` or the one server `id` (each when given), most recently active first.
async fn deleted_servers(
    ex: impl PgExecutor<'_>,
    (org, id): (Option<Uuid>, Option<Uuid>),
    page: Page,
) -> Result<Vec<DeletedServer>, StoreError> {
    Ok(sqlx::query_as!(
        DeletedServer,
        r#"SELECT i.id, i.org_id, i.domain, i.plan_code,
                  date_trunc('month', a.first_at, 'UTC') AS "first_month!",
                  date_trunc('month', a.last_at, 'UTC') AS "last_month!"
           FROM instances i
           JOIN LATERAL (
               SELECT min(x.at) AS first_at, max(x.at) AS last_at FROM (
                   SELECT r.reported_at AS at FROM moderation_reports r WHERE r.instance_id = i.id
                   UNION ALL
                   SELECT d.created_at FROM moderation_decisions d
                   JOIN moderation_reports r ON r.id = d.report_id WHERE r.instance_id = i.id
                   UNION ALL
                   SELECT t.created_at FROM moderation_time_entries t
                   JOIN moderation_reports r ON r.id = t.report_id WHERE r.instance_id = i.id
               ) x
           ) a ON a.first_at IS NOT NULL
           WHERE i.desired = 'deleted'
             AND ($1::uuid IS NULL OR i.org_id = $1) AND ($2::uuid IS NULL OR i.id = $2)
           ORDER BY a.last_at DESC, i.id
           LIMIT $3 OFFSET $4"#,
        org,
        id,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?)
}

/// An organization's deleted servers that had moderation, most recently active first.
#[tracing::instrument(skip(ex))]
pub async fn org_deleted_servers(
    ex: impl PgExecutor<'_>,
    org: OrgId,
    page: Page,
) -> Result<Paged<DeletedServer>, StoreError> {
    Ok(page.finish(deleted_servers(ex, (Some(org.0), None), page).await?))
}

/// One deleted server that had moderation (none for a server not deleted).
#[tracing::instrument(skip(ex))]
pub async fn deleted_server(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<DeletedServer>, StoreError> {
    Ok(
        deleted_servers(ex, (None, Some(id)), Page::new(None, Some(1)))
            .await?
            .into_iter()
            .next(),
    )
}
