//! The tenant's NetworkPolicies, evaluated as a CNI enforces them (herd_testkit::netpol):
//! everything a tenant needs passes (its app, its data, the ingress controller, DNS, the
//! internet, cert-manager's HTTP-01 solver, CloudNativePG's operator, instances and API
//! server access), and nothing wider.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::{DatabaseMode, Instance};
use herd_k8s::render::{self, ClusterSettings, Tenant};
use herd_k8s::secrets::AppSecrets;
use herd_testkit::netpol::{allows, allows_on, Peer};
use serde_json::Value;

const NS: &str = "herd-lyon";
const API_SERVER: &str = "172.18.0.2";

fn rendered(i: &Instance, cluster: &ClusterSettings) -> Vec<Value> {
    let secrets = AppSecrets::generate();
    render::render(&Tenant {
        instance: i,
        secrets: &secrets,
        cluster,
    })
    .unwrap()
    .iter()
    .map(|c| c.to_value().unwrap())
    .collect()
}

fn of_kind(objs: &[Value], kind: &str) -> Vec<Value> {
    objs.iter().filter(|o| o["kind"] == kind).cloned().collect()
}

/// A pod of the tenant with the labels its rendered template gives it.
fn pod_of(objs: &[Value], kind: &str, name: &str) -> Peer {
    let o = objs
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"));
    let labels = &o["spec"]["template"]["metadata"]["labels"];
    let mut p = Peer::pod(NS, &[]);
    for (k, v) in labels.as_object().unwrap() {
        p.labels.insert(k.clone(), v.as_str().unwrap().to_owned());
    }
    p
}

/// A CloudNativePG instance pod: the Cluster's inherited labels and those CloudNativePG sets.
fn cnpg_instance(objs: &[Value], role: &str) -> Peer {
    let c = objs.iter().find(|o| o["kind"] == "Cluster").unwrap();
    let mut p = Peer::pod(
        NS,
        &[
            ("cnpg.io/cluster", "postgres"),
            ("cnpg.io/instanceRole", role),
            ("role", role),
        ],
    );
    for (k, v) in c["spec"]["inheritedMetadata"]["labels"]
        .as_object()
        .unwrap()
    {
        p.labels.insert(k.clone(), v.as_str().unwrap().to_owned());
    }
    p
}

fn cnpg_cluster() -> ClusterSettings {
    ClusterSettings {
        api_server: vec![format!("{API_SERVER}:6443").parse().unwrap()],
        ..ClusterSettings::default()
    }
}

