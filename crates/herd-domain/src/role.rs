//! Roles inside an organization, what each may do there ([`Capability`]: the one table of
//! who may do what, which the route table, the pages' texts and docs/SECURITY.md all read),
//! and the rules for changing memberships.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A member's role in one organization, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including managing owners.
    Owner,
    /// Manages members (except owners) and servers; not billing.
    Admin,
    /// Orders servers and manages billing: plans, payment, invoices.
    Billing,
    /// Sees the organization, its members and its servers.
    Member,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("The last owner cannot leave or be demoted; make someone else an owner first.")]
    LastOwner,
    #[error("Only an owner can grant, change or remove the owner role.")]
    OwnerOnly,
    #[error("Your role does not allow managing members.")]
    NotAllowed,
    #[error("Unknown role.")]
    UnknownRole,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Billing, Role::Member];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Billing => "billing",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Result<Self, MembershipError> {
        match s {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "billing" => Ok(Role::Billing),
            "member" => Ok(Role::Member),
            _ => Err(MembershipError::UnknownRole),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::Owner => "Owner",
            Role::Admin => "Admin",
            Role::Billing => "Billing",
            Role::Member => "Member",
        }
    }

    /// The role's name in the plural, as texts name those who hold it ("billing members").
    pub fn plural(self) -> &'static str {
        match self {
            Role::Owner => "owners",
            Role::Admin => "admins",
            Role::Billing => "billing members",
            Role::Member => "members",
        }
    }

    /// May this role do what `capability` covers? Reads [`Capability::allows`], the rule.
    pub fn can(self, capability: Capability) -> bool {
        capability.allows(self)
    }

    /// What this role may do, in words, derived from the table ("manage members and
    /// servers").
    pub fn summary(self) -> String {
        let nouns: Vec<&str> = Capability::ALL
            .into_iter()
            .filter(|c| *c != Capability::View && self.can(*c))
            .map(Capability::noun)
            .collect();
        if nouns.is_empty() {
            Capability::View.action().to_owned()
        } else {
            format!("manage {}", join(&nouns))
        }
    }
}

/// What an organization's page or action asks of the caller's role. Every organization
/// route names one (`Access::Org(…)` in herd-web's route table) and [`Capability::allows`]
/// says which roles have it: one rule, stated once, that the router enforces, the pages and
/// refusals put in words and docs/SECURITY.md prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// See the organization, its members and its servers (with their live progress); leave
    /// the organization.
    View,
    /// Invite members, revoke invitations, change roles (only owners touch the owner role)
    /// and remove members.
    ManageMembers,
    /// Act on the organization's servers: suspend, resume, upgrade, delete, set the
    /// maintenance window, check a custom domain's proof, see or reset the server owner's
    /// one-time password, take and download exports of their data.
    ManageServers,
    /// Order servers; see and change billing: subscriptions, plans, payment methods,
    /// cancellations, orders and invoices.
    ManageBilling,
    /// See and answer every support ticket of the organization (every member sees the
    /// tickets they opened and those shared with the organization).
    SeeAllTickets,
    /// See the managed moderation of the organization's servers; write their moderation
    /// policy, decide escalated reports, connect the moderator account's token.
    ManageModeration,
}

impl Capability {
    pub const ALL: [Capability; 6] = [
        Capability::View,
        Capability::ManageMembers,
        Capability::ManageServers,
        Capability::ManageBilling,
        Capability::SeeAllTickets,
        Capability::ManageModeration,
    ];

