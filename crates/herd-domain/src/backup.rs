//! Tenant backups as the control plane records them, and the rule that tells a healthy
//! tenant from one whose backups need an operator: the last one failed, or none succeeded
//! for longer than its schedule plus a grace period.

use time::{Duration, OffsetDateTime};

macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

text_enum!(
    /// Why a backup was taken.
    BackupReason { Scheduled => "scheduled", BeforeUpgrade => "before_upgrade" }
);
text_enum!(
    /// How: Herd's dump Job, or CloudNativePG's barman backup.
    BackupMethod { Dump => "dump", Barman => "barman" }
);
text_enum!(
    BackupOutcome { Running => "running", Succeeded => "succeeded", Failed => "failed" }
);
text_enum!(
    /// What is wrong with a tenant's backups.
    BackupAlertKind { Missed => "missed", Failed => "failed", MediaUnprotected => "media_unprotected" }
);
text_enum!(
    /// The versioning of the bucket a tenant's media are in, as its cluster's operator
    /// last read it (`GetBucketVersioning` with the tenant's own credentials): those media
    /// are not copied by Herd's backups, so the bucket's versioning is their backup.
    BucketVersioning {
        Enabled => "enabled",
        Suspended => "suspended",
        Off => "off",
        Unreadable => "unreadable",
    }
);

impl BackupAlertKind {
    /// Whether it is about the media in object storage (else the database's backups): a
    /// tenant has at most one open alert of each, so a standing media alert never hides
    /// a failed backup.
    pub fn is_media(self) -> bool {
        self == BackupAlertKind::MediaUnprotected
    }
}

/// One reading of a media bucket's versioning by the cluster's operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaReading {
    pub versioning: BucketVersioning,
    /// Why it could not be read.
    pub message: Option<String>,
    pub checked_at: OffsetDateTime,
}

/// A tenant's media bucket as the control plane knows it: the bucket its Instance names
/// (since when), and the operator's last reading of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaBucket {
    pub bucket: String,
    pub since: OffsetDateTime,
    pub reading: Option<MediaReading>,
    /// The first of the unreadable readings in a row, while the last one is unreadable.
    pub unreadable_since: Option<OffsetDateTime>,
}

/// How long the operator may go without reading a media bucket (it reads it hourly, and
/// retries an unreadable one every few minutes) before that is an alert itself.
pub const MEDIA_STALE: Duration = Duration::hours(4);

/// How long a bucket may stay unreadable before it is an alert: one failed read (a
/// timeout, a provider's 503) is retried, not emailed.
pub const MEDIA_UNREADABLE_GRACE: Duration = Duration::hours(1);

/// The health at `now` of media in object storage: an alert unless the bucket's versioning
/// was read recently and is on (`None`: the media are on a volume, archived with each
/// backup). Never read for [`MEDIA_STALE`] since the bucket was named, or not since, or
/// unreadable for [`MEDIA_UNREADABLE_GRACE`]: an alert too; not read yet, or unreadable
/// for less: pending.
pub fn assess_media(media: Option<&MediaBucket>, now: OffsetDateTime) -> BackupHealth {
    let Some(m) = media else {
        return BackupHealth::Healthy;
    };
    let why = match &m.reading {
        None if now - m.since <= MEDIA_STALE => return BackupHealth::Pending,
        None => format!(
            "its versioning was never read by the cluster's operator since the bucket was named ({}; is the operator older than the control plane, or not running?)",
            crate::utc_minute(m.since)
        ),
        Some(r) if now - r.checked_at > MEDIA_STALE => format!(
            "its versioning was last read {} and not since (is the cluster's operator running?)",
            crate::utc_minute(r.checked_at)
        ),
        Some(r) => match r.versioning {
            BucketVersioning::Enabled => return BackupHealth::Healthy,
            BucketVersioning::Off => "versioning was never turned on".to_owned(),
            BucketVersioning::Suspended => "versioning is suspended".to_owned(),
            BucketVersioning::Unreadable => {
                let since = m.unreadable_since.unwrap_or(r.checked_at);
                if now - since < MEDIA_UNREADABLE_GRACE {
                    return BackupHealth::Pending;
                }
                format!(
                    "its versioning could not be read since {} ({})",
                    crate::utc_minute(since),
                    r.message.as_deref().unwrap_or("no reason given")
                )
            }
        },
    };
    BackupHealth::Alert {
        kind: BackupAlertKind::MediaUnprotected,
        message: format!(
            "the media in bucket {} are not backed up: {why}; Herd does not copy media in object storage, the bucket's versioning is their backup (docs/BACKUPS.md, \"Media in object storage\")",
            m.bucket
        ),
    }
}

