-- Media in object storage are not copied by Herd's backups: the bucket's versioning is
-- their backup. `media_bucket` is the bucket the tenant's Instance puts its media in
-- (NULL: on a volume, archived with each backup), since `media_bucket_since`. The cluster's operator reads that
-- bucket's versioning with the tenant's own credentials (status.mediaBucket); the control
-- plane keeps the last reading (NULL: none yet) and raises the tenant's media alert unless
-- it is on, recent, and was not unreadable for long (`media_unreadable_since`: the first
-- of the unreadable readings in a row).
ALTER TABLE instances
    ADD COLUMN media_bucket text,
    ADD COLUMN media_bucket_since timestamptz,
    ADD COLUMN media_versioning text
        CHECK (media_versioning IN ('enabled', 'suspended', 'off', 'unreadable')),
    ADD COLUMN media_versioning_message text,
    ADD COLUMN media_versioning_checked_at timestamptz,
    ADD COLUMN media_unreadable_since timestamptz,
    ADD CONSTRAINT instances_media_versioning_read CHECK (
        (media_bucket IS NULL) = (media_bucket_since IS NULL)
        AND (media_versioning IS NULL) = (media_versioning_checked_at IS NULL)
        AND (media_versioning IS NULL OR media_bucket IS NOT NULL)
        AND ((media_versioning = 'unreadable') = (media_unreadable_since IS NOT NULL))
    );

-- Two alerts may be open at once: one on the database's backups (missed, failed) and one
-- on the media in object storage, so that a standing media alert never hides a failed
-- backup (each is emailed when it opens).
ALTER TABLE tenant_backup_alerts
    DROP CONSTRAINT tenant_backup_alerts_kind_check,
    ADD CONSTRAINT tenant_backup_alerts_kind_check
        CHECK (kind IN ('missed', 'failed', 'media_unprotected'));
DROP INDEX tenant_backup_alerts_open_idx;
CREATE UNIQUE INDEX tenant_backup_alerts_open_idx
    ON tenant_backup_alerts (instance_id, (kind = 'media_unprotected'))
    WHERE closed_at IS NULL;
