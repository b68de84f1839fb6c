-- Exports a customer asks for (issue 12): the operator takes a database dump, a media
-- archive and a manifest under `<backup prefix>exports/<slug>/<id>/` (spec.export,
-- status.export of the Instance); the status sync records how it went, and the
-- organization's owners and admins download it through the portal until it expires.
CREATE TABLE tenant_exports (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    instance_id uuid NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    requested_by uuid REFERENCES users(id) ON DELETE SET NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    outcome text NOT NULL DEFAULT 'requested'
        CHECK (outcome IN ('requested', 'running', 'succeeded', 'failed', 'corrupt')),
    -- Where the operator wrote it (`s3://bucket/dir/`), its bytes and the manifest's SHA-256.
    location text,
    size_bytes bigint CHECK (size_bytes >= 0),
    checksum text,
    started_at timestamptz,
    finished_at timestamptz,
    -- Why it failed, or why it is corrupt.
    message text,
    -- How many days its link lasts once it is ready (HERD_EXPORT_LINK_DAYS when asked),
    -- and so when it expires.
    link_days integer NOT NULL CHECK (link_days > 0),
    expires_at timestamptz,
    download_count integer NOT NULL DEFAULT 0,
    -- Where the portal is, for the link in the "export ready" email.
    base_url text NOT NULL,
    notified_at timestamptz
);

-- At most one export in progress per server.
CREATE UNIQUE INDEX tenant_exports_one_open_idx ON tenant_exports (instance_id)
    WHERE outcome IN ('requested', 'running');
CREATE INDEX tenant_exports_recent_idx ON tenant_exports (instance_id, requested_at DESC);
