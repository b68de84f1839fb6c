//! Checking a cluster: is its API reachable, which Kubernetes does it run, is the
//! Instance CRD installed, and which operator version runs there.

use crate::Orchestrator;
use anyhow::Context;
use herd_domain::ClusterHealth;
use herd_k8s::crd::Instance;
use herd_store::fleet::{self, HealthReport};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};
use uuid::Uuid;

/// The operator's Deployment, as `deploy/operator/` names it.
pub const OPERATOR_DEPLOYMENT: &str = "herd-operator";

/// What a cluster looks like from here.
pub async fn probe(client: &kube::Client, namespace: &str) -> HealthReport {
    let version = match client.apiserver_version().await {
        Ok(v) => v.git_version,
        Err(e) => {
            return HealthReport {
                health: ClusterHealth::Unreachable,
                message: Some(format!("the API server did not answer: {e}")),
                kubernetes_version: None,
                operator_version: None,
            }
        }
    };
    let instances: Api<Instance> = Api::namespaced(client.clone(), namespace);
    if let Err(e) = instances.list(&ListParams::default().limit(1)).await {
        let (health, message) = match &e {
            kube::Error::Api(s) if s.code == 404 => (
                ClusterHealth::CrdMissing,
                "the instances.herd.dev CRD is not installed (kubectl apply -k deploy/)".to_owned(),
            ),
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => (
                ClusterHealth::Unreachable,
                format!(
                    "Herd's credentials may not list Instances in {namespace}: {}",
                    s.message
                ),
            ),
            other => (
                ClusterHealth::Unreachable,
                format!("listing Instances failed: {other}"),
            ),
        };
        return HealthReport {
            health,
            message: Some(message),
            kubernetes_version: Some(version),
            operator_version: None,
        };
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let (operator_version, message) = match deployments.get_opt(OPERATOR_DEPLOYMENT).await {
        Ok(Some(d)) => {
            let image = d
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|s| s.containers.into_iter().next())
                .and_then(|c| c.image)
                .unwrap_or_default();
            let tag = image.rsplit_once(':').map(|(_, t)| t.to_owned());
            (tag.or(Some(image)), None)
        }
        Ok(None) => (
            None,
            Some(format!(
                "no {OPERATOR_DEPLOYMENT} Deployment in {namespace}: Instances will not be acted on"
            )),
        ),
        Err(e) => (
            None,
            Some(format!("could not read the operator's Deployment: {e}")),
        ),
    };
    HealthReport {
        health: ClusterHealth::Healthy,
        message,
        kubernetes_version: Some(version),
        operator_version,
    }
}

/// Checks a cluster and records what was found; a cluster that became healthy gets a
/// placement round for waiting instances.
pub async fn check_cluster(o: &Orchestrator, id: Uuid) -> anyhow::Result<()> {
    let cluster = fleet::cluster(&o.pool, id)
        .await?
        .context("no such cluster")?;
    let report = match o.clusters.client(&cluster).await {
        Ok(client) => probe(&client, &cluster.operator_namespace).await,
        Err(e) => HealthReport {
            health: ClusterHealth::Unreachable,
            message: Some(format!("{e:#}")),
            kubernetes_version: None,
            operator_version: None,
        },
    };
    let mut tx = o.pool.begin().await?;
    fleet::record_health(&mut *tx, id, &report).await?;
    if report.health == ClusterHealth::Healthy && cluster.health != ClusterHealth::Healthy {
        herd_jobs::enqueue(
            &mut *tx,
            &herd_fleet::jobs::PlaceQueued {
                bucket: time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64,
            },
        )
        .await?;
    }
    tx.commit().await?;
    if report.health != ClusterHealth::Healthy {
        tracing::warn!(cluster = %cluster.name, health = report.health.as_str(), message = ?report.message, "cluster unhealthy");
    }
    Ok(())
}
