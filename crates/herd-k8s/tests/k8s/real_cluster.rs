//! The operator against a real cluster (kind or k3d): ignored by default, run as described
//! in docs/REAL-CLUSTER-TESTS.md:
//!
//! ```text
//! HERD_REAL_CLUSTER=1 cargo test -p herd-k8s --test k8s real_cluster:: -- --ignored --test-threads=1
//! ```
//!
//! Each test installs the CRD, runs the operator in-process (with leader election), creates
//! an Instance in `herd-system`, waits for it to run, then suspends, resumes and deletes it.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::{App, Instance, Phase};
use herd_k8s::operator::{self, Settings, SKIP_BACKUP_ANNOTATION};
use herd_k8s::reconcile::take_owner_password;
use herd_k8s::render::ClusterSettings;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
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
    let settings = Settings {
        cluster: ClusterSettings {
            has_cloudnative_pg: operator::has_cloudnative_pg(client).await.unwrap(),
            ..ClusterSettings::default()
        },
        namespace: NS.into(),
        backup: None,
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

async fn lifecycle(app: App, version: &str, name: &str, install_limit: Duration) {
    let client = client().await;
    setup(&client).await;
    let api: Api<Instance> = Api::namespaced(client.clone(), NS);
    let mut instance = common::lyon("community");
    instance.metadata.name = Some(name.into());
    instance.spec.slug = name.into();
    instance.spec.local_domain = format!("{name}.herd.test");
    instance.spec.app = app;
    instance.spec.version = version.into();
    api.create(&PostParams::default(), &instance).await.unwrap();

    let running = wait_for(&api, name, install_limit, "Running", |i| {
        phase(i) == Some(Phase::Running)
    })
    .await;
    assert_eq!(
        running.status.unwrap().running_version.as_deref(),
        Some(version)
    );
    let password = take_owner_password(&client, name).await.unwrap();
    assert!(password.is_some_and(|p| p.len() == 32));

    // Suspend: scaled to zero; resume: back to running.
    let merge = |v| Patch::Merge(json!({ "spec": { "suspended": v } }));
    api.patch(name, &PatchParams::default(), &merge(true))
        .await
        .unwrap();
    wait_for(&api, name, Duration::from_secs(120), "Suspended", |i| {
        phase(i) == Some(Phase::Suspended)
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &format!("herd-{name}"));
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(0));
    api.patch(name, &PatchParams::default(), &merge(false))
        .await
        .unwrap();
    wait_for(&api, name, Duration::from_secs(600), "Running again", |i| {
        phase(i) == Some(Phase::Running)
    })
    .await;

    // Delete without a backup target: allowed only with the annotation.
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { SKIP_BACKUP_ANNOTATION: "true" } } })),
    )
    .await
    .unwrap();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    let start = Instant::now();
    while api.get_opt(name).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the Instance is still there"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
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
async fn gotosocial_installs_suspends_resumes_and_is_deleted() {
    lifecycle(
        App::Gotosocial,
        "0.20.2",
        "rc-gts",
        Duration::from_secs(600),
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with about 4 GiB free; see docs/REAL-CLUSTER-TESTS.md"]
async fn mastodon_installs_suspends_resumes_and_is_deleted() {
    lifecycle(
        App::Mastodon,
        "v4.7.6",
        "rc-mastodon",
        Duration::from_secs(1200),
    )
    .await;
}
