//! Every rendered object passes the OpenAPI schema of the targeted Kubernetes version
//! (strict: unknown fields are refused), checked with kube-fake-client's validator.
//!
//! kube-fake-client 0.3 validates only in its direct `create` path, not for requests that
//! come through `kube::Api`, so the validator is called here directly on each object.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::plan::default_catalogue;
use herd_k8s::crd::{App, DatabaseMode, Instance, InstanceSpec, OwnerSpec, S3Spec};
use herd_k8s::render::backup::BackupTarget;
use herd_k8s::render::{self, Child, Tenant};
use herd_k8s::secrets::AppSecrets;
use kube_fake_client::validator::{RuntimeOpenAPIValidator, SchemaValidator};

const VALIDATED: [&str; 15] = [
    "/v1/Namespace",
    "/v1/ResourceQuota",
    "/v1/LimitRange",
    "/v1/ServiceAccount",
    "/v1/Secret",
    "/v1/ConfigMap",
    "/v1/PersistentVolumeClaim",
    "/v1/Service",
    "apps/v1/Deployment",
    "apps/v1/StatefulSet",
    "batch/v1/Job",
    "batch/v1/CronJob",
    "networking.k8s.io/v1/Ingress",
    "networking.k8s.io/v1/NetworkPolicy",
    "policy/v1/PodDisruptionBudget",
];

fn validator() -> RuntimeOpenAPIValidator {
    let spec = std::env::var("HERD_K8S_OPENAPI").unwrap_or_else(|_| {
        panic!("HERD_K8S_OPENAPI is not set: run the tests with scripts/test.sh, or export HERD_K8S_OPENAPI=$(scripts/k8s-openapi.sh)")
    });
    let v = RuntimeOpenAPIValidator::from_file(&spec).unwrap();
    for gvk in VALIDATED {
        v.enable_validation_for(gvk).unwrap();
    }
    v
}

fn validate(v: &RuntimeOpenAPIValidator, obj: &serde_json::Value) -> Result<(), String> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let kind = obj["kind"].as_str().unwrap_or_default();
    let key = format!("{group}/{version}/{kind}");
    if !VALIDATED.contains(&key.as_str()) {
        return Err(format!("{key} is not in the validated list"));
    }
    v.validate(group, version, kind, obj)
        .map_err(|e| e.to_string())
}

fn instance(plan: &str, variant: u8) -> Instance {
    let p = default_catalogue()
        .into_iter()
        .find(|p| p.code == plan)
        .unwrap();
    let mut spec = InstanceSpec::new(
        App::Mastodon,
        "v4.7.6",
        &format!("t{variant}"),
        &format!("t{variant}.example"),
        plan,
        &p.limits,
        OwnerSpec {
            username: "lea".into(),
            email: "admin@example.org".into(),
            password_generation: 0,
        },
    );
    if variant >= 4 {
        // The largest plan's tenants run GoToSocial.
        spec.app = App::Gotosocial;
        spec.version = "0.20.2".into();
    }
    if variant % 2 == 1 {
        spec.suspended = true;
        spec.web_domain = Some(format!("social.t{variant}.example"));
        spec.smtp_secret_ref = Some("smtp".into());
        spec.database.mode = DatabaseMode::CloudNativePg;
        spec.media_s3 = Some(S3Spec {
            bucket: "b".into(),
            endpoint: "https://s3.example".into(),
            region: None,
            alias_host: None,
            secret_ref: "s3".into(),
            permission: None,
        });
    }
    Instance::new(&format!("t{variant}"), spec)
}

#[test]
fn rendered_objects_pass_openapi_validation() {
    let v = validator();
    let mut checked = 0;
    for (i, plan) in ["community", "organization", "institution"]
        .iter()
        .enumerate()
    {
        for variant in [0u8, 1] {
            let inst = instance(plan, (i as u8) * 2 + variant);
            let target = BackupTarget {
                bucket: "backups".into(),
                endpoint: "https://s3.example.net".into(),
                prefix: "final/".into(),
                region: "us-east-1".into(),
                secrets_recipient: crate::common::BACKUP_RECIPIENT.into(),
            };
            // With a backup target: the scheduled backup's CronJob is rendered too.
            let cluster = render::ClusterSettings {
                backup: Some(target.clone()),
                ..crate::common::cluster_for(&inst)
            };
            let secrets = AppSecrets::generate();
            let t = Tenant {
                instance: &inst,
                secrets: &secrets,
                cluster: &cluster,
            };
            let mut children = render::render(&t).unwrap();
            // The Jobs the operator adds at upgrades and before deletion.
            if inst.spec.app == App::Mastodon {
                let (pre, post) = render::upgrade_jobs(&t).unwrap();
                children.extend([pre, post]);
            }
            let urls = [(
                "manifest.txt".to_owned(),
                "https://s3.example.net/backups/final/lyon/manifest.txt?X-Amz-Signature=0"
                    .to_owned(),
            )]
            .into();
            children.extend(
                render::backup::final_backup(&t, &target, &urls, "2026-11-29T12:00:00Z").unwrap(),
            );
            // The operator's backup objects: before an upgrade, the sealed secrets, the
            // scheduled run's URLs.
            children.extend(
                render::backup::before_upgrade_backup(&t, &target, &urls, "backup-before-v4-8-0")
                    .unwrap(),
            );
            children.push(render::backup::sealed_secrets(&t, b"age", "d").unwrap());
            children.push(
                render::backup::urls_secret(&t, render::schedule::SCHEDULED_BACKUP_URLS, &urls)
                    .unwrap(),
            );
            assert!(
                children
                    .iter()
                    .any(|c| c.describe() == "CronJob/scheduled-backup"),
                "the scheduled backup is validated"
            );
            for child in children {
                // Other operators' resources (CloudNativePG) have no schema here.
                if matches!(child, Child::Dynamic(_)) {
                    continue;
                }
                if let Err(e) = validate(&v, &child.to_value().unwrap()) {
                    panic!(
                        "{} of {plan} (variant {variant}) fails validation: {e}",
                        child.describe()
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked} objects validated");
}

#[test]
fn validation_is_really_on() {
    let v = validator();
    let mut bad = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "bad", "namespace": "default" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "a": "b" } },
            "template": { "metadata": { "labels": { "a": "b" } }, "spec": { "containers": [{ "name": "c", "image": "i", "imagePullPolicyy": "Always" }] } },
        },
    });
    assert!(validate(&v, &bad).is_err(), "an unknown field is refused");
    bad["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("imagePullPolicyy");
    assert_eq!(validate(&v, &bad), Ok(()));
    bad["spec"]["replicas"] = serde_json::json!("two");
    assert!(validate(&v, &bad).is_err(), "a wrong type is refused");
}
