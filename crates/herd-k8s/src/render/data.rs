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

/// A one-replica StatefulSet running `containers` with a `data` volume claim of `storage`,
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
    containers: Vec<Value>,
    volumes: Option<Value>,
    storage: &str,
    port: i64,
) -> Result<Vec<Child>, RenderError> {
    let mut pod = json!({
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": false,
        "securityContext": pod_security(uid),
        "containers": containers,
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

/// The app's own login to a database Herd runs itself (see [`ROLES_SCRIPT`]).
pub fn app_role(app: crate::crd::App) -> &'static str {
    match app {
        crate::crd::App::Mastodon => "mastodon_app",
        crate::crd::App::Gotosocial => "gotosocial_app",
    }
}

/// The file the role keeper writes once the app's role is in place; its readiness probe
/// (and so the database pod's) waits for it.
pub const ROLES_DONE: &str = "/herd-roles/done";

/// The CPU (millicores) and memory (MiB) limits of the role keeper.
pub const ROLES_LIMITS: (i64, i64) = (100, 64);

/// The role keeper's script: a second container of the PostgreSQL pod (the image's `sh`,
/// BusyBox). The official image makes `POSTGRES_USER` the server's superuser, and Herd's
/// tenants until December 2026 ran the app as that user. Through the pod's socket (trusted
/// by the image), as that superuser, it makes the app's login `APP_ROLE` (password:
/// `APP_PASSWORD`, read by psql from the environment, never on a command line, stored as
/// SCRAM, and never written to the server's log with a failed statement) a role without
/// superuser, `CREATEDB`, `CREATEROLE`, replication or row-security bypass, settings of its
/// own or an expiry, member of no other role (each membership revoked as granted; one left
/// is an error). The superuser keeps owning database `PGDATABASE` (its settings reset, so
/// nothing a login set there reaches the keeper's or anyone's session), and grants the
/// app `CONNECT`, `CREATE` and `TEMPORARY` on it: the app owns the `public` schema and
/// every table, view, sequence, function and type in it that no extension owns (an older
/// tenant's, made by the superuser, change owner here; `REASSIGN OWNED` refuses the
/// bootstrap superuser), and may create the extensions PostgreSQL marks trusted, but
/// cannot change the database itself. Its session pins the settings that could stop it
/// (read-only transactions, timeouts) and runs with `search_path` set to `pg_catalog`
/// alone, so nothing in `public` is called by its statements.
///
/// It runs at the pod's start, then writes [`ROLES_DONE`] (the pod's readiness waits for
/// it); a failure is printed and retried every 2 seconds (the server may still be
/// starting, or restarting after the image's first initialisation), and after 5 minutes
/// the container exits to be restarted. Then again every 10 minutes, undoing what the app
/// may have changed on its own login (its settings, its password); a failure then is
/// printed and the pod stays ready. Environment: `PGHOST` (the socket's directory),
/// `PGUSER` (the superuser), `PGDATABASE`, `APP_ROLE`, `APP_PASSWORD`, `DONE` (the file to
/// write).
pub const ROLES_SCRIPT: &str = r##"set -eu
rm -f "$DONE"
sleeper=""
trap 'if [ -n "$sleeper" ]; then kill "$sleeper" 2> /dev/null || true; fi; exit 0' TERM INT
export PGOPTIONS="-c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0 -c search_path=pg_catalog"
sql() {
  psql -X -q -v ON_ERROR_STOP=1 -v app="$APP_ROLE" -v db="$PGDATABASE" <<'SQL'
\getenv pass APP_PASSWORD
RESET ROLE;
SET search_path = pg_catalog;
SET client_min_messages = warning;
SET log_min_error_statement = panic;
SET log_statement = none;
SET password_encryption = 'scram-sha-256';
SELECT format('CREATE ROLE %I LOGIN', :'app') WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = :'app') \gexec
ALTER ROLE :"app" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT -1 VALID UNTIL 'infinity' PASSWORD :'pass';
ALTER ROLE :"app" RESET ALL;
ALTER ROLE :"app" IN DATABASE :"db" RESET ALL;
ALTER DATABASE :"db" OWNER TO CURRENT_USER;
ALTER DATABASE :"db" RESET ALL;
ALTER DATABASE :"db" WITH ALLOW_CONNECTIONS true CONNECTION LIMIT -1;
GRANT CONNECT, CREATE, TEMPORARY ON DATABASE :"db" TO :"app";
SELECT set_config('herd.app_role', :'app', false);
DO $herd$
DECLARE
  app text := pg_catalog.current_setting('herd.app_role');
  app_oid oid := (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = app);
  r record;
BEGIN
  FOR r IN SELECT m.roleid::regrole AS granted, m.grantor::regrole AS grantor FROM pg_catalog.pg_auth_members m WHERE m.member = app_oid LOOP
    EXECUTE pg_catalog.format('REVOKE %s FROM %I GRANTED BY %s CASCADE', r.granted, app, r.grantor);
  END LOOP;
  IF EXISTS (SELECT FROM pg_catalog.pg_auth_members m WHERE m.member = app_oid) THEN
    RAISE EXCEPTION 'the role % is still a member of another role after every membership was revoked', app;
  END IF;
  IF pg_catalog.to_regnamespace('public') IS NULL THEN
    EXECUTE pg_catalog.format('CREATE SCHEMA public AUTHORIZATION %I', app);
  END IF;
  EXECUTE pg_catalog.format('ALTER SCHEMA public OWNER TO %I', app);
  FOR r IN SELECT c.oid::regclass AS obj, c.relkind FROM pg_catalog.pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relowner <> app_oid
             AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') LOOP
    EXECUTE pg_catalog.format('ALTER %s %s OWNER TO %I',
      CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.obj, app);
  END LOOP;
  -- Sequences a table owns changed with it; the others now.
  FOR r IN SELECT c.oid::regclass AS obj FROM pg_catalog.pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'S' AND c.relowner <> app_oid
             AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') LOOP
    EXECUTE pg_catalog.format('ALTER SEQUENCE %s OWNER TO %I', r.obj, app);
  END LOOP;
  -- Domains, enums, ranges, multiranges and composite types of their own (a table's row
  -- type and an array type change with what they belong to).
  FOR r IN SELECT ty.oid::regtype AS obj, ty.typtype FROM pg_catalog.pg_type ty
           WHERE ty.typnamespace = 'public'::regnamespace AND ty.typowner <> app_oid AND ty.typtype IN ('d', 'e', 'r', 'm', 'c')
             AND (ty.typtype <> 'c' OR (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = ty.typrelid) = 'c')
             AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_type'::regclass AND d.objid = ty.oid AND d.deptype = 'e') LOOP
    EXECUTE pg_catalog.format('ALTER %s %s OWNER TO %I', CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.obj, app);
  END LOOP;
  -- Functions (a range's constructors changed with it).
  FOR r IN SELECT p.oid::regprocedure AS obj, p.prokind FROM pg_catalog.pg_proc p
           WHERE p.pronamespace = 'public'::regnamespace AND p.proowner <> app_oid
             AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') LOOP
    EXECUTE pg_catalog.format('ALTER %s %s OWNER TO %I', CASE r.prokind WHEN 'a' THEN 'AGGREGATE' ELSE 'ROUTINE' END, r.obj, app);
  END LOOP;
END
$herd$;
SQL
}
tries=0
until out=$(sql 2>&1); do
  tries=$((tries + 1))
  echo "setting up the app's database login $APP_ROLE failed (try $tries, again in 2 seconds): $out" >&2
  if [ "$tries" -ge 150 ]; then
    echo "the app's database login $APP_ROLE could not be set up in 5 minutes; restarting" >&2
    exit 1
  fi
  sleep 2 &
  sleeper=$!
  wait "$sleeper" || true
done
: > "$DONE"
echo "the app's database login $APP_ROLE is ready: no superuser, owner of the public schema of database $PGDATABASE"
while :; do
  sleep 600 &
  sleeper=$!
  wait "$sleeper" || true
  if ! out=$(sql 2>&1); then
    echo "keeping the app's database login $APP_ROLE failed (the pod stays ready; again in 10 minutes): $out" >&2
  fi
done
"##;

/// The role keeper's container (see [`ROLES_SCRIPT`]).
fn roles_container(t: &Tenant<'_>) -> Value {
    let db = t.database_name();
    let (app_login, app_pass) = t.database_login();
    json!({
        "name": "roles",
        "image": POSTGRES_IMAGE,
        "command": ["/bin/sh", "-c", ROLES_SCRIPT],
        "env": [
            { "name": "PGHOST", "value": "/var/run/postgresql" },
            { "name": "PGUSER", "value": db },
            { "name": "PGDATABASE", "value": db },
            { "name": "APP_ROLE", "value": app_login },
            secret_env("APP_PASSWORD", app_pass),
            { "name": "DONE", "value": ROLES_DONE },
        ],
        "readinessProbe": { "exec": { "command": ["test", "-f", ROLES_DONE] }, "periodSeconds": 5 },
        "resources": {
            "requests": { "cpu": "10m", "memory": "32Mi" },
            "limits": { "cpu": format!("{}m", ROLES_LIMITS.0), "memory": format!("{}Mi", ROLES_LIMITS.1) },
        },
        "securityContext": container_security(true),
        "volumeMounts": [
            { "name": "run", "mountPath": "/var/run/postgresql" },
            { "name": "roles", "mountPath": "/herd-roles" },
        ],
    })
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
    let volumes = json!([
        { "name": "run", "emptyDir": {} },
        { "name": "roles", "emptyDir": { "sizeLimit": "1Mi" } },
    ]);
    single_replica(
        t,
        "postgres",
        "database",
        POSTGRES_UID,
        vec![container, roles_container(t)],
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
        vec![container],
        Some(json!([{ "name": "config", "secret": { "secretName": REDIS_CONFIG_SECRET, "defaultMode": 0o440 } }])),
        &redis.storage,
        6379,
    )?);
    Ok(out)
}
