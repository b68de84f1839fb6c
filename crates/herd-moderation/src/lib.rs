//! Herd's managed moderation: the provider's moderators work the report queues of
//! customers' servers, under each customer's written policy, through Mastodon's admin API.
//!
//! - [`client`]: the admin API (reports, resolve/reopen, account actions), typed errors.
//! - [`connections`]: the moderator account's token per server (sealed with
//!   `HERD_ENCRYPTION_KEY`, revocable, never shown back), and plans' moderation terms.
//! - [`policy`]: the customer's policy, versioned.
//! - [`fetch`]: copying open reports into Herd's tables (a job, scheduled and on demand).
//! - [`decide`]: moderators' decisions (an outbox row and its job in one transaction),
//!   escalations to the customer and their decisions.
//! - [`send`]: the outbox job that calls the API, at most once per action.
//! - [`views`]: the moderators' queue, a report's page, a customer's server page, the
//!   monthly report (CSV).
//! - [`moderators`]: which operators may moderate.
//! - [`jobs`]: the job types; [`jobs::register`] hands them to the worker.
//!
//! Only operators with the moderator role see reports and act; a customer's owners and
//! admins see their own servers' moderation (the role table's
//! [`Capability::ManageModeration`](herd_domain::role::Capability)).

pub mod client;
pub mod connections;
pub mod decide;
pub mod fetch;
pub mod jobs;
pub mod moderators;
pub mod policy;
pub mod send;
pub mod views;

use herd_domain::UserId;
use herd_store::audit::{self, NewEntry};
use herd_store::StoreError;
use serde_json::Value;
use sqlx::PgConnection;

/// What a moderation service can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    /// Bad input: (form field, what to fix); nothing was changed.
    #[error("{}", .0.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join(" "))]
    Invalid(Vec<(&'static str, String)>),
    /// No such thing, or not one the caller may see.
    #[error("not found")]
    NotFound,
    /// The caller may not do this (an operator without the moderator role).
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ModerationError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ModerationError::Invalid(vec![(field, message.into())])
    }
}

impl From<sqlx::Error> for ModerationError {
    fn from(e: sqlx::Error) -> Self {
        ModerationError::Store(e.into())
    }
}

/// The refusal an operator without the moderator role gets.
pub const NOT_A_MODERATOR: &str =
    "Only operators with the moderator role see customers' reports and act on them; ask an operator to give you the role in Moderation → Moderators.";

/// Someone acting, for the audit log and the names decisions carry.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub id: UserId,
    pub name: &'a str,
    pub email: &'a str,
    pub ip: &'a str,
}

/// Writes an audit entry in the caller's transaction.
pub(crate) async fn record(
    conn: &mut PgConnection,
    who: Who<'_>,
    org: Option<uuid::Uuid>,
    action: &str,
    target: impl Into<String>,
    details: Value,
) -> Result<(), StoreError> {
    audit::record(
        conn,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: org.map(herd_domain::OrgId),
            action,
            target: target.into(),
            source_ip: Some(who.ip),
            details,
        },
    )
    .await
}

/// Checks that `who` is an operator with the moderator role.
pub async fn require_moderator(
    ex: impl sqlx::PgExecutor<'_>,
    who: UserId,
) -> Result<(), ModerationError> {
    if herd_store::moderation::is_moderator(ex, who).await? {
        Ok(())
    } else {
        Err(ModerationError::Forbidden(NOT_A_MODERATOR))
    }
}
