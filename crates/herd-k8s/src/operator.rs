//! `herd operator`: the controller that keeps every tenant's children as its Instance says.
//!
//! One reconcile: add the finalizer, read the app secrets and the children back, ask the
//! lifecycle for the step and what to apply, apply it (writing only what differs), prune what
//! is no longer rendered, and write the status when it changed. An unchanged Instance costs
//! reads only. Deletion takes the final backup (database, and media on a volume) with
//! upload URLs the operator presigns, then deletes the namespace, then removes the
//! finalizer. Errors back off with jitter, longer when the API server throttles.
//!
//! A restore (`spec.restore`) comes before everything else: the app is stopped, the
//! restore Job runs, then (Mastodon) the migrations, then the app starts again; on a new
//! tenant it replaces the install (see [`restore_step`] and docs/BACKUPS.md). An export
//! (`spec.export`) is a one-off Job while the app runs, reported in `status.export`.

use crate::crd::{
    BackupOutcome, ExportSpec, ExportStatus, Instance, InstanceStatus, Phase, RestoreSpec,
    RestoreStatus, RestoreStep, DATABASE_ANNOTATION, DATABASE_CLOUDNATIVE_PG, DATABASE_STATEFULSET,
    INSTALLED_VERSION_ANNOTATION, MEDIA_ANNOTATION,
};
use crate::lifecycle::{self, Step};
use crate::observe::{self, job_state};
use crate::presign::{self, BackupCredentials, PresignError};
use crate::reconcile::{self, ReconcileError};
use crate::render::backup::{
    before_upgrade_backup, before_upgrade_dir, final_backup, object_dir, scheduled_dir,
    sealed_secrets, upload_names, urls_secret, BackupKind, BackupTarget, FINAL_BACKUP_JOB,
    SEALED_DIGEST_ANNOTATION, SEALED_SECRETS,
};
use crate::render::schedule::{
    Schedule, SCHEDULED_BACKUP_URLS, SLOT_TOLERANCE_SECS, TENANT_BACKUP_CREDENTIALS,
};
use crate::render::tenancy::APP_SECRET;
use crate::render::{export, namespace_name, restore, Child, ClusterSettings, Tenant};
use crate::secrets::AppSecrets;
use crate::status::{self, JobState};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The finalizer that holds an Instance until its final backup is taken and its namespace
/// is gone.
pub const FINALIZER: &str = "herd.dev/cleanup";
/// Set to `"true"` on an Instance to delete it without the final backup.
pub const SKIP_BACKUP_ANNOTATION: &str = "herd.dev/skip-final-backup";

pub const RECONCILES: &str = "herd_operator_reconciles_total";
pub const FAILURES: &str = "herd_operator_reconcile_failures_total";
pub const DURATION: &str = "herd_operator_reconcile_duration_seconds";

/// How the operator is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: ClusterSettings,
    /// The namespace of the operator and of the Instances.
    pub namespace: String,
    /// Where final backups go; without it, deletion waits for an operator decision.
    pub backup: Option<BackupTarget>,
    /// The Secret in `namespace` with the backup target's credentials (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`). They never leave that namespace: the operator presigns
    /// upload URLs with them.
    pub backup_credentials_secret: String,
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub settings: Settings,
    recorder: Recorder,
    /// Consecutive failures per Instance, for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The API server's addresses as last read (`settings.cluster.api_server` at start),
    /// read again while the operator runs ([`Context::refresh_api_server`]).
    api_server: std::sync::RwLock<Vec<std::net::SocketAddr>>,
    /// The time now: the system clock, or the tests' (see [`Context::set_clock`]).
    clock: std::sync::RwLock<Option<jiff::Timestamp>>,
    /// For reading the versioning of media buckets ([`crate::media_bucket`]).
    http: reqwest::Client,
}

impl Context {
    /// The time now (the system clock unless a test set one).
    pub fn now(&self) -> jiff::Timestamp {
        self.clock
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unwrap_or_else(jiff::Timestamp::now)
    }

    /// Sets the time the operator sees (tests play hours and days without waiting).
    pub fn set_clock(&self, at: jiff::Timestamp) {
        *self
            .clock
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(at);
    }

    pub fn new(client: kube::Client, settings: Settings, reporter: &str) -> Arc<Context> {
        let recorder = Recorder::new(client.clone(), Reporter::from(reporter.to_owned()));
        let api_server = std::sync::RwLock::new(settings.cluster.api_server.clone());
        Arc::new(Context {
            client,
            settings,
            recorder,
            failures: Mutex::default(),
            api_server,
            clock: std::sync::RwLock::new(None),
            http: crate::media_bucket::client(),
        })
    }

    /// The cluster's settings as they stand now: the API server's addresses are the ones
    /// last read.
    pub fn cluster(&self) -> ClusterSettings {
        let mut cluster = self.settings.cluster.clone();
        cluster.api_server = self
            .api_server
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        cluster.backup = self.settings.backup.clone();
        cluster
    }

    /// Reads the API server's addresses again (they change when control-plane nodes are
    /// replaced); `true` when they changed, so that every tenant's NetworkPolicy follows.
    /// An empty answer keeps the addresses known: a tenant never loses its way to the API
    /// server to a read that found nothing.
    pub async fn refresh_api_server(&self) -> Result<bool, kube::Error> {
        let found = api_server_endpoints(&self.client).await?;
        if found.is_empty() {
            return Ok(false);
        }
        let mut known = self
            .api_server
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *known == found {
            return Ok(false);
        }
        tracing::info!(before = ?*known, now = ?found, "the API server's addresses changed");
        *known = found;
        Ok(true)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes an Event on the Instance; a failure to publish is logged, never fatal.
    pub async fn event(&self, instance: &Instance, warning: bool, reason: &str, note: String) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &instance.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish an Event");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the Instance has no namespace")]
    NoNamespace,
    #[error("the backup credentials Secret {namespace}/{secret} has no {key}")]
    BackupCredentials {
        namespace: String,
        secret: String,
        key: &'static str,
    },
    #[error(transparent)]
    Presign(#[from] PresignError),
    #[error(transparent)]
    Seal(#[from] crate::seal::SealError),
}

fn kube_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

impl OperatorError {
    fn kube(&self) -> Option<&kube::Error> {
        match self {
            OperatorError::Kube(e) | OperatorError::Reconcile(ReconcileError::Kube(e)) => Some(e),
            _ => None,
        }
    }

    /// The API server asked us to slow down.
    pub fn throttled(&self) -> bool {
        self.kube().and_then(kube_code) == Some(429)
    }

    /// A bounded label for the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            OperatorError::Reconcile(ReconcileError::Render(_)) => "render",
            OperatorError::Reconcile(ReconcileError::DamagedSecret { .. }) => "damaged_secret",
            OperatorError::Reconcile(ReconcileError::Encode { .. }) => "encode",
            OperatorError::NoNamespace => "no_namespace",
            OperatorError::BackupCredentials { .. }
            | OperatorError::Presign(_)
            | OperatorError::Seal(_) => "backup_target",
            _ => match self.kube().and_then(kube_code) {
                Some(429) => "api_throttled",
                Some(409) => "api_conflict",
                Some(c) if c >= 500 => "api_server_error",
                Some(_) => "api_rejected",
                None => "api_unreachable",
            },
        }
    }
}

/// The delay before retrying after the `attempt`-th consecutive failure: 5 s doubling up to
/// 5 minutes, one to ten minutes when throttled (429), with ±25 % jitter (`jitter` in 0..1)
/// so that many failing Instances do not retry in step.
pub fn backoff(attempt: u32, throttled: bool, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(6);
    let mut secs = (5u64 << exp).min(300) as f64;
    if throttled {
        secs = (secs * 4.0).clamp(60.0, 600.0);
    }
    Duration::from_secs_f64(secs * (0.75 + 0.5 * jitter.clamp(0.0, 1.0)))
}

fn key(i: &Instance) -> String {
    format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any())
}

/// Counts a failed reconcile of `instance` and returns how long to wait before the next try.
pub fn retry_delay(instance: &Instance, error: &OperatorError, ctx: &Context) -> Duration {
    let attempt = {
        let mut f = ctx.failures();
        let n = f.entry(key(instance)).or_insert(0);
        *n += 1;
        *n
    };
    metrics::counter!(FAILURES, "reason" => error.reason()).increment(1);
    let delay = backoff(attempt, error.throttled(), rand::random::<f64>());
    tracing::warn!(instance = %key(instance), %error, attempt, retry_in_s = delay.as_secs(), "reconcile failed");
    delay
}

/// The controller's error policy: count, tell (an Event on the Instance), and back off.
pub fn error_policy(instance: Arc<Instance>, error: &OperatorError, ctx: Arc<Context>) -> Action {
    let delay = retry_delay(&instance, error, &ctx);
    let note = error.to_string();
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(async move {
            report_failure(&ctx, &instance, &note).await;
        });
    }
    Action::requeue(delay)
}

/// Tells an operator about a failed reconcile: a Warning Event, and the error in the
/// Instance's `status.lastError` (best effort: the API may be what is failing).
pub async fn report_failure(ctx: &Context, instance: &Instance, message: &str) {
    ctx.event(instance, true, "ReconcileFailed", message.to_owned())
        .await;
    let already = instance
        .status
        .as_ref()
        .and_then(|s| s.last_error.as_deref())
        == Some(message);
    let (Some(ns), false) = (instance.namespace(), already) else {
        return;
    };
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = api
        .patch_status(
            &instance.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "lastError": message } })),
        )
        .await
    {
        tracing::warn!(error = %e, "could not record the error on the Instance");
    }
}

