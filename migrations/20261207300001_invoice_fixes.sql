-- Review fixes to invoices (issue 10).

-- 1. Amounts in each currency's own minor unit. Before 20261207100001 every price was read
-- with two decimals, so a JPY price typed "1200" was stored as 120000 and a KWD "1.234"
-- could not be typed at all ("1.23" was stored as 123). Stored amounts of currencies
-- without two decimals are rescaled to what was typed (rounded half up): plans,
-- contracts, and issued invoices (which said the same amount in the old reading).
CREATE FUNCTION pg_temp.rescaled(amount bigint, currency text) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN currency IN ('BIF', 'CLP', 'DJF', 'GNF', 'ISK', 'JPY', 'KMF', 'KRW', 'PYG', 'RWF',
                          'UGX', 'UYI', 'VND', 'VUV', 'XAF', 'XOF', 'XPF')
            THEN round(amount / 100.0)::bigint
        WHEN currency IN ('BHD', 'IQD', 'JOD', 'KWD', 'LYD', 'OMR', 'TND') THEN amount * 10
        WHEN currency IN ('CLF', 'UYW') THEN amount * 100
        ELSE amount
    END
$$;

UPDATE plans SET price_minor = pg_temp.rescaled(price_minor, currency)
    WHERE pg_temp.rescaled(price_minor, currency) <> price_minor;
UPDATE contracts SET price_minor = pg_temp.rescaled(price_minor, currency)
    WHERE pg_temp.rescaled(price_minor, currency) <> price_minor;

ALTER TABLE invoices DISABLE TRIGGER invoices_frozen;
UPDATE invoices SET
    amount_minor = pg_temp.rescaled(amount_minor, currency),
    gross_minor = pg_temp.rescaled(amount_minor, currency),
    tax_minor = pg_temp.rescaled(tax_minor, currency),
    net_minor = pg_temp.rescaled(amount_minor, currency) - pg_temp.rescaled(tax_minor, currency)
    WHERE pg_temp.rescaled(amount_minor, currency) <> amount_minor;
ALTER TABLE invoices ENABLE TRIGGER invoices_frozen;

-- 2. An issued invoice's payment, once recorded, is final too; and the table cannot be
-- emptied with TRUNCATE (which row triggers do not see).
CREATE OR REPLACE FUNCTION invoices_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF OLD.status = 'paid' AND to_jsonb(NEW) IS DISTINCT FROM to_jsonb(OLD) THEN
        RAISE EXCEPTION 'invoice % is paid: its payment is recorded and does not change', OLD.number
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION invoices_not_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'issued invoices cannot be truncated away'
        USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER invoices_not_truncated BEFORE TRUNCATE ON invoices
    FOR EACH STATEMENT EXECUTE FUNCTION invoices_not_truncated();
