//! Restores, drills and exports (`spec.restore`, `spec.drill`, `spec.export`) against an
//! in-memory Kubernetes API (kube-fake-client). The fake runs no controllers: the tests
//! play the cluster's part (pods gone, Jobs finished with their termination messages,
//! Deployments rolled out), then reconcile again.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::{BackupOutcome, Instance, Phase, RestoreSpec, RestoreStep};
use herd_k8s::operator::{self, Context, Settings};
use herd_k8s::render::backup::{BackupTarget, DURING_RESTORE_ANNOTATION};
use herd_k8s::render::ClusterSettings;
use herd_k8s::secrets::AppSecrets;
use herd_testkit::fake_cluster::{self, FakeCluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

const NS: &str = "herd-system";
const TENANT: &str = "herd-lyon";
/// A scheduled backup of the tenant, under the operator's prefix (`final/`).
const SOURCE: &str = "s3://herd-backups/final/scheduled/keep-7d/lyon/20261206T021700Z/";
const ROWS: &str = "source-rows accounts=12 statuses=340\nsource-version v4.7.6\nrestored-rows accounts=12 statuses=340\n";

struct Harness {
    cluster: FakeCluster,
    ctx: Arc<Context>,
}

fn settings() -> Settings {
    Settings {
        cluster: ClusterSettings::default(),
        namespace: NS.into(),
        backup: Some(BackupTarget {
            bucket: "herd-backups".into(),
            endpoint: "https://s3.example.net".into(),
            prefix: "final/".into(),
            region: "us-east-1".into(),
            secrets_recipient: common::BACKUP_RECIPIENT.into(),
        }),
        backup_credentials_secret: "herd-backup-credentials".into(),
    }
}

fn restore_spec(id: &str, source: &str) -> RestoreSpec {
    RestoreSpec {
        id: id.into(),
        source: source.into(),
        media: true,
        manifest_sha256: None,
        source_tenant: None,
        import: false,
        cancel: false,
        size_bytes: None,
    }
}

async fn harness_with(instance: Instance) -> Harness {
    let cluster = fake_cluster::start_with(|b| b.with_resource::<Instance>()).await;
    harness_on(cluster, instance).await
}

async fn harness_on(cluster: FakeCluster, mut instance: Instance) -> Harness {
    instance.status = Some(Default::default());
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), NS);
    api.create(&PostParams::default(), &instance).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), NS);
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "herd-backup-credentials", "namespace": NS },
        "stringData": { "AWS_ACCESS_KEY_ID": "AKIAPLATFORMBACKUPS1", "AWS_SECRET_ACCESS_KEY": "pLaTfOrM/SeCrEt" },
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let ctx = Context::new(cluster.client.clone(), settings(), "herd-operator-test");
    Harness { cluster, ctx }
}

impl Harness {
    fn client(&self) -> kube::Client {
        self.cluster.client.clone()
    }

    async fn instance(&self) -> Instance {
        let api: Api<Instance> = Api::namespaced(self.client(), NS);
        api.get("lyon").await.unwrap()
    }

    async fn ok(&self) {
        operator::reconcile(Arc::new(self.instance().await), self.ctx.clone())
            .await
            .unwrap();
    }

    /// The operator restarts: a new context, nothing remembered but the cluster.
    fn restart(&mut self) {
        self.ctx = Context::new(self.client(), settings(), "herd-operator-test");
    }

    async fn status(&self) -> herd_k8s::InstanceStatus {
        self.instance().await.status.unwrap_or_default()
    }

    async fn restore_status(&self) -> herd_k8s::crd::RestoreStatus {
        self.status().await.restore.expect("status.restore")
    }

    async fn edit(&self, spec: serde_json::Value) {
        let api: Api<Instance> = Api::namespaced(self.client(), NS);
        api.patch(
            "lyon",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
    }

    async fn job(&self, name: &str) -> Option<Job> {
        let api: Api<Job> = Api::namespaced(self.client(), TENANT);
        api.get_opt(name).await.unwrap()
    }

    async fn job_names(&self) -> Vec<String> {
        let api: Api<Job> = Api::namespaced(self.client(), TENANT);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect()
    }

    async fn delete_job(&self, name: &str) {
        let api: Api<Job> = Api::namespaced(self.client(), TENANT);
        api.delete(name, &Default::default()).await.unwrap();
    }

    async fn secret(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let api: Api<Secret> = Api::namespaced(self.client(), TENANT);
        api.get_opt(name)
            .await
            .unwrap()
            .map(herd_k8s::reconcile::secret_strings)
    }

    /// Replicas of web, streaming and sidekiq.
    async fn app_replicas(&self) -> Vec<i32> {
        let api: Api<Deployment> = Api::namespaced(self.client(), TENANT);
        let mut out = Vec::new();
        for name in ["web", "streaming", "sidekiq"] {
            let d = api.get(name).await.unwrap();
            out.push(d.spec.unwrap().replicas.unwrap_or(1));
        }
        out
    }

    async fn cronjobs_suspended(&self) -> Vec<(String, bool)> {
        let api: Api<CronJob> = Api::namespaced(self.client(), TENANT);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| {
                (
                    c.metadata.name.unwrap_or_default(),
                    c.spec.unwrap().suspend == Some(true),
                )
            })
            .collect()
    }

    async fn job_status(&self, name: &str, status: serde_json::Value) {
        let api: Api<Job> = Api::namespaced(self.client(), TENANT);
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    }

    async fn succeed(&self, job: &str) {
        self.job_status(job, json!({ "succeeded": 1 })).await;
    }

