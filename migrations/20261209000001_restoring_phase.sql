-- A server being restored from a backup (issue 12): the operator reports phase Restoring.
ALTER TABLE instances DROP CONSTRAINT instances_phase_check;
ALTER TABLE instances ADD CONSTRAINT instances_phase_check
    CHECK (phase IN ('queued', 'provisioning', 'running', 'upgrading', 'restoring',
                     'suspended', 'deleting', 'deleted', 'failed'));
