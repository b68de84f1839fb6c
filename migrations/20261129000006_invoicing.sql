-- Invoice billing for institutions: a contract per organization, invoices issued on
-- schedule with a gap-free number per year, and payments recorded by operators.

CREATE TABLE contracts (
    id                 uuid PRIMARY KEY,
    org_id             uuid NOT NULL UNIQUE REFERENCES organizations (id) ON DELETE CASCADE,
    plan_code          text NOT NULL,
    price_minor        bigint NOT NULL CHECK (price_minor >= 0),
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    period             text NOT NULL CHECK (period IN ('month', 'quarter', 'year')),
    payment_terms_days integer NOT NULL CHECK (payment_terms_days BETWEEN 0 AND 120),
    po_reference       text NOT NULL DEFAULT '',
    billing_address    text NOT NULL,
    vat_id             text NOT NULL DEFAULT '',
    starts_on          date NOT NULL,
    next_invoice_on    date NOT NULL,
    ends_on            date,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- The last number used per year; incremented in the issuing transaction, so a rolled-back
-- issue leaves no gap.
CREATE TABLE invoice_numbers (
    year integer PRIMARY KEY,
    last integer NOT NULL CHECK (last > 0)
);

CREATE TABLE invoices (
    id                uuid PRIMARY KEY,
    contract_id       uuid NOT NULL REFERENCES contracts (id) ON DELETE RESTRICT,
    org_id            uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    number            text NOT NULL UNIQUE,
    year              integer NOT NULL,
    seq               integer NOT NULL,
    issued_on         date NOT NULL,
    due_on            date NOT NULL,
    period_start      date NOT NULL,
    period_end        date NOT NULL,
    description       text NOT NULL,
    amount_minor      bigint NOT NULL CHECK (amount_minor >= 0),
    currency          text NOT NULL,
    po_reference      text NOT NULL,
    billing_address   text NOT NULL,
    vat_id            text NOT NULL,
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'paid')),
    paid_on           date,
    payment_reference text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (year, seq),
    UNIQUE (contract_id, period_start)
);
CREATE INDEX invoices_org_idx ON invoices (org_id, issued_on DESC);
CREATE INDEX invoices_open_idx ON invoices (due_on) WHERE status = 'open';
