//! Mastodon's processes: web, streaming and sidekiq Deployments, their Services, the
//! Ingress, the media volume, maintenance CronJobs, first-install Jobs, and the page shown
//! while a tenant is suspended.

use super::data::{container_security, pod_security};
use super::tenancy::{env, APP_CONFIG, APP_SECRET, SERVICE_ACCOUNT};
use super::{build, config_hash, Child, RenderError, Tenant};
use crate::crd::Resources;
use crate::secrets::REDIS_PASSWORD;
use serde_json::{json, Value};

/// Mastodon's images run as this user.
pub const MASTODON_UID: i64 = 991;
/// The Ingress of the web domain.
pub const INGRESS: &str = "app";
pub const SUSPENDED_IMAGE: &str = "nginxinc/nginx-unprivileged:1.27-alpine";
const SIDEKIQ_QUEUES: [&str; 7] = [
    "default,8",
    "push,6",
    "ingress,4",
    "mailers,2",
    "pull",
    "scheduler",
    "fasp",
];

pub fn web_image(version: &str) -> String {
    format!("ghcr.io/mastodon/mastodon:{version}")
}

pub fn streaming_image(version: &str) -> String {
    format!("ghcr.io/mastodon/mastodon-streaming:{version}")
}

/// A name part from a version (`v4.7.6` → `v4-7-6`).
pub fn version_slug(version: &str) -> String {
    version
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

pub(super) fn resources(r: &Resources) -> Value {
    json!({
        "requests": { "cpu": r.cpu_request, "memory": r.memory_request },
        "limits": { "cpu": r.cpu_limit, "memory": r.memory_limit },
    })
}

pub(super) fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": secret, "key": key } } })
}

/// The environment sources of web, sidekiq and jobs: the ConfigMap, the app Secret, and
/// the object-storage credentials when media go to S3.
fn rails_env_from(t: &Tenant<'_>) -> Vec<Value> {
    let mut v = vec![
        json!({ "configMapRef": { "name": APP_CONFIG } }),
        json!({ "secretRef": { "name": APP_SECRET } }),
    ];
    if let Some(s3) = &t.instance.spec.media_s3 {
        v.push(json!({ "secretRef": { "name": s3.secret_ref } }));
    }
    v
}

/// The explicit environment of a container with [`rails_env_from`]: `DB_PASS`, the
/// password of the app's login ([`Tenant::database_login`]), over the app Secret's
/// `DB_PASS` (an `env` entry wins over `envFrom`), which where Herd runs PostgreSQL itself
/// is the superuser's and must not reach the app; then `extra`.
fn rails_env(t: &Tenant<'_>, extra: Vec<Value>) -> Vec<Value> {
    let mut env = vec![secret_env("DB_PASS", APP_SECRET, t.database_login().1)];
    env.extend(extra);
    env
}

fn smtp_env(t: &Tenant<'_>) -> Vec<Value> {
    let Some(secret) = &t.instance.spec.smtp_secret_ref else {
        return Vec::new();
    };
    [
        ("SMTP_SERVER", "server"),
        ("SMTP_PORT", "port"),
        ("SMTP_LOGIN", "login"),
        ("SMTP_PASSWORD", "password"),
        ("SMTP_FROM_ADDRESS", "from"),
    ]
    .iter()
    .map(|(name, key)| {
        let mut e = secret_env(name, secret, key);
        // A relay that takes mail without logging in has no login or password.
        if matches!(*key, "login" | "password") {
            e["valueFrom"]["secretKeyRef"]["optional"] = json!(true);
        }
        e
    })
    .collect()
}

fn rails_volumes(t: &Tenant<'_>) -> (Vec<Value>, Vec<Value>) {
    let mut volumes = vec![
        json!({ "name": "tmp", "emptyDir": {} }),
        json!({ "name": "system-tmp", "emptyDir": {} }),
    ];
    let mut mounts = vec![
        json!({ "name": "tmp", "mountPath": "/opt/mastodon/tmp" }),
        json!({ "name": "system-tmp", "mountPath": "/tmp" }),
    ];
    if t.instance.spec.media_s3.is_none() {
        volumes.push(json!({ "name": "media", "persistentVolumeClaim": { "claimName": "media" } }));
        mounts.push(json!({ "name": "media", "mountPath": "/opt/mastodon/public/system" }));
    }
    (volumes, mounts)
}

/// Where Mastodon's media files live when they are not in object storage.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MediaVolume {
    /// In object storage: no volume.
    ObjectStorage,
    /// A ReadWriteOnce volume of the default StorageClass: every pod that mounts it runs on
    /// the node that has it attached (see [`pin_to_media_node`]).
    OneNode,
    /// A ReadWriteMany volume of this StorageClass.
    Shared(String),
}

/// The label of pods that mount a one-node media volume, which they follow.
const MEDIA_POD_LABEL: &str = "herd.dev/media";

/// The value of [`crate::crd::MEDIA_ANNOTATION`] for a media volume decided now: a
/// shared class when the operator names one, else one node.
pub fn media_decision(cluster: &super::ClusterSettings) -> String {
    match &cluster.media_shared_storage_class {
        Some(class) => format!("shared:{class}"),
        None => "one-node".into(),
    }
}

