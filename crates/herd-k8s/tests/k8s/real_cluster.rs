//! The operator against a real cluster (kind or k3d): ignored by default, run as described
//! in docs/REAL-CLUSTER-TESTS.md:
//!
//! ```text
//! HERD_REAL_CLUSTER=1 cargo test -p herd-k8s --test k8s real_cluster:: -- --ignored --test-threads=1
//! ```
//!
//! Each test installs the CRD, runs the operator in-process (with leader election), creates
//! an Instance of the previous minor series in `herd-system`, waits for it to run, changes
//! its plan, suspends and resumes it, upgrades it one minor series, and deletes it: with a
//! final backup when a bucket is given (`HERD_REAL_CLUSTER_BACKUP_*`, whose manifest is then
//! read back), else with `herd.dev/skip-final-backup`. With a bucket, before deleting, it
//! also restores the backup the upgrade took, in place, and takes an export.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::{App, BackupOutcome, BackupReason, Instance, Phase, RestoreStep};
use herd_k8s::operator::{self, Settings, SKIP_BACKUP_ANNOTATION};
use herd_k8s::presign::BackupCredentials;
use herd_k8s::reconcile::take_owner_password;
use herd_k8s::render::backup::BackupTarget;
use herd_k8s::render::ClusterSettings;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

const NS: &str = "herd-system";

async fn client() -> kube::Client {
    assert!(
        std::env::var("HERD_REAL_CLUSTER").is_ok(),
        "set HERD_REAL_CLUSTER=1 to confirm the current kubectl context may be used (docs/REAL-CLUSTER-TESTS.md)"
    );
    kube::Client::try_default().await.unwrap()
}

/// The backup bucket given by `HERD_REAL_CLUSTER_BACKUP_BUCKET`, `_ENDPOINT`, `_REGION`
/// (default us-east-1), `_ACCESS_KEY_ID` and `_SECRET_ACCESS_KEY`, if any. It must be
/// reachable from the cluster's pods on a public address (the tenants' NetworkPolicies
/// allow no private one).
fn backup_bucket() -> Option<(BackupTarget, BackupCredentials)> {
    let var = |k: &str| std::env::var(format!("HERD_REAL_CLUSTER_BACKUP_{k}")).ok();
    Some((
        BackupTarget {
            bucket: var("BUCKET")?,
            endpoint: var("ENDPOINT")?,
            prefix: "herd-real-cluster/".into(),
            region: var("REGION").unwrap_or_else(|| "us-east-1".into()),
            secrets_recipient: crate::common::BACKUP_RECIPIENT.into(),
        },
        BackupCredentials {
            access_key_id: var("ACCESS_KEY_ID")?,
            secret_access_key: var("SECRET_ACCESS_KEY")?,
        },
    ))
}

/// A StorageClass with ReadWriteMany, when the cluster has one
/// (`HERD_REAL_CLUSTER_RWX_CLASS`): Mastodon's larger plans need it for media on a volume.
fn shared_class() -> Option<String> {
    std::env::var("HERD_REAL_CLUSTER_RWX_CLASS").ok()
}

async fn setup(client: &kube::Client) {
    let apply = PatchParams::apply("herd-tests").force();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "instances.herd.dev",
        &apply,
        &Patch::Apply(herd_k8s::crd::crd().unwrap()),
    )
    .await
    .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .patch(
            NS,
            &apply,
            &Patch::Apply(
                json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": NS } }),
            ),
        )
        .await
        .unwrap();
    // Give the API server a moment to serve the new CRD.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let backup = backup_bucket();
    if let Some((_, credentials)) = &backup {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
        secrets
            .patch(
                "herd-backup-credentials",
                &apply,
                &Patch::Apply(json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": { "name": "herd-backup-credentials", "namespace": NS },
                    "stringData": {
                        "AWS_ACCESS_KEY_ID": credentials.access_key_id,
                        "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key,
                    },
                })),
            )
            .await
            .unwrap();
    }
    let settings = Settings {
        cluster: ClusterSettings {
            has_cloudnative_pg: operator::has_cloudnative_pg(client).await.unwrap(),
            media_shared_storage_class: shared_class(),
            ..ClusterSettings::default()
        },
        namespace: NS.into(),
        backup: backup.map(|(target, _)| target),
        backup_credentials_secret: "herd-backup-credentials".into(),
    };
    let c = client.clone();
    tokio::spawn(async move {
        operator::run(c, settings, "real-cluster-test", Duration::from_secs(15))
            .await
            .unwrap();
    });
}

