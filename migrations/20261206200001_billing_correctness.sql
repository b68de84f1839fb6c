-- A payment that arrives after a subject's servers were deleted is told once that a new
-- order is needed (deletion is final).
ALTER TABLE tenant_access ADD COLUMN paid_after_deletion_at timestamptz;

-- The order form's one-time token: a double submission finds the order the first made.
ALTER TABLE orders ADD COLUMN submission uuid;
ALTER TABLE orders ADD CONSTRAINT orders_submission_key UNIQUE (org_id, submission);

-- Where a contract's current billing period started counting: a period change after
-- invoices were issued starts the new period where the last issued invoice ended, never
-- re-billing or skipping a period. `anchor_count` invoices were issued before it.
-- A NULL anchor is the contract's start.
ALTER TABLE contracts ADD COLUMN period_anchor date;
ALTER TABLE contracts ADD COLUMN anchor_count integer NOT NULL DEFAULT 0;
