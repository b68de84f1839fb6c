//! Lifecycle actions on a server, the same for the portal (an owner or admin of its
//! organization) and the console (an operator): each checked, idempotent on a double
//! click, recorded in the server's history and the audit log, and carried to the cluster
//! by the apply job queued in the same transaction.

use crate::clusters::Actor;
use crate::jobs::ApplyInstance;
use crate::FleetError;
use herd_domain::{Desired, OrgId};
use herd_store::audit::{self, NewEntry};
use herd_store::fleet::{self, EventKind};
use sqlx::PgPool;
use uuid::Uuid;

/// What can be asked of a server (more follow: plan change, upgrade, deletion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Scale to zero, data kept; visitors see a "suspended" page.
    Suspend,
    /// Bring a suspended server back.
    Resume,
}

impl Action {
    fn desired(self) -> Desired {
        match self {
            Action::Suspend => Desired::Suspended,
            Action::Resume => Desired::Running,
        }
    }

    fn audit_action(self) -> &'static str {
        match self {
            Action::Suspend => "instance.suspended",
            Action::Resume => "instance.resumed",
        }
    }

    fn history(self) -> &'static str {
        match self {
            Action::Suspend => "Suspension requested",
            Action::Resume => "Resumption requested",
        }
    }
}

/// What came of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded; the cluster follows shortly.
    Requested,
    /// It was so already (a second click): nothing changed.
    AlreadySo,
}

/// Who asks: an organization's owner or admin (only for its own servers), or an operator.
#[derive(Debug, Clone, Copy)]
pub enum Requester<'a> {
    Member { org: OrgId, who: Actor<'a> },
    Operator(Actor<'a>),
}

/// Makes the servers an access-policy subject pays for follow its new state, in the
/// caller's transaction (the transition's): suspended (held for billing) when access is
/// suspended or deletion is scheduled, resumed when access runs again (only the servers
/// the policy suspended). Deletion is not acted on yet. Returns the servers changed.
pub async fn follow_access(
    conn: &mut sqlx::PgConnection,
    subject: &str,
    access: herd_domain::access::Access,
) -> Result<Vec<Uuid>, FleetError> {
    use herd_domain::access::Access as A;
    let hold = match access {
        A::Suspended | A::ScheduledForDeletion => true,
        A::Running | A::Grace => false,
        A::NotProvisioned | A::Deleted => return Ok(Vec::new()),
    };
    let mut changed = Vec::new();
    for id in fleet::instances_of_subject(&mut *conn, subject).await? {
        if fleet::set_billing_hold(&mut *conn, id, hold).await? {
            let note = if hold {
                "Suspended by the billing policy (a payment is overdue, or the subscription ended)"
            } else {
                "Resumed by the billing policy: the payment arrived"
            };
            fleet::add_event(conn, id, EventKind::Action, note, None).await?;
            herd_jobs::enqueue(&mut *conn, &ApplyInstance { instance_id: id }).await?;
            changed.push(id);
        }
    }
    Ok(changed)
}

/// Makes the servers a subject pays for run on `plan` (a plan change on the subscription,
/// prorated by Stripe): replicas, resources and limits follow through their apply jobs,
/// queued in the caller's transaction. Returns the servers changed.
pub async fn follow_plan(
    conn: &mut sqlx::PgConnection,
    subject: &str,
    plan: &str,
) -> Result<Vec<Uuid>, FleetError> {
    let mut changed = Vec::new();
    for id in fleet::instances_of_subject(&mut *conn, subject).await? {
        if fleet::set_plan(&mut *conn, id, plan).await? {
            fleet::add_event(
                conn,
                id,
                EventKind::Action,
                &format!("Moved to the {plan} plan"),
                None,
            )
            .await?;
            herd_jobs::enqueue(&mut *conn, &ApplyInstance { instance_id: id }).await?;
            changed.push(id);
        }
    }
    Ok(changed)
}

/// Asks for `action` on server `id`. A member of another organization gets `NotFound`;
/// a deleted server cannot be suspended or resumed.
pub async fn request(
    pool: &PgPool,
    by: Requester<'_>,
    id: Uuid,
    action: Action,
) -> Result<Outcome, FleetError> {
    let (who, org_filter) = match by {
        Requester::Member { org, who } => (who, Some(org)),
        Requester::Operator(who) => (who, None),
    };
    let mut tx = pool.begin().await?;
    let inst = fleet::lock_instance(&mut tx, id)
        .await?
        .filter(|i| org_filter.is_none_or(|o| o.0 == i.org_id))
        .ok_or(FleetError::NotFound)?;
    if inst.desired == Desired::Deleted {
        return Err(FleetError::Invalid(
            "This server is being deleted; it can no longer be suspended or resumed.".into(),
        ));
    }
    let held = fleet::billing_hold(&mut *tx, id).await?;
    if held && action == Action::Resume && org_filter.is_some() {
        return Err(FleetError::Invalid(
            "This server is suspended because a payment is overdue; it resumes by itself once the payment arrives.".into(),
        ));
    }
    // An operator's resume lifts the billing hold too; a suspension asked for while held
    // stands when the payment arrives (the policy resumes only what it suspended).
    if held && action == Action::Resume {
        fleet::set_billing_hold(&mut *tx, id, false).await?;
    } else if held && action == Action::Suspend {
        fleet::clear_billing_hold(&mut *tx, id).await?;
    } else if !fleet::set_desired(&mut *tx, id, action.desired()).await? {
        return Ok(Outcome::AlreadySo);
    }
    fleet::add_event(
        &mut tx,
        id,
        EventKind::Action,
        action.history(),
        Some(who.id.0),
    )
    .await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: Some(OrgId(inst.org_id)),
            action: action.audit_action(),
            target: inst.domain.clone(),
            source_ip: Some(who.ip),
            details: serde_json::json!({
                "instance": id,
                "by": if org_filter.is_some() { "member" } else { "operator" },
            }),
        },
    )
    .await?;
    herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
    tx.commit().await?;
    Ok(Outcome::Requested)
}
