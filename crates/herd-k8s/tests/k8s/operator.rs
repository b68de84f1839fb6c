//! The operator's reconcile against an in-memory Kubernetes API (kube-fake-client): install
//! order, no-op reconciles, upgrades, suspension, deletion and API errors. The fake runs no
//! controllers, so the tests play the cluster's part: they mark Jobs finished and
//! Deployments rolled out, then reconcile again.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use herd_k8s::crd::{App, Instance, Phase};
use herd_k8s::lease::LeaderElector;
use herd_k8s::operator::{self, Context, OperatorError, Settings};
use herd_k8s::reconcile::take_owner_password;
use herd_k8s::render::backup::BackupTarget;
use herd_k8s::render::ClusterSettings;
use herd_testkit::fake_cluster::{self, FakeCluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const NS: &str = "herd-system";
pub(crate) const TENANT: &str = "herd-lyon";

pub(crate) struct Harness {
    pub(crate) cluster: FakeCluster,
    ctx: Arc<Context>,
}

fn settings(backup: bool) -> Settings {
    Settings {
        cluster: ClusterSettings::default(),
        namespace: NS.into(),
        backup: backup.then(|| BackupTarget {
            bucket: "herd-backups".into(),
            endpoint: "https://s3.example.net".into(),
            prefix: "final/".into(),
            region: "us-east-1".into(),
            secrets_recipient: crate::common::BACKUP_RECIPIENT.into(),
        }),
        backup_credentials_secret: "herd-backup-credentials".into(),
    }
}

/// An Instance with an (empty) status, which makes kube-fake-client treat `status` as a
/// subresource, as the CRD declares it.
fn with_status(mut i: Instance) -> Instance {
    i.status = Some(Default::default());
    i
}

pub(crate) async fn harness_with(instance: Instance, backup: bool) -> Harness {
    let cluster = fake_cluster::start_with(|b| b.with_resource::<Instance>()).await;
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), NS);
    api.create(&PostParams::default(), &with_status(instance))
        .await
        .unwrap();
    let ctx = Context::new(
        cluster.client.clone(),
        settings(backup),
        "herd-operator-test",
    );
    let h = Harness { cluster, ctx };
    if backup {
        backup_credentials(&h).await;
    }
    h
}

pub(crate) async fn harness() -> Harness {
    harness_with(common::lyon("community"), true).await
}

impl Harness {
    pub(crate) fn client(&self) -> kube::Client {
        self.cluster.client.clone()
    }

    pub(crate) async fn instance(&self) -> Instance {
        let api: Api<Instance> = Api::namespaced(self.client(), NS);
        api.get("lyon").await.unwrap()
    }

    pub(crate) async fn reconcile(&self) -> Result<Action, OperatorError> {
        operator::reconcile(Arc::new(self.instance().await), self.ctx.clone()).await
    }

    pub(crate) async fn ok(&self) {
        self.reconcile().await.unwrap();
    }

    /// Sets the time the operator sees.
    pub(crate) fn set_clock(&self, at: jiff::Timestamp) {
        self.ctx.set_clock(at);
    }

    /// One reconcile by an operator started with other cluster settings.
    async fn reconcile_on(&self, cluster: ClusterSettings) {
        let ctx = Context::new(
            self.client(),
            Settings {
                cluster,
                ..settings(true)
            },
            "herd-operator-test",
        );
        operator::reconcile(Arc::new(self.instance().await), ctx)
            .await
            .unwrap();
    }

    pub(crate) async fn status(&self) -> herd_k8s::InstanceStatus {
        self.instance().await.status.unwrap_or_default()
    }

    pub(crate) async fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let mut spec = json!({});
        f(&mut spec);
        let api: Api<Instance> = Api::namespaced(self.client(), NS);
        api.patch(
            "lyon",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
    }

    pub(crate) async fn job(&self, name: &str) -> Option<Job> {
        let api: Api<Job> = Api::namespaced(self.client(), TENANT);
        api.get_opt(name).await.unwrap()
    }

    async fn deployment(&self, name: &str) -> Option<Deployment> {
        let api: Api<Deployment> = Api::namespaced(self.client(), TENANT);
        api.get_opt(name).await.unwrap()
    }

    async fn web_image(&self) -> String {
        let d = self.deployment("web").await.unwrap();
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap()
    }

    async fn job_status(&self, name: &str, status: serde_json::Value) {
        let api: Api<Job> = Api::namespaced(self.client(), TENANT);
        assert!(self.job(name).await.is_some(), "Job {name} exists");
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    }

    pub(crate) async fn succeed(&self, job: &str) {
        self.job_status(job, json!({ "succeeded": 1 })).await;
    }

    pub(crate) async fn fail(&self, job: &str) {
        self.job_status(
            job,
            json!({ "failed": 3, "conditions": [{
                "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit",
            }]}),
        )
        .await;
    }

    /// Plays the Job controller for backup Job `job`: its pod uploaded what it reports
    /// in its termination message (`summary`), and the Job succeeded.
    async fn backup_reported(&self, job: &str, summary: &str) {
        let kind = self.job(job).await.unwrap().metadata.labels.unwrap()["herd.dev/backup"].clone();
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client(), TENANT);
        let pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("{job}-x1"), "namespace": TENANT, "labels": {
                "herd.dev/instance": "lyon", "herd.dev/backup": kind,
                "batch.kubernetes.io/job-name": job, "app.kubernetes.io/component": "jobs",
            }},
            "spec": { "containers": [{ "name": "upload", "image": "curl" }] },
            "status": { "phase": "Succeeded", "containerStatuses": [{
                "name": "upload", "image": "curl", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 0, "message": summary } },
            }]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        self.job_status(
            job,
            json!({ "succeeded": 1, "startTime": "2026-12-08T02:17:05Z", "completionTime": "2026-12-08T02:19:35Z" }),
        )
        .await;
    }

    /// The backup before the upgrade to `version` is taken and verified.
    async fn backed_up_before(&self, version: &str) {
        let job = format!("backup-before-{}", version.replace('.', "-"));
        self.backup_reported(&job, &verified_summary(&job)).await;
    }

    /// Plays the StatefulSet controller: PostgreSQL and Redis are ready.
    pub(crate) async fn data_ready(&self) {
        let api: Api<k8s_openapi::api::apps::v1::StatefulSet> =
            Api::namespaced(self.client(), TENANT);
        for set in api.list(&ListParams::default()).await.unwrap() {
            let n = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            // The controller has seen the StatefulSet as it is now.
            let seen = set.metadata.generation;
            api.patch_status(
                set.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &Patch::Merge(
                    json!({ "status": { "replicas": n, "readyReplicas": n, "observedGeneration": seen } }),
                ),
            )
            .await
            .unwrap();
        }
    }

    /// Plays the Deployment controller: every replica of every Deployment is updated and
    /// ready.
    pub(crate) async fn roll_out(&self) {
        self.roll_out_with(|n| json!({ "replicas": n, "readyReplicas": n, "updatedReplicas": n, "availableReplicas": n }))
            .await;
    }

    /// Plays the Deployment controller with the replica counts `counts` gives for each
    /// Deployment's desired replicas (the spec seen: `observedGeneration` current).
    async fn roll_out_with(&self, counts: impl Fn(i32) -> serde_json::Value) {
        let api: Api<Deployment> = Api::namespaced(self.client(), TENANT);
        for d in api.list(&ListParams::default()).await.unwrap() {
            let n = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let mut status = counts(n);
            status["observedGeneration"] = json!(d.metadata.generation);
            let status = json!({ "status": status });
            api.patch_status(
                d.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
            .unwrap();
        }
    }

    /// From nothing to a running v4.7.6, in Mastodon's install order.
    pub(crate) async fn install(&self) {
        self.ok().await; // finalizer
        self.ok().await; // the data services start
        self.data_ready().await;
        self.ok().await; // database preparation
        self.succeed("db-prepare-v4-7-6").await;
        self.ok().await; // owner
        self.succeed("create-owner").await;
        self.ok().await; // app
        self.roll_out().await;
        self.ok().await;
        assert_eq!(self.status().await.phase, Phase::Running);
    }
}

/// What a backup Job that uploaded a dump and the sealed secrets reports.
fn verified_summary(job: &str) -> String {
    format!(
        "location s3://herd-backups/final/lyon/{job}/\nbytes database.dump 1048576\nbytes app-secrets.env.age 700\nobjects 2\nchecksums 2\nmanifest-sha256 {}\n",
        "ab".repeat(32)
    )
}