    async fn fail(&self, job: &str) {
        self.job_status(
            job,
            json!({ "failed": 1, "conditions": [{
                "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }]}),
        )
        .await;
    }

    /// Plays the Job controller: Job `job`'s pod ended with container `container` (an
    /// init container when `init`) leaving `message`, and the Job `succeeded` or failed.
    async fn finished(&self, job: &str, container: &str, init: bool, message: &str, ok: bool) {
        let pods: Api<Pod> = Api::namespaced(self.client(), TENANT);
        let statuses = json!([{
            "name": container, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": if ok { 0 } else { 1 }, "message": message } },
        }]);
        let mut status = json!({ "phase": if ok { "Succeeded" } else { "Failed" } });
        status[if init {
            "initContainerStatuses"
        } else {
            "containerStatuses"
        }] = statuses;
        let pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("{job}-x1"), "namespace": TENANT, "labels": {
                "herd.dev/instance": "lyon", "batch.kubernetes.io/job-name": job,
                "app.kubernetes.io/component": "jobs",
            }},
            "spec": { "containers": [{ "name": container, "image": "i" }] },
            "status": status,
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        if ok {
            self.job_status(
                job,
                json!({ "succeeded": 1, "startTime": "2026-12-06T12:00:05Z", "completionTime": "2026-12-06T12:04:35Z" }),
            )
            .await;
        } else {
            self.fail(job).await;
        }
    }

    async fn data_ready(&self) {
        let api: Api<k8s_openapi::api::apps::v1::StatefulSet> =
            Api::namespaced(self.client(), TENANT);
        for set in api.list(&ListParams::default()).await.unwrap() {
            api.patch_status(
                set.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "replicas": 1, "readyReplicas": 1 } })),
            )
            .await
            .unwrap();
        }
    }

    async fn roll_out(&self) {
        let api: Api<Deployment> = Api::namespaced(self.client(), TENANT);
        for d in api.list(&ListParams::default()).await.unwrap() {
            let n = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            api.patch_status(
                d.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": {
                    "replicas": n, "readyReplicas": n, "updatedReplicas": n, "availableReplicas": n,
                    "observedGeneration": d.metadata.generation,
                }})),
            )
            .await
            .unwrap();
        }
    }

    async fn app_pod(&self, name: &str, component: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client(), TENANT);
        let pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": TENANT, "labels": {
                "herd.dev/instance": "lyon", "app.kubernetes.io/component": component,
            }},
            "spec": { "containers": [{ "name": "c", "image": "i" }] },
            "status": { "phase": "Running" },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }

    async fn delete_pod(&self, name: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client(), TENANT);
        pods.delete(name, &Default::default()).await.unwrap();
    }

    /// From nothing to a running v4.7.6.
    async fn install(&self) {
        self.ok().await;
        self.ok().await;
        self.data_ready().await;
        self.ok().await;
        self.succeed("db-prepare-v4-7-6").await;
        self.ok().await;
        self.succeed("create-owner").await;
        self.ok().await;
        self.roll_out().await;
        self.ok().await;
        assert_eq!(self.status().await.phase, Phase::Running);
    }

    /// Copies app secrets into the tenant's namespace, as the control plane does for a
    /// restore into a new tenant.
    async fn copy_app_secrets(&self) -> BTreeMap<String, String> {
        let data = AppSecrets::generate().data().clone();
        let api: Api<Secret> = Api::namespaced(self.client(), TENANT);
        let s: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "app-secrets", "namespace": TENANT },
            "stringData": data,
        }))
        .unwrap();
        api.create(&PostParams::default(), &s).await.unwrap();
        data
    }
}

fn env<'a>(job: &'a Job, container: &str, name: &str) -> Option<&'a str> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    let c = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .find(|c| c.name == container)?;
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .as_deref()
}

#[tokio::test]
async fn an_in_place_restore_stops_restores_migrates_then_starts_the_app() {
    let mut h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.app_pod("web-1", "web").await;
    h.app_pod("sidekiq-1", "sidekiq").await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;

    // 1. The app stops first; nothing is restored while a pod of it is left.
    h.ok().await;
    assert_eq!(h.app_replicas().await, [0, 0, 0]);
    let crons = h.cronjobs_suspended().await;
    assert!(
        !crons.is_empty() && crons.iter().all(|(_, s)| *s),
        "{crons:?}"
    );
    assert!(
        h.job("restore-r1").await.is_none(),
        "no restore while the app writes"
    );
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Restoring);
    let rs = s.restore.unwrap();
    assert_eq!(rs.step, RestoreStep::StoppingApp);
    assert!(rs.started_at.is_some());
    assert!(rs.message.unwrap().contains("2 pods left"));

    // 2. No pod left: the restore Job, with the app still stopped.
    h.delete_pod("web-1").await;
    h.delete_pod("sidekiq-1").await;
    h.ok().await;
    let job = h.job("restore-r1").await.expect("the restore Job");
    assert_eq!(env(&job, "restore", "PGHOST"), Some("postgres"));
    // As the app's login, never the superuser: what the dump holds runs as that.
    assert_eq!(env(&job, "restore", "PGUSER"), Some("mastodon_app"));
    assert_eq!(env(&job, "restore", "APP"), Some("mastodon"));
    assert_eq!(env(&job, "fetch", "MEDIA"), Some("volume"));
    assert!(
        h.job("restore-r1-migrate").await.is_none(),
        "migrations after"
    );
    assert_eq!(h.restore_status().await.step, RestoreStep::Restoring);
    assert_eq!(h.restore_status().await.message, None);
    h.ok().await;
    assert_eq!(h.app_replicas().await, [0, 0, 0], "held while it runs");

    // 3. Restored: the counts are reported, then the migrations run, app still stopped.
    h.finished("restore-r1", "restore", false, ROWS, true).await;
    h.ok().await;
    let rs = h.restore_status().await;
    assert_eq!(rs.step, RestoreStep::Migrating);
    assert_eq!(rs.source_rows["statuses"], 340);
    assert_eq!(rs.restored_rows["accounts"], 12);
    let migrate = h
        .job("restore-r1-migrate")
        .await
        .expect("the migration Job");
    let c = &migrate.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/mastodon/mastodon:v4.7.6"));
    assert_eq!(
        c.command.clone().unwrap(),
        ["bundle", "exec", "rails", "db:migrate"]
    );
    assert!(
        !c.env
            .iter()
            .flatten()
            .any(|e| e.name == "SKIP_POST_DEPLOYMENT_MIGRATIONS"),
        "pre and post together: the app is stopped"
    );
    assert_eq!(h.app_replicas().await, [0, 0, 0]);

    // 4. Migrated: the app starts again; the restore is done once it runs.
    h.succeed("restore-r1-migrate").await;
    h.ok().await;
    assert_eq!(h.app_replicas().await, [1, 1, 1]);
    assert!(h.cronjobs_suspended().await.iter().all(|(_, s)| !*s));
    assert_eq!(h.restore_status().await.step, RestoreStep::Starting);
    assert_eq!(h.status().await.phase, Phase::Restoring);
    h.roll_out().await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Running);
    let rs = s.restore.unwrap();
    assert_eq!(rs.step, RestoreStep::Succeeded);
    assert!(rs.finished_at.is_some());
    assert_eq!(rs.source, SOURCE);

    // Never twice: after an operator restart, with its Jobs expired and even its status
    // lost, the same id is not run again and the app keeps running.
    h.delete_job("restore-r1").await;
    h.delete_job("restore-r1-migrate").await;
    let api: Api<Instance> = Api::namespaced(h.client(), NS);
    api.patch_status(
        "lyon",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "restore": null } })),
    )
    .await
    .unwrap();
    h.restart();
    h.ok().await;
    h.ok().await;
    assert!(h.job("restore-r1").await.is_none(), "not run again");
    assert_eq!(h.app_replicas().await, [1, 1, 1]);
    assert_eq!(h.status().await.phase, Phase::Running);
}

