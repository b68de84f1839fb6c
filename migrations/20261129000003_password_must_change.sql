-- Accounts created with a generated one-time password (operators from the CLI) must choose
-- their own at first login.
ALTER TABLE users ADD COLUMN password_must_change boolean NOT NULL DEFAULT false;
