//! What the API server refuses and kube-fake-client 0.3 accepts, enforced in front of it so
//! tests catch it (a fake that takes what a cluster refuses is how such defects slip in):
//!
//! - StatefulSet: only `replicas`, `ordinals`, `template`, `updateStrategy`,
//!   `persistentVolumeClaimRetentionPolicy` and `minReadySeconds` of `spec` may change
//!   (422, the API server's message); `volumeClaimTemplates` in particular never do.
//! - Job: `spec.template` never changes (422 `field is immutable`).
//! - PersistentVolumeClaim: after creation only `resources.requests` may change (422
//!   otherwise); the storage request never shrinks (422); it grows only on a bound claim
//!   (422) whose StorageClass has `allowVolumeExpansion: true` (403, as the admission
//!   plugin answers). The fake binds nothing: a test marks a claim `Bound` itself.
//! - Instance (Herd's CRD): every string the request sets must match its schema's
//!   `pattern` (422, as the API server's OpenAPI validation answers); kube-fake-client
//!   checks types but not patterns.
//! - PersistentVolumeClaim asking for `ReadWriteMany`: refused with 422 unless its
//!   StorageClass (named, or the default one) has a provisioner that offers shared volumes.
//!   A real cluster accepts the claim and leaves it Pending forever, with every pod that
//!   mounts it; the fake refuses so the test fails at the write that caused it.
//!
//! Comparisons are by inclusion (every field the request sets equals the stored one), which
//! is what server-side apply of an unchanged field amounts to; server-filled defaults in the
//! stored object do not count as changes.

use herd_k8s::diff::quantity_bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{json, Value};

/// CSI drivers and provisioners whose volumes several nodes may mount read-write.
pub const SHARED_PROVISIONERS: [&str; 6] = [
    "nfs.csi.k8s.io",
    "efs.csi.aws.com",
    "file.csi.azure.com",
    "filestore.csi.storage.gke.io",
    "cephfs.csi.ceph.com",
    "driver.longhorn.io",
];

/// The StorageClass every fake cluster starts with, as kind makes it: the default class,
/// node-local volumes (ReadWriteOnce only), no expansion.
pub fn default_storage_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": { "name": "standard", "annotations": { "storageclass.kubernetes.io/is-default-class": "true" } },
        "provisioner": "rancher.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": false,
    })
}

/// A refusal as the API server words it.
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn invalid(message: String) -> Self {
        Self {
            code: 422,
            reason: "Invalid",
            message,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": self.reason,
                "code": self.code, "message": self.message })
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
    }
}

/// Which of the checked kinds a path names: (kind, namespace, name if one object).
fn target(path: &str) -> Option<(&'static str, String, Option<String>)> {
    let p: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (rest, kind) = match p.as_slice() {
        ["api", "v1", "namespaces", rest @ ..]
            if rest.get(1) == Some(&"persistentvolumeclaims") =>
        {
            (rest, "PersistentVolumeClaim")
        }
        ["apis", "apps", "v1", "namespaces", rest @ ..] if rest.get(1) == Some(&"statefulsets") => {
            (rest, "StatefulSet")
        }
        ["apis", "batch", "v1", "namespaces", rest @ ..] if rest.get(1) == Some(&"jobs") => {
            (rest, "Job")
        }
        ["apis", "herd.dev", "v1alpha1", "namespaces", rest @ ..]
            if rest.get(1) == Some(&"instances") =>
        {
            (rest, "Instance")
        }
        _ => return None,
    };
    match rest {
        [ns, _] => Some((kind, (*ns).to_owned(), None)),
        [ns, _, name] => Some((kind, (*ns).to_owned(), Some((*name).to_owned()))),
        // Subresources (status, scale) are not checked.
        _ => None,
    }
}

/// Whether the request is one these rules look at (then its body is needed).
pub fn applies(method: &Method, path: &str) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH) && target(path).is_some()
}

async fn get(fake: &kube::Client, path: &str) -> Option<Value> {
    let req = Request::get(path).body(Body::empty()).ok()?;
    let resp = fake.send(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&bytes).ok()
}

