-- An export may carry the server's app secrets (SECRET_KEY_BASE, OTP_SECRET, …), sealed by
-- the cluster's operator to an age X25519 recipient the organization's owner gave when
-- asking for it (issue 12: a customer takes their data away, and a Mastodon database is
-- unreadable in part without its secrets). Only the public recipient is kept here.
ALTER TABLE tenant_exports
    ADD COLUMN secrets_recipient text
        CHECK (secrets_recipient ~ '^age1[02-9ac-hj-np-z]{58}$');
