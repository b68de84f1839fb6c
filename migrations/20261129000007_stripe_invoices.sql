-- Stripe's invoices as their events report them, for the customer's invoice list (with the
-- hosted invoice link). Newer facts win: (Stripe's event time, event-type rank).
CREATE TABLE stripe_invoices (
    stripe_invoice_id  text PRIMARY KEY,
    subscription_id    text,
    customer_id        text,
    number             text,
    status             text,
    amount_due         bigint NOT NULL DEFAULT 0,
    currency           text NOT NULL DEFAULT '',
    hosted_invoice_url text,
    created            timestamptz NOT NULL,
    source_time        timestamptz NOT NULL,
    source_rank        integer NOT NULL
);
CREATE INDEX stripe_invoices_customer_idx ON stripe_invoices (customer_id, created DESC);