#[tokio::test]
async fn a_failed_restore_says_why_and_leaves_the_app_stopped_until_told() {
    let mut h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    assert!(h.job("restore-r1").await.is_some());
    h.finished(
        "restore-r1",
        "fetch",
        true,
        "database.dump.001 does not match its checksum in the manifest; nothing was restored",
        false,
    )
    .await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    let rs = s.restore.unwrap();
    assert_eq!(rs.step, RestoreStep::Failed);
    assert!(rs.finished_at.is_some());
    let why = rs.message.unwrap();
    for says in [
        "database.dump.001 does not match its checksum",
        "kubectl logs -n herd-lyon job/restore-r1",
        "left stopped",
        "remove spec.restore",
    ] {
        assert!(why.contains(says), "{says}: {why}");
    }
    assert_eq!(s.last_error.as_deref(), Some(why.as_str()));
    assert!(
        h.job("restore-r1-migrate").await.is_none(),
        "no migration after a failure"
    );
    // Left stopped, and never run again, across an operator restart too.
    h.delete_job("restore-r1").await;
    h.restart();
    h.ok().await;
    h.ok().await;
    assert_eq!(h.app_replicas().await, [0, 0, 0]);
    assert!(
        h.job("restore-r1").await.is_none(),
        "the same id never runs twice"
    );
    assert_eq!(h.status().await.phase, Phase::Failed);

    // A new id is a new restore.
    h.edit(json!({ "restore": restore_spec("r2", SOURCE) }))
        .await;
    h.ok().await;
    assert!(h.job("restore-r2").await.is_some());
    assert_eq!(h.restore_status().await.id, "r2");
    assert_eq!(h.status().await.phase, Phase::Restoring);
    h.fail("restore-r2").await;
    h.ok().await;
    assert_eq!(h.status().await.phase, Phase::Failed);

    // The control plane removes spec.restore: the app starts on the database as it is.
    let api: Api<Instance> = Api::namespaced(h.client(), NS);
    api.patch(
        "lyon",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{ "op": "remove", "path": "/spec/restore" }])).unwrap(),
        ),
    )
    .await
    .unwrap();
    h.ok().await;
    assert_eq!(h.app_replicas().await, [1, 1, 1]);
    h.roll_out().await;
    h.ok().await;
    assert_eq!(h.status().await.phase, Phase::Running);
}

#[tokio::test]
async fn restored_rows_that_differ_from_the_backup_fail_the_restore() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    h.finished(
        "restore-r1",
        "restore",
        false,
        "source-rows accounts=12 statuses=340\nrestored-rows accounts=12 statuses=339\n",
        true,
    )
    .await;
    h.ok().await;
    let rs = h.restore_status().await;
    assert_eq!(rs.step, RestoreStep::Failed);
    assert!(
        rs.message
            .as_deref()
            .unwrap()
            .contains("statuses: 340 in the backup, 339 restored"),
        "{rs:?}"
    );
    assert!(h.job("restore-r1-migrate").await.is_none());
    assert_eq!(h.app_replicas().await, [0, 0, 0]);
}

#[tokio::test]
async fn the_restore_reads_the_source_only_through_get_urls() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    let urls = h.secret("restore-r1-urls").await.expect("the URL Secret");
    // The manifest, 64 pieces of the dump and 64 of the media archive; nothing else (no
    // sealed secrets: the namespace holds its own).
    assert_eq!(urls.len(), 129);
    assert!(urls.contains_key("manifest.txt") && urls.contains_key("media.tar.063"));
    for (name, url) in &urls {
        let url: url::Url = url.parse().unwrap();
        assert_eq!(
            url.path(),
            format!("/herd-backups/final/scheduled/keep-7d/lyon/20261206T021700Z/{name}"),
            "the source's directory, this object"
        );
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["X-Amz-Expires"], "21600", "valid six hours");
        assert!(!url.as_str().contains("pLaTfOrM"), "no secret key");
    }
    // GET, not PUT: the signature of a GET of this key with the test's key.
    let manifest: url::Url = urls["manifest.txt"].parse().unwrap();
    let now: jiff::Timestamp = jiff::civil::DateTime::strptime(
        "%Y%m%dT%H%M%SZ",
        manifest
            .query_pairs()
            .find(|(k, _)| k == "X-Amz-Date")
            .unwrap()
            .1
            .as_ref(),
    )
    .unwrap()
    .to_zoned(jiff::tz::TimeZone::UTC)
    .unwrap()
    .timestamp();
    let credentials = herd_k8s::presign::BackupCredentials {
        access_key_id: "AKIAPLATFORMBACKUPS1".into(),
        secret_access_key: "pLaTfOrM/SeCrEt".into(),
    };
    let target = settings().backup.unwrap();
    let dir = "final/scheduled/keep-7d/lyon/20261206T021700Z/";
    let names = vec!["manifest.txt".to_owned()];
    let valid = std::time::Duration::from_secs(21600);
    let get =
        herd_k8s::presign::download_urls(&target, &credentials, dir, &names, now, valid).unwrap();
    let put =
        herd_k8s::presign::upload_urls(&target, &credentials, dir, &names, now, valid).unwrap();
    assert_eq!(urls["manifest.txt"], get["manifest.txt"]);
    assert_ne!(urls["manifest.txt"], put["manifest.txt"]);
    // The Job stops before its URLs expire.
    let job = h.job("restore-r1").await.unwrap();
    let deadline = job.spec.unwrap().active_deadline_seconds.unwrap();
    assert!(deadline > 3600 && deadline < 21600, "{deadline}");
}

#[tokio::test]
async fn a_source_outside_the_prefix_or_a_barman_backup_is_refused_before_anything_stops() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    for (id, source, says) in [
        (
            "r1",
            "s3://herd-backups/elsewhere/lyon/x/",
            "not under the operator's backup prefix s3://herd-backups/final/",
        ),
        (
            "r2",
            "s3://other/final/lyon/x/",
            "not under the operator's backup prefix",
        ),
        (
            "r3",
            "s3://herd-backups/final/cnpg/lyon/ (barman backup 20261206T021700)",
            "CloudNativePG barman backup",
        ),
        ("r4", "s3://herd-backups/final/cnpg/lyon/", "CloudNativePG"),
        (
            "r5",
            "s3://herd-backups/final/paris/final-x/",
            "not one of this tenant's (lyon) backups",
        ),
        (
            "r6",
            "s3://herd-backups/final/imports/i1/",
            "ask for it as an import",
        ),
    ] {
        h.edit(json!({ "restore": restore_spec(id, source) })).await;
        h.ok().await;
        let rs = h.restore_status().await;
        assert_eq!((rs.id.as_str(), rs.step), (id, RestoreStep::Failed));
        let why = rs.message.unwrap();
        assert!(why.contains(says), "{id}: {why}");
        assert!(h.secret(&format!("restore-{id}-urls")).await.is_none());
        assert!(h.job(&format!("restore-{id}")).await.is_none());
        assert_eq!(h.app_replicas().await, [1, 1, 1], "{id}: the app runs on");
        // The tenant goes on as it was; the refusal stays in status.restore.
        h.ok().await;
        let s = h.status().await;
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(s.restore.unwrap().step, RestoreStep::Failed);
    }
}