/// The reason of a status condition.
pub(crate) fn condition(s: &herd_k8s::InstanceStatus, type_: &str) -> String {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn install_runs_in_order_and_then_writes_nothing() {
    let h = harness().await;
    h.ok().await;
    assert!(
        h.instance()
            .await
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&operator::FINALIZER.to_owned()),
        "the first reconcile adds the finalizer"
    );

    // Step 1: PostgreSQL and Redis start; the database is prepared once both answer, and
    // before anything of the app starts.
    h.ok().await;
    assert!(
        h.job("db-prepare-v4-7-6").await.is_none(),
        "db:prepare waits for PostgreSQL and Redis"
    );
    assert_eq!(condition(&h.status().await, "Database"), "Starting");
    h.ok().await;
    assert!(h.job("db-prepare-v4-7-6").await.is_none());
    h.data_ready().await;
    h.ok().await;
    assert!(h.job("db-prepare-v4-7-6").await.is_some());
    assert!(h.job("create-owner").await.is_none());
    assert!(
        h.deployment("web").await.is_none(),
        "web waits for the database"
    );
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Provisioning);
    assert_eq!(s.running_version, None);

    // The next reconcile sees the Job running (the status says so); after that, nothing
    // changes while it runs and a reconcile writes nothing.
    h.ok().await;
    assert_eq!(condition(&h.status().await, "Migrations"), "Running");
    let before = h.cluster.writes();
    h.ok().await;
    assert_eq!(h.cluster.writes(), before, "no writes while waiting");

    // Step 2: the owner, with a one-time password made for it.
    h.succeed("db-prepare-v4-7-6").await;
    h.ok().await;
    let owner = h.job("create-owner").await.unwrap();
    let env = serde_json::to_string(&owner.spec.unwrap().template).unwrap();
    assert!(env.contains("owner-password"), "{env}");
    assert!(
        h.deployment("web").await.is_none(),
        "web waits for the owner"
    );
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    assert!(secrets.get_opt("owner-password").await.unwrap().is_some());

    // Step 3: the app starts; it runs once every Deployment is rolled out.
    h.succeed("create-owner").await;
    h.ok().await;
    for d in ["web", "streaming", "sidekiq"] {
        assert!(h.deployment(d).await.is_some(), "{d}");
    }
    assert_eq!(h.status().await.phase, Phase::Provisioning);
    h.roll_out().await;
    h.ok().await;
    // Recording the installed version on the Instance (an annotation) moves its
    // generation in kube-fake-client (an API server leaves it for metadata changes): the
    // next pass observes it.
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.running_version.as_deref(), Some("v4.7.6"));
    assert_eq!(s.url.as_deref(), Some("https://lyon.social"));
    assert_eq!(
        s.observed_generation,
        h.instance().await.metadata.generation
    );
    assert_eq!(condition(&s, "Ingress"), "Pending");

    // The ingress controller gives the Ingress an address.
    let ingress: Api<Ingress> = Api::namespaced(h.client(), TENANT);
    ingress
        .patch_status(
            "app",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "203.0.113.7" }] } } }),
            ),
        )
        .await
        .unwrap();
    h.ok().await;
    assert_eq!(condition(&h.status().await, "Ingress"), "Ready");

    // An unchanged Instance: zero writes, status included.
    let before = h.cluster.writes();
    h.ok().await;
    h.ok().await;
    assert_eq!(
        h.cluster.writes(),
        before,
        "a no-op reconcile writes nothing"
    );

    // The control plane reads the owner's password once.
    let password = take_owner_password(&h.client(), "lyon")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(password.len(), 32);
    assert!(password.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        take_owner_password(&h.client(), "lyon").await.unwrap(),
        None
    );
    // …and the operator does not make a new one for an installed tenant.
    h.ok().await;
    assert!(secrets.get_opt("owner-password").await.unwrap().is_none());
}

#[tokio::test]
async fn an_upgrade_runs_each_step_only_after_the_previous_one() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["version"] = json!("v4.8.0")).await;

    // A backup of the database first; nothing else moves until it is verified.
    h.ok().await;
    assert!(h.job("backup-before-v4-8-0").await.is_some());
    assert!(h.job("migrate-pre-v4-8-0").await.is_none());
    assert_eq!(h.status().await.phase, Phase::Upgrading);
    h.backed_up_before("v4.8.0").await;

    // Pre-deployment migrations with the new image; the app stays on the old one.
    h.ok().await;
    let pre = h.job("migrate-pre-v4-8-0").await.unwrap();
    let pre_json = serde_json::to_string(&pre.spec.unwrap().template).unwrap();
    assert!(pre_json.contains("mastodon:v4.8.0"));
    assert!(pre_json.contains("SKIP_POST_DEPLOYMENT_MIGRATIONS"));
    assert!(h.web_image().await.ends_with(":v4.7.6"));
    assert!(h.job("migrate-post-v4-8-0").await.is_none());
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Upgrading);
    assert_eq!(s.running_version.as_deref(), Some("v4.7.6"));

    // Roll: the Deployments move to the new image; no post-deployment migration yet.
    h.succeed("migrate-pre-v4-8-0").await;
    h.ok().await;
    assert!(h.web_image().await.ends_with(":v4.8.0"));
    assert!(
        h.job("migrate-post-v4-8-0").await.is_none(),
        "post-deployment migrations wait for the roll-out"
    );
    h.ok().await;
    assert!(h.job("migrate-post-v4-8-0").await.is_none());

    // Every new pod is up, but an old one still serves the old version: not rolled out
    // (as `kubectl rollout status` says "1 old replicas are pending termination").
    h.roll_out_with(|n| json!({ "replicas": n + 1, "updatedReplicas": n, "readyReplicas": n + 1, "availableReplicas": n + 1 }))
        .await;
    h.ok().await;
    assert!(
        h.job("migrate-post-v4-8-0").await.is_none(),
        "never while old pods serve"
    );
    // New pods ready but not yet available.
    h.roll_out_with(|n| json!({ "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n - 1 }))
        .await;
    h.ok().await;
    assert!(h.job("migrate-post-v4-8-0").await.is_none());

    // Post-deployment migrations once every replica runs the new version.
    h.roll_out().await;
    h.ok().await;
    assert!(h.job("migrate-post-v4-8-0").await.is_some());
    assert_eq!(
        h.status().await.running_version.as_deref(),
        Some("v4.7.6"),
        "not done until the post-deployment migrations are"
    );
    h.succeed("migrate-post-v4-8-0").await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.running_version.as_deref(), Some("v4.8.0"));
}

#[tokio::test]
async fn a_new_owner_password_is_made_set_by_a_job_and_reported_done() {
    let h = harness().await;
    h.install().await;
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let first = take_owner_password(&h.client(), "lyon")
        .await
        .unwrap()
        .unwrap();
    assert!(h.job("reset-owner-password-1").await.is_none());

    // Asked for: a new Secret (a new password), then the Job that sets it from there.
    h.edit(|s| s["owner"]["passwordGeneration"] = json!(1))
        .await;
    h.ok().await;
    let job = h
        .job("reset-owner-password-1")
        .await
        .expect("the reset Job");
    let job_json = serde_json::to_string(&job.spec.unwrap().template).unwrap();
    assert!(job_json.contains("OWNER_PASSWORD") && job_json.contains("owner-password"));
    assert!(job_json.contains("u.update!(password:"));
    assert!(
        !job_json.contains("accounts create"),
        "the account exists: only its password changes"
    );
    assert!(secrets.get_opt("owner-password").await.unwrap().is_some());
    assert_eq!(
        h.status().await.owner_password_generation,
        None,
        "not done yet"
    );
    h.ok().await;
    assert_eq!(h.status().await.owner_password_generation, None);

    h.succeed("reset-owner-password-1").await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.owner_password_generation, Some(1));
    assert_eq!(s.phase, Phase::Running);
    let second = take_owner_password(&h.client(), "lyon")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first, second, "a new password");
    // Done: nothing more happens until the next reset is asked for.
    h.ok().await;
    assert!(secrets.get_opt("owner-password").await.unwrap().is_none());
    assert_eq!(h.status().await.owner_password_generation, Some(1));

    // A Secret of an earlier reset, never collected (no encryption key on the control
    // plane, say), is replaced: a reset always sets a new password.
    let stale: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "owner-password", "namespace": TENANT,
                      "annotations": { "herd.dev/password-generation": "1" } },
        "stringData": { "password": "stale0stale0stale0stale0stale0st", "username": "lea" }
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &stale)
        .await
        .unwrap();
    h.edit(|s| s["owner"]["passwordGeneration"] = json!(2))
        .await;
    h.ok().await;
    h.succeed("reset-owner-password-2").await;
    h.ok().await;
    assert_eq!(h.status().await.owner_password_generation, Some(2));
    let third = take_owner_password(&h.client(), "lyon")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(third, "stale0stale0stale0stale0stale0st");
    assert_ne!(third, second);
}

/// A reset whose Job fails leaves the server running: the failure is the OwnerPassword
/// condition (not a failed tenant, not a migration failure), and a new reset tries again.
#[tokio::test]
async fn a_failed_owner_password_reset_is_a_condition_and_the_server_runs_on() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["owner"]["passwordGeneration"] = json!(1))
        .await;
    h.ok().await;
    assert_eq!(condition(&h.status().await, "OwnerPassword"), "Running");
    h.fail("reset-owner-password-1").await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Running, "{:?}", s.last_error);
    assert_eq!(s.last_error, None);
    assert_eq!(condition(&s, "OwnerPassword"), "JobFailed");
    assert_eq!(condition(&s, "Migrations"), "Done");
    assert_eq!(s.owner_password_generation, None, "not done");
    let message = s
        .conditions
        .iter()
        .find(|c| c.type_ == "OwnerPassword")
        .map(|c| c.message.clone())
        .unwrap();
    assert!(
        message.contains("kubectl logs -n herd-lyon job/reset-owner-password-1"),
        "{message}"
    );
    // Further rounds leave the failed Job alone (it is kept for its logs).
    h.ok().await;
    assert!(h.job("reset-owner-password-1").await.is_some());
    assert_eq!(condition(&h.status().await, "OwnerPassword"), "JobFailed");

    // Asked again: a new Job, and this one succeeds.
    h.edit(|s| s["owner"]["passwordGeneration"] = json!(2))
        .await;
    h.ok().await;
    h.succeed("reset-owner-password-2").await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.owner_password_generation, Some(2));
    assert_eq!(condition(&s, "OwnerPassword"), "Reset");
    assert_eq!(s.phase, Phase::Running);
}