fn media_volume(t: &Tenant<'_>) -> Result<MediaVolume, RenderError> {
    let spec = &t.instance.spec;
    if spec.media_s3.is_some() {
        return Ok(MediaVolume::ObjectStorage);
    }
    // GoToSocial's local storage: one pod, one ReadWriteOnce volume.
    if spec.app == crate::crd::App::Gotosocial {
        return Ok(MediaVolume::OneNode);
    }
    // What the tenant was given (its volume's modes cannot change), else what the
    // operator's settings give a new one.
    let decided = t
        .instance
        .annotation(crate::crd::MEDIA_ANNOTATION)
        .map_or_else(|| media_decision(t.cluster), str::to_owned);
    let volume = match decided.strip_prefix("shared:") {
        Some(class) => MediaVolume::Shared(class.to_owned()),
        None => MediaVolume::OneNode,
    };
    if volume == MediaVolume::OneNode && spec.sizing.web_replicas > 1 {
        return Err(RenderError::SharedMediaNeeded {
            web_replicas: spec.sizing.web_replicas,
        });
    }
    Ok(volume)
}

/// Whether the tenant's media (Mastodon's `public/system`, GoToSocial's local storage) are
/// on its `media` volume rather than in object storage.
pub(super) fn media_on_volume(t: &Tenant<'_>) -> Result<bool, RenderError> {
    Ok(media_volume(t)? != MediaVolume::ObjectStorage)
}

/// A pod template mounting a one-node media volume runs on the node of the other pods that
/// mount it (as Mastodon's chart does for ReadWriteOnce volumes): a pod elsewhere would
/// wait forever for the volume to attach. The first such pod, matching its own rule, may
/// go anywhere.
pub(super) fn pin_to_media_node(t: &Tenant<'_>, template: &mut Value) -> Result<(), RenderError> {
    let mounts_media = template["spec"]["volumes"]
        .as_array()
        .is_some_and(|v| v.iter().any(|v| v["name"] == "media"));
    if !mounts_media || media_volume(t)? != MediaVolume::OneNode {
        return Ok(());
    }
    template["metadata"]["labels"][MEDIA_POD_LABEL] = json!("volume");
    template["spec"]["affinity"] = json!({
        "podAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": { "matchLabels": {
                "herd.dev/tenant": t.instance.spec.slug, MEDIA_POD_LABEL: "volume",
            } },
            "topologyKey": "kubernetes.io/hostname",
        }] },
    });
    Ok(())
}

fn pod_spec(containers: Value, volumes: Vec<Value>, restart_never: bool) -> Value {
    pod_spec_for(MASTODON_UID, containers, volumes, restart_never)
}

pub(super) fn pod_spec_for(
    uid: i64,
    containers: Value,
    volumes: Vec<Value>,
    restart_never: bool,
) -> Value {
    let mut spec = json!({
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": false,
        "securityContext": pod_security(uid),
        "containers": containers,
        "volumes": volumes,
    });
    if restart_never {
        spec["restartPolicy"] = json!("Never");
    }
    spec
}

