-- Tries at the second factor (a TOTP code or a recovery code, after the password), counted
-- per account on their own: a correct password never resets them.
CREATE TABLE second_factor_attempts (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id   uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source_ip text NOT NULL,
    succeeded boolean NOT NULL DEFAULT false,
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX second_factor_attempts_user_idx ON second_factor_attempts (user_id, at);
