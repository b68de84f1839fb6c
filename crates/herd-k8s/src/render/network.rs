//! Network policies: everything denied, then only what a Mastodon server needs.

use super::{build, Child, RenderError, Tenant};
use serde_json::{json, Value};

const PRIVATE_RANGES: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];

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
    Ok(vec![
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
        // Name resolution through the cluster DNS.
        policy(
            "allow-dns",
            json!({
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{
                    "to": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "kube-system" } } }],
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
    ])
}
