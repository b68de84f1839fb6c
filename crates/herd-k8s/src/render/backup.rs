//! A tenant's backups taken by a Job of its own: the final backup before its namespace is
//! deleted, the scheduled backup (a CronJob, see [`super::schedule`]) and the backup
//! taken before an upgrade. Each uploads the database (`pg_dump`), the media when they
//! are on a volume (Mastodon's `public/system`, GoToSocial's local storage) and the
//! tenant's app secrets, sealed (see [`crate::seal`]), to the S3-compatible backup target.
//!
//! No credential of the target enters the tenant's namespace: the operator presigns one
//! `PUT` URL per object the Job may write, under this tenant's own prefix (see
//! [`crate::presign`]), and the Job finds only those URLs in its URL Secret. A `PUT`
//! carries at most 5 GB, so each artifact is cut into numbered pieces of [`PIECE_MIB`] MiB
//! (`database.dump.000`, `media.tar.000`, …), each to its own URL; a manifest
//! (`manifest.txt`: what was backed up, each object's size and SHA-256 in `sha256sum -c`
//! format) goes last, so a backup without one is incomplete. The Job ends by writing a
//! summary (sizes, how many checksums, the manifest's own SHA-256) to its termination
//! message, which the operator reads into the backup's record and checks.
//!
//! The pod: an init container of the PostgreSQL image dumps the database into a scratch
//! volume, then a container of the curl image (Alpine, with BusyBox's `dd`, `tar`,
//! `sha256sum`) cuts the dump and the media archive (streamed from `tar`, the media
//! volume mounted read-only) into pieces on the scratch volume and uploads them one by
//! one: the scratch volume holds the dump and one piece, never the media.

use super::data::{container_security, database_host, pod_security, POSTGRES_IMAGE};
use super::gotosocial::GOTOSOCIAL_UID;
use super::mastodon::{media_on_volume, pin_to_media_node, secret_env, MASTODON_UID};
use super::tenancy::{APP_SECRET, SERVICE_ACCOUNT};
use super::{build, Child, RenderError, Tenant};
use crate::crd::App;
use crate::seal::SECRETS_ARTIFACT;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The final backup's Job.
pub const FINAL_BACKUP_JOB: &str = "final-backup";
/// The Secret in the tenant namespace with the final backup's presigned upload URLs (file
/// name → URL).
pub const FINAL_BACKUP_URLS: &str = "final-backup-urls";
/// The Secret in the tenant namespace holding the sealed app secrets
/// ([`SECRETS_ARTIFACT`]), made by the operator; every backup Job uploads it.
pub const SEALED_SECRETS: &str = "backup-sealed-secrets";
/// The label saying which backup a Job (and its pods) takes: [`BackupKind::label`].
pub const BACKUP_LABEL: &str = "herd.dev/backup";
/// The annotation on a backup Job naming where it writes (`s3://bucket/dir/`).
pub const BACKUP_OBJECT_ANNOTATION: &str = "herd.dev/backup-object";
/// On a backup Job still running when a restore started replacing the tenant's data: the
/// restore's id. Such a backup may archive a mix of the old and the restored media (and
/// dump either database), so it is recorded failed, never offered as a restore point.
pub const DURING_RESTORE_ANNOTATION: &str = "herd.dev/during-restore";
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

/// Where backups go: an S3-compatible bucket. The credentials (`AWS_ACCESS_KEY_ID`,
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
    /// The age recipient (`age1…`) the tenants' app secrets are sealed to; its identity
    /// stays with the platform's operators (see [`crate::seal`]).
    pub secrets_recipient: String,
}

/// Which backup a Job takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    /// Before the tenant's namespace is deleted, with the app stopped.
    Final,
    /// On the plan's schedule, while the app runs.
    Scheduled,
    /// Before an upgrade's first migration: the database and the secrets.
    BeforeUpgrade,
    /// A customer's export (see [`super::export`]): like a scheduled backup, without the
    /// app secrets.
    Export,
}

impl BackupKind {
    /// The value of [`BACKUP_LABEL`].
    pub fn label(self) -> &'static str {
        match self {
            BackupKind::Final => "final",
            BackupKind::Scheduled => "scheduled",
            BackupKind::BeforeUpgrade => "before-upgrade",
            BackupKind::Export => "export",
        }
    }

    pub fn from_label(s: &str) -> Option<Self> {
        [
            BackupKind::Final,
            BackupKind::Scheduled,
            BackupKind::BeforeUpgrade,
            BackupKind::Export,
        ]
        .into_iter()
        .find(|k| k.label() == s)
    }
}

