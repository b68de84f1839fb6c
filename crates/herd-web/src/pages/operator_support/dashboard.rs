//! The support dashboard (`/operator/support/dashboard`): over the last twelve weeks,
//! tickets opened and solved per week, the median time to the first answer per week, SLA
//! attainment per plan and satisfaction, each a chart drawn on the server as inline SVG
//! with its figures in a table (herd-support's `dashboard` computes them).

use super::charts::{self, columns, percent_rows, Chart, Legend, Plot, Table};
use crate::auth::Operator;
use crate::error::AppError;
use crate::pages::support::app_error;
use crate::routes::{Access, Routes};
use crate::state::AppState;
use crate::views::{render, Layout};
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use herd_support::dashboard::{self, percent, Dashboard, Week};
use time::OffsetDateTime;
use tower_sessions::Session;

pub(super) fn routes(r: Routes) -> Routes {
    r.get("/operator/support/dashboard", Access::Operator, show)
}

const WIDTH: i32 = 720;

#[derive(Template)]
#[template(path = "operator_support_dashboard.html")]
struct DashboardPage {
    l: Layout,
    period: String,
    charts: Vec<Chart>,
}

async fn show(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
) -> Result<Response, AppError> {
    let d = dashboard::compute(&state.pool, OffsetDateTime::now_utc())
        .await
        .map_err(app_error)?;
    render(&DashboardPage {
        l: Layout::new(&session, Some(&op)).await?,
        period: format!("{} to {}", day(d.from), day(d.to - time::Duration::days(1))),
        charts: charts_of(&d),
    })
}

/// The dashboard's four charts.
fn charts_of(d: &Dashboard) -> Vec<Chart> {
    vec![
        weekly_tickets(&d.weeks),
        first_answers(&d.weeks),
        attainment(d),
        satisfaction(d),
    ]
}

/// `2026-12-07`
fn day(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The plural's "s" for `n` things.
fn plural(n: i64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `7 Dec`
fn short_day(t: OffsetDateTime) -> String {
    let month = t.month().to_string();
    format!("{} {}", t.day(), &month[..3])
}

/// A duration in seconds as people read it: `45 min`, `3 h 20 min`, `2 d 4 h`.
pub(super) fn duration(seconds: f64) -> String {
    let minutes = (seconds / 60.0).round() as i64;
    match minutes {
        m if m < 60 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h {} min", m / 60, m % 60),
        m => format!("{} d {} h", m / 1440, (m % 1440) / 60),
    }
}

fn plot() -> Plot {
    Plot {
        left: 48,
        top: 40,
        width: WIDTH - 64,
        height: 200,
    }
}

fn legend(names: &[&str]) -> Vec<Legend> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| Legend {
            x: 48 + i32::try_from(i).unwrap_or(0) * 180,
            y: 10,
            hatched: i == 1,
            label: (*n).to_owned(),
        })
        .collect()
}

fn weekly_tickets(weeks: &[Week]) -> Chart {
    let series = ["Opened", "Solved"];
    let groups: Vec<_> = weeks
        .iter()
        .map(|w| {
            (
                short_day(w.start),
                vec![Some(w.opened as f64), Some(w.solved as f64)],
            )
        })
        .collect();
    let (bars, lines, texts) = columns(&plot(), &groups, &charts::tick_label, &series);
    let opened: i64 = weeks.iter().map(|w| w.opened).sum();
    let solved: i64 = weeks.iter().map(|w| w.solved).sum();
    Chart {
        id: "chart-weekly",
        heading: "Tickets opened and solved per week",
        summary: format!(
            "{opened} ticket{} opened and {solved} solved in {} weeks; this week so far: {} opened, {} solved.",
            plural(opened),
            weeks.len(),
            weeks.last().map_or(0, |w| w.opened),
            weeks.last().map_or(0, |w| w.solved),
        ),
        width: WIDTH,
        height: 270,
        bars,
        lines,
        texts,
        legend: legend(&series),
        table: Table {
            caption: "Tickets opened and solved per week (weeks start on Monday, UTC)".into(),
            head: vec!["Week of".into(), "Opened".into(), "Solved".into()],
            rows: weeks
                .iter()
                .map(|w| vec![day(w.start), w.opened.to_string(), w.solved.to_string()])
                .collect(),
        },
    }
}

