//! The renderer's output for small and large plans: pinned by snapshots, and checked for
//! what must hold in every tenant (pod security, namespacing, labels, ingress wiring).
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::{App, DatabaseMode, Instance, InstanceStatus, S3Spec};
use herd_k8s::render::{self, Child, ClusterSettings, Tenant};
use herd_k8s::secrets::{self, AppSecrets};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Fixed secrets, so snapshots are stable (the VAPID pair is a real one).
fn fixed_secrets() -> AppSecrets {
    let private = "dGhpcyBpcyBhIHRlc3Qga2V5IGZvciBoZXJkIHZhcGk=";
    let mut data = BTreeMap::new();
    data.insert(secrets::SECRET_KEY_BASE.to_owned(), "ab".repeat(64));
    data.insert(secrets::OTP_SECRET.to_owned(), "cd".repeat(64));
    data.insert(secrets::VAPID_PRIVATE_KEY.to_owned(), private.to_owned());
    data.insert(
        secrets::VAPID_PUBLIC_KEY.to_owned(),
        secrets::vapid_public_from_private(private).unwrap(),
    );
    for k in [
        secrets::AR_PRIMARY_KEY,
        secrets::AR_DETERMINISTIC_KEY,
        secrets::AR_KEY_DERIVATION_SALT,
    ] {
        data.insert(k.to_owned(), "A".repeat(32));
    }
    data.insert(
        secrets::DB_PASS.to_owned(),
        "dbpassword0123456789abcdefgh".to_owned(),
    );
    data.insert(
        secrets::REDIS_PASSWORD.to_owned(),
        "redispassword0123456789abcd".to_owned(),
    );
    data.insert(
        secrets::DB_APP_PASS.to_owned(),
        "appdbpassword0123456789abcd".to_owned(),
    );
    AppSecrets::from_data(&data).unwrap()
}

fn instance(plan: &str) -> Instance {
    let mut i = common::lyon(plan);
    i.spec.smtp_secret_ref = Some("smtp".into());
    i
}

fn rendered(i: &Instance) -> Vec<Value> {
    let s = fixed_secrets();
    let cluster = common::cluster_for(i);
    render::render(&Tenant {
        instance: i,
        secrets: &s,
        cluster: &cluster,
    })
    .unwrap()
    .iter()
    .map(|c| c.to_value().unwrap())
    .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn pod_specs(objs: &[Value]) -> Vec<(String, &Value)> {
    objs.iter()
        .filter_map(|o| {
            let spec = match o["kind"].as_str()? {
                "Deployment" | "StatefulSet" | "Job" => &o["spec"]["template"]["spec"],
                "CronJob" => &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => return None,
            };
            Some((
                format!(
                    "{}/{}",
                    o["kind"].as_str()?,
                    o["metadata"]["name"].as_str()?
                ),
                spec,
            ))
        })
        .collect()
}

#[test]
fn snapshot_small_plan() {
    insta::assert_yaml_snapshot!("mastodon_community", rendered(&instance("community")));
}

#[test]
fn snapshot_large_plan_with_s3_and_cloudnative_pg() {
    let mut i = instance("institution");
    i.spec.web_domain = Some("social.region.example".into());
    i.spec.local_domain = "region.example".into();
    i.spec.database.mode = DatabaseMode::CloudNativePg;
    i.spec.media_s3 = Some(S3Spec {
        bucket: "lyon-media".into(),
        endpoint: "https://s3.example".into(),
        region: Some("eu-west-3".into()),
        alias_host: Some("media.region.example".into()),
        secret_ref: "s3".into(),
        permission: Some(String::new()),
    });
    insta::assert_yaml_snapshot!("mastodon_institution", rendered(&i));
}

/// The restricted Pod Security Standard, as the admission controller checks it, for one
/// pod template: every container and init container.
fn assert_restricted(what: &str, spec: &Value) {
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{what}");
    assert_ne!(spec["securityContext"]["runAsUser"], 0, "{what}");
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{what}"
    );
    assert_eq!(spec["automountServiceAccountToken"], false, "{what}");
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(
            spec[host].is_null() || spec[host] == false,
            "{what}: {host}"
        );
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let allowed = [
            "name",
            "configMap",
            "secret",
            "emptyDir",
            "persistentVolumeClaim",
            "projected",
            "downwardAPI",
            "ephemeral",
            "csi",
        ];
        for key in v.as_object().unwrap().keys() {
            assert!(allowed.contains(&key.as_str()), "{what}: volume type {key}");
        }
    }
    let containers = spec["containers"].as_array().unwrap();
    let init = spec["initContainers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for c in containers.iter().chain(&init) {
        let name = format!("{what} {}", c["name"]);
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert!(
            sc["privileged"].is_null() || sc["privileged"] == false,
            "{name}"
        );
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert!(
            sc["capabilities"]["add"].is_null(),
            "{name} adds capabilities"
        );
        assert_ne!(sc["runAsUser"], 0, "{name}");
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{name} has memory limits"
        );
        assert!(
            c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|p| p["hostPort"].is_null()),
            "{name}"
        );
    }
}