/// The key prefix (ending in `/`) of a tenant's final backup, stamped with the deletion
/// time (stable across reconciles, so a retried Job writes the same objects).
pub fn object_dir(target: &BackupTarget, slug: &str, stamp: &str) -> String {
    format!("{}{slug}/final-{}/", target.prefix, clean_stamp(stamp))
}

/// The key prefix of a scheduled backup of the run at `stamp`: under a prefix per
/// retention (`scheduled/keep-7d/`), so that one lifecycle rule per retention expires them
/// (docs/BACKUPS.md).
pub fn scheduled_dir(
    target: &BackupTarget,
    slug: &str,
    retention_days: u32,
    stamp: &str,
) -> String {
    format!(
        "{}scheduled/keep-{retention_days}d/{slug}/{}/",
        target.prefix,
        clean_stamp(stamp)
    )
}

/// The key prefix of the backup taken by Job `job` before an upgrade.
pub fn before_upgrade_dir(target: &BackupTarget, slug: &str, job: &str) -> String {
    format!("{}{slug}/{job}/", target.prefix)
}

fn clean_stamp(stamp: &str) -> String {
    stamp.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// What a backup of this kind holds besides the sealed secrets: the database dump
/// (except a scheduled backup of a CloudNativePG tenant, whose database CloudNativePG
/// backs up itself), and the media archive when the media are on a volume (not before an
/// upgrade, which does not touch them).
pub fn artifacts(t: &Tenant<'_>, kind: BackupKind) -> Result<Vec<&'static str>, RenderError> {
    let mut a = Vec::new();
    if dumps_database(t, kind) {
        a.push(DATABASE_ARTIFACT);
    }
    if kind != BackupKind::BeforeUpgrade && media_on_volume(t)? {
        a.push(MEDIA_ARTIFACT);
    }
    Ok(a)
}

fn dumps_database(t: &Tenant<'_>, kind: BackupKind) -> bool {
    kind != BackupKind::Scheduled || !t.uses_cloudnative_pg()
}

/// The Secret a Job of this kind uploads the sealed app secrets from, if it does: every
/// backup from [`SEALED_SECRETS`] (sealed to the platform's recipient); an export only
/// when its owner gave a recipient of their own (`spec.export.secretsRecipient`), from the
/// export's own Secret ([`super::export::sealed_secret_name`]).
pub fn sealed_from(t: &Tenant<'_>, kind: BackupKind) -> Option<String> {
    match kind {
        BackupKind::Export => t
            .instance
            .spec
            .export
            .as_ref()
            .filter(|x| x.secrets_recipient.is_some())
            .map(|x| super::export::sealed_secret_name(&x.id)),
        _ => Some(SEALED_SECRETS.to_owned()),
    }
}

/// The name of every object a backup Job of this kind may upload: [`MAX_PIECES`] pieces
/// per artifact, the sealed secrets (see [`sealed_from`]), then the manifest. The operator presigns one URL for
/// each.
pub fn upload_names(t: &Tenant<'_>, kind: BackupKind) -> Result<Vec<String>, RenderError> {
    let mut names: Vec<String> = artifacts(t, kind)?
        .iter()
        .flat_map(|a| (0..MAX_PIECES).map(move |i| format!("{a}.{i:03}")))
        .collect();
    if sealed_from(t, kind).is_some() {
        names.push(SECRETS_ARTIFACT.to_owned());
    }
    names.push(MANIFEST.to_owned());
    Ok(names)
}

/// The tables whose rows every dump counts, in the dump's own snapshot, for the manifest
/// (`# rows accounts=… statuses=…`); a restore counts them again (see
/// [`super::restore_scripts`]). Both apps have them under these names.
pub const COUNTED_TABLES: [&str; 2] = ["accounts", "statuses"];

/// The statement counting [`COUNTED_TABLES`] (those that exist): one line,
/// `rows accounts=123 statuses=4567`. The dump and the restore run the same one.
macro_rules! count_rows_sql {
    () => {
        "SELECT 'rows ' || coalesce(string_agg(t || '=' || (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I', t), false, true, '')))[1]::text, ' ' ORDER BY o), '') FROM unnest(ARRAY['accounts', 'statuses']) WITH ORDINALITY AS x(t, o) WHERE to_regclass(t) IS NOT NULL;"
    };
}
pub(crate) use count_rows_sql;

/// [`count_rows_sql`], for tests.
pub const COUNT_ROWS_SQL: &str = count_rows_sql!();

/// The dump init container's script (the PostgreSQL image's BusyBox `sh`; a test runs it
/// with BusyBox too): one session opens a `REPEATABLE READ` transaction, exports its snapshot
/// and counts [`COUNTED_TABLES`] in it, and holds it open while `pg_dump --snapshot` dumps
/// that same snapshot: the counts in the manifest are those of the dump, while the app
/// writes. Leaves `database.dump` and `rows` (`accounts=… statuses=…`) in `SCRATCH`.
pub const DUMP_SCRIPT: &str = concat!(
    r##"set -eu
scratch=$SCRATCH
in="$scratch/.snapshot-in"
out="$scratch/.snapshot-out"
err="$scratch/.snapshot-err"
rm -f "$in" "$out" "$err" "$scratch/rows"
mkfifo "$in"
psql -X -q -A -t -v ON_ERROR_STOP=1 < "$in" > "$out" 2> "$err" &
holder=$!
failed() {
  cat "$err" >&2
  echo "could not open a snapshot of database $PGDATABASE at $PGHOST to dump and count it" >&2
  exit 1
}
exec 3> "$in"
cat >&3 <<'SQL' || failed
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SELECT 'snapshot ' || pg_export_snapshot();
"##,
    count_rows_sql!(),
    r##"
SQL
waited=0
until grep -q '^rows' "$out"; do
  if [ -s "$err" ] || [ "$waited" -gt 1200 ]; then failed; fi
  waited=$((waited + 1))
  sleep 0.1
done
snapshot=$(sed -n 's/^snapshot //p' "$out")
sed -n 's/^rows //p' "$out" > "$scratch/rows"
pg_dump --format=custom --no-owner --snapshot="$snapshot" --file="$scratch/database.dump"
echo 'COMMIT;' >&3
exec 3>&-
wait "$holder"
rm -f "$in" "$out" "$err"
echo "dumped $PGDATABASE; rows in its snapshot: $(cat "$scratch/rows")"
"##
);

/// The Job's script (BusyBox `sh` and tools; tests run it with BusyBox too). Directories come
/// from `SCRATCH`, `URLS`, `SEALED` and `MEDIA_DIR`. URLs are handed to curl on its
/// standard input, never in its arguments, which every process of the node can read.
/// With `SLOT_TOLERANCE` set (a scheduled run), the URLs must be for a run within that
/// many seconds of now: URLs left from an earlier run (the operator did not renew them)
/// would overwrite that run's backup, so the Job fails instead, and the missed backup is
/// an alert.
pub const UPLOAD_SCRIPT: &str = r##"set -eu -o pipefail
scratch=$SCRATCH
if [ -n "${SLOT_TOLERANCE:-}" ]; then
  slot=$(cat "$URLS/slot")
  now=$(date +%s)
  if [ $((now - slot)) -gt "$SLOT_TOLERANCE" ] || [ $((slot - now)) -gt "$SLOT_TOLERANCE" ]; then
    echo "the upload URLs are for the run at $slot (epoch seconds), not for this one at $now: the operator has not renewed them (is it running?); this run backs nothing up" >&2
    exit 1
  fi
fi
location="s3://$(sed -e 's|^[a-z]*://[^/]*/||' -e 's|manifest\.txt?.*$||' "$URLS/manifest.txt")"
: > "$scratch/sizes"
: > "$scratch/sums"
: > "$scratch/totals"
put() {
  if [ ! -f "$URLS/$2" ]; then
    echo "no upload URL for $2: the artifact needs more than $MAX_PIECES pieces of $PIECE_MIB MiB; back this tenant up by hand (docs/BACKUPS.md)" >&2
    exit 1
  fi
  printf 'url = "%s"\n' "$(cat "$URLS/$2")" | curl --config - --fail --silent --show-error --retry 5 --retry-all-errors --upload-file "$1"
  echo "uploaded $2 ($(stat -c %s "$1") bytes)"
}
record() {
  echo "$(sha256sum "$1" | cut -d' ' -f1)  $2" >> "$scratch/sums"
  echo "# piece $2 $3 bytes" >> "$scratch/sizes"
}
pieces() {
  i=0
  total=0
  while :; do
    name="$1.$(printf '%03d' "$i")"
    dd of="$scratch/piece" bs=1048576 count="$PIECE_MIB" iflag=fullblock 2>/dev/null
    size=$(stat -c %s "$scratch/piece")
    if [ "$size" -eq 0 ] && [ "$i" -gt 0 ]; then break; fi
    put "$scratch/piece" "$name"
    record "$scratch/piece" "$name" "$size"
    total=$((total + size))
    i=$((i + 1))
    if [ "$size" -eq 0 ]; then break; fi
  done
  rm -f "$scratch/piece"
  echo "bytes $1 $total" >> "$scratch/totals"
}
if [ "$DATABASE" = dump ]; then
  pieces database.dump < "$scratch/database.dump"
  rm -f "$scratch/database.dump"
fi
if [ "$MEDIA" = volume ]; then
  tar -C "$MEDIA_DIR" -cf - . | pieces media.tar
fi
if [ -n "$SEALED" ]; then
  put "$SEALED/app-secrets.env.age" app-secrets.env.age
  sealed=$(stat -c %s "$SEALED/app-secrets.env.age")
  record "$SEALED/app-secrets.env.age" app-secrets.env.age "$sealed"
  echo "bytes app-secrets.env.age $sealed" >> "$scratch/totals"
fi
{
  printf '%s\n' "$MANIFEST_HEADER"
  echo "# location: $location"
  echo "# taken: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  if [ -s "$scratch/rows" ]; then echo "# rows $(cat "$scratch/rows")"; fi
  cat "$scratch/sizes" "$scratch/sums"
} > "$scratch/manifest.txt"
put "$scratch/manifest.txt" manifest.txt
{
  echo "location $location"
  if [ -s "$scratch/rows" ]; then echo "rows $(cat "$scratch/rows")"; fi
  cat "$scratch/totals"
  echo "objects $(grep -c . "$scratch/sizes")"
  echo "checksums $(grep -c . "$scratch/sums")"
  echo "manifest-sha256 $(sha256sum "$scratch/manifest.txt" | cut -d' ' -f1)"
} > "${TERMINATION_LOG:-/dev/termination-log}"
"##;

/// The manifest's first lines: what was backed up, and where the media are.
fn manifest_header(t: &Tenant<'_>, kind: BackupKind) -> String {
    let spec = &t.instance.spec;
    let app = match spec.app {
        App::Mastodon => "mastodon",
        App::Gotosocial => "gotosocial",
    };
    let title = match kind {
        BackupKind::Final => "final backup",
        BackupKind::Scheduled => "scheduled backup",
        BackupKind::BeforeUpgrade => "backup before an upgrade",
        BackupKind::Export => "export",
    };
    let database = if dumps_database(t, kind) {
        format!(
            "{DATABASE_ARTIFACT} (pg_dump --format=custom of {}; restore with pg_restore)",
            t.database_name()
        )
    } else {
        "not in this backup: CloudNativePG backs it up to the object store (barmanObjectStore), see docs/BACKUPS.md".to_owned()
    };
    // Both apps keep media on their `media` volume unless they are in object storage.
    let media = match (&spec.media_s3, kind) {
        (Some(s3), _) => format!("object storage, bucket {} at {}; not copied: the objects stay in that bucket, under its provider's versioning and lifecycle rules", s3.bucket, s3.endpoint),
        (None, BackupKind::BeforeUpgrade) => "on the volume; not copied (an upgrade does not touch them)".to_owned(),
        (None, BackupKind::Final) => format!("volume, in {MEDIA_ARTIFACT} (a tar of the volume's content, taken with the app stopped)"),
        (None, BackupKind::Scheduled | BackupKind::Export) => format!("volume, in {MEDIA_ARTIFACT} (a tar of the volume's content, taken after the database dump while the app runs)"),
    };
    // The version whose schema the database has: the one running (before an upgrade's
    // backup, the spec already names the next one).
    let version = t
        .instance
        .status
        .as_ref()
        .and_then(|s| s.running_version.as_deref())
        .unwrap_or(&spec.version);
    [
        format!("# Herd {title}, format 2"),
        format!("# tenant: {} ({}), {app} {version}", spec.slug, spec.local_domain),
        format!("# version {version}"),
        format!("# database: {database}"),
        format!("# media: {media}"),
        match (kind, spec.export.as_ref().and_then(|x| x.secrets_recipient.as_deref())) {
            (BackupKind::Export, None) => "# app secrets: not in this export (give an age recipient when asking for an export to have them)".to_owned(),
            // The recipient as age reads it (never the raw field: no line of it may
            // become a manifest line).
            (BackupKind::Export, Some(r)) => match crate::seal::recipient(r) {
                Ok(r) => format!("# app secrets: {SECRETS_ARTIFACT} (SECRET_KEY_BASE, OTP_SECRET, the VAPID and Active Record encryption keys), sealed with age to {r}, the recipient given when the export was asked for; open with `age -d -i <its identity file> {SECRETS_ARTIFACT}`"),
                Err(_) => "# app secrets: none (the recipient asked for is not an age recipient)".to_owned(),
            },
            _ => format!("# app secrets: {SECRETS_ARTIFACT}, sealed with age to the platform's backup recipient; open with `age -d -i <identity> {SECRETS_ARTIFACT}`"),
        },
        format!("# pieces: concatenate {{artifact}}.000, .001, … in order; check with `sha256sum -c {MANIFEST}`"),
    ]
    .join("\n")
}

/// The pod template of a backup Job of `kind` reading its URLs from Secret `urls_secret`.
fn backup_template(
    t: &Tenant<'_>,
    kind: BackupKind,
    urls_secret: &str,
) -> Result<Value, RenderError> {
    let db = t.database_name();
    let dump = dumps_database(t, kind);
    let media = kind != BackupKind::BeforeUpgrade && media_on_volume(t)?;
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
    let sealed = sealed_from(t, kind);
    if sealed.is_some() {
        mounts.push(json!({ "name": "sealed", "mountPath": "/sealed", "readOnly": true }));
    }
    let mut volumes = vec![
        json!({ "name": "backup", "emptyDir": {} }),
        json!({ "name": "tmp", "emptyDir": {} }),
        json!({ "name": "urls", "secret": { "secretName": urls_secret, "defaultMode": 0o440 } }),
    ];
    if let Some(name) = &sealed {
        volumes.push(
            json!({ "name": "sealed", "secret": { "secretName": name, "defaultMode": 0o440 } }),
        );
    }
    if media {
        volumes.push(json!({ "name": "media", "persistentVolumeClaim": { "claimName": "media", "readOnly": true } }));
        mounts.push(json!({ "name": "media", "mountPath": "/media", "readOnly": true }));
    }
    let mut env = vec![
        json!({ "name": "HOME", "value": "/tmp" }),
        json!({ "name": "SCRATCH", "value": "/backup" }),
        json!({ "name": "URLS", "value": "/urls" }),
        json!({ "name": "SEALED", "value": if sealed.is_some() { "/sealed" } else { "" } }),
        json!({ "name": "MEDIA_DIR", "value": "/media" }),
        json!({ "name": "PIECE_MIB", "value": PIECE_MIB.to_string() }),
        json!({ "name": "MAX_PIECES", "value": MAX_PIECES.to_string() }),
        json!({ "name": "DATABASE", "value": if dump { "dump" } else { "none" } }),
        json!({ "name": "MEDIA", "value": if media { "volume" } else { "none" } }),
        json!({ "name": "MANIFEST_HEADER", "value": manifest_header(t, kind) }),
    ];
    if kind == BackupKind::Scheduled {
        env.push(json!({ "name": "SLOT_TOLERANCE", "value": super::schedule::SLOT_TOLERANCE_SECS.to_string() }));
    }
    let mut pod = json!({
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": false,
        "securityContext": pod_security(uid),
        "restartPolicy": "Never",
        "containers": [{
            "name": "upload",
            "image": UPLOAD_IMAGE,
            "command": ["/bin/sh", "-c", UPLOAD_SCRIPT],
            "env": env,
            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "500m", "memory": "256Mi" } },
            "securityContext": container_security(true),
            "volumeMounts": mounts,
        }],
        "volumes": volumes,
    });
    if dump {
        pod["initContainers"] = json!([{
            "name": "dump",
            "image": POSTGRES_IMAGE,
            "command": ["/bin/sh", "-c", DUMP_SCRIPT],
            "env": [
                { "name": "SCRATCH", "value": "/backup" },
                { "name": "PGHOST", "value": database_host(t) },
                { "name": "PGUSER", "value": t.database_login().0 },
                { "name": "PGDATABASE", "value": db },
                secret_env("PGPASSWORD", APP_SECRET, t.database_login().1),
            ],
            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "500m", "memory": "512Mi" } },
            "securityContext": container_security(true),
            "volumeMounts": dump_mounts,
        }]);
    }
    let mut labels = t.labels("jobs");
    labels.insert(BACKUP_LABEL.to_owned(), kind.label().to_owned());
    let mut template = json!({ "metadata": { "labels": labels }, "spec": pod });
    // A one-node media volume is read where the app's pods have it attached.
    pin_to_media_node(t, &mut template)?;
    Ok(template)
}

