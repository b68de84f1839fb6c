//! The SLA clock: from a ticket's history (opened, status changes, priority changes, plan
//! changes, the first answer) to its due times and the support time left.
//!
//! Time is counted in the support hours of the tier in force at each moment, only while
//! the ticket is new or open: waiting on the customer pauses the clock, resolving stops
//! it, reopening starts it again where it stopped. The targets are those of the ticket's
//! current priority and tier, applied to all the time counted so far: raising the
//! priority brings the due time forward.
//!
//! Only [`Change::FirstResponse`] (the provider's first public answer) meets the
//! first-response target: no status change does, so nobody stops that clock without
//! answering (the service also refuses "waiting on customer" and "resolved" before it).

use super::{Priority, Status, SupportHours, SupportTier};
use time::OffsetDateTime;

/// Something that happened to a ticket after it was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Status(Status),
    Priority(Priority),
    /// The organization's plan changed, and with it the support tier.
    Tier(SupportTier),
    /// The provider answered for the first time.
    FirstResponse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockEvent {
    pub at: OffsetDateTime,
    pub change: Change,
}

/// One target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaTarget {
    /// The target, in seconds of support time.
    pub target: i64,
    /// Support time counted until `now` (or until the target was met).
    pub elapsed: i64,
    /// When the target falls (or fell) due; `None` while the clock is paused or stopped
    /// before reaching it.
    pub due: Option<OffsetDateTime>,
    /// When it was met (first answer; resolution).
    pub met_at: Option<OffsetDateTime>,
    /// The clock does not run now (waiting on the customer).
    pub paused: bool,
}

impl SlaTarget {
    /// Support time left (negative once overdue).
    pub fn remaining(&self) -> i64 {
        self.target - self.elapsed
    }
    pub fn breached(&self) -> bool {
        self.elapsed > self.target
    }
}

/// Both targets of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sla {
    pub first_response: SlaTarget,
    pub resolution: SlaTarget,
}

/// A stretch of time the clock ran, counted in `hours`; `end` is `None` while it runs.
#[derive(Debug, Clone)]
struct Run {
    start: OffsetDateTime,
    end: Option<OffsetDateTime>,
    hours: SupportHours,
}

fn counted(runs: &[Run], until: OffsetDateTime) -> i64 {
    runs.iter()
        .map(|r| {
            let end = r.end.map_or(until, |e| e.min(until));
            r.hours.working_seconds(r.start, end)
        })
        .sum()
}

fn due(runs: &[Run], target: i64) -> Option<OffsetDateTime> {
    let mut acc = 0;
    for r in runs {
        let Some(end) = r.end else {
            return Some(r.hours.add_working(r.start, target - acc));
        };
        let w = r.hours.working_seconds(r.start, end);
        if acc + w >= target {
            return Some(r.hours.add_working(r.start, target - acc));
        }
        acc += w;
    }
    None
}