    /// Which roles have this capability. The one place the rule is written: owners have
    /// every capability; admins manage members and servers but not billing; billing members
    /// order servers and manage billing but not members or servers; members only see.
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Capability::View => true,
            Capability::ManageMembers
            | Capability::ManageServers
            | Capability::SeeAllTickets
            | Capability::ManageModeration => matches!(role, Owner | Admin),
            Capability::ManageBilling => matches!(role, Owner | Billing),
        }
    }

    /// The roles that have it, most powerful first.
    pub fn roles(self) -> Vec<Role> {
        Role::ALL.into_iter().filter(|r| self.allows(*r)).collect()
    }

    /// Its name in the route table and docs/SECURITY.md.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::View => "view",
            Capability::ManageMembers => "manage members",
            Capability::ManageServers => "manage servers",
            Capability::ManageBilling => "manage billing",
            Capability::SeeAllTickets => "see all tickets",
            Capability::ManageModeration => "manage moderation",
        }
    }

    /// What it lets one do, as the end of a sentence whose subject is a role ("owners and
    /// admins may …").
    pub fn action(self) -> &'static str {
        match self {
            Capability::View => "see the organization, its members and its servers",
            Capability::ManageMembers => "manage members",
            Capability::ManageServers => "manage the organization's servers",
            Capability::ManageBilling => "order servers and manage billing",
            Capability::SeeAllTickets => "see every support ticket of the organization",
            Capability::ManageModeration => "manage the moderation of the organization's servers",
        }
    }

    /// Everything it covers, for the table docs/SECURITY.md prints.
    pub fn covers(self) -> &'static str {
        match self {
            Capability::View => "see the organization, its members, its servers and their progress; leave",
            Capability::ManageMembers => "invite members, revoke invitations, change roles (only owners touch the owner role), remove members",
            Capability::ManageServers => "suspend, resume, upgrade and delete servers; the maintenance window; check a custom domain's proof; see or reset the server owner's password; take and download exports",
            Capability::ManageBilling => "order servers; subscriptions, plan changes, payment methods, cancellations, orders and invoices",
            Capability::SeeAllTickets => "see, answer, close and rate every support ticket of the organization (every member has those they opened and those shared with the organization)",
            Capability::ManageModeration => "see the managed moderation of the organization's servers (reports, decisions, hours, the monthly report); write the moderation policy; decide escalated reports; connect or revoke the moderator account's token",
        }
    }

    /// What it manages, in one word for lists ("members", "servers", "billing").
    fn noun(self) -> &'static str {
        match self {
            Capability::View => "nothing",
            Capability::ManageMembers => "members",
            Capability::ManageServers => "servers",
            Capability::ManageBilling => "billing",
            Capability::SeeAllTickets => "support tickets",
            Capability::ManageModeration => "moderation",
        }
    }

    /// Who has it, in words: "owners and admins", "every member".
    pub fn who(self) -> String {
        let roles = self.roles();
        if roles.len() == Role::ALL.len() {
            return "every member".to_owned();
        }
        let names: Vec<&str> = roles.into_iter().map(Role::plural).collect();
        join(&names)
    }

    /// [`who`](Self::who) at the start of a sentence: "Owners and admins".
    pub fn who_capitalized(self) -> String {
        capitalized(&self.who())
    }

    /// The rule as a sentence, for pages: "Owners and billing members may order servers and
    /// manage billing."
    pub fn rule(self) -> String {
        format!("{} may {}.", self.who_capitalized(), self.action())
    }

    /// What a caller whose role lacks it is told (with a 403).
    pub fn refusal(self) -> String {
        format!(
            "Your role does not allow this: only {} may {}.",
            self.who(),
            self.action()
        )
    }
}

