-- Imports (issue 12): an operator creates a tenant from an export prepared for import
-- (`herd import prepare`, from a Herd export or a standard Mastodon install) under the
-- backup bucket's `imports/<id>/`. An import is a restore into a new tenant without a
-- source tenant.

-- The source tenant is optional (none for an import), and purging it keeps the history of
-- the restores made from its backups (it used to delete them by cascade).
ALTER TABLE tenant_restores ALTER COLUMN source_instance_id DROP NOT NULL;
ALTER TABLE tenant_restores DROP CONSTRAINT tenant_restores_source_instance_id_fkey;
ALTER TABLE tenant_restores ADD CONSTRAINT tenant_restores_source_instance_id_fkey
    FOREIGN KEY (source_instance_id) REFERENCES instances(id) ON DELETE SET NULL;

ALTER TABLE tenant_restores DROP CONSTRAINT tenant_restores_mode_check;
ALTER TABLE tenant_restores ADD CONSTRAINT tenant_restores_mode_check
    CHECK (mode IN ('in_place', 'new_tenant', 'import'));

-- An import's manifest SHA-256, read from the bucket when it was asked for (a backup's is
-- in tenant_backups.checksum); the operator refuses a manifest that differs.
ALTER TABLE tenant_restores ADD COLUMN manifest_sha256 text;
-- An import's app secrets as the operator pasted them from the old install (a JSON object
-- of the supplied keys), sealed with HERD_ENCRYPTION_KEY for `herd:import-secrets:<id>`;
-- wiped once they are written into the new tenant's app-secrets Secret (secrets_copied_at,
-- which for an import says when they were written).
ALTER TABLE tenant_restores ADD COLUMN import_secrets bytea;

ALTER TABLE tenant_restores ADD CONSTRAINT tenant_restores_import_check
    CHECK (mode <> 'import' OR (source_instance_id IS NULL AND manifest_sha256 IS NOT NULL));
ALTER TABLE tenant_restores ADD CONSTRAINT tenant_restores_import_secrets_check
    CHECK (import_secrets IS NULL OR (mode = 'import' AND secrets_copied_at IS NULL));

COMMENT ON COLUMN tenant_restores.secrets_copied_at IS
    'Into another tenant: when the source''s app-secrets were copied into its namespace; for an import, when the supplied ones were written there (and wiped here).';