pub fn render(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let spec = &t.instance.spec;
    let ns = t.namespace();
    // Pods restart when their settings or secrets change.
    let hash = config_hash(&[
        &json!(env(t)),
        &json!(t.secrets.data()),
        &json!(spec.smtp_secret_ref),
        &json!(spec.media_s3),
    ]);
    let replicas = |n: i32| if spec.suspended { 0 } else { n };
    let (volumes, mounts) = rails_volumes(t);

    let deployment = |name: &str,
                      n: i32,
                      recreate: bool,
                      container: Value,
                      volumes: Vec<Value>|
     -> Result<Child, RenderError> {
        let strategy = if recreate {
            json!({ "type": "Recreate" })
        } else {
            json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } })
        };
        let mut template = json!({
            "metadata": { "labels": t.labels(name), "annotations": { "herd.dev/config-hash": hash } },
            "spec": pod_spec(json!([container]), volumes, false),
        });
        pin_to_media_node(t, &mut template)?;
        Ok(Child::Deployment(build(
            "Deployment",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": name, "namespace": ns, "labels": t.labels(name) },
                "spec": {
                    "replicas": replicas(n),
                    "selector": { "matchLabels": t.selector(name) },
                    "strategy": strategy,
                    "template": template,
                },
            }),
        )?))
    };

    let web = json!({
        "name": "web",
        "image": web_image(&spec.version),
        "command": ["bundle", "exec", "puma", "-C", "config/puma.rb"],
        "envFrom": rails_env_from(t),
        "env": rails_env(t, vec![json!({ "name": "PORT", "value": "3000" })]),
        "ports": [{ "name": "http", "containerPort": 3000 }],
        "startupProbe": { "httpGet": { "path": "/health", "port": "http" }, "periodSeconds": 5, "failureThreshold": 60 },
        "readinessProbe": { "httpGet": { "path": "/health", "port": "http" }, "periodSeconds": 10 },
        "livenessProbe": { "tcpSocket": { "port": "http" }, "periodSeconds": 30, "failureThreshold": 3 },
        "resources": resources(&spec.sizing.web),
        // Rails writes under tmp/ and public/system: those are volumes; the image itself is
        // not made read-only, as Mastodon's own charts do not either.
        "securityContext": container_security(false),
        "volumeMounts": mounts,
    });
    let streaming = json!({
        "name": "streaming",
        "image": streaming_image(&spec.version),
        "command": ["node", "./streaming"],
        "envFrom": [{ "configMapRef": { "name": APP_CONFIG } }],
        "env": [
            { "name": "PORT", "value": "4000" },
            { "name": "BIND", "value": "0.0.0.0" },
            secret_env("DB_PASS", APP_SECRET, t.database_login().1),
            secret_env("REDIS_PASSWORD", APP_SECRET, REDIS_PASSWORD),
        ],
        "ports": [{ "name": "streaming", "containerPort": 4000 }],
        "readinessProbe": { "httpGet": { "path": "/api/v1/streaming/health", "port": "streaming" }, "periodSeconds": 10 },
        "livenessProbe": { "httpGet": { "path": "/api/v1/streaming/health", "port": "streaming" }, "periodSeconds": 30 },
        "resources": resources(&spec.sizing.streaming),
        "securityContext": container_security(true),
        "volumeMounts": [{ "name": "system-tmp", "mountPath": "/tmp" }],
    });
    let mut sidekiq_cmd = vec![
        "bundle".to_owned(),
        "exec".into(),
        "sidekiq".into(),
        "-c".into(),
        spec.sizing.sidekiq_concurrency.to_string(),
    ];
    for q in SIDEKIQ_QUEUES {
        sidekiq_cmd.push("-q".into());
        sidekiq_cmd.push(q.into());
    }
    let sidekiq = json!({
        "name": "sidekiq",
        "image": web_image(&spec.version),
        "command": sidekiq_cmd,
        "envFrom": rails_env_from(t),
        "env": rails_env(t, smtp_env(t)),
        "resources": resources(&spec.sizing.sidekiq),
        "securityContext": container_security(false),
        "volumeMounts": rails_volumes(t).1,
    });

    let mut out = Vec::new();
    let media_spec = match media_volume(t)? {
        MediaVolume::ObjectStorage => None,
        MediaVolume::OneNode => Some(
            json!({ "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": spec.sizing.media_storage } } }),
        ),
        MediaVolume::Shared(class) => {
            let mut claim = json!({ "accessModes": ["ReadWriteMany"], "resources": { "requests": { "storage": spec.sizing.media_storage } } });
            // Empty: a shared claim made before on the default class.
            if !class.is_empty() {
                claim["storageClassName"] = json!(class);
            }
            Some(claim)
        }
    };
    if let Some(media_spec) = media_spec {
        out.push(Child::PersistentVolumeClaim(build(
            "PersistentVolumeClaim media",
            json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": { "name": "media", "namespace": ns, "labels": t.labels("media") },
                "spec": media_spec,
            }),
        )?));
    }
    out.push(deployment(
        "web",
        spec.sizing.web_replicas,
        false,
        web,
        volumes.clone(),
    )?);
    // A drill's scratch copy runs only its web pods (enough to prove it comes up):
    // no streaming, and no sidekiq, whose jobs would deliver to the outside world (web
    // pushes with the source's keys, federation, emails) from a copy.
    out.push(deployment(
        "streaming",
        if spec.drill {
            0
        } else {
            spec.sizing.streaming_replicas
        },
        false,
        streaming,
        vec![json!({ "name": "system-tmp", "emptyDir": {} })],
    )?);
    // One sidekiq only: it serves the scheduler queue, which must never run twice.
    out.push(deployment(
        "sidekiq",
        if spec.drill { 0 } else { 1 },
        true,
        sidekiq,
        volumes,
    )?);
    for (name, port) in [("web", 3000), ("streaming", 4000)] {
        out.push(Child::Service(build("Service", json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": ns, "labels": t.labels(name) },
            "spec": { "selector": t.selector(name), "ports": [{ "name": name, "port": port, "targetPort": port }] },
        }))?));
    }
    if spec.sizing.web_replicas > 1 {
        out.push(Child::PodDisruptionBudget(build(
            "PodDisruptionBudget",
            json!({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": { "name": "web", "namespace": ns, "labels": t.labels("web") },
                "spec": { "minAvailable": 1, "selector": { "matchLabels": t.selector("web") } },
            }),
        )?));
    }
    if spec.suspended {
        out.extend(suspended_page(t)?);
    }
    out.extend(ingress(
        t,
        &[("/api/v1/streaming", "streaming", 4000), ("/", "web", 3000)],
        ("web", 3000),
    )?);
    out.extend(cron_jobs(t)?);
    if super::not_installed(t) {
        out.extend(install_jobs(t)?);
    }
    Ok(out)
}

