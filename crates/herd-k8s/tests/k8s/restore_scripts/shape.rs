//! Mastodon's schema in small, for the restore scripts' tests and the dump/restore
//! benchmark: accounts, statuses referencing them, media attachments referencing
//! statuses, their sequences and indexes.

pub const TABLES: &str = "
CREATE SEQUENCE accounts_id_seq;
CREATE TABLE accounts (
  id bigint PRIMARY KEY DEFAULT nextval('accounts_id_seq'),
  username varchar NOT NULL, domain varchar, note text NOT NULL DEFAULT '',
  created_at timestamp NOT NULL DEFAULT now());
CREATE UNIQUE INDEX index_accounts_on_username_and_domain_lower
  ON accounts (lower(username), COALESCE(lower(domain), ''));
CREATE SEQUENCE statuses_id_seq;
CREATE TABLE statuses (
  id bigint PRIMARY KEY DEFAULT nextval('statuses_id_seq'),
  account_id bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
  in_reply_to_id bigint, text text NOT NULL DEFAULT '',
  created_at timestamp NOT NULL DEFAULT now());
CREATE INDEX index_statuses_20190820 ON statuses (account_id, id DESC);
CREATE TABLE media_attachments (
  id bigserial PRIMARY KEY,
  status_id bigint REFERENCES statuses (id) ON DELETE SET NULL,
  file_file_name varchar, file_file_size integer);
CREATE INDEX index_media_attachments_on_status_id ON media_attachments (status_id);
";
