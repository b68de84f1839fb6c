-- A restore into a new tenant that is a move: once it succeeds, the new tenant takes the
-- source tenant's order (billing), and the source is left outside billing. Until then
-- the order stays with the source, so a failed or cancelled move changes no billing.
ALTER TABLE tenant_restores ADD COLUMN moves_order boolean NOT NULL DEFAULT false;
