-- Managed moderation's moderator account, review fixes (issue 13):
-- `moderator_token_asked_at`: when the current generation was asked (an ask older than an
-- hour whose token never arrived may be asked again); `moderator_revoked_by_customer`: the
-- customer revoked the connection, so no plan change asks for Herd's account again until
-- the customer asks (or pastes a token).
ALTER TABLE instances
    ADD COLUMN moderator_token_asked_at timestamptz,
    ADD COLUMN moderator_revoked_by_customer boolean NOT NULL DEFAULT false;

-- Generations in flight when this lands: asked at their last update (not "late" at once).
UPDATE instances SET moderator_token_asked_at = updated_at
    WHERE moderator_token_generation > moderator_token_done_generation
      AND moderator_token_generation > moderator_token_failed_generation;

-- Customers who revoked before this landed keep their revocation across plan changes
-- (until now only a customer revoked a connection).
UPDATE instances i SET moderator_revoked_by_customer = true
    FROM moderation_connections c
    WHERE c.instance_id = i.id AND c.revoked_at IS NOT NULL;