/// The labels of a backup Job of `kind`.
fn job_labels(t: &Tenant<'_>, kind: BackupKind) -> BTreeMap<String, String> {
    let mut labels = t.labels("jobs");
    labels.insert(BACKUP_LABEL.to_owned(), kind.label().to_owned());
    labels
}

/// A URL Secret: file name → presigned URL (and, for a scheduled run, `slot`).
pub fn urls_secret(
    t: &Tenant<'_>,
    name: &str,
    urls: &BTreeMap<String, String>,
) -> Result<Child, RenderError> {
    Ok(Child::Secret(build(
        "Secret of backup upload URLs",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name, "namespace": t.namespace(), "labels": t.labels("backup") },
            "type": "Opaque",
            "stringData": urls,
        }),
    )?))
}

/// A one-off backup Job (final, or before an upgrade): stopped before its URLs expire (a
/// retry gets new ones).
pub(super) fn one_off(
    t: &Tenant<'_>,
    kind: BackupKind,
    name: &str,
    urls_secret: &str,
    location: String,
) -> Result<Child, RenderError> {
    let deadline = crate::presign::URL_VALIDITY.as_secs() - 300;
    Ok(Child::Job(build(
        "backup Job",
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {
                "name": name, "namespace": t.namespace(), "labels": job_labels(t, kind),
                "annotations": { BACKUP_OBJECT_ANNOTATION: location },
            },
            "spec": {
                "backoffLimit": 3,
                "activeDeadlineSeconds": deadline,
                "ttlSecondsAfterFinished": 604800,
                "template": backup_template(t, kind, urls_secret)?,
            },
        }),
    )?))
}