async fn wait_for(
    api: &Api<Instance>,
    name: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&Instance) -> bool,
) -> Instance {
    let start = Instant::now();
    loop {
        let i = api.get(name).await.unwrap();
        if done(&i) {
            return i;
        }
        assert!(
            start.elapsed() < limit,
            "{name}: {what} not reached within {limit:?}; status: {:#?}",
            i.status
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

fn phase(i: &Instance) -> Option<Phase> {
    i.status.as_ref().map(|s| s.phase)
}

/// Moves the Instance to `plan` as the control plane does (its code and its sizing).
async fn change_plan(api: &Api<Instance>, name: &str, plan: &str) -> Instance {
    let sizing = common::lyon(plan).spec.sizing;
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "plan": plan, "sizing": sizing } })),
    )
    .await
    .unwrap()
}

/// The final backup's manifest, read back with a presigned GET.
async fn read_manifest(
    target: &BackupTarget,
    credentials: &BackupCredentials,
    key: &str,
) -> String {
    use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
    let bucket = Bucket::new(
        target.endpoint.parse().unwrap(),
        UrlStyle::Path,
        target.bucket.clone(),
        target.region.clone(),
    )
    .unwrap();
    let creds = Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
    );
    let url = bucket
        .get_object(Some(&creds), key)
        .sign(Duration::from_secs(300));
    let response = reqwest::get(url).await.unwrap();
    assert!(
        response.status().is_success(),
        "no manifest at {key}: {}",
        response.status()
    );
    response.text().await.unwrap()
}

/// Restores, in place, the verified backup the upgrade to `version` took (the previous
/// version's database, migrated again by the restore), compares its rows, then takes an
/// export and reads its manifest back.
async fn restore_and_export(
    api: &Api<Instance>,
    name: &str,
    version: &str,
    target: &BackupTarget,
    credentials: &BackupCredentials,
) {
    let i = api.get(name).await.unwrap();
    let status = i.status.clone().unwrap_or_default();
    let before = status
        .backups
        .iter()
        .find(|b| b.reason == BackupReason::BeforeUpgrade && b.outcome == BackupOutcome::Succeeded)
        .unwrap_or_else(|| panic!("{name}: no verified backup before the upgrade: {status:#?}"));
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "restore": {
            "id": "real-cluster-restore",
            "source": before.location.clone().unwrap(),
            "media": true,
            "manifestSha256": before.checksum,
        }}})),
    )
    .await
    .unwrap();
    let restored = wait_for(api, name, Duration::from_secs(1800), "the restore", |i| {
        phase(i) == Some(Phase::Running)
            && i.status
                .as_ref()
                .and_then(|s| s.restore.as_ref())
                .is_some_and(|r| r.step == RestoreStep::Succeeded)
    })
    .await;
    let status = restored.status.unwrap();
    let r = status.restore.unwrap();
    assert!(!r.restored_rows.is_empty(), "{r:#?}");
    assert_eq!(
        r.restored_rows, r.source_rows,
        "the rows the backup counted"
    );
    assert_eq!(status.running_version.as_deref(), Some(version));

    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "export": {
            "id": "real-cluster-export", "secretsRecipient": null,
        }}})),
    )
    .await
    .unwrap();
    let exported = wait_for(api, name, Duration::from_secs(1800), "the export", |i| {
        i.status
            .as_ref()
            .and_then(|s| s.export.as_ref())
            .is_some_and(|x| x.outcome != BackupOutcome::Running)
    })
    .await;
    let x = exported.status.unwrap().export.unwrap();
    assert_eq!(x.outcome, BackupOutcome::Succeeded, "{x:#?}");
    let dir = x
        .location
        .as_deref()
        .and_then(|l| l.strip_prefix(&format!("s3://{}/", target.bucket)))
        .unwrap_or_else(|| panic!("{x:#?}"))
        .to_owned();
    let manifest = read_manifest(target, credentials, &format!("{dir}manifest.txt")).await;
    assert!(manifest.contains("  database.dump.000"), "{manifest}");
    assert!(manifest.contains("  media.tar.000"), "{manifest}");
}

