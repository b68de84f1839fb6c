//! Herd's domain model: identifiers, validated values (email, slug, password policy),
//! organization roles and their rules, the plan catalogue, VAT on invoices, and the access
//! policy that turns billing facts into what a tenant's server should be.
//!
//! This crate does no IO. CI checks that it never depends on sqlx, axum, kube or stripe.

pub mod access;
pub mod backup;
pub mod domain;
pub mod email;
pub mod export;
pub mod ids;
pub mod instance;
pub mod invoice;
pub mod job;
pub mod moderation;
pub mod password;
pub mod plan;
pub mod restore;
pub mod role;
pub mod slug;
pub mod support;
pub mod vat;
pub mod version;

pub use domain::{DomainError, DomainName};
pub use email::{Email, EmailError};
pub use ids::{AuditId, InvitationId, OrgId, PlanId, UserId};
pub use instance::{ClusterHealth, Desired, InstancePhase};
pub use job::JobState;
pub use password::{
    check_password, PasswordError, PASSWORD_MAX_LEN, PASSWORD_MIN_LEN, PASSWORD_RULES,
};
pub use plan::{
    default_catalogue, minor_units, BillingInterval, ComputeSize, Money, MoneyError, PlanLimits,
    PlanSeed,
};
pub use role::{check_change, check_invite, MembershipError, Role};
pub use slug::{Slug, SlugError};
pub use vat::{Country, CountryError, TaxTreatment, VatId, VatIdError};

/// `t` to the minute in UTC, as pages and emails write times: `2026-11-29 14:03 UTC`.
pub fn utc_minute(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}
