//! A watch per cluster: each change of an Instance's status reaches its server's row as it
//! happens, instead of at the next full resync ([`crate::SYNC_EVERY`], which stays as the
//! repair of anything a watch missed: an event lost while the watch reconnects, a server
//! whose Instance went missing, owners' passwords to collect).
//!
//! One worker watches each cluster: the watch holds a PostgreSQL session lock named after
//! the cluster on a connection of its own. With several workers each cluster is watched
//! once; when its worker dies, the connection closes, the lock goes, and another worker
//! takes the cluster over at its next round ([`ROUND`]).

use crate::apply::INSTANCE_ID_LABEL;
use crate::Orchestrator;
use anyhow::Context;
use futures::StreamExt;
use herd_k8s::crd::Instance;
use herd_store::fleet;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, ResourceExt};
use sqlx::Connection;
use std::collections::HashMap;
use std::time::Duration;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How often a worker looks for clusters no one watches (and stops watching removed ones).
pub const ROUND: Duration = Duration::from_secs(10);

/// Watches every registered cluster that no other worker watches, until `shutdown`
/// resolves.
pub async fn run(o: Orchestrator, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut watching: HashMap<Uuid, JoinHandle<()>> = HashMap::new();
    let mut every = tokio::time::interval(ROUND);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = every.tick() => {
                if let Err(e) = round(&o, &mut watching).await {
                    tracing::warn!(error = %format!("{e:#}"), "cluster watch round failed");
                }
            }
        }
    }
    for (_, task) in watching {
        task.abort();
    }
}

/// One round: drops the watches that ended or whose cluster is gone, and starts one for each
/// cluster whose lock is free.
pub async fn round(
    o: &Orchestrator,
    watching: &mut HashMap<Uuid, JoinHandle<()>>,
) -> anyhow::Result<()> {
    let clusters = fleet::clusters(&o.pool).await?;
    watching.retain(|id, task| {
        let keep = !task.is_finished() && clusters.iter().any(|c| c.id == *id);
        if !keep {
            task.abort();
        }
        keep
    });
    for c in clusters {
        if watching.contains_key(&c.id) {
            continue;
        }
        // Tried on a pooled connection, which goes back to the pool when the lock is
        // another worker's; taken out of the pool only to hold the lock.
        let mut pooled = o.pool.acquire().await?;
        if !herd_store::try_session_lock(&mut pooled, &format!("watch:{}", c.id)).await? {
            continue;
        }
        let conn = pooled.detach();
        let me = o.clone();
        let (id, name) = (c.id, c.name.clone());
        watching.insert(
            c.id,
            tokio::spawn(async move {
                tracing::info!(cluster = %name, "watching the cluster's Instances");
                if let Err(e) = watch_cluster(&me, id).await {
                    tracing::warn!(cluster = %name, error = %format!("{e:#}"), "cluster watch stopped");
                }
                // Closing the connection gives the lock back.
                let _ = conn.close().await;
            }),
        );
    }
    Ok(())
}

/// Follows one cluster's Instances, recording each status as it changes. Errors of the
/// watch itself are retried with backoff (an unreachable cluster is reported by its health
/// check); the watch ends when the cluster has no client.
async fn watch_cluster(o: &Orchestrator, cluster_id: Uuid) -> anyhow::Result<()> {
    let cluster = fleet::cluster(&o.pool, cluster_id)
        .await?
        .context("no such cluster")?;
    let client = o.clusters.client(&cluster).await?;
    let api: Api<Instance> = Api::namespaced(client, &cluster.operator_namespace);
    let mut seen = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = seen.next().await {
        match event {
            Ok(i) => {
                if let Err(e) = record_watched(o, cluster_id, &i).await {
                    tracing::warn!(cluster = %cluster.name, instance = %i.name_any(), error = %format!("{e:#}"), "recording a watched status failed");
                }
            }
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, error = %e, "cluster watch interrupted; retrying")
            }
        }
    }
    Ok(())
}

/// Records a watched Instance's status on its server's row, if it is the Instance of a
/// server placed on this cluster (by its instance-id label, or by name for one without).
/// Returns whether it was.
pub async fn record_watched(o: &Orchestrator, cluster: Uuid, i: &Instance) -> anyhow::Result<bool> {
    let Some(id) = fleet::placed_on(&o.pool, cluster, &i.name_any()).await? else {
        return Ok(false);
    };
    // Another tenant's Instance of the same name is not ours to read.
    let ours = i
        .labels()
        .get(INSTANCE_ID_LABEL)
        .is_none_or(|v| *v == id.to_string());
    if ours {
        crate::sync::record(o, id, i).await?;
    }
    Ok(ours)
}
