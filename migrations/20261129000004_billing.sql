-- Billing: the job queue, Stripe's webhook events, customers, orders and subscriptions.

-- Work that must survive a crash. Workers claim jobs with FOR UPDATE SKIP LOCKED; a job
-- whose worker died is taken again once its lock expires.
CREATE TABLE jobs (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}',
    -- A job with a key is enqueued once (one per Stripe event, say).
    dedupe_key   text UNIQUE,
    state        text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 10 CHECK (max_attempts > 0),
    run_at       timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX jobs_due_idx ON jobs (run_at) WHERE state IN ('queued', 'running');

-- Every verified Stripe event, stored before it is acknowledged. The raw body is kept as
-- received; ids of the objects it concerns are extracted at ingestion for processing.
CREATE TABLE stripe_events (
    id              text PRIMARY KEY CHECK (id LIKE 'evt_%'),
    type            text NOT NULL,
    livemode        boolean NOT NULL,
    -- Stripe's own time of the event.
    created         timestamptz NOT NULL,
    payload         text NOT NULL,
    subscription_id text,
    customer_id     text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    deliveries      integer NOT NULL DEFAULT 1,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'processed', 'ignored', 'failed')),
    processed_at    timestamptz,
    last_error      text
);
CREATE INDEX stripe_events_subscription_idx ON stripe_events (subscription_id, created);
CREATE INDEX stripe_events_received_idx ON stripe_events (received_at DESC);
CREATE INDEX stripe_events_state_idx ON stripe_events (state) WHERE state <> 'processed';

-- One Stripe customer per organization, created when first needed.
CREATE TABLE billing_customers (
    org_id             uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    stripe_customer_id text NOT NULL UNIQUE,
    created_at         timestamptz NOT NULL DEFAULT now()
);

-- An order from the portal: what the organization asked for, and how far it got.
CREATE TABLE orders (
    id                     uuid PRIMARY KEY,
    org_id                 uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    plan_code              text NOT NULL,
    app                    text NOT NULL CHECK (app IN ('mastodon', 'gotosocial')),
    domain                 text NOT NULL,
    state                  text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'fulfilled', 'abandoned')),
    checkout_session_id    text UNIQUE,
    stripe_subscription_id text,
    created_by             uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    fulfilled_at           timestamptz
);
CREATE INDEX orders_org_idx ON orders (org_id, created_at DESC);

-- A Stripe subscription as Herd last understood it: always recomputed from every stored
-- event of the subscription, in Stripe's order, so delivery order and duplicates do not
-- matter.
CREATE TABLE subscriptions (
    stripe_subscription_id text PRIMARY KEY,
    stripe_customer_id     text NOT NULL,
    org_id                 uuid REFERENCES organizations (id) ON DELETE SET NULL,
    order_id               uuid REFERENCES orders (id) ON DELETE SET NULL,
    status                 text NOT NULL,
    -- When the subscription entered its current status (Stripe's event time).
    status_since           timestamptz NOT NULL,
    price_id               text,
    plan_code              text,
    current_period_end     timestamptz,
    cancel_at_period_end   boolean NOT NULL DEFAULT false,
    -- The latest invoice: paid, open with a failed payment, or needing the customer's action.
    latest_invoice_id      text,
    latest_invoice_status  text,
    payment_problem        text CHECK (payment_problem IN ('payment_failed', 'action_required')),
    trial_end              timestamptz,
    -- Stripe's time of the newest event applied.
    source_time            timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_org_idx ON subscriptions (org_id);