fn first_answers(weeks: &[Week]) -> Chart {
    // The axis in hours, or in minutes when every median is under two hours.
    let longest = weeks
        .iter()
        .filter_map(|w| w.median_first_response)
        .fold(0.0f64, f64::max);
    let (unit, seconds) = if longest < 7200.0 {
        ("minutes", 60.0)
    } else {
        ("hours", 3600.0)
    };
    let groups: Vec<_> = weeks
        .iter()
        .map(|w| {
            (
                short_day(w.start),
                vec![w.median_first_response.map(|s| s / seconds)],
            )
        })
        .collect();
    let label = |v: f64| duration(v * seconds);
    let (bars, lines, mut texts) = columns(&plot(), &groups, &label, &["Median"]);
    texts.push(charts::Text {
        x: 8,
        y: 28,
        anchor: "start",
        content: unit.into(),
    });
    let answered: Vec<&Week> = weeks.iter().filter(|w| w.first_responses > 0).collect();
    let summary = match answered.last() {
        Some(w) => format!(
            "Median calendar time from opening to the first answer, by the week the answer was given; the latest week with answers ({}) had a median of {} over {} first answer{}.",
            day(w.start),
            duration(w.median_first_response.unwrap_or_default()),
            w.first_responses,
            plural(w.first_responses)
        ),
        None => "No first answer was given in these weeks.".to_owned(),
    };
    Chart {
        id: "chart-first-answer",
        heading: "Median time to the first answer per week",
        summary,
        width: WIDTH,
        height: 270,
        bars,
        lines,
        texts,
        legend: Vec::new(),
        table: Table {
            caption: "Median time to the first answer, by week of the answer".into(),
            head: vec![
                "Week of".into(),
                "First answers".into(),
                "Median time to the first answer".into(),
            ],
            rows: weeks
                .iter()
                .map(|w| {
                    vec![
                        day(w.start),
                        w.first_responses.to_string(),
                        w.median_first_response
                            .map_or_else(|| "–".to_owned(), duration),
                    ]
                })
                .collect(),
        },
    }
}

/// `92% (23 of 25)`, or why there is no share.
fn share(met: i64, decided: i64) -> (Option<f64>, String) {
    match percent(met, decided) {
        Some(p) => (Some(p), format!("{p:.0}% ({met} of {decided})")),
        None => (None, "no ticket decided".to_owned()),
    }
}

fn attainment(d: &Dashboard) -> Chart {
    let series = ["First response", "Resolution"];
    let name = |p: &herd_store::support_ops::PlanAttainment| {
        p.plan_name
            .clone()
            .or_else(|| p.plan_code.clone())
            .unwrap_or_else(|| "No plan".to_owned())
    };
    let groups: Vec<_> = d
        .plans
        .iter()
        .map(|p| {
            (
                name(p),
                vec![
                    share(p.first_met, p.first_decided),
                    share(p.resolution_met, p.resolution_decided),
                ],
            )
        })
        .collect();
    let (bars, lines, mut texts, height) = percent_rows(150, 40, 360, &groups, &series);
    if groups.is_empty() {
        texts.push(charts::Text {
            x: 150,
            y: 60,
            anchor: "start",
            content: "No ticket was opened in these weeks.".into(),
        });
    }
    let first: (i64, i64) = d
        .plans
        .iter()
        .fold((0, 0), |(m, n), p| (m + p.first_met, n + p.first_decided));
    let resolution: (i64, i64) = d.plans.iter().fold((0, 0), |(m, n), p| {
        (m + p.resolution_met, n + p.resolution_decided)
    });
    Chart {
        id: "chart-sla",
        heading: "SLA attainment per plan",
        summary: format!(
            "Of the tickets opened in these weeks, by the plan each follows: first responses on time {}, resolutions on time {}. A target counts once met or breached.",
            share(first.0, first.1).1,
            share(resolution.0, resolution.1).1,
        ),
        width: WIDTH,
        height: height.max(90) + 40,
        bars,
        lines,
        texts,
        legend: legend(&series),
        table: Table {
            caption: "SLA attainment per plan (tickets opened in the period)".into(),
            head: vec![
                "Plan".into(),
                "First response on time".into(),
                "Resolution on time".into(),
            ],
            rows: d
                .plans
                .iter()
                .map(|p| {
                    vec![
                        name(p),
                        share(p.first_met, p.first_decided).1,
                        share(p.resolution_met, p.resolution_decided).1,
                    ]
                })
                .collect(),
        },
    }
}

fn satisfaction(d: &Dashboard) -> Chart {
    let s = &d.satisfaction;
    let groups: Vec<_> = s
        .counts
        .iter()
        .zip(1..)
        .map(|(n, score)| (format!("{score} of 5"), vec![Some(*n as f64)]))
        .collect();
    let plot = Plot {
        left: 48,
        top: 40,
        width: 400,
        height: 160,
    };
    let (bars, lines, texts) = columns(&plot, &groups, &charts::tick_label, &["Ratings"]);
    let summary = match s.average() {
        Some(a) => format!(
            "Average score {a:.2} out of 5 from {} rating{} given in these weeks.",
            s.total(),
            plural(s.total())
        ),
        None => "No rating was given in these weeks.".to_owned(),
    };
    Chart {
        id: "chart-satisfaction",
        heading: "Satisfaction",
        summary,
        width: WIDTH,
        height: 230,
        bars,
        lines,
        texts,
        legend: Vec::new(),
        table: Table {
            caption: "Ratings per score (1: very unhappy, 5: very happy)".into(),
            head: vec!["Score".into(), "Ratings".into()],
            rows: s
                .counts
                .iter()
                .zip(1..)
                .map(|(n, score)| vec![format!("{score} of 5"), n.to_string()])
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(59.0), "1 min");
        assert_eq!(duration(3.0 * 3600.0 + 20.0 * 60.0), "3 h 20 min");
        assert_eq!(duration(50.0 * 3600.0), "2 d 2 h");
        assert_eq!(
            short_day(time::macros::datetime!(2026-12-07 00:00 UTC)),
            "7 Dec"
        );
    }
}
