//! Managed moderation's pages: the customer's moderation of their servers in the portal
//! ([`portal`]: owners and admins), and the moderators' queue, a report's page and the
//! settings in the console ([`console`]: the queue and reports for operators with the
//! moderator role only), a deleted server's monthly reports ([`history`]), and who
//! manages operators ([`standing`]). Handlers parse, call one herd-moderation service and
//! render.

pub mod console;
pub mod history;
pub mod portal;
pub mod standing;

use super::FieldErrors;
use crate::error::AppError;
use crate::routes::Routes;
use crate::views::datetime;
use herd_moderation::ModerationError;
use herd_store::moderation::{DecisionRow, Report};
use time::OffsetDateTime;

pub fn routes(r: Routes) -> Routes {
    standing::routes(history::routes(console::routes(portal::routes(r))))
}

/// A monthly report as a CSV download (live or deleted server alike).
fn csv_download(report: &herd_moderation::views::Monthly) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let name = format!("moderation-{}-{}.csv", report.domain, report.month);
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        report.csv(),
    )
        .into_response()
}

/// A moderation error as the web answers it when no form is re-rendered.
fn app_error(e: ModerationError) -> AppError {
    match e {
        ModerationError::NotFound => AppError::NotFound,
        ModerationError::Forbidden(m) => AppError::Forbidden(m.to_owned()),
        ModerationError::Store(s) => s.into(),
        ModerationError::Invalid(m) => AppError::Internal(format!("unexpected refusal: {m:?}")),
    }
}

fn field_errors(list: Vec<(&'static str, String)>) -> FieldErrors {
    let mut errors = FieldErrors::default();
    for (field, message) in list {
        errors.add(field, message);
    }
    errors
}

/// A report in a list, with its times in words.
pub struct ReportRow {
    pub r: Report,
    pub reported: String,
    pub due: String,
    pub overdue: bool,
    /// When the moderators were emailed that it is overdue.
    pub alerted: Option<String>,
    /// The first reported status's text, without markup, shortened.
    pub excerpt: String,
}

impl From<Report> for ReportRow {
    fn from(r: Report) -> Self {
        let excerpt = r.statuses[0]["content"]
            .as_str()
            .map(strip_tags)
            .unwrap_or_default();
        Self {
            reported: datetime(r.reported_at),
            due: datetime(r.due_at),
            overdue: r.due_at < OffsetDateTime::now_utc(),
            alerted: r.overdue_alerted_at.map(datetime),
            excerpt: excerpt.chars().take(200).collect(),
            r,
        }
    }
}

/// A decision in a list, with where its action is in words.
pub struct DecisionView {
    pub d: DecisionRow,
    pub at: String,
    pub outbox: String,
}

impl From<DecisionRow> for DecisionView {
    fn from(d: DecisionRow) -> Self {
        let outbox = match (d.outbox, &d.last_error) {
            (None, _) => "not sent (escalation)".to_owned(),
            (Some(s), Some(e)) => format!("{} (after {} attempts: {e})", s.label(), d.attempts),
            (Some(s), None) => s.label().to_owned(),
        };
        Self {
            at: datetime(d.created_at),
            outbox,
            d,
        }
    }
}

/// A status's HTML as plain text (askama escapes what is shown).
fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The reported statuses' texts, for a report's page.
pub fn statuses(r: &Report) -> Vec<(String, String)> {
    r.statuses
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    (
                        s["created_at"].as_str().unwrap_or_default().to_owned(),
                        strip_tags(s["content"].as_str().unwrap_or_default()),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The broken rules' texts.
pub fn rules(r: &Report) -> Vec<String> {
    r.rules
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["text"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tags_are_stripped() {
        assert_eq!(super::strip_tags("<p>Hi <b>there</b></p>"), "Hi there");
    }
}