/// One reconcile, timed and counted.
pub async fn reconcile(
    instance: Arc<Instance>,
    ctx: Arc<Context>,
) -> Result<Action, OperatorError> {
    let start = Instant::now();
    let result = if lifecycle::is_deleting(&instance) {
        cleanup(&instance, &ctx).await
    } else {
        apply(&instance, &ctx).await
    };
    metrics::histogram!(DURATION).record(start.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    metrics::counter!(RECONCILES, "result" => label).increment(1);
    if result.is_ok() {
        ctx.failures().remove(&key(&instance));
    }
    result
}

fn instances(ctx: &Context, instance: &Instance) -> Result<Api<Instance>, OperatorError> {
    let ns = instance.namespace().ok_or(OperatorError::NoNamespace)?;
    Ok(Api::namespaced(ctx.client.clone(), &ns))
}

/// Writes the status when it differs from the stored one; `null` clears optional fields.
async fn write_status(
    api: &Api<Instance>,
    instance: &Instance,
    status: &InstanceStatus,
) -> Result<bool, OperatorError> {
    if instance.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let mut value = serde_json::to_value(status).unwrap_or_default();
    for field in [
        "observedGeneration",
        "runningVersion",
        "url",
        "lastError",
        "mediaBucket",
    ] {
        value
            .as_object_mut()
            .map(|o| o.entry(field).or_insert(serde_json::Value::Null));
    }
    // A merge patch keeps what it does not mention: the restore's and export's cleared
    // fields are cleared explicitly.
    for (record, fields) in [
        ("restore", &["startedAt", "finishedAt", "message"][..]),
        ("mediaBucket", &["message"][..]),
        (
            "export",
            &[
                "location",
                "startedAt",
                "finishedAt",
                "sizeBytes",
                "checksum",
                "message",
                "secretsSealedTo",
            ][..],
        ),
    ] {
        if let Some(o) = value.get_mut(record).and_then(|r| r.as_object_mut()) {
            for field in fields {
                o.entry(*field).or_insert(serde_json::Value::Null);
            }
        }
    }
    api.patch_status(
        &instance.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": value })),
    )
    .await?;
    Ok(true)
}

async fn set_finalizers(
    api: &Api<Instance>,
    instance: &Instance,
    finalizers: Vec<String>,
) -> Result<(), OperatorError> {
    // The resourceVersion makes this a compare-and-swap with other writers of the list.
    api.patch(
        &instance.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": {
            "finalizers": finalizers,
            "resourceVersion": instance.resource_version(),
        }})),
    )
    .await?;
    Ok(())
}

async fn apply(instance: &Instance, ctx: &Context) -> Result<Action, OperatorError> {
    let api = instances(ctx, instance)?;
    let client = &ctx.client;
    let ns = namespace_name(&instance.spec.slug);
    let has_finalizer = instance.finalizers().iter().any(|f| f == FINALIZER);
    let undecided = instance.spec.database.mode == crate::crd::DatabaseMode::Auto
        && instance.annotation(DATABASE_ANNOTATION).is_none();
    let media_undecided = instance.spec.app == crate::crd::App::Mastodon
        && instance.spec.media_s3.is_none()
        && instance.annotation(MEDIA_ANNOTATION).is_none();
    if !has_finalizer || undecided || media_undecided {
        let decided = match undecided {
            true => Some(decide_database(instance, ctx, &ns).await?),
            false => None,
        };
        let media = match media_undecided {
            true => Some(decide_media(ctx, &ns).await?),
            false => None,
        };
        // The finalizer first: its write checks the resource version read.
        if !has_finalizer {
            let mut f = instance.finalizers().to_vec();
            f.push(FINALIZER.to_owned());
            set_finalizers(&api, instance, f).await?;
        }
        if let Some(decided) = decided {
            annotate(&api, instance, DATABASE_ANNOTATION, Some(decided)).await?;
        }
        if let Some(media) = media {
            annotate(&api, instance, MEDIA_ANNOTATION, Some(&media)).await?;
        }
        // The write triggers the next reconcile, with the finalizer in place.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // A restore asked for runs first; the rest of the reconcile goes on only once it
    // starts the app again (or when it is over).
    let mut starting = None;
    if let Some(wanted) = instance.spec.restore.clone() {
        match restore_end(instance, &wanted.id) {
            // Boxed, as are the other steps' futures: the reconcile's own stays small.
            None => match Box::pin(restore_step(instance, ctx, &api, &ns, &wanted)).await? {
                Restoring::Wait(next) => return Ok(next),
                Restoring::Start(rs, installed) => starting = Some((rs, installed)),
            },
            Some(end) if holds(instance, end) => {
                return Box::pin(hold_after_restore(instance, ctx, &api, &ns)).await;
            }
            Some(_) => {}
        }
    }
    // Marked installed by the restore just now: the rest of this reconcile sees it too.
    let annotated;
    let instance = match starting.as_ref().and_then(|(_, v)| v.clone()) {
        Some(version) => {
            let mut i = instance.clone();
            i.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(INSTALLED_VERSION_ANNOTATION.to_owned(), version);
            annotated = i;
            &annotated
        }
        None => instance,
    };
    if let Some(next) = reinstall_if_gone(instance, ctx, &api, &ns).await? {
        return Ok(next);
    }
    let secrets = reconcile::load_or_generate_secrets(client, &ns).await?;
    let cluster = cluster_for(ctx, instance);
    let t = Tenant {
        instance,
        secrets: &secrets,
        cluster: &cluster,
    };
    let mut observed = observe::observe(client, &t).await?;
    let mut plan = lifecycle::plan(&t, &observed).map_err(ReconcileError::from)?;
    if let Some(digest) = reconcile::referenced_secrets_digest(client, instance).await? {
        reconcile::stamp_referenced_secrets(&mut plan.apply, instance, &digest);
    }
    // Failed attempts of the step's Job give way to the next one (made by the apply).
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns);
    if !plan.replace.is_empty() {
        // Recorded first: an error before the new Job exists cannot reset the count.
        let mut recorded = lifecycle::recorded_attempts(instance);
        for name in &plan.replace {
            let attempt = observed.job_attempts.get(name).copied().unwrap_or(1);
            recorded.insert(name.clone(), attempt + 1);
        }
        let value = serde_json::to_string(&recorded).map_err(|source| ReconcileError::Encode {
            what: lifecycle::ATTEMPTS_ANNOTATION.to_owned(),
            source,
        })?;
        annotate(&api, instance, lifecycle::ATTEMPTS_ANNOTATION, Some(&value)).await?;
    }
    for name in &plan.replace {
        jobs.delete(name, &kube::api::DeleteParams::background())
            .await
            .map_err(ReconcileError::from)?;
        let attempt = observed.job_attempts.get(name).copied().unwrap_or(1);
        observed.jobs.remove(name);
        ctx.event(
            instance,
            true,
            "JobRetried",
            format!(
                "Job {name} failed (attempt {attempt} of {}); starting attempt {}",
                lifecycle::JOB_ATTEMPTS,
                attempt + 1
            ),
        )
        .await;
    }
    // The upgrade's backup: URLs presigned now for its objects only, valid two hours.
    if let (Some(name), Some(target)) = (plan.backup_before_upgrade.clone(), &ctx.settings.backup) {
        ensure_sealed_secrets(ctx, &t, target).await?;
        let credentials = backup_credentials(ctx).await?;
        let names = upload_names(&t, BackupKind::BeforeUpgrade).map_err(ReconcileError::from)?;
        let dir = before_upgrade_dir(target, &instance.spec.slug, &name);
        let urls = presign::upload_urls(
            target,
            &credentials,
            &dir,
            &names,
            ctx.now(),
            presign::URL_VALIDITY,
        )?;
        let children =
            before_upgrade_backup(&t, target, &urls, &name).map_err(ReconcileError::from)?;
        plan.apply
            .extend(lifecycle::attempt_of(children, &name, &observed, &plan));
        ctx.event(
            instance,
            false,
            "BackupBeforeUpgrade",
            format!(
                "Job {ns}/{name} backs the database up to s3://{}/{dir} before the upgrade to {}",
                target.bucket, instance.spec.version
            ),
        )
        .await;
    }
    if plan.needs_owner_password
        && reconcile::ensure_owner_password(client, &t, plan.owner_password_for).await?
    {
        ctx.event(
            instance,
            false,
            "OwnerPasswordCreated",
            format!(
                "the owner's one-time password is in Secret {ns}/{}",
                lifecycle::OWNER_PASSWORD_SECRET
            ),
        )
        .await;
    }
    reconcile::clear_earlier_moderator_jobs(client, &t, &mut plan).await?;
    if plan.needs_moderator_token
        && reconcile::ensure_moderator_token(client, &t, plan.moderator_token_for).await?
    {
        ctx.event(
            instance,
            false,
            "ModeratorTokenCreated",
            format!(
                "the moderator account's new token (generation {}) is in Secret {ns}/{}",
                plan.moderator_token_for,
                lifecycle::MODERATOR_TOKEN_SECRET
            ),
        )
        .await;
    }
    let report = reconcile::apply(client, &plan.apply).await?;
    for note in &report.not_resized {
        tracing::warn!(instance = %key(instance), "{note}");
        ctx.event(instance, true, "VolumeNotResized", note.clone())
            .await;
    }
    let pruned = reconcile::prune(client, instance, &plan.keep).await?;
    // What the scheduled backups need besides their CronJob: the sealed secrets, the
    // coming run's URLs, and for CloudNativePG the tenant's own object-store credentials.
    // A failure here does not hold the tenant's reconcile: the run it spoils is a missed
    // backup, which the control plane alerts on.
    // A drill's copy is never backed up.
    if let (Some(target), false) = (&ctx.settings.backup, instance.spec.drill) {
        let prepared = async {
            ensure_sealed_secrets(ctx, &t, target).await?;
            ensure_scheduled_urls(ctx, &t, target).await?;
            if t.uses_cloudnative_pg() {
                ensure_tenant_credentials(ctx, &t, target).await?;
            }
            Ok::<(), OperatorError>(())
        }
        .await;
        if let Err(e) = prepared {
            tracing::warn!(instance = %key(instance), error = %e, "the scheduled backup could not be prepared");
        }
    }
    if !report.written.is_empty() || !pruned.is_empty() {
        tracing::info!(instance = %key(instance), step = plan.step.name(), written = ?report.written, pruned = ?pruned, "applied");
    }
    let mut status = status::compute(
        instance,
        &observed,
        &plan.step,
        plan.running_version.as_deref(),
        &ctx.now().to_string(),
    );
    status.owner_password_generation = plan.owner_password_generation;
    status.moderator_token_generation = plan.moderator_token_generation;
    status.media_bucket = media_bucket_step(instance, ctx, &ns).await;
    // The restore's last step: done once the app runs again (or at once when suspended).
    let mut busy = false;
    if let Some((mut rs, _)) = starting {
        let version = plan
            .running_version
            .clone()
            .unwrap_or_else(|| instance.spec.version.clone());
        if instance.spec.suspended || lifecycle::rolled_out(instance.spec.app, &observed, &version)
        {
            rs.step = RestoreStep::Succeeded;
            rs.finished_at = Some(ctx.now().to_string());
            rs.message = None;
            let done = format!("{}:{}", rs.id, RestoreEnd::Succeeded.label());
            annotate(&api, instance, RESTORE_ANNOTATION, Some(&done)).await?;
            ctx.event(
                instance,
                false,
                "RestoreSucceeded",
                format!("restored from {}; the app runs {version}", rs.source),
            )
            .await;
        } else {
            status.phase = Phase::Restoring;
            busy = true;
        }
        status.restore = Some(rs);
    }
    // An export asked for, once the tenant runs.
    if let (Some(wanted), Some(_)) = (instance.spec.export.clone(), &plan.running_version) {
        if let Some(x) = Box::pin(export_step(instance, ctx, &t, &wanted)).await? {
            busy |= x.outcome == BackupOutcome::Running;
            status.export = Some(x);
        }
    }
    if let Some(version) = plan.running_version.as_deref() {
        if instance.annotation(INSTALLED_VERSION_ANNOTATION) != Some(version) {
            annotate(&api, instance, INSTALLED_VERSION_ANNOTATION, Some(version)).await?;
        }
    }
    let before = instance.status.as_ref().map(|s| s.phase);
    if write_status(&api, instance, &status).await? && before != Some(status.phase) {
        let warning = status.phase == Phase::Failed;
        let note = status
            .last_error
            .clone()
            .unwrap_or_else(|| format!("step {}", plan.step.name()));
        ctx.event(instance, warning, &format!("{:?}", status.phase), note)
            .await;
    }
    // An unreadable media bucket is read again in minutes (`media_bucket::due`).
    let media_retry = status
        .media_bucket
        .as_ref()
        .is_some_and(|m| m.versioning == crate::crd::BucketVersioning::Unreadable);
    Ok(match plan.step {
        Step::Ready if busy || !report.written.is_empty() => {
            Action::requeue(Duration::from_secs(15))
        }
        Step::Ready if media_retry => Action::requeue(crate::media_bucket::RETRY_UNREADABLE),
        Step::Ready => Action::requeue(Duration::from_secs(600)),
        Step::Refused(_) | Step::JobFailed { .. } => Action::requeue(Duration::from_secs(120)),
        _ => Action::requeue(Duration::from_secs(10)),
    })
}

