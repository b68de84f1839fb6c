//! Organizations and their memberships.

use crate::users::like_escape;
use crate::{Page, Paged, StoreError};
use herd_domain::{OrgId, Role, Slug, UserId};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// The unique constraint on `organizations.slug`.
pub const SLUG_TAKEN: &str = "organizations_slug_key";

#[derive(Debug, Clone)]
pub struct Org {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub created_at: OffsetDateTime,
}

impl Org {
    pub fn id(&self) -> OrgId {
        OrgId(self.id)
    }
}

/// An organization as seen by one of its members.
#[derive(Debug, Clone)]
pub struct OrgMembership {
    pub org: Org,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub joined_at: OffsetDateTime,
}

fn role(s: &str) -> Result<Role, StoreError> {
    Role::parse(s).map_err(|_| StoreError::Db(sqlx::Error::Decode(format!("bad role {s}").into())))
}

/// Creates an organization with `owner` as its first owner.
#[tracing::instrument(skip(conn))]
pub async fn create(
    conn: &mut PgConnection,
    slug: &Slug,
    name: &str,
    owner: UserId,
) -> Result<Org, StoreError> {
    let org = sqlx::query_as!(
        Org,
        "INSERT INTO organizations (id, slug, name) VALUES ($1, $2, $3)
         RETURNING id, slug, name, created_at",
        OrgId::new().0,
        slug.as_str(),
        name
    )
    .fetch_one(&mut *conn)
    .await?;
    add_member(conn, org.id(), owner, Role::Owner).await?;
    Ok(org)
}

#[tracing::instrument(skip(conn))]
pub async fn add_member(
    conn: &mut PgConnection,
    org: OrgId,
    user: UserId,
    role: Role,
) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3)",
        org.0,
        user.0,
        role.as_str()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The organizations `user` belongs to, by name.
#[tracing::instrument(skip(ex))]
pub async fn for_user(
    ex: impl PgExecutor<'_>,
    user: UserId,
) -> Result<Vec<OrgMembership>, StoreError> {
    let rows = sqlx::query!(
        "SELECT o.id, o.slug, o.name, o.created_at, m.role
         FROM organizations o JOIN memberships m ON m.org_id = o.id
         WHERE m.user_id = $1 ORDER BY o.name, o.slug",
        user.0
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(OrgMembership {
                org: Org {
                    id: r.id,
                    slug: r.slug,
                    name: r.name,
                    created_at: r.created_at,
                },
                role: role(&r.role)?,
            })
        })
        .collect()
}

/// The organization `slug` if `user` is a member of it. `None` both when it does not exist
/// and when the user is not a member, so callers cannot tell the two apart (404 for both).
#[tracing::instrument(skip(ex))]
pub async fn membership(
    ex: impl PgExecutor<'_>,
    slug: &str,
    user: UserId,
) -> Result<Option<OrgMembership>, StoreError> {
    let row = sqlx::query!(
        "SELECT o.id, o.slug, o.name, o.created_at, m.role
         FROM organizations o JOIN memberships m ON m.org_id = o.id
         WHERE o.slug = $1 AND m.user_id = $2",
        slug,
        user.0
    )
    .fetch_optional(ex)
    .await?;
    row.map(|r| {
        Ok(OrgMembership {
            org: Org {
                id: r.id,
                slug: r.slug,
                name: r.name,
                created_at: r.created_at,
            },
            role: role(&r.role)?,
        })
    })
    .transpose()
}

#[tracing::instrument(skip(ex))]
pub async fn by_slug(ex: impl PgExecutor<'_>, slug: &str) -> Result<Option<Org>, StoreError> {
    Ok(sqlx::query_as!(
        Org,
        "SELECT id, slug, name, created_at FROM organizations WHERE slug = $1",
        slug
    )
    .fetch_optional(ex)
    .await?)
}

#[tracing::instrument(skip(ex))]
pub async fn by_id(ex: impl PgExecutor<'_>, id: OrgId) -> Result<Option<Org>, StoreError> {
    Ok(sqlx::query_as!(
        Org,
        "SELECT id, slug, name, created_at FROM organizations WHERE id = $1",
        id.0
    )
    .fetch_optional(ex)
    .await?)
}

