//! Herd's fleet: the hosted servers ("instances") organizations order and the clusters
//! they run on, as services the portal, the console and the worker call alike.
//!
//! - [`orders::fulfil`] turns a paid (or approved) order into an instance row and the job
//!   that provisions it, in the caller's transaction: fulfilment exists once.
//! - [`placement`] picks a cluster by the organization's region and free room; with no
//!   cluster the instance waits as "queued: no cluster connected".
//! - [`clusters`] registers clusters (kubeconfigs sealed at rest, [`seal`]), cordons them.
//! - [`instances`] lists and shows an organization's servers and reveals the owner's
//!   one-time password once.
//! - [`backups`] records tenants' backups as their clusters report them and raises the
//!   alert on a failed or missed one (console, email, metric).
//! - [`exports`] takes a customer's export of a server (through the cluster) and serves
//!   its files, checked against its manifest while they stream, until its link expires.
//! - [`lifecycle`] suspends, resumes, upgrades (now or in the maintenance window) and
//!   deletes a server, for its organization or an operator; [`releases`] are the versions
//!   the provider offers.
//!
//! Talking to the clusters (applying Instances, syncing their status, health checks) is
//! `herd-orchestrator`'s part: it runs this crate's [`jobs`]. This crate does no
//! Kubernetes IO, so the web layer can call it.

pub mod backups;
pub mod clusters;
pub mod domains;
pub mod drills;
pub mod exports;
pub mod imports;
pub mod instances;
pub mod jobs;
pub mod lifecycle;
pub mod orders;
pub mod placement;
pub mod releases;
pub mod restores;
pub mod seal;

use herd_store::StoreError;

/// What a fleet service can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Bad input; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for FleetError {
    fn from(e: sqlx::Error) -> Self {
        FleetError::Store(e.into())
    }
}

/// The version a new server of `app` gets.
pub fn default_version(app: &str) -> &'static str {
    match app {
        "gotosocial" => "0.20.2",
        _ => "v4.7.6",
    }
}
