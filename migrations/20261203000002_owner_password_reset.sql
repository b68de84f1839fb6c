-- Resetting a server owner's password: the control plane asks for reset number
-- `owner_password_generation` (sent in the Instance's spec); the cluster reports the one it
-- has done, and the new password is collected (sealed) and shown once, as at install.
ALTER TABLE instances
    ADD COLUMN owner_password_generation integer NOT NULL DEFAULT 0 CHECK (owner_password_generation >= 0),
    ADD COLUMN owner_password_done_generation integer NOT NULL DEFAULT 0 CHECK (owner_password_done_generation >= 0);
