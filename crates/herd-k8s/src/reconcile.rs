//! Bringing a tenant's children to the rendered state with server-side apply under the
//! field manager `herd`. Children live in the tenant namespace while the Instance lives in
//! the operator's, so they are tied to it by owner labels (`herd.dev/instance`), not owner
//! references, which Kubernetes allows only within one namespace.

use crate::crd::Instance;
use crate::diff;
use crate::lifecycle::{
    MODERATOR_TOKEN_SECRET, OWNER_PASSWORD_SECRET, TOKEN_GENERATION_ANNOTATION,
};
use crate::render::tenancy::APP_SECRET;
use crate::render::{self, namespace_name, Child, ClusterSettings, RenderError, Tenant};
use crate::secrets::{AppSecrets, SecretError};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Children already as rendered (or, for Jobs, already made: see [`apply`]).
    pub unchanged: usize,
    /// Volumes that could not grow to the plan's size, and why (the StorageClass does not
    /// allow expansion): the tenant runs on with the size it has.
    pub not_resized: Vec<String>,
}

/// The storage a claim (or claim template) asks for, in bytes.
fn claim_bytes(claim: &serde_json::Value) -> Option<f64> {
    claim["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .and_then(diff::quantity_bytes)
}

/// A claim already made keeps what cannot change after creation (access modes, class,
/// volume) from the cluster's copy and never asks for less than it has; only a larger
/// storage request goes through.
fn keep_claim(desired: &mut serde_json::Value, current: &serde_json::Value) {
    let asked = claim_bytes(desired);
    let mut spec = current["spec"].clone();
    if let Some(obj) = spec.as_object_mut() {
        obj.remove("volumeName");
    }
    // Only a bound claim may grow (the API server refuses any change to one still waiting
    // for its volume): until then it keeps its size, and grows at a later pass.
    if asked > claim_bytes(current) && current["status"]["phase"] == "Bound" {
        spec["resources"]["requests"]["storage"] =
            desired["spec"]["resources"]["requests"]["storage"].clone();
    }
    desired["spec"] = spec;
}

/// A StatefulSet's claim templates cannot change: the cluster's are kept. Returns the
/// claims to grow instead, (template name, size), for templates that now ask for more.
fn keep_claim_templates(
    desired: &mut serde_json::Value,
    current: &serde_json::Value,
) -> Vec<(String, serde_json::Value)> {
    let now = current["spec"]["volumeClaimTemplates"].clone();
    let mut grow = Vec::new();
    for want in desired["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = want["metadata"]["name"].as_str().unwrap_or_default();
        let had = now
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["metadata"]["name"] == name);
        if let Some(had) = had {
            if claim_bytes(want) > claim_bytes(had) {
                grow.push((
                    name.to_owned(),
                    want["spec"]["resources"]["requests"]["storage"].clone(),
                ));
            }
        }
    }
    let mut templates = now;
    for t in templates.as_array_mut().into_iter().flatten() {
        if let Some(obj) = t.as_object_mut() {
            obj.remove("status");
        }
    }
    if !templates.is_null() {
        desired["spec"]["volumeClaimTemplates"] = templates;
    }
    grow
}

/// Whether an API error refuses a volume expansion (the StorageClass does not allow it).
fn refused_resize(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 403 || r.code == 422)
}

/// A Secret's values as strings (`data` decoded, `stringData` on top).
pub fn secret_strings(secret: Secret) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    out.extend(secret.string_data.unwrap_or_default());
    out
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
    AppSecrets::from_data(&secret_strings(secret)).map_err(|source| ReconcileError::DamagedSecret {
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

/// The pod-template annotation carrying a digest of the Secrets the tenant's spec names
/// (SMTP, object storage), which Herd does not make: a rotated credential restarts the
/// pods that read it.
pub const SECRETS_HASH_ANNOTATION: &str = "herd.dev/secrets-hash";

/// A digest of the contents of the Secrets `instance`'s spec names (absent ones count as
/// absent); `None` when it names none.
pub async fn referenced_secrets_digest(
    client: &kube::Client,
    instance: &Instance,
) -> Result<Option<String>, ReconcileError> {
    let mut names: Vec<&str> = Vec::new();
    names.extend(instance.spec.smtp_secret_ref.as_deref());
    names.extend(
        instance
            .spec
            .media_s3
            .as_ref()
            .map(|s| s.secret_ref.as_str()),
    );
    if names.is_empty() {
        return Ok(None);
    }
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace_name(&instance.spec.slug));
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for name in names {
        sha2::Digest::update(&mut hasher, name.as_bytes());
        match api.get_opt(name).await? {
            Some(secret) => {
                for (k, v) in secret_strings(secret) {
                    sha2::Digest::update(&mut hasher, format!("\0{k}\0{v}").as_bytes());
                }
            }
            None => sha2::Digest::update(&mut hasher, b"\0absent"),
        }
        sha2::Digest::update(&mut hasher, b"\n");
    }
    Ok(Some(hex::encode(&sha2::Digest::finalize(hasher)[..16])))
}

/// The Secrets a pod reads: through environment variables, `envFrom` and volumes.
fn secrets_read(pod: &k8s_openapi::api::core::v1::PodSpec) -> Vec<String> {
    let mut out = Vec::new();
    for c in pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
    {
        for e in c.env.iter().flatten() {
            if let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                out.push(r.name.clone());
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.secret_ref {
                out.push(r.name.clone());
            }
        }
    }
    for v in pod.volumes.iter().flatten() {
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.push(name);
        }
    }
    out
}

