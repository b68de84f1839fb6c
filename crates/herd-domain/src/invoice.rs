//! Invoice billing's rules: billing periods, due dates, and invoice numbers (gap-free per
//! year: `HERD-2026-000042`).

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Month,
    Quarter,
    Year,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "month" => Some(Period::Month),
            "quarter" => Some(Period::Quarter),
            "year" => Some(Period::Year),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Month => "month",
            Period::Quarter => "quarter",
            Period::Year => "year",
        }
    }

    fn months(self) -> u32 {
        match self {
            Period::Month => 1,
            Period::Quarter => 3,
            Period::Year => 12,
        }
    }

    /// The start of the next period: the same day of the month, `months()` later, kept
    /// within the month (31 January + 1 month = 28 or 29 February).
    pub fn next(self, start: Date) -> Date {
        self.nth(start, 1)
    }

    /// The start of the `n`-th period after a contract starting on `start`, always counted
    /// from `start` so that short months do not drift the billing day (31 January →
    /// 28 February → 31 March).
    pub fn nth(self, start: Date, n: u32) -> Date {
        let total = start.month() as u32 - 1 + self.months() * n;
        let year = start.year() + (total / 12) as i32;
        let month = Month::try_from((total % 12 + 1) as u8).unwrap_or(Month::January);
        let last = time::util::days_in_month(month, year);
        Date::from_calendar_date(year, month, start.day().min(last)).unwrap_or(start)
    }
}

/// The last day covered by a period starting on `start`.
pub fn period_end(period: Period, start: Date) -> Date {
    period.next(start) - Duration::days(1)
}

/// The due date of an invoice issued on `issued` with payment terms in days.
pub fn due_on(issued: Date, terms_days: i64) -> Date {
    issued + Duration::days(terms_days)
}

/// The invoice number for the `seq`-th invoice of `year`.
pub fn number(year: i32, seq: i32) -> String {
    format!("HERD-{year}-{seq:06}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn periods_follow_the_calendar() {
        assert_eq!(
            Period::Month.next(date!(2026 - 01 - 15)),
            date!(2026 - 02 - 15)
        );
        assert_eq!(
            Period::Month.next(date!(2026 - 01 - 31)),
            date!(2026 - 02 - 28)
        );
        assert_eq!(
            Period::Month.next(date!(2028 - 01 - 31)),
            date!(2028 - 02 - 29)
        );
        assert_eq!(
            Period::Month.next(date!(2026 - 12 - 01)),
            date!(2027 - 01 - 01)
        );
        assert_eq!(
            Period::Quarter.next(date!(2026 - 11 - 30)),
            date!(2027 - 02 - 28)
        );
        assert_eq!(
            Period::Year.next(date!(2028 - 02 - 29)),
            date!(2029 - 02 - 28)
        );
        assert_eq!(
            period_end(Period::Month, date!(2026 - 12 - 01)),
            date!(2026 - 12 - 31)
        );
        assert_eq!(Period::parse("quarter"), Some(Period::Quarter));
        // No drift after a short month.
        assert_eq!(
            Period::Month.nth(date!(2026 - 01 - 31), 2),
            date!(2026 - 03 - 31)
        );
        assert_eq!(
            Period::Month.nth(date!(2026 - 01 - 31), 0),
            date!(2026 - 01 - 31)
        );
        assert_eq!(Period::parse("week"), None);
    }

    #[test]
    fn due_dates_and_numbers() {
        assert_eq!(due_on(date!(2026 - 12 - 01), 30), date!(2026 - 12 - 31));
        assert_eq!(number(2026, 42), "HERD-2026-000042");
    }
}
