-- A domain belongs to the server that proved it (or that needed no proof), not to the first
-- order that named it: an order for someone else's domain waits for a record it can never
-- get, and must not keep the domain's holder from ordering it.
ALTER TABLE instances DROP CONSTRAINT instances_domain_key;
CREATE UNIQUE INDEX instances_domain_key ON instances (domain) WHERE domain_verified_at IS NOT NULL;
CREATE INDEX instances_domain_idx ON instances (domain);