/// The Ingress of the web domain: `routes` (path, service, port) while running, the
/// suspended page while suspended; and a redirect from the local domain when it differs.
/// None for a restore drill's scratch copy (`spec.drill`): it is never served, and asks
/// for no certificate.
pub(super) fn ingress(
    t: &Tenant<'_>,
    routes: &[(&str, &str, i64)],
    main_backend: (&str, i64),
) -> Result<Vec<Child>, RenderError> {
    let spec = &t.instance.spec;
    if spec.drill {
        return Ok(Vec::new());
    }
    let ns = t.namespace();
    let backend = |service: &str, port: i64| json!({ "service": { "name": service, "port": { "number": port } } });
    let paths: Vec<Value> = if spec.suspended {
        vec![json!({ "path": "/", "pathType": "Prefix", "backend": backend("suspended", 8080) })]
    } else {
        routes.iter().map(|(path, service, port)| json!({ "path": path, "pathType": "Prefix", "backend": backend(service, *port) })).collect()
    };
    let annotations = json!({
        "cert-manager.io/cluster-issuer": t.cluster.cluster_issuer,
        // Video uploads reach 99 MB.
        "nginx.ingress.kubernetes.io/proxy-body-size": "100m",
        // Long-lived WebSocket connections of the streaming API.
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
    });
    let web_domain = t.web_domain().to_owned();
    let mut out = vec![Child::Ingress(build(
        "Ingress",
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": { "name": INGRESS, "namespace": ns, "labels": t.labels("ingress"), "annotations": annotations },
            "spec": {
                "ingressClassName": t.cluster.ingress_class,
                "tls": [{ "hosts": [web_domain], "secretName": "app-tls" }],
                "rules": [{ "host": web_domain, "http": { "paths": paths } }],
            },
        }),
    )?)];
    if web_domain != spec.local_domain {
        // Handles on the local domain must find the web domain (webfinger, host-meta).
        out.push(Child::Ingress(build("Ingress redirect", json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {
                "name": "local-domain-redirect", "namespace": ns, "labels": t.labels("ingress"),
                "annotations": {
                    "cert-manager.io/cluster-issuer": t.cluster.cluster_issuer,
                    "nginx.ingress.kubernetes.io/permanent-redirect": format!("https://{web_domain}$request_uri"),
                },
            },
            "spec": {
                "ingressClassName": t.cluster.ingress_class,
                "tls": [{ "hosts": [spec.local_domain], "secretName": "local-domain-tls" }],
                "rules": [{ "host": spec.local_domain, "http": { "paths": [
                    { "path": "/", "pathType": "Prefix", "backend": backend(main_backend.0, main_backend.1) },
                ]}}],
            },
        }))?));
    }
    Ok(out)
}

/// The suspended page's server: every request gets `503 Service Unavailable` with
/// `Retry-After` (other servers' deliveries treat a 4xx as final and drop them; a 503 they
/// retry later) and the human page as its body; `/healthz` answers 200 for the probe.
pub const SUSPENDED_NGINX_CONF: &str = r#"server {
    listen 8080;
    server_tokens off;
    root /usr/share/nginx/html;
    error_page 503 /index.html;
    location = /healthz {
        access_log off;
        default_type text/plain;
        return 200 "ok";
    }
    location = /index.html {
        internal;
        add_header Retry-After 3600 always;
        add_header Cache-Control "no-store" always;
    }
    location / {
        return 503;
    }
}
"#;

pub(super) fn suspended_page(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let ns = t.namespace();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{d} is suspended</title></head>\
         <body style=\"font-family:sans-serif;max-width:40rem;margin:4rem auto\"><h1>{d} is suspended</h1>\
         <p>This server is temporarily unavailable. Its data is kept. If you run it, see your hosting portal.</p></body></html>\n",
        d = t.web_domain()
    );
    Ok(vec![
        Child::ConfigMap(build(
            "ConfigMap suspended",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": "suspended-page", "namespace": ns, "labels": t.labels("suspended") },
                "data": { "index.html": html, "default.conf": SUSPENDED_NGINX_CONF },
            }),
        )?),
        Child::Deployment(build(
            "Deployment suspended",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "suspended", "namespace": ns, "labels": t.labels("suspended") },
                "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": t.selector("suspended") },
                    "template": {
                        "metadata": { "labels": t.labels("suspended") },
                        "spec": {
                            "serviceAccountName": SERVICE_ACCOUNT,
                            "automountServiceAccountToken": false,
                            "securityContext": pod_security(101),
                            "containers": [{
                                "name": "page",
                                "image": SUSPENDED_IMAGE,
                                "ports": [{ "name": "http", "containerPort": 8080 }],
                                "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" } },
                                "resources": { "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "cpu": "100m", "memory": "64Mi" } },
                                "securityContext": container_security(true),
                                "volumeMounts": [
                                    { "name": "page", "mountPath": "/usr/share/nginx/html" },
                                    { "name": "conf", "mountPath": "/etc/nginx/conf.d" },
                                    { "name": "tmp", "mountPath": "/tmp" },
                                ],
                            }],
                            "volumes": [
                                { "name": "page", "configMap": { "name": "suspended-page", "items": [{ "key": "index.html", "path": "index.html" }] } },
                                { "name": "conf", "configMap": { "name": "suspended-page", "items": [{ "key": "default.conf", "path": "default.conf" }] } },
                                { "name": "tmp", "emptyDir": {} },
                            ],
                        },
                    },
                },
            }),
        )?),
        Child::Service(build(
            "Service suspended",
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "suspended", "namespace": ns, "labels": t.labels("suspended") },
                "spec": { "selector": t.selector("suspended"), "ports": [{ "name": "http", "port": 8080, "targetPort": 8080 }] },
            }),
        )?),
    ])
}

/// A Job running a Rails or tootctl command with the app's configuration.
pub fn rails_job(
    t: &Tenant<'_>,
    name: &str,
    command: Vec<String>,
    extra_env: Vec<Value>,
) -> Result<Child, RenderError> {
    rails_job_with(t, name, command, extra_env, false)
}

