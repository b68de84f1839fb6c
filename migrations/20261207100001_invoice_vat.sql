-- VAT on invoices, and issued invoices that never change (issue 10).

-- The customer's country (ISO 3166-1 alpha-2), which the VAT of its invoices depends on;
-- '' when not recorded (contracts made before, or from an order): their invoices say that
-- VAT was not computed.
ALTER TABLE contracts ADD COLUMN country text NOT NULL DEFAULT ''
    CHECK (country = '' OR country ~ '^[A-Z]{2}$');

-- Who Herd's invoices are issued by: HERD_INVOICE_ISSUER, HERD_INVOICE_ISSUER_COUNTRY and
-- HERD_INVOICE_ISSUER_VAT_ID as `herd serve` last started with. Issuing reads it in its
-- transaction, so invoices issued by a separate `herd worker` name the same issuer.
CREATE TABLE invoice_issuer (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    details     text NOT NULL,
    country     text NOT NULL CHECK (country = '' OR country ~ '^[A-Z]{2}$'),
    vat_id      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- What an invoice says, copied when it is issued: the issuer, the customer's name and
-- country (its address, VAT id and purchase order were copied already), and the lines'
-- net, VAT and gross amounts. `amount_minor` stays the amount due (the gross).
ALTER TABLE invoices
    ADD COLUMN issuer           text NOT NULL DEFAULT '',
    ADD COLUMN issuer_vat_id    text NOT NULL DEFAULT '',
    ADD COLUMN customer_name    text NOT NULL DEFAULT '',
    ADD COLUMN customer_country text NOT NULL DEFAULT '',
    ADD COLUMN net_minor        bigint,
    ADD COLUMN tax_minor        bigint,
    ADD COLUMN gross_minor      bigint,
    ADD COLUMN vat_rate_bp      integer NOT NULL DEFAULT 0 CHECK (vat_rate_bp BETWEEN 0 AND 10000),
    ADD COLUMN tax_treatment    text NOT NULL DEFAULT 'not_computed' CHECK (tax_treatment IN
        ('domestic', 'reverse_charge', 'destination_rate', 'outside_scope', 'not_computed')),
    ADD COLUMN tax_note         text NOT NULL DEFAULT '';

-- Invoices issued before carry no VAT: their amount is both net and gross. The customer's
-- name is the organization's as it is now (the best known); the issuer was never stored.
UPDATE invoices SET net_minor = amount_minor, tax_minor = 0, gross_minor = amount_minor,
    tax_note = 'VAT not computed: issued before Herd computed VAT';
UPDATE invoices i SET customer_name = o.name FROM organizations o WHERE o.id = i.org_id;

-- An invoice written with its amount only (as before) has no VAT: net = gross = amount.
CREATE FUNCTION invoices_default_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tax_minor := coalesce(NEW.tax_minor, 0);
    NEW.gross_minor := coalesce(NEW.gross_minor, NEW.amount_minor);
    NEW.net_minor := coalesce(NEW.net_minor, NEW.gross_minor - NEW.tax_minor);
    RETURN NEW;
END $$;
CREATE TRIGGER invoices_default_totals BEFORE INSERT ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_default_totals();

ALTER TABLE invoices
    ALTER COLUMN net_minor SET NOT NULL,
    ALTER COLUMN tax_minor SET NOT NULL,
    ALTER COLUMN gross_minor SET NOT NULL,
    ADD CONSTRAINT invoices_totals CHECK (
        tax_minor >= 0 AND net_minor + tax_minor = gross_minor AND gross_minor = amount_minor);

-- An issued invoice never changes: only its payment (status, paid_on, payment_reference)
-- is recorded later, and it is never deleted (its number stays taken). Every other column,
-- including any added later, is frozen.
CREATE FUNCTION invoices_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'invoice % is issued: it cannot be deleted', OLD.number
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF to_jsonb(NEW) - 'status' - 'paid_on' - 'payment_reference'
       IS DISTINCT FROM to_jsonb(OLD) - 'status' - 'paid_on' - 'payment_reference' THEN
        RAISE EXCEPTION 'invoice % is issued: only its payment can be recorded, nothing else changes', OLD.number
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER invoices_frozen BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION invoices_frozen();
