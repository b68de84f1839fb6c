//! Backup records: what the cluster reports of each backup (a backup Job's status and the
//! summary its pod leaves in its termination message, or a CloudNativePG `Backup`'s
//! status), as the Instance's status keeps them and the control plane copies them.

use crate::crd::{
    BackupMethod, BackupOutcome, BackupReason, BackupRecord, ExportStatus, RECENT_BACKUPS,
};
use crate::observe::job_state;
use crate::render::backup::{
    BackupKind, Summary, BACKUP_LABEL, BACKUP_OBJECT_ANNOTATION, DATABASE_ARTIFACT,
    DURING_RESTORE_ANNOTATION, MEDIA_ARTIFACT,
};
use crate::status::JobState;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use kube::ResourceExt;

/// The label the Job controller puts on a Job's pods.
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Its older spelling, still set.
const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// The backup kind of a Job, from its [`BACKUP_LABEL`].
pub fn kind_of(job: &Job) -> Option<BackupKind> {
    job.metadata
        .labels
        .as_ref()?
        .get(BACKUP_LABEL)
        .and_then(|k| BackupKind::from_label(k))
}

/// The termination messages the container (or init container) `container` of the Job's
/// pods left, in the order the pods are listed.
pub fn termination_messages(job: &Job, pods: &[Pod], container: &str) -> Vec<String> {
    let Some(name) = job.metadata.name.as_deref() else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| {
            p.metadata.labels.as_ref().is_some_and(|l| {
                l.get(JOB_NAME_LABEL)
                    .or_else(|| l.get(LEGACY_JOB_NAME_LABEL))
                    == Some(&name.to_owned())
            })
        })
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            status
                .init_container_statuses
                .iter()
                .chain(status.container_statuses.iter())
                .flatten()
                .find(|c| c.name == container)?
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .message
                .clone()
        })
        .collect()
}

/// The summary the Job's upload container left in its termination message.
fn summary(job: &Job, pods: &[Pod]) -> Option<Summary> {
    termination_messages(job, pods, "upload")
        .iter()
        .map(|m| Summary::parse(m))
        .find(|s| s.manifest_sha256.is_some())
}

/// The value of `name` in the Job's upload container's environment ("" when unset).
fn upload_env(job: &Job, name: &str) -> String {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == "upload"))
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == name))
        .and_then(|e| e.value.clone())
        .unwrap_or_default()
}

/// The Job uploads sealed app secrets (its `SEALED` directory is set).
pub fn uploads_sealed(job: &Job) -> bool {
    !upload_env(job, "SEALED").is_empty()
}

/// The artifacts the Job was to write, from its upload container's environment.
fn expected(job: &Job) -> Vec<&'static str> {
    let env = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == "upload"))
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    if value("DATABASE") == "dump" {
        out.push(DATABASE_ARTIFACT);
    }
    if value("MEDIA") == "volume" {
        out.push(MEDIA_ARTIFACT);
    }
    if uploads_sealed(job) {
        out.push(crate::seal::SECRETS_ARTIFACT);
    }
    out
}