/// A Job of the app; `media` mounts the media volume (only the maintenance CronJobs that
/// remove media need it: set-up, migration and owner Jobs never mount it, as the chart's
/// migration Jobs do not, so a media volume still waiting for storage never holds up an
/// install).
fn rails_job_with(
    t: &Tenant<'_>,
    name: &str,
    command: Vec<String>,
    extra_env: Vec<Value>,
    media: bool,
) -> Result<Child, RenderError> {
    let (mut volumes, mut mounts) = rails_volumes(t);
    if !media {
        volumes.retain(|v| v["name"] != "media");
        mounts.retain(|m| m["name"] != "media");
    }
    let container = json!({
        "name": "job",
        "image": web_image(&t.instance.spec.version),
        "command": command,
        "envFrom": rails_env_from(t),
        "env": rails_env(t, extra_env),
        "resources": resources(&t.instance.spec.sizing.sidekiq),
        "securityContext": container_security(false),
        "volumeMounts": mounts,
    });
    let mut template = json!({ "metadata": { "labels": t.labels("jobs") }, "spec": pod_spec(json!([container]), volumes, true) });
    pin_to_media_node(t, &mut template)?;
    one_off_job_from(t, name, template)
}

/// A one-off Job of the app (set-up, migrations, owner): retried twice, kept a week after it
/// finished so its logs can be read.
pub(super) fn one_off_job(t: &Tenant<'_>, name: &str, pod: Value) -> Result<Child, RenderError> {
    one_off_job_from(
        t,
        name,
        json!({ "metadata": { "labels": t.labels("jobs") }, "spec": pod }),
    )
}

fn one_off_job_from(t: &Tenant<'_>, name: &str, template: Value) -> Result<Child, RenderError> {
    Ok(Child::Job(build(
        "Job",
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": { "name": name, "namespace": t.namespace(), "labels": t.labels("jobs") },
            "spec": {
                "backoffLimit": 2,
                "ttlSecondsAfterFinished": 604800,
                "template": template,
            },
        }),
    )?))
}

