//! The final database dump taken before a tenant's namespace is deleted: `pg_dump` into a
//! scratch volume (init container), then an upload to the S3-compatible backup target.

use super::data::{container_security, database_host, pod_security, POSTGRES_IMAGE};
use super::mastodon::secret_env;
use super::tenancy::{APP_SECRET, SERVICE_ACCOUNT};
use super::{build, Child, RenderError, Tenant};
use crate::secrets::DB_PASS;
use serde_json::json;
use std::collections::BTreeMap;

/// The Job's name.
pub const FINAL_BACKUP_JOB: &str = "final-backup";
/// The copy of the backup target's credentials in the tenant namespace.
pub const FINAL_BACKUP_SECRET: &str = "final-backup-credentials";
pub const UPLOAD_IMAGE: &str = "amazon/aws-cli:2.27.0";
const POSTGRES_UID: i64 = 70;

/// Where final dumps go: an S3-compatible bucket. The credentials (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`) are in a Secret of the operator's namespace; the operator copies
/// them into the tenant namespace for the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTarget {
    pub bucket: String,
    pub endpoint: String,
    /// Key prefix, e.g. `final/`.
    pub prefix: String,
}

/// The object key of a tenant's final dump, stamped with the deletion time (stable across
/// reconciles, so a retried Job writes the same object).
pub fn object_key(target: &BackupTarget, slug: &str, stamp: &str) -> String {
    let stamp: String = stamp.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{}{slug}/final-{stamp}.dump", target.prefix)
}

/// The credentials Secret (with `credentials` copied from the operator's) and the Job.
pub fn final_backup(
    t: &Tenant<'_>,
    target: &BackupTarget,
    credentials: &BTreeMap<String, String>,
    stamp: &str,
) -> Result<Vec<Child>, RenderError> {
    let ns = t.namespace();
    let db = t.database_name();
    let key = object_key(target, &t.instance.spec.slug, stamp);
    let dump = json!([
        { "name": "backup", "mountPath": "/backup" },
        { "name": "tmp", "mountPath": "/tmp" },
    ]);
    let aws = |name: &str| secret_env(name, FINAL_BACKUP_SECRET, name);
    let pod = json!({
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": false,
        "securityContext": pod_security(POSTGRES_UID),
        "restartPolicy": "Never",
        "initContainers": [{
            "name": "dump",
            "image": POSTGRES_IMAGE,
            "command": ["pg_dump", "--format=custom", "--no-owner", "--file=/backup/database.dump"],
            "env": [
                { "name": "PGHOST", "value": database_host(t) },
                { "name": "PGUSER", "value": db },
                { "name": "PGDATABASE", "value": db },
                secret_env("PGPASSWORD", APP_SECRET, DB_PASS),
            ],
            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "500m", "memory": "512Mi" } },
            "securityContext": container_security(true),
            "volumeMounts": dump,
        }],
        "containers": [{
            "name": "upload",
            "image": UPLOAD_IMAGE,
            "command": ["aws", "s3", "cp", "/backup/database.dump", format!("s3://{}/{key}", target.bucket), "--endpoint-url", target.endpoint],
            "env": [
                { "name": "HOME", "value": "/tmp" },
                aws("AWS_ACCESS_KEY_ID"),
                aws("AWS_SECRET_ACCESS_KEY"),
            ],
            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "500m", "memory": "256Mi" } },
            "securityContext": container_security(true),
            "volumeMounts": dump,
        }],
        "volumes": [{ "name": "backup", "emptyDir": {} }, { "name": "tmp", "emptyDir": {} }],
    });
    Ok(vec![
        Child::Secret(build(
            "Secret final-backup-credentials",
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": FINAL_BACKUP_SECRET, "namespace": ns, "labels": t.labels("backup") },
                "type": "Opaque",
                "stringData": credentials,
            }),
        )?),
        Child::Job(build(
            "Job final-backup",
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {
                    "name": FINAL_BACKUP_JOB, "namespace": ns, "labels": t.labels("jobs"),
                    "annotations": { "herd.dev/backup-object": format!("s3://{}/{key}", target.bucket) },
                },
                "spec": {
                    "backoffLimit": 3,
                    "template": { "metadata": { "labels": t.labels("jobs") }, "spec": pod },
                },
            }),
        )?),
    ])
}
