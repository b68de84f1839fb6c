//! Deciding whether a rendered object needs to be applied: a reconcile of an unchanged
//! Instance must write nothing, so each child is compared with what the cluster holds
//! before any server-side apply.
//!
//! The comparison is "desired is contained in current": every field Herd sets must be
//! present with the same value; fields the API server or other controllers add (defaults,
//! status, managed fields) are ignored.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};

/// Is every field of `desired` present, with the same value, in `current`? Resource
/// quantities compare by value (`8` and `8000m`, `8Gi` and `8192Mi` are equal), as the
/// API server may hand them back in its canonical form.
pub fn contained_in(desired: &Value, current: &Value) -> bool {
    contained(desired, current, false)
}

/// The maps whose values are resource quantities (requests, limits, quotas, LimitRanges).
const QUANTITY_MAPS: [&str; 8] = [
    "requests",
    "limits",
    "hard",
    "capacity",
    "default",
    "defaultRequest",
    "max",
    "min",
];

/// `quantities`: `desired` is a map of resource quantities (its values compare by value).
fn contained(desired: &Value, current: &Value, quantities: bool) -> bool {
    match (desired, current) {
        (Value::Object(d), Value::Object(c)) => d.iter().all(|(k, dv)| match c.get(k) {
            Some(cv) if quantities => same_quantity(dv, cv),
            Some(cv) => contained(dv, cv, QUANTITY_MAPS.contains(&k.as_str())),
            // An empty map or list we send is the same as one the server left out.
            None => is_empty(dv),
        }),
        (Value::Array(d), Value::Array(c)) => {
            d.len() == c.len() && d.iter().zip(c).all(|(dv, cv)| contained(dv, cv, false))
        }
        (Value::Number(d), Value::Number(c)) => d.as_f64() == c.as_f64(),
        (d, c) => d == c,
    }
}

fn same_quantity(desired: &Value, current: &Value) -> bool {
    match (desired, current) {
        (Value::String(d), Value::String(c)) if d != c => {
            match (quantity_bytes(d), quantity_bytes(c)) {
                (Some(d), Some(c)) => d == c,
                _ => false,
            }
        }
        (d, c) => contained(d, c, false),
    }
}

/// The value of a Kubernetes quantity (`250m`, `1.5`, `8Gi`, `500M`, `1e3`), in base units
/// (cores, bytes).
pub fn quantity_bytes(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Secrets are written as `data` (base64), the form the API server stores, so that a
/// comparison with what it returns is exact; `stringData` is turned into `data`.
pub fn normalize(mut desired: Value) -> Value {
    if desired["kind"] == "Secret" {
        if let Some(Value::Object(string_data)) =
            desired.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            let mut data = match desired.get("data") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            for (k, v) in string_data {
                let text = v.as_str().unwrap_or_default();
                data.insert(k, Value::String(STANDARD.encode(text.as_bytes())));
            }
            desired["data"] = Value::Object(data);
        }
    }
    desired
}

/// Does `desired` (normalized) need to be applied over `current` (absent: yes)?
pub fn needs_apply(desired: &Value, current: Option<&Value>) -> bool {
    match current {
        None => true,
        Some(c) => !contained_in(desired, c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_compare_by_value() {
        let d = json!({ "resources": { "limits": { "cpu": "8", "memory": "8Gi" } } });
        let c = json!({ "resources": { "limits": { "cpu": "8000m", "memory": "8192Mi" } } });
        assert!(contained_in(&d, &c));
        let more = json!({ "resources": { "limits": { "cpu": "8", "memory": "9Gi" } } });
        assert!(!contained_in(&more, &c));
        // Only quantities: other strings compare as they are.
        assert!(!contained_in(
            &json!({ "env": "8" }),
            &json!({ "env": "8000m" })
        ));
        assert_eq!(quantity_bytes("1e3"), Some(1000.0));
        assert_eq!(quantity_bytes("250m"), Some(0.25));
        assert_eq!(quantity_bytes("lots"), None);
    }

    #[test]
    fn server_additions_do_not_count() {
        let desired = json!({ "metadata": { "name": "web", "labels": { "a": "1" } }, "spec": { "replicas": 2 } });
        let current = json!({
            "metadata": { "name": "web", "labels": { "a": "1" }, "resourceVersion": "7", "uid": "u" },
            "spec": { "replicas": 2, "revisionHistoryLimit": 10 },
            "status": { "readyReplicas": 2 },
        });
        assert!(!needs_apply(&desired, Some(&current)));
        assert!(needs_apply(&desired, None));
    }

    #[test]
    fn any_difference_in_what_herd_sets_counts() {
        let desired = json!({ "spec": { "replicas": 2, "template": { "containers": [{ "name": "web", "image": "v2" }] } } });
        let older = json!({ "spec": { "replicas": 2, "template": { "containers": [{ "name": "web", "image": "v1" }] } } });
        assert!(needs_apply(&desired, Some(&older)));
        let fewer = json!({ "spec": { "replicas": 2, "template": { "containers": [] } } });
        assert!(needs_apply(&desired, Some(&fewer)));
        let label_gone = json!({ "metadata": { "labels": {} } });
        assert!(needs_apply(
            &json!({ "metadata": { "labels": { "a": "1" } } }),
            Some(&label_gone)
        ));
        // Empty collections we send equal absent ones.
        assert!(!needs_apply(
            &json!({ "spec": { "volumes": [], "selector": {} } }),
            Some(&json!({ "spec": {} }))
        ));
        assert!(!needs_apply(&json!({ "n": 1 }), Some(&json!({ "n": 1.0 }))));
    }

    #[test]
    fn secrets_compare_as_stored() {
        let desired = normalize(json!({ "kind": "Secret", "stringData": { "K": "value" } }));
        assert_eq!(desired["data"]["K"], "dmFsdWU=");
        assert!(desired.get("stringData").is_none());
        let stored = json!({ "kind": "Secret", "data": { "K": "dmFsdWU=" }, "type": "Opaque" });
        assert!(!needs_apply(&desired, Some(&stored)));
        let changed = json!({ "kind": "Secret", "data": { "K": "b3RoZXI=" } });
        assert!(needs_apply(&desired, Some(&changed)));
        // Other kinds are left alone.
        let cm = json!({ "kind": "ConfigMap", "data": { "a": "b" } });
        assert_eq!(normalize(cm.clone()), cm);
    }
}
