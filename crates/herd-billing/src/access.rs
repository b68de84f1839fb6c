//! Applying the access policy (`herd_domain::access`) to each billing subject: recompute
//! its state from the billing facts and the time, record every change, and queue the email
//! that tells the organization (owners and billing members) what happened and what comes
//! next. Run after each processed event and periodically by the worker, so deadlines pass
//! on time even when Stripe says nothing.

use crate::jobs::AccessNotice;
use herd_domain::access::{self, Access, Notice, Overrides, Policy, Standing};
use herd_domain::{OrgId, Role};
use herd_store::access::{self as store, TenantAccess};
use herd_store::{billing, orgs, StoreError};
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

pub fn card_subject(subscription: &str) -> String {
    format!("stripe:{subscription}")
}

fn overrides(a: &TenantAccess) -> Overrides {
    Overrides {
        grace_until: a.grace_until,
        paused_since: a.paused_since,
        paused_before: Duration::seconds(a.paused_before_s),
    }
}

/// Recomputes `subject` at `now` from `standing`. Returns the recorded transition, if the
/// state changed.
pub async fn refresh(
    pool: &PgPool,
    subject: &str,
    org: OrgId,
    channel: &str,
    standing: Standing,
    now: OffsetDateTime,
) -> Result<Option<Uuid>, StoreError> {
    let mut tx = pool.begin().await?;
    store::create(&mut tx, subject, org, channel).await?;
    let Some(current) = store::lock(&mut tx, subject).await? else {
        return Ok(None);
    };
    let d = access::decide(standing, &Policy::default(), &overrides(&current), now);
    let next = d.next.map(|(a, t)| (a.as_str(), t));
    let before = Access::parse(&current.state).unwrap_or(Access::NotProvisioned);
    let mut transition = None;
    if d.access != before {
        let id = store::record_transition(&mut tx, &current, d.access.as_str(), next).await?;
        if access::notice(before, d.access).is_some() {
            herd_jobs::enqueue(&mut *tx, &AccessNotice { transition_id: id }).await?;
        }
        // The servers it pays for follow, through their apply jobs, in this transaction.
        let servers = herd_fleet::lifecycle::follow_access(&mut tx, subject, d.access)
            .await
            .map_err(|e| match e {
                herd_fleet::FleetError::Store(s) => s,
                other => StoreError::Invalid(other.to_string()),
            })?;
        tracing::info!(
            subject,
            from = before.as_str(),
            to = d.access.as_str(),
            servers = servers.len(),
            "access changed"
        );
        transition = Some(id);
    }
    if transition.is_some()
        || current.next_state.as_deref() != next.map(|(s, _)| s)
        || current.next_at != next.map(|(_, t)| t)
    {
        store::set_state(&mut tx, subject, d.access.as_str(), next).await?;
    }
    tx.commit().await?;
    Ok(transition)
}

/// Recomputes the subject of a Stripe subscription (when it belongs to an organization).
pub async fn refresh_subscription(
    pool: &PgPool,
    subscription: &str,
    now: OffsetDateTime,
) -> Result<Option<Uuid>, StoreError> {
    let Some(s) = billing::subscription(pool, subscription).await? else {
        return Ok(None);
    };
    let Some(org) = s.org_id else {
        return Ok(None);
    };
    let standing = Standing::from_stripe(Some(&s.status), s.status_since);
    refresh(
        pool,
        &card_subject(subscription),
        OrgId(org),
        "card",
        standing,
        now,
    )
    .await
}

/// Recomputes one subject (`stripe:sub_…`).
pub async fn refresh_subject(
    pool: &PgPool,
    subject: &str,
    now: OffsetDateTime,
) -> Result<Option<Uuid>, StoreError> {
    if let Some(sub) = subject.strip_prefix("stripe:") {
        return refresh_subscription(pool, sub, now).await;
    }
    let contract = subject
        .strip_prefix("contract:")
        .and_then(|c| Uuid::parse_str(c).ok());
    let Some(c) = contract else {
        return Ok(None);
    };
    let Some(c) = herd_store::invoicing::contract(pool, c).await? else {
        return Ok(None);
    };
    let standing = crate::invoicing::standing(pool, &c, now.date()).await?;
    refresh(pool, subject, OrgId(c.org_id), "invoice", standing, now).await
}

