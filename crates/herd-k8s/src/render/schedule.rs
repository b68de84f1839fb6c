//! Scheduled backups, on the plan's schedule (`spec.backup`): a CronJob that dumps the
//! database (StatefulSet PostgreSQL), archives media kept on a volume and uploads the
//! sealed app secrets, through presigned URLs (see [`super::backup`]); for a
//! CloudNativePG tenant, CloudNativePG's own `ScheduledBackup` of its `Cluster` to the
//! object store (barman, with WAL archiving), the CronJob then carrying only the media and
//! the secrets.
//!
//! A CronJob cannot ask for URLs when it starts, so the operator keeps the Secret
//! [`SCHEDULED_BACKUP_URLS`] signed for the coming run ([`Schedule::upcoming`]): its
//! objects are under that run's own key prefix, its URLs expire
//! [`SLOT_TOLERANCE_SECS`] plus two hours after the run's time, and once that run's time
//! is more than [`SLOT_TOLERANCE_SECS`] past, the next reconcile (at most ten minutes
//! later) signs the next run's. A run that finds URLs for another run fails, saying so,
//! instead of overwriting that run's backup.
//!
//! Runs are spread over the interval by the tenant's slug, so tenants do not all dump at
//! midnight.

use super::backup::{scheduled_job_spec, BackupTarget};
use super::data::CNPG_CLUSTER;
use super::{build, Child, RenderError, Tenant};
use crate::crd::InstanceSpec;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The CronJob.
pub const SCHEDULED_BACKUP: &str = "scheduled-backup";
/// The Secret with the coming run's upload URLs (and `slot`, its time in epoch seconds).
pub const SCHEDULED_BACKUP_URLS: &str = "scheduled-backup-urls";
/// CloudNativePG's `ScheduledBackup` of the tenant's `Cluster`.
pub const CNPG_SCHEDULED_BACKUP: &str = "scheduled";
/// The Secret in the tenant namespace with the tenant's own object-store credentials for
/// CloudNativePG (`ACCESS_KEY_ID`, `ACCESS_SECRET_KEY`, `REGION`), scoped to its prefix;
/// the operator copies them from `herd-backup-tenant-credentials` in its namespace.
pub const TENANT_BACKUP_CREDENTIALS: &str = "backup-s3";
/// How late (or early) a run may start against the time its URLs are for; also the
/// CronJob's `startingDeadlineSeconds`.
pub const SLOT_TOLERANCE_SECS: u64 = 3600;
/// How long a run may take: its URLs last [`SLOT_TOLERANCE_SECS`] plus two hours after
/// its time, and a run starts at most [`SLOT_TOLERANCE_SECS`] late.
pub const RUN_DEADLINE_SECS: u64 = 2 * 3600 - 300;

/// The hours between runs a schedule may have: divisors of a day, so every day has the
/// same runs.
const INTERVALS: [u32; 8] = [1, 2, 3, 4, 6, 8, 12, 24];

/// When a tenant's scheduled backups run: every `interval_hours`, `offset_minutes` into
/// each interval (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub interval_hours: u32,
    pub offset_minutes: u32,
}

impl Schedule {
    /// The schedule of a tenant: its plan's interval (rounded up to a divisor of a day),
    /// at an offset taken from its slug.
    pub fn of(spec: &InstanceSpec) -> Schedule {
        let interval_hours = INTERVALS
            .into_iter()
            .find(|i| *i >= spec.backup.interval_hours.max(1))
            .unwrap_or(24);
        let hash = Sha256::digest(spec.slug.as_bytes());
        let n = u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]);
        Schedule {
            interval_hours,
            offset_minutes: n % (interval_hours * 60),
        }
    }

    fn hours(&self) -> Vec<String> {
        (0..24 / self.interval_hours)
            .map(|k| (self.offset_minutes / 60 + k * self.interval_hours).to_string())
            .collect()
    }

    /// As a Kubernetes CronJob schedule (five fields, in the CronJob's `timeZone`, UTC).
    pub fn cron(&self) -> String {
        format!(
            "{} {} * * *",
            self.offset_minutes % 60,
            self.hours().join(",")
        )
    }

    /// As CloudNativePG's schedule, which has a seconds field first.
    pub fn cnpg(&self) -> String {
        format!("0 {}", self.cron())
    }

    pub fn interval(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(i64::from(self.interval_hours))
    }

    /// The latest run at or before `now`.
    pub fn run_at_or_before(&self, now: jiff::Timestamp) -> jiff::Timestamp {
        let period = i64::from(self.interval_hours) * 3600;
        let phase = i64::from(self.offset_minutes) * 60;
        let t = now.as_second();
        let k = (t - phase).div_euclid(period);
        jiff::Timestamp::from_second(k * period + phase).unwrap_or(now)
    }

    /// The run the URLs are signed for at `now`: the latest one if it is at most
    /// [`SLOT_TOLERANCE_SECS`] past (it may still be starting), otherwise the next.
    pub fn upcoming(&self, now: jiff::Timestamp) -> jiff::Timestamp {
        let last = self.run_at_or_before(now);
        let tolerance = jiff::SignedDuration::from_secs(SLOT_TOLERANCE_SECS as i64);
        if now.duration_since(last) <= tolerance {
            last
        } else {
            last.checked_add(self.interval()).unwrap_or(last)
        }
    }
}

