-- Managed moderation's moderator account, made on the server by a Job (issue 13): the
-- control plane asks for token number `moderator_token_generation` (sent in the
-- Instance's spec.moderator), the cluster reports the one it has done (or that its Job
-- failed), and the new token is collected from the tenant's Secret, sealed into the
-- server's moderation connection, and the Secret deleted. `revoked`: the generation
-- asked only revokes Herd's earlier tokens on the server (no new one).
ALTER TABLE instances
    ADD COLUMN moderator_token_generation integer NOT NULL DEFAULT 0
        CHECK (moderator_token_generation >= 0),
    ADD COLUMN moderator_token_revoked boolean NOT NULL DEFAULT false,
    ADD COLUMN moderator_token_done_generation integer NOT NULL DEFAULT 0
        CHECK (moderator_token_done_generation >= 0),
    ADD COLUMN moderator_token_failed_generation integer NOT NULL DEFAULT 0
        CHECK (moderator_token_failed_generation >= 0),
    ADD COLUMN moderator_token_failure text,
    -- The last generation whose Secret is collected and deleted from the cluster.
    ADD COLUMN moderator_token_collected_generation integer NOT NULL DEFAULT 0
        CHECK (moderator_token_collected_generation >= 0);

-- Which token a connection holds: the generation Herd made (NULL: pasted by the owner or
-- an admin). A connection made by Herd has no user who connected it.
ALTER TABLE moderation_connections ADD COLUMN token_generation integer
    CHECK (token_generation > 0);
