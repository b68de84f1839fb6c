//! Where a tenant is in its life, and what to apply next: first install in Mastodon's order
//! (prepare the database → create the owner → start the app), upgrades in Mastodon's order
//! (pre-deployment migrations → roll the Deployments → post-deployment migrations), each
//! step only once the previous Job succeeded. Pure: the operator observes, asks [`plan`],
//! applies what it says and writes the status.

use crate::crd::{App, Instance};
use crate::render::mastodon::version_slug;
use crate::render::{self, Child, RenderError, Tenant};
use crate::status::{JobState, Observed};
use std::collections::BTreeSet;

/// The Job that creates the first owner account (both apps).
pub const CREATE_OWNER_JOB: &str = "create-owner";

/// The Deployments of each app that must be rolled out for the app to run.
pub fn app_deployments(app: App) -> &'static [&'static str] {
    match app {
        App::Mastodon => &["web", "streaming", "sidekiq"],
        App::Gotosocial => &["web"],
    }
}

/// How many times a set-up or migration Job is made before its step fails for a human to
/// look at (each attempt itself retries its pod twice: `backoffLimit`).
pub const JOB_ATTEMPTS: u32 = 3;

/// The annotation numbering a Job's attempt.
pub const ATTEMPT_ANNOTATION: &str = "herd.dev/attempt";

/// The Instance's record of the attempt each Job is at (a JSON object, Job name → attempt),
/// written before a failed attempt is deleted: a replacement that did not get made (an
/// error in between) is made at the same number, never back at 1.
pub const ATTEMPTS_ANNOTATION: &str = "herd.dev/job-attempts";

/// The attempts recorded on the Instance.
pub fn recorded_attempts(
    instance: &crate::crd::Instance,
) -> std::collections::BTreeMap<String, u32> {
    instance
        .annotation(ATTEMPTS_ANNOTATION)
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default()
}

/// The step a tenant is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Install: waiting for PostgreSQL and Redis to be ready before preparing the database.
    WaitForData,
    /// Install: `rails db:prepare` runs (Mastodon).
    PrepareDatabase,
    /// Install: the owner account is being created.
    CreateOwner,
    /// Install: web, streaming and sidekiq are starting.
    StartApp,
    /// Installed and on the spec's version.
    Ready,
    /// Upgrade: the database is backed up (and the backup verified) before anything moves.
    BackupBeforeUpgrade,
    /// Upgrade: pre-deployment migrations run; the Deployments stay on the old version.
    MigrateBeforeRoll,
    /// Upgrade: the Deployments roll to the new version.
    Roll,
    /// Upgrade: post-deployment migrations run.
    MigrateAfterRoll,
    /// The upgrade is not allowed (skips a minor series, or goes backwards); nothing moves.
    Refused(String),
    /// A Job of the current step failed [`JOB_ATTEMPTS`] times; nothing moves until it is
    /// deleted (to retry).
    JobFailed { job: String, message: String },
}

impl Step {
    pub fn is_install(&self) -> bool {
        matches!(
            self,
            Step::WaitForData | Step::PrepareDatabase | Step::CreateOwner | Step::StartApp
        )
    }

    pub fn is_upgrade(&self) -> bool {
        matches!(
            self,
            Step::BackupBeforeUpgrade
                | Step::MigrateBeforeRoll
                | Step::Roll
                | Step::MigrateAfterRoll
        )
    }

    /// A short name, for logs and Events.
    pub fn name(&self) -> &'static str {
        match self {
            Step::WaitForData => "WaitForData",
            Step::PrepareDatabase => "PrepareDatabase",
            Step::CreateOwner => "CreateOwner",
            Step::StartApp => "StartApp",
            Step::Ready => "Ready",
            Step::BackupBeforeUpgrade => "BackupBeforeUpgrade",
            Step::MigrateBeforeRoll => "MigrateBeforeRoll",
            Step::Roll => "Roll",
            Step::MigrateAfterRoll => "MigrateAfterRoll",
            Step::Refused(_) => "UpgradeRefused",
            Step::JobFailed { .. } => "JobFailed",
        }
    }
}

