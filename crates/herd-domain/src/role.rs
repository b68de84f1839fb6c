//! Roles inside an organization and the rules for changing memberships.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A member's role in one organization, from most to least powerful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including deleting the organization and managing owners.
    Owner,
    /// Manages members (except owners) and instances.
    Admin,
    /// Sees and manages billing: plans, payment, invoices.
    Billing,
    /// Uses the organization's services, opens support tickets.
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

    /// May invite, change roles of and remove members.
    pub fn can_manage_members(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// May manage the organization's servers: see the owner's one-time password, and
    /// (as they are built) suspend, resume, upgrade, change plan and delete.
    pub fn can_manage_servers(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }

    /// May see and change the organization's billing.
    pub fn can_manage_billing(self) -> bool {
        matches!(self, Role::Owner | Role::Billing)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// May `actor` give the role `new_role` to someone being invited?
pub fn check_invite(actor: Role, new_role: Role) -> Result<(), MembershipError> {
    if !actor.can_manage_members() {
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
    if !leaving && !actor.can_manage_members() {
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
