//! Imports (issue 12): a restore into a new tenant from an export prepared for import
//! (`tenant_restores` with mode `import`, no source tenant), with the old install's app
//! secrets sealed until the orchestrator writes them into the tenant's namespace.

use crate::StoreError;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// An import to record.
#[derive(Clone)]
pub struct NewImport<'a> {
    /// The restore's id (chosen first: the secrets are sealed for it).
    pub id: Uuid,
    /// The new tenant.
    pub instance: Uuid,
    /// What the console shows as its backup (`imports/<id>`).
    pub name: &'a str,
    /// `s3://bucket/<prefix>imports/<id>/`.
    pub location: &'a str,
    pub manifest_sha256: &'a str,
    /// The supplied app secrets, sealed.
    pub sealed_secrets: &'a [u8],
    pub requested_by: Uuid,
}

impl std::fmt::Debug for NewImport<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewImport")
            .field("id", &self.id)
            .field("instance", &self.instance)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Records an import (step `requested`) and bumps the new tenant's spec generation, as
/// its Instance gets `spec.restore`.
#[tracing::instrument(skip(conn, r), fields(id = %r.id, instance = %r.instance))]
pub async fn insert(conn: &mut PgConnection, r: &NewImport<'_>) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO tenant_restores (id, instance_id, source_instance_id, source_backup,
                location, mode, drill, requested_by, manifest_sha256, import_secrets)
         VALUES ($1, $2, NULL, $3, $4, 'import', false, $5, $6, $7)",
        r.id,
        r.instance,
        r.name,
        r.location,
        r.requested_by,
        r.manifest_sha256,
        r.sealed_secrets
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE instances SET spec_generation = spec_generation + 1, updated_at = now()
         WHERE id = $1",
        r.instance
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The sealed secrets of import `id`, while they wait to be written.
pub async fn sealed_secrets(
    ex: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT import_secrets FROM tenant_restores WHERE id = $1 AND mode = 'import'",
        id
    )
    .fetch_optional(ex)
    .await?
    .flatten())
}

/// Records that import `id`'s secrets were written into its tenant's namespace, and wipes
/// them from the database.
pub async fn mark_secrets_written(ex: impl PgExecutor<'_>, id: Uuid) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE tenant_restores SET import_secrets = NULL, secrets_copied_at = now(),
                message = NULL
         WHERE id = $1 AND mode = 'import'",
        id
    )
    .execute(ex)
    .await?;
    Ok(())
}
