//! Applying the access policy (`herd_domain::access`) to each billing subject: recompute
//! its state from the billing facts and the time, record every change, and queue the email
//! that tells the organization (owners and billing members) what happened and what comes
//! next. Run after each processed event and periodically by the worker, so deadlines pass
//! on time even when Stripe says nothing.

use crate::jobs::{AccessNotice, PaidAfterDeletion};
use crate::stripe_api::{StripeApi, SubscriptionNow};
use herd_domain::access::{self, Access, Notice, Overrides, Policy, Standing};
use herd_domain::role::Capability;
use herd_domain::OrgId;
use herd_store::access::{self as store, TenantAccess};
use herd_store::{billing, orgs, StoreError};
use sqlx::{PgConnection, PgPool};
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

/// Counts the suspensions and deletions held back because Stripe's API did not confirm them
/// (it disagreed, could not be asked, or is not configured).
pub const HELD_BACK: &str = "herd_access_changes_held_back_total";

/// What a subject's standing is read from, under its row lock.
enum Facts {
    Card(String),
    Contract(Uuid),
}

impl Facts {
    fn of(subject: &str) -> Option<Facts> {
        if let Some(sub) = subject.strip_prefix("stripe:") {
            return Some(Facts::Card(sub.to_owned()));
        }
        subject
            .strip_prefix("contract:")
            .and_then(|c| Uuid::parse_str(c).ok())
            .map(Facts::Contract)
    }

    /// The standing now, read in the caller's transaction (after the subject's row is
    /// locked, so that a payment committed meanwhile is seen), with the subscription's
    /// status for a card subject.
    async fn read(
        &self,
        conn: &mut PgConnection,
        now: OffsetDateTime,
    ) -> Result<Option<(Standing, Option<String>)>, StoreError> {
        match self {
            Facts::Card(sub) => Ok(billing::subscription(&mut *conn, sub).await?.map(|s| {
                (
                    Standing::from_stripe(Some(&s.status), s.status_since),
                    Some(s.status),
                )
            })),
            Facts::Contract(id) => {
                let Some(c) = herd_store::invoicing::contract(&mut *conn, *id).await? else {
                    return Ok(None);
                };
                let standing = crate::invoicing::standing(&mut *conn, &c, now.date()).await?;
                Ok(Some((standing, None)))
            }
        }
    }
}

/// Whether a change takes a server away or announces that it will be (suspension,
/// scheduled deletion, deletion): for a card subscription, only once Stripe agrees.
fn takes_away(before: Access, after: Access) -> bool {
    after != before
        && matches!(
            after,
            Access::Suspended | Access::ScheduledForDeletion | Access::Deleted
        )
}

/// Whether Stripe's answer, read now, confirms the stored status that decided a
/// suspension or deletion: the same status, and (unless the subscription ended) its latest
/// invoice still unpaid.
fn stripe_agrees(read: &SubscriptionNow, stored_status: Option<&str>) -> bool {
    if stored_status != Some(read.status.as_str()) {
        return false;
    }
    match Standing::from_stripe(Some(&read.status), OffsetDateTime::UNIX_EPOCH) {
        Standing::Ended { .. } if read.status == "canceled" || read.status == "paused" => true,
        Standing::Overdue { .. } | Standing::Ended { .. } => {
            read.latest_invoice_status.as_deref() != Some("paid")
        }
        Standing::Good | Standing::NotStarted => false,
    }
}