#[test]
fn a_cloudnative_pg_tenant_gets_what_it_needs_and_nothing_wider() {
    let mut i = common::lyon("community");
    i.spec.database.mode = DatabaseMode::CloudNativePg;
    let objs = rendered(&i, &cnpg_cluster());
    let p = of_kind(&objs, "NetworkPolicy");
    let web = pod_of(&objs, "Deployment", "web");
    let streaming = pod_of(&objs, "Deployment", "streaming");
    let sidekiq = pod_of(&objs, "Deployment", "sidekiq");
    let redis = pod_of(&objs, "StatefulSet", "redis");
    let primary = cnpg_instance(&objs, "primary");
    let replica = cnpg_instance(&objs, "replica");
    let ingress = Peer::pod(
        "ingress-nginx",
        &[("app.kubernetes.io/name", "ingress-nginx")],
    );
    let cnpg_operator = Peer::pod(
        "cnpg-system",
        &[("app.kubernetes.io/name", "cloudnative-pg")],
    );
    let other_in_cnpg_ns = Peer::pod("cnpg-system", &[("app", "something-else")]);
    let solver = Peer::pod(NS, &[("acme.cert-manager.io/http01-solver", "true")]);
    let dns = Peer::pod("kube-system", &[("k8s-app", "kube-dns")]);
    let api = Peer::address(API_SERVER);
    let internet = Peer::address("93.184.216.34");
    let mut other_tenant = web.clone();
    other_tenant.namespace = "herd-other".into();
    other_tenant
        .namespace_labels
        .insert("kubernetes.io/metadata.name".into(), "herd-other".into());

    for (what, from, to, port) in [
        ("ingress to web", &ingress, &web, 3000),
        ("ingress to streaming", &ingress, &streaming, 4000),
        ("ingress to the HTTP-01 solver", &ingress, &solver, 8089),
        ("web to PostgreSQL", &web, &primary, 5432),
        ("streaming to PostgreSQL", &streaming, &primary, 5432),
        ("sidekiq to Redis", &sidekiq, &redis, 6379),
        ("sidekiq to the internet", &sidekiq, &internet, 443),
        ("web to DNS", &web, &dns, 53),
        (
            "CloudNativePG's operator to an instance's status",
            &cnpg_operator,
            &primary,
            8000,
        ),
        (
            "CloudNativePG's operator to PostgreSQL",
            &cnpg_operator,
            &primary,
            5432,
        ),
        ("replica to primary", &replica, &primary, 5432),
        ("primary to a replica's status", &primary, &replica, 8000),
        ("an instance to the API server", &primary, &api, 6443),
        ("an instance to DNS", &replica, &dns, 53),
        (
            "web to a node-local DNS cache",
            &web,
            &Peer::address("169.254.20.10"),
            53,
        ),
    ] {
        assert!(allows(&p, from, to, port), "refused: {what}");
    }
    // Name resolution goes over UDP first.
    for (what, from) in [
        ("web", &web),
        ("an instance", &replica),
        ("sidekiq", &sidekiq),
    ] {
        assert!(
            allows_on(&p, from, &dns, 53, "UDP"),
            "{what} to DNS over UDP"
        );
        assert!(
            allows_on(&p, from, &Peer::address("169.254.20.10"), 53, "UDP"),
            "{what} to the node-local DNS cache over UDP"
        );
    }
    assert!(
        !allows_on(&p, &web, &internet, 443, "UDP"),
        "no QUIC to the internet"
    );
    for (what, from, to, port) in [
        ("ingress to PostgreSQL", &ingress, &primary, 5432),
        (
            "ingress to the solver on another port",
            &ingress,
            &solver,
            3000,
        ),
        (
            "another pod of CloudNativePG's namespace",
            &other_in_cnpg_ns,
            &primary,
            5432,
        ),
        (
            "another namespace to the solver",
            &cnpg_operator,
            &solver,
            8089,
        ),
        (
            "CloudNativePG's operator to web",
            &cnpg_operator,
            &web,
            3000,
        ),
        (
            "CloudNativePG's operator to Redis",
            &cnpg_operator,
            &redis,
            6379,
        ),
        ("web to the API server", &web, &api, 6443),
        ("web to an instance's status port", &web, &primary, 8000),
        ("an instance to the internet", &primary, &internet, 443),
        (
            "an instance to the API server on another port",
            &primary,
            &api,
            443,
        ),
        (
            "another tenant to PostgreSQL",
            &other_tenant,
            &primary,
            5432,
        ),
        ("another tenant to web", &other_tenant, &web, 3000),
        ("the solver to the internet", &solver, &internet, 443),
        ("Redis to the internet", &redis, &internet, 443),
        (
            "web to the cloud's metadata service",
            &web,
            &Peer::address("169.254.169.254"),
            80,
        ),
        (
            "web to the node-local DNS cache on another port",
            &web,
            &Peer::address("169.254.20.10"),
            80,
        ),
    ] {
        assert!(!allows(&p, from, to, port), "allowed: {what}");
    }
}

#[test]
fn cloudnative_pg_rules_only_where_it_runs_and_no_open_egress_without_api_addresses() {
    // A StatefulSet database: no CloudNativePG rules at all.
    let i = common::lyon("community");
    let objs = rendered(&i, &cnpg_cluster());
    let names: Vec<&str> = objs
        .iter()
        .filter(|o| o["kind"] == "NetworkPolicy")
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.contains("cnpg")), "{names:?}");
    assert!(names.contains(&"allow-acme-solver"));
    let p = of_kind(&objs, "NetworkPolicy");
    let db = pod_of(&objs, "StatefulSet", "postgres");
    let cnpg_operator = Peer::pod(
        "cnpg-system",
        &[("app.kubernetes.io/name", "cloudnative-pg")],
    );
    assert!(!allows(&p, &cnpg_operator, &db, 5432));

    // CloudNativePG, but the API server's addresses unknown: no rule for it, and no egress
    // rule without destinations (which would open everything).
    let mut i = common::lyon("community");
    i.spec.database.mode = DatabaseMode::CloudNativePg;
    let objs = rendered(&i, &ClusterSettings::default());
    let p = of_kind(&objs, "NetworkPolicy");
    assert!(p
        .iter()
        .all(|o| o["metadata"]["name"] != "allow-cnpg-api-server"));
    for policy in &p {
        for rule in policy["spec"]["egress"].as_array().into_iter().flatten() {
            assert!(
                rule["to"].as_array().is_some_and(|t| !t.is_empty()),
                "{} has an egress rule to everywhere",
                policy["metadata"]["name"]
            );
        }
    }
    let primary = cnpg_instance(&objs, "primary");
    assert!(!allows(&p, &primary, &Peer::address(API_SERVER), 6443));
}