/// What to do now.
#[derive(Debug, Clone)]
pub struct Plan {
    pub step: Step,
    /// The version the tenant runs, for the status: set when an install or upgrade is
    /// complete, never moved by a failed or refused one.
    pub running_version: Option<String>,
    /// The children to apply now, in order.
    pub apply: Vec<Child>,
    /// `Kind/name` of every child that belongs to the tenant at its target state; children
    /// of prunable kinds not in this set are deleted.
    pub keep: BTreeSet<String>,
    /// The owner's one-time password Secret must exist before the owner Job is created.
    pub needs_owner_password: bool,
    /// The reset that Secret is for (0: the install).
    pub owner_password_for: u32,
    /// The owner-password reset done, for the status (see [`reset_owner_job_name`]).
    pub owner_password_generation: Option<u32>,
    /// The moderator-token Secret ([`MODERATOR_TOKEN_SECRET`]) must exist, for generation
    /// `moderator_token_for`, before the moderator Job is made (never for a revoke-only
    /// generation: it has no token).
    pub needs_moderator_token: bool,
    /// The moderator-token generation that Secret is for.
    pub moderator_token_for: u32,
    /// The moderator-token generation done, for the status (see
    /// [`moderator_token_job_name`]).
    pub moderator_token_generation: Option<u32>,
    /// Failed Jobs to delete before applying, each replaced by its next attempt (in
    /// `apply`).
    pub replace: Vec<String>,
    /// The backup Job to make now before an upgrade (the operator presigns its URLs and
    /// makes it, see [`crate::render::backup::before_upgrade_backup`]).
    pub backup_before_upgrade: Option<String>,
}

/// The Job that sets reset number `generation` of the owner's password.
pub fn reset_owner_job_name(generation: u32) -> String {
    format!("reset-owner-password-{generation}")
}

pub use herd_domain::version::Version;

/// Whether `from` → `to` is an upgrade Herd runs: the control plane's rule
/// ([`herd_domain::version::check_upgrade`]), checked again here before anything moves.
pub fn check_upgrade(app: App, from: &str, to: &str) -> Result<(), String> {
    let app = match app {
        App::Mastodon => herd_domain::version::App::Mastodon,
        App::Gotosocial => herd_domain::version::App::Gotosocial,
    };
    herd_domain::version::check_upgrade(app, from, to)
}

fn job_state<'a>(o: &'a Observed, name: &str) -> Option<&'a JobState> {
    o.jobs.get(name)
}

/// A failed Job of the current step: replaced by its next attempt while it has attempts
/// left (then `None`: the step goes on, and applies the Job anew), otherwise the step fails.
fn job_failed(name: &str, o: &Observed, plan: &mut Plan) -> Option<Step> {
    let Some(JobState::Failed(message)) = o.jobs.get(name) else {
        return None;
    };
    let attempt = o.job_attempts.get(name).copied().unwrap_or(1);
    if attempt < JOB_ATTEMPTS {
        plan.replace.push(name.to_owned());
        return None;
    }
    Some(Step::JobFailed {
        job: name.to_owned(),
        message: format!("{message}; attempt {attempt} of {JOB_ATTEMPTS}"),
    })
}

/// Whether `name` is now to be made (absent, or a failed attempt being replaced).
fn to_make(name: &str, o: &Observed, plan: &Plan) -> bool {
    !o.jobs.contains_key(name) || plan.replace.iter().any(|r| r == name)
}

/// The Jobs of `jobs` named `name`, numbered as the attempt after the observed one when it
/// replaces a failed one.
pub fn attempt_of(mut jobs: Vec<Child>, name: &str, o: &Observed, plan: &Plan) -> Vec<Child> {
    let at = o.job_attempts.get(name).copied().unwrap_or(1);
    let number = if plan.replace.iter().any(|r| r == name) {
        Some(at + 1)
    } else if !o.jobs.contains_key(name) && at > 1 {
        // The recorded attempt whose Job was not made yet.
        Some(at)
    } else {
        None
    };
    if let Some(next) = number {
        for c in &mut jobs {
            if let Child::Job(j) = c {
                j.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(ATTEMPT_ANNOTATION.to_owned(), next.to_string());
            }
        }
    }
    jobs
}

fn succeeded(state: Option<&JobState>) -> bool {
    matches!(state, Some(JobState::Succeeded))
}

/// Every Deployment of the app is rolled out at `version`.
pub fn rolled_out(app: App, o: &Observed, version: &str) -> bool {
    app_deployments(app).iter().all(|d| {
        o.deployments
            .get(*d)
            .is_some_and(|s| s.rolled_out_at(version))
    })
}

/// The children a tenant has in steady state: everything rendered except one-off Jobs.
fn steady(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    Ok(render::render(t)?
        .into_iter()
        .filter(|c| !matches!(c, Child::Job(_)))
        .collect())
}

