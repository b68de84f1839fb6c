-- A reset of the owner's password whose Job failed: the server keeps running (the failure
-- is a condition, not a failed tenant), the new password was never set and is not shown,
-- and the owner may ask again.
ALTER TABLE instances
    ADD COLUMN owner_password_failed_generation integer NOT NULL DEFAULT 0
        CHECK (owner_password_failed_generation >= 0),
    ADD COLUMN owner_password_failure text;
