//! Bringing a tenant's children to the rendered state with server-side apply under the
//! field manager `herd`. Children live in the tenant namespace while the Instance lives in
//! the operator's, so they are tied to it by owner labels (`herd.dev/instance`), not owner
//! references, which Kubernetes allows only within one namespace.

use crate::crd::Instance;
use crate::diff;
use crate::render::tenancy::APP_SECRET;
use crate::render::{self, namespace_name, ClusterSettings, RenderError, Tenant};
use crate::secrets::{AppSecrets, SecretError};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use std::collections::BTreeMap;

/// The field manager of every apply.
pub const FIELD_MANAGER: &str = "herd";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("the app secret in {namespace} is damaged ({source}); restore it from a backup: Herd never makes new secrets for an existing tenant, as that would log everyone out and lose encrypted data")]
    DamagedSecret {
        namespace: String,
        source: SecretError,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("could not encode {what}: {source}")]
    Encode {
        what: String,
        source: serde_json::Error,
    },
}

/// What an apply pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// `Kind/name` of each child written.
    pub written: Vec<String>,
    /// Children already as rendered.
    pub unchanged: usize,
}

/// The app secrets of a tenant: read back from its Secret when it exists (and refused if
/// damaged), generated only for a new tenant.
pub async fn load_or_generate_secrets(
    client: &kube::Client,
    namespace: &str,
) -> Result<AppSecrets, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let Some(secret) = api.get_opt(APP_SECRET).await? else {
        return Ok(AppSecrets::generate());
    };
    let mut data: BTreeMap<String, String> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    data.extend(secret.string_data.unwrap_or_default());
    AppSecrets::from_data(&data).map_err(|source| ReconcileError::DamagedSecret {
        namespace: namespace.to_owned(),
        source,
    })
}

fn api_for(client: &kube::Client, obj: &serde_json::Value) -> Api<DynamicObject> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap_or_default());
    let ar = ApiResource::from_gvk(&gvk);
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

/// Applies every child that differs from the cluster's copy, in render order; children
/// already as rendered are not written.
pub async fn apply_children(
    client: &kube::Client,
    instance: &Instance,
    cluster: &ClusterSettings,
) -> Result<ApplyReport, ReconcileError> {
    let namespace = namespace_name(&instance.spec.slug);
    let secrets = load_or_generate_secrets(client, &namespace).await?;
    let children = render::render(&Tenant {
        instance,
        secrets: &secrets,
        cluster,
    })?;
    let mut report = ApplyReport::default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for child in children {
        let what = child.describe();
        let value = child.to_value().map_err(|source| ReconcileError::Encode {
            what: what.clone(),
            source,
        })?;
        let desired = diff::normalize(value);
        let name = desired["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let api = api_for(client, &desired);
        let current = match api.get_opt(&name).await? {
            Some(obj) => {
                Some(
                    serde_json::to_value(obj).map_err(|source| ReconcileError::Encode {
                        what: what.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        if diff::needs_apply(&desired, current.as_ref()) {
            api.patch(&name, &params, &Patch::Apply(&desired)).await?;
            report.written.push(what);
        } else {
            report.unchanged += 1;
        }
    }
    Ok(report)
}
