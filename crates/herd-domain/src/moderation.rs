//! Managed moderation's rules: where a report copied from a customer's server stands
//! ([`ReportState`]), what it is about ([`ReportCategory`], Mastodon's categories), what a
//! moderator decides ([`Decision`], with Mastodon's [`AccountAction`]s), where an action on
//! its way to the server is ([`OutboxState`]), an escalation to the customer
//! ([`EscalationState`]), what a plan includes ([`Terms`]: monthly hours and a response
//! target), the customer's written policy ([`Policy`]) and the monthly figures.

use crate::support::UnknownValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::{Duration, OffsetDateTime};

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, [$($variant:ident => ($s:literal, $label:literal)),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Its name in the database, in forms and (where it has one) in Mastodon's API.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            /// Its name for people.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }

            pub fn parse(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($s => Ok($name::$variant),)+
                    other => Err(UnknownValue { what: $what, value: other.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// Where a report stands in Herd.
    ReportState, "report state", [
        Open => ("open", "Open"),
        Escalated => ("escalated", "Waiting for the customer"),
        Resolved => ("resolved", "Resolved"),
        Vanished => ("vanished", "Gone from the server"),
    ]
);

named_enum!(
    /// A report's category, as Mastodon files it.
    ReportCategory, "report category", [
        Spam => ("spam", "Spam"),
        Legal => ("legal", "Legal"),
        Violation => ("violation", "Rule violation"),
        Other => ("other", "Other"),
    ]
);

named_enum!(
    /// An action on the reported account, as Mastodon's `POST /api/v1/admin/accounts/:id/action`
    /// names them (`type`).
    AccountAction, "account action", [
        None => ("none", "No action (warning only)"),
        Sensitive => ("sensitive", "Mark media as sensitive"),
        Disable => ("disable", "Disable login"),
        Silence => ("silence", "Limit (silence)"),
        Suspend => ("suspend", "Suspend"),
    ]
);

named_enum!(
    /// Where an action on its way to the server is.
    OutboxState, "outbox state", [
        Pending => ("pending", "Waiting to be sent"),
        Sending => ("sending", "Being sent"),
        Sent => ("sent", "Applied on the server"),
        Failed => ("failed", "Failed"),
    ]
);

named_enum!(
    /// An escalation to the customer.
    EscalationState, "escalation state", [
        Waiting => ("waiting", "Waiting for the customer"),
        Decided => ("decided", "Decided by the customer"),
    ]
);

named_enum!(
    /// The kind of a decision, as stored.
    DecisionKind, "decision", [
        Resolve => ("resolve", "Resolve without action"),
        Reopen => ("reopen", "Reopen"),
        AccountAction => ("account_action", "Account action"),
        Escalate => ("escalate", "Escalate to the customer"),
    ]
);

impl ReportState {
    /// Does the report wait for a moderator (in the queue)?
    pub fn in_queue(self) -> bool {
        self == ReportState::Open
    }
}

/// What a moderator (or the customer, on an escalation) decides about a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Decision {
    /// Resolve the report on the server, with no action on the account.
    Resolve,
    /// Reopen a resolved report.
    Reopen,
    /// Act on the reported account (this resolves the report on the server too).
    Act(AccountAction),
    /// Ask the customer instead of acting.
    Escalate,
}

impl Decision {
    pub fn kind(self) -> DecisionKind {
        match self {
            Decision::Resolve => DecisionKind::Resolve,
            Decision::Reopen => DecisionKind::Reopen,
            Decision::Act(_) => DecisionKind::AccountAction,
            Decision::Escalate => DecisionKind::Escalate,
        }
    }

    pub fn account_action(self) -> Option<AccountAction> {
        match self {
            Decision::Act(a) => Some(a),
            _ => None,
        }
    }

    /// Rebuilds a decision from its stored kind and action.
    pub fn from_parts(kind: DecisionKind, action: Option<AccountAction>) -> Option<Self> {
        match (kind, action) {
            (DecisionKind::Resolve, None) => Some(Decision::Resolve),
            (DecisionKind::Reopen, None) => Some(Decision::Reopen),
            (DecisionKind::AccountAction, Some(a)) => Some(Decision::Act(a)),
            (DecisionKind::Escalate, None) => Some(Decision::Escalate),
            _ => None,
        }
    }

    /// Parses a form's choice: `resolve`, `reopen`, `escalate` or an account action's name
    /// (`silence`, `suspend`, …).
    pub fn parse(s: &str) -> Result<Self, UnknownValue> {
        match s {
            "resolve" => Ok(Decision::Resolve),
            "reopen" => Ok(Decision::Reopen),
            "escalate" => Ok(Decision::Escalate),
            other => AccountAction::parse(other)
                .map(Decision::Act)
                .map_err(|_| UnknownValue {
                    what: "decision",
                    value: other.to_owned(),
                }),
        }
    }

    /// Its name in forms (the inverse of [`parse`](Self::parse)).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Act(a) => a.as_str(),
            other => other.kind().as_str(),
        }
    }

    /// Its name for people.
    pub fn label(self) -> &'static str {
        match self {
            Decision::Act(a) => a.label(),
            other => other.kind().label(),
        }
    }

    /// Does it go to the server through the admin API?
    pub fn is_sent(self) -> bool {
        self != Decision::Escalate
    }

    /// What a customer may decide on an escalation: anything but escalating again or
    /// reopening.
    pub fn customer_choices() -> Vec<Decision> {
        let mut v = vec![Decision::Resolve];
        v.extend(AccountAction::ALL.iter().map(|a| Decision::Act(*a)));
        v
    }

    /// What a moderator may decide on an open report.
    pub fn moderator_choices() -> Vec<Decision> {
        let mut v = Self::customer_choices();
        v.push(Decision::Escalate);
        v
    }
}

