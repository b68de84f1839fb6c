//! What the pages show: the moderators' queue across servers, a report with the
//! customer's policy beside it, a customer's server page, and the monthly report (CSV,
//! fit for a transparency report), also of the organization's deleted servers for the
//! months they ran (their personal data erased, the counts kept).

use crate::connections::org_instance;
use crate::{require_moderator, ModerationError};
use herd_domain::moderation::{median_seconds, usage, Decision, ReportCategory, ReportState};
use herd_domain::{OrgId, UserId};
use herd_store::moderation::{
    self as store, DecisionRow, DeletedServer, Escalation, Instance, PolicyVersion, QueueFilter,
    Report, TimeEntry,
};
use herd_store::{Page, Paged};
use sqlx::PgPool;
use std::collections::BTreeMap;
use time::{Date, Month, OffsetDateTime, Time};
use uuid::Uuid;

/// The first instant of a month and of the next one (UTC).
pub fn month_bounds(year: i32, month: Month) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let from = Date::from_calendar_date(year, month, 1).ok()?;
    let (ny, nm) = if month == Month::December {
        (year + 1, Month::January)
    } else {
        (year, month.next())
    };
    let to = Date::from_calendar_date(ny, nm, 1).ok()?;
    Some((
        from.with_time(Time::MIDNIGHT).assume_utc(),
        to.with_time(Time::MIDNIGHT).assume_utc(),
    ))
}

/// Parses `YYYY-MM`.
pub fn parse_month(s: &str) -> Option<(i32, Month)> {
    let (y, m) = s.trim().split_once('-')?;
    let year = y
        .parse::<i32>()
        .ok()
        .filter(|y| (2000..=2100).contains(y))?;
    let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
    Some((year, month))
}

/// This month (UTC).
pub fn this_month() -> (i32, Month) {
    let now = OffsetDateTime::now_utc();
    (now.year(), now.month())
}

/// Hours used against the plan's this month: ("3 h 20 min of 4 h", over?).
async fn hours(pool: &PgPool, i: &Instance) -> Result<(String, bool), ModerationError> {
    let (y, m) = this_month();
    let (from, to) = month_bounds(y, m).ok_or(ModerationError::NotFound)?;
    let used = store::minutes_used(pool, i.id, from, to).await?;
    Ok(usage(used, i.terms.monthly_hours))
}

/// The moderators' queue: filters offered, the page of open reports, actions not applied
/// yet, and servers whose connection is broken.
#[derive(Debug)]
pub struct Queue {
    pub instances: Vec<Instance>,
    pub reports: Paged<Report>,
    pub unsent: Vec<DecisionRow>,
    /// (server, hours used this month, over)
    pub hours: Vec<(Instance, String, bool)>,
}

/// The queue, for a moderator.
pub async fn queue(
    pool: &PgPool,
    who: UserId,
    filter: &QueueFilter,
    page: Page,
) -> Result<Queue, ModerationError> {
    require_moderator(pool, who).await?;
    let instances = store::connected_instances(pool).await?;
    let mut hours_used = Vec::new();
    for i in &instances {
        let (text, over) = hours(pool, i).await?;
        hours_used.push((i.clone(), text, over));
    }
    Ok(Queue {
        reports: store::queue(pool, filter, page).await?,
        unsent: store::unsent(pool).await?,
        hours: hours_used,
        instances,
    })
}

/// A report's page for a moderator.
#[derive(Debug)]
pub struct ReportView {
    pub report: Report,
    pub instance: Instance,
    pub policy: Option<PolicyVersion>,
    pub decisions: Vec<DecisionRow>,
    /// Time logged without a decision, oldest first.
    pub time: Vec<TimeEntry>,
    pub hours: (String, bool),
}

pub async fn report(pool: &PgPool, who: UserId, id: Uuid) -> Result<ReportView, ModerationError> {
    require_moderator(pool, who).await?;
    let report = store::report(pool, id)
        .await?
        .ok_or(ModerationError::NotFound)?;
    let instance = store::instance(pool, report.instance_id)
        .await?
        .ok_or(ModerationError::NotFound)?;
    Ok(ReportView {
        policy: store::current_policy(pool, instance.id).await?,
        decisions: store::report_decisions(pool, id).await?,
        time: store::report_time(pool, id).await?,
        hours: hours(pool, &instance).await?,
        report,
        instance,
    })
}

