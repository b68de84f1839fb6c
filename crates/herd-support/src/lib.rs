//! Herd's support desk: customers open tickets and reply from the portal, operators answer
//! them from a queue, and each plan's support tier sets the SLA the clock counts against.
//!
//! - [`tickets`]: opening, replies, internal notes, assignment, status and priority
//!   changes, closing, reopening within [`REOPEN_WINDOW`](herd_domain::support::REOPEN_WINDOW),
//!   rating; each change audited, with the SLA clock recomputed in the same transaction.
//! - [`tiers`]: plans' support tiers (the editor's checks, the tier a ticket follows).
//! - [`sla`]: the clock (herd-domain's rules) over a ticket's stored history.
//! - [`canned`], [`merge`], [`dashboard`]: canned replies, merging duplicate tickets, and
//!   the support dashboard's figures.
//! - [`attachments`], [`inbound`]: files on tickets (checked on their bytes, kept in an
//!   object store), and replies and new tickets by email (signed reply addresses).
//! - [`jobs`]: the reply email, the SLA check that records breaches, the automatic
//!   closing of resolved tickets; [`jobs::register`] hands them to the worker.
//!
//! Who may see a ticket: its organization's members see those they opened and those
//! shared with the organization, owners and admins see all (the role table's
//! [`Capability::SeeAllTickets`](herd_domain::role::Capability)); operators see every
//! ticket, and only they see internal notes.

pub mod attachments;
pub mod canned;
pub mod dashboard;
pub mod inbound;
pub mod jobs;
pub mod merge;
pub mod sla;
pub mod tickets;
pub mod tiers;

use herd_domain::UserId;
use herd_store::StoreError;

/// What a support service can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// Bad input: (form field, what to fix), nothing was changed.
    #[error("{}", .0.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join(" "))]
    Invalid(Vec<(&'static str, String)>),
    /// No such ticket, or not one the caller may see.
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The attachment store (directory or bucket) failed.
    #[error("attachment store: {0}")]
    Attachments(String),
}

impl SupportError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        SupportError::Invalid(vec![(field, message.into())])
    }
}

impl From<sqlx::Error> for SupportError {
    fn from(e: sqlx::Error) -> Self {
        SupportError::Store(e.into())
    }
}

/// Someone acting, for the audit log and the messages they write.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub id: UserId,
    pub name: &'a str,
    pub email: &'a str,
    pub ip: &'a str,
}