/// What a plan includes of managed moderation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub included: bool,
    /// Moderation hours a month the plan pays for.
    pub monthly_hours: u32,
    /// How soon after it is filed a report should be handled.
    pub response_target_hours: u32,
}

/// The response target of plans that set none: a day.
pub const DEFAULT_RESPONSE_TARGET_HOURS: u32 = 24;

impl Terms {
    /// The terms a plan has without its own row: included when the plan has moderation
    /// hours, with the default response target.
    pub fn from_plan_hours(hours: i32) -> Self {
        let monthly_hours = u32::try_from(hours).unwrap_or(0);
        Terms {
            included: monthly_hours > 0,
            monthly_hours,
            response_target_hours: DEFAULT_RESPONSE_TARGET_HOURS,
        }
    }

    /// When a report filed at `filed` is due.
    pub fn due(self, filed: OffsetDateTime) -> OffsetDateTime {
        filed + Duration::hours(i64::from(self.response_target_hours))
    }

    /// Checks an editor's values.
    pub fn check(
        included: bool,
        monthly_hours: &str,
        target: &str,
    ) -> Result<Self, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let hours = monthly_hours
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|h| *h <= 10_000);
        if hours.is_none() {
            errors.push((
                "monthly_hours",
                "Enter the hours a month, a whole number from 0 to 10000.".to_owned(),
            ));
        }
        let t = target
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|h| (1..=720).contains(h));
        if t.is_none() {
            errors.push((
                "response_target_hours",
                "Enter the response target in hours, from 1 to 720.".to_owned(),
            ));
        }
        match (hours, t) {
            (Some(monthly_hours), Some(response_target_hours)) if errors.is_empty() => Ok(Terms {
                included,
                monthly_hours,
                response_target_hours,
            }),
            _ => Err(errors),
        }
    }
}

/// Minutes used against hours: "3 h 20 min of 4 h" and whether it is over.
pub fn usage(minutes_used: i64, monthly_hours: u32) -> (String, bool) {
    let over = minutes_used > i64::from(monthly_hours) * 60;
    (
        format!(
            "{} h {} min of {} h",
            minutes_used / 60,
            minutes_used % 60,
            monthly_hours
        ),
        over,
    )
}

/// The longest time a moderator may log on one decision, in minutes (a working day).
pub const MAX_MINUTES: u32 = 480;

/// Checks the minutes spent typed in a form (empty counts as 0).
pub fn check_minutes(s: &str) -> Result<u32, &'static str> {
    match s.trim() {
        "" => Ok(0),
        t => t
            .parse::<u32>()
            .ok()
            .filter(|m| *m <= MAX_MINUTES)
            .ok_or("Enter the minutes spent, a whole number from 0 to 480."),
    }
}

/// The longest note sent with a decision (Mastodon keeps it as the warning's text).
pub const MAX_NOTE: usize = 5_000;

/// Checks a decision's note: trimmed, at most [`MAX_NOTE`] characters; required when the
/// decision is sent to the user by email or escalated (someone must read why).
pub fn check_note(s: &str, required: bool) -> Result<String, &'static str> {
    let s = s.trim().replace("\r\n", "\n");
    if required && s.is_empty() {
        return Err("Write a note: it is what the user (or the customer) reads.");
    }
    if s.chars().count() > MAX_NOTE {
        return Err("Keep the note under 5,000 characters.");
    }
    Ok(s)
}

/// The customer's moderation policy, one version as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The server's house rules.
    pub house_rules: String,
    /// What moderators remove without asking.
    pub remove: String,
    /// What they escalate to the customer instead.
    pub escalate: String,
    /// Whom to call in urgent cases.
    pub urgent_contacts: String,
    /// The language moderators write to users in.
    pub language: String,
}

/// The longest text of one policy field.
pub const MAX_POLICY_FIELD: usize = 20_000;

