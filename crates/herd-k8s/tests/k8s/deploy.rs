//! deploy/: every manifest passes the Kubernetes schema, and the operator's RBAC grants each
//! verb it uses on each kind it renders, with no wildcard.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::App;
use herd_k8s::render::backup::BackupTarget;
use herd_k8s::render::{self, ClusterSettings, Tenant};
use herd_k8s::secrets::AppSecrets;
use kube::api::{ApiResource, GroupVersionKind};
use kube_fake_client::validator::{RuntimeOpenAPIValidator, SchemaValidator};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every object of the operator's kustomization (deploy/), in file order.
fn manifests() -> Vec<Value> {
    manifests_in(&deploy_dir())
}

/// Every object of the control plane's kustomization (deploy/control-plane/).
fn control_plane() -> Vec<Value> {
    manifests_in(&deploy_dir().join("control-plane"))
}

fn manifests_in(dir: &Path) -> Vec<Value> {
    let k: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    for file in k["resources"].as_array().unwrap() {
        let text = std::fs::read_to_string(dir.join(file.as_str().unwrap())).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap();
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    out
}

fn find<'a>(all: &'a [Value], kind: &str, name: &str) -> &'a Value {
    all.iter()
        .find(|v| v["kind"] == kind && v["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in deploy/"))
}

#[test]
fn manifests_pass_the_schema() {
    let spec = std::env::var("HERD_K8S_OPENAPI").unwrap_or_else(|_| {
        panic!("HERD_K8S_OPENAPI is not set: export HERD_K8S_OPENAPI=$(scripts/k8s-openapi.sh)")
    });
    let v = RuntimeOpenAPIValidator::from_file(&spec).unwrap();
    let mut checked = 0;
    for m in manifests().into_iter().chain(control_plane()) {
        let api_version = m["apiVersion"].as_str().unwrap();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let kind = m["kind"].as_str().unwrap();
        if kind == "CustomResourceDefinition" {
            continue; // checked against the Rust types by the crd drift test
        }
        if group == "postgresql.cnpg.io" {
            continue; // not Kubernetes' own; checked below by what Herd relies on
        }
        v.enable_validation_for(&format!("{group}/{version}/{kind}"))
            .unwrap();
        if let Err(e) = v.validate(group, version, kind, &m) {
            panic!("{kind}/{} fails validation: {e}", m["metadata"]["name"]);
        }
        checked += 1;
    }
    assert!(checked >= 18, "{checked}");
}

#[test]
fn the_control_plane_runs_web_and_workers_on_its_database_with_least_privilege() {
    let all = control_plane();
    // CloudNativePG names the app Secret <cluster>-app with the connection URI in `uri`.
    let db = find(&all, "Cluster", "herd-db");
    assert_eq!(db["apiVersion"], "postgresql.cnpg.io/v1");
    assert_eq!(db["spec"]["bootstrap"]["initdb"]["database"], "herd");
    for (name, args, replicas) in [("herd-web", "serve", 3), ("herd-worker", "worker", 2)] {
        let d = find(&all, "Deployment", name);
        assert_eq!(d["spec"]["replicas"], replicas, "{name}");
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["args"], serde_json::json!([args]));
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        let env = c["env"].to_string();
        assert!(
            env.contains("herd-db-app") && env.contains("\"uri\""),
            "{name}: {env}"
        );
        let from = c["envFrom"].to_string();
        assert!(
            from.contains("herd-secrets") && from.contains("\"herd\""),
            "{from}"
        );
    }
    let web = find(&all, "Deployment", "herd-web");
    let c = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["env"].to_string().contains("HERD_NO_WORKER"));
    assert_eq!(
        find(&all, "Service", "herd-web")["spec"]["selector"]["app.kubernetes.io/name"],
        "herd-web"
    );
    assert_eq!(
        find(&all, "Ingress", "herd-web")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
            ["service"]["name"],
        "herd-web"
    );

    // The worker may do exactly what herd-orchestrator does on its own cluster.
    let role = grants(find(&all, "Role", "herd-worker"));
    needs(
        &role,
        "herd.dev",
        "instances",
        &["get", "list", "create", "patch", "delete"],
        "Role herd-worker",
    );
    needs(&role, "apps", "deployments", &["get"], "Role herd-worker");
    let secrets = find(&all, "ClusterRole", "herd-worker-owner-passwords");
    let granted = grants(secrets);
    needs(
        &granted,
        "",
        "secrets",
        &["get", "delete"],
        "ClusterRole herd-worker-owner-passwords",
    );
    assert_eq!(
        secrets["rules"][0]["resourceNames"],
        serde_json::json!(["owner-password"]),
        "the worker reads no other Secret"
    );
    assert_eq!(granted.len(), 2, "{granted:?}");
}

