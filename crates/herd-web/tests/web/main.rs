//! Integration tests of herd-web: the router over real HTTP against a real PostgreSQL, one
//! test binary (one link of the workspace's dependencies instead of one per file).

mod account_security;
mod accounts;
mod authorization;
mod backups;
mod checkout;
mod domains;
mod exports;
mod health;
mod imports;
mod invoice_orders;
mod invoicing;
mod moderation;
mod moderation_account;
mod moderation_history;
mod moderation_work;
mod operators;
mod roles;
mod server_lifecycle;
mod support;
mod support_attachments;
mod support_email;
mod support_ops;
mod vat;
mod webhook_db_down;
mod webhooks;
