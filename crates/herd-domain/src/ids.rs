//! Typed identifiers: newtypes over uuid v7, so ids sort by creation time and
//! an organization id can never be passed where a user id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered (v7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// A user account.
    UserId
);
id_type!(
    /// An organization (a tenant of the hosting provider).
    OrgId
);
id_type!(
    /// An invitation to join an organization.
    InvitationId
);
id_type!(
    /// A plan of the catalogue.
    PlanId
);
id_type!(
    /// An entry of the audit log.
    AuditId
);
id_type!(
    /// A support ticket.
    TicketId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_time_ordered() {
        let a = UserId::new();
        let b = UserId::new();
        assert_eq!(a.0.get_version_num(), 7);
        assert!(a < b, "a later id sorts after an earlier one");
    }

    #[test]
    fn ids_round_trip_through_strings() {
        let a = OrgId::new();
        let parsed: OrgId = a.to_string().parse().expect("parse");
        assert_eq!(a, parsed);
        assert!("not-a-uuid".parse::<OrgId>().is_err());
    }
}