/// A Mastodon tenant made from a backup: `spec.restore` from the start.
fn new_tenant(drill: bool) -> Instance {
    let mut i = common::lyon("community");
    let mut spec = restore_spec("r1", SOURCE);
    // What the control plane recorded of the backup (a drill needs it).
    spec.manifest_sha256 = Some("ab".repeat(32));
    i.spec.restore = Some(spec);
    i.spec.drill = drill;
    i
}

/// Runs a new tenant's restore to its end, checking it is never installed fresh.
async fn restore_new_tenant(h: &Harness) -> BTreeMap<String, String> {
    h.ok().await; // finalizer and decisions
    h.ok().await;
    // The namespace, for the control plane to copy the secrets into; nothing generated.
    assert!(h.cluster.namespaces().contains_key(TENANT));
    assert!(h.secret("app-secrets").await.is_none(), "never generated");
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Restoring);
    let why = s.restore.unwrap().message.unwrap();
    assert!(
        why.contains("waiting for Secret app-secrets in namespace herd-lyon"),
        "{why}"
    );
    h.ok().await;
    assert!(
        h.secret("app-secrets").await.is_none(),
        "still not generated"
    );

    let copied = h.copy_app_secrets().await;
    h.ok().await;
    assert!(
        h.job("restore-r1").await.is_none(),
        "PostgreSQL is not ready"
    );
    assert!(h
        .restore_status()
        .await
        .message
        .unwrap()
        .contains("waiting for PostgreSQL"));
    h.data_ready().await;
    h.ok().await;
    assert!(h.job("restore-r1").await.is_some());
    assert_eq!(h.app_replicas().await, [0, 0, 0]);
    h.finished("restore-r1", "restore", false, ROWS, true).await;
    h.ok().await;
    h.succeed("restore-r1-migrate").await;
    h.ok().await;
    assert_eq!(
        h.instance()
            .await
            .metadata
            .annotations
            .unwrap_or_default()
            .get("herd.dev/installed-version")
            .map(String::as_str),
        Some("v4.7.6"),
        "marked installed: never installed again"
    );
    h.roll_out().await;
    h.ok().await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.restore.unwrap().step, RestoreStep::Succeeded);
    let jobs = h.job_names().await;
    assert!(
        !jobs
            .iter()
            .any(|j| j.starts_with("db-prepare") || j == "create-owner"),
        "no fresh install: {jobs:?}"
    );
    assert!(h.secret("owner-password").await.is_none());
    assert_eq!(
        h.secret("app-secrets").await.unwrap(),
        copied,
        "the copied secrets, untouched"
    );
    copied
}

#[tokio::test]
async fn a_new_tenant_with_a_restore_waits_for_its_secrets_and_is_never_installed_fresh() {
    let h = harness_with(new_tenant(false)).await;
    restore_new_tenant(&h).await;
    // An ordinary tenant: served, backed up.
    let ingresses: Api<Ingress> = Api::namespaced(h.client(), TENANT);
    assert!(ingresses.get_opt("app").await.unwrap().is_some());
    assert!(h
        .cronjobs_suspended()
        .await
        .iter()
        .any(|(n, s)| n == "scheduled-backup" && !*s));
}

#[tokio::test]
async fn a_drill_without_the_manifest_checksum_is_refused() {
    let mut i = new_tenant(true);
    if let Some(r) = i.spec.restore.as_mut() {
        r.manifest_sha256 = None;
    }
    let h = harness_with(i).await;
    h.ok().await;
    h.ok().await;
    h.copy_app_secrets().await;
    h.ok().await;
    h.data_ready().await;
    h.ok().await;
    h.ok().await;
    assert!(h.job("restore-r1").await.is_none(), "nothing fetched");
    let s = h.restore_status().await;
    assert_eq!(s.step, RestoreStep::Failed);
    assert!(s.message.unwrap().contains("manifest checksum"));
}

#[tokio::test]
async fn a_drill_is_never_served_nor_backed_up_and_goes_without_a_final_backup() {
    let h = harness_with(new_tenant(true)).await;
    restore_new_tenant(&h).await;
    let replicas = h.app_replicas().await;
    assert_eq!(
        replicas[1..],
        [0, 0],
        "a scratch copy runs web only: no streaming, no sidekiq ({replicas:?})"
    );
    let ingresses: Api<Ingress> = Api::namespaced(h.client(), TENANT);
    let served = ingresses.list(&ListParams::default()).await.unwrap().items;
    assert!(served.is_empty(), "no ingress, so no certificate either");
    let crons = h.cronjobs_suspended().await;
    assert!(
        !crons.iter().any(|(n, _)| n == "scheduled-backup"),
        "{crons:?}"
    );
    assert!(h.secret("scheduled-backup-urls").await.is_none());
    assert!(h.secret("backup-sealed-secrets").await.is_none());
    assert!(!h.job_names().await.iter().any(|j| j.contains("backup")));

    // Deleted: the namespace goes at once, without a final backup.
    let mut i = h.instance().await;
    i.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-12-06T13:00:00Z".parse().unwrap(),
    ));
    operator::reconcile(Arc::new(i), h.ctx.clone())
        .await
        .unwrap();
    assert!(h.job("final-backup").await.is_none());
    assert_eq!(
        h.cluster.namespaces()[TENANT]["status"]["phase"],
        "Terminating"
    );
}

#[tokio::test]
async fn an_export_runs_once_while_the_app_runs_and_reports_its_manifest() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.edit(json!({ "export": { "id": "e1" } })).await;
    h.ok().await;
    let job = h.job("export-e1").await.expect("the export Job");
    assert_eq!(
        job.metadata.labels.clone().unwrap()["herd.dev/backup"],
        "export"
    );
    let header = env(&job, "upload", "MANIFEST_HEADER").unwrap();
    for says in [
        "export",
        "mastodon v4.7.6",
        "lyon.social",
        "not in this export",
    ] {
        assert!(header.contains(says), "{says}: {header}");
    }
    assert_eq!(env(&job, "upload", "MEDIA"), Some("volume"));
    let pod = serde_json::to_string(&job.spec.clone().unwrap().template).unwrap();
    assert!(
        !pod.contains("backup-sealed-secrets"),
        "no app secrets: {pod}"
    );
    let urls = h.secret("export-e1-urls").await.unwrap();
    assert!(!urls.contains_key("app-secrets.env.age"));
    for (name, url) in &urls {
        let url: url::Url = url.parse().unwrap();
        assert_eq!(
            url.path(),
            format!("/herd-backups/final/exports/lyon/e1/{name}")
        );
    }
    assert_eq!(h.app_replicas().await, [1, 1, 1], "the app runs");
    let x = h.status().await.export.unwrap();
    assert_eq!((x.id.as_str(), x.outcome), ("e1", BackupOutcome::Running));
    assert_eq!(h.status().await.phase, Phase::Running);

    let sha = "cd".repeat(32);
    let summary = format!("location s3://herd-backups/final/exports/lyon/e1/\nbytes database.dump 1048576\nbytes media.tar 2048\nobjects 2\nchecksums 2\nmanifest-sha256 {sha}\n");
    h.finished("export-e1", "upload", false, &summary, true)
        .await;
    h.ok().await;
    let x = h.status().await.export.unwrap();
    assert_eq!(x.outcome, BackupOutcome::Succeeded);
    assert_eq!(
        x.location.as_deref(),
        Some("s3://herd-backups/final/exports/lyon/e1/")
    );
    assert_eq!(x.size_bytes, Some(1_050_624));
    assert_eq!(x.checksum.as_deref(), Some(sha.as_str()));
    assert_eq!(x.finished_at.as_deref(), Some("2026-12-06T12:04:35Z"));
    assert_eq!(x.message, None);
    // A finished export is never run again.
    h.delete_job("export-e1").await;
    h.ok().await;
    assert!(h.job("export-e1").await.is_none());
    assert_eq!(
        h.status().await.export.unwrap().outcome,
        BackupOutcome::Succeeded
    );

    // One that uploaded without a verified manifest fails, saying so.
    h.edit(json!({ "export": { "id": "e2" } })).await;
    h.ok().await;
    h.finished(
        "export-e2",
        "upload",
        false,
        "location s3://herd-backups/final/exports/lyon/e2/\nbytes database.dump 10\nobjects 3\nchecksums 2\nmanifest-sha256 00\n",
        true,
    )
    .await;
    h.ok().await;
    let x = h.status().await.export.unwrap();
    assert_eq!((x.id.as_str(), x.outcome), ("e2", BackupOutcome::Failed));
    assert!(
        x.message.as_deref().unwrap().contains("not verified"),
        "{x:?}"
    );
    assert_eq!(h.status().await.phase, Phase::Running, "the tenant runs on");
}