#[tokio::test]
async fn a_release_candidate_to_its_final_release_is_an_upgrade_with_its_migrations() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["version"] = json!("v4.8.0-rc.1")).await;
    h.ok().await;
    h.backed_up_before("v4.8.0-rc-1").await;
    h.ok().await;
    h.succeed("migrate-pre-v4-8-0-rc-1").await;
    h.ok().await;
    h.roll_out().await;
    h.ok().await;
    h.succeed("migrate-post-v4-8-0-rc-1").await;
    h.ok().await;
    assert_eq!(
        h.status().await.running_version.as_deref(),
        Some("v4.8.0-rc.1")
    );

    // v4.8.0 is not "the same version": its backup and migrations run before it rolls.
    h.edit(|s| s["version"] = json!("v4.8.0")).await;
    h.ok().await;
    h.backed_up_before("v4.8.0").await;
    h.ok().await;
    assert!(h.job("migrate-pre-v4-8-0").await.is_some());
    assert!(h.web_image().await.ends_with(":v4.8.0-rc.1"));
    assert_eq!(h.status().await.phase, Phase::Upgrading);
}

#[tokio::test]
async fn a_failed_migration_stops_the_upgrade_where_it_is() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["version"] = json!("v4.8.0")).await;
    h.ok().await;
    h.backed_up_before("v4.8.0").await;
    h.ok().await;
    // A failed attempt is replaced by the next one, twice; the step fails at the third.
    let attempt = |j: Job| {
        j.metadata
            .annotations
            .unwrap_or_default()
            .get("herd.dev/attempt")
            .cloned()
    };
    for next in ["2", "3"] {
        h.fail("migrate-pre-v4-8-0").await;
        if next == "2" {
            // The failed attempt is deleted, then making the next one fails: the count
            // recorded on the Instance survives it.
            h.cluster
                .fail(http::Method::PATCH, "/jobs/migrate-pre-v4-8-0", 500, 1);
            assert!(h.reconcile().await.is_err());
            assert!(h.job("migrate-pre-v4-8-0").await.is_none());
        }
        h.ok().await;
        let job = h.job("migrate-pre-v4-8-0").await.unwrap();
        assert_eq!(attempt(job.clone()).as_deref(), Some(next));
        assert!(job.status.is_none(), "a new Job, not the failed one");
        let s = h.status().await;
        assert_eq!(s.phase, Phase::Upgrading, "retrying is not failing");
        assert!(h.web_image().await.ends_with(":v4.7.6"));
    }
    h.fail("migrate-pre-v4-8-0").await;
    h.ok().await;
    h.ok().await;
    assert!(
        h.web_image().await.ends_with(":v4.7.6"),
        "the Deployments are not rolled"
    );
    assert_eq!(
        attempt(h.job("migrate-pre-v4-8-0").await.unwrap()).as_deref(),
        Some("3"),
        "no fourth attempt"
    );
    assert!(h.job("migrate-post-v4-8-0").await.is_none());
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.running_version.as_deref(), Some("v4.7.6"));
    let err = s.last_error.unwrap();
    assert!(err.contains("migrate-pre-v4-8-0"), "{err}");
    assert!(err.contains("BackoffLimitExceeded"), "{err}");
    assert!(err.contains("attempt 3 of 3"), "{err}");

    // …and says so in a Warning Event on the Instance.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client(), NS);
    let warnings: Vec<_> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|e| e.reason.as_deref() == Some("Failed")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("migrate-pre-v4-8-0"))),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn skipping_a_minor_series_is_refused_and_nothing_moves() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["version"] = json!("v4.9.1")).await;
    h.ok().await;
    assert!(h.job("migrate-pre-v4-9-1").await.is_none());
    assert!(h.web_image().await.ends_with(":v4.7.6"));
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    assert!(s.last_error.unwrap().contains("v4.8.x first"));
    // Back to an allowed version: the tenant runs again.
    h.edit(|s| s["version"] = json!("v4.7.6")).await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.last_error, None, "the error is cleared");
}

#[tokio::test]
async fn suspend_keeps_data_and_resume_removes_the_suspended_page() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["suspended"] = json!(true)).await;
    h.ok().await;
    let web = h.deployment("web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(0));
    assert!(h.deployment("suspended").await.is_some());
    let ingress: Api<Ingress> = Api::namespaced(h.client(), TENANT);
    let rules = serde_json::to_string(&ingress.get("app").await.unwrap().spec).unwrap();
    assert!(rules.contains("\"suspended\""), "{rules}");
    assert_eq!(h.status().await.phase, Phase::Suspended);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(h.client(), TENANT);
    assert!(pvcs.get_opt("media").await.unwrap().is_some(), "data kept");

    h.edit(|s| s["suspended"] = json!(false)).await;
    h.ok().await;
    assert!(h.deployment("suspended").await.is_none(), "pruned");
    let services: Api<Service> = Api::namespaced(h.client(), TENANT);
    assert!(services.get_opt("suspended").await.unwrap().is_none());
    let maps: Api<ConfigMap> = Api::namespaced(h.client(), TENANT);
    assert!(maps.get_opt("suspended-page").await.unwrap().is_none());
    assert_eq!(
        h.deployment("web").await.unwrap().spec.unwrap().replicas,
        Some(1)
    );
    let rules = serde_json::to_string(&ingress.get("app").await.unwrap().spec).unwrap();
    assert!(!rules.contains("\"suspended\""), "{rules}");
    h.roll_out().await;
    h.ok().await;
    assert_eq!(h.status().await.phase, Phase::Running);
    assert!(pvcs.get_opt("media").await.unwrap().is_some());
}

/// The stored Instance as the API server shows it once `kubectl delete` was run: with a
/// deletion timestamp, held by the finalizer. (kube-fake-client deletes at once, ignoring
/// finalizers, so the reconcile is handed the object as a real API server would show it.)
async fn deleting(h: &Harness) -> Result<Action, OperatorError> {
    let mut i = h.instance().await;
    i.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-29T12:00:00Z".parse().unwrap(),
    ));
    operator::reconcile(Arc::new(i), h.ctx.clone()).await
}

const ACCESS_KEY_ID: &str = "AKIAPLATFORMBACKUPS1";
const SECRET_ACCESS_KEY: &str = "pLaTfOrM/SeCrEt+KeY/oF/tHe/BaCkUp/BuCkEt";

async fn backup_credentials(h: &Harness) {
    let api: Api<Secret> = Api::namespaced(h.client(), NS);
    let s: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "herd-backup-credentials", "namespace": NS },
        "stringData": { "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY },
    }))
    .unwrap();
    match api.create(&PostParams::default(), &s).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn deletion_dumps_the_database_before_the_namespace_goes() {
    let h = harness().await;
    h.install().await;
    backup_credentials(&h).await;

    deleting(&h).await.unwrap();
    let job = h.job("final-backup").await.unwrap();
    let annotations = job.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("herd.dev/backup-object")
            .map(String::as_str),
        Some("s3://herd-backups/final/lyon/final-20261129T120000Z/")
    );
    let pod = serde_json::to_string(&job.spec.unwrap().template).unwrap();
    assert!(pod.contains("pg_dump"), "{pod}");
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    assert!(secrets
        .get_opt("final-backup-urls")
        .await
        .unwrap()
        .is_some());
    assert!(
        h.cluster.namespaces().contains_key(TENANT),
        "kept until the dump is taken"
    );
    assert_eq!(h.status().await.phase, Phase::Deleting);

    // Still running: the namespace stays.
    deleting(&h).await.unwrap();
    assert!(h.cluster.namespaces().contains_key(TENANT));

    h.succeed("final-backup").await;
    deleting(&h).await.unwrap();
    let ns = h.cluster.namespaces()[TENANT].clone();
    assert_eq!(ns["status"]["phase"], "Terminating", "then it goes");
    // While the namespace controller empties it, the Instance waits, Deleting.
    let writes = h.cluster.writes();
    deleting(&h).await.unwrap();
    assert_eq!(h.status().await.phase, Phase::Deleting);
    assert_eq!(
        h.cluster.writes(),
        writes,
        "nothing more to do while Terminating"
    );
    assert!(
        h.instance()
            .await
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&operator::FINALIZER.to_owned()),
        "the finalizer stays until the namespace is gone"
    );
    h.cluster
        .finish_namespace_deletions(&fake_cluster::TENANT_KINDS)
        .await;
    assert!(!h.cluster.namespaces().contains_key(TENANT));

    deleting(&h).await.unwrap();
    assert!(
        !h.instance()
            .await
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&operator::FINALIZER.to_owned()),
        "the finalizer is removed last"
    );
}