/// Stamps `digest` on the pod template of every Deployment that reads one of the Secrets
/// the spec names.
pub fn stamp_referenced_secrets(children: &mut [Child], instance: &Instance, digest: &str) {
    let mut names: Vec<&str> = Vec::new();
    names.extend(instance.spec.smtp_secret_ref.as_deref());
    names.extend(
        instance
            .spec
            .media_s3
            .as_ref()
            .map(|s| s.secret_ref.as_str()),
    );
    for child in children {
        let Child::Deployment(d) = child else {
            continue;
        };
        let Some(template) = d.spec.as_mut().map(|s| &mut s.template) else {
            continue;
        };
        let reads = template.spec.as_ref().is_some_and(|pod| {
            secrets_read(pod)
                .iter()
                .any(|s| names.contains(&s.as_str()))
        });
        if reads {
            template
                .metadata
                .get_or_insert_with(Default::default)
                .annotations
                .get_or_insert_with(Default::default)
                .insert(SECRETS_HASH_ANNOTATION.to_owned(), digest.to_owned());
        }
    }
}

/// Applies every child that differs from the cluster's copy, in render order; children
/// already as rendered are not written. (The whole steady render, as the bench and the
/// plan-change tests use it; the operator applies what [`crate::lifecycle::plan`] says.)
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
    apply(client, &children).await
}

