-- Each tenant backup as its cluster reports it (the operator's Instance status: a backup
-- Job's outcome and summary, or a CloudNativePG Backup's status), copied by the status
-- sync. One row per backup (the Job's or Backup's name), updated as it runs and finishes.
CREATE TABLE tenant_backups (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    instance_id uuid NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    name text NOT NULL,
    reason text NOT NULL CHECK (reason IN ('scheduled', 'before_upgrade')),
    method text NOT NULL CHECK (method IN ('dump', 'barman')),
    outcome text NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed')),
    started_at timestamptz,
    finished_at timestamptz,
    duration_seconds bigint CHECK (duration_seconds >= 0),
    size_bytes bigint CHECK (size_bytes >= 0),
    location text,
    -- The manifest's SHA-256 (the manifest lists every object's).
    checksum text,
    -- Why it failed or is not verified.
    message text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (instance_id, name)
);

CREATE INDEX tenant_backups_recent_idx ON tenant_backups (instance_id, started_at DESC NULLS FIRST);
CREATE INDEX tenant_backups_success_idx ON tenant_backups (instance_id, finished_at DESC)
    WHERE outcome = 'succeeded';
