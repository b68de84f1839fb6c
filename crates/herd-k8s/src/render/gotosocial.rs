//! GoToSocial, the second app: one process serving web, API and federation on port 8080,
//! with its database migrations run at start.

use super::data::container_security;
use super::mastodon::{
    ingress, one_off_job, pin_to_media_node, pod_spec_for, resources, secret_env, suspended_page,
};
use super::tenancy::{with_extra_env, APP_CONFIG, APP_SECRET};
use super::{build, config_hash, Child, RenderError, Tenant};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// GoToSocial's image runs as this user.
pub const GOTOSOCIAL_UID: i64 = 1000;
const STORAGE_PATH: &str = "/gotosocial/storage";

pub fn image(version: &str) -> String {
    format!(
        "superseriousbusiness/gotosocial:{}",
        version.trim_start_matches('v')
    )
}

/// Non-secret settings (`GTS_*`).
pub fn env(t: &Tenant<'_>) -> BTreeMap<String, String> {
    let spec = &t.instance.spec;
    let mut e = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        e.insert(k.to_owned(), v.to_owned());
    };
    set("GTS_HOST", t.web_domain());
    if t.web_domain() != spec.local_domain {
        set("GTS_ACCOUNT_DOMAIN", &spec.local_domain);
    }
    set("GTS_PROTOCOL", "https");
    set("GTS_PORT", "8080");
    set("GTS_LETSENCRYPT_ENABLED", "false");
    // Requests arrive through the ingress controller inside the cluster.
    set(
        "GTS_TRUSTED_PROXIES",
        "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16",
    );
    set("GTS_DB_TYPE", "postgres");
    set("GTS_DB_ADDRESS", &super::data::database_host(t));
    set("GTS_DB_PORT", "5432");
    set("GTS_DB_USER", t.database_login().0);
    set("GTS_DB_DATABASE", t.database_name());
    match &spec.media_s3 {
        Some(s3) => {
            set("GTS_STORAGE_BACKEND", "s3");
            set("GTS_STORAGE_S3_BUCKET", &s3.bucket);
            set(
                "GTS_STORAGE_S3_ENDPOINT",
                s3.endpoint.trim_start_matches("https://"),
            );
        }
        None => {
            set("GTS_STORAGE_BACKEND", "local");
            set("GTS_STORAGE_LOCAL_BASE_PATH", STORAGE_PATH);
        }
    }
    with_extra_env(t, e)
}

/// The settings from Secrets: the database password and object-storage credentials.
fn secret_env_vars(t: &Tenant<'_>) -> Vec<Value> {
    let mut env_vars = vec![secret_env(
        "GTS_DB_PASSWORD",
        APP_SECRET,
        t.database_login().1,
    )];
    if let Some(s3) = &t.instance.spec.media_s3 {
        env_vars.push(secret_env(
            "GTS_STORAGE_S3_ACCESS_KEY",
            &s3.secret_ref,
            "AWS_ACCESS_KEY_ID",
        ));
        env_vars.push(secret_env(
            "GTS_STORAGE_S3_SECRET_KEY",
            &s3.secret_ref,
            "AWS_SECRET_ACCESS_KEY",
        ));
    }
    env_vars
}

/// The owner account, created once GoToSocial has migrated its database at its first start:
/// `admin account create` (init container), then `admin account promote`. The password comes
/// from the `owner-password` Secret the operator makes for it.
pub fn install_jobs(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let spec = &t.instance.spec;
    let mut env_vars = secret_env_vars(t);
    env_vars.push(secret_env(
        "OWNER_PASSWORD",
        crate::lifecycle::OWNER_PASSWORD_SECRET,
        "password",
    ));
    let container = |name: &str, args: Vec<&str>| {
        json!({
            "name": name,
            "image": image(&spec.version),
            // The image's entrypoint is `gotosocial server start`: name the binary, or the
            // arguments would be appended to that.
            "command": ["/gotosocial/gotosocial"],
            "args": args,
            "envFrom": [{ "configMapRef": { "name": APP_CONFIG } }],
            "env": env_vars,
            "resources": resources(&spec.sizing.web),
            "securityContext": container_security(true),
            "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
        })
    };
    let u = spec.owner.username.as_str();
    let mut pod = pod_spec_for(
        GOTOSOCIAL_UID,
        json!([container(
            "promote",
            vec!["admin", "account", "promote", "--username", u]
        )]),
        vec![json!({ "name": "tmp", "emptyDir": {} })],
        true,
    );
    pod["initContainers"] = json!([container(
        "create",
        vec![
            "admin",
            "account",
            "create",
            "--username",
            u,
            "--email",
            &spec.owner.email,
            "--password",
            "$(OWNER_PASSWORD)",
        ]
    )]);
    Ok(vec![one_off_job(
        t,
        crate::lifecycle::CREATE_OWNER_JOB,
        pod,
    )?])
}