#[tokio::test]
async fn an_export_with_a_recipient_carries_the_app_secrets_sealed_to_it_alone() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();

    // A recipient that is none fails the export at once, saying why: no Job.
    // The API server refuses what is not shaped like a recipient (the CRD's pattern).
    let api: Api<Instance> = Api::namespaced(h.client(), NS);
    let refused = api
        .patch(
            "lyon",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "export": { "id": "e0", "secretsRecipient": "age1nope\n# injected" } } })),
        )
        .await
        .expect_err("refused by the schema");
    assert!(
        matches!(&refused, kube::Error::Api(e) if e.code == 422),
        "{refused:?}"
    );
    // Shaped like one but none (its checksum is wrong): the operator fails the export at
    // once, saying why: no Job.
    let bogus = format!("age1{}", "q".repeat(58));
    h.edit(json!({ "export": { "id": "e0", "secretsRecipient": bogus } }))
        .await;
    h.ok().await;
    h.export_failed("e0", "not an age X25519 recipient").await;
    assert!(h.job("export-e0").await.is_none());

    h.edit(json!({ "export": { "id": "e3", "secretsRecipient": recipient } }))
        .await;
    h.ok().await;
    let job = h.job("export-e3").await.expect("the export Job");
    let header = env(&job, "upload", "MANIFEST_HEADER").unwrap();
    assert!(
        header.contains(&format!(
            "sealed with age to {recipient}, the recipient given"
        )),
        "{header}"
    );
    assert_eq!(env(&job, "upload", "SEALED"), Some("/sealed"));
    let pod = serde_json::to_string(&job.spec.clone().unwrap().template).unwrap();
    assert!(pod.contains("\"secretName\":\"export-e3-sealed\""), "{pod}");
    assert!(
        !pod.contains("backup-sealed-secrets"),
        "never the platform's sealed copy: {pod}"
    );
    let urls = h.secret("export-e3-urls").await.unwrap();
    assert!(urls.contains_key("app-secrets.env.age"), "{urls:?}");

    // What the Job uploads opens with the owner's identity, and only with it, to the
    // tenant's own secrets.
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let sealed = secrets.get("export-e3-sealed").await.unwrap().data.unwrap()
        ["app-secrets.env.age"]
        .0
        .clone();
    assert!(!String::from_utf8_lossy(&sealed).contains("SECRET_KEY_BASE"));
    let opened = String::from_utf8(age::decrypt(&identity, &sealed).unwrap()).unwrap();
    let app = h.secret("app-secrets").await.unwrap();
    let key_base = &app["SECRET_KEY_BASE"];
    assert!(
        opened.contains(&format!("SECRET_KEY_BASE={key_base}\n")),
        "the tenant's own secrets"
    );
    // Those the server needs elsewhere, never this tenant's database and Redis passwords.
    let mut names: Vec<&str> = opened
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    let mut portable = herd_k8s::secrets::PORTABLE.to_vec();
    names.sort_unstable();
    portable.sort_unstable();
    assert_eq!(names, portable);
    for password in ["DB_PASS", "DB_APP_PASS", "REDIS_PASSWORD"] {
        assert!(!opened.contains(&app[password]), "{password} stays home");
    }
    // Nor any secret in the Job.
    assert!(!pod.contains(key_base.as_str()));
    assert_eq!(
        h.status()
            .await
            .export
            .unwrap()
            .secrets_sealed_to
            .as_deref(),
        Some(recipient.as_str())
    );
    assert!(age::decrypt(&age::x25519::Identity::generate(), &sealed).is_err());

    // A Job that reports no sealed secrets is not verified.
    let sha = "ab".repeat(32);
    h.finished(
        "export-e3",
        "upload",
        false,
        &format!("location s3://herd-backups/final/exports/lyon/e3/\nbytes database.dump 1048576\nbytes media.tar 2048\nobjects 2\nchecksums 2\nmanifest-sha256 {sha}\n"),
        true,
    )
    .await;
    h.ok().await;
    h.export_failed("e3", "app-secrets.env.age is empty or missing")
        .await;
    // Ended: its URLs and its sealed copy are gone from the namespace.
    assert!(h.secret("export-e3-urls").await.is_none());
    assert!(h.secret("export-e3-sealed").await.is_none());

    // One that uploaded them succeeds; a later export without a recipient has none.
    h.edit(json!({ "export": { "id": "e4", "secretsRecipient": recipient } }))
        .await;
    h.ok().await;
    h.finished(
        "export-e4",
        "upload",
        false,
        &format!("location s3://herd-backups/final/exports/lyon/e4/\nbytes database.dump 1048576\nbytes media.tar 2048\nbytes app-secrets.env.age 300\nobjects 3\nchecksums 3\nmanifest-sha256 {sha}\n"),
        true,
    )
    .await;
    h.ok().await;
    let x = h.status().await.export.unwrap();
    assert_eq!(
        (x.id.as_str(), x.outcome),
        ("e4", BackupOutcome::Succeeded),
        "{x:?}"
    );
    assert_eq!(x.size_bytes, Some(1_048_576 + 2048 + 300));
    assert_eq!(x.secrets_sealed_to.as_deref(), Some(recipient.as_str()));

    h.edit(json!({ "export": { "id": "e5", "secretsRecipient": null } }))
        .await;
    h.ok().await;
    let job = h.job("export-e5").await.expect("the export Job");
    assert_eq!(env(&job, "upload", "SEALED"), Some(""));
    assert!(h.secret("export-e5-sealed").await.is_none());
    assert!(!h
        .secret("export-e5-urls")
        .await
        .unwrap()
        .contains_key("app-secrets.env.age"));
    assert_eq!(
        h.status().await.export.unwrap().secrets_sealed_to,
        None,
        "not e4's"
    );

    // A Job gone before it was seen to finish: failed, and its Secrets go with it.
    h.edit(json!({ "export": { "id": "e6", "secretsRecipient": recipient } }))
        .await;
    h.ok().await;
    assert!(h.secret("export-e6-sealed").await.is_some());
    h.delete_job("export-e6").await;
    h.ok().await;
    h.export_failed("e6", "gone before it was seen to finish")
        .await;
    assert!(h.secret("export-e6-sealed").await.is_none());
    assert!(h.secret("export-e6-urls").await.is_none());
}