fn named_job(jobs: Vec<Child>, name: &str) -> Vec<Child> {
    jobs.into_iter()
        .filter(|c| matches!(c, Child::Job(j) if j.metadata.name.as_deref() == Some(name)))
        .collect()
}

/// Decides the step and what to apply, from the Instance (its spec and the running version
/// in its status) and what was observed.
pub fn plan(t: &Tenant<'_>, observed: &Observed) -> Result<Plan, RenderError> {
    let spec = &t.instance.spec;
    let running = t.instance.installed_version().map(str::to_owned);
    let target = steady(t)?;
    let keep: BTreeSet<String> = target.iter().map(Child::describe).collect();
    let mut plan = Plan {
        step: Step::Ready,
        running_version: running.clone(),
        apply: Vec::new(),
        keep,
        needs_owner_password: false,
        owner_password_for: 0,
        owner_password_generation: t
            .instance
            .status
            .as_ref()
            .and_then(|s| s.owner_password_generation),
        needs_moderator_token: false,
        moderator_token_for: 0,
        moderator_token_generation: t
            .instance
            .status
            .as_ref()
            .and_then(|s| s.moderator_token_generation),
        replace: Vec::new(),
        backup_before_upgrade: None,
    };
    match running {
        None => install(t, observed, target, &mut plan)?,
        // The same release (a release candidate is not its final release: moving from one
        // to the other is an upgrade, with its migrations).
        Some(r)
            if herd_domain::version::Precedence::of(&r)
                == herd_domain::version::Precedence::of(&spec.version) =>
        {
            plan.running_version = Some(spec.version.clone());
            plan.apply = target;
        }
        Some(r) => upgrade(t, observed, &r, target, &mut plan)?,
    }
    if plan.step == Step::Ready {
        reset_owner_password(t, observed, &mut plan)?;
        moderator_token(t, observed, &mut plan)?;
    }
    Ok(plan)
}

/// Once the tenant runs: a new moderator token asked for (`spec.moderator.tokenGeneration`
/// above the one done) is stored by a Job from a new `moderator-token` Secret, or, for a
/// revoke-only generation, earlier tokens are revoked by a Job without one. A failed
/// attempt is replaced by the next one (the Job is safe to run again); after the last, the
/// server runs on, the failure is the status's ModeratorAccount condition, and a new
/// generation tries again. Nothing is made for GoToSocial (managed moderation's account is
/// made for Mastodon only), nor while the tenant is suspended (the Job waits until it runs
/// again); the status says which.
fn moderator_token(t: &Tenant<'_>, o: &Observed, plan: &mut Plan) -> Result<(), RenderError> {
    let Some(wanted) = &t.instance.spec.moderator else {
        return Ok(());
    };
    let asked = wanted.token_generation;
    if asked == 0
        || plan.moderator_token_generation.unwrap_or(0) >= asked
        || t.instance.spec.app != App::Mastodon
        || t.instance.spec.suspended
    {
        return Ok(());
    }
    let name = moderator_token_job_name(asked);
    let state = job_state(o, &name);
    if succeeded(state) {
        plan.moderator_token_generation = Some(asked);
        return Ok(());
    }
    if matches!(state, Some(JobState::Failed(_))) && job_failed(&name, o, plan).is_some() {
        // The last attempt failed: kept for its logs, reported by the status.
        return Ok(());
    }
    if to_make(&name, o, plan) {
        plan.needs_moderator_token = !wanted.revoked;
        plan.moderator_token_for = asked;
    }
    let job = render::mastodon::moderator_token_job(t, &name, wanted)?;
    plan.apply.extend(attempt_of(vec![job], &name, o, plan));
    Ok(())
}

/// Once the tenant runs: a new owner password asked for (`spec.owner.passwordGeneration`
/// above the one done) is set by a Job from a new `owner-password` Secret.
fn reset_owner_password(t: &Tenant<'_>, o: &Observed, plan: &mut Plan) -> Result<(), RenderError> {
    let asked = t.instance.spec.owner.password_generation;
    if asked == 0 || plan.owner_password_generation.unwrap_or(0) >= asked {
        return Ok(());
    }
    let name = reset_owner_job_name(asked);
    let state = job_state(o, &name);
    if succeeded(state) {
        plan.owner_password_generation = Some(asked);
    } else if matches!(state, Some(JobState::Failed(_))) {
        // The server runs on: the failure is the status's OwnerPassword condition (see
        // [`crate::status::compute`]), and a new reset (a higher generation) tries again.
    } else {
        plan.needs_owner_password = state.is_none();
        plan.owner_password_for = asked;
        plan.apply.push(render::reset_owner_job(t, &name)?);
    }
    Ok(())
}

