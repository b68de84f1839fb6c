-- What billing means for each tenant's server (herd_domain::access), per billing subject
-- (a Stripe subscription, later an invoice contract), with operators' overrides, and every
-- change of state.

CREATE TABLE tenant_access (
    subject          text PRIMARY KEY,           -- 'stripe:sub_…'
    org_id           uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    channel          text NOT NULL CHECK (channel IN ('card', 'invoice')),
    state            text NOT NULL CHECK (state IN ('not_provisioned', 'running', 'grace', 'suspended', 'scheduled_for_deletion', 'deleted')),
    next_state       text,
    next_at          timestamptz,
    -- Operators' overrides.
    grace_until      timestamptz,
    paused_since     timestamptz,
    paused_before_s  bigint NOT NULL DEFAULT 0 CHECK (paused_before_s >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_access_org_idx ON tenant_access (org_id);

CREATE TABLE access_transitions (
    id         uuid PRIMARY KEY,
    subject    text NOT NULL REFERENCES tenant_access (subject) ON DELETE CASCADE,
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    from_state text NOT NULL,
    to_state   text NOT NULL,
    next_state text,
    next_at    timestamptz,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX access_transitions_subject_idx ON access_transitions (subject, at);
