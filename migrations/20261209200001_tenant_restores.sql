-- Restores of tenants from their backups (issue 12): asked from the console (in place, or
-- into a new tenant) or by a restore drill (into a scratch tenant), carried to the
-- operator in the Instance's spec.restore, and followed from its status.restore.
CREATE TABLE tenant_restores (
    id uuid PRIMARY KEY,
    -- The tenant restored into (the same as the source in place; a new or scratch one
    -- otherwise).
    instance_id uuid NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    -- The tenant whose backup is restored.
    source_instance_id uuid NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    source_backup text NOT NULL,
    location text NOT NULL,
    mode text NOT NULL CHECK (mode IN ('in_place', 'new_tenant')),
    drill boolean NOT NULL DEFAULT false,
    requested_by uuid REFERENCES users(id) ON DELETE SET NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    step text NOT NULL DEFAULT 'requested' CHECK (step IN ('requested', 'stopping_app',
        'restoring', 'migrating', 'starting', 'succeeded', 'failed')),
    started_at timestamptz,
    finished_at timestamptz,
    source_rows jsonb NOT NULL DEFAULT '{}',
    restored_rows jsonb NOT NULL DEFAULT '{}',
    message text,
    -- Into another tenant: when the source's app-secrets were copied into its namespace.
    secrets_copied_at timestamptz,
    -- Proven (passed) or not (failed), once concluded: a restore that succeeded with the
    -- rows of its backup (a drill also needs its scratch tenant Running).
    outcome text CHECK (outcome IN ('passed', 'failed')),
    outcome_reason text,
    concluded_at timestamptz,
    -- From the request to the restore's end, when it passed.
    time_to_restore_seconds bigint,
    -- A failed restore (not a drill) holds its tenant stopped: the operator keeps the app
    -- down while spec.restore names it, because the database may be half restored. Set
    -- when an operator starts the tenant on its database as it is.
    released_at timestamptz,
    released_by uuid REFERENCES users(id) ON DELETE SET NULL
);

CREATE INDEX tenant_restores_instance_idx ON tenant_restores (instance_id, requested_at DESC);
CREATE INDEX tenant_restores_source_idx ON tenant_restores (source_instance_id, concluded_at DESC);
CREATE INDEX tenant_restores_drills_idx ON tenant_restores (requested_at DESC) WHERE drill;
-- One unfinished restore per tenant.
CREATE UNIQUE INDEX tenant_restores_one_open_idx ON tenant_restores (instance_id)
    WHERE step NOT IN ('succeeded', 'failed');

