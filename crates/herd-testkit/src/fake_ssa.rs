//! Server-side apply's field removal, which kube-fake-client 0.3 does not do: it applies
//! an apply's body as a JSON merge patch, so a field a manager stops sending stays in the
//! object for ever. The API server removes it: a field the manager applied before, which its
//! new apply leaves out and no other manager applied, is deleted ("Field removal" in the
//! Kubernetes server-side apply documentation). A fake that keeps it hides every defect of
//! the kind "clearing an optional field does nothing on a real cluster" the other way
//! round, and passes tests that rely on a field surviving when it would not.
//!
//! Done here in front of the fake: the last body each field manager applied to each object
//! is remembered; after an apply succeeds, the object paths (keys of nested objects; a list
//! is one field, as JSON merge already replaces lists whole) that the manager's previous
//! apply had, its new one lacks, and no other manager's last apply has, are removed with a
//! JSON merge patch setting them to `null`. Fields written by other means (create, update,
//! merge patches) are never removed, as on the API server where their manager keeps them.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// What each field manager last applied, per object (its request path).
#[derive(Default)]
pub struct Applied {
    by_object: Mutex<BTreeMap<String, BTreeMap<String, Value>>>,
}

/// The field manager of an apply request (`PATCH` with `application/apply-patch+yaml`),
/// or `None` for any other request.
pub fn apply_manager(
    method: &http::Method,
    headers: &http::HeaderMap,
    query: &str,
) -> Option<String> {
    if method != http::Method::PATCH {
        return None;
    }
    let ct = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    if !ct.starts_with("application/apply-patch") {
        return None;
    }
    Some(
        query
            .split('&')
            .find_map(|p| p.strip_prefix("fieldManager="))
            .unwrap_or("")
            .to_owned(),
    )
}

/// Every path of nested object keys in `v` (`["spec", "restore"]`…), parents included.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            prefix.push(k.clone());
            out.insert(prefix.clone());
            paths(child, prefix, out);
            prefix.pop();
        }
    }
}

fn all_paths(v: &Value) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    paths(v, &mut Vec::new(), &mut out);
    out
}

/// Whether `body` holds an object at `path` (a field under a parent now applied as `null`
/// or a scalar is replaced with its parent, not removed on its own).
fn is_object_at(body: &Value, path: &[String]) -> bool {
    path.iter()
        .try_fold(body, |v, k| v.get(k))
        .is_some_and(Value::is_object)
}

/// Sets `path` to `null` in `patch`, making the objects on the way.
fn set_null(patch: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Value::Object(m) = patch else {
        return;
    };
    if rest.is_empty() {
        m.insert(first.clone(), Value::Null);
    } else {
        set_null(
            m.entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new())),
            rest,
        );
    }
}

impl Applied {
    /// Records `body` as `manager`'s apply to `object` and returns the merge patch that
    /// removes what the API server would remove, if anything.
    pub fn record(&self, object: &str, manager: &str, body: &Value) -> Option<Value> {
        let mut all = self.by_object.lock().unwrap_or_else(|e| e.into_inner());
        let managers = all.entry(object.to_owned()).or_default();
        let before = managers.insert(manager.to_owned(), body.clone());
        let before = all_paths(&before?);
        let now = all_paths(body);
        let others: BTreeSet<Vec<String>> = all[object]
            .iter()
            .filter(|(m, _)| m.as_str() != manager)
            .flat_map(|(_, b)| all_paths(b))
            .collect();
        // The topmost paths gone: their parent is still applied (or is the root).
        let gone: Vec<&Vec<String>> = before
            .iter()
            .filter(|p| !now.contains(*p) && !others.contains(*p))
            .filter(|p| p.len() == 1 || is_object_at(body, &p[..p.len() - 1]))
            // Never the object's identity.
            .filter(|p| !matches!(p[0].as_str(), "apiVersion" | "kind"))
            .filter(|p| {
                !(p.len() == 2
                    && p[0] == "metadata"
                    && matches!(p[1].as_str(), "name" | "namespace"))
            })
            .collect();
        if gone.is_empty() {
            return None;
        }
        let mut patch = Value::Object(Map::new());
        for p in gone {
            set_null(&mut patch, p);
        }
        Some(patch)
    }

    /// The object was deleted: what its managers applied goes with it.
    pub fn forget(&self, object: &str) {
        self.by_object
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| k != object && !k.starts_with(&format!("{object}/")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_the_manager_stops_applying_is_removed_unless_another_manager_applies_it() {
        let a = Applied::default();
        let o = "/apis/herd.dev/v1/namespaces/n/instances/x";
        assert_eq!(
            a.record(o, "herd", &json!({"spec": {"a": 1, "b": {"c": 2}}})),
            None
        );
        assert_eq!(
            a.record(o, "herd", &json!({"spec": {"a": 1}})),
            Some(json!({"spec": {"b": null}}))
        );
        // Another manager's field stays.
        a.record(o, "kubectl", &json!({"spec": {"d": 4}}));
        a.record(o, "herd", &json!({"spec": {"a": 1, "d": 4}}));
        assert_eq!(a.record(o, "herd", &json!({"spec": {"a": 1}})), None);
        // A whole object gone: removed at its top.
        a.record(o, "herd", &json!({"spec": {"a": 1, "e": {"f": {"g": 1}}}}));
        assert_eq!(
            a.record(o, "herd", &json!({"spec": {"a": 1}})),
            Some(json!({"spec": {"e": null}}))
        );
        // A parent now applied as null: replaced whole, nothing removed under it.
        a.record(o, "herd", &json!({"spec": {"a": 1, "m": {"u": "x"}}}));
        assert_eq!(
            a.record(o, "herd", &json!({"spec": {"a": 1, "m": null}})),
            None
        );
        // Forgotten with the object.
        a.forget(o);
        assert_eq!(a.record(o, "herd", &json!({"spec": {}})), None);
    }
}