/// How late a backup may be past its interval before it counts as missed: a run may start
/// an hour late and take two.
pub const GRACE: Duration = Duration::hours(3);

/// What an operator must know about a tenant's backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupHealth {
    Healthy,
    /// Not known yet (a media bucket not read yet, or unreadable for a short while): an
    /// open alert stays as it is, none opens.
    Pending,
    Alert {
        kind: BackupAlertKind,
        message: String,
    },
}

/// What the reason of a backup stopped counting by a restore says (the operator records
/// a backup or export still running when a restore started replacing the tenant's data as
/// failed, with this in its reason): a consequence of the restore an operator asked for,
/// not a broken backup, so it raises no "failed" alert; the "missed" alert still comes
/// when no backup succeeds in time.
pub const RAN_DURING_RESTORE: &str = "ran while restore ";

/// The latest finished backup of one method, for [`assess`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub name: String,
    pub method: BackupMethod,
    pub outcome: BackupOutcome,
    pub message: Option<String>,
}

/// The health of a tenant's backups at `now`: failed when the latest finished backup of
/// any method failed (a CloudNativePG tenant has two: the database's, and media and
/// secrets'); missed when the last success (or, without one, `since`, when the tenant
/// started to be backed up) is older than `interval_hours` plus [`GRACE`].
pub fn assess(
    now: OffsetDateTime,
    interval_hours: i32,
    since: OffsetDateTime,
    last_success: Option<OffsetDateTime>,
    latest: &[Finished],
) -> BackupHealth {
    if let Some(f) = latest.iter().find(|f| {
        f.outcome == BackupOutcome::Failed
            && !f
                .message
                .as_deref()
                .is_some_and(|m| m.contains(RAN_DURING_RESTORE))
    }) {
        return BackupHealth::Alert {
            kind: BackupAlertKind::Failed,
            message: format!(
                "backup {} ({}) failed: {}",
                f.name,
                f.method.as_str(),
                f.message.as_deref().unwrap_or("no reason given")
            ),
        };
    }
    let due = Duration::hours(i64::from(interval_hours.max(1))) + GRACE;
    let from = last_success.unwrap_or(since);
    if now - from > due {
        let hours = (now - from).whole_hours();
        return BackupHealth::Alert {
            kind: BackupAlertKind::Missed,
            message: match last_success {
                Some(_) => format!("no backup succeeded for {hours} hours (one is due every {interval_hours} hours)"),
                None => format!("no backup has succeeded yet, {hours} hours after backups started (one is due every {interval_hours} hours)"),
            },
        };
    }
    BackupHealth::Healthy
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn at(h: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::hours(h)
    }

    fn finished(outcome: BackupOutcome) -> Finished {
        Finished {
            name: "scheduled-backup-1".into(),
            method: BackupMethod::Dump,
            outcome,
            message: Some("BackoffLimitExceeded".into()),
        }
    }

    #[test]
    fn media_in_a_bucket_are_safe_only_with_its_versioning_on_and_read_lately() {
        let reading = |versioning, checked: i64| MediaReading {
            versioning,
            message: Some("HTTP 403 AccessDenied".into()),
            checked_at: at(checked),
        };
        let bucket = |reading: Option<MediaReading>, unreadable_since: Option<i64>| MediaBucket {
            bucket: "lyon-media".into(),
            since: at(0),
            reading,
            unreadable_since: unreadable_since.map(at),
        };
        let alert = |m: &MediaBucket, now: i64| match assess_media(Some(m), at(now)) {
            BackupHealth::Healthy => None,
            BackupHealth::Pending => Some("pending".to_owned()),
            BackupHealth::Alert { kind, message } => {
                assert_eq!(kind, BackupAlertKind::MediaUnprotected);
                assert!(
                    message.contains("bucket lyon-media are not backed up"),
                    "{message}"
                );
                Some(message)
            }
        };
        assert_eq!(assess_media(None, at(100)), BackupHealth::Healthy);
        let on = bucket(Some(reading(BucketVersioning::Enabled, 10)), None);
        assert_eq!(alert(&on, 11), None);
        assert!(alert(&on, 15)
            .unwrap()
            .contains("last read 1970-01-01 10:00 UTC and not since"));
        for (versioning, says) in [
            (BucketVersioning::Off, "never turned on"),
            (BucketVersioning::Suspended, "is suspended"),
        ] {
            let m = bucket(Some(reading(versioning, 10)), None);
            assert!(alert(&m, 10).unwrap().contains(says));
        }
        // Not read yet: not an alert at once, an alert after MEDIA_STALE.
        let unread = bucket(None, None);
        assert_eq!(alert(&unread, 4).as_deref(), Some("pending"));
        assert!(alert(&unread, 5)
            .unwrap()
            .contains("never read by the cluster's operator"));
        // Unreadable: retried for an hour before it is an alert.
        let m = bucket(Some(reading(BucketVersioning::Unreadable, 10)), Some(10));
        assert_eq!(alert(&m, 10).as_deref(), Some("pending"));
        let m = bucket(Some(reading(BucketVersioning::Unreadable, 11)), Some(10));
        assert!(alert(&m, 11)
            .unwrap()
            .contains("could not be read since 1970-01-01 10:00 UTC (HTTP 403 AccessDenied)"));
        for v in [
            BucketVersioning::Enabled,
            BucketVersioning::Suspended,
            BucketVersioning::Off,
            BucketVersioning::Unreadable,
        ] {
            assert_eq!(BucketVersioning::parse(v.as_str()), Some(v));
        }
        assert!(
            BackupAlertKind::MediaUnprotected.is_media() && !BackupAlertKind::Failed.is_media()
        );
    }

    #[test]
    fn a_backup_a_restore_stopped_counting_alerts_only_once_missed() {
        let mut f = finished(BackupOutcome::Failed);
        f.message = Some(format!(
            "the backup {RAN_DURING_RESTORE}r1 replaced the tenant's data: no restore point"
        ));
        assert_eq!(
            assess(at(10), 24, at(0), Some(at(1)), std::slice::from_ref(&f)),
            BackupHealth::Healthy
        );
        assert!(matches!(
            assess(at(30), 24, at(0), Some(at(1)), &[f]),
            BackupHealth::Alert {
                kind: BackupAlertKind::Missed,
                ..
            }
        ));
        // Any other failure alerts at once.
        assert!(matches!(
            assess(
                at(10),
                24,
                at(0),
                Some(at(1)),
                &[finished(BackupOutcome::Failed)]
            ),
            BackupHealth::Alert {
                kind: BackupAlertKind::Failed,
                ..
            }
        ));
    }

    #[test]
    fn a_backup_is_missed_after_its_interval_and_the_grace() {
        let ok = assess(at(26), 24, at(0), Some(at(1)), &[]);
        assert_eq!(ok, BackupHealth::Healthy);
        let late = assess(at(29), 24, at(0), Some(at(1)), &[]);
        assert!(
            matches!(late, BackupHealth::Alert { kind: BackupAlertKind::Missed, ref message } if message.contains("28 hours")),
            "{late:?}"
        );
        // Never one: counted from when backups started.
        assert_eq!(assess(at(20), 24, at(0), None, &[]), BackupHealth::Healthy);
        assert!(matches!(
            assess(at(30), 6, at(0), Some(at(20)), &[]),
            BackupHealth::Alert {
                kind: BackupAlertKind::Missed,
                ..
            }
        ));
    }

    #[test]
    fn the_latest_backup_failing_is_an_alert_at_once() {
        let failed = assess(
            at(2),
            24,
            at(0),
            Some(at(1)),
            &[finished(BackupOutcome::Failed)],
        );
        assert!(
            matches!(failed, BackupHealth::Alert { kind: BackupAlertKind::Failed, ref message } if message.contains("BackoffLimitExceeded")),
            "{failed:?}"
        );
        assert_eq!(
            assess(
                at(2),
                24,
                at(0),
                Some(at(1)),
                &[finished(BackupOutcome::Succeeded)]
            ),
            BackupHealth::Healthy
        );
        for s in ["scheduled", "before_upgrade"] {
            assert_eq!(BackupReason::parse(s).map(BackupReason::as_str), Some(s));
        }
        assert_eq!(BackupOutcome::parse("done"), None);
    }
}
