//! The `Instance` custom resource: one per tenant, in the operator's namespace. The spec
//! says what the tenant bought; the status says what is true.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A tenant's fediverse server.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "herd.dev",
    version = "v1alpha1",
    kind = "Instance",
    namespaced,
    status = "InstanceStatus",
    shortname = "inst",
    category = "herd",
    printcolumn = r#"{"name":"App","type":"string","jsonPath":".spec.app"}"#,
    printcolumn = r#"{"name":"Domain","type":"string","jsonPath":".spec.localDomain"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    /// The application: `mastodon` or `gotosocial`.
    pub app: App,
    /// The application's version, e.g. `v4.7.6` for Mastodon or `0.20.2` for GoToSocial.
    pub version: String,
    /// The tenant's short name; its objects live in the namespace `herd-<slug>`.
    pub slug: String,
    /// The domain in users' handles (`LOCAL_DOMAIN`). Never changes after the first start.
    pub local_domain: String,
    /// Where the web interface is served when it differs from the local domain
    /// (`WEB_DOMAIN`). Never changes after the first start either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_domain: Option<String>,
    /// The plan this instance runs on (its code in Herd's catalogue).
    pub plan: String,
    /// Replicas, requests, limits and storage sizes, from the plan.
    pub sizing: Sizing,
    /// Scaled to zero with data kept; the ingress shows a "suspended" page.
    #[serde(default)]
    pub suspended: bool,
    #[serde(default)]
    pub database: DatabaseSpec,
    /// The tenant's Redis (Mastodon only): its volume and memory limit.
    #[serde(default)]
    pub redis: RedisSpec,
    /// Object storage for media; without it, media go to a volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_s3: Option<S3Spec>,
    /// A Secret in the tenant namespace with keys `server`, `port`, `login`, `password`,
    /// `from`; without it the instance sends no email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_secret_ref: Option<String>,
    /// The first owner account created on the server.
    pub owner: OwnerSpec,
    /// Extra environment for plan features (e.g. `SINGLE_USER_MODE`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra_env: BTreeMap<String, String>,
    /// Scheduled backups: how often and how long they are kept, from the plan.
    #[serde(default)]
    pub backup: BackupSpec,
    /// Asked by the control plane: restore this tenant from a backup (see
    /// [`RestoreSpec`]). Set on a running tenant, it restores in place; set on a new
    /// Instance, the tenant is made from the backup instead of installed fresh.
    /// Always sent (`null`: no restore asked for), so that an apply that stops asking
    /// removes it whatever the apply's merge rules (as `owner.passwordGeneration`).
    #[serde(default)]
    pub restore: Option<RestoreSpec>,
    /// A restore drill's scratch copy: no ingress, no scheduled backups, no final backup
    /// when it is deleted. Set only on Instances the control plane makes for a drill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drill: bool,
    /// Asked by the control plane: take an export for the customer (see [`ExportSpec`]).
    /// Always sent (`null`: none asked for), like `restore`.
    #[serde(default)]
    pub export: Option<ExportSpec>,
    /// Asked by the control plane for a server whose plan includes managed moderation:
    /// the dedicated moderator account Herd's moderators work through, and its admin API
    /// token (see [`ModeratorSpec`]). Always sent (`null`: none), like `restore`.
    #[serde(default)]
    pub moderator: Option<ModeratorSpec>,
}

/// The moderator account of managed moderation (issue 13). Once the tenant runs, for each
/// new `tokenGeneration` (above `status.moderatorTokenGeneration`) the operator makes
/// Secret `moderator-token` (key `token`: a fresh random admin API token, never logged)
/// and runs Job `moderator-token-<n>`, which creates the account when it is absent (role
/// Moderator, confirmed and approved, its notification emails off; an existing account
/// of that username is refused, never taken over, unless it has that email, is confirmed
/// and has the Moderator role, as an account the Job made), revokes every earlier token
/// of Herd's application on that account, and, unless `revoked`, stores the Secret's token
/// as a new access token with the scopes `admin:read admin:write`. It then reports `n` in
/// `status.moderatorTokenGeneration`; a failure is the `ModeratorAccount` condition with
/// reason `JobFailed` (the server runs on). The control plane collects the token from the
/// Secret, keeps it sealed, and deletes the Secret (as the owner's one-time password).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModeratorSpec {
    /// The account's username on the server (letters, digits and `_`).
    pub username: String,
    /// The account's email (Mastodon requires one, with a domain that receives mail; its
    /// notification emails are off, Mastodon's account mails such as the welcome mail are
    /// not settings and may still come). Empty for a revoke-only generation.
    pub email: String,
    /// Raised by the control plane to ask for a new token (or a revocation); 1 is the
    /// first.
    pub token_generation: u32,
    /// Generation `tokenGeneration` only revokes: earlier tokens are revoked and no new
    /// one is made (no Secret either).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

