//! Applying a tenant's children to an in-memory Kubernetes API (kube-fake-client).
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::Instance;
use herd_k8s::reconcile::{apply_children, ReconcileError};
use herd_k8s::render::ClusterSettings;
use herd_testkit::fake_cluster;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
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
    cluster
        .add_storage_class(common::SHARED_CLASS, "nfs.csi.k8s.io", true)
        .await;
    let bigger = instance("organization");
    let settings = common::cluster_for(&bigger);
    apply_children(&cluster.client, &instance("community"), &settings)
        .await
        .unwrap();
    let secret = app_secret(&cluster.client).await;
    assert_eq!(
        secret.len(),
        10,
        "the eight keys, OTP_SECRET and DB_APP_PASS"
    );

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

/// The API error code of a write, or 0 when it went through.
async fn code<T>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Ok(_) => 0,
        Err(kube::Error::Api(e)) => e.code,
        Err(e) => panic!("{e}"),
    }
}

/// The fake cluster refuses the writes an API server refuses and kube-fake-client alone
/// accepts: a changed StatefulSet claim template or Job template, a claim that shrinks,
/// grows on a class without expansion or changes its access modes, and ReadWriteMany on a
/// class that cannot offer it.
#[tokio::test]
async fn the_fake_cluster_refuses_what_an_api_server_refuses() {
    let cluster = fake_cluster::start().await;
    apply_children(
        &cluster.client,
        &instance("community"),
        &ClusterSettings::default(),
    )
    .await
    .unwrap();
    let client = cluster.client.clone();
    let apply = PatchParams::apply("test").force();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "herd-lyon");
    let claim =
        |name: &str, modes: &[&str], size: &str, class: Option<&str>| -> PersistentVolumeClaim {
            let mut c = json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": { "name": name, "namespace": "herd-lyon" },
                "spec": { "accessModes": modes, "resources": { "requests": { "storage": size } } },
            });
            if let Some(class) = class {
                c["spec"]["storageClassName"] = json!(class);
            }
            serde_json::from_value(c).unwrap()
        };
    // ReadWriteMany on kind's default class: refused; on a shared class: made.
    let rwx = claims
        .create(
            &PostParams::default(),
            &claim("shared", &["ReadWriteMany"], "1Gi", None),
        )
        .await;
    assert_eq!(code(rwx).await, 422);
    cluster
        .add_storage_class("nfs", "nfs.csi.k8s.io", true)
        .await;
    let rwx = claims
        .create(
            &PostParams::default(),
            &claim("shared", &["ReadWriteMany"], "1Gi", Some("nfs")),
        )
        .await;
    assert_eq!(code(rwx).await, 0);
    // Claims: grow where the class allows, never shrink, never change modes.
    let media = claims.get("media").await.unwrap();
    let size = media
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"]
        .0
        .clone();
    assert_eq!(size, "25Gi");
    let grow = |name: &'static str,
                modes: &'static [&'static str],
                size: &'static str,
                class: Option<&'static str>| {
        let claims = claims.clone();
        let patch = claim(name, modes, size, class);
        let apply = apply.clone();
        async move { claims.patch(name, &apply, &Patch::Apply(patch)).await }
    };
    assert_eq!(
        code(grow("media", &["ReadWriteOnce"], "30Gi", None).await).await,
        422,
        "a claim not bound yet does not grow"
    );
    for name in ["media", "shared"] {
        claims
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "phase": "Bound" } })),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        code(grow("media", &["ReadWriteOnce"], "30Gi", None).await).await,
        403,
        "kind's class does not expand"
    );
    let shrink = claims
        .patch(
            "media",
            &apply,
            &Patch::Apply(claim("media", &["ReadWriteOnce"], "20Gi", None)),
        )
        .await;
    assert_eq!(code(shrink).await, 422);
    let modes = claims
        .patch(
            "media",
            &apply,
            &Patch::Apply(claim("media", &["ReadWriteMany"], "25Gi", None)),
        )
        .await;
    assert_eq!(code(modes).await, 422);
    assert_eq!(
        code(grow("shared", &["ReadWriteMany"], "2Gi", Some("nfs")).await).await,
        0,
        "the nfs class expands"
    );
    let same = claims
        .patch(
            "media",
            &apply,
            &Patch::Apply(claim("media", &["ReadWriteOnce"], "25Gi", None)),
        )
        .await;
    assert_eq!(code(same).await, 0, "an unchanged claim is fine");
    // A StatefulSet's claim templates are fixed; its template and replicas are not.
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "herd-lyon");
    let mut db = serde_json::to_value(sets.get("postgres").await.unwrap()).unwrap();
    db["metadata"] = json!({ "name": "postgres", "namespace": "herd-lyon" });
    db.as_object_mut().unwrap().remove("status");
    let mut bigger = db.clone();
    bigger["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] =
        json!("50Gi");
    let refused = sets.patch("postgres", &apply, &Patch::Apply(&bigger)).await;
    assert_eq!(code(refused).await, 422);
    let mut relabelled = db.clone();
    relabelled["spec"]["template"]["metadata"]["annotations"] = json!({ "x": "y" });
    assert_eq!(
        code(
            sets.patch("postgres", &apply, &Patch::Apply(&relabelled))
                .await
        )
        .await,
        0
    );
    // A Job's template never changes.
    let jobs: Api<Job> = Api::namespaced(client.clone(), "herd-lyon");
    let name = jobs.list(&ListParams::default()).await.unwrap().items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let mut job = serde_json::to_value(jobs.get(&name).await.unwrap()).unwrap();
    job["metadata"] = json!({ "name": name, "namespace": "herd-lyon" });
    job.as_object_mut().unwrap().remove("status");
    job["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["true"]);
    assert_eq!(
        code(jobs.patch(&name, &apply, &Patch::Apply(&job)).await).await,
        422
    );
}

/// A plan change grows the database volume by growing the claim the StatefulSet made (its
/// claim templates cannot change) and the media claim, where the StorageClass allows it;
/// where it does not, the tenant moves to the plan anyway and the report says which volume
/// kept its size. Jobs already made are never written again.
#[tokio::test]
async fn a_plan_change_grows_volumes_in_place_and_says_when_it_cannot() {
    for expandable in [true, false] {
        let cluster = fake_cluster::start().await;
        cluster
            .add_storage_class(common::SHARED_CLASS, "nfs.csi.k8s.io", expandable)
            .await;
        let small = instance("community");
        let bigger = instance("organization");
        let settings = common::cluster_for(&bigger);
        apply_children(&cluster.client, &small, &settings)
            .await
            .unwrap();
        // The claim the StatefulSet controller makes from its template (not run by the fake).
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(cluster.client.clone(), "herd-lyon");
        let sets: Api<StatefulSet> = Api::namespaced(cluster.client.clone(), "herd-lyon");
        let template = sets
            .get("postgres")
            .await
            .unwrap()
            .spec
            .unwrap()
            .volume_claim_templates
            .unwrap()[0]
            .clone();
        let mut made = template.clone();
        made.metadata.name = Some("data-postgres-0".into());
        made.spec.as_mut().unwrap().storage_class_name = Some(common::SHARED_CLASS.into());
        claims.create(&PostParams::default(), &made).await.unwrap();
        // Unbound claims keep their size: a first pass of the bigger plan changes neither.
        let first = apply_children(&cluster.client, &bigger, &settings)
            .await
            .unwrap();
        assert!(first.not_resized.is_empty(), "{first:?}");
        assert!(
            first.written.contains(&"Deployment/web".to_owned()),
            "{first:?}"
        );
        let size_of = |c: PersistentVolumeClaim| {
            c.spec.unwrap().resources.unwrap().requests.unwrap()["storage"]
                .0
                .clone()
        };
        assert_eq!(size_of(claims.get("media").await.unwrap()), "25Gi");
        // The volumes are bound (the fake runs no provisioner: the test says so).
        for name in ["media", "data-postgres-0"] {
            claims
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": { "phase": "Bound" } })),
                )
                .await
                .unwrap();
        }
        let jobs_before: Vec<_> = Api::<Job>::namespaced(cluster.client.clone(), "herd-lyon")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|j| j.metadata.resource_version.clone())
            .collect();

        let report = apply_children(&cluster.client, &bigger, &settings)
            .await
            .unwrap();
        let size = |c: PersistentVolumeClaim| {
            c.spec.unwrap().resources.unwrap().requests.unwrap()["storage"]
                .0
                .clone()
        };
        let db_size = size(claims.get("data-postgres-0").await.unwrap());
        let media_size = size(claims.get("media").await.unwrap());
        let kept = sets
            .get("postgres")
            .await
            .unwrap()
            .spec
            .unwrap()
            .volume_claim_templates
            .unwrap()[0]
            .clone();
        assert_eq!(
            kept.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0,
            template
                .spec
                .clone()
                .unwrap()
                .resources
                .unwrap()
                .requests
                .unwrap()["storage"]
                .0,
            "the claim template is as it was made"
        );
        if expandable {
            assert_eq!(
                (db_size.as_str(), media_size.as_str()),
                ("50Gi", "200Gi"),
                "{report:?}"
            );
            assert!(report.not_resized.is_empty(), "{report:?}");
        } else {
            assert_eq!((db_size.as_str(), media_size.as_str()), ("10Gi", "25Gi"));
            assert_eq!(report.not_resized.len(), 2, "{report:?}");
            assert!(
                report
                    .not_resized
                    .iter()
                    .any(|n| n.contains("data-postgres-0")),
                "{report:?}"
            );
            assert!(
                report
                    .not_resized
                    .iter()
                    .any(|n| n.contains("PersistentVolumeClaim/media")),
                "{report:?}"
            );
        }
        let jobs_after: Vec<_> = Api::<Job>::namespaced(cluster.client.clone(), "herd-lyon")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|j| j.metadata.resource_version.clone())
            .collect();
        assert_eq!(jobs_before, jobs_after, "Jobs are written once");
    }
}

