//! A hosted server as the control plane sees it: where it is in its life (its phase, as
//! the cluster reports it or as the control plane knows before the cluster does), what the
//! organization wants it to be, and the health of the clusters that run them.

use std::fmt;

/// Where a hosted server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstancePhase {
    /// Ordered, waiting for a cluster (none connected, or none with room).
    Queued,
    /// Sent to a cluster; installing (database, migrations, owner account, web…).
    Provisioning,
    Running,
    Upgrading,
    /// Being restored from a backup; the app is stopped meanwhile.
    Restoring,
    Suspended,
    Deleting,
    Deleted,
    /// Stopped on an error an operator must look at (the last error says which).
    Failed,
}

impl InstancePhase {
    pub const ALL: [InstancePhase; 9] = [
        InstancePhase::Queued,
        InstancePhase::Provisioning,
        InstancePhase::Running,
        InstancePhase::Upgrading,
        InstancePhase::Restoring,
        InstancePhase::Suspended,
        InstancePhase::Deleting,
        InstancePhase::Deleted,
        InstancePhase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstancePhase::Queued => "queued",
            InstancePhase::Provisioning => "provisioning",
            InstancePhase::Running => "running",
            InstancePhase::Upgrading => "upgrading",
            InstancePhase::Restoring => "restoring",
            InstancePhase::Suspended => "suspended",
            InstancePhase::Deleting => "deleting",
            InstancePhase::Deleted => "deleted",
            InstancePhase::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            InstancePhase::Queued => "Queued",
            InstancePhase::Provisioning => "Setting up",
            InstancePhase::Running => "Running",
            InstancePhase::Upgrading => "Upgrading",
            InstancePhase::Restoring => "Restoring from a backup",
            InstancePhase::Suspended => "Suspended",
            InstancePhase::Deleting => "Being deleted",
            InstancePhase::Deleted => "Deleted",
            InstancePhase::Failed => "Needs attention",
        }
    }

    /// Needs an operator's eye: failed, or queued or installing for longer than it should.
    pub fn is_stuck_candidate(self) -> bool {
        matches!(
            self,
            InstancePhase::Failed | InstancePhase::Queued | InstancePhase::Provisioning
        )
    }
}

impl fmt::Display for InstancePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the organization (or the access policy) wants the server to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Desired {
    Running,
    Suspended,
    Deleted,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Suspended => "suspended",
            Desired::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Desired::Running, Desired::Suspended, Desired::Deleted]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// A cluster's health as last checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterHealth {
    /// Not checked yet.
    Unknown,
    /// API reachable, the Instance CRD installed.
    Healthy,
    /// The API server did not answer, or refused Herd's credentials.
    Unreachable,
    /// Reachable, but the `instances.herd.dev` CRD is not installed.
    CrdMissing,
}

impl ClusterHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterHealth::Unknown => "unknown",
            ClusterHealth::Healthy => "healthy",
            ClusterHealth::Unreachable => "unreachable",
            ClusterHealth::CrdMissing => "crd_missing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            ClusterHealth::Unknown,
            ClusterHealth::Healthy,
            ClusterHealth::Unreachable,
            ClusterHealth::CrdMissing,
        ]
        .into_iter()
        .find(|h| h.as_str() == s)
    }

    pub fn label(self) -> &'static str {
        match self {
            ClusterHealth::Unknown => "Not checked yet",
            ClusterHealth::Healthy => "Healthy",
            ClusterHealth::Unreachable => "Unreachable",
            ClusterHealth::CrdMissing => "Instance CRD not installed",
        }
    }
}

/// A cluster's free room for new tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<Id> {
    pub id: Id,
    pub region: String,
    pub capacity: i64,
    pub used: i64,
    pub cordoned: bool,
    pub health: ClusterHealth,
}

/// Why no cluster could take a new tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPlacement {
    /// No cluster is registered (or every registered one is cordoned, not checked yet, or
    /// unhealthy).
    NoCluster,
    /// Clusters are connected, but none has room.
    Full,
}

impl NoPlacement {
    /// What the instance page says while it waits.
    pub fn message(self) -> &'static str {
        match self {
            NoPlacement::NoCluster => "queued: no cluster connected",
            NoPlacement::Full => "queued: every cluster is full",
        }
    }
}

/// Picks a cluster for a new tenant: only a healthy one (checked, with the CRD), never a
/// cordoned or full one;
/// in the preferred region when one there has room; otherwise the one with the most free
/// room (ties broken by the order given, so the choice is stable).
pub fn place<Id: Clone>(
    candidates: &[Candidate<Id>],
    preferred_region: Option<&str>,
) -> Result<Id, NoPlacement> {
    let usable: Vec<&Candidate<Id>> = candidates
        .iter()
        .filter(|c| !c.cordoned && c.health == ClusterHealth::Healthy)
        .collect();
    if usable.is_empty() {
        return Err(NoPlacement::NoCluster);
    }
    let free = |c: &&Candidate<Id>| c.capacity - c.used;
    let with_room: Vec<&Candidate<Id>> = usable.into_iter().filter(|c| free(c) > 0).collect();
    let best = |set: Vec<&Candidate<Id>>| {
        set.into_iter()
            .enumerate()
            .max_by_key(|(i, c)| (free(c), std::cmp::Reverse(*i)))
            .map(|(_, c)| c.id.clone())
    };
    if let Some(region) = preferred_region {
        let local: Vec<_> = with_room
            .iter()
            .copied()
            .filter(|c| c.region == region)
            .collect();
        if let Some(id) = best(local) {
            return Ok(id);
        }
    }
    best(with_room).ok_or(NoPlacement::Full)
}