/// A restore asked of the operator. The operator reports its progress in
/// `status.restore` under the same `id`; a spec with a new `id` is a new restore, and the
/// operator never runs the same `id` twice.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// Chosen by the control plane (its restore's id), unique per request.
    pub id: String,
    /// The backup directory, as recorded in [`BackupRecord::location`]
    /// (`s3://bucket/prefix/.../`); it must lie under the operator's backup prefix.
    pub source: String,
    /// Restore the media archive too, when the backup holds one (default: yes).
    #[serde(default = "default_true")]
    pub media: bool,
    /// The SHA-256 of the backup's manifest as the control plane recorded it when the
    /// backup was taken: the restore refuses a manifest that differs (and a drill, which
    /// must prove the backup, refuses to run without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// The tenant (its slug) whose backup this is, when it is not this one (a restore
    /// into a new tenant, a drill's copy). The operator refuses a source that is not a
    /// directory of that tenant's own backups, `<prefix><sourceTenant>/...` (absent: of
    /// this tenant's, `<prefix><slug>/...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_tenant: Option<String>,
    /// An import: the source is an export prepared for import (`herd import prepare`,
    /// from a Herd export or a standard Mastodon install) under `<prefix>imports/<id>/`,
    /// or one of this provider's exports under `<prefix>exports/<slug>/<id>/`, rather than
    /// a tenant's backup. Its manifest may carry no row counts: the rows are then counted
    /// and reported, not compared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub import: bool,
    /// Asked by the control plane: cancel this restore (same `id`, kept in `spec.restore`
    /// with this set until the status says how it ended). Honoured while the database is
    /// untouched: before the restore Job, or while its pod only downloads and checks (its
    /// `restore` container not started). The operator then deletes the Job and its pods,
    /// waits until none is left, and reports `Cancelled`; the app starts again on the
    /// database as it was (a new tenant, never installed, stays held: restore it again or
    /// delete it). Later (the database being replaced, migrated, or the app starting) the
    /// cancel is too late: the restore goes on and its message says so.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
    /// The backup's size in bytes as the control plane recorded it, when it knows it: the
    /// restore Job's scratch space is sized from it (else from `spec.sizing`'s volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
}

fn default_true() -> bool {
    true
}

/// An export asked of the operator: a database dump, a media archive, the app secrets
/// when sealed to the owner's recipient, and a manifest (app, version, domain, sizes,
/// checksums) under the export prefix. Reported in
/// `status.export` under the same `id`; a new `id` is a new export.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportSpec {
    /// Chosen by the control plane (its export's id), unique per request.
    pub id: String,
    /// An age X25519 recipient (`age1…`) the organization's owner gave: the tenant's app
    /// secrets are sealed to it into the export's `app-secrets.env.age`, which only the
    /// owner's identity opens. None: the export carries no secrets. Always sent (null when
    /// none), so that a later export without one never inherits an earlier one's.
    #[serde(default)]
    #[schemars(pattern(r"^age1[02-9ac-hj-np-z]{58}$"))]
    pub secrets_recipient: Option<String>,
}

impl InstanceSpec {
    /// A spec for a new tenant on a plan, with the defaults of a fresh order: not suspended,
    /// database mode `Auto`, media on a volume, no SMTP, no extra environment.
    pub fn new(
        app: App,
        version: &str,
        slug: &str,
        local_domain: &str,
        plan_code: &str,
        limits: &herd_domain::PlanLimits,
        owner: OwnerSpec,
    ) -> Self {
        Self {
            app,
            version: version.to_owned(),
            slug: slug.to_owned(),
            local_domain: local_domain.to_owned(),
            web_domain: None,
            plan: plan_code.to_owned(),
            sizing: crate::sizing::for_plan(limits),
            suspended: false,
            database: DatabaseSpec::default(),
            redis: RedisSpec::default(),
            media_s3: None,
            smtp_secret_ref: None,
            owner,
            extra_env: BTreeMap::new(),
            backup: crate::sizing::backup_for_plan(limits),
            restore: None,
            drill: false,
            export: None,
            moderator: None,
        }
    }
}