#[tokio::test]
async fn a_tenant_deleted_before_it_had_the_apps_own_login_gets_it_before_the_final_backup() {
    let h = harness().await;
    h.install().await;
    backup_credentials(&h).await;
    // As an older operator left it: no DB_APP_PASS in its Secret, no role keeper in its
    // database pod; its deletion applies nothing but what stops the app and backs it up.
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let mut old = secrets.get("app-secrets").await.unwrap();
    old.data.as_mut().unwrap().remove("DB_APP_PASS");
    old.string_data = None;
    secrets
        .replace("app-secrets", &PostParams::default(), &old)
        .await
        .unwrap();
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(h.client(), TENANT);
    let mut db = sets.get("postgres").await.unwrap();
    let pod = db.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    pod.containers.retain(|c| c.name != "roles");
    sets.replace("postgres", &PostParams::default(), &db)
        .await
        .unwrap();
    let revisions = |current: &str, update: &str, seen: Option<i64>| {
        json!({ "status": { "replicas": 1, "readyReplicas": 1, "observedGeneration": seen,
                            "currentRevision": current, "updateRevision": update } })
    };
    let seen = sets.get("postgres").await.unwrap().metadata.generation;
    sets.patch_status(
        "postgres",
        &PatchParams::default(),
        &Patch::Merge(revisions("old", "old", seen)),
    )
    .await
    .unwrap();

    deleting(&h).await.unwrap();
    assert!(
        h.job("final-backup").await.is_none(),
        "not before the login exists"
    );
    let message = h.status().await.last_error.unwrap_or_default();
    assert!(message.contains("app's database login"), "{message}");
    let secret = secrets.get("app-secrets").await.unwrap();
    assert!(
        secret.data.unwrap().contains_key("DB_APP_PASS"),
        "its password written"
    );
    let db = sets.get("postgres").await.unwrap();
    let containers = &db
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers;
    assert!(
        containers.iter().any(|c| c.name == "roles"),
        "its keeper applied"
    );
    assert!(db.metadata.generation > seen, "a new template");
    let seen = db.metadata.generation;

    // The old pod is still the ready one while the controller rolls the new template.
    sets.patch_status(
        "postgres",
        &PatchParams::default(),
        &Patch::Merge(revisions("old", "new", seen)),
    )
    .await
    .unwrap();
    deleting(&h).await.unwrap();
    assert!(h.job("final-backup").await.is_none(), "not on the old pod");
    // Rolled and ready: the final backup, as the app's login.
    sets.patch_status(
        "postgres",
        &PatchParams::default(),
        &Patch::Merge(revisions("new", "new", seen)),
    )
    .await
    .unwrap();
    deleting(&h).await.unwrap();
    let job = h.job("final-backup").await.expect("the final backup");
    let dump = job
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .init_containers
        .unwrap();
    let env = dump[0].env.clone().unwrap();
    let user = env.iter().find(|e| e.name == "PGUSER").unwrap();
    assert_eq!(user.value.as_deref(), Some("mastodon_app"));
}

#[tokio::test]
async fn a_tenant_whose_app_secret_is_gone_is_not_backed_up_with_new_secrets() {
    let h = harness().await;
    h.install().await;
    backup_credentials(&h).await;
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    secrets
        .delete("app-secrets", &Default::default())
        .await
        .unwrap();
    deleting(&h).await.unwrap();
    assert!(h.job("final-backup").await.is_none());
    assert!(
        secrets.get_opt("app-secrets").await.unwrap().is_none(),
        "no secrets made up for it"
    );
    let message = h.status().await.last_error.unwrap_or_default();
    assert!(
        message.contains("app-secrets is gone") && message.contains("skip-final-backup"),
        "{message}"
    );
    assert!(h.cluster.namespaces().contains_key(TENANT), "its data kept");
}

/// A pod of the app, as the Deployment controller would have made it.
async fn app_pod(h: &Harness, name: &str, component: &str) {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(h.client(), TENANT);
    let pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": TENANT, "labels": {
            "herd.dev/instance": "lyon", "app.kubernetes.io/component": component,
        }},
        "spec": { "containers": [{ "name": "c", "image": "i" }] },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
}

#[tokio::test]
async fn deletion_stops_the_app_then_backs_it_up_with_its_secrets_sealed() {
    let h = harness().await;
    h.install().await;
    backup_credentials(&h).await;
    app_pod(&h, "web-1", "web").await;
    app_pod(&h, "sidekiq-1", "sidekiq").await;
    app_pod(&h, "postgres-0", "database").await;

    deleting(&h).await.unwrap();
    // The app is scaled down and its CronJobs suspended before anything is archived.
    for name in ["web", "streaming", "sidekiq"] {
        let d = h.deployment(name).await.unwrap();
        assert_eq!(d.spec.unwrap().replicas, Some(0), "{name}");
    }
    let cron: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(h.client(), TENANT);
    for c in cron.list(&ListParams::default()).await.unwrap() {
        assert_eq!(c.spec.unwrap().suspend, Some(true));
    }
    assert!(
        h.job("final-backup").await.is_none(),
        "no backup while web and sidekiq still write"
    );
    let err = h.status().await.last_error.unwrap();
    assert!(
        err.contains("waiting for the app to stop (2 pods left)"),
        "{err}"
    );

    // The pods are gone (the database's stays): the backup starts.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(h.client(), TENANT);
    for p in ["web-1", "sidekiq-1"] {
        pods.delete(p, &Default::default()).await.unwrap();
    }
    deleting(&h).await.unwrap();
    let job = h.job("final-backup").await.unwrap();
    let pod = serde_json::to_string(&job.spec.unwrap().template).unwrap();
    assert!(pod.contains("backup-sealed-secrets"), "{pod}");

    // The sealed Secret opens with the platform's identity, to the tenant's app secrets.
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let clear = herd_k8s::reconcile::secret_strings(secrets.get("app-secrets").await.unwrap());
    let sealed = secrets.get("backup-sealed-secrets").await.unwrap();
    let sealed = sealed.data.unwrap()["app-secrets.env.age"].0.clone();
    let identity: age::x25519::Identity = common::BACKUP_IDENTITY.parse().unwrap();
    let opened = String::from_utf8(age::decrypt(&identity, &sealed).unwrap()).unwrap();
    for key in [
        "SECRET_KEY_BASE",
        "OTP_SECRET",
        "VAPID_PRIVATE_KEY",
        "VAPID_PUBLIC_KEY",
        "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY",
        "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY",
        "ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT",
    ] {
        let line = format!("{key}={}", clear[key]);
        assert!(opened.lines().any(|l| l == line), "{key}");
        assert!(
            !String::from_utf8_lossy(&sealed).contains(clear[key].as_str()),
            "{key} in clear"
        );
    }
    // Sealed once: a reconcile that finds it up to date does not seal again.
    let version = secrets
        .get("backup-sealed-secrets")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let jobs: Api<Job> = Api::namespaced(h.client(), TENANT);
    jobs.delete("final-backup", &Default::default())
        .await
        .unwrap();
    deleting(&h).await.unwrap();
    assert!(h.job("final-backup").await.is_some(), "a retry");
    assert_eq!(
        secrets
            .get("backup-sealed-secrets")
            .await
            .unwrap()
            .metadata
            .resource_version,
        version
    );
}

/// Every value of every Secret in the tenant namespace, decoded.
async fn tenant_secret_values(h: &Harness) -> Vec<(String, String, String)> {
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let mut out = Vec::new();
    for s in secrets.list(&ListParams::default()).await.unwrap().items {
        let name = s.metadata.name.clone().unwrap_or_default();
        for (k, v) in s.data.unwrap_or_default() {
            out.push((name.clone(), k, String::from_utf8_lossy(&v.0).into_owned()));
        }
        for (k, v) in s.string_data.unwrap_or_default() {
            out.push((name.clone(), k, v));
        }
    }
    out
}

#[tokio::test]
async fn no_platform_credential_enters_the_tenant_namespace() {
    let h = harness().await;
    h.install().await;
    backup_credentials(&h).await;
    deleting(&h).await.unwrap();
    assert!(h.job("final-backup").await.is_some());

    let values = tenant_secret_values(&h).await;
    assert!(values.iter().any(|(s, _, _)| s == "final-backup-urls"));
    for (secret, key, value) in &values {
        assert!(
            !value.contains(SECRET_ACCESS_KEY) && !value.contains("pLaTfOrM"),
            "{secret}/{key} holds the platform's secret key"
        );
        assert!(
            !key.starts_with("AWS_"),
            "{secret}/{key}: no credential variables"
        );
        // The key *id* appears only where SigV4 puts it in a presigned URL: the
        // credential scope, which grants nothing without the secret.
        if value.contains(ACCESS_KEY_ID) {
            let url: url::Url = value.parse().unwrap_or_else(|_| {
                panic!("{secret}/{key} holds the access key id outside a presigned URL")
            });
            let credential: String = url
                .query_pairs()
                .find(|(k, _)| k == "X-Amz-Credential")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            assert!(
                credential.starts_with(&format!("{ACCESS_KEY_ID}/")),
                "{secret}/{key}"
            );
            assert_eq!(
                value.matches(ACCESS_KEY_ID).count(),
                1,
                "{secret}/{key}: only in the credential scope"
            );
        }
    }
    // Nor does the Job read any Secret of the platform.
    let job = serde_json::to_string(&h.job("final-backup").await.unwrap()).unwrap();
    assert!(!job.contains("herd-backup-credentials"), "{job}");
    assert!(!job.contains("AWS_SECRET_ACCESS_KEY"), "{job}");
}