/// The fake cluster honours a delete's preconditions as the API server does: another uid
/// or resource version is 409 Conflict and deletes nothing (the moderator token's
/// collector relies on it).
#[tokio::test]
async fn a_delete_with_unmet_preconditions_is_refused_by_the_fake_cluster() {
    use kube::api::{DeleteParams, Preconditions};
    let cluster = fake_cluster::start().await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "default");
    let made = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": "moderator-token" },
                "stringData": { "token": "t" }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let delete = |uid: Option<String>, rv: Option<String>| DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: rv,
        }),
        ..DeleteParams::default()
    };
    for (uid, rv) in [
        (Some("another-uid".to_owned()), None),
        (made.metadata.uid.clone(), Some("999999".to_owned())),
    ] {
        match secrets.delete("moderator-token", &delete(uid, rv)).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 409, "{}", e.message),
            other => panic!("deleted despite its precondition: {other:?}"),
        }
        assert!(secrets.get_opt("moderator-token").await.unwrap().is_some());
    }
    secrets
        .delete(
            "moderator-token",
            &delete(
                made.metadata.uid.clone(),
                made.metadata.resource_version.clone(),
            ),
        )
        .await
        .unwrap();
    assert!(secrets.get_opt("moderator-token").await.unwrap().is_none());
}