fn rfc3339(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> String {
    t.0.to_string()
}

fn duration(started: Option<&str>, finished: Option<&str>) -> Option<i64> {
    let s: jiff::Timestamp = started?.parse().ok()?;
    let f: jiff::Timestamp = finished?.parse().ok()?;
    Some(f.duration_since(s).as_secs())
}

/// Why what a backup or export Job (`what`) archived may be a mix: it still ran when a
/// restore started replacing the tenant's data ([`DURING_RESTORE_ANNOTATION`]).
fn during_restore(job: &Job, what: &str) -> Option<String> {
    let id = job.annotations().get(DURING_RESTORE_ANNOTATION)?;
    Some(format!(
        "the {what} {}{id} replaced the tenant's data: it may hold a mix of the old and the restored media and either database",
        herd_domain::backup::RAN_DURING_RESTORE
    ))
}

/// A backup Job's record and state: a Job that succeeded counts only when its summary
/// verifies (a manifest checksum, a checksum per object, no empty artifact); otherwise it
/// is failed, with why. `None` for a Job that is no backup, or the final backup.
pub fn from_job(job: &Job, pods: &[Pod]) -> Option<(BackupRecord, JobState)> {
    let reason = match kind_of(job)? {
        BackupKind::Scheduled => BackupReason::Scheduled,
        BackupKind::BeforeUpgrade => BackupReason::BeforeUpgrade,
        BackupKind::Final | BackupKind::Export => return None,
    };
    let status = job.status.clone().unwrap_or_default();
    let started_at = status.start_time.as_ref().map(rfc3339);
    let summary = summary(job, pods);
    let mut state = job_state(job);
    if state == JobState::Succeeded {
        let why = match &summary {
            Some(s) => s.unverified(&expected(job)),
            None => Some("the Job left no summary of what it uploaded".into()),
        };
        if let Some(why) = why {
            state = JobState::Failed(format!("the backup is not verified: {why}"));
        }
    }
    if let (JobState::Succeeded, Some(why)) = (&state, during_restore(job, "backup")) {
        state = JobState::Failed(format!("{why}, so it is no restore point"));
    }
    let finished_at = match &state {
        JobState::Running => None,
        _ => status.completion_time.as_ref().map(rfc3339).or_else(|| {
            status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref().map(rfc3339))
        }),
    };
    let record = BackupRecord {
        name: job.metadata.name.clone()?,
        reason,
        method: BackupMethod::Dump,
        outcome: match &state {
            JobState::Running => BackupOutcome::Running,
            JobState::Succeeded => BackupOutcome::Succeeded,
            JobState::Failed(_) => BackupOutcome::Failed,
        },
        duration_seconds: duration(started_at.as_deref(), finished_at.as_deref()),
        started_at,
        finished_at,
        size_bytes: summary
            .as_ref()
            .map(|s| i64::try_from(s.total_bytes()).unwrap_or(i64::MAX)),
        // Where the operator sent the Job (its annotation) before what the pod says:
        // a record's location is where restores and downloads read from.
        location: job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(BACKUP_OBJECT_ANNOTATION).cloned())
            .or_else(|| summary.as_ref().and_then(|s| s.location.clone())),
        checksum: summary.and_then(|s| s.manifest_sha256),
        message: match &state {
            JobState::Failed(m) => Some(m.clone()),
            _ => None,
        },
    };
    Some((record, state))
}

/// An export's status from its Job (see [`crate::render::export`]) and the summary its
/// pod left: succeeded only when verified (the manifest's checksum reported, a checksum
/// per object, the dump not empty); its size is every byte uploaded, its checksum the
/// manifest's SHA-256.
pub fn export_status(id: &str, job: &Job, pods: &[Pod]) -> ExportStatus {
    let status = job.status.clone().unwrap_or_default();
    let summary = summary(job, pods);
    let mut state = job_state(job);
    if state == JobState::Succeeded {
        let why = match &summary {
            Some(s) if s.manifest_sha256.is_none() => {
                Some("the Job reported no manifest checksum".to_owned())
            }
            Some(s) if s.objects == 0 || s.checksums != s.objects => Some(format!(
                "the manifest lists {} checksums for {} objects",
                s.checksums, s.objects
            )),
            Some(s) => expected(job)
                .into_iter()
                .find(|a| s.bytes.get(*a).is_none_or(|n| *n == 0))
                .map(|a| format!("{a} is empty or missing")),
            None => Some("the Job left no summary of what it uploaded".into()),
        };
        if let Some(why) = why {
            state = JobState::Failed(format!("the export is not verified: {why}"));
        }
    }
    if let (JobState::Succeeded, Some(why)) = (&state, during_restore(job, "export")) {
        state = JobState::Failed(format!("{why}; ask for a new export"));
    }
    let finished_at = match &state {
        JobState::Running => None,
        _ => status.completion_time.as_ref().map(rfc3339).or_else(|| {
            status
                .conditions
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed" && c.status == "True")
                .and_then(|c| c.last_transition_time.as_ref().map(rfc3339))
        }),
    };
    ExportStatus {
        id: id.to_owned(),
        outcome: match &state {
            JobState::Running => BackupOutcome::Running,
            JobState::Succeeded => BackupOutcome::Succeeded,
            JobState::Failed(_) => BackupOutcome::Failed,
        },
        // Where the operator sent the Job (its annotation) before what the pod says:
        // a record's location is where restores and downloads read from.
        location: job
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(BACKUP_OBJECT_ANNOTATION).cloned())
            .or_else(|| summary.as_ref().and_then(|s| s.location.clone())),
        started_at: status.start_time.as_ref().map(rfc3339),
        finished_at,
        size_bytes: summary
            .as_ref()
            .map(|s| i64::try_from(s.total_bytes()).unwrap_or(i64::MAX)),
        checksum: summary.and_then(|s| s.manifest_sha256),
        message: match &state {
            JobState::Failed(m) => Some(format!(
                "{m}; read `kubectl logs -n {} job/{}`, then ask for a new export",
                job.metadata.namespace.as_deref().unwrap_or_default(),
                job.metadata.name.as_deref().unwrap_or_default()
            )),
            _ => None,
        },
        // The operator, which knows the recipient, says whom they are sealed to.
        secrets_sealed_to: None,
    }
}