// Deadlines, cancel and the scratch space's size (issue 12's known limits).

impl Harness {
    /// The operator reports export `id` failed, its message saying `says`.
    async fn export_failed(&self, id: &str, says: &str) {
        let x = self.status().await.export.unwrap();
        assert_eq!(
            (x.id.as_str(), x.outcome),
            (id, BackupOutcome::Failed),
            "{x:?}"
        );
        assert!(
            x.message.as_deref().unwrap_or_default().contains(says),
            "{says}: {x:?}"
        );
    }

    /// Plays the kubelet: the pod of restore `id`'s Job, its `fetch` init container
    /// downloading or, when `replacing`, done and its `restore` container running.
    async fn restore_pod(&self, id: &str, name: &str, replacing: bool) {
        let job = format!("restore-{id}");
        let metadata = json!({ "name": name, "namespace": TENANT, "labels": {
            "herd.dev/instance": "lyon", "batch.kubernetes.io/job-name": job,
            "app.kubernetes.io/component": "jobs", "herd.dev/restore": id,
        }});
        let (fetch, restore) = match replacing {
            true => (
                json!({ "terminated": { "exitCode": 0 } }),
                json!({ "running": { "startedAt": "2026-12-06T12:01:00Z" } }),
            ),
            false => (
                json!({ "running": { "startedAt": "2026-12-06T12:00:10Z" } }),
                json!({ "waiting": { "reason": "PodInitializing" } }),
            ),
        };
        let status = |name: &str, state: serde_json::Value| json!({ "name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": state });
        let pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": { "containers": [{ "name": "restore", "image": "i" }] },
            "status": {
                "phase": if replacing { "Running" } else { "Pending" },
                "initContainerStatuses": [status("fetch", fetch)],
                "containerStatuses": [status("restore", restore)],
            },
        }))
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(self.client(), TENANT);
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }

    async fn pod_names(&self) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.client(), TENANT);
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    }

    /// The operator's clock, `minutes` after now.
    fn later(&self, minutes: i64) {
        self.ctx.set_clock(
            jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_mins(minutes))
                .unwrap(),
        );
    }

    async fn cancel(&self, id: &str) {
        let mut spec = restore_spec(id, SOURCE);
        spec.cancel = true;
        self.edit(json!({ "restore": spec })).await;
    }
}

/// A backup that runs (for hours, on a large tenant) only reads: the restore does not wait
/// for its pod to stop, nor fail its deadline because of it.
#[tokio::test]
async fn a_running_backup_does_not_hold_up_the_restore() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    let pods: Api<Pod> = Api::namespaced(h.client(), TENANT);
    let pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "backup-1", "namespace": TENANT, "labels": {
            "herd.dev/instance": "lyon", "app.kubernetes.io/component": "jobs",
            "herd.dev/backup": "scheduled",
        }},
        "spec": { "containers": [{ "name": "c", "image": "i" }] },
        "status": { "phase": "Running" },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // Its Job, and one that ended before the restore.
    let jobs: Api<Job> = Api::namespaced(h.client(), TENANT);
    for name in ["backup-1", "backup-0"] {
        let job = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": { "name": name, "namespace": TENANT, "labels": {
                "herd.dev/instance": "lyon", "app.kubernetes.io/component": "jobs",
                "herd.dev/backup": "scheduled",
            }},
            "spec": { "template": { "spec": {
                "restartPolicy": "Never", "containers": [{ "name": "c", "image": "i" }],
            }}},
        }))
        .unwrap();
        jobs.create(&PostParams::default(), &job).await.unwrap();
    }
    h.succeed("backup-0").await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    h.ok().await;
    assert!(h.job("restore-r1").await.is_some(), "the restore Job runs");
    assert_eq!(h.restore_status().await.step, RestoreStep::Restoring);
    // What the running backup archives from now on may mix both: never a restore point.
    let during = |job: Job| job.annotations().get(DURING_RESTORE_ANNOTATION).cloned();
    assert_eq!(
        during(h.job("backup-1").await.unwrap()).as_deref(),
        Some("r1")
    );
    assert_eq!(
        during(h.job("backup-0").await.unwrap()),
        None,
        "it had ended"
    );
}

#[tokio::test]
async fn an_app_that_does_not_stop_within_the_limit_fails_the_restore_and_stays_held() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.app_pod("web-1", "web").await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    h.later(29);
    h.ok().await;
    assert_eq!(h.restore_status().await.step, RestoreStep::StoppingApp);

    h.later(31);
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    let rs = s.restore.unwrap();
    assert_eq!(rs.step, RestoreStep::Failed);
    let why = rs.message.unwrap();
    for says in [
        "did not stop within 30 minutes",
        "1 of its pods are left",
        "kubectl -n herd-lyon get pods -l",
        "describe pod",
        "Nothing was restored",
        "remove spec.restore",
    ] {
        assert!(why.contains(says), "{says}: {why}");
    }
    assert!(h.job("restore-r1").await.is_none(), "no restore Job");
    // Held, as after any failed restore, even once the pod is gone.
    h.delete_pod("web-1").await;
    h.ok().await;
    h.ok().await;
    assert_eq!(h.app_replicas().await, [0, 0, 0]);
    assert!(h.job("restore-r1").await.is_none());
    assert_eq!(h.status().await.phase, Phase::Failed);
}

#[tokio::test]
async fn a_new_tenant_whose_secrets_never_come_fails_its_restore_after_the_limit() {
    let h = harness_with(new_tenant(false)).await;
    h.ok().await;
    h.ok().await;
    assert!(h
        .restore_status()
        .await
        .message
        .unwrap()
        .contains("waiting for Secret app-secrets"));
    h.later(31);
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    let why = s.restore.unwrap().message.unwrap();
    for says in [
        "did not reach namespace herd-lyon within 30 minutes",
        "kubectl -n herd-lyon get secret app-secrets",
        "Nothing was restored",
    ] {
        assert!(why.contains(says), "{says}: {why}");
    }
    // Held: never installed fresh, nothing generated.
    h.ok().await;
    h.ok().await;
    assert!(h.secret("app-secrets").await.is_none());
    assert!(h.job_names().await.is_empty(), "{:?}", h.job_names().await);
}

