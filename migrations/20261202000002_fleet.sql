-- Orchestration (herd-fleet): the clusters tenants run on, the hosted servers
-- ("instances") the control plane manages, and each instance's history.

-- Where an organization would like its servers to run (a cluster region), if anywhere.
ALTER TABLE organizations ADD COLUMN preferred_region text;

-- Why a paid order has no server (its domain was taken meanwhile, say): shown on the
-- order's page and to operators, who sort it out.
ALTER TABLE orders ADD COLUMN problem text;

-- Ordering without a card: an order paid by invoice waits for an operator's approval
-- (or is approved at once when the provider says so), which makes the contract.
ALTER TABLE orders ADD COLUMN payment text NOT NULL DEFAULT 'card' CHECK (payment IN ('card', 'invoice'));
ALTER TABLE orders ADD COLUMN billing_address text;
ALTER TABLE orders ADD COLUMN vat_id text;
ALTER TABLE orders ADD COLUMN po_reference text;
ALTER TABLE orders ADD CONSTRAINT orders_invoice_has_address
    CHECK (payment <> 'invoice' OR billing_address IS NOT NULL);
CREATE INDEX orders_awaiting_idx ON orders (created_at) WHERE payment = 'invoice' AND state = 'pending';

CREATE TABLE clusters (
    id                    uuid PRIMARY KEY,
    name                  text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
    region                text NOT NULL CHECK (region ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
    -- The kubeconfig, encrypted with the key in HERD_ENCRYPTION_KEY (XChaCha20-Poly1305,
    -- nonce first). NULL: the in-cluster service account's credentials.
    kubeconfig_sealed     bytea,
    -- The namespace the operator watches for Instances there.
    operator_namespace    text NOT NULL DEFAULT 'herd-system',
    -- How many tenants it may run.
    capacity              integer NOT NULL DEFAULT 100 CHECK (capacity >= 0),
    cordoned              boolean NOT NULL DEFAULT false,
    health                text NOT NULL DEFAULT 'unknown'
                          CHECK (health IN ('unknown', 'healthy', 'unreachable', 'crd_missing')),
    health_message        text,
    kubernetes_version    text,
    operator_version      text,
    checked_at            timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instances (
    id                    uuid PRIMARY KEY,
    org_id                uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    -- The order it came from; one instance per order.
    order_id              uuid UNIQUE REFERENCES orders (id) ON DELETE SET NULL,
    app                   text NOT NULL CHECK (app IN ('mastodon', 'gotosocial')),
    version               text NOT NULL,
    plan_code             text NOT NULL,
    -- Its short name: the Instance is named so, its namespace is herd-<slug>.
    slug                  text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
    domain                text NOT NULL UNIQUE,
    owner_username        text NOT NULL,
    owner_email           text NOT NULL,
    cluster_id            uuid REFERENCES clusters (id) ON DELETE RESTRICT,
    placed_at             timestamptz,
    desired               text NOT NULL DEFAULT 'running' CHECK (desired IN ('running', 'suspended', 'deleted')),
    -- Suspended by the billing access policy (unpaid): only the policy (or an operator)
    -- resumes it, when the payment arrives.
    billing_hold          boolean NOT NULL DEFAULT false,
    phase                 text NOT NULL DEFAULT 'queued'
                          CHECK (phase IN ('queued', 'provisioning', 'running', 'upgrading',
                                           'suspended', 'deleting', 'deleted', 'failed')),
    -- Why it waits, in words ("queued: no cluster connected").
    phase_message         text,
    phase_since           timestamptz NOT NULL DEFAULT now(),
    -- Per component: [{type, status, reason, message}], as the operator reports them.
    conditions            jsonb NOT NULL DEFAULT '[]',
    url                   text,
    running_version       text,
    last_error            text,
    -- Bumped by every change of what the instance should be; the apply job sends it and
    -- records which generation the cluster has.
    spec_generation       bigint NOT NULL DEFAULT 1,
    applied_generation    bigint NOT NULL DEFAULT 0,
    synced_at             timestamptz,
    -- The owner's one-time password, taken from the cluster once the owner account exists
    -- and sealed with HERD_ENCRYPTION_KEY until it is shown (once) and wiped.
    owner_password_sealed bytea,
    owner_password_revealed_at timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_org_idx ON instances (org_id, created_at DESC);
CREATE INDEX instances_cluster_idx ON instances (cluster_id);
CREATE INDEX instances_phase_idx ON instances (phase, phase_since);

-- What happened to an instance: phases it went through and actions taken on it.
CREATE TABLE instance_events (
    id          uuid PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL CHECK (kind IN ('phase', 'action', 'error')),
    message     text NOT NULL,
    actor_id    uuid REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX instance_events_idx ON instance_events (instance_id, at DESC);