/// Every pod Herd makes, in every state (install, running, suspended, upgrading, a reset,
/// the final backup) and for both apps, meets the restricted Pod Security Standard the
/// tenant namespace enforces: containers and init containers alike.
#[test]
fn every_pod_meets_the_restricted_pod_security_standard() {
    let s = fixed_secrets();
    let mut checked = 0;
    let mut cases = Vec::new();
    for plan in ["community", "organization", "institution"] {
        for suspended in [false, true] {
            let mut i = instance(plan);
            i.spec.suspended = suspended;
            cases.push(i);
        }
    }
    cases.push(gotosocial("community"));
    for i in cases {
        let cluster = common::cluster_for(&i);
        let t = Tenant {
            instance: &i,
            secrets: &s,
            cluster: &cluster,
        };
        let mut children = render::render(&t).unwrap();
        children.extend(render::install_jobs(&t).unwrap());
        children.push(render::reset_owner_job(&t, "reset-owner-password-1").unwrap());
        if i.spec.app == App::Mastodon {
            let (pre, post) = render::upgrade_jobs(&t).unwrap();
            children.extend([pre, post]);
        }
        let target = render::backup::BackupTarget {
            bucket: "b".into(),
            endpoint: "https://s3.example".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            secrets_recipient: crate::common::BACKUP_RECIPIENT.into(),
        };
        children
            .extend(render::backup::final_backup(&t, &target, &Default::default(), "t").unwrap());
        let objs: Vec<Value> = children.iter().map(|c| c.to_value().unwrap()).collect();
        let pods = pod_specs(&objs);
        assert!(pods.len() >= 5, "{} pod templates", pods.len());
        for (what, spec) in pods {
            assert_restricted(&what, spec);
            checked += 1;
        }
        let ns = find(&objs, "Namespace", "herd-lyon").unwrap();
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted"
        );
    }
    assert!(checked > 60, "{checked} pod templates checked");
}

#[test]
fn everything_lives_in_the_tenant_namespace_with_owner_labels() {
    let objs = rendered(&instance("community"));
    for o in &objs {
        let what = format!("{}/{}", o["kind"], o["metadata"]["name"]);
        if o["kind"] != "Namespace" {
            assert_eq!(o["metadata"]["namespace"], "herd-lyon", "{what}");
        }
        assert_eq!(
            o["metadata"]["labels"]["herd.dev/instance"], "lyon",
            "{what}"
        );
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"], "herd",
            "{what}"
        );
    }
    assert_eq!(objs[0]["kind"], "Namespace", "the namespace comes first");
}