/// A CloudNativePG `Backup`'s record (its size is not reported; its checksums are
/// barman's own).
pub fn from_cnpg(backup: &DynamicObject) -> Option<BackupRecord> {
    let status = &backup.data["status"];
    let text = |k: &str| {
        status[k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let outcome = match status["phase"].as_str().unwrap_or_default() {
        "completed" => BackupOutcome::Succeeded,
        "failed" | "walArchivingFailing" | "invalid backup definition" => BackupOutcome::Failed,
        _ => BackupOutcome::Running,
    };
    let (started_at, finished_at) = (text("startedAt"), text("stoppedAt"));
    Some(BackupRecord {
        name: backup.metadata.name.clone()?,
        reason: BackupReason::Scheduled,
        method: BackupMethod::Barman,
        outcome,
        duration_seconds: duration(started_at.as_deref(), finished_at.as_deref()),
        started_at,
        finished_at: match outcome {
            BackupOutcome::Running => None,
            _ => finished_at,
        },
        size_bytes: None,
        location: text("destinationPath").map(|d| match text("backupId") {
            Some(id) => format!("{d} (barman backup {id})"),
            None => d,
        }),
        checksum: None,
        message: match outcome {
            BackupOutcome::Failed => Some(
                text("error")
                    .unwrap_or_else(|| status["phase"].as_str().unwrap_or("failed").to_owned()),
            ),
            _ => None,
        },
    })
}

/// The status's records after this observation: what was observed replaces the record of
/// the same name, records no longer observed (their Job expired) are kept, newest first,
/// at most [`RECENT_BACKUPS`].
pub fn merge(previous: &[BackupRecord], observed: &[BackupRecord]) -> Vec<BackupRecord> {
    let mut out: Vec<BackupRecord> = observed.to_vec();
    for p in previous {
        if !out.iter().any(|o| o.name == p.name) {
            out.push(p.clone());
        }
    }
    // Newest first; one not started yet is the newest of all.
    out.sort_by(|a, b| {
        let key = |r: &BackupRecord| r.started_at.clone().unwrap_or_else(|| "~".into());
        key(b).cmp(&key(a)).then_with(|| b.name.cmp(&a.name))
    });
    out.truncate(RECENT_BACKUPS);
    out
}

/// An RFC 3339 time of a record in nanoseconds since the Unix epoch.
pub fn epoch_nanos(rfc3339: &str) -> Option<i128> {
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_nanosecond())
}

/// The latest finish of a backup that succeeded, among `records` and what was known.
pub fn last_successful(records: &[BackupRecord], known: Option<&str>) -> Option<String> {
    let parse = |s: &str| s.parse::<jiff::Timestamp>().ok();
    records
        .iter()
        .filter(|r| r.outcome == BackupOutcome::Succeeded)
        .filter_map(|r| r.finished_at.as_deref())
        .chain(known)
        .filter_map(|s| parse(s).map(|t| (t, s)))
        .max_by_key(|(t, _)| *t)
        .map(|(t, _)| t.to_string())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn rec(name: &str, started: Option<&str>, outcome: BackupOutcome) -> BackupRecord {
        BackupRecord {
            name: name.into(),
            reason: BackupReason::Scheduled,
            method: BackupMethod::Dump,
            outcome,
            started_at: started.map(str::to_owned),
            finished_at: started.map(str::to_owned),
            duration_seconds: None,
            size_bytes: None,
            location: None,
            checksum: None,
            message: None,
        }
    }

    #[test]
    fn the_location_is_where_the_operator_sent_the_job_not_what_its_pod_says() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "export-x1",
                "labels": { BACKUP_LABEL: "export" },
                "annotations": { BACKUP_OBJECT_ANNOTATION: "s3://b/herd/exports/lyon/x1/" },
            },
            "status": { "succeeded": 1, "startTime": "2026-12-08T10:00:00Z",
                        "completionTime": "2026-12-08T10:05:00Z" },
        }))
        .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "export-x1-abc", "labels": { JOB_NAME_LABEL: "export-x1" } },
            "status": { "containerStatuses": [{
                "name": "upload", "image": "curl", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": { "terminated": { "exitCode": 0, "message":
                    "location s3://b/herd/exports/paris/other/\nbytes database.dump 2048\nobjects 1\nchecksums 1\nmanifest-sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n" } },
            }] },
        }))
        .unwrap();
        let status = export_status("x1", &job, &[pod]);
        assert_eq!(
            status.location.as_deref(),
            Some("s3://b/herd/exports/lyon/x1/"),
            "{status:?}"
        );
    }

    #[test]
    fn a_backup_or_export_that_ran_during_a_restore_is_no_restore_point() {
        let job = |kind: &str, during: bool| -> Job {
            let mut annotations = serde_json::json!({});
            if during {
                annotations[DURING_RESTORE_ANNOTATION] = "r1".into();
            }
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "b1", "labels": { BACKUP_LABEL: kind }, "annotations": annotations },
                "status": { "succeeded": 1, "startTime": "2026-12-08T10:00:00Z",
                            "completionTime": "2026-12-08T10:05:00Z" },
            }))
            .unwrap()
        };
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "b1-abc", "labels": { JOB_NAME_LABEL: "b1" } },
            "status": { "containerStatuses": [{
                "name": "upload", "image": "curl", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": { "terminated": { "exitCode": 0, "message":
                    "location s3://b/herd/x/\nbytes database.dump 2048\nbytes media.tar 4096\nbytes app-secrets.env.age 512\nobjects 3\nchecksums 3\nmanifest-sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n" } },
            }] },
        }))
        .unwrap();
        let pods = [pod];
        let (record, _) = from_job(&job("scheduled", false), &pods).unwrap();
        assert_eq!(record.outcome, BackupOutcome::Succeeded, "{record:?}");
        let (record, _) = from_job(&job("scheduled", true), &pods).unwrap();
        assert_eq!(record.outcome, BackupOutcome::Failed);
        let message = record.message.unwrap();
        assert!(
            message.contains("restore r1") && message.contains("no restore point"),
            "{message}"
        );
        assert_eq!(
            export_status("x1", &job("export", false), &pods).outcome,
            BackupOutcome::Succeeded
        );
        let export = export_status("x1", &job("export", true), &pods);
        assert_eq!(export.outcome, BackupOutcome::Failed);
    }

    #[test]
    fn records_are_kept_newest_first_and_bounded() {
        let previous: Vec<BackupRecord> = (0..RECENT_BACKUPS)
            .map(|d| {
                rec(
                    &format!("b{d}"),
                    Some(&format!("2026-11-{:02}T02:00:00Z", d + 10)),
                    BackupOutcome::Succeeded,
                )
            })
            .collect();
        let now = rec("new", None, BackupOutcome::Running);
        let merged = merge(&previous, &[now]);
        assert_eq!(merged.len(), RECENT_BACKUPS);
        assert_eq!(merged[0].name, "new");
        assert_eq!(merged[1].name, "b9");
        assert!(!merged.iter().any(|r| r.name == "b0"), "the oldest goes");
        let done = rec("new", Some("2026-12-01T02:00:00Z"), BackupOutcome::Failed);
        let merged = merge(&merged, std::slice::from_ref(&done));
        assert_eq!(merged[0], done, "replaced, not added");
        assert_eq!(
            last_successful(&merged, None).as_deref(),
            Some("2026-11-19T02:00:00Z")
        );
        assert_eq!(
            last_successful(&[], Some("2026-11-01T00:00:00Z")).as_deref(),
            Some("2026-11-01T00:00:00Z"),
            "kept when the records roll over"
        );
    }
}
