//! Invitations to join an organization: expiring, single-use links sent by email.

use crate::StoreError;
use herd_domain::{Email, InvitationId, OrgId, Role, UserId};
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// The partial unique index allowing one open invitation per address and organization.
pub const ALREADY_INVITED: &str = "invitations_open_idx";

#[derive(Debug, Clone)]
pub struct Invitation {
    pub id: Uuid,
    pub org_id: Uuid,
    pub org_slug: String,
    pub org_name: String,
    pub email: String,
    pub role: String,
    pub expires_at: OffsetDateTime,
    pub accepted_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
}

impl Invitation {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Member)
    }
    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        self.accepted_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

#[tracing::instrument(skip(conn, token_hash))]
pub async fn create(
    conn: &mut PgConnection,
    org: OrgId,
    email: &Email,
    role: Role,
    token_hash: &[u8],
    invited_by: UserId,
    expires_at: OffsetDateTime,
) -> Result<InvitationId, StoreError> {
    let id = InvitationId::new();
    sqlx::query!(
        "INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        id.0,
        org.0,
        email.as_str(),
        role.as_str(),
        token_hash,
        invited_by.0,
        expires_at
    )
    .execute(conn)
    .await?;
    Ok(id)
}

/// The invitation behind a token, locked for acceptance.
#[tracing::instrument(skip(conn, token_hash))]
pub async fn by_token_for_update(
    conn: &mut PgConnection,
    token_hash: &[u8],
) -> Result<Option<Invitation>, StoreError> {
    Ok(sqlx::query_as!(
        Invitation,
        r#"SELECT i.id, i.org_id, o.slug AS org_slug, o.name AS org_name, i.email, i.role,
                  i.expires_at, i.accepted_at, i.revoked_at, i.created_at
           FROM invitations i JOIN organizations o ON o.id = i.org_id
           WHERE i.token_hash = $1
           FOR UPDATE OF i"#,
        token_hash
    )
    .fetch_optional(conn)
    .await?)
}

#[tracing::instrument(skip(ex, token_hash))]
pub async fn by_token(
    ex: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Invitation>, StoreError> {
    Ok(sqlx::query_as!(
        Invitation,
        r#"SELECT i.id, i.org_id, o.slug AS org_slug, o.name AS org_name, i.email, i.role,
                  i.expires_at, i.accepted_at, i.revoked_at, i.created_at
           FROM invitations i JOIN organizations o ON o.id = i.org_id
           WHERE i.token_hash = $1"#,
        token_hash
    )
    .fetch_optional(ex)
    .await?)
}

#[tracing::instrument(skip(conn))]
pub async fn mark_accepted(
    conn: &mut PgConnection,
    id: InvitationId,
    by: UserId,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE invitations SET accepted_at = now(), accepted_by = $2 WHERE id = $1",
        id.0,
        by.0
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes an open invitation of `org`; false when there was none.
#[tracing::instrument(skip(conn))]
pub async fn revoke(
    conn: &mut PgConnection,
    org: OrgId,
    id: InvitationId,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "UPDATE invitations SET revoked_at = now()
         WHERE id = $1 AND org_id = $2 AND accepted_at IS NULL AND revoked_at IS NULL
         RETURNING email",
        id.0,
        org.0
    )
    .fetch_optional(conn)
    .await?)
}

/// Open invitations of an organization (including expired, not yet revoked ones).
#[tracing::instrument(skip(ex))]
pub async fn pending(ex: impl PgExecutor<'_>, org: OrgId) -> Result<Vec<Invitation>, StoreError> {
    Ok(sqlx::query_as!(
        Invitation,
        r#"SELECT i.id, i.org_id, o.slug AS org_slug, o.name AS org_name, i.email, i.role,
                  i.expires_at, i.accepted_at, i.revoked_at, i.created_at
           FROM invitations i JOIN organizations o ON o.id = i.org_id
           WHERE i.org_id = $1 AND i.accepted_at IS NULL AND i.revoked_at IS NULL
           ORDER BY i.created_at DESC"#,
        org.0
    )
    .fetch_all(ex)
    .await?)
}

/// Revokes an expired open invitation so the address can be invited again.
#[tracing::instrument(skip(conn))]
pub async fn revoke_expired_for(
    conn: &mut PgConnection,
    org: OrgId,
    email: &Email,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE invitations SET revoked_at = now()
         WHERE org_id = $1 AND email = $2 AND accepted_at IS NULL AND revoked_at IS NULL
           AND expires_at <= now()",
        org.0,
        email.as_str()
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An open invitation with what its email says: the inviter's name.
#[tracing::instrument(skip(ex))]
pub async fn open_with_inviter(
    ex: impl PgExecutor<'_>,
    id: InvitationId,
) -> Result<Option<(Invitation, String)>, StoreError> {
    let row = sqlx::query!(
        r#"SELECT i.id, i.org_id, o.slug AS org_slug, o.name AS org_name, i.email, i.role,
                  i.expires_at, i.accepted_at, i.revoked_at, i.created_at,
                  COALESCE(u.display_name, o.name) AS "inviter!"
           FROM invitations i JOIN organizations o ON o.id = i.org_id
           LEFT JOIN users u ON u.id = i.invited_by
           WHERE i.id = $1 AND i.accepted_at IS NULL AND i.revoked_at IS NULL AND i.expires_at > now()"#,
        id.0
    )
    .fetch_optional(ex)
    .await?;
    Ok(row.map(|r| {
        (
            Invitation {
                id: r.id,
                org_id: r.org_id,
                org_slug: r.org_slug,
                org_name: r.org_name,
                email: r.email,
                role: r.role,
                expires_at: r.expires_at,
                accepted_at: r.accepted_at,
                revoked_at: r.revoked_at,
                created_at: r.created_at,
            },
            r.inviter,
        )
    }))
}

/// Gives an invitation a new token (the one its email carries), while it is open.
#[tracing::instrument(skip(ex, token_hash))]
pub async fn replace_token(
    ex: impl PgExecutor<'_>,
    id: InvitationId,
    token_hash: &[u8],
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE invitations SET token_hash = $2
         WHERE id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now()",
        id.0,
        token_hash
    )
    .execute(ex)
    .await?;
    Ok(done.rows_affected() == 1)
}
