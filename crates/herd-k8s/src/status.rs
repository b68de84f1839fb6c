//! From what the operator observed of a tenant's children to the Instance's status: a
//! phase, a condition per component, and the last error in words an operator can act on.
//! Pure, so every transition is tested without a cluster.

use crate::crd::{App, Condition, Instance, InstanceStatus, Phase};
use crate::lifecycle::Step;
use crate::render::namespace_name;
use std::collections::BTreeMap;

/// The state of a Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed(String),
}

/// A Deployment as read back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeploymentState {
    pub desired: i32,
    pub ready: i32,
    /// Replicas running the current pod template.
    pub updated: i32,
    /// The image tag of its first container (the app version it runs or rolls to).
    pub version: String,
    /// The Deployment controller has seen the latest spec (`observedGeneration`).
    pub current: bool,
    /// Pods of every template, old ones still terminating or serving included
    /// (`status.replicas`).
    pub total: i32,
    /// Pods available for at least `minReadySeconds` (`status.availableReplicas`).
    pub available: i32,
    /// The rollout exceeded its progress deadline (the `Progressing` condition's reason
    /// `ProgressDeadlineExceeded`): its message.
    pub stalled: Option<String>,
}

impl DeploymentState {
    /// The rollout to `version` is complete, as `kubectl rollout status` judges it: the
    /// controller saw the latest spec, every desired replica runs the new template, no old
    /// replica is counted any more, and every new one is available. (Like kubectl, this
    /// does not see pods already terminating: an old pod may still finish its requests
    /// for its grace period.)
    pub fn rolled_out_at(&self, version: &str) -> bool {
        self.current
            && self.stalled.is_none()
            && self.version.trim_start_matches('v') == version.trim_start_matches('v')
            && self.updated >= self.desired
            && self.total <= self.updated
            && self.available >= self.updated
    }
}

/// What the operator read back from the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub database_ready: bool,
    pub redis_ready: bool,
    /// Deployment name → its state.
    pub deployments: BTreeMap<String, DeploymentState>,
    /// Job name → state.
    pub jobs: BTreeMap<String, JobState>,
    /// Job name → which attempt it is (its `herd.dev/attempt` annotation; 1 without).
    pub job_attempts: BTreeMap<String, u32>,
    /// The ingress has an address (the controller picked it up).
    pub ingress_ready: bool,
    /// The backups the cluster reports (scheduled and before upgrades); the Jobs of
    /// scheduled ones are not in `jobs`, those before an upgrade are, failed when they
    /// succeeded without verifying.
    pub backups: Vec<crate::crd::BackupRecord>,
}

fn condition(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: None,
    }
}

fn deployment_condition(
    name: &str,
    type_: &str,
    observed: &Observed,
    suspended: bool,
) -> Condition {
    match observed.deployments.get(name) {
        _ if suspended => condition(
            type_,
            true,
            "Suspended",
            format!("{name} is scaled to zero while suspended"),
        ),
        Some(DeploymentState {
            stalled: Some(why), ..
        }) => condition(
            type_,
            false,
            "ProgressDeadlineExceeded",
            format!("{name}: {why}"),
        ),
        Some(d) if d.ready >= d.desired => condition(
            type_,
            true,
            "Ready",
            format!("{}/{} replicas ready", d.ready, d.desired),
        ),
        Some(d) => condition(
            type_,
            false,
            "Starting",
            format!("{}/{} replicas ready", d.ready, d.desired),
        ),
        None => condition(
            type_,
            false,
            "Missing",
            format!("the {name} Deployment does not exist yet"),
        ),
    }
}

/// The failed Job, if any, as (name, message).
/// A failed install, migration or upgrade Job (not an owner-password reset or a moderator
/// token: those have their own conditions and leave the server running).
fn failed_job(observed: &Observed) -> Option<(&str, &str)> {
    observed.jobs.iter().find_map(|(name, s)| match s {
        JobState::Failed(m) if !is_account_job(name) => Some((name.as_str(), m.as_str())),
        _ => None,
    })
}