#[tokio::test]
async fn a_database_that_never_gets_ready_fails_the_restore_after_the_limit() {
    let h = harness_with(new_tenant(false)).await;
    h.ok().await;
    h.ok().await;
    h.copy_app_secrets().await;
    h.ok().await;
    assert!(h
        .restore_status()
        .await
        .message
        .unwrap()
        .contains("waiting for PostgreSQL"));
    h.later(31);
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    let why = s.restore.unwrap().message.unwrap();
    for says in [
        "PostgreSQL did not accept connections within 30 minutes",
        "kubectl -n herd-lyon get pods,pvc",
        "Nothing was restored",
    ] {
        assert!(why.contains(says), "{says}: {why}");
    }
    h.data_ready().await;
    h.ok().await;
    assert!(h.job_names().await.is_empty(), "{:?}", h.job_names().await);
    assert_eq!(h.app_replicas().await, [0, 0, 0]);
}

#[tokio::test]
async fn a_restore_cancelled_before_its_job_starts_the_app_again() {
    let mut h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.app_pod("web-1", "web").await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    assert_eq!(h.app_replicas().await, [0, 0, 0]);
    h.cancel("r1").await;
    h.ok().await;
    let rs = h.restore_status().await;
    assert_eq!(rs.step, RestoreStep::Cancelled);
    assert!(rs.finished_at.is_some());
    assert!(
        rs.message.unwrap().contains("database as it was"),
        "says so"
    );
    assert!(h.job("restore-r1").await.is_none(), "no restore Job");
    h.ok().await;
    assert_eq!(h.app_replicas().await, [1, 1, 1]);
    assert!(h.cronjobs_suspended().await.iter().all(|(_, s)| !*s));
    h.roll_out().await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.restore.unwrap().step, RestoreStep::Cancelled);
    // Never run again, across a restart and without its status.
    h.restart();
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    assert!(h.job("restore-r1").await.is_none());
    assert_eq!(h.app_replicas().await, [1, 1, 1]);
}

/// A restore pod the kubelet is slow to stop.
const HELD_POD: &str = "restore-r1-held";

#[tokio::test]
async fn a_restore_cancelled_while_its_job_downloads_deletes_it_and_starts_the_app_after() {
    // The kubelet takes its time with one pod: deleting it leaves it there, for now.
    use kube_fake_client::interceptor::Funcs;
    let held = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let holding = held.clone();
    let cluster =
        fake_cluster::start_with(|b| {
            b.with_resource::<Instance>()
                .with_interceptor_funcs(Funcs::new().delete(move |c| {
                    Ok((c.name == HELD_POD && holding.load(std::sync::atomic::Ordering::SeqCst))
                    .then(|| json!({ "kind": "Status", "apiVersion": "v1", "status": "Success" })))
                }))
        })
        .await;
    let h = harness_on(cluster, common::lyon("community")).await;
    h.install().await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    assert!(h.job("restore-r1").await.is_some());
    assert!(h.secret("restore-r1-urls").await.is_some());
    h.restore_pod("r1", "restore-r1-a", false).await;
    h.restore_pod("r1", HELD_POD, false).await;
    h.cancel("r1").await;
    h.ok().await;
    assert!(h.job("restore-r1").await.is_none(), "the Job deleted");
    let pods = h.pod_names().await;
    assert!(!pods.contains(&"restore-r1-a".to_owned()), "{pods:?}");
    // One pod still going: the app waits.
    let rs = h.restore_status().await;
    assert_eq!(rs.step, RestoreStep::Restoring);
    assert!(rs
        .message
        .unwrap()
        .contains("waiting for the restore's 1 pods to go"));
    h.ok().await;
    assert_eq!(h.app_replicas().await, [0, 0, 0], "not while a pod is left");

    held.store(false, std::sync::atomic::Ordering::SeqCst);
    h.delete_pod(HELD_POD).await;
    h.ok().await;
    assert_eq!(h.restore_status().await.step, RestoreStep::Cancelled);
    assert!(h.secret("restore-r1-urls").await.is_none(), "its URLs gone");
    h.ok().await;
    assert_eq!(h.app_replicas().await, [1, 1, 1]);
    assert!(h.job("restore-r1-migrate").await.is_none());
}

#[tokio::test]
async fn a_cancel_once_the_database_is_being_replaced_is_too_late() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    h.restore_pod("r1", "restore-r1-a", true).await;
    h.cancel("r1").await;
    h.ok().await;
    assert!(h.job("restore-r1").await.is_some(), "not deleted");
    assert!(h.pod_names().await.contains(&"restore-r1-a".to_owned()));
    let rs = h.restore_status().await;
    assert_eq!(rs.step, RestoreStep::Restoring);
    assert!(rs.message.unwrap().contains("too late"));
    assert_eq!(h.app_replicas().await, [0, 0, 0]);
    // It goes on: migrations, still asked to cancel, and then the app.
    h.finished("restore-r1", "restore", false, ROWS, true).await;
    h.ok().await;
    let rs = h.restore_status().await;
    assert_eq!(rs.step, RestoreStep::Migrating);
    assert!(h.job("restore-r1-migrate").await.is_some());
    h.ok().await;
    let rs = h.restore_status().await;
    assert_eq!(rs.step, RestoreStep::Migrating);
    assert!(rs.message.unwrap().contains("too late"));
    h.succeed("restore-r1-migrate").await;
    h.ok().await;
    h.roll_out().await;
    h.ok().await;
    assert_eq!(h.restore_status().await.step, RestoreStep::Succeeded);
}

#[tokio::test]
async fn a_cancel_after_a_pod_of_the_restore_vanished_unseen_is_too_late() {
    for status in [
        // Counted by the Job controller, the Job not failed yet.
        json!({ "failed": 1, "active": 0 }),
        // Still being counted: the pod's finalizer removed, the count not yet moved.
        json!({ "uncountedTerminatedPods": { "failed": ["5f0c1a9e-0000-4000-8000-000000000001"] } }),
    ] {
        let h = harness_with(common::lyon("community")).await;
        h.install().await;
        h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
            .await;
        h.ok().await;
        // Its pod replaced the database, then went (evicted, drained) before the operator
        // saw its restore container: no pod is left to read.
        h.job_status("restore-r1", status.clone()).await;
        assert!(h.pod_names().await.is_empty());
        h.cancel("r1").await;
        h.ok().await;
        assert!(h.job("restore-r1").await.is_some(), "{status}: not deleted");
        let rs = h.restore_status().await;
        assert_eq!(rs.step, RestoreStep::Restoring, "{status}: not cancelled");
        let message = rs.message.unwrap();
        assert!(
            message.contains("too late") && message.contains("ended"),
            "{message}"
        );
        assert_eq!(h.app_replicas().await, [0, 0, 0], "the app stays stopped");
        // The Job then fails as it does: the restore fails, holding the app.
        h.fail("restore-r1").await;
        h.ok().await;
        assert_eq!(h.restore_status().await.step, RestoreStep::Failed);
        h.ok().await;
        assert_eq!(h.app_replicas().await, [0, 0, 0]);
    }
}