/// The cluster settings a tenant is rendered with: a restore drill's copy gets no backup
/// target (no scheduled backup, no CloudNativePG object store: it is never backed up).
fn cluster_for(ctx: &Context, instance: &Instance) -> ClusterSettings {
    let mut cluster = ctx.cluster();
    if instance.spec.drill {
        cluster.backup = None;
    }
    cluster
}

/// The annotation recording the last restore that ended, `<id>:<end>`
/// ([`RestoreEnd::label`]): it survives a lost status, so a restore is never run twice.
pub const RESTORE_ANNOTATION: &str = "herd.dev/restore";

/// How a restore ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestoreEnd {
    Succeeded,
    /// Failed once the app was stopped: it stays stopped (see [`holds`]).
    Failed,
    /// Refused before anything was stopped (no backup target, a source outside the
    /// prefix, a barman backup, an id that cannot name a Job).
    Refused,
    /// Cancelled (`spec.restore.cancel`) before the database was touched.
    Cancelled,
}

impl RestoreEnd {
    fn label(self) -> &'static str {
        match self {
            RestoreEnd::Succeeded => "succeeded",
            RestoreEnd::Failed => "failed",
            RestoreEnd::Refused => "refused",
            RestoreEnd::Cancelled => "cancelled",
        }
    }
}

/// How restore `id` ended, if it did: from [`RESTORE_ANNOTATION`], else the status.
fn restore_end(instance: &Instance, id: &str) -> Option<RestoreEnd> {
    if let Some((done, end)) = instance
        .annotation(RESTORE_ANNOTATION)
        .and_then(|a| a.rsplit_once(':'))
    {
        if done == id {
            return [
                RestoreEnd::Succeeded,
                RestoreEnd::Failed,
                RestoreEnd::Refused,
                RestoreEnd::Cancelled,
            ]
            .into_iter()
            .find(|e| e.label() == end);
        }
    }
    let rs = instance.status.as_ref()?.restore.as_ref()?;
    match (rs.id == id, rs.step) {
        (true, RestoreStep::Succeeded) => Some(RestoreEnd::Succeeded),
        (true, RestoreStep::Failed) => Some(RestoreEnd::Failed),
        (true, RestoreStep::Cancelled) => Some(RestoreEnd::Cancelled),
        _ => None,
    }
}

/// Whether the tenant stays held after its restore ended: a restore that failed once the
/// app was stopped leaves it stopped, as long as `spec.restore` asks for that restore
/// (the operator cannot tell from a failed Job whether the database was left as it was
/// or restored without its migrations or its rows: starting the app on it would serve
/// and federate from a database nobody checked). A new tenant whose restore was refused
/// is not installed fresh either, nor one whose restore was cancelled (it holds no data:
/// it is restored again or deleted). The control plane decides: a new restore (a new id),
/// or `spec.restore` removed to start the app on the database as it is.
fn holds(instance: &Instance, end: RestoreEnd) -> bool {
    match end {
        RestoreEnd::Succeeded => false,
        RestoreEnd::Failed => true,
        RestoreEnd::Refused | RestoreEnd::Cancelled => instance.installed_version().is_none(),
    }
}

/// How long a restore may wait, from its `startedAt`, for all of what comes before its
/// Job together (one budget, not one per wait): the source's app secrets (a new tenant),
/// the app to stop (no pod of it left; a backup's pods do not count, they only read), and
/// PostgreSQL to accept connections. Past it the restore fails (and holds the app, as any
/// failed restore), saying what it waited for and what to look at. The restore Job has
/// its own limit (`activeDeadlineSeconds`, five minutes less than its URLs' six hours).
pub const RESTORE_WAIT_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Whether restore `rs` has waited past [`RESTORE_WAIT_LIMIT`] since it started.
fn overdue(ctx: &Context, rs: &RestoreStatus) -> bool {
    let Some(started) = rs
        .started_at
        .as_deref()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    else {
        return false;
    };
    ctx.now().duration_since(started).as_secs() > RESTORE_WAIT_LIMIT.as_secs() as i64
}

/// "30 minutes", for messages.
fn wait_limit() -> String {
    format!("{} minutes", RESTORE_WAIT_LIMIT.as_secs() / 60)
}

/// Where a restore is.
enum Restoring {
    /// Not done yet: come back after this.
    Wait(Action),
    /// Restored (and migrated): the app starts; the version to mark the tenant installed
    /// at, when it was not.
    Start(RestoreStatus, Option<String>),
}

/// The tenant's children as they are, with the app held: web, streaming and sidekiq at
/// zero replicas and every CronJob suspended (the scheduled backup too: a backup of a
/// database being restored is worth nothing). Nothing is pruned.
async fn hold_app(ctx: &Context, t: &Tenant<'_>) -> Result<usize, OperatorError> {
    let app = lifecycle::app_deployments(t.instance.spec.app);
    let mut children: Vec<Child> = crate::render::render(t)
        .map_err(ReconcileError::from)?
        .into_iter()
        .filter(|c| !matches!(c, Child::Job(_)))
        .map(|c| match c {
            Child::Deployment(mut d)
                if d.metadata.name.as_deref().is_some_and(|n| app.contains(&n)) =>
            {
                if let Some(spec) = d.spec.as_mut() {
                    spec.replicas = Some(0);
                }
                Child::Deployment(d)
            }
            Child::CronJob(mut c) => {
                if let Some(spec) = c.spec.as_mut() {
                    spec.suspend = Some(true);
                }
                Child::CronJob(c)
            }
            other => other,
        })
        .collect();
    if let Some(digest) = reconcile::referenced_secrets_digest(&ctx.client, t.instance).await? {
        reconcile::stamp_referenced_secrets(&mut children, t.instance, &digest);
    }
    reconcile::apply(&ctx.client, &children).await?;
    writers_left(ctx, t).await
}

/// Writes the status of a restore under way (or ended): `phase`, `status.restore`, and
/// the last error.
async fn write_restore(
    api: &Api<Instance>,
    instance: &Instance,
    rs: RestoreStatus,
    phase: Phase,
    error: Option<String>,
) -> Result<bool, OperatorError> {
    let status = InstanceStatus {
        phase,
        last_error: error,
        restore: Some(rs),
        ..instance.status.clone().unwrap_or_default()
    };
    write_status(api, instance, &status).await
}

/// Ends a restore that failed or was refused: recorded on the Instance
/// ([`RESTORE_ANNOTATION`]) and in its status (`Failed`, with why), told in an Event.
async fn restore_ended(
    ctx: &Context,
    api: &Api<Instance>,
    instance: &Instance,
    mut rs: RestoreStatus,
    end: RestoreEnd,
    why: String,
) -> Result<Restoring, OperatorError> {
    let cancelled = end == RestoreEnd::Cancelled;
    rs.step = match cancelled {
        true => RestoreStep::Cancelled,
        false => RestoreStep::Failed,
    };
    rs.finished_at = Some(ctx.now().to_string());
    rs.message = Some(why.clone());
    let done = format!("{}:{}", rs.id, end.label());
    annotate(api, instance, RESTORE_ANNOTATION, Some(&done)).await?;
    let (phase, error, reason) = match cancelled {
        // The next reconcile starts the app (or holds a new tenant, saying why).
        true => (Phase::Restoring, None, "RestoreCancelled"),
        false => (Phase::Failed, Some(why.clone()), "RestoreFailed"),
    };
    if write_restore(api, instance, rs, phase, error).await? {
        ctx.event(instance, !cancelled, reason, why).await;
    }
    Ok(Restoring::Wait(Action::requeue(Duration::from_secs(
        match end {
            // The next reconcile runs the tenant as it was.
            RestoreEnd::Refused | RestoreEnd::Cancelled => 1,
            _ => 300,
        },
    ))))
}

/// After a restore that failed: the app stays stopped (see [`holds`]) and the status says
/// why, until the control plane asks for another restore or removes `spec.restore`.
async fn hold_after_restore(
    instance: &Instance,
    ctx: &Context,
    api: &Api<Instance>,
    ns: &str,
) -> Result<Action, OperatorError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    if namespaces.get_opt(ns).await?.is_some() {
        if let Some(secret) = secrets.get_opt(APP_SECRET).await? {
            let secrets = app_secrets(ns, secret)?;
            let cluster = cluster_for(ctx, instance);
            let t = Tenant {
                instance,
                secrets: &secrets,
                cluster: &cluster,
            };
            hold_app(ctx, &t).await?;
        }
    }
    let previous = instance.status.clone().unwrap_or_default();
    let why = previous
        .restore
        .as_ref()
        .and_then(|r| r.message.clone())
        .or(previous.last_error.clone());
    let status = InstanceStatus {
        phase: Phase::Failed,
        last_error: why,
        ..previous
    };
    write_status(api, instance, &status).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn app_secrets(ns: &str, secret: Secret) -> Result<AppSecrets, OperatorError> {
    Ok(
        AppSecrets::from_data(&reconcile::secret_strings(secret)).map_err(|source| {
            ReconcileError::DamagedSecret {
                namespace: ns.to_owned(),
                source,
            }
        })?,
    )
}

