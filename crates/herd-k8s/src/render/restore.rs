//! Restoring a tenant from one of its backups (`spec.restore`): the restore Job, and for
//! Mastodon the migration Job that brings the restored database to the running version.
//!
//! The restore Job reads the backup through presigned `GET` URLs (one per object it may
//! read: the manifest, [`MAX_PIECES`] pieces of the dump and, when media are restored, of
//! the media archive), which the operator signs for the backup's own directory under its
//! prefix (see [`crate::presign::source_dir`]) and puts in Secret `restore-<id>-urls`: no
//! credential of the bucket enters the tenant's namespace, and a URL can read nothing else.
//!
//! Its pod: an init container of the curl image ([`FETCH_SCRIPT`]) fetches the manifest,
//! then only the objects it lists, checks each against its SHA-256, and unpacks the media
//! archive into the media volume (mounted read-write) when asked; then a container of the
//! PostgreSQL image ([`RESTORE_DB_SCRIPT`]) restores the dump into the tenant's database
//! (the `postgres` Service, or CloudNativePG's `postgres-rw`) and counts the main tables,
//! which it leaves in its termination message with the counts of the manifest
//! ([`RestoreSummary`]). The app is stopped while it runs (the operator sees to it).
//!
//! Its scratch volume has a size limit, a cap rather than a request
//! ([`scratch_limit`]: from the backup's size when known, else from the tenant's
//! volumes): a backup larger than that gets the pod evicted, and the restore fails saying
//! so, rather than filling the node's disk.

use super::backup::{DATABASE_ARTIFACT, MANIFEST, MAX_PIECES, MEDIA_ARTIFACT, UPLOAD_IMAGE};
use super::data::{container_security, database_host, pod_security, POSTGRES_IMAGE};
use super::gotosocial::GOTOSOCIAL_UID;
use super::mastodon::{media_on_volume, pin_to_media_node, secret_env, MASTODON_UID};
use super::tenancy::{APP_SECRET, SERVICE_ACCOUNT};
use super::{build, Child, RenderError, Tenant};
use crate::crd::App;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

pub use super::restore_scripts::{RestoreSummary, FETCH_SCRIPT, RESTORE_DB_SCRIPT};

/// The label on a restore's Jobs (and their pods): the restore's id.
pub const RESTORE_LABEL: &str = "herd.dev/restore";
/// The container that restores the database and reports (its termination message).
pub const RESTORE_CONTAINER: &str = "restore";
/// The size limit of the restore Job's `/tmp` (psql's and curl's small files).
pub const TMP_LIMIT: &str = "256Mi";
/// How long the download URLs are valid; the Job is stopped five minutes before.
pub const URL_VALIDITY: Duration = Duration::from_secs(6 * 60 * 60);

/// The restore Job's scratch space when the backup's size `B` is known
/// (`spec.restore.sizeBytes`): `SCRATCH_FACTOR × B` plus [`SCRATCH_MARGIN`]. The scratch
/// volume holds every downloaded piece at once (the dump's and the media archive's, `B`
/// in all), then the joined dump beside its SQL text (`pg_restore --file`, uncompressed:
/// a custom-format dump's text is commonly three to five times larger).
pub const SCRATCH_FACTOR: u64 = 6;
/// Added to the scratch space, for the manifest, the logs and small backups.
pub const SCRATCH_MARGIN: u64 = 1 << 30;

/// The size limit of the restore Job's scratch volume, in bytes (the pod is evicted rather
/// than filling the node when the backup is bigger). It is a cap, not a reservation: the
/// pod does not request it as ephemeral storage, since the backup's recorded size counts
/// its media archive too and six times that would leave large tenants unschedulable
/// (their restore Pending, the app held stopped, for hours). From the backup's
/// size when the control plane knows it (see [`SCRATCH_FACTOR`]); otherwise from the
/// tenant's volumes, twice the database's (the dump beside its SQL text, neither larger
/// than the database) plus the media volume's when media are restored, and the margin.
pub fn scratch_limit(t: &Tenant<'_>, media: bool, backup_bytes: Option<i64>) -> u64 {
    let bytes = |q: &str| crate::diff::quantity_bytes(q).map_or(0, |b| b.max(0.0) as u64);
    match backup_bytes.filter(|b| *b > 0) {
        Some(b) => (b as u64).saturating_mul(SCRATCH_FACTOR) + SCRATCH_MARGIN,
        None => {
            let sizing = &t.instance.spec.sizing;
            let media = match media {
                true => bytes(&sizing.media_storage),
                false => 0,
            };
            bytes(&sizing.database_storage).saturating_mul(2) + media + SCRATCH_MARGIN
        }
    }
}