#[tokio::test]
async fn a_new_tenant_whose_restore_is_cancelled_stays_held_and_is_never_installed() {
    let h = harness_with(new_tenant(false)).await;
    h.ok().await;
    h.ok().await;
    h.cancel("r1").await;
    h.ok().await;
    assert_eq!(h.restore_status().await.step, RestoreStep::Cancelled);
    h.ok().await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    assert!(s.last_error.unwrap().contains("delete it"));
    assert!(h.secret("app-secrets").await.is_none(), "never generated");
    assert!(h.job_names().await.is_empty());
}

fn scratch(job: &Job) -> (String, Vec<String>, String) {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let volume = |name: &str| {
        pod.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .and_then(|v| v.empty_dir.as_ref())
            .and_then(|e| e.size_limit.as_ref())
            .map(|q| q.0.clone())
            .unwrap_or_default()
    };
    let requests = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .map(|c| {
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("ephemeral-storage"))
                .map(|q| q.0.clone())
                .unwrap_or_default()
        })
        .collect();
    (volume("scratch"), requests, volume("tmp"))
}

#[tokio::test]
async fn the_scratch_space_is_bounded_by_the_backup_size_or_else_the_volumes() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    let mut spec = restore_spec("r1", SOURCE);
    spec.size_bytes = Some(2 << 30);
    h.edit(json!({ "restore": spec })).await;
    h.ok().await;
    let (limit, requests, tmp) = scratch(&h.job("restore-r1").await.unwrap());
    // Six times the backup, and a GiB.
    assert_eq!(limit, "13312Mi");
    // A cap, not a reservation: the recorded size counts the media archive too, and six
    // times a large tenant's would fit no node.
    assert_eq!(requests, ["", ""]);
    assert_eq!(tmp, "256Mi");

    // Unknown size: twice the database volume and the media volume, and a GiB.
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.edit(json!({ "restore": restore_spec("r2", SOURCE) }))
        .await;
    h.ok().await;
    let sizing = h.instance().await.spec.sizing;
    let gib = |q: &str| q.strip_suffix("Gi").unwrap().parse::<u64>().unwrap();
    let want = format!(
        "{}Mi",
        (2 * gib(&sizing.database_storage) + gib(&sizing.media_storage) + 1) * 1024
    );
    let (limit, requests, _) = scratch(&h.job("restore-r2").await.unwrap());
    assert_eq!(limit, want);
    assert_eq!(requests, ["", ""]);

    // A backup bigger than that: the pod is evicted, and the restore says why.
    let pods: Api<Pod> = Api::namespaced(h.client(), TENANT);
    let pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "restore-r2-x1", "namespace": TENANT, "labels": {
            "herd.dev/instance": "lyon", "batch.kubernetes.io/job-name": "restore-r2",
            "app.kubernetes.io/component": "jobs", "herd.dev/restore": "r2",
        }},
        "spec": { "containers": [{ "name": "restore", "image": "i" }] },
        "status": { "phase": "Failed", "reason": "Evicted",
            "message": "Usage of EmptyDir volume \"scratch\" exceeds the limit \"47Gi\". " },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    h.fail("restore-r2").await;
    h.ok().await;
    let rs = h.restore_status().await;
    assert_eq!(rs.step, RestoreStep::Failed);
    let why = rs.message.unwrap();
    for says in [
        "exceeds the limit",
        "did not fit in the scratch space",
        "describe job/restore-r2",
    ] {
        assert!(why.contains(says), "{says}: {why}");
    }
}

#[tokio::test]
async fn a_restore_container_that_starts_while_the_cancel_deletes_fails_the_restore() {
    // The kubelet starts the pod's restore container between the cancel's first look at
    // the restore's pods and its second, after the deletions: the second list shows it.
    use kube_fake_client::interceptor::Funcs;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let lists = Arc::new(AtomicUsize::new(0));
    let seen = lists.clone();
    let started = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "restore-r1-a", "namespace": TENANT, "labels": {
            "herd.dev/instance": "lyon", "batch.kubernetes.io/job-name": "restore-r1",
            "app.kubernetes.io/component": "jobs", "herd.dev/restore": "r1" },
            "deletionTimestamp": "2026-12-06T12:01:01Z" },
        "spec": { "containers": [{ "name": "restore", "image": "i" }] },
        "status": { "phase": "Running", "containerStatuses": [{
            "name": "restore", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "running": { "startedAt": "2026-12-06T12:01:00Z" } } }] },
    });
    let cluster = fake_cluster::start_with(move |b| {
        b.with_resource::<Instance>()
            .with_interceptor_funcs(Funcs::new().list(move |c| {
                let restore_pods = c
                    .params
                    .label_selector
                    .as_deref()
                    .is_some_and(|l| l == "herd.dev/restore=r1");
                // The cancel's second list of the restore's pods.
                Ok((restore_pods && seen.fetch_add(1, Ordering::SeqCst) == 1)
                    .then(|| vec![started.clone()]))
            }))
    })
    .await;
    let h = harness_on(cluster, common::lyon("community")).await;
    h.install().await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    h.restore_pod("r1", "restore-r1-a", false).await;
    lists.store(0, Ordering::SeqCst);
    h.cancel("r1").await;
    h.ok().await;
    assert!(lists.load(Ordering::SeqCst) >= 2, "listed twice");
    let s = h.status().await;
    let rs = s.restore.unwrap();
    assert_eq!(rs.step, RestoreStep::Failed, "{:?}", rs.message);
    assert!(rs.message.unwrap().contains("raced the restore"));
    assert_eq!(s.phase, Phase::Failed);
    h.ok().await;
    assert_eq!(h.app_replicas().await, [0, 0, 0], "held");
}

#[tokio::test]
async fn a_cancel_that_races_the_replay_fails_the_restore_and_holds_the_app() {
    let h = harness_with(common::lyon("community")).await;
    h.install().await;
    h.edit(json!({ "restore": restore_spec("r1", SOURCE) }))
        .await;
    h.ok().await;
    h.cancel("r1").await;
    // The Job deleted by the cancel; its pod then seen with its restore container started.
    h.delete_job("restore-r1").await;
    h.restore_pod("r1", "restore-r1-a", true).await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    let rs = s.restore.unwrap();
    assert_eq!(rs.step, RestoreStep::Failed);
    assert!(rs.message.unwrap().contains("raced the restore"));
    assert!(h.job("restore-r1").await.is_none(), "not run again");
    h.ok().await;
    assert!(h.job("restore-r1").await.is_none());
    assert_eq!(h.app_replicas().await, [0, 0, 0], "held");
}