/// A server's moderation as its customer sees it.
#[derive(Debug)]
pub struct CustomerView {
    pub instance: Instance,
    /// Newest first.
    pub policies: Vec<PolicyVersion>,
    pub open: Vec<Report>,
    pub decisions: Vec<DecisionRow>,
    pub escalations: Vec<Escalation>,
    pub hours: (String, bool),
}

pub async fn customer(
    pool: &PgPool,
    org: OrgId,
    instance: Uuid,
) -> Result<CustomerView, ModerationError> {
    let i = org_instance(pool, org, instance).await?;
    Ok(CustomerView {
        policies: store::policies(pool, i.id).await?,
        open: store::instance_reports(
            pool,
            i.id,
            &[ReportState::Open, ReportState::Escalated],
            200,
        )
        .await?,
        decisions: store::instance_decisions(pool, i.id, 100).await?,
        escalations: store::instance_escalations(pool, i.id).await?,
        hours: hours(pool, &i).await?,
        instance: i,
    })
}

/// The moderation index of an organization: its servers, and a page of its deleted
/// servers that had moderation (their monthly reports stay downloadable).
#[derive(Debug)]
pub struct CustomerIndex {
    pub servers: Vec<Instance>,
    pub deleted: Paged<DeletedServer>,
}

/// The organization's servers and deleted servers, for the moderation index.
pub async fn customer_index(
    pool: &PgPool,
    org: OrgId,
    deleted_page: Page,
) -> Result<CustomerIndex, ModerationError> {
    Ok(CustomerIndex {
        servers: store::org_instances(pool, org).await?,
        deleted: store::org_deleted_servers(pool, org, deleted_page).await?,
    })
}

/// One of the organization's deleted servers that had moderation (not found for another
/// organization's, or a server not deleted).
async fn org_deleted_server(
    pool: &PgPool,
    org: OrgId,
    id: Uuid,
) -> Result<DeletedServer, ModerationError> {
    match store::deleted_server(pool, id).await? {
        Some(d) if d.org_id == org.0 => Ok(d),
        _ => Err(ModerationError::NotFound),
    }
}

/// A deleted server's moderation history: the months from its first moderation activity
/// to its last, newest first, each with its monthly report. Its personal data is erased;
/// only counts, categories, actions and times remain.
#[derive(Debug)]
pub struct History {
    pub server: DeletedServer,
    /// `YYYY-MM`, newest first.
    pub months: Vec<String>,
}

pub async fn deleted_history(
    pool: &PgPool,
    org: OrgId,
    id: Uuid,
) -> Result<History, ModerationError> {
    let server = org_deleted_server(pool, org, id).await?;
    Ok(History {
        months: months_between(server.first_month.date(), server.last_month.date()),
        server,
    })
}

/// `YYYY-MM` of every month from `first` to `last` (inclusive), newest first.
fn months_between(first: Date, last: Date) -> Vec<String> {
    let mut out = Vec::new();
    let (mut y, mut m) = (last.year(), last.month());
    while (y, u8::from(m)) >= (first.year(), u8::from(first.month())) {
        out.push(format!("{y:04}-{:02}", u8::from(m)));
        if m == Month::January {
            y -= 1;
        }
        m = m.previous();
    }
    out
}

/// The monthly report of one of the organization's deleted servers for `month` (by
/// default its last month with moderation activity): the same counts as [`monthly`] gave
/// while it ran (the erasure keeps what they count).
pub async fn deleted_monthly(
    pool: &PgPool,
    org: OrgId,
    id: Uuid,
    month: Option<(i32, Month)>,
) -> Result<Monthly, ModerationError> {
    let d = org_deleted_server(pool, org, id).await?;
    let (year, month) = month.unwrap_or((d.last_month.year(), d.last_month.month()));
    month_report(pool, d.id, d.domain, year, month).await
}

/// What `/metrics` adds for moderation: the reports in the queue past their due time,
/// read from the database at each scrape.
pub async fn metrics_text(pool: &PgPool, now: OffsetDateTime) -> Result<String, ModerationError> {
    let n = store::overdue_count(pool, now).await?;
    Ok(format!(
        "# HELP herd_moderation_reports_overdue Open reports in the moderation queue past their due time (the plan's response target).\n# TYPE herd_moderation_reports_overdue gauge\nherd_moderation_reports_overdue {n}\n"
    ))
}

