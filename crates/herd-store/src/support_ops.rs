//! The support desk's operator tools: canned replies, merged duplicate tickets, and the
//! figures of the support dashboard (tickets per week, first answers, SLA attainment per
//! plan, satisfaction).

use crate::StoreError;
use herd_domain::ids::TicketId;
use herd_domain::support::Category;
use herd_domain::{OrgId, UserId};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// An answer operators reuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedReply {
    pub id: Uuid,
    pub title: String,
    pub body: String,
    /// The tickets it suits best; `None`: any.
    pub category: Option<Category>,
    pub updated_by_name: Option<String>,
    pub updated_at: OffsetDateTime,
}

struct CannedRow {
    id: Uuid,
    title: String,
    body: String,
    category: Option<String>,
    updated_by_name: Option<String>,
    updated_at: OffsetDateTime,
}

impl TryFrom<CannedRow> for CannedReply {
    type Error = StoreError;
    fn try_from(r: CannedRow) -> Result<Self, StoreError> {
        Ok(CannedReply {
            category: r
                .category
                .as_deref()
                .map(Category::parse)
                .transpose()
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
            id: r.id,
            title: r.title,
            body: r.body,
            updated_by_name: r.updated_by_name,
            updated_at: r.updated_at,
        })
    }
}

/// The constraint that keeps canned replies' titles unique (ignoring case).
pub const CANNED_TITLE_TAKEN: &str = "canned_replies_title_key";

/// Every canned reply, by title.
#[tracing::instrument(skip(ex))]
pub async fn canned_replies(ex: impl PgExecutor<'_>) -> Result<Vec<CannedReply>, StoreError> {
    sqlx::query_as!(
        CannedRow,
        r#"SELECT c.id, c.title, c.body, c.category, u.display_name AS "updated_by_name?",
                  c.updated_at
           FROM canned_replies c LEFT JOIN users u ON u.id = c.updated_by
           ORDER BY lower(c.title), c.id"#
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(CannedReply::try_from)
    .collect()
}

#[tracing::instrument(skip(ex))]
pub async fn canned_reply(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<CannedReply>, StoreError> {
    sqlx::query_as!(
        CannedRow,
        r#"SELECT c.id, c.title, c.body, c.category, u.display_name AS "updated_by_name?",
                  c.updated_at
           FROM canned_replies c LEFT JOIN users u ON u.id = c.updated_by
           WHERE c.id = $1"#,
        id
    )
    .fetch_optional(ex)
    .await?
    .map(CannedReply::try_from)
    .transpose()
}

/// A canned reply as written (checked by the caller).
#[derive(Debug, Clone)]
pub struct CannedFields<'a> {
    pub title: &'a str,
    pub body: &'a str,
    pub category: Option<Category>,
    pub by: UserId,
}

/// Adds a canned reply; [`CANNED_TITLE_TAKEN`] when its title is taken.
#[tracing::instrument(skip(conn, c))]
pub async fn insert_canned(
    conn: &mut PgConnection,
    id: Uuid,
    c: &CannedFields<'_>,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO canned_replies (id, title, body, category, created_by, updated_by)
         VALUES ($1, $2, $3, $4, $5, $5)",
        id,
        c.title,
        c.body,
        c.category.map(Category::as_str),
        c.by.0,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Changes a canned reply; `false` when there is none with this id.
#[tracing::instrument(skip(conn, c))]
pub async fn update_canned(
    conn: &mut PgConnection,
    id: Uuid,
    c: &CannedFields<'_>,
) -> Result<bool, StoreError> {
    Ok(sqlx::query!(
        "UPDATE canned_replies SET title = $2, body = $3, category = $4, updated_by = $5,
                updated_at = now()
         WHERE id = $1",
        id,
        c.title,
        c.body,
        c.category.map(Category::as_str),
        c.by.0,
    )
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Deletes a canned reply; returns its title, or `None` when there was none.
#[tracing::instrument(skip(conn))]
pub async fn delete_canned(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "DELETE FROM canned_replies WHERE id = $1 RETURNING title",
        id
    )
    .fetch_optional(conn)
    .await?)
}

/// The ticket with this number.
#[tracing::instrument(skip(ex))]
pub async fn ticket_by_number(
    ex: impl PgExecutor<'_>,
    number: i64,
) -> Result<Option<TicketId>, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT id FROM tickets WHERE number = $1", number)
            .fetch_optional(ex)
            .await?
            .map(TicketId),
    )
}

/// Marks `source` merged into `target` at `at`, and moves the tickets merged into
/// `source` before onto `target` (one level of merges, whatever the order they came in);
/// returns the ids of those moved.
#[tracing::instrument(skip(conn))]
pub async fn set_merged(
    conn: &mut PgConnection,
    source: TicketId,
    target: TicketId,
    at: OffsetDateTime,
) -> Result<Vec<Uuid>, StoreError> {
    sqlx::query!(
        "UPDATE tickets SET merged_into = $2, merged_at = $3, updated_at = $3 WHERE id = $1",
        source.0,
        target.0,
        at
    )
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar!(
        "UPDATE tickets SET merged_into = $2 WHERE merged_into = $1 RETURNING id",
        source.0,
        target.0
    )
    .fetch_all(conn)
    .await?)
}

/// The tickets merged into `target`, in the order they were merged: (id, when).
#[tracing::instrument(skip(ex))]
pub async fn merged_into(
    ex: impl PgExecutor<'_>,
    target: TicketId,
) -> Result<Vec<(TicketId, OffsetDateTime)>, StoreError> {
    Ok(sqlx::query!(
        r#"SELECT id, merged_at AS "merged_at!" FROM tickets
           WHERE merged_into = $1 AND merged_at IS NOT NULL
           ORDER BY merged_at, number"#,
        target.0
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (TicketId(r.id), r.merged_at))
    .collect())
}

