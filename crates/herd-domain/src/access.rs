//! The access policy: from billing facts to what a tenant's server should be. One place for
//! both channels (card subscriptions through Stripe, invoices for institutions).
//!
//! A payment problem starts a grace period (7 days by default) during which the server runs
//! with a warning; then the server is suspended with its data kept; the last days of the
//! retention period (30 days by default) are announced as scheduled deletion; then the data
//! is deleted. Operators can extend a grace period, or pause the clock for a tenant (time
//! paused does not count towards any deadline). The state is a pure function of the facts and
//! the time, so a worker can recompute it at any moment and record each change.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// How a tenant pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A card subscription through Stripe.
    Card,
    /// Bank transfer against Herd's invoices.
    Invoice,
}

/// Where the tenant stands with its payments, from either channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Nothing paid yet: no subscription, an incomplete first payment, or no contract.
    NotStarted,
    /// Paid up: an active or trialing subscription, or no invoice overdue.
    Good,
    /// A renewal failed (`past_due`) or an invoice is overdue, since this time.
    Overdue { since: OffsetDateTime },
    /// The subscription or contract ended (canceled, unpaid after every retry, paused),
    /// at this time.
    Ended { since: OffsetDateTime },
}

impl Standing {
    /// A Stripe subscription's status (`None` without a subscription). `since` is when the
    /// subscription entered its current status: the first failed renewal for `past_due`,
    /// the end for `canceled`, `unpaid` or `paused`.
    pub fn from_stripe(status: Option<&str>, since: OffsetDateTime) -> Standing {
        match status {
            Some("active" | "trialing") => Standing::Good,
            Some("past_due") => Standing::Overdue { since },
            Some("canceled" | "unpaid" | "paused") => Standing::Ended { since },
            _ => Standing::NotStarted,
        }
    }
}

/// What the tenant's server should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    NotProvisioned,
    Running,
    /// Running, with a warning: payment is late.
    Grace,
    /// Scaled to zero, data kept.
    Suspended,
    /// Still suspended; deletion is near and announced.
    ScheduledForDeletion,
    Deleted,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::NotProvisioned => "not_provisioned",
            Access::Running => "running",
            Access::Grace => "grace",
            Access::Suspended => "suspended",
            Access::ScheduledForDeletion => "scheduled_for_deletion",
            Access::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Access> {
        [
            Access::NotProvisioned,
            Access::Running,
            Access::Grace,
            Access::Suspended,
            Access::ScheduledForDeletion,
            Access::Deleted,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Whether the server runs.
    pub fn runs(self) -> bool {
        matches!(self, Access::Running | Access::Grace)
    }
}

/// The durations of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// From the payment problem to suspension.
    pub grace: Duration,
    /// From suspension to deletion.
    pub retention: Duration,
    /// How long before deletion it is announced as scheduled.
    pub deletion_notice: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            grace: Duration::days(7),
            retention: Duration::days(30),
            deletion_notice: Duration::days(7),
        }
    }
}

/// What operators changed for one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    /// The grace period lasts at least until then.
    pub grace_until: Option<OffsetDateTime>,
    /// The clock is paused since then.
    pub paused_since: Option<OffsetDateTime>,
    /// Time paused in earlier pauses.
    pub paused_before: Duration,
}

impl Overrides {
    /// How much time has been paused up to `now`: deadlines move by that much.
    pub fn paused(&self, now: OffsetDateTime) -> Duration {
        self.paused_before
            + self
                .paused_since
                .map_or(Duration::ZERO, |p| (now - p).max(Duration::ZERO))
    }
}

/// The decision: the state now, and the next step with its date (for the banner and the
/// emails), when one is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub access: Access,
    pub next: Option<(Access, OffsetDateTime)>,
}

