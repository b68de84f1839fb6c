-- Managed moderation, what was left of issue 13: time logged on a report without a
-- decision, the overdue alert sent once per report (again only after it is reopened),
-- and which operators may manage operators (and so give or take the moderator role).

-- Minutes a moderator spent on a report without deciding; counted in the month's hours
-- with the decisions' minutes.
CREATE TABLE moderation_time_entries (
    id            uuid PRIMARY KEY,
    report_id     uuid NOT NULL REFERENCES moderation_reports (id) ON DELETE CASCADE,
    minutes       integer NOT NULL CHECK (minutes BETWEEN 1 AND 480),
    note          text NOT NULL DEFAULT '',
    logged_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    logged_by_name text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- The time form's one-time token: the same form posted twice is counted once.
    submission    uuid UNIQUE
);
CREATE INDEX moderation_time_entries_report_idx ON moderation_time_entries (report_id, created_at);
CREATE INDEX moderation_time_entries_month_idx ON moderation_time_entries (created_at);

-- When the moderators were emailed that this report passed its due time; cleared when
-- the report is reopened, so that it is alerted again only then.
ALTER TABLE moderation_reports ADD COLUMN overdue_alerted_at timestamptz;
CREATE INDEX moderation_reports_overdue_idx ON moderation_reports (due_at)
    WHERE state = 'open' AND overdue_alerted_at IS NULL;

-- Herd's public address when the server was connected: the overdue digest's links.
ALTER TABLE moderation_connections ADD COLUMN base_url text NOT NULL DEFAULT '';

-- When the personal data of a deleted server's reports was erased (comments, accounts,
-- statuses, notes); what the monthly counts need stays.
ALTER TABLE moderation_reports ADD COLUMN erased_at timestamptz;

-- Operators who may manage operators: only they give and take the moderator role.
-- On an existing install only the oldest operator gets it; the others are given it with
-- `herd admin set-operator EMAIL --manages-operators true` (new ones with
-- `herd admin create-operator --manages-operators`).
ALTER TABLE users ADD COLUMN manages_operators boolean NOT NULL DEFAULT false;
UPDATE users SET manages_operators = true
 WHERE id = (SELECT id FROM users WHERE is_operator ORDER BY created_at, id LIMIT 1);