/// The (group, resource, verb) triples a set of RBAC rules grants; refuses wildcards.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        let list = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(!list(field).contains(&"*".to_owned()), "wildcard in {rule}");
        }
        for g in list("apiGroups") {
            for r in list("resources") {
                for v in list("verbs") {
                    out.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

fn needs(
    granted: &BTreeSet<(String, String, String)>,
    group: &str,
    resource: &str,
    verbs: &[&str],
    role: &str,
) {
    for v in verbs {
        assert!(
            granted.contains(&(group.to_owned(), resource.to_owned(), (*v).to_owned())),
            "{role} does not grant {v} on {group}/{resource}"
        );
    }
}

#[test]
fn rbac_grants_what_the_operator_does_and_no_wildcard() {
    let all = manifests();
    let cluster = grants(find(&all, "ClusterRole", "herd-operator"));
    let own = grants(find(&all, "Role", "herd-operator"));

    // Every kind the operator applies, over the app and database variants, plus the
    // deletion's backup objects.
    let mut kinds = BTreeSet::new();
    for (app, cnpg) in [
        (App::Mastodon, false),
        (App::Mastodon, true),
        (App::Gotosocial, false),
    ] {
        let mut i = common::lyon("institution");
        i.spec.app = app;
        let secrets = AppSecrets::generate();
        let target = BackupTarget {
            bucket: "b".into(),
            endpoint: "https://s3.example".into(),
            prefix: String::new(),
            region: "us-east-1".into(),
            secrets_recipient: crate::common::BACKUP_RECIPIENT.into(),
        };
        // With a backup target: the scheduled backups' CronJob and, for CloudNativePG,
        // its ScheduledBackup.
        let settings = ClusterSettings {
            has_cloudnative_pg: cnpg,
            backup: Some(target.clone()),
            ..common::cluster_for(&i)
        };
        let t = Tenant {
            instance: &i,
            secrets: &secrets,
            cluster: &settings,
        };
        let mut children = render::render(&t).unwrap();
        children
            .extend(render::backup::final_backup(&t, &target, &Default::default(), "t").unwrap());
        children.extend(
            render::backup::before_upgrade_backup(
                &t,
                &target,
                &Default::default(),
                "backup-before-v4-8-0",
            )
            .unwrap(),
        );
        children.push(render::backup::sealed_secrets(&t, b"sealed", "digest").unwrap());
        for c in children {
            let v = c.to_value().unwrap();
            let api_version = v["apiVersion"].as_str().unwrap().to_owned();
            let (group, version) = api_version
                .split_once('/')
                .map(|(g, v)| (g.to_owned(), v.to_owned()))
                .unwrap_or((String::new(), api_version.clone()));
            kinds.insert((group, version, v["kind"].as_str().unwrap().to_owned()));
        }
    }
    assert!(kinds.len() >= 15, "{kinds:?}");
    for (group, version, kind) in &kinds {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        // Server-side apply: get to diff, create and patch to write, delete to prune or
        // (for the namespace) to delete the tenant.
        needs(
            &cluster,
            group,
            &ar.plural,
            &["get", "create", "patch", "delete"],
            "ClusterRole",
        );
    }
    // Read back, pruned or watched.
    for (group, resource) in [
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("", "services"),
        ("", "configmaps"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "networkpolicies"),
        ("policy", "poddisruptionbudgets"),
    ] {
        needs(&cluster, group, resource, &["list"], "ClusterRole");
    }
    assert!(
        kinds.contains(&(
            "postgresql.cnpg.io".into(),
            "v1".into(),
            "ScheduledBackup".into()
        )),
        "{kinds:?}"
    );
    // Pods: waiting for the app to stop, reading backup summaries; CloudNativePG's
    // Backups: their outcome.
    needs(&cluster, "", "pods", &["list"], "ClusterRole");
    needs(
        &cluster,
        "postgresql.cnpg.io",
        "backups",
        &["list"],
        "ClusterRole",
    );
    needs(&cluster, "apps", "deployments", &["watch"], "ClusterRole");
    needs(&cluster, "batch", "jobs", &["watch"], "ClusterRole");
    // In its own namespace.
    needs(
        &own,
        "herd.dev",
        "instances",
        &["get", "list", "watch", "patch"],
        "Role",
    );
    needs(&own, "herd.dev", "instances/status", &["patch"], "Role");
    needs(
        &own,
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
        "Role",
    );
    needs(
        &own,
        "events.k8s.io",
        "events",
        &["create", "patch"],
        "Role",
    );
    // The API server's endpoints, read at start for CloudNativePG tenants' egress: in
    // `default` only, bound to the operator's account.
    let endpoints = find(&all, "Role", "herd-operator-api-endpoints");
    assert_eq!(endpoints["metadata"]["namespace"], "default");
    needs(
        &grants(endpoints),
        "discovery.k8s.io",
        "endpointslices",
        &["list"],
        "Role",
    );
    let binding = find(&all, "RoleBinding", "herd-operator-api-endpoints");
    assert_eq!(binding["metadata"]["namespace"], "default");
    assert_eq!(binding["subjects"][0]["name"], "herd-operator");
    assert_eq!(binding["roleRef"]["name"], "herd-operator-api-endpoints");
}

#[test]
fn the_deployment_runs_the_operator_as_its_service_account() {
    let all = manifests();
    let d = find(&all, "Deployment", "herd-operator");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "herd-operator");
    let c = &pod["containers"][0];
    assert_eq!(c["args"], serde_json::json!(["operator"]));
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let env = c["env"].to_string();
    for var in ["HERD_OPERATOR_NAMESPACE", "POD_NAME"] {
        assert!(env.contains(var), "{env}");
    }
    let binding = find(&all, "ClusterRoleBinding", "herd-operator");
    assert_eq!(binding["subjects"][0]["name"], "herd-operator");
    assert_eq!(binding["subjects"][0]["namespace"], "herd-system");
}

/// The admission policy narrows the operator's writes to herd-* namespaces: its CEL,
/// evaluated against requests as the API server builds them, allows tenants and its own
/// namespace and refuses every other.
#[test]
fn the_operator_writes_only_in_herd_namespaces() {
    let all = manifests();
    let policy = find(
        &all,
        "ValidatingAdmissionPolicy",
        "herd-operator-tenant-namespaces",
    );
    let binding = find(
        &all,
        "ValidatingAdmissionPolicyBinding",
        "herd-operator-tenant-namespaces",
    );
    assert_eq!(
        binding["spec"]["policyName"],
        "herd-operator-tenant-namespaces"
    );
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"])
    );
    let eval = |expression: &str, request: &Value| -> bool {
        let program = cel::Program::compile(expression).unwrap();
        let mut ctx = cel::Context::default();
        ctx.add_variable("request", request.clone()).unwrap();
        matches!(program.execute(&ctx).unwrap(), cel::Value::Bool(true))
    };
    let matches = policy["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap();
    let rule = policy["spec"]["validations"][0]["expression"]
        .as_str()
        .unwrap();
    let request = |user: &str, namespace: &str, kind: &str, name: &str| {
        serde_json::json!({
            "userInfo": { "username": user }, "operation": "CREATE",
            "namespace": namespace, "kind": { "group": "", "version": "v1", "kind": kind }, "name": name,
        })
    };
    // The namespaces it writes keep the restricted Pod Security Standard.
    let pss = policy["spec"]["validations"][1]["expression"]
        .as_str()
        .unwrap();
    let admits = |request: &Value, object: &Value| -> bool {
        let program = cel::Program::compile(pss).unwrap();
        let mut ctx = cel::Context::default();
        ctx.add_variable("request", request.clone()).unwrap();
        ctx.add_variable("object", object.clone()).unwrap();
        matches!(program.execute(&ctx).unwrap(), cel::Value::Bool(true))
    };
    let ns_request = request(
        "system:serviceaccount:herd-system:herd-operator",
        "",
        "Namespace",
        "herd-lyon",
    );
    let labelled = |level: &str| serde_json::json!({ "metadata": { "name": "herd-lyon", "labels": { "pod-security.kubernetes.io/enforce": level } } });
    assert!(admits(&ns_request, &labelled("restricted")));
    assert!(!admits(&ns_request, &labelled("privileged")));
    assert!(!admits(
        &ns_request,
        &serde_json::json!({ "metadata": { "name": "herd-lyon" } })
    ));
    let mut delete = ns_request.clone();
    delete["operation"] = "DELETE".into();
    assert!(admits(&delete, &Value::Null));
    assert!(admits(
        &request(
            "system:serviceaccount:herd-system:herd-operator",
            "herd-lyon",
            "Deployment",
            "web"
        ),
        &serde_json::json!({ "metadata": { "name": "web" } })
    ));
    // And the namespaces Herd renders meet it.
    let i = common::lyon("community");
    let secrets = AppSecrets::generate();
    let cluster = ClusterSettings::default();
    let ns = render::render(&Tenant {
        instance: &i,
        secrets: &secrets,
        cluster: &cluster,
    })
    .unwrap()
    .remove(0)
    .to_value()
    .unwrap();
    assert_eq!(ns["kind"], "Namespace");
    assert!(admits(&ns_request, &ns));
    let operator = "system:serviceaccount:herd-system:herd-operator";
    for (ns, kind, name) in [
        ("herd-lyon", "Deployment", "web"),
        ("herd-system", "Lease", "herd-operator"),
        ("", "Namespace", "herd-lyon"),
    ] {
        let r = request(operator, ns, kind, name);
        assert!(
            eval(matches, &r) && eval(rule, &r),
            "{ns} {kind}/{name} refused"
        );
    }
    for (ns, kind, name) in [
        ("kube-system", "Secret", "x"),
        ("default", "Pod", "x"),
        ("", "Namespace", "kube-system"),
        ("", "ClusterRoleBinding", "herd-admin"),
    ] {
        let r = request(operator, ns, kind, name);
        assert!(
            eval(matches, &r) && !eval(rule, &r),
            "{ns} {kind}/{name} allowed"
        );
    }
    // Other accounts are not this policy's business.
    assert!(!eval(
        matches,
        &request("system:serviceaccount:kube-system:x", "default", "Pod", "x")
    ));
}