#[tokio::test]
async fn upload_urls_are_for_this_tenants_objects_only_and_expire() {
    let h = harness().await;
    h.install().await;
    backup_credentials(&h).await;
    let before = jiff::Timestamp::now();
    deleting(&h).await.unwrap();
    let after = jiff::Timestamp::now();

    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let urls = secrets.get("final-backup-urls").await.unwrap();
    let urls: Vec<(String, String)> = urls
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect();
    // 64 pieces of the dump, 64 of the media archive (media on a volume), the sealed
    // app secrets, the manifest.
    assert_eq!(urls.len(), 130);
    for (name, url) in &urls {
        let url: url::Url = url.parse().unwrap();
        assert_eq!(url.host_str(), Some("s3.example.net"));
        assert_eq!(
            url.path(),
            format!("/herd-backups/final/lyon/final-20261129T120000Z/{name}"),
            "this tenant's prefix, this object"
        );
        let q: std::collections::BTreeMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(q["X-Amz-Expires"], "7200", "valid two hours");
        let signed = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", &q["X-Amz-Date"])
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp();
        assert!(
            signed >= before - jiff::SignedDuration::from_secs(1)
                && signed <= after + jiff::SignedDuration::from_secs(1),
            "signed now: {signed}"
        );
        assert_eq!(q["X-Amz-SignedHeaders"], "host");
        let signature = &q["X-Amz-Signature"];
        assert!(
            signature.len() == 64 && signature.chars().all(|c| c.is_ascii_hexdigit()),
            "{signature}"
        );
    }
    // The Job gives up before its URLs expire (a retry gets new ones).
    let job = h.job("final-backup").await.unwrap();
    let deadline = job.spec.unwrap().active_deadline_seconds.unwrap();
    assert!(deadline > 0 && deadline < 7200, "{deadline}");
}

#[tokio::test]
async fn a_failed_backup_keeps_the_data_and_says_what_to_do() {
    let h = harness().await;
    h.install().await;
    backup_credentials(&h).await;
    deleting(&h).await.unwrap();
    h.fail("final-backup").await;
    deleting(&h).await.unwrap();
    deleting(&h).await.unwrap();
    assert!(h.cluster.namespaces().contains_key(TENANT));
    let err = h.status().await.last_error.unwrap();
    assert!(
        err.contains("kubectl logs -n herd-lyon job/final-backup"),
        "{err}"
    );
    assert!(err.contains("herd.dev/skip-final-backup"), "{err}");
}

#[tokio::test]
async fn without_a_backup_target_deletion_waits_unless_told_to_skip() {
    let mut i = common::lyon("community");
    let h = harness_with(i.clone(), false).await;
    h.install().await;
    deleting(&h).await.unwrap();
    assert!(h.cluster.namespaces().contains_key(TENANT));
    assert!(h.job("final-backup").await.is_none());
    let err = h.status().await.last_error.unwrap();
    assert!(err.contains("HERD_BACKUP_S3_BUCKET"), "{err}");

    // The operator decides to delete without a dump.
    let api: Api<Instance> = Api::namespaced(h.client(), NS);
    i = api.get("lyon").await.unwrap();
    api.patch(
        "lyon",
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "metadata": { "annotations": { operator::SKIP_BACKUP_ANNOTATION: "true" } } }),
        ),
    )
    .await
    .unwrap();
    drop(i);
    deleting(&h).await.unwrap();
    assert_eq!(
        h.cluster.namespaces()[TENANT]["status"]["phase"],
        "Terminating"
    );
    h.cluster
        .finish_namespace_deletions(&fake_cluster::TENANT_KINDS)
        .await;
    assert!(!h.cluster.namespaces().contains_key(TENANT));
}

/// The process-wide metrics recorder of this test binary.
fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap()
    })
}

/// The value of a counter series in the Prometheus text output (0 when absent).
fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn api_errors_back_off_instead_of_crashing() {
    let metrics = metrics();
    let throttled = r#"herd_operator_reconcile_failures_total{reason="api_throttled"}"#;
    let before = counter(&metrics.render(), throttled);
    let h = harness().await;
    h.ok().await; // finalizer
                  // The API server throttles the first writes of children.
    h.cluster
        .fail(http::Method::PATCH, "/namespaces/herd-lyon/", 429, 1);
    let err = h.reconcile().await.unwrap_err();
    assert!(err.throttled(), "{err}");
    assert_eq!(err.reason(), "api_throttled");
    let i = h.instance().await;
    let first = operator::retry_delay(&i, &err, &h.ctx);
    assert!(first >= Duration::from_secs(45), "{first:?}");
    let text = metrics.render();
    assert_eq!(counter(&text, throttled), before + 1.0, "{text}");
    assert!(
        text.contains(r#"herd_operator_reconciles_total{result="error"}"#),
        "{text}"
    );
    assert!(
        text.contains("herd_operator_reconcile_duration_seconds"),
        "{text}"
    );

    // A server error: a shorter, growing delay.
    h.cluster.fail(http::Method::GET, "/jobs", 500, 2);
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err.reason(), "api_server_error");
    let d2 = operator::retry_delay(&i, &err, &h.ctx);
    let err = h.reconcile().await.unwrap_err();
    let d3 = operator::retry_delay(&i, &err, &h.ctx);
    assert!(d3 > d2, "{d2:?} then {d3:?}");

    // Once the API answers again, the reconcile goes through.
    h.ok().await;
    h.data_ready().await;
    h.ok().await;
    assert!(h.job("db-prepare-v4-7-6").await.is_some());
}

#[tokio::test]
async fn a_conflict_from_an_interceptor_is_an_error_not_a_panic() {
    use kube_fake_client::interceptor::Funcs;
    let cluster = fake_cluster::start_with(|b| {
        b.with_resource::<Instance>()
            .with_interceptor_funcs(Funcs::new().patch_status(|_| {
                Err(kube_fake_client::Error::Conflict(
                    "the object has been modified".into(),
                ))
            }))
    })
    .await;
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), NS);
    api.create(
        &PostParams::default(),
        &with_status(common::lyon("community")),
    )
    .await
    .unwrap();
    let ctx = Context::new(cluster.client.clone(), settings(true), "test");
    let reconcile = || async {
        let i = api.get("lyon").await.unwrap();
        operator::reconcile(Arc::new(i), ctx.clone()).await
    };
    reconcile().await.unwrap(); // finalizer
    let err = reconcile().await.unwrap_err();
    assert_eq!(err.reason(), "api_conflict", "{err}");
}

/// The controller itself, running against the fake cluster, sends a failed reconcile
/// through its error policy: counted by reason, reported on the Instance (its last error
/// and a Warning Event), and retried later rather than in a loop.
#[tokio::test]
async fn the_running_controller_reports_failures_through_its_error_policy() {
    let metrics = metrics();
    let series = r#"herd_operator_reconcile_failures_total{reason="api_server_error"}"#;
    let before = counter(&metrics.render(), series);
    let h = harness().await;
    // Every write of a tenant object fails (the namespace itself goes through).
    h.cluster
        .fail(http::Method::PATCH, "/namespaces/herd-lyon/", 500, 10_000);
    let controller = tokio::spawn(operator::run(
        h.client(),
        settings(true),
        "wiring-test",
        Duration::from_secs(5),
    ));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client(), NS);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reported = loop {
        let failed = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .any(|e| e.reason.as_deref() == Some("ReconcileFailed"));
        let last_error = h.status().await.last_error;
        if failed && last_error.is_some() {
            break last_error;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failure reported in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    controller.abort();
    assert!(
        reported.unwrap().contains("500"),
        "the API's answer is in the last error"
    );
    assert!(counter(&metrics.render(), series) > before);
    let failed_writes = 10_000 - h.cluster.faults_left();
    assert!(
        (1..20).contains(&failed_writes),
        "{failed_writes} failed writes: retried with back-off, not in a loop"
    );
}

#[tokio::test]
async fn gotosocial_starts_before_its_owner_is_created() {
    let mut i = common::lyon("community");
    i.spec.app = App::Gotosocial;
    i.spec.version = "0.20.2".into();
    let h = harness_with(i, true).await;
    h.ok().await;
    h.ok().await;
    assert!(
        h.deployment("web").await.is_some(),
        "GoToSocial migrates at start"
    );
    assert!(h.job("create-owner").await.is_none());
    h.roll_out().await;
    h.ok().await;
    let job = h.job("create-owner").await.unwrap();
    let pod = serde_json::to_string(&job.spec.unwrap().template).unwrap();
    assert!(pod.contains("\"create\""), "{pod}");
    assert!(pod.contains("promote"), "{pod}");
    assert!(pod.contains("$(OWNER_PASSWORD)"), "{pod}");
    assert_eq!(h.status().await.phase, Phase::Provisioning);
    h.succeed("create-owner").await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(s.running_version.as_deref(), Some("0.20.2"));
}

#[tokio::test]
async fn one_leader_at_a_time() {
    let cluster = fake_cluster::start().await;
    // Both candidates read one clock the test moves.
    let start = jiff::Timestamp::now();
    let offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let clock: herd_k8s::lease::Clock = {
        let offset = offset.clone();
        Arc::new(move || {
            start
                + jiff::SignedDuration::from_secs(offset.load(std::sync::atomic::Ordering::SeqCst))
        })
    };
    let candidate = |name: &str| {
        LeaderElector::new(
            cluster.client.clone(),
            NS,
            "herd-operator",
            name,
            Duration::from_secs(15),
        )
        .with_clock(clock.clone())
    };
    let (a, b) = (candidate("a"), candidate("b"));
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap(), "held by a");
    offset.store(10, std::sync::atomic::Ordering::SeqCst);
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");

    // a stops renewing: 14 s after its renewal the Lease still holds, at 16 s it expired
    // and b takes it over.
    offset.store(24, std::sync::atomic::Ordering::SeqCst);
    assert!(!b.try_acquire_or_renew().await.unwrap(), "not yet expired");
    offset.store(26, std::sync::atomic::Ordering::SeqCst);
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), NS);
    assert!(b.try_acquire_or_renew().await.unwrap());
    assert!(!a.try_acquire_or_renew().await.unwrap(), "a lost it");
    let lease = leases.get("herd-operator").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));

    // Released on shutdown: a takes it at once.
    b.release().await.unwrap();
    assert!(a.try_acquire_or_renew().await.unwrap());
}

