-- Jobs that act on one thing (a Stripe subscription) carry it as their group: a claim
-- takes at most one job per group, and none of a group with a job running. The jobs of
-- one subscription's events queue one behind the other, so the one that runs covers the
-- events stored before it (billing marks their jobs done), instead of eight workers'
-- slots each taking a turn on the same subscription.
ALTER TABLE jobs ADD COLUMN group_key text;
CREATE INDEX jobs_running_group_idx ON jobs (group_key)
    WHERE state = 'running' AND group_key IS NOT NULL;