/// The final backup: the URL Secret (`urls`, from [`crate::presign::upload_urls`]) and
/// the Job. The operator takes it once the app is stopped.
pub fn final_backup(
    t: &Tenant<'_>,
    target: &BackupTarget,
    urls: &BTreeMap<String, String>,
    stamp: &str,
) -> Result<Vec<Child>, RenderError> {
    let dir = object_dir(target, &t.instance.spec.slug, stamp);
    Ok(vec![
        urls_secret(t, FINAL_BACKUP_URLS, urls)?,
        one_off(
            t,
            BackupKind::Final,
            FINAL_BACKUP_JOB,
            FINAL_BACKUP_URLS,
            format!("s3://{}/{dir}", target.bucket),
        )?,
    ])
}

/// The name of the Job backing the tenant up before its upgrade to `version`.
pub fn before_upgrade_job_name(version: &str) -> String {
    format!("backup-before-{}", super::mastodon::version_slug(version))
}

/// The backup before an upgrade: its URL Secret and Job `job`
/// ([`before_upgrade_job_name`]).
pub fn before_upgrade_backup(
    t: &Tenant<'_>,
    target: &BackupTarget,
    urls: &BTreeMap<String, String>,
    job: &str,
) -> Result<Vec<Child>, RenderError> {
    let dir = before_upgrade_dir(target, &t.instance.spec.slug, job);
    let secret = format!("{job}-urls");
    Ok(vec![
        urls_secret(t, &secret, urls)?,
        one_off(
            t,
            BackupKind::BeforeUpgrade,
            job,
            &secret,
            format!("s3://{}/{dir}", target.bucket),
        )?,
    ])
}