/// A byte count as a Kubernetes quantity, rounded up to whole MiB.
fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(1 << 20))
}

/// The restore Job of restore `id`.
pub fn job_name(id: &str) -> String {
    format!("restore-{id}")
}

/// The migration Job after restore `id` (Mastodon).
pub fn migrate_job_name(id: &str) -> String {
    format!("restore-{id}-migrate")
}

/// The Secret of restore `id`'s download URLs (file name → URL).
pub fn urls_secret_name(id: &str) -> String {
    format!("restore-{id}-urls")
}

/// Whether `id` can name a restore's objects (a DNS label once prefixed and suffixed):
/// lowercase letters, digits and `-`, at most 40 characters, starting and ending with a
/// letter or digit.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 40
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

/// Whether the restore unpacks the media archive: asked for (`spec.restore.media`) and the
/// tenant keeps media on a volume (media in object storage are not in a backup).
pub fn restores_media(t: &Tenant<'_>, asked: bool) -> Result<bool, RenderError> {
    Ok(asked && media_on_volume(t)?)
}

/// The objects a restore may read, one URL each: the manifest, the dump's pieces and, when
/// media are restored, the media archive's. (The fetch script reads the manifest first,
/// then only what it lists.)
pub fn download_names(media: bool) -> Vec<String> {
    let mut names = vec![MANIFEST.to_owned()];
    let mut artifacts = vec![DATABASE_ARTIFACT];
    if media {
        artifacts.push(MEDIA_ARTIFACT);
    }
    for a in artifacts {
        names.extend((0..MAX_PIECES).map(|i| format!("{a}.{i:03}")));
    }
    names
}

