//! The tenant's PostgreSQL (a CloudNativePG `Cluster`, or a StatefulSet where that
//! operator is absent) and Redis.

use super::tenancy::{APP_SECRET, SERVICE_ACCOUNT};
use super::{build, Child, RenderError, Tenant};
use crate::secrets::{DB_PASS, REDIS_PASSWORD};
use serde_json::{json, Value};

pub const POSTGRES_IMAGE: &str = "postgres:16-alpine";
pub const REDIS_IMAGE: &str = "redis:7-alpine";
/// The alpine images' service users.
const POSTGRES_UID: i64 = 70;
const REDIS_UID: i64 = 999;

/// The host name of the tenant's database service.
pub fn database_host(t: &Tenant<'_>) -> String {
    if t.uses_cloudnative_pg() {
        "postgres-rw".into()
    } else {
        "postgres".into()
    }
}

/// A container security context that passes the `restricted` Pod Security Standard.
pub fn container_security(read_only_root: bool) -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": { "drop": ["ALL"] },
    })
}

pub fn pod_security(uid: i64) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn secret_env(name: &str, key: &str) -> Value {
    json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": APP_SECRET, "key": key } } })
}

pub fn render(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let mut out = if t.uses_cloudnative_pg() {
        cloudnative_pg(t)?
    } else {
        postgres_statefulset(t)?
    };
    // GoToSocial needs no Redis.
    if t.instance.spec.app == crate::crd::App::Mastodon {
        out.extend(redis(t)?);
    }
    Ok(out)
}

fn service(t: &Tenant<'_>, name: &str, component: &str, port: i64) -> Result<Child, RenderError> {
    Ok(Child::Service(build(
        "Service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": t.namespace(), "labels": t.labels(component) },
            "spec": { "selector": t.selector(component), "ports": [{ "name": name, "port": port, "targetPort": port }] },
        }),
    )?))
}

fn volume_claim(size: &str) -> Value {
    json!({
        "metadata": { "name": "data" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": size } } },
    })
}

/// A one-replica StatefulSet running `container` with a `data` volume claim of `storage`,
/// and its Service on `port`.
#[expect(
    clippy::too_many_arguments,
    reason = "each argument is one field of the manifest"
)]
fn single_replica(
    t: &Tenant<'_>,
    name: &str,
    component: &str,
    uid: i64,
    container: Value,
    volumes: Option<Value>,
    storage: &str,
    port: i64,
) -> Result<Vec<Child>, RenderError> {
    let mut pod = json!({
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": false,
        "securityContext": pod_security(uid),
        "containers": [container],
    });
    if let Some(v) = volumes {
        pod["volumes"] = v;
    }
    let sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": { "name": name, "namespace": t.namespace(), "labels": t.labels(component) },
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": { "matchLabels": t.selector(component) },
            "template": { "metadata": { "labels": t.labels(component) }, "spec": pod },
            "volumeClaimTemplates": [volume_claim(storage)],
        },
    });
    Ok(vec![
        Child::StatefulSet(build("StatefulSet", sts)?),
        service(t, name, component, port)?,
    ])
}

fn postgres_statefulset(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let db = t.database_name();
    let container = json!({
        "name": "postgres",
        "image": POSTGRES_IMAGE,
        "env": [
            { "name": "POSTGRES_USER", "value": db },
            { "name": "POSTGRES_DB", "value": db },
            { "name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata" },
            secret_env("POSTGRES_PASSWORD", DB_PASS),
        ],
        "ports": [{ "name": "postgres", "containerPort": 5432 }],
        "readinessProbe": { "exec": { "command": ["pg_isready", "-U", db, "-d", db] }, "periodSeconds": 10 },
        "livenessProbe": { "exec": { "command": ["pg_isready", "-U", db, "-d", db] }, "periodSeconds": 30, "failureThreshold": 6 },
        "resources": database_resources(),
        "securityContext": container_security(false),
        "volumeMounts": [
            { "name": "data", "mountPath": "/var/lib/postgresql/data" },
            { "name": "run", "mountPath": "/var/run/postgresql" },
        ],
    });
    let volumes = json!([{ "name": "run", "emptyDir": {} }]);
    single_replica(
        t,
        "postgres",
        "database",
        POSTGRES_UID,
        container,
        Some(volumes),
        &t.instance.spec.sizing.database_storage,
        5432,
    )
}