fn cmd(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

/// First install: prepare the database, then create the owner account. The owner's
/// password comes from the `owner-password` Secret the operator makes for it (Mastodon's own
/// `tootctl accounts create` would print a random one to the Job's log instead). The script
/// is safe to retry: it looks the account up first, creates it only when it is absent
/// (confirmed and approved, so a server with closed registrations has a usable Owner), and
/// then sets its password. Any other failure (a reserved or invalid username, the database
/// unreachable) fails the Job with tootctl's or Rails's message in its log.
pub fn install_jobs(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let v = version_slug(&t.instance.spec.version);
    let owner = &t.instance.spec.owner;
    let script = concat!(
        "set -eu\n",
        "found=0\n",
        "bin/rails runner 'exit(Account.find_local(ENV.fetch(\"OWNER_USERNAME\")).nil? ? 3 : 0)' || found=$?\n",
        "case \"$found\" in\n",
        "  0) echo 'the owner account exists already; setting its password' ;;\n",
        // tootctl prints a random password of its own: not into the Job's log.
        "  3) bin/tootctl accounts create \"$OWNER_USERNAME\" --email \"$OWNER_EMAIL\" --confirmed --approve --role Owner >/dev/null ;;\n",
        "  *) echo \"looking up the owner account failed (exit $found)\" >&2; exit \"$found\" ;;\n",
        "esac\n",
        "exec bin/rails runner 'u = Account.find_local!(ENV.fetch(\"OWNER_USERNAME\")).user; ",
        "u.update!(password: ENV.fetch(\"OWNER_PASSWORD\"), password_confirmation: ENV.fetch(\"OWNER_PASSWORD\")); ",
        "u.approve! unless u.approved?'\n",
    );
    Ok(vec![
        rails_job(
            t,
            &format!("db-prepare-{v}"),
            cmd(&["bundle", "exec", "rails", "db:prepare"]),
            Vec::new(),
        )?,
        rails_job(
            t,
            crate::lifecycle::CREATE_OWNER_JOB,
            cmd(&["/bin/sh", "-c", script]),
            vec![
                json!({ "name": "OWNER_USERNAME", "value": owner.username }),
                json!({ "name": "OWNER_EMAIL", "value": owner.email }),
                secret_env(
                    "OWNER_PASSWORD",
                    crate::lifecycle::OWNER_PASSWORD_SECRET,
                    "password",
                ),
            ],
        )?,
    ])
}

/// Sets the owner's password from the `owner-password` Secret (a reset): the account is
/// found by its username (its email may have changed since), its password replaced, its
/// browser sessions ended and its apps' access tokens revoked, as a reset after a
/// compromise must. (`tootctl accounts modify --reset-password` would print the password
/// into the Job's log.)
pub fn reset_owner_job(t: &Tenant<'_>, name: &str) -> Result<Child, RenderError> {
    let script = concat!(
        "exec bin/rails runner 'u = Account.find_local!(ENV.fetch(\"OWNER_USERNAME\")).user; ",
        "u.update!(password: ENV.fetch(\"OWNER_PASSWORD\"), password_confirmation: ENV.fetch(\"OWNER_PASSWORD\")); ",
        "u.session_activations.destroy_all; ",
        "Doorkeeper::AccessToken.by_resource_owner(u).update_all(revoked_at: Time.now.utc)'\n",
    );
    rails_job(
        t,
        name,
        cmd(&["/bin/sh", "-c", script]),
        vec![
            json!({ "name": "OWNER_USERNAME", "value": t.instance.spec.owner.username }),
            secret_env(
                "OWNER_PASSWORD",
                crate::lifecycle::OWNER_PASSWORD_SECRET,
                "password",
            ),
        ],
    )
}

/// The name of Herd's OAuth application on a tenant's server, owned by the moderator
/// account, whose access tokens are managed moderation's.
pub const MODERATOR_APPLICATION: &str = "Herd managed moderation";

/// The moderator account's Job (see [`crate::crd::ModeratorSpec`]), as a shell script
/// around two `bin/rails runner`s. Safe to run again after a crash at any point: every
/// step looks first and does only what is missing. The token comes only from Secret
/// `moderator-token` through the environment (`MODERATOR_TOKEN`, a `secretKeyRef`): it is
/// never in the command, and nothing prints it (a duplicate is reported without the
/// database's message, which would quote it).
///
/// 1. The local account `MODERATOR_USERNAME`, when absent, is made by `tootctl accounts
///    create` with `--email`, `--confirmed`, `--approve` and `--role Moderator` (the
///    options of `lib/mastodon/cli/accounts.rb`; `Moderator` is the name `config/roles.yml`
///    seeds), its output (a random password) to /dev/null.
/// 2. An existing account of that username is Herd's only if its user has the email
///    `MODERATOR_EMAIL`, is confirmed and has the `Moderator` role: `tootctl accounts
///    create` sets `role_id` and `confirmed_at` in the user's first save, so an account
///    Herd made always has both, and an unconfirmed one, or one without the role, was
///    signed up by someone else (on an open server anyone can register the username with
///    the provider's email). Any other is refused: the Job fails and says so, and never
///    touches it (never taken over). Ours is only approved if a crash stopped `tootctl`
///    before `approve!`. Every notification email that can be turned off is
///    (`notification_emails.*` of `app/models/user_settings.rb` that the server's version
///    knows, `software_updates` to `none`); Mastodon's account mails that are not
///    settings (the welcome mail, security notices) can still reach the address. A
///    revoke-only Job
///    makes no account and changes none: it only finds Herd's application (step 3) and
///    revokes its tokens (step 4), whoever has the account now.
/// 3. Herd's application (`Doorkeeper::Application`, polymorphic owner that user, named
///    [`MODERATOR_APPLICATION`], redirect URI `urn:ietf:wg:oauth:2.0:oob`, Doorkeeper's
///    out-of-band URI, scopes `admin:read admin:write`, both in the `optional_scopes` of
///    Mastodon's `config/initializers/doorkeeper.rb`, which enforces them) is found or
///    made.
/// 4. Every unrevoked access token of that application for that user except the new one
///    is revoked (`revoke`, which also ends its streaming connections).
/// 5. Unless `MODERATOR_REVOKE_ONLY`, the Secret's token is stored as an access token of
///    that application and user with the scopes `admin:read admin:write`, unless it is
///    there already (a retry). Doorkeeper's `before_validation :generate_token` replaces
///    any token given to `create!`, so the row is made and then given the Secret's token
///    in one transaction (`oauth_access_tokens.token`, a unique string column in
///    `db/schema.rb`); Mastodon stores tokens in clear (no `hash_token_secrets` in its
///    Doorkeeper configuration), so the control plane's copy is the token the API takes.
pub fn moderator_token_job(
    t: &Tenant<'_>,
    name: &str,
    moderator: &crate::crd::ModeratorSpec,
) -> Result<Child, RenderError> {
    let mut env = vec![
        json!({ "name": "MODERATOR_USERNAME", "value": moderator.username }),
        json!({ "name": "MODERATOR_EMAIL", "value": moderator.email }),
        json!({ "name": "MODERATOR_APPLICATION", "value": MODERATOR_APPLICATION }),
        json!({ "name": "MODERATOR_REVOKE_ONLY", "value": moderator.revoked.to_string() }),
    ];
    if !moderator.revoked {
        env.push(secret_env(
            "MODERATOR_TOKEN",
            crate::lifecycle::MODERATOR_TOKEN_SECRET,
            "token",
        ));
    }
    rails_job(
        t,
        name,
        cmd(&["/bin/sh", "-c", MODERATOR_TOKEN_SCRIPT]),
        env,
    )
}

/// The script of [`moderator_token_job`].
pub const MODERATOR_TOKEN_SCRIPT: &str = r#"set -eu
found=0
bin/rails runner 'exit(Account.find_local(ENV.fetch("MODERATOR_USERNAME")).nil? ? 3 : 0)' || found=$?
case "$found" in
  0) echo "the account @$MODERATOR_USERNAME exists already" ;;
  3) if [ "$MODERATOR_REVOKE_ONLY" = true ]; then
       echo "revoke only: there is no account @$MODERATOR_USERNAME, so no token to revoke"
       exit 0
     fi
     bin/tootctl accounts create "$MODERATOR_USERNAME" --email "$MODERATOR_EMAIL" --confirmed --approve --role Moderator >/dev/null ;;
  *) echo "looking up the moderator account failed (exit $found)" >&2; exit "$found" ;;
esac
exec bin/rails runner '
username = ENV.fetch("MODERATOR_USERNAME")
email = ENV.fetch("MODERATOR_EMAIL")
name = ENV.fetch("MODERATOR_APPLICATION")
revoke_only = ENV.fetch("MODERATOR_REVOKE_ONLY") == "true"
scopes = "admin:read admin:write"
user = Account.find_local!(username).user
token = nil
if revoke_only
  app = user && Doorkeeper::Application.find_by(owner: user, name: name)