impl Policy {
    /// Checks a policy as typed: house rules and language are required, each field at
    /// most [`MAX_POLICY_FIELD`] characters; returns it trimmed.
    pub fn check(self) -> Result<Self, Vec<(&'static str, String)>> {
        let clean = |s: String| s.trim().replace("\r\n", "\n");
        let p = Policy {
            house_rules: clean(self.house_rules),
            remove: clean(self.remove),
            escalate: clean(self.escalate),
            urgent_contacts: clean(self.urgent_contacts),
            language: clean(self.language),
        };
        let mut errors = Vec::new();
        if p.house_rules.is_empty() {
            errors.push(("house_rules", "Write your house rules.".to_owned()));
        }
        if p.language.is_empty() || p.language.chars().count() > 50 || p.language.contains('\n') {
            errors.push((
                "language",
                "Name the language moderators write in (one line).".to_owned(),
            ));
        }
        for (field, text) in [
            ("house_rules", &p.house_rules),
            ("remove", &p.remove),
            ("escalate", &p.escalate),
            ("urgent_contacts", &p.urgent_contacts),
        ] {
            if text.chars().count() > MAX_POLICY_FIELD {
                errors.push((field, "Keep each part under 20,000 characters.".to_owned()));
            }
        }
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors)
        }
    }
}

/// The median of durations in seconds (the mean of the middle two for an even count);
/// `None` for none.
pub fn median_seconds(mut values: Vec<i64>) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_are_refused() {
        for s in ReportState::ALL {
            assert_eq!(ReportState::parse(s.as_str()), Ok(*s));
        }
        for c in ReportCategory::ALL {
            assert_eq!(ReportCategory::parse(c.as_str()), Ok(*c));
        }
        for a in AccountAction::ALL {
            assert_eq!(AccountAction::parse(a.as_str()), Ok(*a));
        }
        for d in Decision::moderator_choices()
            .into_iter()
            .chain([Decision::Reopen])
        {
            assert_eq!(Decision::parse(d.as_str()), Ok(d));
            assert_eq!(Decision::from_parts(d.kind(), d.account_action()), Some(d));
        }
        assert!(Decision::parse("ban").is_err());
        assert!(ReportCategory::parse("Spam").is_err());
        assert_eq!(
            Decision::from_parts(DecisionKind::AccountAction, None),
            None
        );
    }

    #[test]
    fn mastodon_names_of_account_actions() {
        let names: Vec<_> = AccountAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            names,
            ["none", "sensitive", "disable", "silence", "suspend"]
        );
        assert!(!Decision::Escalate.is_sent());
        assert!(Decision::Act(AccountAction::None).is_sent());
        assert!(!Decision::customer_choices().contains(&Decision::Escalate));
    }

    #[test]
    fn terms_due_and_usage() {
        let t = Terms::from_plan_hours(4);
        assert!(t.included);
        assert_eq!(t.response_target_hours, 24);
        assert!(!Terms::from_plan_hours(0).included);
        let filed = time::macros::datetime!(2026-12-01 10:00 UTC);
        assert_eq!(t.due(filed), time::macros::datetime!(2026-12-02 10:00 UTC));
        assert_eq!(usage(200, 4), ("3 h 20 min of 4 h".to_owned(), false));
        assert!(usage(241, 4).1);
        assert!(Terms::check(true, "4", "0").is_err());
        assert!(Terms::check(true, "x", "12").is_err());
        assert_eq!(
            Terms::check(true, " 4 ", "12"),
            Ok(Terms {
                included: true,
                monthly_hours: 4,
                response_target_hours: 12
            })
        );
    }

    #[test]
    fn notes_minutes_and_policies_are_checked() {
        assert!(check_note("  ", true).is_err());
        assert_eq!(check_note("  ok\r\n ", false), Ok("ok".to_owned()));
        assert!(check_note(&"x".repeat(5001), false).is_err());
        assert_eq!(check_minutes(""), Ok(0));
        assert_eq!(check_minutes("15"), Ok(15));
        assert!(check_minutes("481").is_err() && check_minutes("-1").is_err());
        let bad = Policy::default().check().err().unwrap_or_default();
        assert!(bad.iter().any(|(f, _)| *f == "house_rules"));
        assert!(bad.iter().any(|(f, _)| *f == "language"));
        let ok = Policy {
            house_rules: " Be kind. ".into(),
            language: "English".into(),
            ..Policy::default()
        }
        .check()
        .map(|p| p.house_rules);
        assert_eq!(ok, Ok("Be kind.".to_owned()));
    }

    #[test]
    fn median() {
        assert_eq!(median_seconds(vec![]), None);
        assert_eq!(median_seconds(vec![5, 1, 3]), Some(3));
        assert_eq!(median_seconds(vec![4, 1, 3, 2]), Some(2));
    }
}
