//! Herd's orchestrator: the fleet's jobs that talk to Kubernetes clusters.
//!
//! - [`apply`]: place an instance ([`herd_fleet::placement`]) and apply its `Instance`
//!   resource to the chosen cluster with server-side apply (field manager
//!   `herd-control-plane`; the operator owns the status).
//! - [`sync`]: read every Instance's status back into the instance rows (a periodic full
//!   resync), re-apply an Instance that went missing, and collect owners' one-time
//!   passwords and the moderator account's tokens of managed moderation (sealed into the
//!   database, then deleted from the cluster).
//! - [`watch`]: a watch per cluster (one worker each, by a session lock) that records each
//!   status change as it happens.
//! - [`health`]: API reachable, Kubernetes version, the Instance CRD and the operator.
//! - [`connect`]: a client per cluster, from its sealed kubeconfig or the worker's own
//!   credentials; tests plug in fake clusters.
//!
//! [`register`] hands these handlers to the job runner; [`run_ticks`] enqueues the
//! periodic ones.

pub mod apply;
pub mod connect;
pub mod health;
pub mod restore;
pub mod sync;
pub mod watch;

pub use connect::{Connector, KubeconfigConnector};

use herd_fleet::jobs::{ApplyInstance, CheckCluster, PlaceQueued, StartDueUpgrades, SyncCluster};
use herd_fleet::seal::SealKey;
use herd_jobs::Registry;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// What the handlers share.
#[derive(Clone)]
pub struct Orchestrator {
    pub pool: PgPool,
    pub clusters: Arc<dyn Connector>,
    pub key: Option<SealKey>,
    /// The email of the moderator account Herd makes on moderated servers: the provider's
    /// moderation team ([`moderator_email`]). `None`: nothing usable is configured, and no
    /// account or new token is asked of any cluster (a revocation still is).
    pub moderator_email: Option<String>,
}

/// The moderator account's email, from the settings: HERD_MODERATION_EMAIL (`explicit`)
/// when set, else `moderation@` the domain of the support inbox (HERD_SUPPORT_EMAIL), else
/// `moderation@` the domain of Herd's From address (HERD_MAIL_FROM, `Name <a@b>` or
/// `a@b`). Only an address whose domain can receive mail is usable: Mastodon checks the
/// domain's MX or A records when the user is created (`EmailMxValidator`, outside its
/// development and test environments), so `localhost`, a name without a dot and the
/// reserved `.local`, `.localhost`, `.invalid` domains are not. `None` when nothing usable
/// is configured.
pub fn moderator_email(
    explicit: Option<&str>,
    support: Option<&str>,
    from: Option<&str>,
) -> Option<String> {
    fn address(s: &str) -> &str {
        let s = s.trim();
        match (s.rfind('<'), s.rfind('>')) {
            (Some(a), Some(b)) if a < b => s[a + 1..b].trim(),
            _ => s,
        }
    }
    fn domain(address: &str) -> Option<&str> {
        let (local, domain) = address.rsplit_once('@')?;
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        let reserved = d == "localhost"
            || [".localhost", ".local", ".invalid"]
                .iter()
                .any(|r| d.ends_with(r));
        let ok = !local.is_empty()
            && d.contains('.')
            && !reserved
            && d.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        ok.then_some(domain)
    }
    if let Some(e) = explicit.map(address).filter(|e| !e.is_empty()) {
        return domain(e).map(|_| e.to_owned());
    }
    [support, from]
        .into_iter()
        .flatten()
        .find_map(|a| domain(address(a)))
        .map(|d| format!("moderation@{d}"))
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator").finish_non_exhaustive()
    }
}

/// Registers the fleet's job handlers.
pub fn register(registry: &mut Registry, o: &Orchestrator) {
    let me = o.clone();
    registry.register(move |job: ApplyInstance| {
        let me = me.clone();
        async move { apply::apply_instance(&me, job.instance_id).await }
    });
    let me = o.clone();
    registry.register(move |_: PlaceQueued| {
        let me = me.clone();
        async move { apply::place_queued(&me).await }
    });
    let me = o.clone();
    registry.register(move |job: SyncCluster| {
        let me = me.clone();
        async move { sync::sync_cluster(&me, job.cluster_id).await }
    });
    let me = o.clone();
    registry.register(move |job: CheckCluster| {
        let me = me.clone();
        async move { health::check_cluster(&me, job.cluster_id).await }
    });
    let pool = o.pool.clone();
    registry.register(move |_: StartDueUpgrades| {
        let pool = pool.clone();
        async move {
            let n = herd_fleet::lifecycle::start_due_upgrades(&pool).await?;
            if n > 0 {
                tracing::info!(upgrades = n, "scheduled upgrades started");
            }
            Ok(())
        }
    });
}

/// How often each cluster's status is resynced.
pub const SYNC_EVERY: Duration = Duration::from_secs(15);
/// How often clusters are checked and waiting instances placed.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Enqueues this period's syncs, health checks and placement round. Every worker ticks;
/// the jobs' dedupe keys (one per cluster and period) make one of them do the work.
pub async fn tick(pool: &PgPool) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let sync_bucket = herd_fleet::jobs::bucket(now, SYNC_EVERY.as_secs() as i64);
    let check_bucket = herd_fleet::jobs::bucket(now, CHECK_EVERY.as_secs() as i64);
    let mut tx = pool.begin().await?;
    for c in herd_store::fleet::clusters(&mut *tx).await? {
        herd_jobs::enqueue(
            &mut *tx,
            &SyncCluster {
                cluster_id: c.id,
                bucket: sync_bucket,
            },
        )
        .await?;
        herd_jobs::enqueue(
            &mut *tx,
            &CheckCluster {
                cluster_id: c.id,
                bucket: check_bucket,
            },
        )
        .await?;
    }
    if herd_store::fleet::any_unverified(&mut *tx).await? {
        herd_jobs::enqueue(
            &mut *tx,
            &herd_fleet::domains::VerifyDomains {
                bucket: check_bucket,
            },
        )
        .await?;
    }
    if herd_store::fleet::any_due_upgrade(&mut *tx).await? {
        herd_jobs::enqueue(
            &mut *tx,
            &StartDueUpgrades {
                bucket: check_bucket,
            },
        )
        .await?;
    }
    if !herd_store::fleet::unplaced(&mut *tx).await?.is_empty() {
        herd_jobs::enqueue(
            &mut *tx,
            &PlaceQueued {
                bucket: check_bucket,
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Runs [`tick`] every [`SYNC_EVERY`] until `shutdown` resolves.
pub async fn run_ticks(pool: PgPool, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut every = tokio::time::interval(SYNC_EVERY);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = every.tick() => {
                if let Err(e) = tick(&pool).await {
                    tracing::warn!(error = %format!("{e:#}"), "fleet tick failed");
                }
            }
        }
    }
}
