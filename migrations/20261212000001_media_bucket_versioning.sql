-- Media in object storage are not copied by Herd's backups: the bucket's versioning is
-- their backup. The cluster's operator reads it with the tenant's own credentials
-- (status.mediaBucket); the control plane keeps the last reading and raises the tenant's
-- backup alert unless versioning is on. All NULL: the media are on a volume (archived
-- with each backup) or not read yet.
ALTER TABLE instances
    ADD COLUMN media_bucket text,
    ADD COLUMN media_versioning text
        CHECK (media_versioning IN ('enabled', 'suspended', 'off', 'unreadable')),
    ADD COLUMN media_versioning_message text,
    ADD COLUMN media_versioning_checked_at timestamptz,
    ADD CONSTRAINT instances_media_versioning_read CHECK (
        (media_bucket IS NULL) = (media_versioning IS NULL)
        AND (media_bucket IS NULL) = (media_versioning_checked_at IS NULL)
    );

ALTER TABLE tenant_backup_alerts
    DROP CONSTRAINT tenant_backup_alerts_kind_check,
    ADD CONSTRAINT tenant_backup_alerts_kind_check
        CHECK (kind IN ('missed', 'failed', 'media_unprotected'));
