-- Server lifecycle: the releases the provider offers, each organization's maintenance
-- window, and upgrades scheduled into it.

-- The app releases the provider has tested and offers (image tags). New servers get the
-- newest one; running servers are offered the next step the upgrade rule allows.
CREATE TABLE app_releases (
    app         text NOT NULL CHECK (app IN ('mastodon', 'gotosocial')),
    version     text NOT NULL CHECK (version ~ '^v?[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]*)?$'),
    note        text NOT NULL DEFAULT '',
    created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app, version)
);
INSERT INTO app_releases (app, version, note) VALUES
    ('mastodon', 'v4.7.6', 'Herd''s default at install'),
    ('gotosocial', '0.20.2', 'Herd''s default at install');

-- When upgrades scheduled "in the maintenance window" run: an ISO weekday (1 = Monday)
-- and an hour, in UTC.
ALTER TABLE organizations
    ADD COLUMN maintenance_day smallint NOT NULL DEFAULT 7 CHECK (maintenance_day BETWEEN 1 AND 7),
    ADD COLUMN maintenance_hour smallint NOT NULL DEFAULT 3 CHECK (maintenance_hour BETWEEN 0 AND 23);

-- An upgrade waiting for its time; the worker moves `version` when `upgrade_at` comes.
ALTER TABLE instances
    ADD COLUMN upgrade_to text,
    ADD COLUMN upgrade_at timestamptz,
    ADD CONSTRAINT instances_upgrade_pair CHECK ((upgrade_to IS NULL) = (upgrade_at IS NULL));
CREATE INDEX instances_upgrade_due_idx ON instances (upgrade_at) WHERE upgrade_at IS NOT NULL;