async fn lifecycle(app: App, from: &str, version: &str, name: &str, install_limit: Duration) {
    let client = client().await;
    setup(&client).await;
    let api: Api<Instance> = Api::namespaced(client.clone(), NS);
    let mut instance = common::lyon("community");
    instance.metadata.name = Some(name.into());
    instance.spec.slug = name.into();
    instance.spec.local_domain = format!("{name}.herd.test");
    instance.spec.app = app;
    instance.spec.version = from.into();
    api.create(&PostParams::default(), &instance).await.unwrap();

    let running = wait_for(&api, name, install_limit, "Running", |i| {
        phase(i) == Some(Phase::Running)
    })
    .await;
    assert_eq!(
        running.status.unwrap().running_version.as_deref(),
        Some(from)
    );
    let password = take_owner_password(&client, name).await.unwrap();
    assert!(password.is_some_and(|p| p.len() == 32));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &format!("herd-{name}"));
    let web_memory = |d: Deployment| {
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap()
            .limits
            .unwrap()["memory"]
            .0
            .clone()
    };

    // Plan change: the pods get the new plan's resources. Mastodon's organization plan
    // runs two web pods, which need media on a ReadWriteMany class (else it is refused,
    // saying so, and the tenant keeps running as it was).
    let bigger = common::lyon("organization").spec.sizing;
    let changed = change_plan(&api, name, "organization").await;
    let generation = changed.metadata.generation;
    if app == App::Mastodon && shared_class().is_none() {
        let refused = wait_for(&api, name, Duration::from_secs(120), "the refusal", |i| {
            i.status
                .as_ref()
                .and_then(|s| s.last_error.as_deref())
                .is_some_and(|e| e.contains("HERD_MEDIA_SHARED_STORAGE_CLASS"))
        })
        .await;
        assert_eq!(phase(&refused), Some(Phase::Failed));
        change_plan(&api, name, "community").await;
    } else {
        wait_for(&api, name, Duration::from_secs(600), "the new plan", |i| {
            phase(i) == Some(Phase::Running)
                && i.status.as_ref().and_then(|s| s.observed_generation) == generation
        })
        .await;
        assert_eq!(
            web_memory(deployments.get("web").await.unwrap()),
            bigger.web.memory_limit
        );
    }
    wait_for(
        &api,
        name,
        Duration::from_secs(600),
        "Running on its plan",
        |i| phase(i) == Some(Phase::Running),
    )
    .await;

    // Suspend: scaled to zero; resume: back to running.
    let merge = |v| Patch::Merge(json!({ "spec": { "suspended": v } }));
    api.patch(name, &PatchParams::default(), &merge(true))
        .await
        .unwrap();
    wait_for(&api, name, Duration::from_secs(120), "Suspended", |i| {
        phase(i) == Some(Phase::Suspended)
    })
    .await;
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(0));
    api.patch(name, &PatchParams::default(), &merge(false))
        .await
        .unwrap();
    wait_for(&api, name, Duration::from_secs(600), "Running again", |i| {
        phase(i) == Some(Phase::Running)
    })
    .await;

    // Upgrade one minor series, through its migrations.
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "version": version } })),
    )
    .await
    .unwrap();
    wait_for(&api, name, Duration::from_secs(1200), "the upgrade", |i| {
        phase(i) == Some(Phase::Running)
            && i.status.as_ref().and_then(|s| s.running_version.as_deref()) == Some(version)
    })
    .await;

    // With a bucket: the backup taken before the upgrade restored in place, then an export.
    if let Some((target, credentials)) = backup_bucket() {
        restore_and_export(&api, name, version, &target, &credentials).await;
    }

    // Delete: with a final backup when a bucket is given, else only with the annotation.
    let backup = backup_bucket();
    if backup.is_none() {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { SKIP_BACKUP_ANNOTATION: "true" } } }),
            ),
        )
        .await
        .unwrap();
    }
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let deleting = api.get_opt(name).await.unwrap();
    let start = Instant::now();
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "the Instance is still there"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    if let (Some((target, credentials)), Some(deleting)) = (backup, deleting) {
        let stamp = deleting
            .metadata
            .deletion_timestamp
            .map(|t| t.0.to_string())
            .unwrap();
        let dir = herd_k8s::render::backup::object_dir(&target, name, &stamp);
        let manifest = read_manifest(&target, &credentials, &format!("{dir}manifest.txt")).await;
        assert!(manifest.contains("  database.dump.000"), "{manifest}");
        // Media on a volume (the default here) are in it.
        assert!(manifest.contains("  media.tar.000"), "{manifest}");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces
            .get_opt(&format!("herd-{name}"))
            .await
            .unwrap()
            .is_none(),
        "the namespace went before the finalizer was removed"
    );
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster; see docs/REAL-CLUSTER-TESTS.md"]
async fn gotosocial_installs_changes_plan_suspends_resumes_upgrades_and_is_deleted() {
    lifecycle(
        App::Gotosocial,
        "0.19.1",
        "0.20.2",
        "rc-gts",
        Duration::from_secs(600),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with about 4 GiB free; see docs/REAL-CLUSTER-TESTS.md"]
async fn mastodon_installs_changes_plan_suspends_resumes_upgrades_and_is_deleted() {
    lifecycle(
        App::Mastodon,
        "v4.6.3",
        "v4.7.6",
        "rc-mastodon",
        Duration::from_secs(1200),
    )
    .await;
}