/// A tenant's scheduled backups (see `render::schedule`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Hours between two backups, a divisor of 24 (others are rounded up to one): 24 is
    /// daily.
    #[serde(default = "BackupSpec::default_interval")]
    pub interval_hours: u32,
    /// Days a scheduled backup is kept.
    #[serde(default = "BackupSpec::default_retention")]
    pub retention_days: u32,
}

impl BackupSpec {
    fn default_interval() -> u32 {
        24
    }

    fn default_retention() -> u32 {
        7
    }
}

impl Default for BackupSpec {
    fn default() -> Self {
        Self {
            interval_hours: Self::default_interval(),
            retention_days: Self::default_retention(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum App {
    Mastodon,
    Gotosocial,
}

/// CPU and memory of one container, in Kubernetes quantities (`250m`, `768Mi`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sizing {
    pub web_replicas: i32,
    pub streaming_replicas: i32,
    /// Sidekiq threads (`-c`).
    pub sidekiq_concurrency: i32,
    pub web: Resources,
    pub streaming: Resources,
    pub sidekiq: Resources,
    /// Size of the database volume (`20Gi`).
    pub database_storage: String,
    /// Size of the media volume when media are not in object storage.
    pub media_storage: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DatabaseMode {
    /// A CloudNativePG `Cluster` when that CRD exists in the cluster, otherwise a StatefulSet.
    #[default]
    Auto,
    CloudNativePg,
    StatefulSet,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    #[serde(default)]
    pub mode: DatabaseMode,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Size of Redis's append-only-file volume.
    #[serde(default = "RedisSpec::default_storage")]
    pub storage: String,
    /// Memory limit of the Redis container (its request is 128Mi).
    #[serde(default = "RedisSpec::default_memory")]
    pub memory_limit: String,
}

impl RedisSpec {
    fn default_storage() -> String {
        "2Gi".into()
    }

    fn default_memory() -> String {
        "512Mi".into()
    }
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            storage: Self::default_storage(),
            memory_limit: Self::default_memory(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    pub bucket: String,
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Public host serving the bucket's files (`S3_ALIAS_HOST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_host: Option<String>,
    /// A Secret in the tenant namespace with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub secret_ref: String,
    /// The ACL uploads get (`S3_PERMISSION`; Mastodon's default `public-read` when unset).
    /// Empty for providers or buckets that refuse ACLs (Cloudflare R2, buckets with
    /// object ownership enforced): uploads then carry none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerSpec {
    pub username: String,
    pub email: String,
    /// Raised by the control plane to ask for a new password: the operator makes a new
    /// `owner-password` Secret and runs Job `reset-owner-password-<n>`, then reports `n` in
    /// `status.ownerPasswordGeneration`. Always sent (0: no reset asked for), so that an
    /// apply that stops asking for a reset says so explicitly.
    #[serde(default)]
    pub password_generation: u32,
}

/// Where an instance is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Provisioning,
    Running,
    Upgrading,
    /// Restoring from a backup (`spec.restore`): the app is stopped meanwhile.
    Restoring,
    Suspended,
    Deleting,
    Failed,
}

/// The state of one component (Database, Redis, Migrations, Web, Streaming, Sidekiq,
/// Ingress).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    #[serde(default)]
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The version actually running (differs from the spec during an upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The last error, in words an operator can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The owner-password reset last done (`spec.owner.passwordGeneration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_password_generation: Option<u32>,
    /// The moderator-token generation last done (`spec.moderator.tokenGeneration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moderator_token_generation: Option<u32>,
    /// The most recent backups, newest first (at most [`RECENT_BACKUPS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupRecord>,
    /// When the last backup that succeeded (and was verified, for a dump) finished,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<String>,
    /// The last restore asked for (`spec.restore`), as far as it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
    /// The last export asked for (`spec.export`), as far as it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStatus>,
    /// With media in object storage (`spec.mediaS3`), which Herd's backups do not copy:
    /// the bucket's versioning, their backup, as the operator last read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_bucket: Option<MediaBucketStatus>,
}

/// The versioning of a bucket, as `GetBucketVersioning` answers it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BucketVersioning {
    /// Every overwritten or deleted object keeps its earlier versions.
    Enabled,
    /// Was on, then suspended: objects written since keep no earlier version.
    Suspended,
    /// Never turned on.
    Off,
    /// Could not be read (the request failed or was refused: see `message`).
    Unreadable,
}

/// The media bucket's versioning as the operator last read it (every
/// [`crate::media_bucket::CHECK_EVERY`], with the tenant's own credentials).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaBucketStatus {
    pub bucket: String,
    pub endpoint: String,
    /// The region it was read with (`spec.mediaS3.region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The Secret whose key read it (`spec.mediaS3.secretRef`).
    #[serde(default)]
    pub secret_ref: String,
    pub versioning: BucketVersioning,
    /// RFC 3339.
    pub checked_at: String,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a restore is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestoreStep {
    /// Web, streaming, sidekiq and the CronJobs are being stopped.
    StoppingApp,
    /// The restore Job downloads, checks (against the manifest) and restores.
    Restoring,
    /// Migrations bring the restored database to the running version.
    Migrating,
    /// The app is started again.
    Starting,
    Succeeded,
    Failed,
    /// Cancelled (`spec.restore.cancel`) before the database was touched: no pod of the
    /// restore is left, and the app runs on the database as it was.
    Cancelled,
}

/// One restore, as the operator reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// `spec.restore.id`.
    pub id: String,
    pub step: RestoreStep,
    /// `spec.restore.source`.
    pub source: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339, once it succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Rows of the main tables when the backup was taken, from its manifest (Mastodon:
    /// `accounts`, `statuses`; GoToSocial: `accounts`, `statuses`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_rows: BTreeMap<String, i64>,
    /// The same tables counted after the restore.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub restored_rows: BTreeMap<String, i64>,
    /// Why it failed, in words an operator can act on; while it runs, what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One export, as the operator reports it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportStatus {
    /// `spec.export.id`.
    pub id: String,
    pub outcome: BackupOutcome,
    /// Where it is (`s3://bucket/dir/`); its `manifest.txt` lists every object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// The manifest's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The age recipient the app secrets in it are sealed to (`spec.export.secretsRecipient`
    /// as this operator honoured it); none: it has no secrets. The control plane fails an
    /// export asked with a recipient that reports none (an older operator ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_sealed_to: Option<String>,
}

/// How many backup records the status keeps.
pub const RECENT_BACKUPS: usize = 10;

/// Why a backup was taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupReason {
    Scheduled,
    BeforeUpgrade,
}

/// How a backup was taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupMethod {
    /// A Job of Herd's: `pg_dump` (unless CloudNativePG backs the database up), media on
    /// a volume, the sealed app secrets, and a manifest of checksums.
    Dump,
    /// CloudNativePG's barman backup of the database to the object store.
    Barman,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupOutcome {
    Running,
    Succeeded,
    Failed,
}

/// One backup, as the cluster reported it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// The Job's or CloudNativePG Backup's name.
    pub name: String,
    pub reason: BackupReason,
    pub method: BackupMethod,
    pub outcome: BackupOutcome,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    /// Bytes uploaded, when the method tells (barman does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// Where it is (`s3://bucket/dir/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The manifest's SHA-256 (the manifest lists every object's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Why it failed or cannot be trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The annotation recording the version a tenant was installed or last upgraded to. The
/// status says so too, but a status can be lost (an Instance restored by Velero comes back
/// without one); this survives, so an installed tenant is never installed again (its owner
/// Job would reset the owner's password).
pub const INSTALLED_VERSION_ANNOTATION: &str = "herd.dev/installed-version";

/// The annotation recording which database a tenant with `database.mode: Auto` got
/// (`cloudnative-pg` or `statefulset`): decided once, at its first reconcile, never again.
pub const DATABASE_ANNOTATION: &str = "herd.dev/database";
/// The annotation recording where a Mastodon tenant keeps media on a volume: `one-node`
/// (ReadWriteOnce, its pods on one node) or `shared:<StorageClass>` (ReadWriteMany).
/// Decided when the tenant is first seen (from its media claim when one exists), never
/// again: a volume's access modes cannot change.
pub const MEDIA_ANNOTATION: &str = "herd.dev/media-volume";

/// [`DATABASE_ANNOTATION`]'s values.
pub const DATABASE_CLOUDNATIVE_PG: &str = "cloudnative-pg";
pub const DATABASE_STATEFULSET: &str = "statefulset";

impl Instance {
    /// One of the Instance's annotations.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// The version the tenant runs: from the status, or, when the status was lost, from
    /// [`INSTALLED_VERSION_ANNOTATION`]. `None`: not installed yet.
    pub fn installed_version(&self) -> Option<&str> {
        self.status
            .as_ref()
            .and_then(|s| s.running_version.as_deref())
            .or_else(|| self.annotation(INSTALLED_VERSION_ANNOTATION))
    }
}

/// The fields of the spec that never change once set, with the API server's message when
/// an update tries (a CEL transition rule, checked on updates only).
pub const IMMUTABLE: [(&str, &str); 4] = [
    ("self.app == oldSelf.app", "spec.app is immutable: a server cannot change application"),
    ("self.slug == oldSelf.slug", "spec.slug is immutable: it names the tenant's namespace"),
    (
        "self.localDomain == oldSelf.localDomain",
        "spec.localDomain is immutable: it is part of every account's handle and every federated object's address",
    ),
    (
        "has(self.webDomain) == has(oldSelf.webDomain) && (!has(self.webDomain) || self.webDomain == oldSelf.webDomain)",
        "spec.webDomain is immutable: other servers know the accounts at this address",
    ),
];

/// The CRD, with the spec's immutable fields ([`IMMUTABLE`]) enforced by the API server.
pub fn crd() -> Result<
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    serde_json::Error,
> {
    use kube::CustomResourceExt;
    let mut v = serde_json::to_value(Instance::crd())?;
    let rules: Vec<serde_json::Value> = IMMUTABLE
        .iter()
        .map(|(rule, message)| serde_json::json!({ "rule": rule, "message": message }))
        .collect();
    for version in v["spec"]["versions"].as_array_mut().into_iter().flatten() {
        version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] =
            serde_json::Value::Array(rules.clone());
    }
    serde_json::from_value(v)
}

/// The CRD as YAML, as `herd crd` prints it and `deploy/crd/` holds it.
pub fn crd_yaml() -> Result<String, serde_json::Error> {
    Ok(crate::yaml::to_string(&serde_json::to_value(crd()?)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_has_status_subresource_and_columns() {
        let crd = Instance::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("instances.herd.dev"));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols, ["App", "Domain", "Version", "Phase", "Age"]);
    }

    /// The API server evaluates the spec's CEL rules on every update: the identity fields
    /// cannot change, everything else can (kube-cel evaluates them as the API server does).
    #[test]
    fn identity_fields_are_immutable_on_the_api_server() {
        let crd = serde_json::to_value(crd().expect("crd")).expect("json");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let old = serde_json::json!({ "spec": {
            "app": "mastodon", "version": "v4.7.6", "slug": "lyon", "localDomain": "lyon.social",
            "plan": "community",
        }});
        let v = kube_cel::Validator::new();
        let check = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut new = old.clone();
            edit(&mut new);
            v.validate(schema, &new, Some(&old))
                .err()
                .map(|errors| format!("{errors:?}"))
        };
        assert_eq!(check(&|n| n["spec"]["version"] = "v4.8.0".into()), None);
        assert_eq!(check(&|n| n["spec"]["plan"] = "organization".into()), None);
        for (field, value, says) in [
            ("app", "gotosocial", "spec.app is immutable"),
            ("slug", "lyon2", "spec.slug is immutable"),
            (
                "localDomain",
                "lyon.example",
                "spec.localDomain is immutable",
            ),
            (
                "webDomain",
                "social.lyon.social",
                "spec.webDomain is immutable",
            ),
        ] {
            let refused = check(&|n| n["spec"][field] = value.into());
            assert!(
                refused.as_deref().is_some_and(|e| e.contains(says)),
                "{field}: {refused:?}"
            );
        }
        // Creation (no old object): nothing to compare, accepted.
        assert!(v.validate(schema, &old, None).is_ok());
    }

    #[test]
    fn committed_crd_matches_the_types() {
        let committed = include_str!("../../../deploy/crd/instances.herd.dev.yaml");
        let generated = crd_yaml().expect("yaml");
        assert!(
            committed == generated,
            "deploy/crd/instances.herd.dev.yaml is stale: run `cargo run -p herd -- crd > deploy/crd/instances.herd.dev.yaml`"
        );
    }
}