/// One step of restore `wanted` (see docs/BACKUPS.md, "Restores"):
///
/// 1. Checks first, before anything stops: a backup target, an id that can name Jobs, a
///    source under the operator's prefix that is a dump backup (not CloudNativePG's).
/// 2. The tenant's `app-secrets`: on a new tenant (or one whose namespace is gone) the
///    operator makes the namespace and waits for the control plane to copy the source's
///    secrets there; it never generates them for a restore.
/// 3. The app stops (web, streaming, sidekiq, the CronJobs) and the restore waits until
///    no pod of the app is left, and for PostgreSQL.
/// 4. Job `restore-<id>` with `GET` URLs for the backup's objects (Secret
///    `restore-<id>-urls`); its report gives the rows counted before and after, which
///    must agree.
/// 5. Mastodon: Job `restore-<id>-migrate` (`db:migrate`, pre- and post-deployment
///    migrations together) with the running version's image.
/// 6. The app starts (the caller's reconcile), the tenant marked installed; the restore
///    succeeds once it is rolled out.
///
/// The Jobs carry the id, and a restore that ended is recorded ([`RESTORE_ANNOTATION`]):
/// the same id never runs twice. The waits of steps 2 and 3 end [`RESTORE_WAIT_LIMIT`]
/// after the restore started (it then fails); `spec.restore.cancel` stops it while the
/// database is untouched ([`cancel_restore`]).
async fn restore_step(
    instance: &Instance,
    ctx: &Context,
    api: &Api<Instance>,
    ns: &str,
    wanted: &RestoreSpec,
) -> Result<Restoring, OperatorError> {
    let id = wanted.id.as_str();
    let client = &ctx.client;
    let mut rs = instance
        .status
        .as_ref()
        .and_then(|s| s.restore.clone())
        .filter(|r| r.id == wanted.id)
        .unwrap_or_else(|| RestoreStatus {
            id: wanted.id.clone(),
            step: RestoreStep::StoppingApp,
            source: wanted.source.clone(),
            started_at: Some(ctx.now().to_string()),
            finished_at: None,
            source_rows: BTreeMap::new(),
            restored_rows: BTreeMap::new(),
            message: None,
        });
    let refuse =
        |why: String| restore_ended(ctx, api, instance, rs.clone(), RestoreEnd::Refused, why);
    let Some(target) = &ctx.settings.backup else {
        return refuse("no backup target is configured (HERD_BACKUP_S3_BUCKET): there is nothing to restore from".into()).await;
    };
    if !restore::valid_id(id) {
        return refuse(format!("spec.restore.id {id:?} cannot name the restore's Jobs: use at most 40 lowercase letters, digits and '-'")).await;
    }
    let dir = match presign::source_dir(target, wanted, &instance.spec.slug) {
        Ok(dir) => dir,
        Err(why) => return refuse(why).await,
    };
    if wanted.cancel {
        if let Some(next) = cancel_restore(instance, ctx, api, ns, &mut rs).await? {
            return Ok(next);
        }
    }
    // A cancel that came too late says so while the restore goes on.
    let late = match wanted.cancel {
        true => rs.message.clone(),
        false => None,
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns_exists = namespaces.get_opt(ns).await?.is_some();
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = match ns_exists {
        true => secrets_api.get_opt(APP_SECRET).await?,
        false => None,
    };
    let Some(secret) = secret else {
        // The namespace, for the control plane to copy the source's secrets into: a
        // restored database is unreadable without them.
        let placeholder = AppSecrets::generate();
        let cluster = cluster_for(ctx, instance);
        let t = Tenant {
            instance,
            secrets: &placeholder,
            cluster: &cluster,
        };
        let namespace: Vec<Child> = crate::render::tenancy::render(&t)
            .map_err(ReconcileError::from)?
            .into_iter()
            .filter(|c| matches!(c, Child::Namespace(_)))
            .collect();
        reconcile::apply(client, &namespace).await?;
        if overdue(ctx, &rs) {
            let why = format!("the source tenant's app secrets (Secret {APP_SECRET}) did not reach namespace {ns} within {} of the restore's start: the control plane copies them there, and its restore page says why it could not (the source's cluster unreachable, its Secret gone); `kubectl -n {ns} get secret {APP_SECRET}` shows whether they are there now. Nothing was restored: ask for a new restore once the source's cluster answers, or delete this tenant", wait_limit());
            return restore_ended(ctx, api, instance, rs, RestoreEnd::Failed, why).await;
        }
        rs.step = RestoreStep::Restoring;
        rs.message = Some(format!("waiting for Secret {APP_SECRET} in namespace {ns}: the control plane copies the source tenant's app secrets there (a restored database is unreadable without them; the operator never generates them for a restore)"));
        write_restore(api, instance, rs, Phase::Restoring, None).await?;
        return Ok(Restoring::Wait(Action::requeue(Duration::from_secs(10))));
    };
    let secrets = app_secrets(ns, secret)?;
    let cluster = cluster_for(ctx, instance);
    let t = Tenant {
        instance,
        secrets: &secrets,
        cluster: &cluster,
    };
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job_name = restore::job_name(id);
    let job = jobs.get_opt(&job_name).await?;
    let wait = |secs| Ok(Restoring::Wait(Action::requeue(Duration::from_secs(secs))));
    let Some(job) = job else {
        let left = hold_app(ctx, &t).await?;
        let nothing = "Nothing was restored, the database is as it was. The app is left stopped: ask for a new restore (a new id), or remove spec.restore to start it on the database as it is";
        if left > 0 && overdue(ctx, &rs) {
            let selector = observe::selector(instance);
            let why = format!("the app did not stop within {} of the restore's start: {left} of its pods are left. `kubectl -n {ns} get pods -l {selector}` lists them; one stuck Terminating (its node down, a finalizer) shows why in `kubectl -n {ns} describe pod <name>`, and goes with `kubectl -n {ns} delete pod <name> --grace-period=0 --force` once its node is known to be down. {nothing}.", wait_limit());
            return restore_ended(ctx, api, instance, rs, RestoreEnd::Failed, why).await;
        }
        if left > 0 {
            rs.step = RestoreStep::StoppingApp;
            rs.message = Some(format!(
                "waiting for the app to stop ({left} pods left) before the restore"
            ));
            write_restore(api, instance, rs, Phase::Restoring, None).await?;
            return wait(5);
        }
        let observed = observe::observe(client, &t).await?;
        if !observed.database_ready && overdue(ctx, &rs) {
            let why = format!("PostgreSQL did not accept connections within {} of the restore's start. `kubectl -n {ns} get pods,pvc` shows its pod and volume (Pending: no room or no volume; CrashLoopBackOff: `kubectl -n {ns} logs statefulset/postgres`; CloudNativePG: `kubectl -n {ns} get clusters.postgresql.cnpg.io`). {nothing}.", wait_limit());
            return restore_ended(ctx, api, instance, rs, RestoreEnd::Failed, why).await;
        }
        if !observed.database_ready {
            rs.step = RestoreStep::Restoring;
            rs.message = Some("waiting for PostgreSQL to accept connections".into());
            write_restore(api, instance, rs, Phase::Restoring, None).await?;
            return wait(10);
        }
        let media = restore::restores_media(&t, wanted.media).map_err(ReconcileError::from)?;
        let credentials = backup_credentials(ctx).await?;
        let urls = presign::download_urls(
            target,
            &credentials,
            &dir,
            &restore::download_names(media),
            ctx.now(),
            restore::URL_VALIDITY,
        )?;
        // The manifest's checksum, when the tenant's own records have this backup.
        let source = format!("s3://{}/{dir}", target.bucket);
        let known = instance.status.as_ref().and_then(|s| {
            s.backups
                .iter()
                .find(|b| b.location.as_deref() == Some(source.as_str()))
                .and_then(|b| b.checksum.clone())
        });
        // The control plane's record wins: the tenant's own status may not hold the
        // backup (a new tenant, a drill), and a drill must check it.
        let known = wanted.manifest_sha256.clone().or(known);
        if known.is_none() && instance.spec.drill {
            let why = "a drill needs the backup's manifest checksum (spec.restore.manifestSha256) to prove it; none was given".to_owned();
            return restore_ended(ctx, api, instance, rs, RestoreEnd::Failed, why).await;
        }
        // The backup's size, for the scratch space: the control plane's record, else the
        // tenant's own (else the render sizes it from the tenant's volumes).
        let size = wanted.size_bytes.or_else(|| {
            instance.status.as_ref().and_then(|s| {
                s.backups
                    .iter()
                    .find(|b| b.location.as_deref() == Some(source.as_str()))
                    .and_then(|b| b.size_bytes)
            })
        });
        let children = restore::restore(&t, &urls, id, &source, media, known.as_deref(), size)
            .map_err(ReconcileError::from)?;
        mark_backups_during_restore(client, ns, id).await?;
        reconcile::apply(client, &children).await?;
        ctx.event(
            instance,
            false,
            "RestoreStarted",
            format!("Job {ns}/{job_name} restores the tenant from {source}"),
        )
        .await;
        rs.step = RestoreStep::Restoring;
        rs.message = None;
        write_restore(api, instance, rs, Phase::Restoring, None).await?;
        return wait(15);
    };
    let logs = format!("`kubectl logs -n {ns} job/{job_name} --all-containers`");
    let stopped = "The app is left stopped: ask for a new restore (a new id), or remove spec.restore to start it on the database as it is";
    match job_state(&job) {
        JobState::Running => {
            hold_app(ctx, &t).await?;
            rs.step = RestoreStep::Restoring;
            rs.message = late.clone();
            write_restore(api, instance, rs, Phase::Restoring, None).await?;
            return wait(15);
        }
        JobState::Failed(m) => {
            let pods = job_pods(ctx, &t).await?;
            let reason = crate::backups::termination_messages(&job, &pods, "fetch")
                .into_iter()
                .chain(crate::backups::termination_messages(
                    &job,
                    &pods,
                    restore::RESTORE_CONTAINER,
                ))
                .map(|m| m.trim().to_owned())
                .find(|m| !m.is_empty())
                .or_else(|| evicted(&pods, &job_name));
            let why = match reason {
                Some(r) => format!(
                    "the restore Job {ns}/{job_name} failed: {r} ({m}). Read {logs}. {stopped}."
                ),
                None => {
                    format!("the restore Job {ns}/{job_name} failed ({m}). Read {logs}. {stopped}.")
                }
            };
            return restore_ended(ctx, api, instance, rs, RestoreEnd::Failed, why).await;
        }
        JobState::Succeeded => {}
    }
    let pods = job_pods(ctx, &t).await?;
    let summary = crate::backups::termination_messages(&job, &pods, restore::RESTORE_CONTAINER)
        .iter()
        .map(|m| restore::RestoreSummary::parse(m))
        .find(|s| !s.restored_rows.is_empty() || !s.source_rows.is_empty())
        .unwrap_or_default();
    rs.source_rows = summary.source_rows.clone();
    rs.restored_rows = summary.restored_rows.clone();
    if summary.restored_rows.is_empty() {
        // Without its counts (the pod is gone, or left no message) nothing says the
        // database holds the backup: never served on trust.
        let why = format!(
            "the restore Job left no row counts to check the database against the backup. Read {logs}. {stopped}."
        );
        return restore_ended(ctx, api, instance, rs, RestoreEnd::Failed, why).await;
    }
    if let Some(why) = summary.mismatch() {
        let why = format!(
            "the restored database does not match the backup ({why}). Read {logs}. {stopped}."
        );
        return restore_ended(ctx, api, instance, rs, RestoreEnd::Failed, why).await;
    }
    let version = instance
        .installed_version()
        .unwrap_or(&instance.spec.version)
        .to_owned();
    if let Some(from) = summary.source_version.as_deref() {
        use herd_domain::version::Precedence;
        if Precedence::of(from) > Precedence::of(&version) {
            let why = format!("the backup is of {from}, newer than {version}, which the tenant runs: its database cannot be migrated back. Set spec.version to {from} or later and ask for a new restore. {stopped}.");
            return restore_ended(ctx, api, instance, rs, RestoreEnd::Failed, why).await;
        }
    }
    if let Some(migrate) = restore::migrate_job(&t, &version, id).map_err(ReconcileError::from)? {
        let name = restore::migrate_job_name(id);
        match jobs.get_opt(&name).await?.as_ref().map(job_state) {
            None => {
                hold_app(ctx, &t).await?;
                reconcile::apply(client, &[migrate]).await?;
                rs.step = RestoreStep::Migrating;
                rs.message = late.clone();
                write_restore(api, instance, rs, Phase::Restoring, None).await?;
                return wait(10);
            }
            Some(JobState::Running) => {
                hold_app(ctx, &t).await?;
                rs.step = RestoreStep::Migrating;
                write_restore(api, instance, rs, Phase::Restoring, None).await?;
                return wait(10);
            }
            Some(JobState::Failed(m)) => {
                let why = format!("the migrations to {version} after the restore failed (Job {ns}/{name}: {m}): the database is restored but not migrated. Read `kubectl logs -n {ns} job/{name}`. {stopped}.");
                return restore_ended(ctx, api, instance, rs, RestoreEnd::Failed, why).await;
            }
            Some(JobState::Succeeded) => {}
        }
    }
    rs.step = RestoreStep::Starting;
    rs.message = late.clone();
    // Never installed fresh from now on: the database is the backup's.
    let installed = (instance.annotation(INSTALLED_VERSION_ANNOTATION) != Some(version.as_str()))
        .then(|| version.clone());
    if let Some(v) = &installed {
        annotate(api, instance, INSTALLED_VERSION_ANNOTATION, Some(v)).await?;
    }
    Ok(Restoring::Start(rs, installed))
}

/// Why Job `job`'s pod was evicted, when it was: its scratch volume outgrew its size
/// limit (or the node ran short of disk), the restore's data being larger than planned.
fn evicted(pods: &[Pod], job: &str) -> Option<String> {
    pods.iter()
        .filter(|p| {
            p.labels().get("batch.kubernetes.io/job-name").map(String::as_str) == Some(job)
                || p.labels().get("job-name").map(String::as_str) == Some(job)
        })
        .filter_map(|p| p.status.as_ref())
        .find(|s| s.reason.as_deref() == Some("Evicted"))
        .map(|s| {
            format!(
                "its pod was evicted ({}): the backup did not fit in the scratch space the restore Job was given (sized from the backup's size, else from the tenant's volumes: docs/BACKUPS.md, \"Scratch space\"), or the node ran short of disk; `kubectl -n {} describe job/{job}` shows the limit. An eviction before the replay's end leaves the database as it was; one during the row count, after the replay committed, leaves it holding the backup unmigrated: count its accounts and statuses before starting the app as it is",
                s.message.as_deref().unwrap_or("no message").trim(),
                pods.first().and_then(|p| p.namespace()).unwrap_or_default()
            )
        })
}

/// Whether a pod of the restore Job has started its `restore` container (or finished):
/// from then on the database may be replaced at any moment (the replay commits its one
/// transaction at its end, and the row count follows), so a cancel is too late.
fn replacing(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Succeeded")
        || status.container_statuses.iter().flatten().any(|c| {
            c.name == restore::RESTORE_CONTAINER
                && c.state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
}

/// Why a cancel that raced the replay ends the restore failed, holding the app.
fn cancel_raced(ns: &str, id: &str) -> String {
    format!("the cancel raced the restore: the restore Job's pod had started replacing the database when it was stopped, so the database holds either its old contents or the backup without its migrations. Read `kubectl -n {ns} get pods -l {}={id}` while the pod is there. The app is left stopped: ask for a new restore (a new id), or remove spec.restore to start it on the database as it is.", restore::RESTORE_LABEL)
}

/// Marks every backup Job of the tenant still running (the restore does not wait for
/// them: they only read) with [`DURING_RESTORE_ANNOTATION`], before the restore Job that
/// replaces the data is made: what they archive from now on may mix the old and the
/// restored media, so they are recorded failed (`backups::from_job`). The CronJobs are
/// suspended by then, so no new one starts.
async fn mark_backups_during_restore(
    client: &kube::Client,
    ns: &str,
    id: &str,
) -> Result<(), OperatorError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let lp = kube::api::ListParams::default().labels(crate::render::backup::BACKUP_LABEL);
    for job in jobs.list(&lp).await?.items {
        let marked = job
            .annotations()
            .contains_key(crate::render::backup::DURING_RESTORE_ANNOTATION);
        if marked || job_state(&job) != JobState::Running {
            continue;
        }
        let patch = json!({ "metadata": { "annotations": {
            crate::render::backup::DURING_RESTORE_ANNOTATION: id,
        } } });
        match jobs
            .patch(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if kube_code(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Why a cancel must not trust the restore's pods as listed: a pod of the Job has ended
/// (the Job's counts, kept by its controller through the pods' tracking finalizer, say so
/// even once the pod is gone: evicted, pre-empted, drained, deleted) although the Job has
/// not ended yet. What that pod did cannot be read any more; it may have replaced the
/// database before it went, so the restore goes on to the end its Job reaches (with
/// `backoffLimit: 0`, failed, holding the app). `None` when no pod of it has ended.
fn pod_ended_unseen(job: &Job) -> Option<String> {
    let status = job.status.as_ref()?;
    let uncounted = status.uncounted_terminated_pods.as_ref().map_or(0, |u| {
        u.failed.as_ref().map_or(0, Vec::len) + u.succeeded.as_ref().map_or(0, Vec::len)
    });
    let ended = status.failed.unwrap_or(0) + status.succeeded.unwrap_or(0);
    (ended > 0 || uncounted > 0).then(|| {
        "a pod of the restore Job ended (failed, evicted or deleted) before its Job did, and what it did can no longer be read: it may have replaced the database".to_owned()
    })
}

/// Cancels restore `rs` (`spec.restore.cancel`) while the database is untouched: before
/// its Job, or while the Job's pod only downloads and checks (its `restore` container not
/// started; the media archive it may have unpacked adds files, as any restore, which the
/// old database ignores). The Job is deleted and every pod of the restore too (a real
/// cluster's garbage collector would delete them only eventually, and a pod may still
/// write), with a one-second grace period; the restore is `Cancelled` once none is left,
/// and the next reconcile starts the app on the database as it was. `None` when the
/// cancel is too late (the message says so): the restore goes on to its end.
async fn cancel_restore(
    instance: &Instance,
    ctx: &Context,
    api: &Api<Instance>,
    ns: &str,
    rs: &mut RestoreStatus,
) -> Result<Option<Restoring>, OperatorError> {
    let late = |rs: &mut RestoreStatus, why: &str| {
        rs.message = Some(format!(
            "the cancel came too late: {why}; the restore goes on to its end"
        ));
        None
    };
    if matches!(rs.step, RestoreStep::Migrating | RestoreStep::Starting) {
        return Ok(late(rs, "the database already holds the backup"));
    }
    let client = &ctx.client;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut pods_left = Vec::new();
    if namespaces.get_opt(ns).await?.is_some() {
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let lp = kube::api::ListParams::default().labels(&format!(
            "{}={}",
            restore::RESTORE_LABEL,
            rs.id
        ));
        let restore_pods = pods.list(&lp).await?.items;
        let job_name = restore::job_name(&rs.id);
        if let Some(job) = jobs.get_opt(&job_name).await? {
            match job_state(&job) {
                JobState::Succeeded => {
                    return Ok(late(rs, "the restore Job has replaced the database"))
                }
                // Ends as the failed restore it is (the database may be touched).
                JobState::Failed(_) => return Ok(None),
                JobState::Running => {}
            }
            if restore_pods.iter().any(replacing) {
                return Ok(late(
                    rs,
                    "the restore Job is replacing the database (its restore container started)",
                ));
            }
            if let Some(why) = pod_ended_unseen(&job) {
                return Ok(late(rs, &why));
            }
            match jobs.delete(&job_name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if kube_code(&e) == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        } else if restore_pods.iter().any(replacing) {
            // The Job gone (deleted by this cancel), a pod of it seen replacing after all:
            // the cancel raced the replay, which may or may not have committed. Held, as
            // a failed restore: nobody can say which database the tenant has.
            let why = cancel_raced(ns, &rs.id);
            return Ok(Some(
                restore_ended(ctx, api, instance, rs.clone(), RestoreEnd::Failed, why).await?,
            ));
        }
        let quick = DeleteParams {
            grace_period_seconds: Some(1),
            ..DeleteParams::background()
        };
        for pod in &restore_pods {
            if pod.metadata.deletion_timestamp.is_none() {
                match pods.delete(&pod.name_any(), &quick).await {
                    Ok(_) => {}
                    Err(e) if kube_code(&e) == Some(404) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        pods_left = pods.list(&lp).await?.items;
        // Listed once more after the deletions: a `restore` container that started in
        // between is seen now, before its pod (deleted with a one-second grace) is gone.
        if pods_left.iter().any(replacing) {
            let why = cancel_raced(ns, &rs.id);
            return Ok(Some(
                restore_ended(ctx, api, instance, rs.clone(), RestoreEnd::Failed, why).await?,
            ));
        }
        if pods_left.is_empty() {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
            match secrets
                .delete(&restore::urls_secret_name(&rs.id), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if kube_code(&e) == Some(404) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !pods_left.is_empty() {
        rs.message = Some(format!(
            "cancelling: waiting for the restore's {} pods to go (`kubectl -n {ns} get pods -l {}={}`) before the app starts again. A pod stuck Terminating on a node that is gone holds it: once you know the node is down, `kubectl -n {ns} delete pod <name> --force --grace-period=0`",
            pods_left.len(),
            restore::RESTORE_LABEL,
            rs.id
        ));
        write_restore(api, instance, rs.clone(), Phase::Restoring, None).await?;
        return Ok(Some(Restoring::Wait(Action::requeue(Duration::from_secs(
            5,
        )))));
    }
    let why = match instance.installed_version() {
        Some(_) => "cancelled before the database was touched: no pod of the restore is left, and the app starts again on the database as it was".to_owned(),
        None => "cancelled before anything was restored: this tenant was made for the restore, holds no data and is not installed; delete it (a restore into a new tenant makes another)".to_owned(),
    };
    Ok(Some(
        restore_ended(ctx, api, instance, rs.clone(), RestoreEnd::Cancelled, why).await?,
    ))
}

/// The pods of the tenant's Jobs (their termination messages are read).
async fn job_pods(ctx: &Context, t: &Tenant<'_>) -> Result<Vec<Pod>, OperatorError> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &t.namespace());
    let lp = kube::api::ListParams::default().labels(&format!(
        "{},app.kubernetes.io/component=jobs",
        observe::selector(t.instance)
    ));
    Ok(pods.list(&lp).await?.items)
}

/// Export `wanted` (see [`crate::render::export`]): its Job made once, with upload URLs
/// for its own directory, and its status read from the Job and its report. An export
/// that ended is never run again; `None` while nothing is to be said.
async fn export_step(
    instance: &Instance,
    ctx: &Context,
    t: &Tenant<'_>,
    wanted: &ExportSpec,
) -> Result<Option<ExportStatus>, OperatorError> {
    let id = wanted.id.as_str();
    let previous = instance
        .status
        .as_ref()
        .and_then(|s| s.export.clone())
        .filter(|x| x.id == id);
    if previous
        .as_ref()
        .is_some_and(|x| x.outcome != BackupOutcome::Running)
    {
        return Ok(previous);
    }
    let now = ctx.now().to_string();
    let failed = |why: String| {
        Some(ExportStatus {
            id: id.to_owned(),
            outcome: BackupOutcome::Failed,
            location: None,
            started_at: previous.as_ref().and_then(|p| p.started_at.clone()),
            finished_at: Some(now.clone()),
            size_bytes: None,
            checksum: None,
            message: Some(why),
            secrets_sealed_to: None,
        })
    };
    let Some(target) = &ctx.settings.backup else {
        return Ok(failed("no backup target is configured (HERD_BACKUP_S3_BUCKET): an export is written to the backup bucket".into()));
    };
    if !restore::valid_id(id) {
        return Ok(failed(format!("spec.export.id {id:?} cannot name the export's Job: use at most 40 lowercase letters, digits and '-'")));
    }
    let ns = t.namespace();
    let name = export::job_name(id);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(job) = jobs.get_opt(&name).await? else {
        if previous.is_some() {
            forget_export(ctx, &ns, id).await?;
            return Ok(failed(format!("the export Job {ns}/{name} is gone before it was seen to finish; ask for a new export")));
        }
        let credentials = backup_credentials(ctx).await?;
        let dir = export::export_dir(target, &t.instance.spec.slug, id);
        let names = export::names(t).map_err(ReconcileError::from)?;
        let urls = presign::upload_urls(
            target,
            &credentials,
            &dir,
            &names,
            ctx.now(),
            presign::URL_VALIDITY,
        )?;
        // Sealed to the owner's recipient in this process: the Job sees only the sealed
        // bytes, never the secrets; only those the server needs elsewhere, never this
        // tenant's database and Redis passwords.
        let portable = t.secrets.portable();
        let sealed = match wanted.secrets_recipient.as_deref() {
            Some(_) if t.instance.spec.app != crate::crd::App::Mastodon => {
                return Ok(failed("spec.export.secretsRecipient is set, but only a Mastodon tenant has app secrets to carry elsewhere: ask without one".into()));
            }
            Some(r) => match crate::seal::seal(&portable, r) {
                Ok(bytes) => Some((bytes, crate::seal::digest(&portable, r))),
                Err(crate::seal::SealError::Recipient(why)) => {
                    return Ok(failed(format!("spec.export.secretsRecipient is not an age X25519 recipient (age1…): {why}")));
                }
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let children = export::export(
            t,
            target,
            &urls,
            id,
            sealed.as_ref().map(|(b, d)| (b.as_slice(), d.as_str())),
        )
        .map_err(ReconcileError::from)?;
        reconcile::apply(&ctx.client, &children).await?;
        let location = format!("s3://{}/{dir}", target.bucket);
        ctx.event(
            instance,
            false,
            "ExportStarted",
            format!("Job {ns}/{name} exports the tenant to {location}"),
        )
        .await;
        return Ok(Some(ExportStatus {
            id: id.to_owned(),
            outcome: BackupOutcome::Running,
            location: Some(location),
            started_at: Some(now),
            finished_at: None,
            size_bytes: None,
            checksum: None,
            message: None,
            secrets_sealed_to: sealed.and(wanted.secrets_recipient.clone()),
        }));
    };
    let pods = job_pods(ctx, t).await?;
    let mut x = crate::backups::export_status(id, &job, &pods);
    if x.started_at.is_none() {
        x.started_at = previous.and_then(|p| p.started_at);
    }
    // Sealed to the recipient it was made with: that of this export's id, which never
    // changes (the control plane checks it against the one it asked for).
    if crate::backups::uploads_sealed(&job) {
        x.secrets_sealed_to = wanted.secrets_recipient.clone();
    }
    if x.outcome != BackupOutcome::Running {
        forget_export(ctx, &ns, id).await?;
        ctx.event(
            instance,
            x.outcome == BackupOutcome::Failed,
            "ExportFinished",
            x.message.clone().unwrap_or_else(|| {
                format!(
                    "export {id} is in {}",
                    x.location.clone().unwrap_or_default()
                )
            }),
        )
        .await;
    }
    Ok(Some(x))
}

/// Deletes export `id`'s URL Secret (its URLs expire anyway) and the Secret of its sealed
/// app secrets, once it ended: of no more use.
async fn forget_export(ctx: &Context, ns: &str, id: &str) -> Result<(), OperatorError> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for name in [export::urls_secret_name(id), export::sealed_secret_name(id)] {
        match secrets.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sets (or, with `None`, removes) one of the Instance's annotations.
async fn annotate(
    api: &Api<Instance>,
    instance: &Instance,
    key: &str,
    value: Option<&str>,
) -> Result<(), OperatorError> {
    api.patch(
        &instance.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { key: value } } })),
    )
    .await?;
    Ok(())
}

/// The annotation by which an operator asks for a tenant whose namespace is gone to be
/// installed again from scratch.
pub const REINSTALL_ANNOTATION: &str = "herd.dev/reinstall";

/// A tenant recorded as installed whose namespace is gone (deleted by hand, or a restore
/// that has not brought it back yet) is not started on an empty database: it fails, with a
/// Warning saying how to restore it or, once an operator annotates the Instance with
/// `herd.dev/reinstall=true`, is installed again from scratch (new secrets, database
/// preparation included). A reinstall on its own could pair a database restored later
/// with new secrets. (`Some`: the next reconcile goes on from there.)
async fn reinstall_if_gone(
    instance: &Instance,
    ctx: &Context,
    api: &Api<Instance>,
    ns: &str,
) -> Result<Option<Action>, OperatorError> {
    let Some(installed) = instance.installed_version() else {
        return Ok(None);
    };
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    if namespaces.get_opt(ns).await?.is_some() {
        return Ok(None);
    }
    if instance.annotation(REINSTALL_ANNOTATION) != Some("true") {
        let why = format!("namespace {ns} is gone although {installed} was installed: restore it from a backup (with its Secrets), or annotate the Instance with {REINSTALL_ANNOTATION}=true to install it again from scratch with an empty database");
        let status = InstanceStatus {
            phase: Phase::Failed,
            last_error: Some(why.clone()),
            ..instance.status.clone().unwrap_or_default()
        };
        if write_status(api, instance, &status).await? {
            ctx.event(instance, true, "NamespaceMissing", why).await;
        }
        return Ok(Some(Action::requeue(Duration::from_secs(60))));
    }
    ctx.event(
        instance,
        true,
        "Reinstalling",
        format!("namespace {ns} is gone and {REINSTALL_ANNOTATION}=true: installing from scratch, with an empty database"),
    )
    .await;
    annotate(api, instance, INSTALLED_VERSION_ANNOTATION, None).await?;
    annotate(api, instance, REINSTALL_ANNOTATION, None).await?;
    api.patch_status(
        &instance.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "runningVersion": null, "lastError": null } })),
    )
    .await?;
    Ok(Some(Action::requeue(Duration::from_secs(1))))
}

/// Where a Mastodon tenant keeps media on a volume, decided once (then recorded in
/// [`MEDIA_ANNOTATION`]): a tenant that has a media claim keeps what it has (its access
/// modes cannot change), a new one gets what the operator's settings say.
async fn decide_media(ctx: &Context, ns: &str) -> Result<String, OperatorError> {
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), ns);
    Ok(match claims.get_opt("media").await? {
        Some(claim) => {
            let spec = claim.spec.unwrap_or_default();
            let shared = spec
                .access_modes
                .unwrap_or_default()
                .iter()
                .any(|m| m == "ReadWriteMany");
            match (shared, spec.storage_class_name) {
                (true, Some(class)) => format!("shared:{class}"),
                // A shared claim on the default class keeps that class.
                (true, None) => "shared:".into(),
                (false, _) => "one-node".into(),
            }
        }
        None => crate::render::mastodon::media_decision(&ctx.settings.cluster),
    })
}

/// The database of a `database.mode: Auto` tenant, decided once (then recorded in
/// [`DATABASE_ANNOTATION`]): a new tenant gets CloudNativePG when its CRD is installed now
/// (an API error is an error to retry, never a switch to the other database); a tenant
/// installed before decisions were recorded keeps the database it has.
async fn decide_database(
    instance: &Instance,
    ctx: &Context,
    ns: &str,
) -> Result<&'static str, OperatorError> {
    let client = &ctx.client;
    if instance.installed_version().is_some() {
        let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
            Api::namespaced(client.clone(), ns);
        if sets.get_opt("postgres").await?.is_some() {
            return Ok(DATABASE_STATEFULSET);
        }
    }
    Ok(if has_cloudnative_pg(client).await? {
        DATABASE_CLOUDNATIVE_PG
    } else {
        DATABASE_STATEFULSET
    })
}

/// The status while deleting: the phase `Deleting` and, when the deletion waits on someone,
/// why.
fn deleting(instance: &Instance, error: Option<String>) -> InstanceStatus {
    InstanceStatus {
        phase: Phase::Deleting,
        last_error: error,
        ..instance.status.clone().unwrap_or_default()
    }
}

async fn cleanup(instance: &Instance, ctx: &Context) -> Result<Action, OperatorError> {
    let api = instances(ctx, instance)?;
    let client = &ctx.client;
    if !instance.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let ns = namespace_name(&instance.spec.slug);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let Some(namespace) = namespaces.get_opt(&ns).await? else {
        // Everything is gone: let the Instance go.
        let rest: Vec<String> = instance
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        set_finalizers(&api, instance, rest).await?;
        ctx.event(
            instance,
            false,
            "Deleted",
            format!("namespace {ns} is gone"),
        )
        .await;
        return Ok(Action::await_change());
    };
    if namespace.metadata.deletion_timestamp.is_some() {
        write_status(&api, instance, &deleting(instance, None)).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    // A restore drill's copy holds nothing of its own: it goes without a final backup.
    let skip = instance.spec.drill
        || instance
            .annotations()
            .get(SKIP_BACKUP_ANNOTATION)
            .is_some_and(|v| v == "true");
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let backup = jobs.get_opt(FINAL_BACKUP_JOB).await?;
    let state = backup.as_ref().map(job_state);
    let ready_to_delete = skip || state == Some(JobState::Succeeded);
    if ready_to_delete {
        namespaces.delete(&ns, &DeleteParams::background()).await?;
        let note = match backup
            .as_ref()
            .and_then(|j| j.annotations().get("herd.dev/backup-object").cloned())
        {
            Some(object) if !skip => format!("final backup in {object}; deleting namespace {ns}"),
            _ if instance.spec.drill => {
                format!("deleting namespace {ns}, a restore drill's copy, without a final backup")
            }
            _ => {
                format!("deleting namespace {ns} without a final backup ({SKIP_BACKUP_ANNOTATION})")
            }
        };
        ctx.event(instance, false, "DeletingNamespace", note).await;
        write_status(&api, instance, &deleting(instance, None)).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let Some(target) = &ctx.settings.backup else {
        let why = format!("no backup target is configured (HERD_BACKUP_S3_BUCKET), so the final backup cannot be taken; configure one, or annotate the Instance with {SKIP_BACKUP_ANNOTATION}=true to delete the tenant's data without a backup");
        if write_status(&api, instance, &deleting(instance, Some(why.clone()))).await? {
            ctx.event(instance, true, "BackupTargetMissing", why).await;
        }
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
    match state {
        None => {
            let secrets = reconcile::load_or_generate_secrets(client, &ns).await?;
            let cluster = ctx.cluster();
            let t = Tenant {
                instance,
                secrets: &secrets,
                cluster: &cluster,
            };
            // The app stops first: the media archive and the dump are then of a server
            // that no longer writes.
            let running = stop_app(ctx, &t).await?;
            if running > 0 {
                let why = format!(
                    "waiting for the app to stop ({running} pods left) before the final backup"
                );
                write_status(&api, instance, &deleting(instance, Some(why))).await?;
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            if let Some(why) = database_login_ready(ctx, &t).await? {
                write_status(&api, instance, &deleting(instance, Some(why))).await?;
                return Ok(Action::requeue(Duration::from_secs(10)));
            }
            let credentials = backup_credentials(ctx).await?;
            ensure_sealed_secrets(ctx, &t, target).await?;
            let stamp = instance
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            // Upload URLs for this tenant's objects only, valid two hours: the
            // credentials themselves stay in the operator's namespace.
            let names = upload_names(&t, BackupKind::Final).map_err(ReconcileError::from)?;
            let dir = object_dir(target, &instance.spec.slug, &stamp);
            let urls = presign::upload_urls(
                target,
                &credentials,
                &dir,
                &names,
                ctx.now(),
                presign::URL_VALIDITY,
            )?;
            let children = final_backup(&t, target, &urls, &stamp).map_err(ReconcileError::from)?;
            reconcile::apply(client, &children).await?;
            ctx.event(
                instance,
                false,
                "FinalBackupStarted",
                format!("Job {ns}/{FINAL_BACKUP_JOB} backs the tenant up to s3://{}/{dir} before deletion", target.bucket),
            )
            .await;
            write_status(&api, instance, &deleting(instance, None)).await?;
            Ok(Action::requeue(Duration::from_secs(15)))
        }
        Some(JobState::Failed(message)) => {
            let why = format!("the final backup Job failed ({message}); the tenant's data is kept. Read `kubectl logs -n {ns} job/{FINAL_BACKUP_JOB}`, fix the cause and delete the Job to retry, or annotate the Instance with {SKIP_BACKUP_ANNOTATION}=true to delete without a backup");
            if write_status(&api, instance, &deleting(instance, Some(why.clone()))).await? {
                ctx.event(instance, true, "FinalBackupFailed", why).await;
            }
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        Some(_) => Ok(Action::requeue(Duration::from_secs(15))),
    }
}

/// Whether the final backup can log in as the app ([`Tenant::database_login`]). Where Herd
/// runs PostgreSQL, the app Secret (with that login's password) and the database's
/// StatefulSet (with its role keeper) are applied first, as a reconcile would: a tenant
/// being deleted when the operator was upgraded has neither yet, and the deletion applies
/// nothing else. Then the database pod must be ready (the keeper done). `None` when the
/// final backup can start, else why it waits. A tenant whose app Secret is gone waits
/// (nothing is applied): secrets made now would be sealed into the backup as the
/// tenant's, and a restore of it could read neither its two-factor secrets nor its
/// encrypted columns.
async fn database_login_ready(
    ctx: &Context,
    t: &Tenant<'_>,
) -> Result<Option<String>, OperatorError> {
    let ns = t.namespace();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    if secrets.get_opt(APP_SECRET).await?.is_none() {
        return Ok(Some(format!("the tenant's Secret {ns}/{APP_SECRET} is gone, and a final backup without the tenant's own app secrets could not be restored: put it back (a backup's sealed copy, docs/BACKUPS.md \"Restoring by hand\"), or annotate the Instance with {SKIP_BACKUP_ANNOTATION}=true to delete without a backup")));
    }
    if t.uses_cloudnative_pg() {
        return Ok(None);
    }
    let wanted = [
        format!("Secret/{APP_SECRET}"),
        "StatefulSet/postgres".to_owned(),
    ];
    let children: Vec<Child> = crate::render::render(t)
        .map_err(ReconcileError::from)?
        .into_iter()
        .filter(|c| wanted.contains(&c.describe()))
        .collect();
    reconcile::apply(&ctx.client, &children).await?;
    // Ready on the template just applied: the StatefulSet controller has seen it, and
    // every pod is of its newest revision and ready (an older pod, without the keeper,
    // may still be ready for a moment after the apply).
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &t.namespace());
    let waiting = Some("waiting for PostgreSQL and the app's database login (the database pod's role keeper) before the final backup, which logs in as it".to_owned());
    let Some(set) = sets.get_opt("postgres").await? else {
        return Ok(waiting);
    };
    let want = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let generation = set.metadata.generation;
    let ready = set.status.as_ref().is_some_and(|st| {
        st.ready_replicas.unwrap_or(0) >= want
            && generation.is_none_or(|g| st.observed_generation.is_some_and(|o| o >= g))
            && (st.update_revision.is_none() || st.current_revision == st.update_revision)
    });
    Ok(if ready { None } else { waiting })
}

/// The components whose pods write media or the database: web, streaming, sidekiq and
/// the app's Jobs (not the backups' Jobs, which only read).
const WRITERS: [&str; 4] = ["web", "streaming", "sidekiq", "jobs"];

/// Scales the app's Deployments to zero and suspends its CronJobs (as a suspension does),
/// then counts the app's pods still there (terminating ones included).
async fn stop_app(ctx: &Context, t: &Tenant<'_>) -> Result<usize, OperatorError> {
    let mut stopped = t.instance.clone();
    stopped.spec.suspended = true;
    let app = lifecycle::app_deployments(stopped.spec.app);
    let children: Vec<Child> = crate::render::render(&Tenant {
        instance: &stopped,
        ..*t
    })
    .map_err(ReconcileError::from)?
    .into_iter()
    .filter_map(|c| match c {
        Child::Deployment(d) if d.metadata.name.as_deref().is_some_and(|n| app.contains(&n)) => {
            Some(Child::Deployment(d))
        }
        Child::CronJob(mut c) => {
            if let Some(spec) = c.spec.as_mut() {
                spec.suspend = Some(true);
            }
            Some(Child::CronJob(c))
        }
        _ => None,
    })
    .collect();
    reconcile::apply(&ctx.client, &children).await?;
    writers_left(ctx, t).await
}

/// The pods of the app (or of its Jobs) still there, terminating ones included; those
/// that finished (a Job's completed pod) write nothing.
async fn writers_left(ctx: &Context, t: &Tenant<'_>) -> Result<usize, OperatorError> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &t.namespace());
    let lp = kube::api::ListParams::default().labels(&observe::selector(t.instance));
    Ok(pods
        .list(&lp)
        .await?
        .items
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/component"))
                .is_some_and(|c| WRITERS.contains(&c.as_str()))
        })
        // A backup's pods only read (pg_dump, an archive of the media): one that runs for
        // hours must not fail the restore's wait; the replay waits for pg_dump's locks.
        .filter(|p| {
            !p.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(crate::render::backup::BACKUP_LABEL))
        })
        .filter(|p| {
            !p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|phase| phase == "Succeeded" || phase == "Failed")
        })
        .count())
}

/// Makes the Secret of the tenant's sealed app secrets ([`SEALED_SECRETS`]) when it is
/// missing or seals other secrets or for another recipient (sealing is randomized: an
/// unchanged Secret is never written again).
async fn ensure_sealed_secrets(
    ctx: &Context,
    t: &Tenant<'_>,
    target: &BackupTarget,
) -> Result<(), OperatorError> {
    let digest = crate::seal::digest(t.secrets, &target.secrets_recipient);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &t.namespace());
    let current = api.get_opt(SEALED_SECRETS).await?;
    let sealed_for = current
        .as_ref()
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(SEALED_DIGEST_ANNOTATION));
    if sealed_for == Some(&digest) {
        return Ok(());
    }
    let sealed = crate::seal::seal(t.secrets, &target.secrets_recipient)?;
    let child = sealed_secrets(t, &sealed, &digest).map_err(ReconcileError::from)?;
    reconcile::apply(&ctx.client, &[child]).await?;
    Ok(())
}

/// Keeps the scheduled backup's URL Secret signed for the coming run (see
/// [`crate::render::schedule`]): rewritten only when that run changes.
async fn ensure_scheduled_urls(
    ctx: &Context,
    t: &Tenant<'_>,
    target: &BackupTarget,
) -> Result<(), OperatorError> {
    let spec = &t.instance.spec;
    let schedule = Schedule::of(spec);
    let now = ctx.now();
    let run = schedule.upcoming(now);
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &t.namespace());
    let signed_for = api
        .get_opt(SCHEDULED_BACKUP_URLS)
        .await?
        .and_then(|s| reconcile::secret_strings(s).remove("slot"));
    if signed_for == Some(run.as_second().to_string()) {
        return Ok(());
    }
    let credentials = backup_credentials(ctx).await?;
    let names = upload_names(t, BackupKind::Scheduled).map_err(ReconcileError::from)?;
    let dir = scheduled_dir(
        target,
        &spec.slug,
        spec.backup.retention_days,
        &run.to_string(),
    );
    // Valid until the run's last possible start plus its deadline, and at most the seven
    // days SigV4 allows.
    let expires = run.as_second() + (SLOT_TOLERANCE_SECS + 2 * 3600) as i64;
    let valid = u64::try_from(expires - now.as_second())
        .unwrap_or(1)
        .clamp(1, 7 * 24 * 3600);
    let mut urls = presign::upload_urls(
        target,
        &credentials,
        &dir,
        &names,
        now,
        Duration::from_secs(valid),
    )?;
    urls.insert("slot".into(), run.as_second().to_string());
    let secret = urls_secret(t, SCHEDULED_BACKUP_URLS, &urls).map_err(ReconcileError::from)?;
    reconcile::apply(&ctx.client, &[secret]).await?;
    tracing::info!(tenant = %spec.slug, run = %run, "scheduled backup URLs signed for the coming run");
    Ok(())
}

/// The Secret in the operator's namespace with each CloudNativePG tenant's own
/// object-store credentials, scoped to its prefix: keys `<slug>.AWS_ACCESS_KEY_ID` and
/// `<slug>.AWS_SECRET_ACCESS_KEY`.
pub const TENANT_CREDENTIALS_SECRET: &str = "herd-backup-tenant-credentials";

/// Copies a CloudNativePG tenant's own credentials into its namespace
/// ([`TENANT_BACKUP_CREDENTIALS`]), where CloudNativePG reads them. Without them its
/// backups fail (and the failure is an alert): the platform's credentials never go there.
async fn ensure_tenant_credentials(
    ctx: &Context,
    t: &Tenant<'_>,
    target: &BackupTarget,
) -> Result<(), OperatorError> {
    let slug = &t.instance.spec.slug;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let mut all = match api.get_opt(TENANT_CREDENTIALS_SECRET).await {
        Ok(Some(s)) => reconcile::secret_strings(s),
        Ok(None) => Default::default(),
        Err(kube::Error::Api(e)) if e.code == 403 => Default::default(),
        Err(e) => return Err(e.into()),
    };
    let (Some(id), Some(key)) = (
        all.remove(&format!("{slug}.AWS_ACCESS_KEY_ID")),
        all.remove(&format!("{slug}.AWS_SECRET_ACCESS_KEY")),
    ) else {
        tracing::warn!(tenant = %slug, "no object-store credentials for this CloudNativePG tenant in {TENANT_CREDENTIALS_SECRET}: its database backups will fail (docs/BACKUPS.md)");
        return Ok(());
    };
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": TENANT_BACKUP_CREDENTIALS, "namespace": t.namespace(), "labels": t.labels("backup") },
        "type": "Opaque",
        "stringData": { "ACCESS_KEY_ID": id, "ACCESS_SECRET_KEY": key, "REGION": target.region },
    }))
    .map_err(|source| ReconcileError::Encode {
        what: format!("Secret/{TENANT_BACKUP_CREDENTIALS}"),
        source,
    })?;
    reconcile::apply(&ctx.client, &[Child::Secret(secret)]).await?;
    Ok(())
}