/// The scheduled backup's objects, when the cluster has a backup target: the CronJob, and
/// for a CloudNativePG tenant its `ScheduledBackup` (the `Cluster`'s object-store
/// configuration is in [`super::data`]).
/// A restore drill's scratch copy (`spec.drill`) is never backed up.
pub fn render(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let (Some(_target), false) = (&t.cluster.backup, t.instance.spec.drill) else {
        return Ok(Vec::new());
    };
    let schedule = Schedule::of(&t.instance.spec);
    let mut out = vec![Child::CronJob(build(
        "CronJob scheduled-backup",
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": { "name": SCHEDULED_BACKUP, "namespace": t.namespace(), "labels": t.labels("jobs") },
            "spec": {
                "schedule": schedule.cron(),
                "timeZone": "Etc/UTC",
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": SLOT_TOLERANCE_SECS,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                // Backups go on while a tenant is suspended: its data is all there.
                "suspend": false,
                "jobTemplate": scheduled_job_spec(t, SCHEDULED_BACKUP_URLS, RUN_DEADLINE_SECS)?,
            },
        }),
    )?)];
    if t.uses_cloudnative_pg() {
        out.push(Child::Dynamic(build(
            "ScheduledBackup scheduled",
            json!({
                "apiVersion": "postgresql.cnpg.io/v1", "kind": "ScheduledBackup",
                "metadata": { "name": CNPG_SCHEDULED_BACKUP, "namespace": t.namespace(), "labels": t.labels("database") },
                "spec": {
                    "schedule": schedule.cnpg(),
                    "cluster": { "name": CNPG_CLUSTER },
                    "method": "barmanObjectStore",
                    // The first backup at once: a base backup for the WAL archive.
                    "immediate": true,
                    "backupOwnerReference": "self",
                },
            }),
        )?));
    }
    Ok(out)
}

/// Where CloudNativePG keeps a tenant's base backups and WAL.
pub fn cnpg_destination(target: &BackupTarget, slug: &str) -> String {
    format!("s3://{}/{}cnpg/{slug}/", target.bucket, target.prefix)
}

/// The `backup` section of a CloudNativePG tenant's `Cluster` (with a backup target).
pub(super) fn cnpg_cluster_backup(t: &Tenant<'_>, target: &BackupTarget) -> serde_json::Value {
    let key = |k: &str| json!({ "name": TENANT_BACKUP_CREDENTIALS, "key": k });
    json!({
        "barmanObjectStore": {
            "destinationPath": cnpg_destination(target, &t.instance.spec.slug),
            "endpointURL": target.endpoint,
            "s3Credentials": {
                "accessKeyId": key("ACCESS_KEY_ID"),
                "secretAccessKey": key("ACCESS_SECRET_KEY"),
                "region": key("REGION"),
            },
            "wal": { "compression": "gzip" },
            "data": { "compression": "gzip" },
        },
        "retentionPolicy": format!("{}d", t.instance.spec.backup.retention_days.max(1)),
    })
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_daily_schedule_runs_once_a_day_at_the_tenants_minute() {
        let s = Schedule {
            interval_hours: 24,
            offset_minutes: 2 * 60 + 17,
        };
        assert_eq!(s.cron(), "17 2 * * *");
        assert_eq!(s.cnpg(), "0 17 2 * * *");
        assert_eq!(
            s.run_at_or_before(at("2026-12-08T10:00:00Z")),
            at("2026-12-08T02:17:00Z")
        );
        assert_eq!(
            s.run_at_or_before(at("2026-12-08T01:00:00Z")),
            at("2026-12-07T02:17:00Z")
        );
        // Within the tolerance the last run is still the one signed for; after, the next.
        assert_eq!(
            s.upcoming(at("2026-12-08T03:00:00Z")),
            at("2026-12-08T02:17:00Z")
        );
        assert_eq!(
            s.upcoming(at("2026-12-08T03:18:00Z")),
            at("2026-12-09T02:17:00Z")
        );
    }

    #[test]
    fn shorter_intervals_run_at_every_step_of_the_day() {
        let s = Schedule {
            interval_hours: 6,
            offset_minutes: 3 * 60 + 5,
        };
        assert_eq!(s.cron(), "5 3,9,15,21 * * *");
        assert_eq!(
            s.run_at_or_before(at("2026-12-08T10:00:00Z")),
            at("2026-12-08T09:05:00Z")
        );
    }

    #[test]
    fn tenants_are_spread_and_intervals_divide_a_day() {
        let mut spec = crate::crd::InstanceSpec::new(
            crate::crd::App::Mastodon,
            "v4.7.6",
            "lyon",
            "lyon.social",
            "community",
            &herd_domain::plan::default_catalogue()[0].limits,
            crate::crd::OwnerSpec {
                username: "lea".into(),
                email: "a@example.org".into(),
                password_generation: 0,
            },
        );
        let lyon = Schedule::of(&spec);
        assert_eq!(lyon.interval_hours, 24);
        assert!(lyon.offset_minutes < 24 * 60);
        spec.slug = "nantes".into();
        assert_ne!(Schedule::of(&spec), lyon, "another tenant, another minute");
        spec.backup.interval_hours = 5;
        let s = Schedule::of(&spec);
        assert_eq!(s.interval_hours, 6);
        assert!(s.offset_minutes < 6 * 60);
    }
}