fn install(
    t: &Tenant<'_>,
    o: &Observed,
    target: Vec<Child>,
    plan: &mut Plan,
) -> Result<(), RenderError> {
    let app = t.instance.spec.app;
    let version = t.instance.spec.version.clone();
    let jobs = render::install_jobs(t)?;
    let owner = job_state(o, CREATE_OWNER_JOB);
    match app {
        App::Mastodon => {
            // Web, streaming and sidekiq wait for the database and the owner.
            let held = app_deployments(app);
            let base: Vec<Child> = target
                .iter()
                .filter(|c| !matches!(c, Child::Deployment(d) if d.metadata.name.as_deref().is_some_and(|n| held.contains(&n))))
                .cloned()
                .collect();
            let db_name = format!("db-prepare-{}", version_slug(&version));
            let db = job_state(o, &db_name);
            if !succeeded(db) {
                plan.step = job_failed(&db_name, o, plan).unwrap_or(Step::PrepareDatabase);
                plan.apply = base;
                // `rails db:prepare` runs once PostgreSQL and Redis answer (it would fail,
                // and use up its attempts, against a database still starting).
                if plan.step == Step::PrepareDatabase
                    && to_make(&db_name, o, plan)
                    && !(o.database_ready && o.redis_ready)
                {
                    plan.step = Step::WaitForData;
                    plan.replace.clear();
                } else if plan.step == Step::PrepareDatabase {
                    let job = attempt_of(named_job(jobs, &db_name), &db_name, o, plan);
                    plan.apply.extend(job);
                }
                return Ok(());
            }
            if !succeeded(owner) {
                plan.step = job_failed(CREATE_OWNER_JOB, o, plan).unwrap_or(Step::CreateOwner);
                plan.apply = base;
                if plan.step == Step::CreateOwner {
                    plan.needs_owner_password = owner.is_none();
                    let job =
                        attempt_of(named_job(jobs, CREATE_OWNER_JOB), CREATE_OWNER_JOB, o, plan);
                    plan.apply.extend(job);
                }
                return Ok(());
            }
            plan.apply = target;
            if rolled_out(app, o, &version) {
                plan.step = Step::Ready;
                plan.running_version = Some(version);
            } else {
                plan.step = Step::StartApp;
            }
        }
        App::Gotosocial => {
            // GoToSocial migrates its database at start; the owner is created once it runs.
            plan.apply = target;
            if !rolled_out(app, o, &version) {
                plan.step = Step::StartApp;
            } else if !succeeded(owner) {
                plan.step = job_failed(CREATE_OWNER_JOB, o, plan).unwrap_or(Step::CreateOwner);
                if plan.step == Step::CreateOwner {
                    plan.needs_owner_password = owner.is_none();
                    let job =
                        attempt_of(named_job(jobs, CREATE_OWNER_JOB), CREATE_OWNER_JOB, o, plan);
                    plan.apply.extend(job);
                }
            } else {
                plan.step = Step::Ready;
                plan.running_version = Some(version);
            }
        }
    }
    Ok(())
}