#[test]
fn mastodon_processes_are_wired_as_documented() {
    let objs = rendered(&instance("community"));
    let web = find(&objs, "Deployment", "web").unwrap();
    let c = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "ghcr.io/mastodon/mastodon:v4.7.6");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(
        web["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        991
    );
    let streaming = find(&objs, "Deployment", "streaming").unwrap();
    let s = &streaming["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(s["image"], "ghcr.io/mastodon/mastodon-streaming:v4.7.6");
    assert_eq!(
        s["readinessProbe"]["httpGet"]["path"],
        "/api/v1/streaming/health"
    );
    // Streaming gets the database and Redis passwords, not the app secrets.
    assert!(s["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e.get("secretRef").is_none()));
    let sidekiq = find(&objs, "Deployment", "sidekiq").unwrap();
    assert_eq!(sidekiq["spec"]["replicas"], 1);
    assert_eq!(sidekiq["spec"]["strategy"]["type"], "Recreate");
    let cmd: Vec<&str> = sidekiq["spec"]["template"]["spec"]["containers"][0]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(cmd.windows(2).any(|w| w == ["-q", "scheduler"]));
    let env = &find(&objs, "ConfigMap", "app-env").unwrap()["data"];
    assert_eq!(env["LOCAL_DOMAIN"], "lyon.social");
    assert_eq!(env["RAILS_ENV"], "production");
    assert_eq!(env["MALLOC_ARENA_MAX"], "2");
    let secret = find(&objs, "Secret", "app-secrets").unwrap();
    assert_eq!(secret["stringData"]["SECRET_KEY_BASE"], "ab".repeat(64));
    // Mastodon 4.3 does not boot without OTP_SECRET; every pod reads it from this Secret.
    assert_eq!(secret["stringData"]["OTP_SECRET"], "cd".repeat(64));

    let ingress = find(&objs, "Ingress", "app").unwrap();
    let paths = &ingress["spec"]["rules"][0]["http"]["paths"];
    assert_eq!(paths[0]["path"], "/api/v1/streaming");
    assert_eq!(paths[0]["backend"]["service"]["name"], "streaming");
    assert_eq!(paths[1]["backend"]["service"]["port"]["number"], 3000);
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"],
        "100m"
    );
    assert!(ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"].is_string());
    assert!(
        find(&objs, "PodDisruptionBudget", "web").is_none(),
        "one web replica: no PDB"
    );
    assert!(
        find(&objs, "Job", "db-prepare-v4-7-6").is_some()
            && find(&objs, "Job", "create-owner").is_some()
    );
    assert!(find(&objs, "CronJob", "media-remove").is_some());
}

#[test]
fn plans_and_states_change_what_they_should() {
    let large = rendered(&instance("institution"));
    assert!(find(&large, "PodDisruptionBudget", "web").is_some());
    assert_eq!(
        find(&large, "Deployment", "web").unwrap()["spec"]["replicas"],
        3
    );

    let mut suspended = instance("institution");
    suspended.spec.suspended = true;
    let objs = rendered(&suspended);
    for name in ["web", "streaming", "sidekiq"] {
        assert_eq!(
            find(&objs, "Deployment", name).unwrap()["spec"]["replicas"],
            0,
            "{name}"
        );
    }
    let ingress = find(&objs, "Ingress", "app").unwrap();
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "suspended"
    );
    // The page answers 503 with Retry-After to everything (a delivery from another
    // server retries a 503; a 4xx it drops for good), its probe a 200 of its own.
    let page = find(&objs, "Deployment", "suspended").unwrap();
    let c = &page["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    let conf = find(&objs, "ConfigMap", "suspended-page").unwrap()["data"]["default.conf"]
        .as_str()
        .unwrap();
    assert!(conf.contains("location / {\n        return 503;"), "{conf}");
    assert!(conf.contains("error_page 503 /index.html;"), "{conf}");
    assert!(
        conf.contains("add_header Retry-After 3600 always;"),
        "{conf}"
    );
    assert!(conf.contains("location = /healthz"), "{conf}");
    let mounts = c["volumeMounts"].to_string();
    assert!(mounts.contains("/etc/nginx/conf.d"), "{mounts}");
    assert_eq!(
        find(&objs, "CronJob", "media-remove").unwrap()["spec"]["suspend"],
        true
    );
    assert!(
        find(&objs, "StatefulSet", "postgres").is_some(),
        "data is kept"
    );

    // Once installed, the install jobs are no longer rendered.
    let mut running = instance("community");
    running.status = Some(InstanceStatus {
        running_version: Some("v4.7.6".into()),
        ..Default::default()
    });
    assert!(find(&rendered(&running), "Job", "create-owner").is_none());

    // Redis sizing comes from the spec, and the quota makes room for it.
    let quota_storage = |objs: &[Value]| {
        find(objs, "ResourceQuota", "tenant-quota").unwrap()["spec"]["hard"]["requests.storage"]
            .as_str()
            .unwrap()
            .trim_end_matches("Gi")
            .parse::<i64>()
            .unwrap()
    };
    let mut big_redis = instance("community");
    big_redis.spec.redis.storage = "10Gi".into();
    big_redis.spec.redis.memory_limit = "2Gi".into();
    let objs = rendered(&big_redis);
    let redis = find(&objs, "StatefulSet", "redis").unwrap();
    assert_eq!(
        redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "10Gi"
    );
    assert_eq!(
        redis["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "2Gi"
    );
    assert_eq!(
        quota_storage(&objs),
        quota_storage(&rendered(&instance("community"))) + 8
    );
}

#[test]
fn pods_restart_when_settings_change_and_only_then() {
    let hash = |i: &Instance| {
        rendered(i)
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "web")
            .unwrap()["spec"]["template"]["metadata"]["annotations"]["herd.dev/config-hash"]
            .clone()
    };
    let a = instance("community");
    assert_eq!(hash(&a), hash(&a.clone()));
    let mut b = a.clone();
    b.spec
        .extra_env
        .insert("SINGLE_USER_MODE".into(), "true".into());
    assert_ne!(hash(&a), hash(&b));
}

#[test]
fn upgrade_jobs_skip_post_deployment_migrations_first() {
    let i = instance("community");
    let s = fixed_secrets();
    let cluster = ClusterSettings::default();
    let (pre, post) = render::upgrade_jobs(&Tenant {
        instance: &i,
        secrets: &s,
        cluster: &cluster,
    })
    .unwrap();
    let (Child::Job(pre), Child::Job(post)) = (pre, post) else {
        panic!("jobs")
    };
    let env = |j: &k8s_openapi::api::batch::v1::Job| {
        serde_json::to_value(
            &j.spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers[0]
                .env,
        )
        .unwrap()
    };
    assert_eq!(pre.metadata.name.as_deref(), Some("migrate-pre-v4-7-6"));
    assert!(env(&pre)
        .to_string()
        .contains("SKIP_POST_DEPLOYMENT_MIGRATIONS"));
    assert!(!env(&post)
        .to_string()
        .contains("SKIP_POST_DEPLOYMENT_MIGRATIONS"));
}

fn gotosocial(plan: &str) -> Instance {
    let mut i = instance(plan);
    i.spec.app = App::Gotosocial;
    i.spec.version = "0.20.2".into();
    i
}

#[test]
fn snapshot_gotosocial() {
    insta::assert_yaml_snapshot!("gotosocial_community", rendered(&gotosocial("community")));
}

#[test]
fn the_owner_password_reset_job_names_its_command_in_full() {
    let s = fixed_secrets();
    let cluster = ClusterSettings::default();
    for (i, expected) in [
        (instance("community"), "Account.find_local!(ENV.fetch"),
        (
            gotosocial("community"),
            r#""args":["admin","account","password","--username""#,
        ),
    ] {
        let t = Tenant {
            instance: &i,
            secrets: &s,
            cluster: &cluster,
        };
        let job = render::reset_owner_job(&t, "reset-owner-password-3")
            .unwrap()
            .to_value()
            .unwrap();
        assert_eq!(job["metadata"]["name"], "reset-owner-password-3");
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        // An image's entrypoint (GoToSocial's starts the server) must not swallow the
        // command: it is given in full.
        assert!(c["command"].is_array(), "{c}");
        assert!(c.to_string().contains(expected), "{c}");
        assert!(c.to_string().contains("owner-password"), "{c}");
    }
}

#[test]
fn gotosocial_owner_containers_name_the_binary_not_only_arguments() {
    let s = fixed_secrets();
    let cluster = ClusterSettings::default();
    let i = gotosocial("community");
    let t = Tenant {
        instance: &i,
        secrets: &s,
        cluster: &cluster,
    };
    let jobs = render::install_jobs(&t).unwrap();
    let job = jobs[0].to_value().unwrap();
    let pod = &job["spec"]["template"]["spec"];
    for c in pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(pod["containers"].as_array().unwrap())
    {
        assert_eq!(c["command"], json!(["/gotosocial/gotosocial"]), "{c}");
        assert_eq!(c["args"][0], "admin", "{c}");
    }
    // The server too: its image's ENTRYPOINT says `server start` already, so arguments
    // alone would run `server start server start`.
    let objs = rendered(&gotosocial("community"));
    let web = find(&objs, "Deployment", "web").unwrap();
    let c = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(["/gotosocial/gotosocial"]), "{c}");
    assert_eq!(c["args"], json!(["server", "start"]), "{c}");
}

/// Set-up, migration and owner Jobs never mount the media volume (a volume still waiting
/// for storage would hold the install at its first step); the CronJob that removes media
/// does.
#[test]
fn only_what_touches_media_mounts_it() {
    let i = instance("community");
    assert!(i.spec.media_s3.is_none(), "media on a volume");
    let s = fixed_secrets();
    let cluster = ClusterSettings::default();
    let t = Tenant {
        instance: &i,
        secrets: &s,
        cluster: &cluster,
    };
    let mounts_media = |pod: &serde_json::Value| {
        pod["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["name"] == "media"))
    };
    for job in render::install_jobs(&t).unwrap() {
        let job = job.to_value().unwrap();
        assert!(
            !mounts_media(&job["spec"]["template"]["spec"]),
            "{}",
            job["metadata"]["name"]
        );
    }
    let objs = rendered(&i);
    let cron = find(&objs, "CronJob", "media-remove").unwrap();
    assert!(mounts_media(
        &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    ));
    let web = find(&objs, "Deployment", "web").unwrap();
    assert!(mounts_media(&web["spec"]["template"]["spec"]));
}

/// Media on a volume: ReadWriteOnce on the default StorageClass, with every pod that
/// mounts it following the others to one node (a pod elsewhere would wait forever for the
/// volume); ReadWriteMany on the StorageClass the operator names; and a plan with several
/// web pods refused on a cluster that has neither object storage nor shared volumes.
#[test]
fn media_on_a_volume_stays_on_one_node_unless_the_cluster_shares_storage() {
    let s = fixed_secrets();
    let render_on = |i: &Instance, cluster: &ClusterSettings| {
        render::render(&Tenant {
            instance: i,
            secrets: &s,
            cluster,
        })
        .map(|children| {
            children
                .iter()
                .map(|c| c.to_value().unwrap())
                .collect::<Vec<_>>()
        })
    };
    let pinned = |objs: &[Value]| -> Vec<String> {
        pod_specs(objs)
            .into_iter()
            .filter(|(_, pod)| !pod["affinity"]["podAffinity"].is_null())
            .map(|(name, _)| name)
            .collect()
    };
    let small = instance("community");
    let objs = render_on(&small, &ClusterSettings::default()).unwrap();
    let claim = find(&objs, "PersistentVolumeClaim", "media").unwrap();
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert!(
        claim["spec"]["storageClassName"].is_null(),
        "the default class"
    );
    assert_eq!(
        pinned(&objs),
        [
            "Deployment/web",
            "Deployment/sidekiq",
            "CronJob/media-remove",
            "CronJob/preview-cards-remove"
        ]
    );
    // Each pinned pod carries the label the others follow, and follows it.
    for (name, pod) in pod_specs(&objs) {
        let term =
            &pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
        if term.is_null() {
            continue;
        }
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname", "{name}");
        assert_eq!(
            term["labelSelector"]["matchLabels"]["herd.dev/media"],
            "volume"
        );
        assert_eq!(
            term["labelSelector"]["matchLabels"]["herd.dev/tenant"],
            "lyon"
        );
        let obj = objs
            .iter()
            .find(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ) == name
            })
            .unwrap();
        let template = if obj["kind"] == "CronJob" {
            &obj["spec"]["jobTemplate"]["spec"]["template"]
        } else {
            &obj["spec"]["template"]
        };
        assert_eq!(
            template["metadata"]["labels"]["herd.dev/media"], "volume",
            "{name}"
        );
    }

    let shared = ClusterSettings {
        media_shared_storage_class: Some("cephfs".into()),
        ..ClusterSettings::default()
    };
    let objs = render_on(&small, &shared).unwrap();
    let claim = find(&objs, "PersistentVolumeClaim", "media").unwrap();
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteMany"]));
    assert_eq!(claim["spec"]["storageClassName"], "cephfs");
    assert!(pinned(&objs).is_empty());

    let bigger = instance("organization");
    assert!(bigger.spec.sizing.web_replicas > 1);
    let refused = render_on(&bigger, &ClusterSettings::default()).unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("2 web pods") && message.contains("HERD_MEDIA_SHARED_STORAGE_CLASS"),
        "{message}"
    );
    let objs = render_on(&bigger, &shared).unwrap();
    assert_eq!(
        find(&objs, "PersistentVolumeClaim", "media").unwrap()["spec"]["accessModes"],
        json!(["ReadWriteMany"])
    );
    // With media in object storage: no volume, nothing pinned.
    let mut s3 = bigger.clone();
    s3.spec.media_s3 = Some(S3Spec {
        bucket: "b".into(),
        endpoint: "https://s3.example".into(),
        region: None,
        alias_host: None,
        secret_ref: "s3".into(),
        permission: None,
    });
    let objs = render_on(&s3, &ClusterSettings::default()).unwrap();
    assert!(find(&objs, "PersistentVolumeClaim", "media").is_none());
    assert!(pinned(&objs).is_empty());
}

