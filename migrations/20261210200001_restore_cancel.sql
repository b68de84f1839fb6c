-- Cancelling a restore (issue 12): an operator asks from the console while the restore
-- has not reached its migrations; the apply sends spec.restore.cancel, and the operator
-- reports the restore `cancelled` once no pod of it is left (the database untouched), or
-- goes on when it came too late.
ALTER TABLE tenant_restores DROP CONSTRAINT tenant_restores_step_check;
ALTER TABLE tenant_restores ADD CONSTRAINT tenant_restores_step_check
    CHECK (step IN ('requested', 'stopping_app', 'restoring', 'migrating', 'starting',
                    'succeeded', 'failed', 'cancelled'));

-- A cancelled restore is finished: another may be asked for.
DROP INDEX tenant_restores_one_open_idx;
CREATE UNIQUE INDEX tenant_restores_one_open_idx ON tenant_restores (instance_id)
    WHERE step NOT IN ('succeeded', 'failed', 'cancelled');

-- Who asked to cancel, and when (the cancel is carried to the operator until it reports
-- how the restore ended).
ALTER TABLE tenant_restores ADD COLUMN cancel_requested_at timestamptz;
ALTER TABLE tenant_restores ADD COLUMN cancel_requested_by uuid REFERENCES users(id) ON DELETE SET NULL;