/// Each PostgreSQL instance's CPU limit (millicores) and memory limit (MiB), as the
/// tenant's quota counts them.
pub const DATABASE_LIMITS: (i64, i64) = (2_000, 2_048);

/// The resources of each PostgreSQL instance, StatefulSet or CloudNativePG (whose instance
/// pods would otherwise get the LimitRange's defaults, which the quota does not expect).
fn database_resources() -> Value {
    json!({
        "requests": { "cpu": "250m", "memory": "512Mi" },
        "limits": { "cpu": format!("{}m", DATABASE_LIMITS.0), "memory": format!("{}Mi", DATABASE_LIMITS.1) },
    })
}

/// The name of a tenant's CloudNativePG `Cluster` (its pods carry `cnpg.io/cluster`).
pub(super) const CNPG_CLUSTER: &str = "postgres";

fn cloudnative_pg(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let ns = t.namespace();
    let password = t.secrets.get(DB_PASS).unwrap_or_default();
    let auth = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "postgres-app", "namespace": ns, "labels": t.labels("database") },
        "type": "kubernetes.io/basic-auth",
        "stringData": { "username": t.database_name(), "password": password },
    });
    let large = t.instance.spec.sizing.web_replicas > 2;
    let mut cluster = json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": { "name": CNPG_CLUSTER, "namespace": ns, "labels": t.labels("database") },
        "spec": {
            "instances": if large { 2 } else { 1 },
            "imageName": "ghcr.io/cloudnative-pg/postgresql:16",
            "storage": { "size": t.instance.spec.sizing.database_storage },
            "resources": database_resources(),
            "bootstrap": { "initdb": { "database": t.database_name(), "owner": t.database_name(), "secret": { "name": "postgres-app" } } },
            "inheritedMetadata": { "labels": t.selector("database") },
        },
    });
    // Base backups and WAL to the object store, with the tenant's own credentials.
    if let Some(target) = &t.cluster.backup {
        cluster["spec"]["backup"] = super::schedule::cnpg_cluster_backup(t, target);
    }
    Ok(vec![
        Child::Secret(build("Secret postgres-app", auth)?),
        Child::Dynamic(build("Cluster postgres", cluster)?),
    ])
}

/// Redis reads its password from a configuration file in a Secret: on its command line
/// it would show in every process listing of the node.
pub const REDIS_CONFIG_SECRET: &str = "redis-config";

fn redis(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let redis = &t.instance.spec.redis;
    let password = t.secrets.get(REDIS_PASSWORD).unwrap_or_default();
    let config = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": REDIS_CONFIG_SECRET, "namespace": t.namespace(), "labels": t.labels("redis") },
        "type": "Opaque",
        "stringData": { "redis.conf": format!("requirepass {password}\nappendonly yes\ndir /data\n") },
    });
    let container = json!({
        "name": "redis",
        "image": REDIS_IMAGE,
        "command": ["redis-server", "/etc/redis/redis.conf"],
        "ports": [{ "name": "redis", "containerPort": 6379 }],
        "readinessProbe": { "tcpSocket": { "port": 6379 }, "periodSeconds": 10 },
        "livenessProbe": { "tcpSocket": { "port": 6379 }, "periodSeconds": 30 },
        "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "500m", "memory": redis.memory_limit } },
        "securityContext": container_security(true),
        "volumeMounts": [
            { "name": "data", "mountPath": "/data" },
            { "name": "config", "mountPath": "/etc/redis", "readOnly": true },
        ],
    });
    let mut out = vec![Child::Secret(build("Secret redis-config", config)?)];
    out.extend(single_replica(
        t,
        "redis",
        "redis",
        REDIS_UID,
        container,
        Some(json!([{ "name": "config", "secret": { "secretName": REDIS_CONFIG_SECRET, "defaultMode": 0o440 } }])),
        &redis.storage,
        6379,
    )?);
    Ok(out)
}