/// Media in object storage: Mastodon builds media URLs from `S3_PROTOCOL` and
/// `S3_HOSTNAME` (else from Amazon's host names), and sends no ACL when told so.
#[test]
fn s3_media_urls_name_the_provider_and_acls_can_be_left_out() {
    let mut i = instance("community");
    let s3 = |permission: Option<&str>| S3Spec {
        bucket: "lyon-media".into(),
        endpoint: "https://s3.fr-par.scw.cloud".into(),
        region: Some("fr-par".into()),
        alias_host: None,
        secret_ref: "s3".into(),
        permission: permission.map(str::to_owned),
    };
    i.spec.media_s3 = Some(s3(None));
    let objs = rendered(&i);
    let env = &find(&objs, "ConfigMap", "app-env").unwrap()["data"];
    assert_eq!(env["S3_PROTOCOL"], "https");
    assert_eq!(env["S3_HOSTNAME"], "s3.fr-par.scw.cloud");
    assert!(
        env["S3_PERMISSION"].is_null(),
        "Mastodon's default when unset"
    );
    i.spec.media_s3 = Some(s3(Some("")));
    let objs = rendered(&i);
    let env = &find(&objs, "ConfigMap", "app-env").unwrap()["data"];
    assert_eq!(env["S3_PERMISSION"], "");
}