/// A ticket in a short list: (id, number, subject).
pub type TicketRef = (Uuid, i64, String);

/// The organization's unresolved tickets other than `except`, newest first: where a
/// duplicate may go.
#[tracing::instrument(skip(ex))]
pub async fn other_active_tickets(
    ex: impl PgExecutor<'_>,
    org: OrgId,
    except: TicketId,
    limit: i64,
) -> Result<Vec<TicketRef>, StoreError> {
    Ok(sqlx::query!(
        "SELECT id, number, subject FROM tickets
         WHERE org_id = $1 AND id <> $2 AND status IN ('new', 'open', 'waiting_on_customer')
         ORDER BY created_at DESC, id DESC LIMIT $3",
        org.0,
        except.0,
        limit
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.id, r.number, r.subject))
    .collect())
}

/// A count per week (weeks start on Monday, 00:00 UTC).
pub type Weekly = Vec<(OffsetDateTime, i64)>;

/// Tickets opened per week in `[from, to)`.
#[tracing::instrument(skip(ex))]
pub async fn opened_per_week(
    ex: impl PgExecutor<'_>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Weekly, StoreError> {
    Ok(sqlx::query!(
        r#"SELECT date_trunc('week', created_at, 'UTC') AS "week!", count(*) AS "n!"
           FROM tickets WHERE created_at >= $1 AND created_at < $2
           GROUP BY 1 ORDER BY 1"#,
        from,
        to
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.week, r.n))
    .collect())
}

/// Tickets solved (resolved, or closed, and not merged into another) per week of their
/// resolution in `[from, to)`.
#[tracing::instrument(skip(ex))]
pub async fn solved_per_week(
    ex: impl PgExecutor<'_>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Weekly, StoreError> {
    Ok(sqlx::query!(
        r#"SELECT date_trunc('week', resolved_at, 'UTC') AS "week!", count(*) AS "n!"
           FROM tickets
           WHERE status IN ('resolved', 'closed') AND merged_into IS NULL
             AND resolved_at >= $1 AND resolved_at < $2
           GROUP BY 1 ORDER BY 1"#,
        from,
        to
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.week, r.n))
    .collect())
}

/// Per week of the first answer in `[from, to)`: the median time from opening to the
/// first answer (calendar seconds) and how many first answers there were.
#[tracing::instrument(skip(ex))]
pub async fn first_response_median_per_week(
    ex: impl PgExecutor<'_>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<(OffsetDateTime, f64, i64)>, StoreError> {
    Ok(sqlx::query!(
        r#"SELECT date_trunc('week', first_response_at, 'UTC') AS "week!",
                  percentile_cont(0.5) WITHIN GROUP (
                      ORDER BY extract(epoch FROM first_response_at - created_at)::float8
                  ) AS "median!",
                  count(*) AS "n!"
           FROM tickets WHERE first_response_at >= $1 AND first_response_at < $2
           GROUP BY 1 ORDER BY 1"#,
        from,
        to
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(|r| (r.week, r.median, r.n))
    .collect())
}

/// SLA outcomes of one plan's tickets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanAttainment {
    /// `None`: tickets of organizations without a plan.
    pub plan_code: Option<String>,
    pub plan_name: Option<String>,
    /// Tickets whose first-response target is decided (answered, or breached).
    pub first_decided: i64,
    pub first_met: i64,
    /// Tickets whose resolution target is decided (resolved or closed, or breached).
    pub resolution_decided: i64,
    pub resolution_met: i64,
}

/// Per plan (the one each ticket follows now), the SLA outcomes of the tickets opened in
/// `[from, to)`, duplicates merged into another ticket left out.
#[tracing::instrument(skip(ex))]
pub async fn attainment_per_plan(
    ex: impl PgExecutor<'_>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<PlanAttainment>, StoreError> {
    Ok(sqlx::query_as!(
        PlanAttainment,
        r#"SELECT t.plan_code, p.name AS "plan_name?",
                  count(*) FILTER (WHERE t.first_response_at IS NOT NULL
                                      OR t.first_response_breached) AS "first_decided!",
                  count(*) FILTER (WHERE t.first_response_at IS NOT NULL
                                     AND NOT t.first_response_breached) AS "first_met!",
                  count(*) FILTER (WHERE t.status IN ('resolved', 'closed')
                                      OR t.resolution_breached) AS "resolution_decided!",
                  count(*) FILTER (WHERE t.status IN ('resolved', 'closed')
                                     AND NOT t.resolution_breached) AS "resolution_met!"
           FROM tickets t LEFT JOIN plans p ON p.code = t.plan_code
           WHERE t.created_at >= $1 AND t.created_at < $2 AND t.merged_into IS NULL
           GROUP BY t.plan_code, p.name, p.sort_order
           ORDER BY p.sort_order NULLS LAST, t.plan_code NULLS LAST"#,
        from,
        to
    )
    .fetch_all(ex)
    .await?)
}

/// Ratings given in `[from, to)`: how many of each score, 1 to 5.
#[tracing::instrument(skip(ex))]
pub async fn ratings_by_score(
    ex: impl PgExecutor<'_>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<[i64; 5], StoreError> {
    let rows = sqlx::query!(
        r#"SELECT score, count(*) AS "n!" FROM ticket_ratings
           WHERE created_at >= $1 AND created_at < $2 GROUP BY score"#,
        from,
        to
    )
    .fetch_all(ex)
    .await?;
    let mut counts = [0; 5];
    for r in rows {
        if let Some(c) = usize::try_from(r.score - 1)
            .ok()
            .and_then(|i| counts.get_mut(i))
        {
            *c = r.n;
        }
    }
    Ok(counts)
}