/// Applies `children` in order, writing only those that differ from the cluster's copy.
pub async fn apply(
    client: &kube::Client,
    children: &[Child],
) -> Result<ApplyReport, ReconcileError> {
    let mut report = ApplyReport::default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for child in children {
        let what = child.describe();
        let value = child.to_value().map_err(|source| ReconcileError::Encode {
            what: what.clone(),
            source,
        })?;
        let mut desired = diff::normalize(value);
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
        let mut grow = Vec::new();
        if let Some(current) = &current {
            match child {
                // A Job's template cannot change, and a Job runs what it was made with:
                // one that exists is never written again (a failed one is replaced, see
                // the lifecycle).
                Child::Job(_) => {
                    report.unchanged += 1;
                    continue;
                }
                Child::PersistentVolumeClaim(_) => keep_claim(&mut desired, current),
                Child::StatefulSet(_) => grow = keep_claim_templates(&mut desired, current),
                _ => {}
            }
        }
        if diff::needs_apply(&desired, current.as_ref()) {
            match api.patch(&name, &params, &Patch::Apply(&desired)).await {
                Ok(_) => report.written.push(what),
                Err(e)
                    if matches!(child, Child::PersistentVolumeClaim(_))
                        && current.is_some()
                        && refused_resize(&e) =>
                {
                    report.not_resized.push(format!(
                        "{what} stays at its size: the cluster refused to expand it ({e})"
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            report.unchanged += 1;
        }
        let replicas = desired["spec"]["replicas"].as_i64().unwrap_or(1);
        for (template, size) in grow {
            grow_claims(client, &desired, &template, &size, replicas, &mut report).await?;
        }
    }
    Ok(report)
}

/// Grows the claims a StatefulSet made from `template` (`<template>-<name>-<ordinal>`) to
/// `size`, where the StorageClass allows it; where it does not, says so in the report.
async fn grow_claims(
    client: &kube::Client,
    statefulset: &serde_json::Value,
    template: &str,
    size: &serde_json::Value,
    replicas: i64,
    report: &mut ApplyReport,
) -> Result<(), ReconcileError> {
    let ns = statefulset["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let sts = statefulset["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for ordinal in 0..replicas.max(1) {
        let name = format!("{template}-{sts}-{ordinal}");
        let Some(claim) = api.get_opt(&name).await? else {
            continue;
        };
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if !bound {
            continue;
        }
        let had = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| diff::quantity_bytes(&q.0));
        if had >= size.as_str().and_then(diff::quantity_bytes) {
            continue;
        }
        let patch = serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": { "name": name, "namespace": ns },
            "spec": { "resources": { "requests": { "storage": size } } },
        });
        match api.patch(&name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => report.written.push(format!("PersistentVolumeClaim/{name}")),
            Err(e) if refused_resize(&e) => report.not_resized.push(format!(
                "PersistentVolumeClaim/{name} stays at its size ({size} asked): the cluster refused to expand it ({e})"
            )),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The kinds whose children are deleted when no longer rendered (the suspended page after a
/// resume, the web PodDisruptionBudget after a move to a one-replica plan). Never volumes,
/// Secrets or the database: data is only removed with the namespace; Jobs expire by TTL so
/// their logs stay readable.
const PRUNABLE: [(&str, &str, &str); 7] = [
    ("apps", "v1", "Deployment"),
    ("", "v1", "Service"),
    ("", "v1", "ConfigMap"),
    ("networking.k8s.io", "v1", "Ingress"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("policy", "v1", "PodDisruptionBudget"),
    ("batch", "v1", "CronJob"),
];

/// Deletes the Instance's children of prunable kinds that are not in `keep` (`Kind/name`).
/// Returns what was deleted.
pub async fn prune(
    client: &kube::Client,
    instance: &Instance,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, ReconcileError> {
    let ns = namespace_name(&instance.spec.slug);
    let lp = ListParams::default().labels(&crate::observe::selector(instance));
    let mut deleted = Vec::new();
    for (group, version, kind) in PRUNABLE {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        for obj in api.list(&lp).await?.items {
            let Some(name) = obj.metadata.name else {
                continue;
            };
            let what = format!("{kind}/{name}");
            if !keep.contains(&what) {
                api.delete(&name, &DeleteParams::background()).await?;
                deleted.push(what);
            }
        }
    }
    Ok(deleted)
}

/// The annotation naming the password reset a Secret was made for (none: the install).
const PASSWORD_GENERATION: &str = "herd.dev/password-generation";

/// Makes the owner's one-time password Secret for reset number `generation` (0: the
/// install) unless it exists: 32 hexadecimal characters, the form Mastodon's `tootctl
/// accounts create` uses. A Secret of this generation is never rewritten, so a retried Job
/// sets the same password; one left from another (never collected) is replaced, so a reset
/// always sets a new password.
pub async fn ensure_owner_password(
    client: &kube::Client,
    t: &Tenant<'_>,
    generation: u32,
) -> Result<bool, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &t.namespace());
    if let Some(existing) = api.get_opt(OWNER_PASSWORD_SECRET).await? {
        let made_for = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PASSWORD_GENERATION))
            .and_then(|g| g.parse::<u32>().ok())
            .unwrap_or(0);
        if made_for == generation {
            return Ok(false);
        }
        api.delete(OWNER_PASSWORD_SECRET, &DeleteParams::default())
            .await?;
    }
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": OWNER_PASSWORD_SECRET, "namespace": t.namespace(), "labels": t.labels("owner"),
            "annotations": {
                "herd.dev/purpose": "The owner's one-time password; the control plane reads it once and deletes it.",
                PASSWORD_GENERATION: generation.to_string(),
            },
        },
        "type": "Opaque",
        "stringData": { "password": hex::encode(bytes), "username": t.instance.spec.owner.username },
    }))
    .map_err(|source| ReconcileError::Encode {
        what: format!("Secret/{OWNER_PASSWORD_SECRET}"),
        source,
    })?;
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(true),
        // Made by another reconcile in the meantime: keep that one.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Before the Job of a new moderator-token generation is made (`plan.moderator_token_for`,
/// set only when that Job is to be made): every Job of an earlier generation is deleted
/// with its pods, and the new Job waits (is taken out of `plan.apply`, with its Secret)
/// until none of them is left. Jobs of earlier generations are otherwise never pruned, and
/// one still pending (an image pull) would store its token after the new generation
/// revoked everything: a live admin token while the status says Revoked. The pods are
/// deleted by their Job-name label as well, not left to the garbage collector. A
/// revoke-only generation also deletes Secret `moderator-token`: its token, if any, is
/// revoked and must not be collected. Returns whether the new Job may be made now.
pub async fn clear_earlier_moderator_jobs(
    client: &kube::Client,
    t: &Tenant<'_>,
    plan: &mut crate::lifecycle::Plan,
) -> Result<bool, ReconcileError> {
    let generation = plan.moderator_token_for;
    if generation == 0 {
        return Ok(true);
    }
    let ns = t.namespace();
    let earlier = |name: &str| {
        name.strip_prefix("moderator-token-")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < generation)
    };
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns);
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let quick = DeleteParams {
        grace_period_seconds: Some(1),
        ..DeleteParams::background()
    };
    let of_earlier_job = |p: &k8s_openapi::api::core::v1::Pod| {
        p.metadata.labels.as_ref().is_some_and(|l| {
            ["batch.kubernetes.io/job-name", "job-name"]
                .iter()
                .any(|k| l.get(*k).is_some_and(|j| earlier(j)))
        })
    };
    let mut left = 0;
    for job in jobs.list(&ListParams::default()).await?.items {
        let name = job.metadata.name.clone().unwrap_or_default();
        if earlier(&name) {
            left += 1;
            if job.metadata.deletion_timestamp.is_none() {
                ignore_not_found(jobs.delete(&name, &DeleteParams::background()).await)?;
            }
        }
    }
    for pod in pods.list(&ListParams::default()).await?.items {
        if of_earlier_job(&pod) {
            left += 1;
            if pod.metadata.deletion_timestamp.is_none() {
                let name = pod.metadata.name.clone().unwrap_or_default();
                ignore_not_found(pods.delete(&name, &quick).await)?;
            }
        }
    }
    if left > 0 {
        // Looked at again after the deletes: on a real cluster they take a moment.
        let jobs_left = jobs
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|j| earlier(j.metadata.name.as_deref().unwrap_or_default()));
        let pods_left = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(of_earlier_job);
        if jobs_left || pods_left {
            let new_job = format!(
                "Job/{}",
                crate::lifecycle::moderator_token_job_name(generation)
            );
            plan.apply.retain(|c| c.describe() != new_job);
            plan.needs_moderator_token = false;
            return Ok(false);
        }
    }
    if plan.moderator_token_for == generation && !plan.needs_moderator_token {
        // A revoke-only generation: no token of an earlier one is collected any more.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        ignore_not_found(
            secrets
                .delete(MODERATOR_TOKEN_SECRET, &DeleteParams::default())
                .await,
        )?;
    }
    Ok(true)
}

