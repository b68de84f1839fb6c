-- Managed moderation (herd-moderation): the admin API connection of each moderated
-- server, the customer's versioned policy, reports copied from the server, moderators'
-- decisions, the outbox of actions to send, and escalations to the customer.

-- The moderator account's admin API token on one server. The token is sealed with
-- HERD_ENCRYPTION_KEY (XChaCha20-Poly1305, bound to the instance) and never shown back.
-- Revoked: the owner or an operator took it away (nothing is called any more).
-- Broken: the server refused it (401); shown until a new token is connected.
CREATE TABLE moderation_connections (
    instance_id       uuid PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    moderator_account text NOT NULL CHECK (moderator_account <> ''),
    token_sealed      bytea NOT NULL,
    connected_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    connected_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    broken_at         timestamptz,
    broken_reason     text,
    last_fetch_at     timestamptz,
    last_fetch_error  text,
    -- The server asked us to wait (429) until then.
    rate_limited_until timestamptz
);

-- The customer's policy, one row per version (the newest is in force).
CREATE TABLE moderation_policies (
    instance_id     uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    version         integer NOT NULL CHECK (version > 0),
    house_rules     text NOT NULL,
    remove          text NOT NULL DEFAULT '',
    escalate        text NOT NULL DEFAULT '',
    urgent_contacts text NOT NULL DEFAULT '',
    language        text NOT NULL,
    written_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    written_by_name text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, version)
);

-- A report as the server last showed it, kept so that work survives the server being
-- unreachable.
CREATE TABLE moderation_reports (
    id                  uuid PRIMARY KEY,
    instance_id         uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    remote_id           text NOT NULL,
    state               text NOT NULL DEFAULT 'open'
                        CHECK (state IN ('open', 'escalated', 'resolved', 'vanished')),
    category            text NOT NULL CHECK (category IN ('spam', 'legal', 'violation', 'other')),
    comment             text NOT NULL DEFAULT '',
    forwarded           boolean NOT NULL DEFAULT false,
    reporter_acct       text NOT NULL DEFAULT '',
    target_account_id   text NOT NULL,
    target_acct         text NOT NULL,
    -- [{id, url, content, created_at}] as the server sent them.
    statuses            jsonb NOT NULL DEFAULT '[]',
    -- [{id, text}] of the rules the reporter says were broken.
    rules               jsonb NOT NULL DEFAULT '[]',
    action_taken        boolean NOT NULL DEFAULT false,
    reported_at         timestamptz NOT NULL,
    due_at              timestamptz NOT NULL,
    fetched_at          timestamptz NOT NULL DEFAULT now(),
    vanished_at         timestamptz,
    -- When a decision of ours (or the server's own moderators) settled it.
    resolved_at         timestamptz,
    UNIQUE (instance_id, remote_id)
);
CREATE INDEX moderation_reports_queue_idx ON moderation_reports (due_at) WHERE state = 'open';
CREATE INDEX moderation_reports_instance_idx ON moderation_reports (instance_id, reported_at DESC);

CREATE TABLE moderation_decisions (
    id              uuid PRIMARY KEY,
    report_id       uuid NOT NULL REFERENCES moderation_reports (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('resolve', 'reopen', 'account_action', 'escalate')),
    account_action  text CHECK (account_action IN ('none', 'sensitive', 'disable', 'silence', 'suspend')),
    note            text NOT NULL DEFAULT '',
    notify_user     boolean NOT NULL DEFAULT false,
    -- The policy version in force when it was decided (NULL: none written yet).
    policy_version  integer,
    decided_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    decided_by_name text NOT NULL,
    by_customer     boolean NOT NULL DEFAULT false,
    minutes_spent   integer NOT NULL DEFAULT 0 CHECK (minutes_spent BETWEEN 0 AND 480),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'account_action') = (account_action IS NOT NULL))
);
CREATE INDEX moderation_decisions_report_idx ON moderation_decisions (report_id, created_at);
CREATE INDEX moderation_decisions_month_idx ON moderation_decisions (created_at);

-- An action to send to the server, written with its decision. `first_attempt_at` is set
-- (and committed) before the first call: any later attempt re-reads the report first, so
-- an action the server applied before its answer was lost is not sent again.
CREATE TABLE moderation_outbox (
    decision_id      uuid PRIMARY KEY REFERENCES moderation_decisions (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    first_attempt_at timestamptz,
    sent_at          timestamptz,
    -- true: a retry found it applied on the server already and did not send it again.
    confirmed_by_reread boolean NOT NULL DEFAULT false,
    not_before       timestamptz,
    last_error       text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX moderation_outbox_open_idx ON moderation_outbox (state) WHERE state <> 'sent';

CREATE TABLE moderation_escalations (
    id                   uuid PRIMARY KEY,
    report_id            uuid NOT NULL REFERENCES moderation_reports (id) ON DELETE CASCADE,
    -- The moderator's escalate decision (its note is the question).
    decision_id          uuid NOT NULL UNIQUE REFERENCES moderation_decisions (id) ON DELETE CASCADE,
    state                text NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'decided')),
    customer_decision_id uuid REFERENCES moderation_decisions (id) ON DELETE SET NULL,
    decided_at           timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'decided') = (decided_at IS NOT NULL))
);
-- One open escalation per report.
CREATE UNIQUE INDEX moderation_escalations_waiting_idx ON moderation_escalations (report_id) WHERE state = 'waiting';