/// Every field set in `new` equals the one in `old` (objects by key, arrays item by item).
pub fn included(new: &Value, old: &Value) -> bool {
    match (new, old) {
        (Value::Object(n), Value::Object(o)) => n
            .iter()
            .all(|(k, v)| v.is_null() || o.get(k).is_some_and(|ov| included(v, ov))),
        (Value::Array(n), Value::Array(o)) => {
            n.len() == o.len() && n.iter().zip(o).all(|(a, b)| included(a, b))
        }
        (a, b) => a == b,
    }
}

/// The StorageClass a claim uses: the one it names, or the cluster's default.
async fn storage_class(fake: &kube::Client, named: Option<&str>) -> Option<Value> {
    let list = get(fake, "/apis/storage.k8s.io/v1/storageclasses").await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items.into_iter().find(|c| match named {
        Some(n) => c["metadata"]["name"] == n,
        None => {
            c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
        }
    })
}

/// The first string of `value` that does not match the `pattern` its place in `schema`
/// (an OpenAPI v3 schema) gives: (its path, the value as JSON, the pattern). Nulls are
/// skipped (a patch's removals); a pattern that does not compile matches nothing.
pub fn unmatched(schema: &Value, value: &Value, path: &str) -> Option<(String, String, String)> {
    match value {
        Value::String(s) => {
            let pattern = schema["pattern"].as_str()?;
            let matches = regex::Regex::new(pattern).is_ok_and(|r| r.is_match(s));
            (!matches).then(|| (path.to_owned(), value.to_string(), pattern.to_owned()))
        }
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let inner = schema["properties"]
                .get(k)
                .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))?;
            let at = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            unmatched(inner, v, &at)
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| unmatched(&schema["items"], v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// The refusal the API server would answer this write with, if any.
pub async fn check(
    fake: &kube::Client,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Option<Refusal> {
    let (kind, ns, name) = target(path)?;
    let new: Value = serde_json::from_slice(body).ok()?;
    let existing = match &name {
        Some(_) if *method != Method::POST => get(fake, path).await,
        _ => None,
    };
    let object = name
        .clone()
        .or_else(|| new["metadata"]["name"].as_str().map(str::to_owned))
        .unwrap_or_default();
    match (kind, existing) {
        ("Instance", _) => {
            let crd = serde_json::to_value(herd_k8s::crd::crd().ok()?).ok()?;
            let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let (field, value, pattern) = unmatched(schema, &new, "")?;
            Some(Refusal::invalid(format!(
                "Instance.herd.dev \"{object}\" is invalid: {field}: Invalid value: {value}: {field} in body should match '{pattern}'"
            )))
        }
        ("StatefulSet", Some(old)) => {
            const MUTABLE: [&str; 6] = [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ];
            let changed = new["spec"].as_object().into_iter().flatten().any(|(k, v)| {
                !MUTABLE.contains(&k.as_str()) && !included(v, &old["spec"][k.as_str()])
            });
            changed.then(|| Refusal::invalid(format!(
                "StatefulSet.apps \"{object}\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
            )))
        }
        ("Job", Some(old)) => {
            let template = &new["spec"]["template"];
            (!template.is_null() && !included(template, &old["spec"]["template"])).then(|| {
                Refusal::invalid(format!(
                    "Job.batch \"{object}\" is invalid: spec.template: Invalid value: {}: field is immutable",
                    template
                ))
            })
        }
        ("PersistentVolumeClaim", Some(old)) => {
            let spec = new["spec"].as_object().cloned().unwrap_or_default();
            let others_changed = spec
                .iter()
                .any(|(k, v)| k != "resources" && !included(v, &old["spec"][k.as_str()]));
            if others_changed {
                return Some(Refusal::invalid(format!(
                    "PersistentVolumeClaim \"{object}\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
                )));
            }
            let asked = new["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(quantity_bytes);
            let had = old["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(quantity_bytes);
            let (Some(asked), Some(had)) = (asked, had) else {
                return None;
            };
            if asked < had {
                return Some(Refusal::invalid(format!(
                    "PersistentVolumeClaim \"{object}\" is invalid: spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
                )));
            }
            if asked > had && old["status"]["phase"] != "Bound" {
                return Some(Refusal::invalid(format!(
                    "PersistentVolumeClaim \"{object}\" is invalid: spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
                )));
            }
            if asked > had {
                let class = storage_class(fake, old["spec"]["storageClassName"].as_str()).await;
                let expands = class.is_some_and(|c| c["allowVolumeExpansion"] == true);
                if !expands {
                    return Some(Refusal {
                        code: 403,
                        reason: "Forbidden",
                        message: format!(
                            "persistentvolumeclaims \"{object}\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
                        ),
                    });
                }
            }
            None
        }
        ("PersistentVolumeClaim", None) => {
            let shared = new["spec"]["accessModes"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m == "ReadWriteMany"));
            if !shared {
                return None;
            }
            let named = new["spec"]["storageClassName"].as_str();
            let class = storage_class(fake, named).await;
            let offers = class.as_ref().is_some_and(|c| {
                SHARED_PROVISIONERS.contains(&c["provisioner"].as_str().unwrap_or_default())
            });
            (!offers).then(|| Refusal::invalid(format!(
                "PersistentVolumeClaim \"{object}\" in {ns} asks for ReadWriteMany, which the StorageClass {} does not offer: a real cluster would leave it Pending with every pod that mounts it (herd-testkit refuses it instead)",
                class.as_ref().and_then(|c| c["metadata"]["name"].as_str()).unwrap_or("(none)")
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_crds_patterns_are_found() {
        let crd = serde_json::to_value(herd_k8s::crd::crd().expect("the CRD")).expect("JSON");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let body = json!({ "spec": { "export": { "id": "e0", "secretsRecipient": "age1nope" } } });
        assert_eq!(
            unmatched(schema, &body, "").map(|u| u.0),
            Some("spec.export.secretsRecipient".to_owned()),
            "{}",
            schema["properties"]["spec"]["properties"]["export"]
        );
    }

    #[test]
    fn a_string_off_its_schemas_pattern_is_found_with_its_path() {
        let schema = json!({ "properties": { "spec": { "properties": {
            "export": { "properties": { "key": { "type": "string", "pattern": "^age1[a-z0-9]{3}$" } } },
            "env": { "type": "object", "additionalProperties": { "type": "string", "pattern": "^[A-Z]+$" } },
            "list": { "type": "array", "items": { "type": "string", "pattern": "^x$" } },
        } } } });
        let ok = json!({ "spec": { "export": { "key": "age1abc" }, "env": { "A": "B" }, "list": ["x"], "free": "anything" } });
        assert_eq!(unmatched(&schema, &ok, ""), None);
        assert_eq!(
            unmatched(
                &schema,
                &json!({ "spec": { "export": { "key": null } } }),
                ""
            ),
            None
        );
        assert_eq!(
            unmatched(
                &schema,
                &json!({ "spec": { "export": { "key": "age1abc\nx" } } }),
                ""
            )
            .map(|u| u.0),
            Some("spec.export.key".to_owned())
        );
        assert_eq!(
            unmatched(&schema, &json!({ "spec": { "env": { "A": "b" } } }), "").map(|u| u.0),
            Some("spec.env.A".to_owned())
        );
        assert_eq!(
            unmatched(&schema, &json!({ "spec": { "list": ["x", "y"] } }), "").map(|u| u.0),
            Some("spec.list[1]".to_owned())
        );
    }

    #[test]
    fn inclusion_ignores_what_the_server_added() {
        let old = json!({ "a": 1, "b": { "c": [1, { "d": 2, "e": 3 }] } });
        assert!(included(&json!({ "b": { "c": [1, { "d": 2 }] } }), &old));
        assert!(!included(&json!({ "b": { "c": [1, { "d": 4 }] } }), &old));
        assert!(!included(&json!({ "b": { "c": [1] } }), &old));
        assert!(!included(&json!({ "f": 1 }), &old));
    }
}
