//! The final backup taken before a tenant's namespace is deleted: the database (`pg_dump`)
//! and, where they are on a volume, the media (Mastodon's `public/system`, GoToSocial's
//! local storage), uploaded to the S3-compatible backup target.
//!
//! No credential of the target enters the tenant's namespace: the operator presigns one
//! `PUT` URL per object the Job may write, under this tenant's own prefix and valid two
//! hours (see [`crate::presign`]), and the Job finds only those URLs in the Secret
//! [`FINAL_BACKUP_URLS`]. A `PUT` carries at most 5 GB, so each artifact is cut into
//! numbered pieces of [`PIECE_MIB`] MiB (`database.dump.000`, `media.tar.000`, …), each
//! to its own URL; a manifest (`manifest.txt`: what was backed up, each piece's size and
//! SHA-256 in `sha256sum -c` format) goes last, so a backup without one is incomplete.
//!
//! The pod: an init container of the PostgreSQL image dumps the database into a scratch
//! volume (as before), then a container of the curl image (Alpine, with BusyBox's `dd`,
//! `tar`, `sha256sum`) cuts the dump and the media archive (streamed from `tar`, the media
//! volume mounted read-only) into pieces on the scratch volume and uploads them one by
//! one: the scratch volume holds the dump and one piece, never the media.

use super::data::{container_security, database_host, pod_security, POSTGRES_IMAGE};
use super::gotosocial::GOTOSOCIAL_UID;
use super::mastodon::{media_on_volume, pin_to_media_node, secret_env, MASTODON_UID};
use super::tenancy::{APP_SECRET, SERVICE_ACCOUNT};
use super::{build, Child, RenderError, Tenant};
use crate::crd::App;
use crate::secrets::DB_PASS;
use serde_json::json;
use std::collections::BTreeMap;

/// The Job's name.
pub const FINAL_BACKUP_JOB: &str = "final-backup";
/// The Secret in the tenant namespace with the presigned upload URLs (file name → URL).
pub const FINAL_BACKUP_URLS: &str = "final-backup-urls";
/// The image that cuts and uploads (curl on Alpine, with BusyBox).
pub const UPLOAD_IMAGE: &str = "curlimages/curl:8.11.1";
/// The size of each piece, under the 5 GB limit of one `PUT`.
pub const PIECE_MIB: u64 = 4096;
/// Pieces presigned per artifact (256 GiB at 4 GiB each); the Job fails, saying so, on an
/// artifact that needs more.
pub const MAX_PIECES: usize = 64;
/// The database dump's artifact name.
pub const DATABASE_ARTIFACT: &str = "database.dump";
/// The media archive's artifact name (a tar of the media volume's content).
pub const MEDIA_ARTIFACT: &str = "media.tar";
/// The manifest, uploaded last.
pub const MANIFEST: &str = "manifest.txt";

/// Where final backups go: an S3-compatible bucket. The credentials (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`) are in a Secret of the operator's namespace and stay there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupTarget {
    pub bucket: String,
    pub endpoint: String,
    /// Key prefix, e.g. `final/`.
    pub prefix: String,
    /// The region the requests are signed for (`us-east-1` for most S3-compatible
    /// services that have none).
    pub region: String,
}

/// The key prefix (ending in `/`) of a tenant's final backup, stamped with the deletion
/// time (stable across reconciles, so a retried Job writes the same objects).
pub fn object_dir(target: &BackupTarget, slug: &str, stamp: &str) -> String {
    let stamp: String = stamp.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{}{slug}/final-{stamp}/", target.prefix)
}