/// One line of the monthly report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthLine {
    /// `None`: every category.
    pub category: Option<ReportCategory>,
    /// `None`: every action.
    pub action: Option<Decision>,
    pub count: usize,
    pub median_minutes: Option<i64>,
}

/// The monthly report of a server: actions by category and action, with the median time
/// from a report being filed to its first action, and the total.
#[derive(Debug, Clone)]
pub struct Monthly {
    pub domain: String,
    pub month: String,
    pub lines: Vec<MonthLine>,
    pub minutes_used: i64,
}

pub async fn monthly(
    pool: &PgPool,
    org: OrgId,
    instance: Uuid,
    year: i32,
    month: Month,
) -> Result<Monthly, ModerationError> {
    let i = org_instance(pool, org, instance).await?;
    month_report(pool, i.id, i.domain, year, month).await
}

/// The monthly report of a server, live or deleted: only categories, actions and times.
async fn month_report(
    pool: &PgPool,
    instance: Uuid,
    domain: String,
    year: i32,
    month: Month,
) -> Result<Monthly, ModerationError> {
    let (from, to) = month_bounds(year, month).ok_or(ModerationError::NotFound)?;
    let rows = store::month(pool, instance, from, to).await?;
    let actions: Vec<_> = rows
        .iter()
        .filter(|r| !matches!(r.decision, Decision::Escalate | Decision::Reopen))
        .collect();
    let mut groups: BTreeMap<(ReportCategory, Decision), Vec<&store::MonthRow>> = BTreeMap::new();
    for r in &actions {
        groups.entry((r.category, r.decision)).or_default().push(r);
    }
    let median = |rs: &[&store::MonthRow]| {
        median_seconds(
            rs.iter()
                .filter(|r| r.first_action)
                .map(|r| r.seconds_to_decision)
                .collect(),
        )
        .map(|s| s / 60)
    };
    let mut lines: Vec<MonthLine> = groups
        .iter()
        .map(|((c, d), rs)| MonthLine {
            category: Some(*c),
            action: Some(*d),
            count: rs.len(),
            median_minutes: median(rs),
        })
        .collect();
    lines.push(MonthLine {
        category: None,
        action: None,
        count: actions.len(),
        median_minutes: median(&actions),
    });
    Ok(Monthly {
        domain,
        month: format!("{year:04}-{:02}", u8::from(month)),
        lines,
        minutes_used: store::minutes_used(pool, instance, from, to).await?,
    })
}

impl Monthly {
    /// As CSV: `month,server,category,action,count,median_minutes_to_action`, one line per
    /// category and action, then `all,all` with the totals, then the minutes moderators
    /// spent.
    pub fn csv(&self) -> String {
        let mut out = String::from("month,server,category,action,count,median_minutes_to_action\n");
        for l in &self.lines {
            out.push_str(&format!(
                "{},{},{},{},{},{}\n",
                self.month,
                csv_field(&self.domain),
                l.category.map_or("all", |c| c.as_str()),
                l.action.map_or("all", |a| a.as_str()),
                l.count,
                l.median_minutes.map(|m| m.to_string()).unwrap_or_default()
            ));
        }
        out.push_str(&format!(
            "{},{},moderation_minutes,,{},\n",
            self.month,
            csv_field(&self.domain),
            self.minutes_used
        ));
        out
    }
}

/// A CSV field, quoted when it must be, and never read as a formula by a spreadsheet.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        let (from, to) = month_bounds(2026, Month::December).unwrap_or_else(|| panic!("bounds"));
        assert_eq!(from, time::macros::datetime!(2026-12-01 00:00 UTC));
        assert_eq!(to, time::macros::datetime!(2027-01-01 00:00 UTC));
        assert_eq!(parse_month("2026-02"), Some((2026, Month::February)));
        assert_eq!(parse_month("2026-13"), None);
        assert_eq!(parse_month("x"), None);
    }

    #[test]
    fn months_between_span_years_newest_first() {
        let d = |y, m| Date::from_calendar_date(y, m, 1).unwrap_or_else(|_| panic!("date"));
        assert_eq!(
            months_between(d(2025, Month::November), d(2026, Month::February)),
            ["2026-02", "2026-01", "2025-12", "2025-11"]
        );
        assert_eq!(
            months_between(d(2026, Month::March), d(2026, Month::March)),
            ["2026-03"]
        );
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("lyon.social"), "lyon.social");
    }
}