else
  moderator_role = UserRole.find_by(name: "Moderator")
  unless user && user.email.to_s.casecmp?(email) && user.confirmed? && !moderator_role.nil? && user.role_id == moderator_role.id
    abort("refused: the account @#{username} on this server was not made by Herd (Herd makes it confirmed, with the Moderator role and the email #{email}): " \
          "it is someone else and is left untouched (never taken over). Paste a token of an account of the server instead, or use another username.")
  end
  user.approve! unless user.approved?
  quiet = %w(follow reblog favourite mention follow_request report pending_account trends appeal)
    .to_h { |k| ["notification_emails.#{k}", false] }
  quiet["notification_emails.software_updates"] = "none"
  user.update!(settings_attributes: quiet.select { |k, _| UserSettings.definition_for(k) })
  app = Doorkeeper::Application.find_or_create_by!(owner: user, name: name) do |a|
    a.redirect_uri = "urn:ietf:wg:oauth:2.0:oob"
    a.scopes = scopes
  end
  token = ENV.fetch("MODERATOR_TOKEN")
  abort("the token in Secret moderator-token is not 43 URL-safe base64 characters") unless token.match?(/\A[A-Za-z0-9_-]{43}\z/)
end
revoked = 0
unless app.nil?
  earlier = Doorkeeper::AccessToken.where(application_id: app.id, resource_owner_id: user.id, revoked_at: nil)
  earlier = earlier.where.not(token: token) unless token.nil?
  earlier.find_each { |t| t.revoke; revoked += 1 }
end
puts("revoked #{revoked} earlier token(s) of @#{username} for Herd")
if token.nil?
  puts("revoke only: no new token")
elsif Doorkeeper::AccessToken.exists?(token: token)
  puts("the new token of @#{username} is stored already")
else
  begin
    ActiveRecord::Base.transaction do
      stored = Doorkeeper::AccessToken.create!(application_id: app.id, resource_owner_id: user.id, scopes: scopes)
      stored.update_columns(token: token)
    end
  rescue ActiveRecord::RecordNotUnique
    abort("the new token was stored by another run at the same time; the next attempt finds it")
  end
  puts("stored a new token of @#{username} with the scopes #{scopes}")
end
'
"#;

/// An upgrade's two migration Jobs: before the Deployments roll (post-deployment
/// migrations skipped) and after.
pub fn upgrade_jobs(t: &Tenant<'_>) -> Result<(Child, Child), RenderError> {
    let v = version_slug(&t.instance.spec.version);
    let migrate = cmd(&["bundle", "exec", "rails", "db:migrate"]);
    Ok((
        rails_job(
            t,
            &format!("migrate-pre-{v}"),
            migrate.clone(),
            vec![json!({ "name": "SKIP_POST_DEPLOYMENT_MIGRATIONS", "value": "true" })],
        )?,
        rails_job(t, &format!("migrate-post-{v}"), migrate, Vec::new())?,
    ))
}