/// The Mastodon owner Job creates the account approved (closed registrations would leave it
/// pending review), only when it is absent, and fails on any other error instead of
/// hiding it behind "exists already".
#[test]
fn the_mastodon_owner_job_approves_the_owner_and_hides_no_failure() {
    let objs = rendered(&instance("community"));
    let job = find(&objs, "Job", "create-owner").unwrap();
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    let script = c["command"][2].as_str().unwrap();
    assert!(script.starts_with("set -eu\n"), "{script}");
    assert!(
        script.contains("accounts create \"$OWNER_USERNAME\" --email \"$OWNER_EMAIL\" --confirmed --approve --role Owner >/dev/null"),
        "tootctl's own random password stays out of the log: {script}"
    );
    assert!(!script.contains("|| echo"), "no failure hidden: {script}");
    assert!(
        script.contains("Account.find_local(ENV.fetch(\"OWNER_USERNAME\"))"),
        "{script}"
    );
    // The password goes to the account looked up, by its username.
    assert!(
        script.contains("Account.find_local!(ENV.fetch(\"OWNER_USERNAME\")).user"),
        "{script}"
    );
    assert!(script.contains("u.approve! unless u.approved?"), "{script}");
}

#[test]
fn gotosocial_is_one_process_without_redis() {
    let objs = rendered(&gotosocial("community"));
    assert!(find(&objs, "StatefulSet", "redis").is_none());
    assert!(
        find(&objs, "Deployment", "sidekiq").is_none()
            && find(&objs, "Deployment", "streaming").is_none()
    );
    let web = find(&objs, "Deployment", "web").unwrap();
    let c = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "superseriousbusiness/gotosocial:0.20.2");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        web["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
        1000
    );
    let env = &find(&objs, "ConfigMap", "app-env").unwrap()["data"];
    assert_eq!(env["GTS_HOST"], "lyon.social");
    assert_eq!(env["GTS_DB_TYPE"], "postgres");
    assert_eq!(env["GTS_DB_DATABASE"], "gotosocial");
    let ingress = find(&objs, "Ingress", "app").unwrap();
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"],
        8080
    );
    let pg = find(&objs, "StatefulSet", "postgres").unwrap();
    assert!(
        pg.to_string()
            .contains("\"POSTGRES_DB\",\"value\":\"gotosocial\""),
        "{pg}"
    );
}

