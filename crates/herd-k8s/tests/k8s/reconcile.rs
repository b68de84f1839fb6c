//! Applying a tenant's children to an in-memory Kubernetes API (kube-fake-client).
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::Instance;
use herd_k8s::reconcile::{apply_children, ReconcileError};
use herd_k8s::render::ClusterSettings;
use herd_testkit::fake_cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, ListParams};
use std::collections::BTreeMap;

fn instance(plan: &str) -> Instance {
    common::lyon(plan)
}

/// resourceVersion of every child, by Kind/name.
async fn versions(client: &kube::Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    macro_rules! collect {
        ($t:ty, $kind:literal) => {
            let api: Api<$t> = Api::namespaced(client.clone(), "herd-lyon");
            for o in api.list(&ListParams::default()).await.unwrap() {
                out.insert(
                    format!("{}/{}", $kind, o.metadata.name.clone().unwrap()),
                    o.metadata.resource_version.clone().unwrap(),
                );
            }
        };
    }
    collect!(Deployment, "Deployment");
    collect!(Service, "Service");
    collect!(ConfigMap, "ConfigMap");
    collect!(Secret, "Secret");
    collect!(Ingress, "Ingress");
    collect!(NetworkPolicy, "NetworkPolicy");
    out
}

async fn app_secret(client: &kube::Client) -> BTreeMap<String, Vec<u8>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), "herd-lyon");
    let s = api.get("app-secrets").await.unwrap();
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

#[tokio::test]
async fn first_apply_creates_every_child_and_a_second_writes_nothing() {
    let cluster = fake_cluster::start().await;
    let settings = ClusterSettings::default();
    let inst = instance("community");
    let first = apply_children(&cluster.client, &inst, &settings)
        .await
        .unwrap();
    assert!(first.written.len() >= 25, "{first:?}");
    assert_eq!(first.unchanged, 0);
    assert!(
        cluster.namespaces()["herd-lyon"]["metadata"]["labels"]
            ["pod-security.kubernetes.io/enforce"]
            == "restricted"
    );

    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), "herd-lyon");
    let names: Vec<String> = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.metadata.name.unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let labelled = deployments
        .list(&ListParams::default().labels("herd.dev/instance=lyon"))
        .await
        .unwrap();
    assert_eq!(labelled.items.len(), 3, "children carry the owner label");

    let before = versions(&cluster.client).await;
    let writes = cluster.writes();
    let second = apply_children(&cluster.client, &inst, &settings)
        .await
        .unwrap();
    assert_eq!(second.written, Vec::<String>::new());
    assert_eq!(second.unchanged, first.written.len());
    assert_eq!(
        cluster.writes(),
        writes,
        "a no-op reconcile makes no API writes"
    );
    assert_eq!(
        versions(&cluster.client).await,
        before,
        "no resourceVersion changed"
    );
}

#[tokio::test]
async fn secrets_survive_every_reconcile_and_a_plan_change_touches_only_what_it_sizes() {
    let cluster = fake_cluster::start().await;
    let settings = ClusterSettings::default();
    apply_children(&cluster.client, &instance("community"), &settings)
        .await
        .unwrap();
    let secret = app_secret(&cluster.client).await;
    assert_eq!(secret.len(), 9, "the eight keys and OTP_SECRET");

    let bigger = instance("organization");
    let report = apply_children(&cluster.client, &bigger, &settings)
        .await
        .unwrap();
    assert_eq!(
        app_secret(&cluster.client).await,
        secret,
        "secrets are byte for byte the same"
    );
    let written: Vec<&str> = report.written.iter().map(String::as_str).collect();
    for untouched in [
        "Namespace/herd-lyon",
        "Secret/app-secrets",
        "ConfigMap/app-env",
        "Service/web",
        "Ingress/app",
        "NetworkPolicy/default-deny",
    ] {
        assert!(
            !written.contains(&untouched),
            "{untouched} was rewritten: {written:?}"
        );
    }
    for touched in [
        "Deployment/web",
        "ResourceQuota/tenant-quota",
        "PodDisruptionBudget/web",
    ] {
        assert!(
            written.contains(&touched),
            "{touched} not written: {written:?}"
        );
    }
    apply_children(&cluster.client, &bigger, &settings)
        .await
        .unwrap();
    assert_eq!(app_secret(&cluster.client).await, secret);
}

#[tokio::test]
async fn a_damaged_secret_stops_the_reconcile_instead_of_being_replaced() {
    let cluster = fake_cluster::start().await;
    let settings = ClusterSettings::default();
    apply_children(&cluster.client, &instance("community"), &settings)
        .await
        .unwrap();
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), "herd-lyon");
    let mut s = api.get("app-secrets").await.unwrap();
    s.data.as_mut().unwrap().remove("SECRET_KEY_BASE");
    s.metadata.managed_fields = None;
    api.replace("app-secrets", &Default::default(), &s)
        .await
        .unwrap();
    let writes = cluster.writes();
    let err = apply_children(&cluster.client, &instance("community"), &settings)
        .await
        .unwrap_err();
    assert!(matches!(err, ReconcileError::DamagedSecret { .. }), "{err}");
    assert!(
        err.to_string().contains("restore it from a backup"),
        "{err}"
    );
    assert_eq!(cluster.writes(), writes, "nothing was written");
}