/// "a", "a and b", "a, b and c".
fn join(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What every role may do, for the members page: "Owners manage members, servers and
/// billing; admins manage members and servers; …", read from [`Capability::allows`].
pub fn roles_summary() -> String {
    let parts: Vec<String> = Role::ALL
        .into_iter()
        .map(|r| format!("{} {}", r.plural(), r.summary()))
        .collect();
    format!(
        "{}. Only owners grant, change or remove the owner role.",
        capitalized(&parts.join("; "))
    )
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operator's standing among the provider's staff. Every operator works the console;
/// only those who manage operators give or take operators' roles (the moderator role).
/// Set with `herd admin create-operator --manages-operators` (`users.manages_operators`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperatorStanding {
    /// Works the console.
    Operator,
    /// Works the console and manages operators' roles.
    ManagesOperators,
}

impl OperatorStanding {
    pub fn from_flag(manages_operators: bool) -> Self {
        if manages_operators {
            OperatorStanding::ManagesOperators
        } else {
            OperatorStanding::Operator
        }
    }

    /// May this operator give or take an operator's role (the moderator role)?
    pub fn may_manage_operators(self) -> bool {
        self == OperatorStanding::ManagesOperators
    }
}

/// May `actor` give the role `new_role` to someone being invited?
pub fn check_invite(actor: Role, new_role: Role) -> Result<(), MembershipError> {
    if !actor.can(Capability::ManageMembers) {
        return Err(MembershipError::NotAllowed);
    }
    if new_role == Role::Owner && actor != Role::Owner {
        return Err(MembershipError::OwnerOnly);
    }
    Ok(())
}

/// May `actor` change a member from `from` to `to` (or remove them, `to == None`), given
/// how many owners the organization has now? Leaving is a removal of oneself and needs no
/// management right.
pub fn check_change(
    actor: Role,
    acting_on_self: bool,
    from: Role,
    to: Option<Role>,
    owner_count: i64,
) -> Result<(), MembershipError> {
    let leaving = acting_on_self && to.is_none();
    if !leaving && !actor.can(Capability::ManageMembers) {
        return Err(MembershipError::NotAllowed);
    }
    let touches_owner = from == Role::Owner || to == Some(Role::Owner);
    if touches_owner && actor != Role::Owner && !leaving {
        return Err(MembershipError::OwnerOnly);
    }
    let loses_owner = from == Role::Owner && to != Some(Role::Owner);
    if loses_owner && owner_count <= 1 {
        return Err(MembershipError::LastOwner);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    #[test]
    fn parses_every_role_back() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
        }
        assert_eq!(Role::parse("root"), Err(MembershipError::UnknownRole));
    }

    #[test]
    fn admins_manage_members_and_servers_billing_members_manage_billing() {
        use Capability::*;
        let table: Vec<(Capability, Vec<Role>)> = Capability::ALL
            .into_iter()
            .map(|c| (c, c.roles()))
            .collect();
        assert_eq!(
            table,
            vec![
                (View, vec![Owner, Admin, Billing, Member]),
                (ManageMembers, vec![Owner, Admin]),
                (ManageServers, vec![Owner, Admin]),
                (ManageBilling, vec![Owner, Billing]),
                (SeeAllTickets, vec![Owner, Admin]),
                (ManageModeration, vec![Owner, Admin]),
            ]
        );
    }

    #[test]
    fn texts_name_exactly_the_roles_of_the_table() {
        assert_eq!(
            Capability::ManageBilling.refusal(),
            "Your role does not allow this: only owners and billing members may order servers and manage billing."
        );
        assert_eq!(
            Capability::ManageServers.rule(),
            "Owners and admins may manage the organization's servers."
        );
        assert_eq!(Capability::View.who(), "every member");
        assert_eq!(
            roles_summary(),
            "Owners manage members, servers, billing, support tickets and moderation; admins manage \
             members, servers, support tickets and moderation; billing members manage billing; members see the organization, its members and its \
             servers. Only owners grant, change or remove the owner role."
        );
    }

    #[test]
    fn last_owner_cannot_leave_or_be_demoted() {
        assert_eq!(
            check_change(Owner, true, Owner, None, 1),
            Err(MembershipError::LastOwner)
        );
        assert_eq!(
            check_change(Owner, true, Owner, Some(Admin), 1),
            Err(MembershipError::LastOwner)
        );
        assert_eq!(check_change(Owner, true, Owner, None, 2), Ok(()));
        assert_eq!(check_change(Owner, false, Owner, Some(Member), 2), Ok(()));
    }

    #[test]
    fn only_owners_touch_owners() {
        assert_eq!(
            check_change(Admin, false, Owner, Some(Member), 3),
            Err(MembershipError::OwnerOnly)
        );
        assert_eq!(
            check_change(Admin, false, Member, Some(Owner), 3),
            Err(MembershipError::OwnerOnly)
        );
        assert_eq!(check_change(Admin, false, Member, Some(Billing), 1), Ok(()));
        assert_eq!(check_invite(Admin, Owner), Err(MembershipError::OwnerOnly));
        assert_eq!(check_invite(Owner, Owner), Ok(()));
    }

    #[test]
    fn members_and_billing_cannot_manage_but_can_leave() {
        assert_eq!(
            check_change(Member, false, Member, None, 1),
            Err(MembershipError::NotAllowed)
        );
        assert_eq!(
            check_change(Billing, false, Member, Some(Admin), 1),
            Err(MembershipError::NotAllowed)
        );
        assert_eq!(
            check_invite(Billing, Member),
            Err(MembershipError::NotAllowed)
        );
        assert_eq!(check_change(Member, true, Member, None, 1), Ok(()));
        // Leaving as an owner still needs another owner.
        assert_eq!(
            check_change(Owner, true, Owner, None, 1),
            Err(MembershipError::LastOwner)
        );
    }
}