/// The scheduled backup's CronJob pod template and Job spec (see [`super::schedule`]).
pub(super) fn scheduled_job_spec(
    t: &Tenant<'_>,
    urls_secret: &str,
    deadline_secs: u64,
) -> Result<Value, RenderError> {
    Ok(json!({
        "metadata": { "labels": job_labels(t, BackupKind::Scheduled) },
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": deadline_secs,
            "ttlSecondsAfterFinished": 604800,
            "template": backup_template(t, BackupKind::Scheduled, urls_secret)?,
        },
    }))
}

/// The Secret holding the sealed app secrets that every backup Job uploads.
pub fn sealed_secrets(t: &Tenant<'_>, sealed: &[u8], digest: &str) -> Result<Child, RenderError> {
    sealed_secret(t, SEALED_SECRETS, sealed, digest)
}

/// A Secret `name` holding sealed app secrets ([`SECRETS_ARTIFACT`]), stamped with the
/// digest of what it seals ([`SEALED_DIGEST_ANNOTATION`]).
pub(super) fn sealed_secret(
    t: &Tenant<'_>,
    name: &str,
    sealed: &[u8],
    digest: &str,
) -> Result<Child, RenderError> {
    use base64::Engine;
    Ok(Child::Secret(build(
        "Secret of sealed app secrets",
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": name, "namespace": t.namespace(), "labels": t.labels("backup"),
                "annotations": { SEALED_DIGEST_ANNOTATION: digest },
            },
            "type": "Opaque",
            "data": { SECRETS_ARTIFACT: base64::engine::general_purpose::STANDARD.encode(sealed) },
        }),
    )?))
}