/// Two replicas racing for a free Lease, again and again: never both win.
#[tokio::test]
async fn two_replicas_racing_for_the_lease_never_both_win() {
    let cluster = fake_cluster::start().await;
    for round in 0..20 {
        let name = format!("race-{round}");
        let a = LeaderElector::new(
            cluster.client.clone(),
            NS,
            &name,
            "a",
            Duration::from_secs(15),
        );
        let b = LeaderElector::new(
            cluster.client.clone(),
            NS,
            &name,
            "b",
            Duration::from_secs(15),
        );
        let (x, y) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
        let winners = [x.unwrap(), y.unwrap()].iter().filter(|w| **w).count();
        assert_eq!(winners, 1, "round {round}");
    }
}

#[tokio::test]
async fn a_failed_reconcile_is_reported_on_the_instance() {
    let h = harness().await;
    h.install().await;
    // Someone damages the app Secret.
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let mut s = secrets.get("app-secrets").await.unwrap();
    s.data.as_mut().unwrap().remove("SECRET_KEY_BASE");
    s.metadata.managed_fields = None;
    secrets
        .replace("app-secrets", &PostParams::default(), &s)
        .await
        .unwrap();
    let err = h.reconcile().await.unwrap_err();
    assert_eq!(err.reason(), "damaged_secret");
    operator::report_failure(&h.ctx, &h.instance().await, &err.to_string()).await;
    let last = h.status().await.last_error.unwrap();
    assert!(last.contains("restore it from a backup"), "{last}");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client(), NS);
    assert!(events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("ReconcileFailed")));
    // The Secret was not replaced.
    let after = secrets.get("app-secrets").await.unwrap();
    assert!(!after.data.unwrap().contains_key("SECRET_KEY_BASE"));
}

/// The API server's addresses, for CloudNativePG tenants' egress, are the endpoints of the
/// `kubernetes` Service's EndpointSlices (other Services' slices do not count).
#[tokio::test]
async fn the_api_server_addresses_come_from_its_endpoint_slices() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let cluster = fake_cluster::start().await;
    let api: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), "default");
    for (name, service, ips, port) in [
        (
            "kubernetes",
            "kubernetes",
            vec!["172.18.0.3", "172.18.0.2"],
            6443,
        ),
        ("web-abcde", "web", vec!["10.244.1.7"], 3000),
    ] {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": name, "namespace": "default", "labels": { "kubernetes.io/service-name": service } },
            "addressType": "IPv4",
            "endpoints": ips.iter().map(|ip| json!({ "addresses": [ip] })).collect::<Vec<_>>(),
            "ports": [{ "name": "https", "port": port, "protocol": "TCP" }],
        }))
        .unwrap();
        api.create(&PostParams::default(), &slice).await.unwrap();
    }
    let found = operator::api_server_endpoints(&cluster.client)
        .await
        .unwrap();
    let found: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(found, ["172.18.0.2:6443", "172.18.0.3:6443"]);
}

/// `database.mode: Auto` is decided at the first reconcile and recorded on the Instance;
/// CloudNativePG appearing later does not move the tenant, and an API error while deciding
/// is an error to retry, never a decision.
#[tokio::test]
async fn an_auto_database_is_decided_once_and_an_api_error_decides_nothing() {
    let h = harness().await;
    h.cluster
        .fail(http::Method::GET, "customresourcedefinitions", 500, 1);
    assert!(h.reconcile().await.is_err());
    let i = h.instance().await;
    assert_eq!(i.annotation(herd_k8s::crd::DATABASE_ANNOTATION), None);
    h.ok().await;
    let i = h.instance().await;
    assert_eq!(
        i.annotation(herd_k8s::crd::DATABASE_ANNOTATION),
        Some("statefulset"),
        "no CloudNativePG CRD in this cluster"
    );
    // An operator started while CloudNativePG's CRD answered (or with it installed since):
    // the tenant keeps its StatefulSet.
    h.reconcile_on(ClusterSettings {
        has_cloudnative_pg: true,
        ..ClusterSettings::default()
    })
    .await;
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(h.client(), TENANT);
    assert!(sets.get_opt("postgres").await.unwrap().is_some());
}

/// The installed version is kept on the Instance itself: a status lost (an Instance
/// restored without it) does not install the tenant again (its owner Job would reset the
/// owner's password); a namespace lost fails the tenant until an operator restores it or
/// asks for a reinstall from scratch.
#[tokio::test]
async fn a_lost_status_keeps_the_install_and_a_lost_namespace_waits_for_an_operator() {
    let h = harness().await;
    h.install().await;
    let i = h.instance().await;
    assert_eq!(
        i.annotation(herd_k8s::crd::INSTALLED_VERSION_ANNOTATION),
        Some("v4.7.6")
    );
    // The status goes (as with a restore that does not keep it).
    let api: Api<Instance> = Api::namespaced(h.client(), NS);
    api.patch_status(
        "lyon",
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "status": { "runningVersion": null, "phase": null, "conditions": [] } }),
        ),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let _ = take_owner_password(&h.client(), "lyon").await.unwrap();
    h.ok().await;
    h.ok().await;
    assert!(
        secrets.get_opt("owner-password").await.unwrap().is_none(),
        "no new owner password: nothing is installed again"
    );
    let s = h.status().await;
    assert_eq!(s.running_version.as_deref(), Some("v4.7.6"));
    assert_eq!(s.phase, Phase::Running);

    // The namespace and everything in it go.
    let jobs: Api<Job> = Api::namespaced(h.client(), TENANT);
    for j in jobs.list(&ListParams::default()).await.unwrap() {
        jobs.delete(j.metadata.name.as_deref().unwrap(), &Default::default())
            .await
            .unwrap();
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(h.client());
    namespaces
        .delete(TENANT, &Default::default())
        .await
        .unwrap();
    h.cluster
        .finish_namespace_deletions(&fake_cluster::TENANT_KINDS)
        .await;
    // Not reinstalled on its own (a restore may bring the data back): failed, saying how.
    h.ok().await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    let why = s.last_error.unwrap();
    assert!(why.contains("herd.dev/reinstall=true"), "{why}");
    assert!(h.job("db-prepare-v4-7-6").await.is_none());
    assert!(!h.cluster.namespaces().contains_key(TENANT), "nothing made");
    // An operator asks for it.
    let api: Api<Instance> = Api::namespaced(h.client(), NS);
    api.patch(
        "lyon",
        &PatchParams::default(),
        &Patch::Merge(json!({ "metadata": { "annotations": { "herd.dev/reinstall": "true" } } })),
    )
    .await
    .unwrap();
    h.ok().await;
    let i = h.instance().await;
    assert_eq!(
        i.annotation(herd_k8s::crd::INSTALLED_VERSION_ANNOTATION),
        None
    );
    assert_eq!(
        i.annotation("herd.dev/reinstall"),
        None,
        "asked once, done once"
    );
    assert_eq!(h.status().await.running_version, None);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(h.client(), NS);
    assert!(events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("Reinstalling")
            && e.type_.as_deref() == Some("Warning")));
    // From the first step again: the data services, then db:prepare.
    h.ok().await;
    h.data_ready().await;
    h.ok().await;
    assert!(h.job("db-prepare-v4-7-6").await.is_some());
    assert_eq!(h.status().await.phase, Phase::Provisioning);
}