fn cron_jobs(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let mut out = Vec::new();
    for (name, schedule, command) in [
        (
            "media-remove",
            "0 3 * * 0",
            cmd(&["bin/tootctl", "media", "remove", "--days", "7"]),
        ),
        (
            "preview-cards-remove",
            "30 3 * * 0",
            cmd(&["bin/tootctl", "preview_cards", "remove", "--days", "180"]),
        ),
    ] {
        let Child::Job(job) = rails_job_with(t, name, command, Vec::new(), true)? else {
            continue;
        };
        let job_spec = job
            .spec
            .map(|s| serde_json::to_value(s).unwrap_or_default())
            .unwrap_or_default();
        out.push(Child::CronJob(build("CronJob", json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": { "name": name, "namespace": t.namespace(), "labels": t.labels("jobs") },
            "spec": {
                "schedule": schedule,
                "concurrencyPolicy": "Forbid",
                "suspend": t.instance.spec.suspended,
                "jobTemplate": { "spec": job_spec },
            },
        }))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    /// The Ruby `bin/rails runner` is given last: between its quotes.
    fn ruby() -> &'static str {
        let start = MODERATOR_TOKEN_SCRIPT
            .find("exec bin/rails runner '")
            .expect("the last runner")
            + "exec bin/rails runner '".len();
        let end = MODERATOR_TOKEN_SCRIPT
            .rfind('\'')
            .expect("its closing quote");
        &MODERATOR_TOKEN_SCRIPT[start..end]
    }

    #[test]
    fn the_moderator_script_refuses_another_persons_account_before_touching_anything() {
        let ruby = ruby();
        assert!(
            !ruby.contains('\''),
            "a quote would end the shell's quoting"
        );
        // An account Herd made is confirmed with the Moderator role from its first save
        // (`tootctl accounts create`): an existing one is checked for all three, and an
        // unconfirmed one is never confirmed by the Job (that would take it over).
        let check = ruby
            .find("unless user && user.email.to_s.casecmp?(email) && user.confirmed? && !moderator_role.nil? && user.role_id == moderator_role.id")
            .expect("the check of email, confirmation and role");
        assert!(ruby.contains("moderator_role = UserRole.find_by(name: \"Moderator\")"));
        let refusal = ruby.find("abort(\"refused:").expect("the refusal");
        assert!(check < refusal);
        assert!(ruby[refusal..].contains("never taken over"));
        assert!(
            !ruby.contains("mark_email_as_confirmed!"),
            "confirms an account"
        );
        for confirm in [
            ".confirm ",
            ".confirm\n",
            ".confirm!",
            ".confirm(",
            "confirmed_at =",
        ] {
            assert!(!ruby.contains(confirm), "confirms an account: {confirm}");
        }
        for write in [
            "approve!",
            "update!(",
            "find_or_create_by!",
            "t.revoke",
            "create!(",
            "update_columns",
        ] {
            let at = ruby.find(write).unwrap_or_else(|| panic!("{write}"));
            assert!(refusal < at, "{write} before the refusal");
        }
    }

    #[test]
    fn the_moderator_script_turns_off_every_notification_email_the_server_knows() {
        let ruby = ruby();
        // The `notification_emails` namespace of Mastodon's app/models/user_settings.rb.
        for key in [
            "follow",
            "reblog",
            "favourite",
            "mention",
            "follow_request",
            "report",
            "pending_account",
            "trends",
            "appeal",
        ] {
            let listed = [" ", "("].iter().any(|before| {
                [" ", ")"]
                    .iter()
                    .any(|after| ruby.contains(&format!("{before}{key}{after}")))
            });
            assert!(listed, "{key}");
        }
        assert!(ruby.contains("quiet[\"notification_emails.software_updates\"] = \"none\""));
        // Keys an older server does not know would raise UserSettings::KeyError.
        assert!(ruby.contains("quiet.select { |k, _| UserSettings.definition_for(k) }"));
    }

    #[test]
    fn the_moderator_script_never_prints_or_passes_the_token() {
        let ruby = ruby();
        // Read once from the environment, never interpolated or printed.
        assert_eq!(
            MODERATOR_TOKEN_SCRIPT.matches("MODERATOR_TOKEN\"").count(),
            1
        );
        assert!(ruby.contains("token = ENV.fetch(\"MODERATOR_TOKEN\")"));
        assert!(!MODERATOR_TOKEN_SCRIPT.contains("$MODERATOR_TOKEN"));
        for leak in [
            "#{token}",
            "puts(token",
            "p(token",
            "p token",
            "puts token",
            "inspect",
        ] {
            assert!(!ruby.contains(leak), "{leak}");
        }
        // A duplicate's database message quotes the value: it is not shown.
        assert!(ruby.contains("rescue ActiveRecord::RecordNotUnique\n    abort(\"the new token"));
    }

    /// A scratch directory with stand-ins for `bin/rails` and `bin/tootctl` that log their
    /// arguments; the first `rails runner` (the lookup) exits `lookup`.
    fn run(lookup: i32, revoke_only: bool) -> (std::process::Output, String) {
        let dir: PathBuf = std::env::temp_dir().join(format!(
            "herd-moderator-{}-{lookup}-{}",
            std::process::id(),
            crate::secrets::api_token()
        ));
        std::fs::create_dir_all(dir.join("bin")).expect("dir");
        let stub = |name: &str, body: &str| {
            let path = dir.join("bin").join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("stub");
            Command::new("chmod")
                .arg("+x")
                .arg(&path)
                .status()
                .expect("chmod");
        };
        stub(
            "rails",
            &format!(
                "printf '%s' \"$*\" >> argv\ncase \"$2\" in *find_or_create_by*) what=main ;; *) what=lookup ;; esac\nprintf 'rails %s %s\\n' \"$1\" \"$what\" >> calls\nif [ ! -e looked ]; then touch looked; exit {lookup}; fi"
            ),
        );
        stub(
            "tootctl",
            "printf '%s' \"$*\" >> argv\nprintf 'tootctl %s\\n' \"$*\" >> calls\necho 'New password: 0123abcd'",
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(MODERATOR_TOKEN_SCRIPT)
            .current_dir(&dir)
            .env("MODERATOR_USERNAME", "herd_moderation")
            .env("MODERATOR_EMAIL", "moderation@herd.example")
            .env("MODERATOR_REVOKE_ONLY", revoke_only.to_string())
            .env(
                "MODERATOR_TOKEN",
                "TOKEN-tokenTOKENtokenTOKENtokenTOKENtokenTOK",
            )
            .output()
            .expect("sh");
        let calls = std::fs::read_to_string(dir.join("calls")).unwrap_or_default();
        let argv = std::fs::read_to_string(dir.join("argv")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!argv.contains("TOKEN-token"), "the token in the arguments");
        (out, calls)
    }

    #[test]
    fn the_moderator_script_creates_an_absent_account_as_a_moderator_quietly() {
        let (out, calls) = run(3, false);
        assert!(out.status.success(), "{out:?}");
        let lines: Vec<&str> = calls.lines().collect();
        assert_eq!(lines.len(), 3, "{calls}");
        assert_eq!(
            lines[1],
            "tootctl accounts create herd_moderation --email moderation@herd.example --confirmed --approve --role Moderator"
        );
        assert_eq!(lines[0], "rails runner lookup");
        assert_eq!(lines[2], "rails runner main");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!printed.contains("New password"), "{printed}");
        assert!(!printed.contains("TOKEN-token"), "the token in {printed}");
    }

    #[test]
    fn the_moderator_script_keeps_an_existing_account_and_stops_on_a_failed_lookup() {
        let (out, calls) = run(0, false);
        assert!(out.status.success(), "{out:?}");
        assert!(!calls.contains("tootctl"), "{calls}");
        assert_eq!(calls.lines().count(), 2);
        let (out, calls) = run(1, false);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            calls.lines().count(),
            1,
            "nothing after a failed lookup: {calls}"
        );
    }

    #[test]
    fn a_revocation_makes_no_account() {
        let (out, calls) = run(3, true);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            calls, "rails runner lookup\n",
            "no account made, nothing run"
        );
        let (out, calls) = run(0, true);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(calls, "rails runner lookup\nrails runner main\n");
    }
}
