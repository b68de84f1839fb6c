//! What a plan promises for support: a first-response and a resolution target per
//! priority, whether urgent tickets may be opened, and the hours the targets count in
//! (around the clock, or business hours Monday to Friday in a time zone).

use super::Priority;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use time::OffsetDateTime;

/// What is wrong with a tier's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierError {
    #[error("Unknown time zone {0:?}; use an IANA name such as Europe/Paris.")]
    UnknownZone(String),
    #[error("Business hours must start before they end, within one day.")]
    Hours,
    #[error("Targets must be at least one minute, and resolution no sooner than first response.")]
    Targets,
}

/// The targets of one priority, in minutes of support hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Targets {
    pub first_response_minutes: u32,
    pub resolution_minutes: u32,
}

/// Business hours: Monday to Friday, from `start` to `end` (minutes after midnight) in a
/// time zone, whose offset changes (daylight saving time) are followed.
#[derive(Debug, Clone)]
pub struct BusinessHours {
    start: u16,
    end: u16,
    zone: String,
    tz: TimeZone,
}

impl PartialEq for BusinessHours {
    fn eq(&self, other: &Self) -> bool {
        (self.start, self.end, &self.zone) == (other.start, other.end, &other.zone)
    }
}
impl Eq for BusinessHours {}

/// When support hours count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupportHours {
    /// Every minute counts.
    Always,
    Business(BusinessHours),
}

/// A plan's support tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportTier {
    /// Per priority, low first ([`Priority::index`]).
    pub targets: [Targets; 4],
    pub urgent_allowed: bool,
    pub hours: SupportHours,
}

