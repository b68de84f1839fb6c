//! Reading a tenant's children back from the cluster into [`Observed`], the input of the
//! lifecycle and the status.

use crate::crd::Instance;
use crate::render::{namespace_name, Tenant};
use crate::status::{DeploymentState, JobState, Observed};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};

/// The label selector of an Instance's children.
pub fn selector(instance: &Instance) -> String {
    format!(
        "herd.dev/instance={}",
        instance.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The state of a Job from its status.
pub fn job_state(job: &Job) -> JobState {
    let status = job.status.clone().unwrap_or_default();
    if status.succeeded.unwrap_or(0) > 0 {
        return JobState::Succeeded;
    }
    let failed = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    match failed {
        Some(c) => JobState::Failed(
            [c.reason, c.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": "),
        ),
        None => JobState::Running,
    }
}

/// Which attempt a Job is: its `herd.dev/attempt` annotation, 1 without one.
pub fn job_attempt(job: &Job) -> u32 {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::lifecycle::ATTEMPT_ANNOTATION))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1)
}

/// The state of a Deployment from its spec and status.
pub fn deployment_state(d: &Deployment) -> DeploymentState {
    let spec = d.spec.clone().unwrap_or_default();
    let status = d.status.clone().unwrap_or_default();
    let image = spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let version = image
        .rsplit_once(':')
        .map(|(_, tag)| tag.to_owned())
        .unwrap_or_default();
    DeploymentState {
        desired: spec.replicas.unwrap_or(1),
        ready: status.ready_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        version,
        current: match (d.metadata.generation, status.observed_generation) {
            (Some(generation), Some(seen)) => seen >= generation,
            (Some(_), None) => false,
            (None, _) => true,
        },
        total: status.replicas.unwrap_or(0),
        available: status.available_replicas.unwrap_or(0),
        stalled: status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
            .map(|c| {
                c.message
                    .unwrap_or_else(|| "the rollout exceeded its progress deadline".into())
            }),
    }
}

fn statefulset_ready(sets: &[StatefulSet], name: &str) -> bool {
    sets.iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .is_some_and(|s| {
            let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            s.status
                .as_ref()
                .and_then(|st| st.ready_replicas)
                .unwrap_or(0)
                >= want
        })
}

/// Reads the tenant's Deployments, StatefulSets (or CloudNativePG Cluster), Jobs and Ingress.
pub async fn observe(client: &kube::Client, t: &Tenant<'_>) -> Result<Observed, kube::Error> {
    let ns = namespace_name(&t.instance.spec.slug);
    let lp = ListParams::default().labels(&selector(t.instance));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &ns);

    let sets = sets.list(&lp).await?.items;
    let mut job_list = jobs.list(&lp).await?.items;
    // Backup Jobs: records; those before an upgrade stay a step's Job, which succeeded
    // only once verified.
    let mut backups = Vec::new();
    let mut backup_states = std::collections::BTreeMap::new();
    if job_list
        .iter()
        .any(|j| crate::backups::kind_of(j).is_some())
    {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let plp = ListParams::default().labels(&format!(
            "{},{}",
            selector(t.instance),
            crate::render::backup::BACKUP_LABEL
        ));
        let pods = pods.list(&plp).await?.items;
        for j in &job_list {
            if let Some((record, state)) = crate::backups::from_job(j, &pods) {
                if record.reason == crate::crd::BackupReason::BeforeUpgrade {
                    backup_states.insert(record.name.clone(), state);
                }
                backups.push(record);
            }
        }
    }
    // Scheduled backups are records only; restores and exports are the operator's own
    // business (see `crate::operator`), reported in `status.restore` and `status.export`,
    // never a step of the install or an upgrade.
    job_list.retain(|j| {
        !matches!(
            crate::backups::kind_of(j),
            Some(
                crate::render::backup::BackupKind::Scheduled
                    | crate::render::backup::BackupKind::Export
            )
        ) && !j
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(crate::render::restore::RESTORE_LABEL))
    });
    if t.uses_cloudnative_pg() && t.cluster.backup.is_some() {
        let gvk = GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Backup");
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
        for b in api.list(&ListParams::default()).await?.items {
            backups.extend(crate::backups::from_cnpg(&b));
        }
    }
    let database_ready = if t.uses_cloudnative_pg() {
        let gvk = GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster");
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
        api.get_opt("postgres").await?.is_some_and(|c| {
            let want = c.data["spec"]["instances"].as_i64().unwrap_or(1);
            c.data["status"]["readyInstances"].as_i64().unwrap_or(0) >= want
        })
    } else {
        statefulset_ready(&sets, "postgres")
    };
    Ok(Observed {
        database_ready,
        redis_ready: statefulset_ready(&sets, "redis"),
        deployments: deployments
            .list(&lp)
            .await?
            .items
            .iter()
            .filter_map(|d| Some((d.metadata.name.clone()?, deployment_state(d))))
            .collect(),
        job_attempts: {
            // The later of the Job's own number and the Instance's record.
            let mut attempts = crate::lifecycle::recorded_attempts(t.instance);
            for j in &job_list {
                if let Some(name) = j.metadata.name.clone() {
                    let n = attempts.entry(name).or_insert(1);
                    *n = (*n).max(job_attempt(j));
                }
            }
            attempts
        },
        jobs: job_list
            .iter()
            .filter_map(|j| {
                let name = j.metadata.name.clone()?;
                let state = backup_states.remove(&name).unwrap_or_else(|| job_state(j));
                Some((name, state))
            })
            .collect(),
        backups,
        ingress_ready: ingresses
            .get_opt(crate::render::mastodon::INGRESS)
            .await?
            .is_some_and(|i| {
                i.status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .is_some_and(|a| !a.is_empty())
            }),
    })
}
