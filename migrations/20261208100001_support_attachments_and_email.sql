-- Support tickets' attachments, and replies that come by email.

-- A file attached to a ticket's message. The bytes live in the attachment store
-- (HERD_SUPPORT_ATTACHMENTS_URL: a local directory or an S3 bucket) under storage_key;
-- the row says what they are. content_type is the kind read from the bytes, never the one
-- the sender declared. An attachment is seen by whoever may see its message: a customer
-- never gets one of an internal note.
CREATE TABLE ticket_attachments (
    id           uuid PRIMARY KEY,
    ticket_id    uuid NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    message_id   uuid NOT NULL REFERENCES ticket_messages (id) ON DELETE CASCADE,
    file_name    text NOT NULL CHECK (file_name <> '' AND char_length(file_name) <= 200),
    size_bytes   bigint NOT NULL CHECK (size_bytes > 0),
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type text NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg', 'image/gif',
                                                       'image/webp', 'application/pdf',
                                                       'application/zip', 'text/plain')),
    storage_key  text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ticket_attachments_ticket_idx ON ticket_attachments (ticket_id, created_at);
CREATE INDEX ticket_attachments_message_idx ON ticket_attachments (message_id);

-- The Message-ID of an email a message came from: the same email is never added twice,
-- however often the mail server delivers it.
ALTER TABLE ticket_messages ADD COLUMN email_message_id text;
CREATE UNIQUE INDEX ticket_messages_email_message_id_key ON ticket_messages (email_message_id)
    WHERE email_message_id IS NOT NULL;