/// An owner-password reset's or a moderator token's Job.
fn is_account_job(name: &str) -> bool {
    ["reset-owner-password-", "moderator-token-"]
        .iter()
        .any(|p| {
            name.strip_prefix(p)
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
}

/// The `OwnerPassword` condition, once a new owner password was asked for: true when the
/// asked reset is done, false while its Job runs or when it failed (reason `JobFailed`).
fn owner_password_condition(
    instance: &Instance,
    observed: &Observed,
    ns: &str,
) -> Option<Condition> {
    let asked = instance.spec.owner.password_generation;
    if asked == 0 {
        return None;
    }
    let job = crate::lifecycle::reset_owner_job_name(asked);
    let done = instance
        .status
        .as_ref()
        .and_then(|s| s.owner_password_generation)
        .is_some_and(|g| g >= asked);
    let state = observed.jobs.get(&job);
    Some(if done || matches!(state, Some(JobState::Succeeded)) {
        condition(
            "OwnerPassword",
            true,
            "Reset",
            format!("reset {asked} of the owner's password is done"),
        )
    } else if let Some(JobState::Failed(m)) = state {
        condition(
            "OwnerPassword",
            false,
            "JobFailed",
            format!("Job {job} failed: {m}. The server runs on; read `kubectl logs -n {ns} job/{job}`, then ask for a new password again."),
        )
    } else {
        condition(
            "OwnerPassword",
            false,
            "Running",
            format!("Job {job} sets the owner's new password"),
        )
    })
}

/// The `ModeratorAccount` condition, once managed moderation asked for the moderator
/// account (`spec.moderator`): true when the asked token generation is done, false while
/// it waits or its Job runs, or when the Job's last attempt failed (reason `JobFailed`; the
/// server runs on), or for GoToSocial (reason `Unsupported`).
fn moderator_account_condition(
    instance: &Instance,
    observed: &Observed,
    step: &Step,
    ns: &str,
) -> Option<Condition> {
    const TYPE: &str = "ModeratorAccount";
    let wanted = instance.spec.moderator.as_ref()?;
    let asked = wanted.token_generation;
    if asked == 0 {
        return None;
    }
    if instance.spec.app != App::Mastodon {
        return Some(condition(
            TYPE,
            false,
            "Unsupported",
            "managed moderation's account is made for Mastodon only: no moderator account or token is made on this GoToSocial server".into(),
        ));
    }
    let job = crate::lifecycle::moderator_token_job_name(asked);
    let done = instance
        .status
        .as_ref()
        .and_then(|s| s.moderator_token_generation)
        .is_some_and(|g| g >= asked);
    let state = observed.jobs.get(&job);
    let attempt = observed.job_attempts.get(&job).copied().unwrap_or(1);
    let user = &wanted.username;
    Some(if done || matches!(state, Some(JobState::Succeeded)) {
        if wanted.revoked {
            condition(
                TYPE,
                true,
                "Revoked",
                format!("generation {asked}: every token of @{user} for Herd is revoked, and no new one made"),
            )
        } else {
            condition(
                TYPE,
                true,
                "TokenIssued",
                format!("generation {asked}: @{user} has a new admin API token, earlier ones are revoked"),
            )
        }
    } else if let Some(JobState::Failed(m)) =
        state.filter(|_| attempt >= crate::lifecycle::JOB_ATTEMPTS)
    {
        condition(
            TYPE,
            false,
            "JobFailed",
            format!("Job {job} failed: {m}; attempt {attempt} of {}. The server runs on; read `kubectl logs -n {ns} job/{job}` (an account @{user} Herd did not make, one unconfirmed, without the Moderator role or with another email, is refused, never taken over), fix the cause, then ask for a new moderator token to try again.", crate::lifecycle::JOB_ATTEMPTS),
        )
    } else if instance.spec.suspended {
        condition(
            TYPE,
            false,
            "Waiting",
            format!("generation {asked} of the moderator token waits until the server is no longer suspended"),
        )
    } else if *step != Step::Ready {
        condition(
            TYPE,
            false,
            "Waiting",
            format!("generation {asked} of the moderator token waits until the server runs (now at step {})", step.name()),
        )
    } else {
        condition(
            TYPE,
            false,
            "Running",
            format!("Job {job} makes generation {asked} of the moderator token for @{user}"),
        )
    })
}

/// Computes the status from what was observed and the lifecycle's step and running version
/// (see [`crate::lifecycle::plan`]). `now` is the RFC 3339 time stamped on conditions that
/// change; conditions whose status did not change keep their previous transition time.
pub fn compute(
    instance: &Instance,
    observed: &Observed,
    step: &Step,
    running_version: Option<&str>,
    now: &str,
) -> InstanceStatus {
    let spec = &instance.spec;
    let previous = instance.status.clone().unwrap_or_default();
    let ns = namespace_name(&spec.slug);

    let migrations = match failed_job(observed) {
        Some((name, msg)) => condition(
            "Migrations",
            false,
            "JobFailed",
            format!("Job {name} failed: {msg}"),
        ),
        None if observed.jobs.values().any(|s| *s == JobState::Running) => condition(
            "Migrations",
            false,
            "Running",
            "a migration or set-up Job is running".into(),
        ),
        None => condition("Migrations", true, "Done", "no migration pending".into()),
    };
    let mut conditions = vec![
        condition(
            "Database",
            observed.database_ready,
            if observed.database_ready {
                "Ready"
            } else {
                "Starting"
            },
            if observed.database_ready {
                "PostgreSQL accepts connections".into()
            } else {
                "PostgreSQL is not ready yet".into()
            },
        ),
        migrations,
    ];
    match spec.app {
        App::Mastodon => {
            conditions.insert(
                1,
                condition(
                    "Redis",
                    observed.redis_ready,
                    if observed.redis_ready {
                        "Ready"
                    } else {
                        "Starting"
                    },
                    if observed.redis_ready {
                        "Redis is ready".into()
                    } else {
                        "Redis is not ready yet".into()
                    },
                ),
            );
            conditions.push(deployment_condition("web", "Web", observed, spec.suspended));
            conditions.push(deployment_condition(
                "streaming",
                "Streaming",
                observed,
                spec.suspended,
            ));
            conditions.push(deployment_condition(
                "sidekiq",
                "Sidekiq",
                observed,
                spec.suspended,
            ));
        }
        App::Gotosocial => {
            conditions.push(deployment_condition("web", "Web", observed, spec.suspended))
        }
    }
    conditions.extend(owner_password_condition(instance, observed, &ns));
    conditions.extend(moderator_account_condition(instance, observed, step, &ns));
    conditions.push(condition(
        "Ingress",
        observed.ingress_ready,
        if observed.ingress_ready {
            "Ready"
        } else {
            "Pending"
        },
        if observed.ingress_ready {
            "the ingress has an address".into()
        } else {
            "waiting for the ingress controller".into()
        },
    ));
    for c in &mut conditions {
        let unchanged = previous
            .conditions
            .iter()
            .find(|p| p.type_ == c.type_)
            .filter(|p| p.status == c.status);
        c.last_transition_time = Some(
            unchanged
                .and_then(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.to_owned()),
        );
    }

    let (phase, last_error) = match step {
        Step::JobFailed { job, message } => (
            Phase::Failed,
            Some(format!(
                "Job {job} failed ({message}). The running version is unchanged. Read its logs with `kubectl logs -n {ns} job/{job}`, fix the cause, then delete the Job to retry."
            )),
        ),
        Step::Refused(why) => (
            Phase::Failed,
            Some(format!(
                "upgrade refused: {why}. The tenant keeps running {}; set spec.version back or to an allowed version.",
                running_version.unwrap_or("its current version")
            )),
        ),
        _ if spec.suspended => (Phase::Suspended, None),
        s if s.is_install() => (Phase::Provisioning, None),
        s if s.is_upgrade() => (Phase::Upgrading, None),
        _ => (Phase::Running, None),
    };

    InstanceStatus {
        phase,
        conditions,
        observed_generation: instance.metadata.generation,
        running_version: running_version.map(str::to_owned),
        url: Some(format!(
            "https://{}",
            spec.web_domain.as_deref().unwrap_or(&spec.local_domain)
        )),
        last_error,
        owner_password_generation: instance
            .status
            .as_ref()
            .and_then(|s| s.owner_password_generation),
        // The operator sets it once a moderator-token Job succeeded; kept otherwise.
        moderator_token_generation: previous.moderator_token_generation,
        backups: crate::backups::merge(&previous.backups, &observed.backups),
        last_successful_backup: crate::backups::last_successful(
            &observed.backups,
            previous.last_successful_backup.as_deref(),
        ),
        // The operator sets these from the restore's and the export's own steps (see
        // `crate::operator`); otherwise what an earlier status said is kept.
        restore: previous.restore.clone(),
        export: previous.export.clone(),
        // Read again by the operator when due (`crate::media_bucket`).
        media_bucket: previous.media_bucket.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{InstanceSpec, OwnerSpec};
    use crate::lifecycle::plan;
    use crate::render::{ClusterSettings, Tenant};
    use crate::secrets::AppSecrets;
    use herd_domain::plan::default_catalogue;

    fn instance() -> Instance {
        let limits = default_catalogue()[0].limits.clone();
        let owner = OwnerSpec {
            username: "lea".into(),
            email: "a@example.org".into(),
            password_generation: 0,
        };
        let mut i = Instance::new(
            "lyon",
            InstanceSpec::new(
                App::Mastodon,
                "v4.7.6",
                "lyon",
                "lyon.social",
                "community",
                &limits,
                owner,
            ),
        );
        i.metadata.generation = Some(3);
        i
    }

    fn ready(n: i32, version: &str) -> DeploymentState {
        DeploymentState {
            desired: n,
            ready: n,
            updated: n,
            version: version.into(),
            current: true,
            total: n,
            available: n,
            stalled: None,
        }
    }

    fn healthy() -> Observed {
        Observed {
            database_ready: true,
            redis_ready: true,
            deployments: ["web", "streaming", "sidekiq"]
                .into_iter()
                .map(|n| (n.to_owned(), ready(1, "v4.7.6")))
                .collect(),
            jobs: [
                ("db-prepare-v4-7-6".to_owned(), JobState::Succeeded),
                ("create-owner".to_owned(), JobState::Succeeded),
            ]
            .into_iter()
            .collect(),
            job_attempts: BTreeMap::new(),
            ingress_ready: true,
            backups: Vec::new(),
        }
    }

    /// The status the operator would write: the lifecycle's plan, then `compute`.
    fn status(i: &Instance, o: &Observed, now: &str) -> InstanceStatus {
        status_on(i, o, now, true)
    }

    fn status_on(i: &Instance, o: &Observed, now: &str, backup: bool) -> InstanceStatus {
        let secrets = AppSecrets::generate();
        let cluster = ClusterSettings {
            backup: backup.then(|| crate::render::backup::BackupTarget {
                bucket: "b".into(),
                endpoint: "https://s3.example".into(),
                prefix: String::new(),
                region: "us-east-1".into(),
                secrets_recipient: "age1x".into(),
            }),
            ..ClusterSettings::default()
        };
        let t = Tenant {
            instance: i,
            secrets: &secrets,
            cluster: &cluster,
        };
        let p = plan(&t, o).expect("plan");
        compute(i, o, &p.step, p.running_version.as_deref(), now)
    }

    fn cond<'a>(s: &'a InstanceStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    #[test]
    fn a_new_instance_provisions_then_runs() {
        let mut i = instance();
        let s = status(&i, &Observed::default(), "t1");
        assert_eq!(s.phase, Phase::Provisioning);
        assert_eq!(s.running_version, None);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(cond(&s, "Web").reason, "Missing");
        let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                "Database",
                "Redis",
                "Migrations",
                "Web",
                "Streaming",
                "Sidekiq",
                "Ingress"
            ]
        );
        i.status = Some(s);
        let s = status(&i, &healthy(), "t2");
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(s.running_version.as_deref(), Some("v4.7.6"));
        assert_eq!(s.url.as_deref(), Some("https://lyon.social"));
        assert_eq!(cond(&s, "Web").last_transition_time.as_deref(), Some("t2"));
        // Nothing changed: transition times are kept.
        i.status = Some(s);
        let s = status(&i, &healthy(), "t3");
        assert_eq!(cond(&s, "Web").last_transition_time.as_deref(), Some("t2"));
    }

    #[test]
    fn a_rollout_is_done_only_as_kubectl_rollout_status_judges_it() {
        let done = ready(2, "v4.8.0");
        assert!(done.rolled_out_at("v4.8.0"));
        assert!(!done.rolled_out_at("v4.7.6"), "another version");
        let cases = [
            (
                "spec not yet seen",
                DeploymentState {
                    current: false,
                    ..done.clone()
                },
            ),
            (
                "a new replica not updated",
                DeploymentState {
                    updated: 1,
                    ..done.clone()
                },
            ),
            (
                "an old replica pending termination",
                DeploymentState {
                    total: 3,
                    ..done.clone()
                },
            ),
            (
                "an updated replica not available",
                DeploymentState {
                    available: 1,
                    ..done.clone()
                },
            ),
            (
                "progress deadline exceeded",
                DeploymentState {
                    stalled: Some("ReplicaSet \"web-1\" has timed out progressing.".into()),
                    ..done.clone()
                },
            ),
        ];
        for (what, state) in cases {
            assert!(!state.rolled_out_at("v4.8.0"), "{what}");
        }
        // A stalled rollout says so in its condition.
        let mut o = healthy();
        o.deployments.insert(
            "web".into(),
            DeploymentState {
                stalled: Some("ReplicaSet \"web-1\" has timed out progressing.".into()),
                ..ready(1, "v4.7.6")
            },
        );
        let s = status(&instance(), &o, "t1");
        let web = cond(&s, "Web");
        assert_eq!(web.reason, "ProgressDeadlineExceeded");
        assert!(
            web.message.contains("timed out progressing"),
            "{}",
            web.message
        );
    }

    #[test]
    fn an_upgrade_keeps_the_running_version_until_done() {
        let mut i = instance();
        i.status = Some(status(&i, &healthy(), "t1"));
        i.spec.version = "v4.8.0".into();
        let mut o = healthy();
        // The backup first: the upgrade waits for it, running nothing else.
        let s = status(&i, &o, "t2");
        assert_eq!(s.phase, Phase::Upgrading);
        o.jobs
            .insert("backup-before-v4-8-0".into(), JobState::Succeeded);
        o.jobs
            .insert("migrate-pre-v4-8-0".into(), JobState::Running);
        let s = status(&i, &o, "t2");
        assert_eq!(s.phase, Phase::Upgrading);
        assert_eq!(s.running_version.as_deref(), Some("v4.7.6"));
        assert_eq!(cond(&s, "Migrations").reason, "Running");
        // Rolled and post-migrated: the new version runs.
        o.jobs
            .insert("migrate-pre-v4-8-0".into(), JobState::Succeeded);
        o.jobs
            .insert("migrate-post-v4-8-0".into(), JobState::Succeeded);
        for d in o.deployments.values_mut() {
            *d = ready(1, "v4.8.0");
        }
        let s = status(&i, &o, "t3");
        assert_eq!(s.phase, Phase::Running);
        assert_eq!(s.running_version.as_deref(), Some("v4.8.0"));
    }

    #[test]
    fn a_failed_job_fails_the_instance_with_an_actionable_error() {
        let mut i = instance();
        i.status = Some(status(&i, &healthy(), "t1"));
        i.spec.version = "v4.8.0".into();
        let mut o = healthy();
        o.jobs
            .insert("backup-before-v4-8-0".into(), JobState::Succeeded);
        o.jobs.insert(
            "migrate-pre-v4-8-0".into(),
            JobState::Failed("BackoffLimitExceeded".into()),
        );
        // An attempt with attempts left is replaced, not failed.
        assert_eq!(status(&i, &o, "t2").phase, Phase::Upgrading);
        o.job_attempts
            .insert("migrate-pre-v4-8-0".into(), crate::lifecycle::JOB_ATTEMPTS);
        let s = status(&i, &o, "t2");
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(
            s.running_version.as_deref(),
            Some("v4.7.6"),
            "the running version is untouched"
        );
        assert_eq!(cond(&s, "Migrations").reason, "JobFailed");
        let err = s.last_error.expect("error");
        assert!(
            err.contains("kubectl logs -n herd-lyon job/migrate-pre-v4-8-0"),
            "{err}"
        );
    }

    #[test]
    fn a_refused_upgrade_fails_and_says_which_version_to_take() {
        let mut i = instance();
        i.status = Some(status(&i, &healthy(), "t1"));
        i.spec.version = "v4.9.0".into();
        let s = status(&i, &healthy(), "t2");
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(s.running_version.as_deref(), Some("v4.7.6"));
        let err = s.last_error.expect("error");
        assert!(err.contains("v4.8.x first"), "{err}");
    }

    /// Before an upgrade's first migration, a verified backup: without a backup target
    /// the upgrade does not start, and says why.
    #[test]
    fn an_upgrade_waits_for_a_backup_and_needs_a_backup_target() {
        let mut i = instance();
        i.status = Some(status(&i, &healthy(), "t1"));
        i.spec.version = "v4.8.0".into();
        let s = status_on(&i, &healthy(), "t2", false);
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(s.running_version.as_deref(), Some("v4.7.6"));
        let err = s.last_error.expect("error");
        assert!(err.contains("HERD_BACKUP_S3_BUCKET"), "{err}");
        assert!(err.contains("verified backup"), "{err}");
    }

    #[test]
    fn suspension_is_its_own_phase() {
        let mut i = instance();
        i.status = Some(status(&i, &healthy(), "t1"));
        i.spec.suspended = true;
        let mut o = healthy();
        for d in o.deployments.values_mut() {
            *d = ready(0, "v4.7.6");
        }
        let s = status(&i, &o, "t2");
        assert_eq!(s.phase, Phase::Suspended);
        assert_eq!(cond(&s, "Web").reason, "Suspended");
        assert_eq!(s.last_error, None);
    }

    #[test]
    fn gotosocial_has_no_redis_streaming_or_sidekiq() {
        let mut i = instance();
        i.spec.app = App::Gotosocial;
        let mut o = healthy();
        o.deployments.retain(|k, _| k == "web");
        o.redis_ready = false;
        let s = status(&i, &o, "t1");
        let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Database", "Migrations", "Web", "Ingress"]);
        assert_eq!(s.phase, Phase::Running);
    }
}
