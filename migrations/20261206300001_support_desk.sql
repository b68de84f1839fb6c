-- The support desk: each plan's support tier, tickets, their messages, the events the
-- SLA clock is computed from, and satisfaction ratings.

-- A plan's support tier (plans without a row get the default tier derived from
-- plans.support_response_hours). Targets are minutes of support hours, per priority
-- (low, normal, high, urgent).
CREATE TABLE plan_support_tiers (
    plan_code              text PRIMARY KEY REFERENCES plans (code) ON UPDATE CASCADE ON DELETE CASCADE,
    urgent_allowed         boolean NOT NULL DEFAULT false,
    around_the_clock       boolean NOT NULL DEFAULT false,
    business_start_minute  integer NOT NULL DEFAULT 540 CHECK (business_start_minute BETWEEN 0 AND 1439),
    business_end_minute    integer NOT NULL DEFAULT 1020 CHECK (business_end_minute BETWEEN 1 AND 1440),
    time_zone              text NOT NULL DEFAULT 'UTC',
    first_response_minutes integer[] NOT NULL CHECK (cardinality(first_response_minutes) = 4),
    resolution_minutes     integer[] NOT NULL CHECK (cardinality(resolution_minutes) = 4),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (business_start_minute < business_end_minute)
);

CREATE TABLE tickets (
    id                      uuid PRIMARY KEY,
    org_id                  uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    opener_id               uuid REFERENCES users (id) ON DELETE SET NULL,
    subject                 text NOT NULL,
    category                text NOT NULL CHECK (category IN ('technical', 'billing', 'moderation', 'abuse', 'account', 'other')),
    priority                text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    status                  text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'open', 'waiting_on_customer', 'resolved', 'closed')),
    instance_id             uuid REFERENCES instances (id) ON DELETE SET NULL,
    shared_with_org         boolean NOT NULL DEFAULT false,
    assignee_id             uuid REFERENCES users (id) ON DELETE SET NULL,
    -- The plan whose tier the SLA follows now (NULL: the organization has none).
    plan_code               text,
    first_response_due      timestamptz,
    first_response_at       timestamptz,
    resolution_due          timestamptz,
    -- The sooner of the due times still running, for the queue's order (NULL while
    -- paused, resolved or closed).
    next_due                timestamptz,
    first_response_breached boolean NOT NULL DEFAULT false,
    resolution_breached     boolean NOT NULL DEFAULT false,
    resolved_at             timestamptz,
    closed_at               timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tickets_org_idx ON tickets (org_id, created_at DESC);
CREATE INDEX tickets_queue_idx ON tickets (next_due NULLS LAST, created_at)
    WHERE status IN ('new', 'open', 'waiting_on_customer');
CREATE INDEX tickets_assignee_idx ON tickets (assignee_id) WHERE assignee_id IS NOT NULL;
CREATE INDEX tickets_resolved_idx ON tickets (resolved_at) WHERE status = 'resolved';

CREATE TABLE ticket_messages (
    id            uuid PRIMARY KEY,
    ticket_id     uuid NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    author_id     uuid REFERENCES users (id) ON DELETE SET NULL,
    author_name   text NOT NULL,
    from_operator boolean NOT NULL,
    -- An operator's note to colleagues: never shown to the customer, never emailed.
    internal      boolean NOT NULL DEFAULT false,
    from_email    boolean NOT NULL DEFAULT false,
    body          text NOT NULL CHECK (body <> ''),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (from_operator OR NOT internal)
);
CREATE INDEX ticket_messages_ticket_idx ON ticket_messages (ticket_id, created_at);

-- What the SLA clock is computed from (the opening is the ticket's created_at).
CREATE TABLE ticket_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id uuid NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    kind      text NOT NULL CHECK (kind IN ('status', 'priority', 'plan', 'first_response')),
    status    text CHECK (status IN ('new', 'open', 'waiting_on_customer', 'resolved', 'closed')),
    priority  text CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    plan_code text,
    CHECK ((kind = 'status') = (status IS NOT NULL)),
    CHECK ((kind = 'priority') = (priority IS NOT NULL))
);
CREATE INDEX ticket_events_ticket_idx ON ticket_events (ticket_id, at, id);

CREATE TABLE ticket_ratings (
    ticket_id  uuid PRIMARY KEY REFERENCES tickets (id) ON DELETE CASCADE,
    score      smallint NOT NULL CHECK (score BETWEEN 1 AND 5),
    comment    text NOT NULL DEFAULT '',
    rated_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
