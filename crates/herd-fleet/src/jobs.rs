//! The fleet's background jobs. `herd-orchestrator` registers their handlers (they talk to
//! clusters); this crate and billing enqueue them in the transactions of the changes they
//! follow from.

use herd_jobs::Job;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Place the instance on a cluster if it has none, then apply its `Instance` resource
/// there (server-side apply). Idempotent: applying an unchanged spec changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyInstance {
    pub instance_id: Uuid,
}

impl Job for ApplyInstance {
    const KIND: &'static str = "fleet.apply_instance";
    const MAX_ATTEMPTS: i32 = 20;
}

/// Place every instance still waiting for a cluster (after a cluster was registered,
/// uncordoned or recovered, and every minute).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceQueued {
    /// A time bucket, so that one is enqueued per period however many workers tick.
    pub bucket: i64,
}

impl Job for PlaceQueued {
    const KIND: &'static str = "fleet.place_queued";
    const MAX_ATTEMPTS: i32 = 3;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("place:{}", self.bucket))
    }
}

/// Read every Instance's status on a cluster back into the instance rows (a full resync
/// that repairs whatever the watch missed), and collect owners' one-time passwords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCluster {
    pub cluster_id: Uuid,
    pub bucket: i64,
}

impl Job for SyncCluster {
    const KIND: &'static str = "fleet.sync_cluster";
    const MAX_ATTEMPTS: i32 = 3;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("sync:{}:{}", self.cluster_id, self.bucket))
    }
}

/// Check a cluster's health: API reachable, the Instance CRD and the operator installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckCluster {
    pub cluster_id: Uuid,
    pub bucket: i64,
}

impl Job for CheckCluster {
    const KIND: &'static str = "fleet.check_cluster";
    const MAX_ATTEMPTS: i32 = 3;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("check:{}:{}", self.cluster_id, self.bucket))
    }
}

/// Start the upgrades scheduled into maintenance windows whose time has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartDueUpgrades {
    pub bucket: i64,
}

impl Job for StartDueUpgrades {
    const KIND: &'static str = "fleet.start_due_upgrades";
    const MAX_ATTEMPTS: i32 = 3;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("upgrades:{}", self.bucket))
    }
}

/// The bucket of `now` for a period of `secs` seconds.
pub fn bucket(now: time::OffsetDateTime, secs: i64) -> i64 {
    now.unix_timestamp().div_euclid(secs.max(1))
}