/// The state of a tenant at `now`.
pub fn decide(
    standing: Standing,
    policy: &Policy,
    overrides: &Overrides,
    now: OffsetDateTime,
) -> Decision {
    let shift = overrides.paused(now);
    let (suspend_at, from_grace) = match standing {
        Standing::NotStarted => {
            return Decision {
                access: Access::NotProvisioned,
                next: None,
            }
        }
        Standing::Good => {
            return Decision {
                access: Access::Running,
                next: None,
            }
        }
        Standing::Overdue { since } => {
            let mut at = since + policy.grace;
            if let Some(extended) = overrides.grace_until {
                at = at.max(extended);
            }
            (at + shift, true)
        }
        Standing::Ended { since } => (since + shift, false),
    };
    let delete_at = suspend_at + policy.retention;
    let notice_at = delete_at - policy.deletion_notice;
    let (access, next) = if now < suspend_at && from_grace {
        (Access::Grace, Some((Access::Suspended, suspend_at)))
    } else if now < notice_at {
        (
            Access::Suspended,
            Some((Access::ScheduledForDeletion, notice_at)),
        )
    } else if now < delete_at {
        (
            Access::ScheduledForDeletion,
            Some((Access::Deleted, delete_at)),
        )
    } else {
        (Access::Deleted, None)
    };
    Decision { access, next }
}

/// The message a change of state sends to the customer (and records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Payment failed or invoice overdue: the server keeps running until the date.
    GraceStarted,
    /// Suspended, data kept; an export is offered; deletion on the date.
    Suspended,
    /// Deletion is near; last call for the export.
    DeletionScheduled,
    Deleted,
    /// Paid again: back to running.
    Restored,
    /// First payment: the server is being set up.
    Started,
}

