//! A NetworkPolicy evaluator, as the Kubernetes documentation defines the semantics (and
//! CNIs such as Calico and Cilium enforce them), so tests can ask "may this pod reach that
//! one on this port?" of the policies Herd renders, without a cluster:
//!
//! - A connection is allowed when the source may send it (egress) and the destination may
//!   receive it (ingress).
//! - A pod selected by no policy of a direction in its namespace is open in that direction;
//!   once selected by one, only what some selecting policy's rules allow passes (policies
//!   add up, none subtracts).
//! - A rule's peer is a `podSelector` (pods of the policy's namespace), a
//!   `namespaceSelector` (every pod of the matching namespaces), both (matching pods of
//!   matching namespaces), or an `ipBlock` (addresses in the CIDR and not in its
//!   exceptions). A rule without peers matches every peer; without ports, every port.
//! - `policyTypes` defaults to Ingress, plus Egress when the policy has egress rules.

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One end of a connection: a pod (namespace, its labels, the namespace's labels) or an
/// address outside the cluster's pods (`namespace` empty).
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub namespace: String,
    pub namespace_labels: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ip: Option<IpAddr>,
}

impl Peer {
    /// A pod of `namespace` (whose label `kubernetes.io/metadata.name` is set, as the API
    /// server sets it) with these labels.
    pub fn pod(namespace: &str, labels: &[(&str, &str)]) -> Self {
        let mut namespace_labels = BTreeMap::new();
        namespace_labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
        Self {
            namespace: namespace.into(),
            namespace_labels,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            // Pod addresses are private: they never match an internet-only ipBlock.
            ip: "10.244.0.10".parse().ok(),
        }
    }

    /// An address that is not a pod (the API server, a host on the internet).
    pub fn address(ip: &str) -> Self {
        Self {
            ip: ip.parse().ok(),
            ..Self::default()
        }
    }

    fn is_pod(&self) -> bool {
        !self.namespace.is_empty()
    }
}

fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let by_expression = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let has = labels.get(key);
            match e["operator"].as_str().unwrap_or_default() {
                "In" => has.is_some_and(|v| values.contains(&v.as_str())),
                "NotIn" => !has.is_some_and(|v| values.contains(&v.as_str())),
                "Exists" => has.is_some(),
                "DoesNotExist" => has.is_none(),
                _ => false,
            }
        });
    by_label && by_expression
}

fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, "128"));
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - bits.min(32)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - bits.min(128)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Does the rule's peer entry `p` (in a policy of `policy_ns`) match `peer`?
fn peer_matches(p: &Value, policy_ns: &str, peer: &Peer) -> bool {
    if let Some(block) = p.get("ipBlock") {
        let Some(ip) = peer.ip else { return false };
        let inside = in_cidr(ip, block["cidr"].as_str().unwrap_or_default());
        let excepted = block["except"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|c| in_cidr(ip, c));
        // Pods are reached by selectors; an ipBlock is for other addresses.
        return inside && !excepted && !peer.is_pod();
    }
    if !peer.is_pod() {
        return false;
    }
    let ns_ok = match p.get("namespaceSelector") {
        Some(sel) => selects(sel, &peer.namespace_labels),
        None => peer.namespace == policy_ns,
    };
    let pod_ok = p
        .get("podSelector")
        .is_none_or(|sel| selects(sel, &peer.labels));
    ns_ok && pod_ok
}

fn port_matches(ports: Option<&Value>, port: u16, protocol: &str) -> bool {
    let Some(ports) = ports.and_then(Value::as_array) else {
        return true;
    };
    ports.iter().any(|p| {
        let allowed = p["protocol"].as_str().unwrap_or("TCP");
        let from = p["port"].as_u64();
        let to = p["endPort"].as_u64().or(from);
        allowed == protocol
            && match (from, to) {
                (Some(f), Some(t)) => (f..=t).contains(&u64::from(port)),
                // No port: every port of the protocol.
                _ => p.get("port").is_none(),
            }
    })
}

