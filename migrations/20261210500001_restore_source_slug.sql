-- A restore keeps the slug of the tenant whose backup it reads (issue 12): the operator
-- reads only backups under that slug (spec.restore.sourceTenant), and a purged source
-- loses its row (source_instance_id becomes NULL), which must not turn a restore of its
-- backup into a read of the new tenant's own backups, refused.
ALTER TABLE tenant_restores ADD COLUMN source_slug text;

UPDATE tenant_restores r SET source_slug = i.slug
    FROM instances i WHERE i.id = r.source_instance_id;

-- Filled from the source when the restore is asked, whoever inserts it (a restore from
-- the console, a drill).
CREATE FUNCTION tenant_restores_source_slug() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.source_slug IS NULL AND NEW.source_instance_id IS NOT NULL THEN
        SELECT slug INTO NEW.source_slug FROM instances WHERE id = NEW.source_instance_id;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tenant_restores_source_slug BEFORE INSERT ON tenant_restores
    FOR EACH ROW EXECUTE FUNCTION tenant_restores_source_slug();
