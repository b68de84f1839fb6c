-- The support desk's operator tools: ticket numbers people can quote, merged duplicates,
-- and canned replies.

-- A short number for each ticket ("#1234"), in opening order; existing tickets are
-- numbered when the column is added.
ALTER TABLE tickets ADD COLUMN number bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE tickets ADD CONSTRAINT tickets_number_key UNIQUE (number);

-- A duplicate merged into another ticket of its organization: closed, its messages shown
-- on the ticket it was merged into (to those who could see it), never reopened.
ALTER TABLE tickets ADD COLUMN merged_into uuid REFERENCES tickets (id) ON DELETE SET NULL;
ALTER TABLE tickets ADD COLUMN merged_at timestamptz;
ALTER TABLE tickets ADD CONSTRAINT tickets_merged_check CHECK (merged_into <> id);
CREATE INDEX tickets_merged_into_idx ON tickets (merged_into) WHERE merged_into IS NOT NULL;

-- Answers operators reuse; {{placeholders}} are filled when one is inserted into a reply.
CREATE TABLE canned_replies (
    id         uuid PRIMARY KEY,
    title      text NOT NULL CHECK (title <> ''),
    body       text NOT NULL CHECK (body <> ''),
    -- The tickets it suits best (listed first for them); NULL: any ticket.
    category   text CHECK (category IN ('technical', 'billing', 'moderation', 'abuse', 'account', 'other')),
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    updated_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX canned_replies_title_key ON canned_replies (lower(title));