fn upgrade(
    t: &Tenant<'_>,
    o: &Observed,
    running: &str,
    target: Vec<Child>,
    plan: &mut Plan,
) -> Result<(), RenderError> {
    let spec = &t.instance.spec;
    // The tenant as it runs now: the old version's images.
    let mut current_instance = t.instance.clone();
    current_instance.spec.version = running.to_owned();
    let current = steady(&Tenant {
        instance: &current_instance,
        ..*t
    })?;
    if let Err(why) = check_upgrade(spec.app, running, &spec.version) {
        plan.step = Step::Refused(why);
        plan.keep = current.iter().map(Child::describe).collect();
        plan.apply = current;
        return Ok(());
    }
    // A verified backup of the database first; nothing moves until it is taken.
    let backup = crate::render::backup::before_upgrade_job_name(&spec.version);
    if !succeeded(job_state(o, &backup)) {
        plan.keep = current.iter().map(Child::describe).collect();
        plan.apply = current;
        if t.cluster.backup.is_none() {
            plan.step = Step::Refused(
                "no backup target is configured (HERD_BACKUP_S3_BUCKET), and an upgrade waits for a verified backup of the database".into(),
            );
            return Ok(());
        }
        plan.step = job_failed(&backup, o, plan).unwrap_or(Step::BackupBeforeUpgrade);
        if plan.step == Step::BackupBeforeUpgrade && to_make(&backup, o, plan) {
            plan.backup_before_upgrade = Some(backup);
        }
        return Ok(());
    }
    if spec.app == App::Gotosocial {
        plan.apply = target;
        if rolled_out(spec.app, o, &spec.version) {
            plan.step = Step::Ready;
            plan.running_version = Some(spec.version.clone());
        } else {
            plan.step = Step::Roll;
        }
        return Ok(());
    }
    let (pre, post) = render::upgrade_jobs(t)?;
    let pre_name = pre.describe().trim_start_matches("Job/").to_owned();
    let post_name = post.describe().trim_start_matches("Job/").to_owned();
    let pre_state = job_state(o, &pre_name);
    if !succeeded(pre_state) {
        plan.step = job_failed(&pre_name, o, plan).unwrap_or(Step::MigrateBeforeRoll);
        plan.keep = current.iter().map(Child::describe).collect();
        plan.apply = current;
        if plan.step == Step::MigrateBeforeRoll {
            let job = attempt_of(vec![pre], &pre_name, o, plan);
            plan.apply.extend(job);
        }
        return Ok(());
    }
    plan.apply = target;
    if !rolled_out(spec.app, o, &spec.version) {
        plan.step = Step::Roll;
        return Ok(());
    }
    let post_state = job_state(o, &post_name);
    if succeeded(post_state) {
        plan.step = Step::Ready;
        plan.running_version = Some(spec.version.clone());
    } else {
        plan.step = job_failed(&post_name, o, plan).unwrap_or(Step::MigrateAfterRoll);
        if plan.step == Step::MigrateAfterRoll {
            let job = attempt_of(vec![post], &post_name, o, plan);
            plan.apply.extend(job);
        }
    }
    Ok(())
}

/// The name of the owner-password Secret, read once by the control plane.
pub const OWNER_PASSWORD_SECRET: &str = "owner-password";

/// The Secret holding a new moderator token (key `token`) until the control plane collects
/// it (see [`crate::crd::ModeratorSpec`]). Its annotation [`TOKEN_GENERATION_ANNOTATION`]
/// says which generation it is for.
pub const MODERATOR_TOKEN_SECRET: &str = "moderator-token";

/// The annotation of Secret [`MODERATOR_TOKEN_SECRET`] naming the token generation it was
/// made for.
pub const TOKEN_GENERATION_ANNOTATION: &str = "herd.dev/token-generation";

/// The Job that does generation `generation` of the moderator account's token.
pub fn moderator_token_job_name(generation: u32) -> String {
    format!("moderator-token-{generation}")
}

/// Whether the Instance is being deleted.
pub fn is_deleting(i: &Instance) -> bool {
    i.metadata.deletion_timestamp.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(Version::parse("v4.7.6"), Some(Version(4, 7, 6)));
        assert_eq!(Version::parse("0.20.2"), Some(Version(0, 20, 2)));
        assert_eq!(Version::parse("v4.8.0-beta.1"), Some(Version(4, 8, 0)));
        assert_eq!(Version::parse("v4.8"), Some(Version(4, 8, 0)));
        assert_eq!(Version::parse("latest"), None);
    }

    #[test]
    fn mastodon_upgrades_pass_through_every_minor_series() {
        let m = App::Mastodon;
        assert!(check_upgrade(m, "v4.7.5", "v4.7.6").is_ok());
        assert!(
            check_upgrade(m, "v4.7.6", "v4.7.5").is_ok(),
            "patch downgrade"
        );
        assert!(check_upgrade(m, "v4.5.20", "v4.6.0").is_ok());
        assert!(check_upgrade(m, "v4.7.6", "v5.0.0").is_ok());
        let skip = check_upgrade(m, "v4.4.27", "v4.6.3").expect_err("skips 4.5");
        assert!(skip.contains("v4.5.x first"), "{skip}");
        assert!(check_upgrade(m, "v4.7.6", "v5.1.0").is_err());
        assert!(check_upgrade(m, "v4.7.6", "v4.6.9")
            .expect_err("a minor downgrade")
            .contains("older"));
        assert!(check_upgrade(m, "v4.7.6", "nightly").is_err());
    }

    #[test]
    fn gotosocial_may_skip_but_not_go_back() {
        let g = App::Gotosocial;
        assert!(check_upgrade(g, "0.18.0", "0.20.2").is_ok());
        assert!(check_upgrade(g, "0.20.2", "0.19.0").is_err());
    }
}