/// The SMTP Secret the spec names is not Herd's, but the pods that read it restart when
/// it changes (a rotated password): its digest is on their templates.
#[tokio::test]
async fn a_rotated_smtp_secret_restarts_the_pods_that_read_it() {
    let mut i = common::lyon("community");
    i.spec.smtp_secret_ref = Some("smtp".into());
    let h = harness_with(i, true).await;
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let smtp = |password: &str| -> Secret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "smtp", "namespace": TENANT },
            "stringData": { "server": "smtp.example", "port": "587", "from": "x@lyon.social", "password": password },
        }))
        .unwrap()
    };
    h.install().await;
    let hash = |d: Deployment| {
        d.spec
            .unwrap()
            .template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("herd.dev/secrets-hash").cloned())
    };
    let absent = hash(h.deployment("sidekiq").await.unwrap()).expect("stamped");
    secrets
        .create(&PostParams::default(), &smtp("first"))
        .await
        .unwrap();
    h.ok().await;
    let first = hash(h.deployment("sidekiq").await.unwrap()).unwrap();
    assert_ne!(first, absent);
    assert_eq!(
        hash(h.deployment("web").await.unwrap()),
        None,
        "web does not read it"
    );
    // Unchanged: nothing written.
    let before = h.cluster.writes();
    h.ok().await;
    assert_eq!(h.cluster.writes(), before);
    // Rotated: sidekiq's template changes (its pods roll).
    secrets
        .replace("smtp", &PostParams::default(), &smtp("second"))
        .await
        .unwrap();
    h.ok().await;
    let second = hash(h.deployment("sidekiq").await.unwrap()).unwrap();
    assert_ne!(second, first);
}

/// Where media live is decided per tenant and kept: an organization-plan tenant made
/// before (its media claim ReadWriteMany) keeps running without any operator setting, and
/// naming a shared class later does not move a tenant whose claim is ReadWriteOnce (its
/// pods stay on one node).
#[tokio::test]
async fn a_tenant_keeps_the_media_volume_it_has_whatever_the_settings_say() {
    // A tenant whose shared claim exists already.
    let mut big = common::lyon("organization");
    big.metadata.name = Some("lyon".into());
    let h = harness_with(big, true).await;
    h.cluster
        .add_storage_class("nfs", "nfs.csi.k8s.io", true)
        .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(h.client(), TENANT);
    claims
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "media", "namespace": TENANT },
                "spec": { "accessModes": ["ReadWriteMany"], "storageClassName": "nfs",
                          "resources": { "requests": { "storage": "200Gi" } } },
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    h.ok().await;
    assert_eq!(
        h.instance()
            .await
            .annotation(herd_k8s::crd::MEDIA_ANNOTATION),
        Some("shared:nfs")
    );
    h.ok().await; // no SharedMediaNeeded: the tenant has shared storage
    assert!(
        h.deployment("web").await.is_none(),
        "web waits for the install, as usual"
    );
    assert_eq!(h.status().await.last_error, None);

    // A one-node tenant, then the operator starts naming a shared class.
    let h = harness().await;
    h.install().await;
    assert_eq!(
        h.instance()
            .await
            .annotation(herd_k8s::crd::MEDIA_ANNOTATION),
        Some("one-node")
    );
    h.reconcile_on(ClusterSettings {
        media_shared_storage_class: Some("nfs".into()),
        ..ClusterSettings::default()
    })
    .await;
    let web = h.deployment("web").await.unwrap();
    let affinity =
        serde_json::to_string(&web.spec.unwrap().template.spec.unwrap().affinity).unwrap();
    assert!(
        affinity.contains("kubernetes.io/hostname"),
        "still pinned: {affinity}"
    );
}

/// The API server's addresses are read again while the operator runs (control-plane nodes
/// get replaced): a change is taken up by the next reconciles (CloudNativePG tenants'
/// NetworkPolicy names the addresses), and a read that finds none keeps the known ones.
#[tokio::test]
async fn the_api_server_addresses_are_read_again_and_an_empty_read_keeps_them() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let cluster = fake_cluster::start().await;
    let started_with: Vec<std::net::SocketAddr> = vec!["172.18.0.2:6443".parse().unwrap()];
    let ctx = Context::new(
        cluster.client.clone(),
        Settings {
            cluster: ClusterSettings {
                has_cloudnative_pg: true,
                api_server: started_with.clone(),
                ..ClusterSettings::default()
            },
            ..settings(true)
        },
        "herd-operator-test",
    );
    // No slice to read: nothing changes, the tenants keep their allowance.
    assert!(!ctx.refresh_api_server().await.unwrap());
    assert_eq!(ctx.cluster().api_server, started_with);
    // The control plane moved.
    let api: Api<EndpointSlice> = Api::namespaced(cluster.client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": "kubernetes", "namespace": "default", "labels": { "kubernetes.io/service-name": "kubernetes" } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": ["172.18.0.9"] }],
        "ports": [{ "name": "https", "port": 6443, "protocol": "TCP" }],
    }))
    .unwrap();
    api.create(&PostParams::default(), &slice).await.unwrap();
    assert!(
        ctx.refresh_api_server().await.unwrap(),
        "a change is reported"
    );
    let now: Vec<std::net::SocketAddr> = vec!["172.18.0.9:6443".parse().unwrap()];
    assert_eq!(ctx.cluster().api_server, now);
    // The rest of the cluster's settings stay as the operator started with them.
    assert!(ctx.cluster().has_cloudnative_pg);
    // Read again unchanged: nothing to do.
    assert!(!ctx.refresh_api_server().await.unwrap());
    // A failed read is an error, and keeps what is known.
    cluster.fail(http::Method::GET, "endpointslices", 500, 1);
    assert!(ctx.refresh_api_server().await.is_err());
    assert_eq!(ctx.cluster().api_server, now);
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

/// The scheduled backup's URLs as the tenant namespace holds them: (slot, name → URL).
async fn scheduled_urls(h: &Harness) -> (String, std::collections::BTreeMap<String, String>) {
    let secrets: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let mut urls =
        herd_k8s::reconcile::secret_strings(secrets.get("scheduled-backup-urls").await.unwrap());
    let slot = urls.remove("slot").unwrap();
    (slot, urls)
}

/// The CronJob cannot ask for URLs when it starts: the operator keeps them signed for the
/// coming run, under that run's own prefix, valid until the run's deadline, and renews
/// them once the run is past (never before: a run starting late still finds its own).
#[tokio::test]
async fn scheduled_backup_urls_are_signed_for_the_coming_run_and_renewed_after_it() {
    let h = harness().await;
    h.ctx.set_clock(ts("2026-12-08T00:00:00Z"));
    h.install().await;
    let spec = h.instance().await.spec;
    let schedule = herd_k8s::render::schedule::Schedule::of(&spec);
    let cron: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(h.client(), TENANT);
    let cronjob = cron.get("scheduled-backup").await.unwrap();
    assert_eq!(cronjob.spec.unwrap().schedule, schedule.cron());

    let run = schedule.upcoming(ts("2026-12-08T00:00:00Z"));
    let (slot, urls) = scheduled_urls(&h).await;
    assert_eq!(slot, run.as_second().to_string());
    let stamp: String = run
        .to_string()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    assert_eq!(
        urls.len(),
        64 + 64 + 2,
        "dump and media pieces, secrets, manifest"
    );
    for (name, url) in &urls {
        let url: url::Url = url.parse().unwrap();
        assert_eq!(
            url.path(),
            format!("/herd-backups/final/scheduled/keep-7d/lyon/{stamp}/{name}")
        );
        let q: std::collections::BTreeMap<String, String> =
            url.query_pairs().into_owned().collect();
        // Valid until the latest start (an hour late) plus the run's two hours.
        let expires = run.as_second() + 3 * 3600 - ts("2026-12-08T00:00:00Z").as_second();
        assert_eq!(q["X-Amz-Expires"], expires.to_string());
    }

    // Reconciles before the run and while it may still start write nothing.
    h.ok().await; // the install's last writes settle
    let writes = h.cluster.writes();
    h.ok().await;
    h.ctx.set_clock(
        run.checked_add(jiff::SignedDuration::from_mins(59))
            .unwrap(),
    );
    h.ok().await;
    assert_eq!(h.cluster.writes(), writes, "no write until the run is past");
    assert_eq!(scheduled_urls(&h).await.0, slot);

    // Once it is past: the next run's, under its own prefix (never the last run's objects).
    h.ctx.set_clock(
        run.checked_add(jiff::SignedDuration::from_mins(61))
            .unwrap(),
    );
    h.ok().await;
    let (next, urls) = scheduled_urls(&h).await;
    let next_run = run
        .checked_add(jiff::SignedDuration::from_hours(24))
        .unwrap();
    assert_eq!(next, next_run.as_second().to_string());
    assert!(urls["manifest.txt"].contains(
        &next_run
            .to_string()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    ));
}

/// A Job as the CronJob makes it at `minute` (its template's labels and spec).
async fn scheduled_job(h: &Harness, minute: u64) -> String {
    let cron: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(h.client(), TENANT);
    let template = cron
        .get("scheduled-backup")
        .await
        .unwrap()
        .spec
        .unwrap()
        .job_template;
    let name = format!("scheduled-backup-{minute}");
    let mut job = Job {
        metadata: template.metadata.unwrap_or_default(),
        spec: template.spec,
        status: None,
    };
    job.metadata.name = Some(name.clone());
    job.metadata.namespace = Some(TENANT.into());
    let jobs: Api<Job> = Api::namespaced(h.client(), TENANT);
    jobs.create(&PostParams::default(), &job).await.unwrap();
    name
}