/// Usernames Mastodon reserves or that a hosted server must keep for its staff; an owner
/// account cannot take them.
pub const RESERVED_USERNAMES: [&str; 26] = [
    "admin",
    "administrator",
    "root",
    "support",
    "help",
    "moderator",
    "mod",
    "owner",
    "webmaster",
    "hostmaster",
    "postmaster",
    "abuse",
    // Added to Mastodon's config/settings.yml `reserved_usernames` (PR #32828).
    "account",
    "accounts",
    "administration",
    "admins",
    "helpdesk",
    "instance",
    "moderators",
    "mods",
    "security",
    "server",
    "staff",
    // And in Mastodon 4.5's username blocks (db/seeds): exact matches…
    "coppa",
    "privacy",
    "terms",
];

/// …and names no username may contain (Mastodon 4.5's non-exact username blocks).
pub const RESERVED_USERNAME_PARTS: [&str; 2] = ["mastodon", "mastadon"];

/// Whether Mastodon refuses `username` for a new account: it compares the name with its
/// blocks after reading look-alike digits as letters (`adm1n` is `admin`), as
/// `UsernameBlock.matches?` does.
pub fn is_reserved_username(username: &str) -> bool {
    let n: String = username
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            '1' => 'i',
            '2' => 'z',
            '3' => 'e',
            '4' => 'a',
            '5' => 's',
            '7' => 't',
            '8' => 'b',
            '9' => 'g',
            '0' => 'o',
            c => c,
        })
        .collect();
    RESERVED_USERNAMES.contains(&n.as_str())
        || RESERVED_USERNAME_PARTS.iter().any(|p| n.contains(p))
}

/// The first owner's username on the new server, from their email: the local part, in
/// the characters Mastodon allows (`a-z`, `0-9`, `_`), at most 30 long; a reserved or
/// empty result becomes `<name>_owner`-style or `server_owner`.
pub fn owner_username(email: &str) -> String {
    let local = email.split('@').next().unwrap_or_default();
    let mut u: String = local
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    while u.contains("__") {
        u = u.replace("__", "_");
    }
    let mut u = u.trim_matches('_').to_owned();
    u.truncate(24);
    let u = u.trim_matches('_').to_owned();
    if u.is_empty() {
        return "server_owner".into();
    }
    if is_reserved_username(&u) {
        let owner = format!("{u}_owner");
        return if is_reserved_username(&owner) {
            "server_owner".into()
        } else {
            owner
        };
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u32, region: &str, capacity: i64, used: i64) -> Candidate<u32> {
        Candidate {
            id,
            region: region.into(),
            capacity,
            used,
            cordoned: false,
            health: ClusterHealth::Healthy,
        }
    }

    #[test]
    fn placement_prefers_the_region_then_free_room() {
        let cs = [
            c(1, "eu-west", 10, 9),
            c(2, "eu-central", 10, 2),
            c(3, "eu-west", 10, 5),
        ];
        assert_eq!(place(&cs, Some("eu-west")), Ok(3));
        assert_eq!(place(&cs, Some("eu-central")), Ok(2));
        assert_eq!(place(&cs, None), Ok(2));
        // A preferred region with no room falls back to the roomiest elsewhere.
        let cs = [c(1, "eu-west", 10, 10), c(2, "eu-central", 10, 2)];
        assert_eq!(place(&cs, Some("eu-west")), Ok(2));
    }

    #[test]
    fn placement_skips_cordoned_unreachable_and_full_clusters() {
        let mut cordoned = c(1, "eu", 10, 0);
        cordoned.cordoned = true;
        let mut down = c(2, "eu", 10, 0);
        down.health = ClusterHealth::Unreachable;
        let mut unchecked = c(6, "eu", 10, 0);
        unchecked.health = ClusterHealth::Unknown;
        assert_eq!(place(&[unchecked], None), Err(NoPlacement::NoCluster));
        assert_eq!(
            place(&[cordoned.clone(), down.clone()], None),
            Err(NoPlacement::NoCluster)
        );
        assert_eq!(place::<u32>(&[], None), Err(NoPlacement::NoCluster));
        assert_eq!(
            place(&[cordoned, down, c(3, "eu", 5, 5)], None),
            Err(NoPlacement::Full)
        );
        // Ties keep the order given.
        assert_eq!(place(&[c(4, "eu", 5, 0), c(5, "eu", 5, 0)], None), Ok(4));
    }

    #[test]
    fn owner_usernames_are_valid_and_never_reserved() {
        assert_eq!(owner_username("lea.martin@lyon.fr"), "lea_martin");
        assert_eq!(owner_username("Admin@lyon.fr"), "admin_owner");
        assert_eq!(owner_username("security@lyon.fr"), "security_owner");
        assert_eq!(owner_username("staff@lyon.fr"), "staff_owner");
        // Look-alike digits are read as letters, as Mastodon does.
        assert_eq!(owner_username("adm1n@lyon.fr"), "adm1n_owner");
        assert_eq!(owner_username("r00t@lyon.fr"), "r00t_owner");
        // No name may contain "mastodon".
        assert_eq!(owner_username("mastodon.team@lyon.fr"), "server_owner");
        assert_eq!(owner_username("m4st0don@lyon.fr"), "server_owner");
        assert!(!is_reserved_username("server_owner"));
        assert!(!is_reserved_username("lea_martin"));
        assert_eq!(owner_username("..@x"), "server_owner");
        assert_eq!(
            owner_username("a-very-long-local-part-that-goes-on@x.org").len(),
            24
        );
        for s in InstancePhase::ALL {
            assert_eq!(InstancePhase::parse(s.as_str()), Some(s));
        }
    }
}