/// A delete's result, a 404 (gone already) as success.
fn ignore_not_found<T>(r: Result<T, kube::Error>) -> Result<(), ReconcileError> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Makes Secret `moderator-token` for moderator-token generation `generation` unless it
/// exists: key `token`, a new admin API token ([`crate::secrets::api_token`]), and key
/// `username`. As the owner's password: a Secret of this generation is never rewritten (a
/// retried Job stores the same token), one left from another generation is replaced (a
/// new generation always makes a new token). The control plane collects it.
pub async fn ensure_moderator_token(
    client: &kube::Client,
    t: &Tenant<'_>,
    generation: u32,
) -> Result<bool, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &t.namespace());
    if let Some(existing) = api.get_opt(MODERATOR_TOKEN_SECRET).await? {
        let made_for = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TOKEN_GENERATION_ANNOTATION))
            .and_then(|g| g.parse::<u32>().ok());
        if made_for == Some(generation) {
            return Ok(false);
        }
        api.delete(MODERATOR_TOKEN_SECRET, &DeleteParams::default())
            .await?;
    }
    let username = t
        .instance
        .spec
        .moderator
        .as_ref()
        .map(|m| m.username.clone())
        .unwrap_or_default();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": MODERATOR_TOKEN_SECRET, "namespace": t.namespace(), "labels": t.labels("moderator"),
            "annotations": {
                "herd.dev/purpose": "The moderator account's new admin API token; the control plane reads it once and deletes it.",
                TOKEN_GENERATION_ANNOTATION: generation.to_string(),
            },
        },
        "type": "Opaque",
        "stringData": { "token": crate::secrets::api_token(), "username": username },
    }))
    .map_err(|source| ReconcileError::Encode {
        what: format!("Secret/{MODERATOR_TOKEN_SECRET}"),
        source,
    })?;
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(true),
        // Made by another reconcile in the meantime: keep that one.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads the owner's one-time password of the tenant `slug` and deletes it, so it can be
/// read once. `None` when it was read already (or the owner is not created yet).
pub async fn take_owner_password(
    client: &kube::Client,
    slug: &str,
) -> Result<Option<String>, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace_name(slug));
    let Some(secret) = api.get_opt(OWNER_PASSWORD_SECRET).await? else {
        return Ok(None);
    };
    let password = secret_strings(secret).remove("password");
    api.delete(OWNER_PASSWORD_SECRET, &DeleteParams::default())
        .await?;
    Ok(password)
}