fn types(policy: &Value) -> Vec<String> {
    match policy["spec"]["policyTypes"].as_array() {
        Some(t) => t
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        None => {
            let mut t = vec!["Ingress".to_owned()];
            if policy["spec"].get("egress").is_some() {
                t.push("Egress".to_owned());
            }
            t
        }
    }
}

/// Whether `pod` may do `direction` ("Ingress", "Egress") with `other` on `port`.
fn side_allows(
    policies: &[Value],
    pod: &Peer,
    direction: &str,
    other: &Peer,
    (port, protocol): (u16, &str),
) -> bool {
    if !pod.is_pod() {
        return true;
    }
    let (rules_key, peers_key) = if direction == "Ingress" {
        ("ingress", "from")
    } else {
        ("egress", "to")
    };
    let selecting: Vec<&Value> = policies
        .iter()
        .filter(|p| p["metadata"]["namespace"] == pod.namespace.as_str())
        .filter(|p| types(p).iter().any(|t| t == direction))
        .filter(|p| selects(&p["spec"]["podSelector"], &pod.labels))
        .collect();
    if selecting.is_empty() {
        return true;
    }
    selecting.iter().any(|p| {
        p["spec"][rules_key]
            .as_array()
            .into_iter()
            .flatten()
            .any(|rule| {
                let peers_ok = match rule.get(peers_key).and_then(Value::as_array) {
                    None => true,
                    Some(peers) if peers.is_empty() => true,
                    Some(peers) => peers
                        .iter()
                        .any(|peer| peer_matches(peer, &pod.namespace, other)),
                };
                peers_ok && port_matches(rule.get("ports"), port, protocol)
            })
    })
}

/// May `from` open a TCP connection to `to` on `port`, under `policies`?
pub fn allows(policies: &[Value], from: &Peer, to: &Peer, port: u16) -> bool {
    allows_on(policies, from, to, port, "TCP")
}

/// May `from` send to `to` on `port` over `protocol` ("TCP", "UDP", "SCTP")?
pub fn allows_on(policies: &[Value], from: &Peer, to: &Peer, port: u16, protocol: &str) -> bool {
    side_allows(policies, from, "Egress", to, (port, protocol))
        && side_allows(policies, to, "Ingress", from, (port, protocol))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deny_then_allow() {
        let deny = json!({ "metadata": { "namespace": "t" }, "spec": { "podSelector": {}, "policyTypes": ["Ingress", "Egress"] } });
        let allow = json!({ "metadata": { "namespace": "t" }, "spec": {
            "podSelector": { "matchLabels": { "app": "db" } },
            "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "web" } } }], "ports": [{ "port": 5432 }] }],
        }});
        let egress = json!({ "metadata": { "namespace": "t" }, "spec": {
            "podSelector": { "matchLabels": { "app": "web" } }, "policyTypes": ["Egress"],
            "egress": [{ "to": [{ "ipBlock": { "cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"] } }], "ports": [{ "port": 443 }] },
                       { "to": [{ "podSelector": { "matchLabels": { "app": "db" } } }] }],
        }});
        let web = Peer::pod("t", &[("app", "web")]);
        let db = Peer::pod("t", &[("app", "db")]);
        let outsider = Peer::pod("u", &[("app", "web")]);
        let p = [deny.clone(), allow.clone(), egress];
        assert!(allows(&p, &web, &db, 5432));
        assert!(!allows(&p, &web, &db, 6379), "port");
        assert!(!allows(&p, &db, &web, 5432), "direction");
        assert!(!allows(&p, &outsider, &db, 5432), "namespace");
        assert!(allows(&p, &web, &Peer::address("93.184.216.34"), 443));
        assert!(!allows(&p, &web, &Peer::address("10.1.2.3"), 443), "except");
        assert!(!allows(&p, &web, &Peer::address("93.184.216.34"), 22));
        // Without the deny, the unselected pod is open.
        assert!(allows(&[allow], &db, &web, 9999));
    }
}