/// The notice for a change from `before` to `after`, if it deserves one.
pub fn notice(before: Access, after: Access) -> Option<Notice> {
    if before == after {
        return None;
    }
    Some(match after {
        Access::Grace => Notice::GraceStarted,
        Access::Suspended => Notice::Suspended,
        Access::ScheduledForDeletion => Notice::DeletionScheduled,
        Access::Deleted => Notice::Deleted,
        Access::Running if before == Access::NotProvisioned => Notice::Started,
        Access::Running => Notice::Restored,
        Access::NotProvisioned => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-11-01 12:00 UTC);

    fn at(days: i64) -> OffsetDateTime {
        T0 + Duration::days(days)
    }

    fn access(standing: Standing, overrides: &Overrides, days: i64) -> Access {
        decide(standing, &Policy::default(), overrides, at(days)).access
    }

    #[test]
    fn nothing_paid_is_not_provisioned_and_paid_runs() {
        let none = Overrides::default();
        assert_eq!(
            access(Standing::NotStarted, &none, 0),
            Access::NotProvisioned
        );
        assert_eq!(access(Standing::Good, &none, 0), Access::Running);
        assert_eq!(
            decide(Standing::Good, &Policy::default(), &none, T0).next,
            None
        );
    }

    /// Both channels reach `Overdue` (a failed renewal, an overdue invoice) and then follow
    /// the same steps on the same days.
    #[test]
    fn an_overdue_payment_goes_through_every_step() {
        let none = Overrides::default();
        let overdue = Standing::Overdue { since: T0 };
        let steps = [
            (0, Access::Grace),
            (6, Access::Grace),
            (7, Access::Suspended),
            (29, Access::Suspended),
            (30, Access::ScheduledForDeletion),
            (36, Access::ScheduledForDeletion),
            (37, Access::Deleted),
        ];
        for (day, want) in steps {
            assert_eq!(access(overdue, &none, day), want, "day {day}");
        }
        let d = decide(overdue, &Policy::default(), &none, at(1));
        assert_eq!(
            d.next,
            Some((Access::Suspended, at(7))),
            "the banner's date"
        );
        let d = decide(overdue, &Policy::default(), &none, at(8));
        assert_eq!(d.next, Some((Access::ScheduledForDeletion, at(30))));
        let d = decide(overdue, &Policy::default(), &none, at(31));
        assert_eq!(d.next, Some((Access::Deleted, at(37))));
    }

    #[test]
    fn card_statuses_map_to_standings() {
        assert_eq!(Standing::from_stripe(None, T0), Standing::NotStarted);
        assert_eq!(
            Standing::from_stripe(Some("incomplete"), T0),
            Standing::NotStarted
        );
        assert_eq!(
            Standing::from_stripe(Some("incomplete_expired"), T0),
            Standing::NotStarted
        );
        assert_eq!(Standing::from_stripe(Some("active"), T0), Standing::Good);
        assert_eq!(Standing::from_stripe(Some("trialing"), T0), Standing::Good);
        assert_eq!(
            Standing::from_stripe(Some("past_due"), T0),
            Standing::Overdue { since: T0 }
        );
        for ended in ["canceled", "unpaid", "paused"] {
            assert_eq!(
                Standing::from_stripe(Some(ended), T0),
                Standing::Ended { since: T0 },
                "{ended}"
            );
        }
    }

    #[test]
    fn an_ended_subscription_is_suspended_at_once_then_deleted() {
        let none = Overrides::default();
        let ended = Standing::Ended { since: T0 };
        assert_eq!(access(ended, &none, 0), Access::Suspended);
        assert_eq!(access(ended, &none, 23), Access::ScheduledForDeletion);
        assert_eq!(access(ended, &none, 30), Access::Deleted);
    }

    #[test]
    fn paying_again_restores_from_grace_or_suspension() {
        assert_eq!(
            notice(Access::Grace, Access::Running),
            Some(Notice::Restored)
        );
        assert_eq!(
            notice(Access::Suspended, Access::Running),
            Some(Notice::Restored)
        );
        assert_eq!(
            notice(Access::NotProvisioned, Access::Running),
            Some(Notice::Started)
        );
        assert_eq!(
            notice(Access::Running, Access::Grace),
            Some(Notice::GraceStarted)
        );
        assert_eq!(
            notice(Access::Grace, Access::Suspended),
            Some(Notice::Suspended)
        );
        assert_eq!(
            notice(Access::Suspended, Access::ScheduledForDeletion),
            Some(Notice::DeletionScheduled)
        );
        assert_eq!(
            notice(Access::ScheduledForDeletion, Access::Deleted),
            Some(Notice::Deleted)
        );
        assert_eq!(notice(Access::Grace, Access::Grace), None);
    }

    #[test]
    fn operators_can_extend_the_grace_period() {
        let overdue = Standing::Overdue { since: T0 };
        let extended = Overrides {
            grace_until: Some(at(20)),
            ..Overrides::default()
        };
        assert_eq!(access(overdue, &extended, 10), Access::Grace);
        assert_eq!(access(overdue, &extended, 20), Access::Suspended);
        // Deletion moves with the suspension: 30 days after it, announced 7 days before.
        assert_eq!(access(overdue, &extended, 42), Access::Suspended);
        assert_eq!(access(overdue, &extended, 43), Access::ScheduledForDeletion);
        assert_eq!(access(overdue, &extended, 50), Access::Deleted);
        // An extension shorter than the default grace changes nothing.
        let short = Overrides {
            grace_until: Some(at(3)),
            ..Overrides::default()
        };
        assert_eq!(access(overdue, &short, 5), Access::Grace);
    }

    #[test]
    fn a_paused_clock_stops_every_deadline() {
        let overdue = Standing::Overdue { since: T0 };
        // Paused on day 5 (in grace): it stays in grace however long the pause lasts.
        let paused = Overrides {
            paused_since: Some(at(5)),
            ..Overrides::default()
        };
        assert_eq!(access(overdue, &paused, 5), Access::Grace);
        assert_eq!(access(overdue, &paused, 60), Access::Grace);
        // Resumed on day 15 after 10 days paused: grace ends on day 17 instead of 7.
        let resumed = Overrides {
            paused_before: Duration::days(10),
            ..Overrides::default()
        };
        assert_eq!(access(overdue, &resumed, 16), Access::Grace);
        assert_eq!(access(overdue, &resumed, 17), Access::Suspended);
        let d = decide(overdue, &Policy::default(), &resumed, at(16));
        assert_eq!(d.next, Some((Access::Suspended, at(17))));
        // A suspended tenant's deletion is held too.
        let ended = Standing::Ended { since: T0 };
        let held = Overrides {
            paused_since: Some(at(10)),
            ..Overrides::default()
        };
        assert_eq!(access(ended, &held, 100), Access::Suspended);
    }
}
