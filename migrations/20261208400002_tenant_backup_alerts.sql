-- A tenant whose backups went wrong: the last one failed, or none succeeded for longer
-- than its schedule allows. One open alert per tenant at a time; operators are emailed
-- once when it opens (not at every sync), and it closes when a backup succeeds again.
CREATE TABLE tenant_backup_alerts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    instance_id uuid NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('missed', 'failed')),
    message text NOT NULL,
    opened_at timestamptz NOT NULL DEFAULT now(),
    closed_at timestamptz,
    notified_at timestamptz
);

CREATE UNIQUE INDEX tenant_backup_alerts_open_idx ON tenant_backup_alerts (instance_id)
    WHERE closed_at IS NULL;

-- The hours between a tenant's scheduled backups, as its Instance says (from its plan),
-- for the age check and the metric.
ALTER TABLE instances ADD COLUMN backup_interval_hours integer NOT NULL DEFAULT 24
    CHECK (backup_interval_hours > 0);