/// What the final backup of this tenant contains: the database dump, and the media archive
/// when the media are on a volume.
pub fn artifacts(t: &Tenant<'_>) -> Result<Vec<&'static str>, RenderError> {
    let mut a = vec![DATABASE_ARTIFACT];
    if media_on_volume(t)? {
        a.push(MEDIA_ARTIFACT);
    }
    Ok(a)
}

/// The name of every object the Job may upload: [`MAX_PIECES`] pieces per artifact, then
/// the manifest. The operator presigns one URL for each.
pub fn upload_names(t: &Tenant<'_>) -> Result<Vec<String>, RenderError> {
    let mut names: Vec<String> = artifacts(t)?
        .iter()
        .flat_map(|a| (0..MAX_PIECES).map(move |i| format!("{a}.{i:03}")))
        .collect();
    names.push(MANIFEST.to_owned());
    Ok(names)
}

/// The Job's script (BusyBox `sh`; a test runs it with GNU tools too). Directories come
/// from `SCRATCH`, `URLS` and `MEDIA_DIR`. URLs are handed to curl on its standard input,
/// never in its arguments, which every process of the node can read.
const UPLOAD_SCRIPT: &str = r##"set -eu -o pipefail
scratch=$SCRATCH
: > "$scratch/sizes"
: > "$scratch/sums"
put() {
  if [ ! -f "$URLS/$2" ]; then
    echo "no upload URL for $2: the artifact needs more than $MAX_PIECES pieces of $PIECE_MIB MiB; back this tenant up by hand (docs/OPERATIONS.md)" >&2
    exit 1
  fi
  printf 'url = "%s"\n' "$(cat "$URLS/$2")" | curl --config - --fail --silent --show-error --retry 5 --retry-all-errors --upload-file "$1"
  echo "uploaded $2 ($(stat -c %s "$1") bytes)"
}
pieces() {
  i=0
  while :; do
    name="$1.$(printf '%03d' "$i")"
    dd of="$scratch/piece" bs=1048576 count="$PIECE_MIB" iflag=fullblock 2>/dev/null
    size=$(stat -c %s "$scratch/piece")
    if [ "$size" -eq 0 ] && [ "$i" -gt 0 ]; then break; fi
    put "$scratch/piece" "$name"
    echo "$(sha256sum "$scratch/piece" | cut -d' ' -f1)  $name" >> "$scratch/sums"
    echo "# piece $name $size bytes" >> "$scratch/sizes"
    i=$((i + 1))
    if [ "$size" -eq 0 ]; then break; fi
  done
  rm -f "$scratch/piece"
}
pieces database.dump < "$scratch/database.dump"
rm -f "$scratch/database.dump"
if [ "$MEDIA" = volume ]; then
  tar -C "$MEDIA_DIR" -cf - . | pieces media.tar
fi
{
  printf '%s\n' "$MANIFEST_HEADER"
  echo "# taken: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  cat "$scratch/sizes" "$scratch/sums"
} > "$scratch/manifest.txt"
put "$scratch/manifest.txt" manifest.txt
"##;

/// The manifest's first lines: what was backed up, and where the media are.
fn manifest_header(t: &Tenant<'_>, target: &BackupTarget, dir: &str) -> String {
    let spec = &t.instance.spec;
    let app = match spec.app {
        App::Mastodon => "mastodon",
        App::Gotosocial => "gotosocial",
    };
    // Both apps keep media on their `media` volume unless they are in object storage.
    let media = match &spec.media_s3 {
        Some(s3) => format!("media: object storage, bucket {} at {}; not copied: the objects stay in that bucket, under its provider's lifecycle rules", s3.bucket, s3.endpoint),
        None => format!("media: volume, in {MEDIA_ARTIFACT} (a tar of the volume's content)"),
    };
    [
        "# Herd final backup, format 1".to_owned(),
        format!("# tenant: {} ({}), {app} {}", spec.slug, spec.local_domain, spec.version),
        format!("# location: s3://{}/{dir}", target.bucket),
        format!("# database: {DATABASE_ARTIFACT} (pg_dump --format=custom of {}; restore with pg_restore)", t.database_name()),
        format!("# {media}"),
        format!("# pieces: concatenate {{artifact}}.000, .001, … in order; check with `sha256sum -c {MANIFEST}`"),
    ]
    .join("\n")
}

/// The URL Secret (`urls`, from [`crate::presign::upload_urls`]) and the Job.
pub fn final_backup(
    t: &Tenant<'_>,
    target: &BackupTarget,
    urls: &BTreeMap<String, String>,
    stamp: &str,
) -> Result<Vec<Child>, RenderError> {
    let ns = t.namespace();
    let db = t.database_name();
    let dir = object_dir(target, &t.instance.spec.slug, stamp);
    let media = media_on_volume(t)?;
    // The app's user, who owns the media files; pg_dump runs as anyone.
    let uid = match t.instance.spec.app {
        App::Mastodon => MASTODON_UID,
        App::Gotosocial => GOTOSOCIAL_UID,
    };
    let mut mounts = vec![
        json!({ "name": "backup", "mountPath": "/backup" }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    let dump_mounts = mounts.clone();
    mounts.push(json!({ "name": "urls", "mountPath": "/urls", "readOnly": true }));
    let mut volumes = vec![
        json!({ "name": "backup", "emptyDir": {} }),
        json!({ "name": "tmp", "emptyDir": {} }),
        json!({ "name": "urls", "secret": { "secretName": FINAL_BACKUP_URLS, "defaultMode": 0o440 } }),
    ];
    if media {
        volumes.push(json!({ "name": "media", "persistentVolumeClaim": { "claimName": "media", "readOnly": true } }));
        mounts.push(json!({ "name": "media", "mountPath": "/media", "readOnly": true }));
    }
    let pod = json!({
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": false,
        "securityContext": pod_security(uid),
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
            "volumeMounts": dump_mounts,
        }],
        "containers": [{
            "name": "upload",
            "image": UPLOAD_IMAGE,
            "command": ["/bin/sh", "-c", UPLOAD_SCRIPT],
            "env": [
                { "name": "HOME", "value": "/tmp" },
                { "name": "SCRATCH", "value": "/backup" },
                { "name": "URLS", "value": "/urls" },
                { "name": "MEDIA_DIR", "value": "/media" },
                { "name": "PIECE_MIB", "value": PIECE_MIB.to_string() },
                { "name": "MAX_PIECES", "value": MAX_PIECES.to_string() },
                { "name": "MEDIA", "value": if media { "volume" } else { "none" } },
                { "name": "MANIFEST_HEADER", "value": manifest_header(t, target, &dir) },
            ],
            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "500m", "memory": "256Mi" } },
            "securityContext": container_security(true),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    });
    let mut template = json!({ "metadata": { "labels": t.labels("jobs") }, "spec": pod });
    // A one-node media volume is read where the app's pods have it attached.
    pin_to_media_node(t, &mut template)?;
    // Stopped before its URLs expire: a retry (deleting the failed Job) gets new ones.
    let deadline = crate::presign::URL_VALIDITY.as_secs() - 300;
    Ok(vec![
        Child::Secret(build(
            "Secret final-backup-urls",
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": FINAL_BACKUP_URLS, "namespace": ns, "labels": t.labels("backup") },
                "type": "Opaque",
                "stringData": urls,
            }),
        )?),
        Child::Job(build(
            "Job final-backup",
            json!({
                "apiVersion": "batch/v1", "kind": "Job",
                "metadata": {
                    "name": FINAL_BACKUP_JOB, "namespace": ns, "labels": t.labels("jobs"),
                    "annotations": { "herd.dev/backup-object": format!("s3://{}/{dir}", target.bucket) },
                },
                "spec": {
                    "backoffLimit": 3,
                    "activeDeadlineSeconds": deadline,
                    "template": template,
                },
            }),
        )?),
    ])
}