#[test]
fn the_quota_fits_every_pod_at_its_limits_during_a_rolling_update() {
    use herd_k8s::render::tenancy::{cpu_millis, memory_mi};
    for plan in ["community", "organization", "institution"] {
        let objs = rendered(&instance(plan));
        let hard = &find(&objs, "ResourceQuota", "tenant-quota").unwrap()["spec"]["hard"];
        let quota_cpu = cpu_millis(hard["limits.cpu"].as_str().unwrap());
        let quota_mem = memory_mi(hard["limits.memory"].as_str().unwrap());
        let (mut cpu, mut mem) = (0, 0);
        for (what, spec) in pod_specs(&objs) {
            let obj = objs
                .iter()
                .find(|o| {
                    format!(
                        "{}/{}",
                        o["kind"].as_str().unwrap(),
                        o["metadata"]["name"].as_str().unwrap()
                    ) == what
                })
                .unwrap();
            // Rolling Deployments surge by one pod; cron jobs do not run at steady state.
            let n = match obj["kind"].as_str().unwrap() {
                "Deployment" if obj["spec"]["strategy"]["type"] == "RollingUpdate" => {
                    obj["spec"]["replicas"].as_i64().unwrap() + 1
                }
                "Deployment" => obj["spec"]["replicas"].as_i64().unwrap(),
                "CronJob" => 0,
                _ => 1,
            };
            for c in spec["containers"].as_array().unwrap() {
                cpu += n * cpu_millis(c["resources"]["limits"]["cpu"].as_str().unwrap());
                mem += n * memory_mi(c["resources"]["limits"]["memory"].as_str().unwrap());
            }
        }
        assert!(
            cpu <= quota_cpu,
            "{plan}: pods need {cpu}m CPU, quota {quota_cpu}m"
        );
        assert!(
            mem <= quota_mem,
            "{plan}: pods need {mem}Mi, quota {quota_mem}Mi"
        );
    }
}