/// Sets the owner's password from the `owner-password` Secret (a reset):
/// `gotosocial admin account password`. The image's entrypoint starts the server, so the
/// command is given in full.
pub fn reset_owner_job(t: &Tenant<'_>, name: &str) -> Result<Child, RenderError> {
    let spec = &t.instance.spec;
    let mut env_vars = secret_env_vars(t);
    env_vars.push(secret_env(
        "OWNER_PASSWORD",
        crate::lifecycle::OWNER_PASSWORD_SECRET,
        "password",
    ));
    let container = json!({
        "name": "password",
        "image": image(&spec.version),
        "command": ["/gotosocial/gotosocial"],
        "args": ["admin", "account", "password", "--username", spec.owner.username, "--password", "$(OWNER_PASSWORD)"],
        "envFrom": [{ "configMapRef": { "name": APP_CONFIG } }],
        "env": env_vars,
        "resources": resources(&spec.sizing.web),
        "securityContext": container_security(true),
        "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
    });
    let pod = pod_spec_for(
        GOTOSOCIAL_UID,
        json!([container]),
        vec![json!({ "name": "tmp", "emptyDir": {} })],
        true,
    );
    one_off_job(t, name, pod)
}

pub fn render(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let spec = &t.instance.spec;
    let ns = t.namespace();
    let hash = config_hash(&[
        &json!(env(t)),
        &json!(t.secrets.data()),
        &json!(spec.media_s3),
    ]);
    let env_vars = secret_env_vars(t);
    let mut volumes = vec![json!({ "name": "tmp", "emptyDir": {} })];
    let mut mounts = vec![json!({ "name": "tmp", "mountPath": "/tmp" })];
    let mut out = Vec::new();
    if spec.media_s3.is_none() {
        out.push(Child::PersistentVolumeClaim(build("PersistentVolumeClaim media", json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": { "name": "media", "namespace": ns, "labels": t.labels("media") },
            "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": spec.sizing.media_storage } } },
        }))?));
        volumes.push(json!({ "name": "media", "persistentVolumeClaim": { "claimName": "media" } }));
        mounts.push(json!({ "name": "media", "mountPath": STORAGE_PATH }));
    }
    let container = json!({
        "name": "gotosocial",
        "image": image(&spec.version),
        // The image's ENTRYPOINT already says `server start`: the command is given in full
        // so that the arguments are not appended to it.
        "command": ["/gotosocial/gotosocial"],
        "args": ["server", "start"],
        "envFrom": [{ "configMapRef": { "name": APP_CONFIG } }],
        "env": env_vars,
        "ports": [{ "name": "http", "containerPort": 8080 }],
        "startupProbe": { "httpGet": { "path": "/livez", "port": "http" }, "periodSeconds": 5, "failureThreshold": 60 },
        "readinessProbe": { "httpGet": { "path": "/readyz", "port": "http" }, "periodSeconds": 10 },
        "livenessProbe": { "httpGet": { "path": "/livez", "port": "http" }, "periodSeconds": 30 },
        "resources": resources(&spec.sizing.web),
        "securityContext": container_security(true),
        "volumeMounts": mounts,
    });
    let mut template = json!({
        "metadata": { "labels": t.labels("web"), "annotations": { "herd.dev/config-hash": hash } },
        "spec": pod_spec_for(GOTOSOCIAL_UID, json!([container]), volumes, false),
    });
    // The final backup, which reads the storage volume, runs where this pod does.
    pin_to_media_node(t, &mut template)?;
    // One replica: GoToSocial keeps in-process state and migrates its database at start.
    out.push(Child::Deployment(build(
        "Deployment gotosocial",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "web", "namespace": ns, "labels": t.labels("web") },
            "spec": {
                "replicas": if spec.suspended { 0 } else { 1 },
                "selector": { "matchLabels": t.selector("web") },
                "strategy": { "type": "Recreate" },
                "template": template,
            },
        }),
    )?));
    out.push(Child::Service(build("Service web", json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": "web", "namespace": ns, "labels": t.labels("web") },
        "spec": { "selector": t.selector("web"), "ports": [{ "name": "http", "port": 8080, "targetPort": 8080 }] },
    }))?));
    if spec.suspended {
        out.extend(suspended_page(t)?);
    }
    out.extend(ingress(t, &[("/", "web", 8080)], ("web", 8080))?);
    if super::not_installed(t) {
        out.extend(install_jobs(t)?);
    }
    Ok(out)
}
