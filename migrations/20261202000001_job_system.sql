-- The job system (herd-jobs): leases carry a token so that only the run holding the lease
-- may record its outcome; jobs that used all their attempts are kept as 'dead' with their
-- last error; operators may cancel a job. Workers are woken by NOTIFY herd_jobs when a job
-- becomes due now, and poll as a fallback.

ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
UPDATE jobs SET state = 'dead' WHERE state = 'failed';
-- Jobs a stopped worker of the previous version held: queued again (they hold no token).
UPDATE jobs SET state = 'queued', locked_until = NULL, run_at = now() WHERE state = 'running';
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('queued', 'running', 'done', 'dead', 'cancelled'));
ALTER TABLE jobs ADD COLUMN lease_token uuid;
ALTER TABLE jobs ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
-- A running job always holds a lease.
ALTER TABLE jobs ADD CONSTRAINT jobs_running_has_lease
    CHECK (state <> 'running' OR (lease_token IS NOT NULL AND locked_until IS NOT NULL));
CREATE INDEX jobs_kind_state_idx ON jobs (kind, state);
CREATE INDEX jobs_attention_idx ON jobs (updated_at DESC)
    WHERE state = 'dead' OR (state = 'queued' AND last_error IS NOT NULL);

CREATE FUNCTION herd_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Delivered at commit; identical notifications of one transaction are folded into one.
    PERFORM pg_notify('herd_jobs', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION herd_jobs_notify();
CREATE TRIGGER jobs_notify_requeue AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state = 'queued' AND OLD.state IS DISTINCT FROM 'queued')
    EXECUTE FUNCTION herd_jobs_notify();