/// The objects as a YAML 1.1 reader (PyYAML, as kubectl's go-yaml v2 reads them) sees the
/// documents of `yaml`, as JSON.
fn read_as_yaml_1_1(yaml: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML (scripts/test.sh installs python3-yaml)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML refused it (a date or another type JSON cannot hold?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `herd render` prints YAML that kubectl (YAML 1.1) reads as the objects rendered: no
/// string turns into a boolean (Redis's `--appendonly yes`), a number or a date.
#[test]
fn rendered_yaml_reads_the_same_in_yaml_1_1() {
    let s = fixed_secrets();
    let mut cases = Vec::new();
    for plan in ["community", "organization", "institution"] {
        for suspended in [false, true] {
            let mut i = instance(plan);
            i.spec.suspended = suspended;
            i.spec
                .extra_env
                .insert("SINGLE_USER_MODE".into(), "yes".into());
            // Line breaks YAML 1.1 has and JSON does not escape.
            i.spec
                .extra_env
                .insert("ODD".into(), "a\u{2028}b\u{85}c\u{2029}d".into());
            cases.push(i);
        }
    }
    let mut g = instance("community");
    g.spec.app = App::Gotosocial;
    g.spec.version = "0.20.2".into();
    g.spec
        .extra_env
        .insert("SINGLE_USER_MODE".into(), "yes".into());
    cases.push(g);
    for i in cases {
        let cluster = common::cluster_for(&i);
        let children = render::render(&Tenant {
            instance: &i,
            secrets: &s,
            cluster: &cluster,
        })
        .unwrap();
        let yaml = render::to_yaml(&children).unwrap();
        let expected: Vec<Value> = children.iter().map(|c| c.to_value().unwrap()).collect();
        let read = read_as_yaml_1_1(&yaml);
        assert_eq!(read.len(), expected.len());
        for (r, e) in read.iter().zip(&expected) {
            assert_eq!(r, e, "{} read differently", e["metadata"]["name"]);
        }
        assert!(
            yaml.contains("SINGLE_USER_MODE: \"yes\""),
            "a setting's `yes` is quoted"
        );
    }
}

/// The CRD and every manifest in deploy/ read the same in YAML 1.1 (kubectl) and YAML 1.2.
#[test]
fn deploy_manifests_read_the_same_in_yaml_1_1() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let mut files = vec![root.join("crd/instances.herd.dev.yaml")];
    for dir in ["operator", "control-plane"] {
        for f in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 10, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let as_1_2: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect();
        assert_eq!(read_as_yaml_1_1(&text), as_1_2, "{}", f.display());
    }
}

/// No password on any Mastodon pod's command line (a node's process list shows it): Redis
/// reads its password from a configuration file in a Secret. SMTP login and password are
/// optional, for a relay that takes mail without logging in.
#[test]
fn no_password_on_a_command_line_and_smtp_login_is_optional() {
    let s = fixed_secrets();
    let objs = rendered(&instance("community"));
    let secrets = [
        s.get(secrets::REDIS_PASSWORD).unwrap().to_owned(),
        s.get(secrets::DB_PASS).unwrap().to_owned(),
    ];
    for (name, pod) in pod_specs(&objs) {
        for c in pod["containers"].as_array().unwrap() {
            let argv = format!("{} {}", c["command"], c["args"]);
            // Kubernetes expands `$(VAR)` into the command line itself.
            let expanded = argv
                .split("$(")
                .skip(1)
                .filter_map(|rest| rest.split(')').next())
                .any(|var| var.contains("PASS") || var.contains("SECRET") || var.contains("KEY"));
            assert!(!expanded, "{name}: {argv}");
            for secret in &secrets {
                assert!(!argv.contains(secret.as_str()), "{name}: {argv}");
            }
        }
    }
    let redis = find(&objs, "StatefulSet", "redis").unwrap();
    let c = &redis["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["command"],
        json!(["redis-server", "/etc/redis/redis.conf"])
    );
    let config = find(&objs, "Secret", "redis-config").unwrap();
    let conf = config["stringData"]["redis.conf"].as_str().unwrap();
    assert!(
        conf.contains(&format!("requirepass {}\n", secrets[0])),
        "{conf}"
    );
    assert!(conf.contains("appendonly yes"), "{conf}");

    let sidekiq = find(&objs, "Deployment", "sidekiq").unwrap();
    let env = sidekiq["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let optional = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .map(|e| e["valueFrom"]["secretKeyRef"]["optional"] == true)
            .unwrap()
    };
    assert!(optional("SMTP_LOGIN") && optional("SMTP_PASSWORD"));
    assert!(!optional("SMTP_SERVER"));
}

/// Every container of `spec`, init containers among them.
fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .collect()
}