/// Recomputes `subject` at `now`, deciding under its row lock from the facts re-read under
/// that lock (a payment committed while a sweep runs wins). A card subscription's
/// suspension or deletion takes effect only after Stripe's API, asked through `stripe`,
/// confirms it: what Stripe says is stored first as the newest fact about the subscription
/// (a lost `active` webhook is made good), then the decision is taken again. Deletion is
/// final: nothing brings a deleted subject back; a payment afterwards is told it needs a
/// new order. Returns the recorded transition, if the state changed.
pub async fn refresh(
    pool: &PgPool,
    subject: &str,
    org: OrgId,
    channel: &str,
    now: OffsetDateTime,
    stripe: Option<&StripeApi>,
) -> Result<Option<Uuid>, StoreError> {
    let Some(facts) = Facts::of(subject) else {
        return Ok(None);
    };
    let mut confirmed: Option<SubscriptionNow> = None;
    loop {
        let mut tx = pool.begin().await?;
        store::create(&mut tx, subject, org, channel).await?;
        let Some(current) = store::lock(&mut tx, subject).await? else {
            return Ok(None);
        };
        let Some((standing, status)) = facts.read(&mut tx, now).await? else {
            return Ok(None);
        };
        let before = Access::parse(&current.state).unwrap_or(Access::NotProvisioned);
        if before == Access::Deleted {
            // Final. A payment after the deletion is told, once, that it needs a new order.
            if standing == Standing::Good
                && store::mark_paid_after_deletion(&mut tx, subject).await?
            {
                herd_jobs::enqueue(
                    &mut *tx,
                    &PaidAfterDeletion {
                        subject: subject.to_owned(),
                    },
                )
                .await?;
            }
            if current.next_state.is_some() {
                store::set_state(&mut tx, subject, Access::Deleted.as_str(), None).await?;
            }
            tx.commit().await?;
            return Ok(None);
        }
        let d = access::decide(standing, &Policy::default(), &overrides(&current), now);
        if let (Facts::Card(sub), true) = (&facts, takes_away(before, d.access)) {
            match &confirmed {
                None => {
                    // Not under the lock: Stripe's answer takes time.
                    tx.rollback().await?;
                    let Some(api) = stripe else {
                        tracing::warn!(subject, to = d.access.as_str(), "no Stripe API key: the access policy cannot confirm with Stripe and holds the change back");
                        metrics::counter!(HELD_BACK, "reason" => "no_api").increment(1);
                        return Ok(None);
                    };
                    let read = match api.subscription_now(sub).await {
                        Ok(read) => read,
                        Err(e) => {
                            tracing::warn!(subject, error = %e, "Stripe could not confirm a suspension or deletion; held back until the next sweep");
                            metrics::counter!(HELD_BACK, "reason" => "stripe_error").increment(1);
                            return Ok(None);
                        }
                    };
                    crate::process::record_read(pool, &read)
                        .await
                        .map_err(|e| match e {
                            crate::process::ProcessError::Store(s) => s,
                            other => StoreError::Invalid(other.to_string()),
                        })?;
                    confirmed = Some(read);
                    continue;
                }
                Some(read) if !stripe_agrees(read, status.as_deref()) => {
                    tracing::warn!(subject, stripe = %read.status, stored = ?status, to = d.access.as_str(), "Stripe does not confirm the change; held back");
                    metrics::counter!(HELD_BACK, "reason" => "stripe_disagrees").increment(1);
                    tx.rollback().await?;
                    return Ok(None);
                }
                Some(_) => {}
            }
        }
        let next = d.next.map(|(a, t)| (a.as_str(), t));
        // Overrides end with their episode: once a payment problem is settled, a later one
        // gets the policy's own deadlines. One granted while nothing was wrong yet (a
        // purchase order known to be late) waits for the episode it was granted for.
        let episode_over = matches!(
            before,
            Access::Grace | Access::Suspended | Access::ScheduledForDeletion
        ) && matches!(standing, Standing::Good | Standing::NotStarted);
        if episode_over && store::end_overrides(&mut tx, subject).await? {
            tracing::info!(
                subject,
                "operators' overrides ended with the payment problem"
            );
        }
        let mut transition = None;
        if d.access != before {
            let id = store::record_transition(&mut tx, &current, d.access.as_str(), next).await?;
            if access::notice(before, d.access).is_some() {
                herd_jobs::enqueue(&mut *tx, &AccessNotice { transition_id: id }).await?;
            }
            // Deleted servers are not billed: a card subscription is cancelled at Stripe.
            if d.access == Access::Deleted {
                if let Some(subscription) = subject.strip_prefix("stripe:") {
                    herd_jobs::enqueue(
                        &mut *tx,
                        &crate::jobs::CancelSubscription {
                            subscription: subscription.to_owned(),
                        },
                    )
                    .await?;
                }
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
        return Ok(transition);
    }
}

/// Recomputes the subject of a Stripe subscription (when it belongs to an organization).
pub async fn refresh_subscription(
    pool: &PgPool,
    subscription: &str,
    now: OffsetDateTime,
    stripe: Option<&StripeApi>,
) -> Result<Option<Uuid>, StoreError> {
    let Some(s) = billing::subscription(pool, subscription).await? else {
        return Ok(None);
    };
    let Some(org) = s.org_id else {
        return Ok(None);
    };
    refresh(
        pool,
        &card_subject(subscription),
        OrgId(org),
        "card",
        now,
        stripe,
    )
    .await
}

/// Recomputes one subject (`stripe:sub_…` or `contract:…`).
pub async fn refresh_subject(
    pool: &PgPool,
    subject: &str,
    now: OffsetDateTime,
    stripe: Option<&StripeApi>,
) -> Result<Option<Uuid>, StoreError> {
    if let Some(sub) = subject.strip_prefix("stripe:") {
        return refresh_subscription(pool, sub, now, stripe).await;
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
    refresh(pool, subject, OrgId(c.org_id), "invoice", now, stripe).await
}

/// Recomputes every subject (card subscriptions and invoice contracts); returns how many
/// changed state. Each is decided under its own row lock from facts read under it.
pub async fn sweep(
    pool: &PgPool,
    now: OffsetDateTime,
    stripe: Option<&StripeApi>,
) -> Result<usize, StoreError> {
    let mut changed = crate::invoicing::sweep(pool, now).await?;
    for (subject, org) in store::card_subjects(pool).await? {
        // One subject's failure (Stripe unreachable, a damaged row) does not stop the
        // sweep for the others; the next sweep tries it again.
        match refresh(pool, &subject, OrgId(org), "card", now, stripe).await {
            Ok(Some(_)) => changed += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(subject, error = %e, "access sweep: could not decide this subject");
                metrics::counter!("herd_access_sweep_failures_total").increment(1);
            }
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
        .filter(|m| m.role.can(Capability::ManageBilling))
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

/// The emails telling an organization that a payment arrived after its server was deleted:
/// the server does not come back; a new order makes a new one.
pub async fn paid_after_deletion_emails(
    pool: &PgPool,
    subject: &str,
) -> Result<Vec<herd_mail::Email>, StoreError> {
    let Some(a) = store::get(pool, subject).await? else {
        return Ok(Vec::new());
    };
    let Some(org) = orgs::by_id(pool, OrgId(a.org_id)).await? else {
        return Ok(Vec::new());
    };
    to_billing_contacts(
        pool,
        org.id(),
        &format!("{}'s server was deleted before the payment arrived", org.name),
        &format!(
            "We received a payment from {}, but the server it was for and its data were deleted earlier, as announced, and cannot come back. To have a server again, place a new order in Herd (Billing › Order a server); for the payment itself, answer this email and we will settle it.",
            org.name
        ),
    )
    .await
}

/// The emails telling an organization that its order's delayed payment failed.
pub async fn order_payment_failed_emails(
    pool: &PgPool,
    order: Uuid,
) -> Result<Vec<herd_mail::Email>, StoreError> {
    let Some(o) = billing::order(pool, order).await? else {
        return Ok(Vec::new());
    };
    let Some(org) = orgs::by_id(pool, OrgId(o.org_id)).await? else {
        return Ok(Vec::new());
    };
    to_billing_contacts(
        pool,
        org.id(),
        &format!("The payment for {} did not go through", o.domain),
        &format!(
            "The bank refused the payment for {}'s order of a server at {}, so no server was made and nothing was charged. To order it again, with another payment method if you can, go to Herd (Billing › Order a server).",
            org.name, o.domain
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
    // A canceled subscription cannot be paid again: its notices never say that paying
    // brings the server back.
    let ended = match t.subject.strip_prefix("stripe:") {
        Some(sub) => billing::subscription(pool, sub)
            .await?
            .is_some_and(|s| matches!(s.status.as_str(), "canceled" | "incomplete_expired")),
        None => false,
    };
    let new_order = "To have a server again, place a new order in Herd (Billing › Order a server).";
    let export =
        "You can export your data from your server until then (Preferences › Import and export).";
    let (subject, body) = match notice {
        Notice::GraceStarted => (
            format!("Payment problem for {}", org.name),
            format!("We could not collect the payment for {}'s server. It keeps running until {next}; please update the payment method in Herd (Billing › Payment methods and invoices). If the payment is still missing then, the server will be suspended.", org.name),
        ),
        Notice::Suspended if ended => (
            format!("{}'s server is suspended", org.name),
            format!("{}'s subscription has ended, so its server is suspended: it no longer answers, and its data is kept until {next}, then deleted. An ended subscription cannot be paid again. {new_order} {export}", org.name),
        ),
        Notice::DeletionScheduled if ended => (
            format!("{}'s server will be deleted on {next}", org.name),
            format!("{}'s subscription has ended; its suspended server and all its data will be deleted on {next}. {export} {new_order}", org.name),
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