#[tracing::instrument(skip(ex))]
pub async fn members(ex: impl PgExecutor<'_>, org: OrgId) -> Result<Vec<Member>, StoreError> {
    let rows = sqlx::query!(
        "SELECT u.id, u.email, u.display_name, m.role, m.created_at
         FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.org_id = $1
         ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 WHEN 'billing' THEN 2 ELSE 3 END,
                  u.email",
        org.0
    )
    .fetch_all(ex)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Member {
                user_id: r.id,
                email: r.email,
                display_name: r.display_name,
                role: role(&r.role)?,
                joined_at: r.created_at,
            })
        })
        .collect()
}

/// Locks the organization's memberships for a change and returns the role of `user` (if a
/// member) and the number of owners. Taken before any role change or removal so that two
/// owners demoting each other at once cannot leave the organization without an owner.
#[tracing::instrument(skip(conn))]
pub async fn lock_for_change(
    conn: &mut PgConnection,
    org: OrgId,
    user: UserId,
) -> Result<(Option<Role>, i64), StoreError> {
    sqlx::query!(
        "SELECT id FROM organizations WHERE id = $1 FOR UPDATE",
        org.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    let row = sqlx::query!(
        r#"SELECT (SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2) AS role,
                  (SELECT count(*) FROM memberships WHERE org_id = $1 AND role = 'owner') AS "owners!""#,
        org.0,
        user.0
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((row.role.as_deref().map(role).transpose()?, row.owners))
}

/// The role of `user` in `org`, read in the caller's transaction and held there
/// (`FOR SHARE`): a role change or removal waits for that transaction to end, so what is
/// decided on the role stays true until it commits.
#[tracing::instrument(skip(conn))]
pub async fn held_role(
    conn: &mut PgConnection,
    org: OrgId,
    user: UserId,
) -> Result<Option<Role>, StoreError> {
    let row = sqlx::query_scalar!(
        "SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2 FOR SHARE",
        org.0,
        user.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    row.as_deref().map(role).transpose()
}

#[tracing::instrument(skip(conn))]
pub async fn set_role(
    conn: &mut PgConnection,
    org: OrgId,
    user: UserId,
    new_role: Role,
) -> Result<bool, StoreError> {
    let r = sqlx::query!(
        "UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2",
        org.0,
        user.0,
        new_role.as_str()
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

#[tracing::instrument(skip(conn))]
pub async fn remove_member(
    conn: &mut PgConnection,
    org: OrgId,
    user: UserId,
) -> Result<bool, StoreError> {
    let r = sqlx::query!(
        "DELETE FROM memberships WHERE org_id = $1 AND user_id = $2",
        org.0,
        user.0
    )
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A row of the operator's organization list.
#[derive(Debug, Clone)]
pub struct OrgSummary {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub member_count: i64,
    pub owner_emails: String,
    pub created_at: OffsetDateTime,
}

/// Organizations whose name or slug contains `query` (case-insensitive), newest first.
#[tracing::instrument(skip(ex))]
pub async fn search(
    ex: impl PgExecutor<'_>,
    query: &str,
    page: Page,
) -> Result<Paged<OrgSummary>, StoreError> {
    let pattern = format!("%{}%", like_escape(query));
    let rows = sqlx::query_as!(
        OrgSummary,
        r#"SELECT o.id, o.slug, o.name,
                  (SELECT count(*) FROM memberships m WHERE m.org_id = o.id) AS "member_count!",
                  coalesce((SELECT string_agg(u.email, ', ' ORDER BY u.email)
                            FROM memberships m JOIN users u ON u.id = m.user_id
                            WHERE m.org_id = o.id AND m.role = 'owner'), '') AS "owner_emails!",
                  o.created_at
           FROM organizations o
           WHERE o.name ILIKE $1 OR o.slug ILIKE $1
           ORDER BY o.created_at DESC, o.id DESC
           LIMIT $2 OFFSET $3"#,
        pattern,
        page.fetch_limit(),
        page.offset()
    )
    .fetch_all(ex)
    .await?;
    Ok(page.finish(rows))
}
