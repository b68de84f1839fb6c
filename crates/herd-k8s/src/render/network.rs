//! Network policies: everything denied, then only what a Mastodon server needs, what
//! cert-manager's HTTP-01 solver needs, and, for a CloudNativePG database, what its
//! operator and instances need (as CloudNativePG's networking documentation lists it).

use super::{build, Child, RenderError, Tenant};
use serde_json::{json, Value};

/// Addresses that are not the internet: private networks, shared address space (some
/// clusters' pod or node networks), loopback, and link-local, where clouds serve their
/// instance metadata (169.254.169.254, with the node's credentials).
const PRIVATE_RANGES: [&str; 6] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
];

pub fn render(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let ns = t.namespace();
    let policy = |name: &str, spec: Value| -> Result<Child, RenderError> {
        Ok(Child::NetworkPolicy(build(
            "NetworkPolicy",
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": { "name": name, "namespace": ns, "labels": t.labels("") },
                "spec": spec,
            }),
        )?))
    };
    let app_pods = json!({ "matchExpressions": [{
        "key": "app.kubernetes.io/component", "operator": "In", "values": ["web", "streaming", "sidekiq", "jobs"]
    }]});
    let internet_ports: Vec<Value> = [80, 443, 25, 465, 587]
        .iter()
        .map(|p| json!({ "protocol": "TCP", "port": p }))
        .collect();
    let mut out = vec![
        policy(
            "default-deny",
            json!({ "podSelector": {}, "policyTypes": ["Ingress", "Egress"] }),
        )?,
        // The ingress controller reaches web and streaming (and the suspended page).
        policy(
            "allow-ingress-controller",
            json!({
                "podSelector": { "matchExpressions": [{
                    "key": "app.kubernetes.io/component", "operator": "In", "values": ["web", "streaming", "suspended"]
                }]},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": t.cluster.ingress_namespace } } }],
                    "ports": [{ "protocol": "TCP", "port": 3000 }, { "protocol": "TCP", "port": 4000 }, { "protocol": "TCP", "port": 8080 }],
                }],
            }),
        )?,
        // Name resolution through the cluster DNS, and a node-local DNS cache where one
        // answers on a link-local address instead.
        policy(
            "allow-dns",
            json!({
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": dns_peers(t),
                    "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }],
                }],
            }),
        )?,
        // The app reaches its own database and Redis; they accept only the app.
        policy(
            "allow-app-to-data",
            json!({
                "podSelector": app_pods,
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{ "podSelector": { "matchExpressions": [{
                        "key": "app.kubernetes.io/component", "operator": "In", "values": ["database", "redis"]
                    }]}}],
                    "ports": [{ "protocol": "TCP", "port": 5432 }, { "protocol": "TCP", "port": 6379 }],
                }],
            }),
        )?,
        policy(
            "allow-data-from-app",
            json!({
                "podSelector": { "matchExpressions": [{
                    "key": "app.kubernetes.io/component", "operator": "In", "values": ["database", "redis"]
                }]},
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{ "podSelector": app_pods }],
                    "ports": [{ "protocol": "TCP", "port": 5432 }, { "protocol": "TCP", "port": 6379 }],
                }],
            }),
        )?,
        // Federation, object storage and SMTP on the internet, not the cluster's networks.
        policy(
            "allow-internet",
            json!({
                "podSelector": app_pods,
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{ "ipBlock": { "cidr": "0.0.0.0/0", "except": PRIVATE_RANGES } }],
                    "ports": internet_ports,
                }],
            }),
        )?,
        // cert-manager's HTTP-01 solver, which it starts in this namespace while a
        // certificate is issued: the ingress controller forwards the challenge to it.
        policy(
            "allow-acme-solver",
            json!({
                "podSelector": { "matchLabels": { "acme.cert-manager.io/http01-solver": "true" } },
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": t.cluster.ingress_namespace } } }],
                    "ports": [{ "protocol": "TCP", "port": 8089 }],
                }],
            }),
        )?,
    ];
    if t.uses_cloudnative_pg() {
        out.extend(cloudnative_pg(t, &policy)?);
    }
    Ok(out)
}

fn dns_peers(t: &Tenant<'_>) -> Vec<Value> {
    let mut to = vec![
        json!({ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } } }),
    ];
    for ip in &t.cluster.node_local_dns {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        to.push(json!({ "ipBlock": { "cidr": format!("{ip}/{bits}") } }));
    }
    to
}

/// The pods of the tenant's CloudNativePG cluster (instances and their set-up Jobs).
fn cnpg_pods() -> Value {
    json!({ "matchLabels": { "cnpg.io/cluster": super::data::CNPG_CLUSTER } })
}

fn cloudnative_pg(
    t: &Tenant<'_>,
    policy: &dyn Fn(&str, Value) -> Result<Child, RenderError>,
) -> Result<Vec<Child>, RenderError> {
    let status_and_postgres =
        json!([{ "protocol": "TCP", "port": 8000 }, { "protocol": "TCP", "port": 5432 }]);
    let mut out = vec![
        // The operator checks each instance's status (8000) and connects to PostgreSQL.
        policy(
            "allow-cnpg-operator",
            json!({
                "podSelector": cnpg_pods(),
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{
                        "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": t.cluster.cnpg_namespace } },
                        "podSelector": { "matchLabels": { "app.kubernetes.io/name": "cloudnative-pg" } },
                    }],
                    "ports": status_and_postgres,
                }],
            }),
        )?,
        // Replicas stream from the primary and instances ask each other's status.
        policy(
            "allow-cnpg-peers",
            json!({
                "podSelector": cnpg_pods(),
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{ "from": [{ "podSelector": cnpg_pods() }], "ports": status_and_postgres }],
                "egress": [{ "to": [{ "podSelector": cnpg_pods() }], "ports": status_and_postgres }],
            }),
        )?,
    ];
    // Base backups and WAL go from the instances to the object store (barman), which,
    // like the final backup's endpoint, is on the internet.
    if t.cluster.backup.is_some() {
        out.push(policy(
            "allow-cnpg-backup",
            json!({
                "podSelector": cnpg_pods(),
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{ "ipBlock": { "cidr": "0.0.0.0/0", "except": PRIVATE_RANGES } }],
                    "ports": [{ "protocol": "TCP", "port": 443 }, { "protocol": "TCP", "port": 80 }],
                }],
            }),
        )?);
    }
    // The instance manager in each pod reads and writes its Cluster through the API
    // server. Without its addresses nothing is allowed (an egress rule without
    // destinations would allow everything).
    if !t.cluster.api_server.is_empty() {
        let to: Vec<Value> = t
            .cluster
            .api_server
            .iter()
            .map(|a| {
                let bits = if a.is_ipv4() { 32 } else { 128 };
                json!({ "ipBlock": { "cidr": format!("{}/{bits}", a.ip()) } })
            })
            .collect();
        let mut ports: Vec<u16> = t.cluster.api_server.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        let ports: Vec<Value> = ports
            .iter()
            .map(|p| json!({ "protocol": "TCP", "port": p }))
            .collect();
        out.push(policy(
            "allow-cnpg-api-server",
            json!({
                "podSelector": cnpg_pods(),
                "policyTypes": ["Egress"],
                "egress": [{ "to": to, "ports": ports }],
            }),
        )?);
    }
    Ok(out)
}