fn ts(t: OffsetDateTime) -> Timestamp {
    Timestamp::from_second(t.unix_timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn odt(t: Timestamp) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Days looked at before giving up when adding support time (ten years).
const MAX_DAYS: usize = 3660;

impl BusinessHours {
    /// Hours from `start` to `end` minutes after midnight in the IANA zone `zone`.
    pub fn new(start: u16, end: u16, zone: &str) -> Result<Self, TierError> {
        if start >= end || end > 24 * 60 {
            return Err(TierError::Hours);
        }
        let tz = TimeZone::get(zone).map_err(|_| TierError::UnknownZone(zone.to_owned()))?;
        Ok(Self {
            start,
            end,
            zone: zone.to_owned(),
            tz,
        })
    }

    pub fn start(&self) -> u16 {
        self.start
    }
    pub fn end(&self) -> u16 {
        self.end
    }
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The working window of `date` (none on Saturdays and Sundays), as instants: the
    /// local times are placed in the zone as clocks show them (a start inside a DST gap
    /// moves forward).
    fn window(&self, date: Date) -> Option<(Timestamp, Timestamp)> {
        if matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) {
            return None;
        }
        let at = |minutes: u16| -> Option<Timestamp> {
            let dt = if minutes >= 24 * 60 {
                date.tomorrow().ok()?.at(0, 0, 0, 0)
            } else {
                date.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0)
            };
            Some(
                self.tz
                    .to_ambiguous_zoned(dt)
                    .compatible()
                    .ok()?
                    .timestamp(),
            )
        };
        Some((at(self.start)?, at(self.end)?))
    }

    fn date_of(&self, t: Timestamp) -> Date {
        t.to_zoned(self.tz.clone()).date()
    }

    fn working_seconds(&self, from: Timestamp, to: Timestamp) -> i64 {
        let mut total = 0;
        let mut day = self.date_of(from);
        let last = self.date_of(to);
        while day <= last {
            if let Some((ws, we)) = self.window(day) {
                let (s, e) = (ws.max(from), we.min(to));
                if e > s {
                    total += e.as_second() - s.as_second();
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        total
    }

    fn add_working(&self, from: Timestamp, mut seconds: i64) -> Timestamp {
        let mut day = self.date_of(from);
        for _ in 0..MAX_DAYS {
            if let Some((ws, we)) = self.window(day) {
                let s = ws.max(from);
                if we > s {
                    let room = we.as_second() - s.as_second();
                    if seconds <= room {
                        return Timestamp::from_second(s.as_second() + seconds).unwrap_or(s);
                    }
                    seconds -= room;
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        Timestamp::MAX
    }
}

impl SupportHours {
    /// Seconds of support time between `from` and `to` (zero when `to` is not later).
    pub fn working_seconds(&self, from: OffsetDateTime, to: OffsetDateTime) -> i64 {
        if to <= from {
            return 0;
        }
        match self {
            SupportHours::Always => (to - from).whole_seconds(),
            SupportHours::Business(b) => b.working_seconds(ts(from), ts(to)),
        }
    }

    /// The instant at which `seconds` of support time have passed since `from`.
    pub fn add_working(&self, from: OffsetDateTime, seconds: i64) -> OffsetDateTime {
        let seconds = seconds.max(0);
        match self {
            SupportHours::Always => from + time::Duration::seconds(seconds),
            SupportHours::Business(b) => odt(b.add_working(ts(from), seconds)),
        }
    }

    /// In words: "24/7" or "Mon–Fri 09:00–17:00 Europe/Paris".
    pub fn label(&self) -> String {
        match self {
            SupportHours::Always => "24/7".to_owned(),
            SupportHours::Business(b) => format!(
                "Mon–Fri {:02}:{:02}–{:02}:{:02} {}",
                b.start / 60,
                b.start % 60,
                b.end / 60,
                b.end % 60,
                b.zone
            ),
        }
    }
}

impl SupportTier {
    /// Checks the targets: each at least a minute, resolution no sooner than response.
    pub fn new(
        targets: [Targets; 4],
        urgent_allowed: bool,
        hours: SupportHours,
    ) -> Result<Self, TierError> {
        if targets.iter().any(|t| {
            t.first_response_minutes == 0 || t.resolution_minutes < t.first_response_minutes
        }) {
            return Err(TierError::Targets);
        }
        Ok(Self {
            targets,
            urgent_allowed,
            hours,
        })
    }

    pub fn targets(&self, p: Priority) -> Targets {
        self.targets[p.index()]
    }

    /// May a ticket of this tier have priority `p`?
    pub fn allows(&self, p: Priority) -> bool {
        p != Priority::Urgent || self.urgent_allowed
    }

    /// The tier of a plan that has none set: business hours 09:00–17:00 UTC; a normal
    /// ticket is answered within the plan's `support_response_hours`, low ones in twice
    /// that, high ones in half; resolution within five times the response; no urgent
    /// tickets.
    pub fn default_for(response_hours: i32) -> Self {
        let normal = u32::try_from(response_hours.max(1)).unwrap_or(1) * 60;
        let t = |first: u32| Targets {
            first_response_minutes: first.max(1),
            resolution_minutes: first.max(1) * 5,
        };
        Self {
            targets: [t(normal * 2), t(normal), t(normal / 2), t(normal / 4)],
            urgent_allowed: false,
            hours: SupportHours::Business(BusinessHours {
                start: 9 * 60,
                end: 17 * 60,
                zone: "UTC".to_owned(),
                tz: TimeZone::UTC,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn paris() -> SupportHours {
        SupportHours::Business(
            BusinessHours::new(9 * 60, 17 * 60, "Europe/Paris").expect("Paris is a time zone"),
        )
    }

    #[test]
    fn business_hours_skip_the_weekend() {
        let h = paris();
        // Friday 2026-12-04 16:00 Paris (15:00 UTC) + 2 hours: one hour on Friday, one on
        // Monday from 09:00 Paris (08:00 UTC).
        let due = h.add_working(datetime!(2026-12-04 15:00 UTC), 2 * 3600);
        assert_eq!(due, datetime!(2026-12-07 09:00 UTC));
        assert_eq!(
            h.working_seconds(
                datetime!(2026-12-04 15:00 UTC),
                datetime!(2026-12-07 09:00 UTC)
            ),
            2 * 3600
        );
        // Saturday to Sunday counts nothing.
        assert_eq!(
            h.working_seconds(
                datetime!(2026-12-05 00:00 UTC),
                datetime!(2026-12-07 00:00 UTC)
            ),
            0
        );
    }

    #[test]
    fn business_hours_follow_daylight_saving_time() {
        let h = paris();
        // Paris moves from UTC+1 to UTC+2 on Sunday 2026-03-29. Friday 16:30 local (15:30
        // UTC) + 1 hour: 30 minutes on Friday, then Monday 09:00 local is 07:00 UTC.
        let due = h.add_working(datetime!(2026-03-27 15:30 UTC), 3600);
        assert_eq!(due, datetime!(2026-03-30 07:30 UTC));
        // A full working week across the change is 5 × 8 hours.
        assert_eq!(
            h.working_seconds(
                datetime!(2026-03-23 00:00 UTC),
                datetime!(2026-03-30 00:00 UTC)
            ),
            40 * 3600
        );
        // And back in October (UTC+2 → UTC+1 on 2026-10-25).
        let due = h.add_working(datetime!(2026-10-23 14:00 UTC), 2 * 3600);
        assert_eq!(due, datetime!(2026-10-26 09:00 UTC));
    }

    #[test]
    fn around_the_clock_counts_every_second() {
        let h = SupportHours::Always;
        assert_eq!(
            h.add_working(datetime!(2026-12-05 10:00 UTC), 3600),
            datetime!(2026-12-05 11:00 UTC)
        );
        assert_eq!(
            h.working_seconds(
                datetime!(2026-12-05 11:00 UTC),
                datetime!(2026-12-05 10:00 UTC)
            ),
            0
        );
    }

    #[test]
    fn tiers_are_checked() {
        assert_eq!(
            BusinessHours::new(9 * 60, 9 * 60, "UTC"),
            Err(TierError::Hours)
        );
        assert_eq!(
            BusinessHours::new(9 * 60, 17 * 60, "Mars/Olympus"),
            Err(TierError::UnknownZone("Mars/Olympus".into()))
        );
        let t = Targets {
            first_response_minutes: 60,
            resolution_minutes: 30,
        };
        assert_eq!(
            SupportTier::new([t; 4], true, SupportHours::Always),
            Err(TierError::Targets)
        );
        let d = SupportTier::default_for(24);
        assert!(!d.allows(Priority::Urgent) && d.allows(Priority::High));
        assert_eq!(d.targets(Priority::Normal).first_response_minutes, 24 * 60);
        assert_eq!(d.hours.label(), "Mon–Fri 09:00–17:00 UTC");
    }
}
