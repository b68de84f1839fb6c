-- Foundation: accounts, organizations, memberships, invitations, one-time tokens,
-- login throttling, the plan catalogue and the audit log.

CREATE TABLE users (
    id                uuid PRIMARY KEY,
    email             text NOT NULL UNIQUE CHECK (email = lower(email)),
    display_name      text NOT NULL,
    password_hash     text NOT NULL,
    email_verified_at timestamptz,
    is_operator       boolean NOT NULL DEFAULT false,
    -- TOTP secret (base32) while enrolling or enrolled; enabled once confirmed with a code.
    totp_secret       text,
    totp_enabled_at   timestamptz,
    -- Last accepted TOTP time step, so a code cannot be replayed.
    totp_last_step    bigint,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE totp_recovery_codes (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

CREATE TABLE organizations (
    id         uuid PRIMARY KEY,
    slug       text NOT NULL UNIQUE,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE memberships (
    org_id     uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'billing', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE invitations (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email       text NOT NULL CHECK (email = lower(email)),
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'billing', 'member')),
    token_hash  bytea NOT NULL UNIQUE,
    invited_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    expires_at  timestamptz NOT NULL,
    accepted_at timestamptz,
    accepted_by uuid REFERENCES users (id) ON DELETE SET NULL,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- One open invitation per address and organization.
CREATE UNIQUE INDEX invitations_open_idx ON invitations (org_id, email)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;

-- Single-use, expiring tokens sent by email. Only a SHA-256 of the token is stored.
CREATE TABLE user_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_tokens_user_idx ON user_tokens (user_id, purpose);

CREATE TABLE login_attempts (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email     text NOT NULL,
    source_ip text NOT NULL,
    succeeded boolean NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_attempts_email_idx ON login_attempts (email, at);
CREATE INDEX login_attempts_ip_idx ON login_attempts (source_ip, at);

CREATE TABLE plans (
    id                         uuid PRIMARY KEY,
    code                       text NOT NULL UNIQUE,
    name                       text NOT NULL,
    description                text NOT NULL DEFAULT '',
    price_minor                bigint NOT NULL CHECK (price_minor >= 0),
    currency                   text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    billing_interval           text NOT NULL CHECK (billing_interval IN ('month', 'year')),
    max_active_users           integer NOT NULL CHECK (max_active_users > 0),
    media_storage_gb           integer NOT NULL CHECK (media_storage_gb > 0),
    custom_domain              boolean NOT NULL,
    support_response_hours     integer NOT NULL CHECK (support_response_hours > 0),
    moderation_hours_per_month integer NOT NULL CHECK (moderation_hours_per_month >= 0),
    compute_size               text NOT NULL CHECK (compute_size IN ('small', 'medium', 'large')),
    provider_price_id          text,
    active                     boolean NOT NULL DEFAULT true,
    sort_order                 integer NOT NULL DEFAULT 0,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

-- Append-only record of every state-changing action. No foreign keys: entries outlive
-- the users and organizations they mention.
CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_id    uuid,
    actor_email text,
    org_id      uuid,
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    source_ip   text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_at_idx ON audit_log (at DESC);
CREATE INDEX audit_log_org_idx ON audit_log (org_id, at DESC);
CREATE INDEX audit_log_action_idx ON audit_log (action, at DESC);