/// The media bucket's versioning for the status: `None` without media in object storage;
/// the last reading while it is not due ([`crate::media_bucket::due`]); else read now with
/// the tenant's media credentials (Secret `spec.mediaS3.secretRef` in namespace `ns`).
async fn media_bucket_step(
    instance: &Instance,
    ctx: &Context,
    ns: &str,
) -> Option<crate::crd::MediaBucketStatus> {
    let s3 = instance.spec.media_s3.as_ref()?;
    let last = instance
        .status
        .as_ref()
        .and_then(|s| s.media_bucket.clone());
    let now = ctx.now();
    if let Some(last) = last.filter(|l| !crate::media_bucket::due(l, s3, now)) {
        return Some(last);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let credentials = match api.get_opt(&s3.secret_ref).await {
        Ok(Some(secret)) => BackupCredentials::from_secret(reconcile::secret_strings(secret))
            .map_err(|key| format!("Secret {ns}/{} has no {key}", s3.secret_ref)),
        Ok(None) => Err(format!("no Secret {ns}/{}", s3.secret_ref)),
        Err(e) => Err(format!(
            "Secret {ns}/{} could not be read ({e})",
            s3.secret_ref
        )),
    };
    let read = crate::media_bucket::check(&ctx.http, s3, credentials, now).await;
    if read.versioning != crate::crd::BucketVersioning::Enabled {
        tracing::warn!(instance = %key(instance), bucket = %read.bucket, versioning = ?read.versioning, message = read.message.as_deref().unwrap_or_default(), "media bucket without versioning: its media are not backed up");
    }
    Some(read)
}

/// The backup target's credentials, from the Secret in the operator's namespace.
async fn backup_credentials(ctx: &Context) -> Result<BackupCredentials, OperatorError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let secret = api.get(&ctx.settings.backup_credentials_secret).await?;
    BackupCredentials::from_secret(reconcile::secret_strings(secret)).map_err(|key| {
        OperatorError::BackupCredentials {
            namespace: ctx.settings.namespace.clone(),
            secret: ctx.settings.backup_credentials_secret.clone(),
            key,
        }
    })
}

