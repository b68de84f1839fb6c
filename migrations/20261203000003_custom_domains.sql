-- Domains: a name under the provider's base domain (HERD_BASE_DOMAIN) is ready at once; a
-- custom domain is proven by a DNS TXT record before its server is provisioned (Mastodon's
-- account domain is fixed at creation, so it must be right from the start).

-- Decided when ordering (the web knows the base domain): this order's domain needs no proof.
ALTER TABLE orders ADD COLUMN domain_preverified boolean NOT NULL DEFAULT false;
-- Orders placed before this existed were never told of a DNS record: they go on as before.
UPDATE orders SET domain_preverified = true;

ALTER TABLE instances
    -- The value of the TXT record at _herd-challenge.<domain> that proves it.
    ADD COLUMN domain_token text,
    ADD COLUMN domain_verified_at timestamptz,
    ADD COLUMN domain_checked_at timestamptz;
-- Servers made before this existed were provisioned already: their domains stand.
UPDATE instances SET domain_verified_at = created_at;
CREATE INDEX instances_unverified_idx ON instances (created_at) WHERE domain_verified_at IS NULL;
