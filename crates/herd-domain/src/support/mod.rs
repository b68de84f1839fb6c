//! The support desk's rules: what a ticket is about ([`Category`]), how urgent it is
//! ([`Priority`]), where it stands ([`Status`], with the moves allowed between states),
//! what a plan promises ([`tier::SupportTier`]: targets per priority and the hours they
//! count in) and the SLA clock ([`sla`]) that turns a ticket's history into due times.

pub mod attachment;
pub mod sla;
pub mod tier;

pub use sla::{ClockEvent, Sla, SlaTarget};
pub use tier::{BusinessHours, SupportHours, SupportTier, Targets, TierError};

use serde::{Deserialize, Serialize};
use std::fmt;

/// A value read from a form or the database that is not one of the known names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what}: {value:?}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, [$($variant:ident => ($s:literal, $label:literal)),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Its name in the database and in forms.
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
    /// What a ticket is about.
    Category, "category", [
        Technical => ("technical", "Technical"),
        Billing => ("billing", "Billing"),
        Moderation => ("moderation", "Moderation"),
        Abuse => ("abuse", "Abuse"),
        Account => ("account", "Account"),
        Other => ("other", "Other"),
    ]
);

named_enum!(
    /// How urgent a ticket is; its SLA targets follow from it.
    Priority, "priority", [
        Low => ("low", "Low"),
        Normal => ("normal", "Normal"),
        High => ("high", "High"),
        Urgent => ("urgent", "Urgent"),
    ]
);

named_enum!(
    /// Where a ticket stands.
    Status, "status", [
        New => ("new", "New"),
        Open => ("open", "Open"),
        WaitingOnCustomer => ("waiting_on_customer", "Waiting on customer"),
        Resolved => ("resolved", "Resolved"),
        Closed => ("closed", "Closed"),
    ]
);

impl Priority {
    /// Its index in per-priority tables (low first).
    pub fn index(self) -> usize {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
            Priority::Urgent => 3,
        }
    }
}

impl Status {
    /// May a ticket move from `self` to `to`? Every unresolved state moves to any other
    /// unresolved state and to resolved or closed; a resolved ticket is reopened or closed;
    /// a closed one only reopened (within the window, which the service checks). Nothing
    /// moves back to "new", and no move stays where it is.
    pub fn can_move_to(self, to: Status) -> bool {
        use Status::*;
        if self == to || to == New {
            return false;
        }
        match self {
            New | Open | WaitingOnCustomer => true,
            Resolved => matches!(to, Open | Closed),
            Closed => to == Open,
        }
    }

    /// Is the ticket still being worked on (not resolved or closed)?
    pub fn is_active(self) -> bool {
        !matches!(self, Status::Resolved | Status::Closed)
    }

    /// Does the SLA clock run in this state?
    pub fn clock_runs(self) -> bool {
        matches!(self, Status::New | Status::Open)
    }
}

/// How long after resolution a customer may still reopen a ticket.
pub const REOPEN_WINDOW: time::Duration = time::Duration::days(7);

/// The longest subject and message body, in characters.
pub const MAX_SUBJECT: usize = 200;
pub const MAX_BODY: usize = 20_000;

/// A satisfaction score, 1 (very unhappy) to 5 (very happy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Score(u8);

impl Score {
    pub fn new(n: i64) -> Option<Self> {
        (1..=5)
            .contains(&n)
            .then(|| Self(u8::try_from(n).unwrap_or(1)))
    }
    pub fn get(self) -> u8 {
        self.0
    }
}

/// Checks a subject: trimmed, not empty, at most [`MAX_SUBJECT`] characters, one line.
pub fn check_subject(s: &str) -> Result<String, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Err("Enter a subject.");
    }
    if s.chars().count() > MAX_SUBJECT || s.contains(['\n', '\r']) {
        return Err("Keep the subject to one line of at most 200 characters.");
    }
    Ok(s.to_owned())
}

/// Checks a message body: not blank, at most [`MAX_BODY`] characters.
pub fn check_body(s: &str) -> Result<String, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Err("Write a message.");
    }
    if s.chars().count() > MAX_BODY {
        return Err("Keep the message under 20,000 characters.");
    }
    Ok(s.replace("\r\n", "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_ones_are_refused() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Ok(*c));
        }
        for p in Priority::ALL {
            assert_eq!(Priority::parse(p.as_str()), Ok(*p));
        }
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Ok(*s));
        }
        assert!(Category::parse("sales").is_err());
        assert!(Priority::parse("Urgent").is_err());
    }

    #[test]
    fn status_moves() {
        use Status::*;
        assert!(New.can_move_to(Open));
        assert!(Open.can_move_to(WaitingOnCustomer));
        assert!(WaitingOnCustomer.can_move_to(Open));
        assert!(Open.can_move_to(Resolved));
        assert!(Resolved.can_move_to(Open));
        assert!(Resolved.can_move_to(Closed));
        assert!(Closed.can_move_to(Open));
        assert!(!Closed.can_move_to(Resolved));
        assert!(!Resolved.can_move_to(WaitingOnCustomer));
        assert!(!Open.can_move_to(New));
        assert!(!Open.can_move_to(Open));
        assert!(WaitingOnCustomer.is_active() && !Resolved.is_active());
        assert!(!WaitingOnCustomer.clock_runs() && Open.clock_runs());
    }

    #[test]
    fn subjects_bodies_and_scores_are_checked() {
        assert_eq!(check_subject("  Down  "), Ok("Down".into()));
        assert!(check_subject("   ").is_err());
        assert!(check_subject("a\nb").is_err());
        assert!(check_subject(&"x".repeat(201)).is_err());
        assert!(check_body(" \n ").is_err());
        assert_eq!(check_body("a\r\nb"), Ok("a\nb".into()));
        assert!(Score::new(0).is_none() && Score::new(6).is_none());
        assert_eq!(Score::new(5).map(Score::get), Some(5));
    }
}