/// Whether the CloudNativePG `Cluster` CRD is installed (for `database.mode: Auto`).
pub async fn has_cloudnative_pg(client: &kube::Client) -> Result<bool, kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    Ok(api.get_opt("clusters.postgresql.cnpg.io").await?.is_some())
}

/// How often the operator reads the API server's addresses again.
pub const API_SERVER_REFRESH: Duration = Duration::from_secs(300);

/// The API server's addresses as pods reach them: the EndpointSlices of the `kubernetes`
/// Service in `default` (NetworkPolicies see the endpoint, not the Service's address).
pub async fn api_server_endpoints(
    client: &kube::Client,
) -> Result<Vec<std::net::SocketAddr>, kube::Error> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let lp = kube::api::ListParams::default().labels("kubernetes.io/service-name=kubernetes");
    let mut out = Vec::new();
    for slice in api.list(&lp).await?.items {
        let ports: Vec<u16> = slice
            .ports
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.port.and_then(|p| u16::try_from(p).ok()))
            .collect();
        for endpoint in slice.endpoints {
            for address in endpoint.addresses {
                if let Ok(ip) = address.parse::<std::net::IpAddr>() {
                    out.extend(ports.iter().map(|p| std::net::SocketAddr::new(ip, *p)));
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Runs the controller until a shutdown signal, or until the leader Lease is lost (an error:
/// the process exits and Kubernetes restarts it as a candidate). Instances live in
/// `settings.namespace`; children are mapped back to them by their `herd.dev/instance` label.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    identity: &str,
    lease_duration: Duration,
) -> Result<(), crate::lease::LostLease> {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::runtime::reflector::ObjectRef;
    use kube::runtime::{watcher, Controller};

    let elector = crate::lease::LeaderElector::new(
        client.clone(),
        &settings.namespace,
        "herd-operator",
        identity,
        lease_duration,
    );
    tracing::info!(identity, namespace = %settings.namespace, "waiting for the leader Lease");
    elector.acquire().await;
    metrics::gauge!("herd_operator_leader").set(1.0);
    tracing::info!(identity, "leader: reconciling Instances");

    let ns = settings.namespace.clone();
    let to_instance = move |labels: &BTreeMap<String, String>| {
        labels
            .get("herd.dev/instance")
            .map(|name| ObjectRef::<Instance>::new(name).within(&ns))
    };
    let children = watcher::Config::default().labels("app.kubernetes.io/managed-by=herd");
    let (m1, m2) = (to_instance.clone(), to_instance);
    let instances: Api<Instance> = Api::namespaced(client.clone(), &settings.namespace);
    let ctx = Context::new(client.clone(), settings, "herd-operator");
    // The API server's addresses are read again every few minutes; a change reconciles
    // every tenant (their NetworkPolicies name the addresses).
    let api_server_changed = futures::stream::unfold(ctx.clone(), |ctx| async move {
        loop {
            tokio::time::sleep(API_SERVER_REFRESH).await;
            match ctx.refresh_api_server().await {
                Ok(true) => return Some(((), ctx)),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the API server's endpoints again; keeping the known ones");
                }
            }
        }
    });
    let controller = Controller::new(instances, watcher::Config::default())
        .reconcile_all_on(api_server_changed)
        .watches(
            Api::<Deployment>::all(client.clone()),
            children.clone(),
            move |d| m1(d.labels()),
        )
        .watches(Api::<Job>::all(client.clone()), children, move |j| {
            m2(j.labels())
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller");
            }
        });
    let outcome = tokio::select! {
        () = controller => Ok(()),
        lost = elector.hold() => Err(lost),
    };
    metrics::gauge!("herd_operator_leader").set(0.0);
    if outcome.is_ok() {
        if let Err(e) = elector.release().await {
            tracing::warn!(error = %e, "could not release the leader Lease");
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let mid = |n| backoff(n, false, 0.5).as_secs();
        assert_eq!(mid(1), 5);
        assert_eq!(mid(2), 10);
        assert_eq!(mid(3), 20);
        assert_eq!(mid(20), 300, "capped at five minutes");
        assert_eq!(backoff(1, false, 0.0).as_millis(), 3750);
        assert_eq!(backoff(1, false, 1.0).as_millis(), 6250);
    }

    #[test]
    fn throttling_backs_off_longer() {
        for n in 1..10 {
            assert!(backoff(n, true, 0.5) > backoff(n, false, 0.5));
            assert!(backoff(n, true, 0.0) >= Duration::from_secs(45));
        }
    }
}