/// Recomputes every subject (card subscriptions and invoice contracts); returns how many
/// changed state.
pub async fn sweep(pool: &PgPool, now: OffsetDateTime) -> Result<usize, StoreError> {
    let mut changed = crate::invoicing::sweep(pool, now).await?;
    for (subject, org, status, since) in store::card_subjects(pool).await? {
        let standing = Standing::from_stripe(Some(&status), since);
        if refresh(pool, &subject, OrgId(org), "card", standing, now)
            .await?
            .is_some()
        {
            changed += 1;
        }
    }
    Ok(changed)
}

fn date(t: OffsetDateTime) -> String {
    format!("{} {} {}", t.day(), t.month(), t.year())
}

/// One email per owner and billing member of an organization (who receive billing emails).
pub(crate) async fn to_billing_contacts(
    pool: &PgPool,
    org: OrgId,
    subject: &str,
    body: &str,
) -> Result<Vec<herd_mail::Email>, StoreError> {
    Ok(orgs::members(pool, org)
        .await?
        .into_iter()
        .filter(|m| matches!(m.role, Role::Owner | Role::Billing))
        .map(|m| herd_mail::Email {
            to: m.email,
            subject: subject.to_owned(),
            body: format!("Hello {},\n\n{body}\n\n— Herd", m.display_name),
        })
        .collect())
}

/// The emails announcing the end of a subscription's trial.
pub async fn trial_emails(
    pool: &PgPool,
    subscription: &str,
) -> Result<Vec<herd_mail::Email>, StoreError> {
    let Some(s) = billing::subscription(pool, subscription).await? else {
        return Ok(Vec::new());
    };
    let (Some(org_id), Some(end)) = (s.org_id, s.trial_end) else {
        return Ok(Vec::new());
    };
    let Some(org) = orgs::by_id(pool, OrgId(org_id)).await? else {
        return Ok(Vec::new());
    };
    let end = date(end);
    to_billing_contacts(
        pool,
        org.id(),
        &format!("{}'s trial ends on {end}", org.name),
        &format!(
            "{}'s free trial ends on {end}. To keep the server running, add a payment method in Herd (Billing › Payment methods and invoices) before then.",
            org.name
        ),
    )
    .await
}

/// The emails of a transition, one per owner and billing member.
pub async fn notice_emails(
    pool: &PgPool,
    transition: Uuid,
) -> Result<Vec<herd_mail::Email>, StoreError> {
    let Some(t) = store::transition(pool, transition).await? else {
        return Ok(Vec::new());
    };
    let (Some(from), Some(to)) = (Access::parse(&t.from_state), Access::parse(&t.to_state)) else {
        return Ok(Vec::new());
    };
    let Some(notice) = access::notice(from, to) else {
        return Ok(Vec::new());
    };
    let Some(org) = orgs::by_id(pool, OrgId(t.org_id)).await? else {
        return Ok(Vec::new());
    };
    let next = t.next_at.map(date).unwrap_or_default();
    let export =
        "You can export your data from your server until then (Preferences › Import and export).";
    let (subject, body) = match notice {
        Notice::GraceStarted => (
            format!("Payment problem for {}", org.name),
            format!("We could not collect the payment for {}'s server. It keeps running until {next}; please update the payment method in Herd (Billing › Payment methods and invoices). If the payment is still missing then, the server will be suspended.", org.name),
        ),
        Notice::Suspended => (
            format!("{}'s server is suspended", org.name),
            format!("{}'s server is suspended: it no longer answers, and its data is kept. Paying what is due brings it back at once. Without payment, the data will be deleted on {next}. {export}", org.name),
        ),
        Notice::DeletionScheduled => (
            format!("{}'s server will be deleted on {next}", org.name),
            format!("{}'s suspended server and all its data will be deleted on {next}. {export} Paying what is due brings it back.", org.name),
        ),
        Notice::Deleted => (
            format!("{}'s server was deleted", org.name),
            format!("{}'s server and its data were deleted, as announced.", org.name),
        ),
        Notice::Restored => (
            format!("{}'s server runs normally again", org.name),
            format!("Thank you: the payment for {}'s server arrived and it runs normally again.", org.name),
        ),
        Notice::Started => (
            format!("{}'s subscription is active", org.name),
            format!("Thank you: {}'s subscription is active.", org.name),
        ),
    };
    to_billing_contacts(pool, org.id(), &subject, &body).await
}