#[tokio::test]
async fn scheduled_backups_are_recorded_from_their_jobs_and_a_failure_never_fails_the_tenant() {
    let h = harness().await;
    h.install().await;
    let first = scheduled_job(&h, 29_418_497).await;
    h.ok().await;
    let s = h.status().await;
    assert_eq!(s.backups[0].name, first);
    assert_eq!(s.backups[0].outcome, herd_k8s::crd::BackupOutcome::Running);

    let summary = "location s3://herd-backups/final/scheduled/keep-7d/lyon/20261208T021700Z/\nbytes database.dump 1048576\nbytes media.tar 4096\nbytes app-secrets.env.age 700\nobjects 3\nchecksums 3\nmanifest-sha256 ".to_owned() + &"cd".repeat(32) + "\n";
    h.backup_reported(&first, &summary).await;
    h.ok().await;
    let s = h.status().await;
    let b = &s.backups[0];
    assert_eq!(b.outcome, herd_k8s::crd::BackupOutcome::Succeeded);
    assert_eq!(b.reason, herd_k8s::crd::BackupReason::Scheduled);
    assert_eq!(b.method, herd_k8s::crd::BackupMethod::Dump);
    assert_eq!(b.size_bytes, Some(1_048_576 + 4096 + 700));
    assert_eq!(b.duration_seconds, Some(150));
    assert_eq!(b.checksum.as_deref(), Some("cd".repeat(32).as_str()));
    assert_eq!(
        b.location.as_deref(),
        Some("s3://herd-backups/final/scheduled/keep-7d/lyon/20261208T021700Z/")
    );
    assert_eq!(
        s.last_successful_backup.as_deref(),
        Some("2026-12-08T02:19:35Z")
    );

    // One that reports a checksum short is not a backup: failed, with why.
    let second = scheduled_job(&h, 29_419_937).await;
    h.backup_reported(&second, &summary.replace("checksums 3", "checksums 2"))
        .await;
    // And one that failed outright.
    let third = scheduled_job(&h, 29_421_377).await;
    h.fail(&third).await;
    h.ok().await;
    let s = h.status().await;
    let by = |n: &str| s.backups.iter().find(|b| b.name == n).unwrap().clone();
    assert_eq!(by(&second).outcome, herd_k8s::crd::BackupOutcome::Failed);
    assert!(
        by(&second)
            .message
            .unwrap()
            .contains("2 checksums for 3 objects"),
        "not verified"
    );
    assert_eq!(by(&third).outcome, herd_k8s::crd::BackupOutcome::Failed);
    assert!(by(&third).message.unwrap().contains("BackoffLimitExceeded"));
    // The tenant runs on: a failed backup is an alert, not a failed server.
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(condition(&s, "Migrations"), "Done");
    assert_eq!(
        s.last_successful_backup.as_deref(),
        Some("2026-12-08T02:19:35Z")
    );
}

#[tokio::test]
async fn an_unverified_backup_does_not_let_the_upgrade_through() {
    let h = harness().await;
    h.install().await;
    h.edit(|s| s["version"] = json!("v4.8.0")).await;
    h.ok().await;
    let job = "backup-before-v4-8-0";
    // It succeeded, but uploaded an empty dump.
    h.backup_reported(
        job,
        &verified_summary(job).replace("database.dump 1048576", "database.dump 0"),
    )
    .await;
    h.ok().await;
    assert!(h.job("migrate-pre-v4-8-0").await.is_none(), "no migration");
    assert!(h.web_image().await.ends_with(":v4.7.6"));
    // …and is taken again (its next attempt).
    let again = h.job(job).await.unwrap();
    assert_eq!(
        again.metadata.annotations.unwrap_or_default()["herd.dev/attempt"],
        "2"
    );
    assert_eq!(h.status().await.phase, Phase::Upgrading);
    let s = h.status().await;
    let record = s.backups.iter().find(|b| b.name == job);
    assert!(record.is_none_or(|r| r.reason == herd_k8s::crd::BackupReason::BeforeUpgrade));
}

/// Without a backup target an upgrade does not start: it waits for one, and says so.
#[tokio::test]
async fn without_a_backup_target_an_upgrade_waits() {
    let h = harness_with(common::lyon("community"), false).await;
    h.install().await;
    h.edit(|s| s["version"] = json!("v4.8.0")).await;
    h.ok().await;
    assert!(h.job("backup-before-v4-8-0").await.is_none());
    assert!(h.job("migrate-pre-v4-8-0").await.is_none());
    let s = h.status().await;
    assert_eq!(s.phase, Phase::Failed);
    assert!(s.last_error.unwrap().contains("HERD_BACKUP_S3_BUCKET"));
    assert_eq!(s.running_version.as_deref(), Some("v4.7.6"));
}

mod cnpg {
    //! CloudNativePG's kinds, registered in the fake cluster as the CRDs would be.
    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "postgresql.cnpg.io",
        version = "v1",
        kind = "Cluster",
        namespaced
    )]
    pub struct ClusterSpec {
        pub instances: i64,
    }

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "postgresql.cnpg.io",
        version = "v1",
        kind = "ScheduledBackup",
        namespaced
    )]
    pub struct ScheduledBackupSpec {
        pub schedule: String,
    }

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema)]
    #[kube(
        group = "postgresql.cnpg.io",
        version = "v1",
        kind = "Backup",
        namespaced
    )]
    pub struct BackupSpec {
        pub cluster: serde_json::Value,
    }
}

#[tokio::test]
async fn cloudnative_pg_backups_are_recorded_from_their_status_with_the_tenants_own_credentials() {
    let mut i = common::lyon("community");
    i.spec.database.mode = herd_k8s::crd::DatabaseMode::CloudNativePg;
    let cluster = fake_cluster::start_with(|b| {
        b.with_resource::<Instance>()
            .with_resource::<cnpg::Cluster>()
            .with_resource::<cnpg::ScheduledBackup>()
            .with_resource::<cnpg::Backup>()
    })
    .await;
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), NS);
    api.create(&PostParams::default(), &with_status(i))
        .await
        .unwrap();
    let ctx = Context::new(cluster.client.clone(), settings(true), "herd-operator-test");
    let h = Harness { cluster, ctx };
    backup_credentials(&h).await;
    // The provider's per-tenant credentials, scoped to this tenant's prefix.
    let own: Api<Secret> = Api::namespaced(h.client(), NS);
    own.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "herd-backup-tenant-credentials", "namespace": NS },
            "stringData": { "lyon.AWS_ACCESS_KEY_ID": "AKIALYONONLY", "lyon.AWS_SECRET_ACCESS_KEY": "lyon-only-secret" },
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    h.ok().await;
    h.ok().await;
    let dynamic = |kind: &str| {
        let gvk = kube::api::GroupVersionKind::gvk("postgresql.cnpg.io", "v1", kind);
        Api::<kube::api::DynamicObject>::namespaced_with(
            h.client(),
            TENANT,
            &kube::api::ApiResource::from_gvk(&gvk),
        )
    };
    let sb = dynamic("ScheduledBackup").get("scheduled").await.unwrap();
    assert_eq!(sb.data["spec"]["cluster"]["name"], "postgres");
    let pg = dynamic("Cluster").get("postgres").await.unwrap();
    assert_eq!(
        pg.data["spec"]["backup"]["barmanObjectStore"]["destinationPath"],
        "s3://herd-backups/final/cnpg/lyon/"
    );
    // The tenant's own credentials, never the platform's.
    let values = tenant_secret_values(&h).await;
    let creds: Vec<_> = values.iter().filter(|(s, _, _)| s == "backup-s3").collect();
    assert!(creds
        .iter()
        .any(|(_, k, v)| k == "ACCESS_KEY_ID" && v == "AKIALYONONLY"));
    assert!(!values.iter().any(|(_, _, v)| v.contains(SECRET_ACCESS_KEY)));

    // CloudNativePG reports a backup (as its ScheduledBackup makes them).
    let backups = dynamic("Backup");
    let backup: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup",
        "metadata": { "name": "scheduled-20261208021700", "namespace": TENANT,
                      "labels": { "cnpg.io/cluster": "postgres", "cnpg.io/scheduled-backup": "scheduled" } },
        "spec": { "cluster": { "name": "postgres" } },
        "status": {
            "phase": "completed", "startedAt": "2026-12-08T02:17:00Z", "stoppedAt": "2026-12-08T02:21:10Z",
            "destinationPath": "s3://herd-backups/final/cnpg/lyon/", "backupId": "20261208T021700",
        },
    }))
    .unwrap();
    backups
        .create(&PostParams::default(), &backup)
        .await
        .unwrap();
    h.ok().await;
    let s = h.status().await;
    let b = s
        .backups
        .iter()
        .find(|b| b.name == "scheduled-20261208021700")
        .unwrap();
    assert_eq!(b.method, herd_k8s::crd::BackupMethod::Barman);
    assert_eq!(b.outcome, herd_k8s::crd::BackupOutcome::Succeeded);
    assert_eq!(b.duration_seconds, Some(250));
    assert_eq!(b.size_bytes, None, "barman does not say");
    assert!(b
        .location
        .as_deref()
        .unwrap()
        .contains("s3://herd-backups/final/cnpg/lyon/ (barman backup 20261208T021700)"));
    assert_eq!(
        s.last_successful_backup.as_deref(),
        Some("2026-12-08T02:21:10Z")
    );
}