/// Restore `id` from `source` (`s3://bucket/dir/`): its URL Secret (`urls`, from
/// [`crate::presign::download_urls`]) and its Job. `media`: from [`restores_media`];
/// `manifest_sha256`: the manifest's SHA-256 as the backup reported it, when the tenant's
/// records know it (a manifest that differs is then refused); `backup_bytes`: the backup's
/// size when known, which sizes the scratch volume ([`scratch_limit`]).
pub fn restore(
    t: &Tenant<'_>,
    urls: &BTreeMap<String, String>,
    id: &str,
    source: &str,
    media: bool,
    manifest_sha256: Option<&str>,
    backup_bytes: Option<i64>,
) -> Result<Vec<Child>, RenderError> {
    let db = t.database_name();
    let (uid, app) = match t.instance.spec.app {
        App::Mastodon => (MASTODON_UID, "mastodon"),
        App::Gotosocial => (GOTOSOCIAL_UID, "gotosocial"),
    };
    let secret = urls_secret_name(id);
    let scratch = json!({ "name": "scratch", "mountPath": "/scratch" });
    let tmp = json!({ "name": "tmp", "mountPath": "/tmp" });
    let mut fetch_mounts = vec![
        scratch.clone(),
        tmp.clone(),
        json!({ "name": "urls", "mountPath": "/urls", "readOnly": true }),
    ];
    // Bounded: a backup bigger than the scratch space gets the pod evicted (the restore
    // fails and says so) rather than the node's disk filled; /tmp holds only small files.
    let scratch_size = mebibytes(scratch_limit(t, media, backup_bytes));
    let mut volumes = vec![
        json!({ "name": "scratch", "emptyDir": { "sizeLimit": scratch_size } }),
        json!({ "name": "tmp", "emptyDir": { "sizeLimit": TMP_LIMIT } }),
        json!({ "name": "urls", "secret": { "secretName": secret, "defaultMode": 0o440 } }),
    ];
    if media {
        volumes.push(json!({ "name": "media", "persistentVolumeClaim": { "claimName": "media" } }));
        fetch_mounts.push(json!({ "name": "media", "mountPath": "/media" }));
    }
    let mut fetch_env = vec![
        json!({ "name": "HOME", "value": "/tmp" }),
        json!({ "name": "URLS", "value": "/urls" }),
        json!({ "name": "SCRATCH", "value": "/scratch" }),
        json!({ "name": "MEDIA_DIR", "value": "/media" }),
        json!({ "name": "MEDIA", "value": if media { "volume" } else { "none" } }),
        json!({ "name": "TERMINATION_LOG", "value": "/dev/termination-log" }),
    ];
    if let Some(sum) = manifest_sha256 {
        fetch_env.push(json!({ "name": "MANIFEST_SHA256", "value": sum }));
    }
    let mut labels = t.labels("jobs");
    labels.insert(RESTORE_LABEL.to_owned(), id.to_owned());
    let mut template = json!({
        "metadata": { "labels": labels },
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "automountServiceAccountToken": false,
            // The app's user, who owns the media files.
            "securityContext": pod_security(uid),
            "restartPolicy": "Never",
            "initContainers": [{
                "name": "fetch",
                "image": UPLOAD_IMAGE,
                "command": ["/bin/sh", "-c", FETCH_SCRIPT],
                "env": fetch_env,
                "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "500m", "memory": "256Mi" } },
                "securityContext": container_security(true),
                "volumeMounts": fetch_mounts,
            }],
            "containers": [{
                "name": RESTORE_CONTAINER,
                "image": POSTGRES_IMAGE,
                "command": ["/bin/sh", "-c", RESTORE_DB_SCRIPT],
                "env": [
                    { "name": "HOME", "value": "/tmp" },
                    { "name": "SCRATCH", "value": "/scratch" },
                    { "name": "PGHOST", "value": database_host(t) },
                    { "name": "PGPORT", "value": "5432" },
                    { "name": "PGUSER", "value": t.database_login().0 },
                    { "name": "PGDATABASE", "value": db },
                    secret_env("PGPASSWORD", APP_SECRET, t.database_login().1),
                    { "name": "APP", "value": app },
                    { "name": "TERMINATION_LOG", "value": "/dev/termination-log" },
                ],
                "resources": { "requests": { "cpu": "100m", "memory": "256Mi" }, "limits": { "cpu": "1", "memory": "1Gi" } },
                "securityContext": container_security(true),
                "volumeMounts": [scratch, tmp],
            }],
            "volumes": volumes,
        },
    });
    // A one-node media volume is written where the app's pods have it attached.
    pin_to_media_node(t, &mut template)?;
    let deadline = URL_VALIDITY.as_secs() - 300;
    let mut job_labels = t.labels("jobs");
    job_labels.insert(RESTORE_LABEL.to_owned(), id.to_owned());
    Ok(vec![
        Child::Secret(build(
            "Secret of restore download URLs",
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": secret, "namespace": t.namespace(), "labels": job_labels },
                "type": "Opaque",
                "stringData": urls,
            }),
        )?),
        Child::Job(build(
            "restore Job",
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {
                    "name": job_name(id), "namespace": t.namespace(), "labels": job_labels,
                    "annotations": { "herd.dev/restore-source": source },
                },
                "spec": {
                    // Never run twice on its own: a failure is for a human to read.
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": deadline,
                    "ttlSecondsAfterFinished": 604800,
                    "template": template,
                },
            }),
        )?),
    ])
}

/// Mastodon's migrations after restore `id`, with the image of `version` (the version the
/// tenant runs): pre- and post-deployment migrations together, as the app is stopped.
/// `None` for GoToSocial, which migrates its database when it starts.
pub fn migrate_job(t: &Tenant<'_>, version: &str, id: &str) -> Result<Option<Child>, RenderError> {
    if t.instance.spec.app != App::Mastodon {
        return Ok(None);
    }
    let mut at = t.instance.clone();
    at.spec.version = version.to_owned();
    let job = super::mastodon::rails_job(
        &Tenant {
            instance: &at,
            ..*t
        },
        &migrate_job_name(id),
        ["bundle", "exec", "rails", "db:migrate"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        Vec::new(),
    )?;
    Ok(Some(match job {
        Child::Job(mut j) => {
            j.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(RESTORE_LABEL.to_owned(), id.to_owned());
            Child::Job(j)
        }
        other => other,
    }))
}
