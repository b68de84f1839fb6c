-- Who among the operators may moderate (managed in the console, audited), and what each
-- plan includes of managed moderation. A plan without a row is moderated when its
-- `moderation_hours_per_month` is above 0, with a response target of 24 hours.

CREATE TABLE operator_moderators (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    granted_by uuid REFERENCES users (id) ON DELETE SET NULL,
    granted_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE plan_moderation (
    plan_code             text PRIMARY KEY REFERENCES plans (code) ON UPDATE CASCADE ON DELETE CASCADE,
    included              boolean NOT NULL,
    monthly_hours         integer NOT NULL CHECK (monthly_hours BETWEEN 0 AND 10000),
    response_target_hours integer NOT NULL CHECK (response_target_hours BETWEEN 1 AND 720),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