#[test]
fn the_app_and_herds_jobs_log_in_without_superuser() {
    let mut cnpg = instance("community");
    cnpg.spec.database.mode = DatabaseMode::CloudNativePg;
    for (i, user, key) in [
        (instance("community"), "mastodon_app", secrets::DB_APP_PASS),
        (cnpg, "mastodon", secrets::DB_PASS),
        (
            gotosocial("community"),
            "gotosocial_app",
            secrets::DB_APP_PASS,
        ),
    ] {
        let own_postgres = i.spec.database.mode != DatabaseMode::CloudNativePg;
        let s = fixed_secrets();
        let cluster = common::cluster_for(&i);
        let t = Tenant {
            instance: &i,
            secrets: &s,
            cluster: &cluster,
        };
        let mut objs = rendered(&i);
        // The final backup's Job, and (in the rendered children) the scheduled one's.
        let target = herd_k8s::render::backup::BackupTarget {
            bucket: "b".into(),
            endpoint: "https://s3.example.net".into(),
            prefix: "p/".into(),
            region: "r".into(),
            secrets_recipient: common::BACKUP_RECIPIENT.into(),
        };
        objs.extend(
            herd_k8s::render::backup::final_backup(&t, &target, &Default::default(), "x")
                .unwrap()
                .into_iter()
                .map(|c| c.to_value().unwrap()),
        );
        // The one-off Jobs: install, owner-password reset, upgrade migrations.
        let mut jobs = render::install_jobs(&t).unwrap();
        jobs.push(render::reset_owner_job(&t, "reset-owner-1").unwrap());
        if i.spec.app == App::Mastodon {
            let (pre, post) = render::upgrade_jobs(&t).unwrap();
            jobs.extend([pre, post]);
        }
        objs.extend(jobs.into_iter().map(|c| c.to_value().unwrap()));
        let config = find(&objs, "ConfigMap", "app-env").unwrap();
        let db_user = &config["data"][match i.spec.app {
            App::Mastodon => "DB_USER",
            App::Gotosocial => "GTS_DB_USER",
        }];
        assert_eq!(db_user, user, "{:?}", i.spec.app);
        let mut logins = 0;
        for (what, spec) in pod_specs(&objs) {
            for c in containers(spec) {
                let at = format!("{what} {}", c["name"]);
                let env = c["env"].as_array().cloned().unwrap_or_default();
                for e in &env {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    if r["name"] == "app-secrets" && r["key"] == secrets::DB_PASS && own_postgres {
                        assert_eq!(
                            what, "StatefulSet/postgres",
                            "{at}: the superuser's password"
                        );
                    }
                }
                let var = |name: &str| env.iter().find(|e| e["name"] == name);
                if let Some(u) = var("PGUSER") {
                    if c["name"] != "roles" {
                        assert_eq!(u["value"], user, "{at}");
                        assert_eq!(
                            var("PGPASSWORD").unwrap()["valueFrom"]["secretKeyRef"]["key"],
                            key,
                            "{at}"
                        );
                        logins += 1;
                    }
                }
                if let Some(pass) = var("GTS_DB_PASSWORD") {
                    assert_eq!(pass["valueFrom"]["secretKeyRef"]["key"], key, "{at}");
                    logins += 1;
                }
                let reads_app_secret = c["envFrom"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|s| s["secretRef"]["name"] == "app-secrets"));
                if reads_app_secret {
                    // Over the Secret's DB_PASS, which may be the superuser's.
                    let pass = var("DB_PASS").unwrap_or_else(|| panic!("{at}: no DB_PASS"));
                    assert_eq!(pass["valueFrom"]["secretKeyRef"]["key"], key, "{at}");
                    logins += 1;
                }
            }
        }
        // The app's processes and Jobs, and the backup's dump.
        let least = match i.spec.app {
            App::Mastodon => 8,
            App::Gotosocial => 3,
        };
        assert!(logins >= least, "{:?}: {logins} logins checked", i.spec.app);
        // Where Herd runs PostgreSQL, its pod keeps the app's login, ready only once made.
        if let Some(sts) = find(&objs, "StatefulSet", "postgres") {
            let keeper = containers(&sts["spec"]["template"]["spec"])
                .into_iter()
                .find(|c| c["name"] == "roles")
                .expect("the role keeper");
            let env = keeper["env"].as_array().unwrap();
            let value = |n: &str| env.iter().find(|e| e["name"] == n).unwrap().clone();
            assert_eq!(value("APP_ROLE")["value"], user);
            assert_eq!(
                value("APP_PASSWORD")["valueFrom"]["secretKeyRef"]["key"],
                key
            );
            assert_eq!(
                value("PGHOST")["value"],
                "/var/run/postgresql",
                "the pod's socket"
            );
            assert_eq!(
                keeper["readinessProbe"]["exec"]["command"],
                json!(["test", "-f", herd_k8s::render::data::ROLES_DONE])
            );
        } else {
            assert!(!own_postgres);
        }
    }
}