/// Where a ticket opened at `opened` with `priority` under `tier` stands at `now`, given
/// what happened since (`events`, in any order; those before `opened` or after `now` are
/// ignored).
pub fn compute(
    opened: OffsetDateTime,
    priority: Priority,
    tier: &SupportTier,
    events: &[ClockEvent],
    now: OffsetDateTime,
) -> Sla {
    let mut events: Vec<&ClockEvent> = events
        .iter()
        .filter(|e| e.at >= opened && e.at <= now)
        .collect();
    events.sort_by_key(|e| e.at);

    let (mut status, mut priority, mut tier) = (Status::New, priority, tier.clone());
    let mut runs: Vec<Run> = Vec::new();
    let mut first_runs: Option<Vec<Run>> = None;
    let mut first_met: Option<OffsetDateTime> = None;
    let mut resolved_at: Option<OffsetDateTime> = None;
    let start = |runs: &mut Vec<Run>, at, hours: &SupportHours| {
        runs.push(Run {
            start: at,
            end: None,
            hours: hours.clone(),
        });
    };
    let stop = |runs: &mut Vec<Run>, at| {
        if let Some(r) = runs.last_mut().filter(|r| r.end.is_none()) {
            r.end = Some(at);
        }
    };
    start(&mut runs, opened, &tier.hours);
    for e in events {
        let running = status.clock_runs();
        match &e.change {
            Change::Status(s) => {
                if running && !s.clock_runs() {
                    stop(&mut runs, e.at);
                } else if !running && s.clock_runs() {
                    start(&mut runs, e.at, &tier.hours);
                }
                // A status change is never an answer: resolving or closing without one
                // stops the first-response clock (its runs end here) but does not meet
                // it, so a target already overrun stays breached.
                resolved_at = (!s.is_active()).then_some(resolved_at.unwrap_or(e.at));
                status = *s;
            }
            Change::Priority(p) => priority = *p,
            Change::Tier(t) => {
                tier = t.clone();
                if running {
                    stop(&mut runs, e.at);
                    start(&mut runs, e.at, &tier.hours);
                }
            }
            Change::FirstResponse => {
                if first_met.is_none() {
                    first_met = Some(e.at);
                    let mut r = runs.clone();
                    stop(&mut r, e.at);
                    first_runs = Some(r);
                }
            }
        }
    }
    let paused = status == Status::WaitingOnCustomer;
    let targets = tier.targets(priority);
    let target = |minutes: u32| i64::from(minutes) * 60;

    let first_runs = first_runs.unwrap_or_else(|| runs.clone());
    let first_target = target(targets.first_response_minutes);
    let first_response = SlaTarget {
        target: first_target,
        elapsed: counted(&first_runs, first_met.unwrap_or(now)),
        due: due(&first_runs, first_target),
        met_at: first_met,
        paused: paused && first_met.is_none(),
    };
    let resolution_target = target(targets.resolution_minutes);
    let resolution = SlaTarget {
        target: resolution_target,
        elapsed: counted(&runs, now),
        due: due(&runs, resolution_target),
        met_at: resolved_at,
        paused,
    };
    Sla {
        first_response,
        resolution,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::{BusinessHours, Targets};
    use time::macros::datetime;
    use time::Duration;

    fn tier(first: u32, resolution: u32, hours: SupportHours) -> SupportTier {
        let t = |f: u32, r: u32| Targets {
            first_response_minutes: f,
            resolution_minutes: r,
        };
        // low: double, normal: as given, high: half, urgent: a quarter.
        SupportTier::new(
            [
                t(first * 2, resolution * 2),
                t(first, resolution),
                t(first / 2, resolution / 2),
                t(first / 4, resolution / 4),
            ],
            true,
            hours,
        )
        .expect("a valid tier")
    }

    fn paris() -> SupportHours {
        SupportHours::Business(
            BusinessHours::new(9 * 60, 17 * 60, "Europe/Paris").expect("Paris is a time zone"),
        )
    }

    fn ev(at: OffsetDateTime, change: Change) -> ClockEvent {
        ClockEvent { at, change }
    }

    const OPENED: OffsetDateTime = datetime!(2026-12-07 10:00 UTC);

    #[test]
    fn counts_down_around_the_clock() {
        let t = tier(60, 480, SupportHours::Always);
        let sla = compute(
            OPENED,
            Priority::Normal,
            &t,
            &[],
            OPENED + Duration::minutes(20),
        );
        assert_eq!(sla.first_response.remaining(), 40 * 60);
        assert_eq!(sla.first_response.due, Some(OPENED + Duration::hours(1)));
        assert_eq!(sla.resolution.due, Some(OPENED + Duration::hours(8)));
        assert!(!sla.first_response.breached());

        let late = compute(
            OPENED,
            Priority::Normal,
            &t,
            &[],
            OPENED + Duration::hours(2),
        );
        assert!(late.first_response.breached());
        assert_eq!(late.first_response.remaining(), -3600);
        assert_eq!(late.first_response.due, Some(OPENED + Duration::hours(1)));
    }

    #[test]
    fn the_first_answer_stops_the_first_response_clock() {
        let t = tier(60, 480, SupportHours::Always);
        let answered = OPENED + Duration::minutes(45);
        let sla = compute(
            OPENED,
            Priority::Normal,
            &t,
            &[ev(answered, Change::FirstResponse)],
            OPENED + Duration::hours(5),
        );
        assert_eq!(sla.first_response.met_at, Some(answered));
        assert_eq!(sla.first_response.elapsed, 45 * 60);
        assert!(!sla.first_response.breached());
        // The resolution clock runs on.
        assert_eq!(sla.resolution.elapsed, 5 * 3600);
    }

    #[test]
    fn waiting_on_the_customer_pauses_the_clock() {
        let t = tier(60, 480, SupportHours::Always);
        let events = [
            ev(OPENED + Duration::minutes(30), Change::FirstResponse),
            ev(
                OPENED + Duration::hours(1),
                Change::Status(Status::WaitingOnCustomer),
            ),
            ev(OPENED + Duration::hours(5), Change::Status(Status::Open)),
        ];
        let during = compute(
            OPENED,
            Priority::Normal,
            &t,
            &events[..2],
            OPENED + Duration::hours(3),
        );
        assert!(during.resolution.paused);
        assert_eq!(during.resolution.elapsed, 3600);
        assert_eq!(during.resolution.due, None);
        assert_eq!(during.resolution.remaining(), 7 * 3600);
        // Back to open after four hours of waiting: due four hours later than without.
        let after = compute(
            OPENED,
            Priority::Normal,
            &t,
            &events,
            OPENED + Duration::hours(6),
        );
        assert!(!after.resolution.paused);
        assert_eq!(after.resolution.elapsed, 2 * 3600);
        assert_eq!(after.resolution.due, Some(OPENED + Duration::hours(12)));
    }

    #[test]
    fn a_priority_change_applies_its_targets_to_the_time_counted_so_far() {
        let t = tier(240, 960, SupportHours::Always);
        let raised = OPENED + Duration::hours(1);
        let sla = compute(
            OPENED,
            Priority::Normal,
            &t,
            &[ev(raised, Change::Priority(Priority::High))],
            OPENED + Duration::hours(1),
        );
        // High: 2 hours to answer, from the opening.
        assert_eq!(sla.first_response.due, Some(OPENED + Duration::hours(2)));
        assert_eq!(sla.first_response.remaining(), 3600);
        // Lowered to low later: 8 hours.
        let sla = compute(
            OPENED,
            Priority::Normal,
            &t,
            &[
                ev(raised, Change::Priority(Priority::High)),
                ev(raised, Change::Priority(Priority::Low)),
            ],
            OPENED + Duration::hours(1),
        );
        assert_eq!(sla.first_response.due, Some(OPENED + Duration::hours(8)));
    }

    #[test]
    fn business_hours_across_a_weekend_and_a_pause() {
        let t = tier(240, 960, paris());
        // Opened Friday 2026-12-04 15:00 Paris (14:00 UTC): 2 hours on Friday, then
        // Monday from 09:00 Paris (08:00 UTC): first answer due Monday 11:00 Paris.
        let opened = datetime!(2026-12-04 14:00 UTC);
        let sla = compute(opened, Priority::Normal, &t, &[], opened);
        assert_eq!(
            sla.first_response.due,
            Some(datetime!(2026-12-07 10:00 UTC))
        );
        // Waiting on the customer from Friday 16:00 Paris to Monday 12:00 Paris: the
        // hour before the pause counts, then 3 hours more from Monday 12:00.
        let events = [
            ev(
                datetime!(2026-12-04 15:00 UTC),
                Change::Status(Status::WaitingOnCustomer),
            ),
            ev(
                datetime!(2026-12-07 11:00 UTC),
                Change::Status(Status::Open),
            ),
        ];
        let sla = compute(
            opened,
            Priority::Normal,
            &t,
            &events,
            datetime!(2026-12-07 11:00 UTC),
        );
        assert_eq!(sla.first_response.elapsed, 3600);
        assert_eq!(
            sla.first_response.due,
            Some(datetime!(2026-12-07 14:00 UTC))
        );
        // Saturday counts nothing: the remaining time is the same as on Friday evening.
        let saturday = compute(
            opened,
            Priority::Normal,
            &t,
            &[],
            datetime!(2026-12-05 12:00 UTC),
        );
        assert_eq!(saturday.first_response.remaining(), 2 * 3600);
    }

    #[test]
    fn business_hours_across_a_dst_change() {
        let t = tier(240, 960, paris());
        // Opened Friday 2026-03-27 15:00 Paris (UTC+1, 14:00 UTC); the clocks go forward
        // on Sunday: Monday 09:00 Paris is 07:00 UTC, so 2 more hours end at 09:00 UTC.
        let opened = datetime!(2026-03-27 14:00 UTC);
        let sla = compute(opened, Priority::Normal, &t, &[], opened);
        assert_eq!(
            sla.first_response.due,
            Some(datetime!(2026-03-30 09:00 UTC))
        );
    }

    #[test]
    fn a_plan_change_counts_the_rest_in_the_new_tiers_hours() {
        let business = tier(240, 960, paris());
        let always = tier(240, 960, SupportHours::Always);
        // Opened Friday 15:00 Paris under business hours; at 16:00 Paris (1 hour counted)
        // the organization moves to a 24/7 plan: the 3 hours left run on through the
        // evening, due Friday 19:00 Paris (18:00 UTC) instead of Monday.
        let opened = datetime!(2026-12-04 14:00 UTC);
        let changed = datetime!(2026-12-04 15:00 UTC);
        let sla = compute(
            opened,
            Priority::Normal,
            &business,
            &[ev(changed, Change::Tier(always.clone()))],
            changed,
        );
        assert_eq!(
            sla.first_response.due,
            Some(datetime!(2026-12-04 18:00 UTC))
        );
        // The new tier's targets apply too: a 24/7 tier answering in 2 hours is due at
        // 17:00 Paris.
        let faster = tier(120, 960, SupportHours::Always);
        let sla = compute(
            opened,
            Priority::Normal,
            &business,
            &[ev(changed, Change::Tier(faster))],
            changed,
        );
        assert_eq!(
            sla.first_response.due,
            Some(datetime!(2026-12-04 16:00 UTC))
        );
    }

    #[test]
    fn resolving_stops_the_clocks_and_reopening_resumes_them() {
        let t = tier(60, 240, SupportHours::Always);
        let events = [
            ev(OPENED + Duration::minutes(30), Change::FirstResponse),
            ev(
                OPENED + Duration::hours(1),
                Change::Status(Status::Resolved),
            ),
            ev(OPENED + Duration::hours(10), Change::Status(Status::Open)),
        ];
        let resolved = compute(
            OPENED,
            Priority::Normal,
            &t,
            &events[..2],
            OPENED + Duration::hours(9),
        );
        assert_eq!(resolved.resolution.elapsed, 3600);
        assert_eq!(
            resolved.resolution.met_at,
            Some(OPENED + Duration::hours(1))
        );
        assert!(!resolved.resolution.breached());
        let reopened = compute(
            OPENED,
            Priority::Normal,
            &t,
            &events,
            OPENED + Duration::hours(11),
        );
        assert_eq!(reopened.resolution.met_at, None);
        assert_eq!(reopened.resolution.elapsed, 2 * 3600);
        assert_eq!(reopened.resolution.due, Some(OPENED + Duration::hours(13)));
    }

    #[test]
    fn resolving_without_an_answer_does_not_meet_the_first_response() {
        let t = tier(60, 240, SupportHours::Always);
        let events = [
            ev(
                OPENED + Duration::hours(2),
                Change::Status(Status::Resolved),
            ),
            ev(OPENED + Duration::hours(3), Change::Status(Status::Open)),
        ];
        let resolved = compute(
            OPENED,
            Priority::Normal,
            &t,
            &events[..1],
            OPENED + Duration::hours(2) + Duration::minutes(30),
        );
        assert_eq!(resolved.first_response.met_at, None);
        assert_eq!(resolved.first_response.elapsed, 2 * 3600);
        assert!(resolved.first_response.breached());
        // Reopened: still unanswered, the first-response clock runs on where it stopped.
        let reopened = compute(
            OPENED,
            Priority::Normal,
            &t,
            &events,
            OPENED + Duration::hours(4),
        );
        assert_eq!(reopened.first_response.met_at, None);
        assert_eq!(reopened.first_response.elapsed, 3 * 3600);
    }
}
