//! The support dashboard's figures over the last [`WEEKS`] weeks (weeks start on Monday,
//! 00:00 UTC; the current week counts so far): tickets opened and solved per week, the
//! median time to the first answer per week, SLA attainment per plan, satisfaction.
//!
//! - opened: tickets opened that week (duplicates included: a customer did open them);
//! - solved: tickets resolved or closed that week and still so, merged duplicates left out;
//! - first answer: the median calendar time from opening to the first public answer, over
//!   the first answers given that week;
//! - SLA attainment: of the tickets opened in the period (merged duplicates left out), per
//!   plan each follows, the share of decided targets that were met. A first response is
//!   decided once answered or breached; a resolution once resolved or closed, or breached;
//! - satisfaction: the ratings given in the period, their count and average score.

use crate::SupportError;
use herd_store::support_ops::{self as store, PlanAttainment};
use sqlx::PgPool;
use time::{Duration, OffsetDateTime, Time};

/// How many weeks the dashboard shows, the current one last.
pub const WEEKS: usize = 12;

/// One week's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Week {
    /// Monday, 00:00 UTC.
    pub start: OffsetDateTime,
    pub opened: i64,
    pub solved: i64,
    /// Median seconds from opening to the first answer; `None` without first answers.
    pub median_first_response: Option<f64>,
    pub first_responses: i64,
}

/// Satisfaction ratings: how many of each score (1 to 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Satisfaction {
    pub counts: [i64; 5],
}

impl Satisfaction {
    pub fn total(&self) -> i64 {
        self.counts.iter().sum()
    }

    /// The average score; `None` without ratings.
    pub fn average(&self) -> Option<f64> {
        let total = self.total();
        let sum: i64 = self
            .counts
            .iter()
            .zip(1..)
            .map(|(count, score)| count * score)
            .sum();
        (total > 0).then(|| sum as f64 / total as f64)
    }
}

/// A share in percent; `None` when nothing was decided.
pub fn percent(met: i64, decided: i64) -> Option<f64> {
    (decided > 0).then(|| met as f64 * 100.0 / decided as f64)
}

/// The dashboard's figures.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The period: from the first week's Monday to the end of the current week.
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    /// Oldest first.
    pub weeks: Vec<Week>,
    pub plans: Vec<PlanAttainment>,
    pub satisfaction: Satisfaction,
}

/// Monday 00:00 UTC of the week of `t`.
pub fn week_start(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    let monday = t.date() - Duration::days(i64::from(t.weekday().number_days_from_monday()));
    monday.with_time(Time::MIDNIGHT).assume_utc()
}

/// The dashboard as of `now`.
pub async fn compute(pool: &PgPool, now: OffsetDateTime) -> Result<Dashboard, SupportError> {
    let to = week_start(now) + Duration::weeks(1);
    let from = to - Duration::weeks(WEEKS as i64);
    let opened = store::opened_per_week(pool, from, to).await?;
    let solved = store::solved_per_week(pool, from, to).await?;
    let medians = store::first_response_median_per_week(pool, from, to).await?;
    let count =
        |list: &store::Weekly, week| list.iter().find(|(w, _)| *w == week).map_or(0, |(_, n)| *n);
    let weeks = (0..WEEKS)
        .map(|i| {
            let start = from + Duration::weeks(i as i64);
            let median = medians.iter().find(|(w, _, _)| *w == start);
            Week {
                start,
                opened: count(&opened, start),
                solved: count(&solved, start),
                median_first_response: median.map(|(_, m, _)| *m),
                first_responses: median.map_or(0, |(_, _, n)| *n),
            }
        })
        .collect();
    Ok(Dashboard {
        from,
        to,
        weeks,
        plans: store::attainment_per_plan(pool, from, to).await?,
        satisfaction: Satisfaction {
            counts: store::ratings_by_score(pool, from, to).await?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn weeks_start_on_monday_in_utc() {
        // Tuesday 2026-12-08.
        assert_eq!(
            week_start(datetime!(2026-12-08 23:30 UTC)),
            datetime!(2026-12-07 00:00 UTC)
        );
        // Monday 00:30 in Paris is still Sunday in UTC.
        assert_eq!(
            week_start(datetime!(2026-12-07 00:30 +01:00)),
            datetime!(2026-11-30 00:00 UTC)
        );
        assert_eq!(
            week_start(datetime!(2026-12-07 00:00 UTC)),
            datetime!(2026-12-07 00:00 UTC)
        );
    }

    #[test]
    fn averages_and_shares() {
        let s = Satisfaction {
            counts: [1, 0, 0, 2, 3],
        };
        assert_eq!(s.total(), 6);
        assert_eq!(s.average(), Some((1.0 + 8.0 + 15.0) / 6.0));
        assert_eq!(Satisfaction { counts: [0; 5] }.average(), None);
        assert_eq!(percent(3, 4), Some(75.0));
        assert_eq!(percent(0, 0), None);
    }
}