/// The annotation on [`SEALED_SECRETS`] with [`crate::seal::digest`] of what it seals.
pub const SEALED_DIGEST_ANNOTATION: &str = "herd.dev/sealed-digest";

/// Reads `accounts=123 statuses=4567` (table → rows); words that are not `name=number`
/// are left out.
pub fn parse_rows(words: &str) -> BTreeMap<String, i64> {
    words
        .split_whitespace()
        .filter_map(|w| {
            let (table, n) = w.split_once('=')?;
            Some((table.to_owned(), n.parse().ok()?))
        })
        .filter(|(table, _)| !table.is_empty())
        .collect()
}

/// What a backup Job reported in its termination message (see [`UPLOAD_SCRIPT`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub location: Option<String>,
    /// Artifact → bytes.
    pub bytes: BTreeMap<String, u64>,
    /// Objects uploaded before the manifest.
    pub objects: u32,
    /// Checksum lines in the manifest.
    pub checksums: u32,
    pub manifest_sha256: Option<String>,
    /// Rows of [`COUNTED_TABLES`] in the dump's snapshot (table → rows), as in the
    /// manifest's `# rows` line; empty without a dump.
    pub rows: BTreeMap<String, i64>,
}

impl Summary {
    /// Reads a termination message; unknown lines are ignored.
    pub fn parse(message: &str) -> Summary {
        let mut s = Summary::default();
        for line in message.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("location"), Some(l), None) => s.location = Some(l.to_owned()),
                (Some("bytes"), Some(a), Some(n)) => {
                    if let Ok(n) = n.parse() {
                        s.bytes.insert(a.to_owned(), n);
                    }
                }
                (Some("rows"), _, _) => s.rows = parse_rows(line.trim_start_matches("rows")),
                (Some("objects"), Some(n), None) => s.objects = n.parse().unwrap_or(0),
                (Some("checksums"), Some(n), None) => s.checksums = n.parse().unwrap_or(0),
                (Some("manifest-sha256"), Some(h), None)
                    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) =>
                {
                    s.manifest_sha256 = Some(h.to_owned());
                }
                _ => {}
            }
        }
        s
    }

    /// Every byte uploaded, manifest aside.
    pub fn total_bytes(&self) -> u64 {
        self.bytes.values().sum()
    }

    /// Why the backup cannot be trusted, or `None` when it is verified: the manifest's
    /// checksum is known, it lists a checksum for every object uploaded, and every artifact
    /// expected (`expected`) has more than zero bytes.
    pub fn unverified(&self, expected: &[&str]) -> Option<String> {
        if self.manifest_sha256.is_none() {
            return Some("the Job reported no manifest checksum".into());
        }
        if self.objects == 0 || self.checksums != self.objects {
            return Some(format!(
                "the manifest lists {} checksums for {} objects",
                self.checksums, self.objects
            ));
        }
        for a in expected.iter().copied().chain([SECRETS_ARTIFACT]) {
            match self.bytes.get(a) {
                Some(n) if *n > 0 => {}
                _ => return Some(format!("{a} is empty or missing")),
            }
        }
        None
    }
}
