//! Lifecycle actions on a server, the same for the portal (an owner or admin of its
//! organization) and the console (an operator): each checked, idempotent on a double
//! click, recorded in the server's history and the audit log, and carried to the cluster
//! by the apply job queued in the same transaction.

use crate::clusters::Actor;
use crate::jobs::ApplyInstance;
use crate::FleetError;
use herd_domain::version::{self, App, MaintenanceWindow};
use herd_domain::{Desired, OrgId};
use herd_store::audit::{self, NewEntry};
use herd_store::fleet::{self, EventKind};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// What can be asked of a server by [`request`] (upgrades and deletion have their own
/// functions, with what they need to be sure).
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
    /// Recorded, to start at this time (the organization's maintenance window).
    Scheduled(OffsetDateTime),
    /// It was so already (a second click): nothing changed.
    AlreadySo,
}

/// Who asks: an organization's owner or admin (only for its own servers), or an operator.
#[derive(Debug, Clone, Copy)]
pub enum Requester<'a> {
    Member { org: OrgId, who: Actor<'a> },
    Operator(Actor<'a>),
}

impl<'a> Requester<'a> {
    fn split(self) -> (Actor<'a>, Option<OrgId>) {
        match self {
            Requester::Member { org, who } => (who, Some(org)),
            Requester::Operator(who) => (who, None),
        }
    }

    fn by(self) -> &'static str {
        match self {
            Requester::Member { .. } => "member",
            Requester::Operator(_) => "operator",
        }
    }
}

/// The server, locked for the change; `NotFound` for a member of another organization.
async fn locked(
    tx: &mut sqlx::PgConnection,
    by: Requester<'_>,
    id: Uuid,
) -> Result<fleet::Instance, FleetError> {
    let (_, org) = by.split();
    fleet::lock_instance(tx, id)
        .await?
        .filter(|i| org.is_none_or(|o| o.0 == i.org_id))
        .ok_or(FleetError::NotFound)
}

/// Writes the history line and the audit entry of an action on `inst`.
async fn record(
    tx: &mut sqlx::PgConnection,
    by: Requester<'_>,
    inst: &fleet::Instance,
    history: &str,
    action: &'static str,
    mut details: serde_json::Value,
) -> Result<(), FleetError> {
    let (who, _) = by.split();
    fleet::add_event(tx, inst.id, EventKind::Action, history, Some(who.id.0)).await?;
    details["instance"] = serde_json::json!(inst.id);
    details["by"] = serde_json::json!(by.by());
    audit::record(
        tx,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: Some(OrgId(inst.org_id)),
            action,
            target: inst.domain.clone(),
            source_ip: Some(who.ip),
            details,
        },
    )
    .await?;
    Ok(())
}

/// Makes the servers an access-policy subject pays for follow its new state, in the
/// caller's transaction (the transition's): suspended (held for billing) when access is
/// suspended or deletion is scheduled, resumed when access runs again (only the servers
/// the policy suspended), deleted when access is deleted (the caller has confirmed it with
/// the payment provider): the same steps as [`delete`], recorded in each server's history
/// and audited as the billing policy's. Returns the servers changed.
pub async fn follow_access(
    conn: &mut sqlx::PgConnection,
    subject: &str,
    access: herd_domain::access::Access,
) -> Result<Vec<Uuid>, FleetError> {
    use herd_domain::access::Access as A;
    let hold = match access {
        A::Suspended | A::ScheduledForDeletion => true,
        A::Running | A::Grace => false,
        A::Deleted => return delete_for_billing(conn, subject).await,
        A::NotProvisioned => return Ok(Vec::new()),
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

/// Deletes the servers `subject` pays for, as [`delete`] does, for the billing policy.
async fn delete_for_billing(
    conn: &mut sqlx::PgConnection,
    subject: &str,
) -> Result<Vec<Uuid>, FleetError> {
    let mut deleted = Vec::new();
    for id in fleet::instances_of_subject(&mut *conn, subject).await? {
        let Some(inst) = fleet::lock_instance(&mut *conn, id).await? else {
            continue;
        };
        if inst.desired == Desired::Deleted {
            continue;
        }
        fleet::set_desired(&mut *conn, id, Desired::Deleted).await?;
        fleet::cancel_upgrade(&mut *conn, id).await?;
        fleet::add_event(
            &mut *conn,
            id,
            EventKind::Action,
            "Deleted by the billing policy: the retention period after the suspension ended, and Stripe confirmed that nothing was paid",
            None,
        )
        .await?;
        audit::record(
            &mut *conn,
            NewEntry {
                actor: None,
                org: Some(OrgId(inst.org_id)),
                action: "instance.deleted",
                target: inst.domain.clone(),
                source_ip: None,
                details: serde_json::json!({
                    "instance": id, "plan": inst.plan_code, "by": "billing policy",
                    "subject": subject,
                }),
            },
        )
        .await?;
        herd_jobs::enqueue(&mut *conn, &ApplyInstance { instance_id: id }).await?;
        deleted.push(id);
    }
    Ok(deleted)
}

/// Makes the servers a subject pays for run on `plan` (a plan change on the subscription,
/// prorated by Stripe, or on an invoice contract): replicas, resources and limits follow
/// through their apply jobs, queued in the caller's transaction. With `from`, only the
/// servers on that plan move (a contract's other servers were ordered on plans of their
/// own). Returns the servers changed.
pub async fn follow_plan(
    conn: &mut sqlx::PgConnection,
    subject: &str,
    from: Option<&str>,
    plan: &str,
) -> Result<Vec<Uuid>, FleetError> {
    let mut changed = Vec::new();
    for id in fleet::instances_of_subject(&mut *conn, subject).await? {
        if let Some(from) = from {
            let on = fleet::instance(&mut *conn, id).await?.map(|i| i.plan_code);
            if on.as_deref() != Some(from) {
                continue;
            }
        }
        if fleet::set_plan(&mut *conn, id, plan).await? {
            fleet::add_event(
                conn,
                id,
                EventKind::Action,
                &format!("Moved to the {plan} plan"),
                None,
            )
            .await?;
            // Managed moderation follows the plan: asked for on a plan that includes it,
            // withdrawn (token wiped, Herd's tokens on the server revoked) on one without.
            if !fleet::withdraw_moderation_if_unmoderated(conn, id).await? {
                fleet::ask_moderator_account_if_moderated(conn, id).await?;
            }
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
    let (_, org_filter) = by.split();
    let mut tx = pool.begin().await?;
    let inst = locked(&mut tx, by, id).await?;
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
    record(
        &mut tx,
        by,
        &inst,
        action.history(),
        action.audit_action(),
        serde_json::json!({}),
    )
    .await?;
    // A suspended server is not upgraded: its scheduled upgrade is dropped, and said so.
    if action == Action::Suspend && fleet::cancel_upgrade(&mut *tx, id).await? {
        fleet::add_event(
            &mut tx,
            id,
            EventKind::Action,
            &format!(
                "Scheduled upgrade to {} cancelled: the server is suspended",
                inst.upgrade_to.as_deref().unwrap_or("a new version")
            ),
            None,
        )
        .await?;
    }
    herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
    tx.commit().await?;
    Ok(Outcome::Requested)
}

/// Sets a new password for the server's owner account (the old one stops working): the
/// cluster makes it and sets it, and it is shown once to an owner or admin, as at install.
/// The server must be running; a reset under way is not asked for again.
pub async fn reset_owner_password(
    pool: &PgPool,
    by: Requester<'_>,
    id: Uuid,
) -> Result<Outcome, FleetError> {
    let mut tx = pool.begin().await?;
    let inst = locked(&mut tx, by, id).await?;
    if inst.desired != Desired::Running {
        return Err(FleetError::Invalid(
            "The owner's password can be reset only while the server runs.".into(),
        ));
    }
    if inst.running_version.is_none() {
        return Err(FleetError::Invalid(
            "The owner account is not created yet: the server is still being set up.".into(),
        ));
    }
    if inst.owner_password_pending() {
        return Ok(Outcome::AlreadySo);
    }
    let generation = fleet::request_owner_password_reset(&mut *tx, id).await?;
    record(
        &mut tx,
        by,
        &inst,
        "New owner password requested",
        "instance.owner_password.reset",
        serde_json::json!({ "username": inst.owner_username, "reset": generation }),
    )
    .await?;
    herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
    tx.commit().await?;
    Ok(Outcome::Requested)
}

/// When an upgrade runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Now,
    /// At the next start of the organization's maintenance window.
    InWindow,
}

/// The upgrades a server is offered, oldest first: the newest patch of its own series and
/// the next step beyond it ([`version::upgrade_options`]). Operators are also offered the
/// pre-releases they listed; organizations only final releases.
pub async fn upgrade_options(
    ex: impl sqlx::PgExecutor<'_>,
    inst: &fleet::Instance,
    for_operator: bool,
) -> Result<Vec<String>, FleetError> {
    let Some(app) = App::parse(&inst.app) else {
        return Ok(Vec::new());
    };
    let releases = fleet::release_versions(ex, &inst.app).await?;
    Ok(
        version::upgrade_options(app, &inst.version, &releases, for_operator)
            .into_iter()
            .map(str::to_owned)
            .collect(),
    )
}

/// Upgrades server `id` to `to` (the version the requester was shown: an upgrade is
/// never to something other than what was confirmed), now or in the organization's
/// maintenance window. `to` must be offered and allowed from the current version; a
/// server still finishing an upgrade, suspended or being deleted is refused.
pub async fn upgrade(
    pool: &PgPool,
    by: Requester<'_>,
    id: Uuid,
    to: &str,
    when: When,
) -> Result<Outcome, FleetError> {
    let mut tx = pool.begin().await?;
    let inst = locked(&mut tx, by, id).await?;
    match inst.desired {
        Desired::Deleted => {
            return Err(FleetError::Invalid(
                "This server is being deleted; it cannot be upgraded.".into(),
            ))
        }
        Desired::Suspended => {
            return Err(FleetError::Invalid(
                "This server is suspended. Resume it before upgrading: the upgrade's migrations need it running.".into(),
            ))
        }
        Desired::Running => {}
    }
    if inst.version == to {
        return Ok(Outcome::AlreadySo);
    }
    if when == When::InWindow && inst.upgrade_to.as_deref() == Some(to) {
        return Ok(Outcome::AlreadySo);
    }
    if inst.running_version.as_deref() != Some(inst.version.as_str()) {
        return Err(FleetError::Invalid(format!(
            "The server is not running {} yet (set-up or an upgrade is still under way). Try again once it is.",
            inst.version
        )));
    }
    let offered = upgrade_options(&mut *tx, &inst, matches!(by, Requester::Operator(_))).await?;
    if !offered.iter().any(|o| o == to) {
        let app = App::parse(&inst.app).unwrap_or(App::Mastodon);
        let why = version::check_upgrade(app, &inst.version, to).err();
        return Err(FleetError::Invalid(match (why, offered.is_empty()) {
            (Some(why), _) => format!("This upgrade cannot be made: {why}."),
            (None, false) => format!("{to} is not on offer; the server can move to {}. Reload the page to see the choices.", offered.join(" or ")),
            (None, true) => format!("{to} is not offered; the server is up to date."),
        }));
    }
    let outcome = match when {
        When::Now => {
            fleet::set_version(&mut *tx, id, to).await?;
            record(
                &mut tx,
                by,
                &inst,
                &format!("Upgrade from {} to {to} started", inst.version),
                "instance.upgrade.started",
                serde_json::json!({ "from": inst.version, "to": to }),
            )
            .await?;
            herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
            Outcome::Requested
        }
        When::InWindow => {
            let (day, hour) = fleet::maintenance_window(&mut *tx, OrgId(inst.org_id)).await?;
            let window =
                MaintenanceWindow::new(day as u8, hour as u8).map_err(FleetError::Invalid)?;
            let at = window.next_start(OffsetDateTime::now_utc());
            fleet::schedule_upgrade(&mut *tx, id, to, at).await?;
            record(
                &mut tx,
                by,
                &inst,
                &format!(
                    "Upgrade from {} to {to} scheduled for the maintenance window ({})",
                    inst.version,
                    window.label()
                ),
                "instance.upgrade.scheduled",
                serde_json::json!({ "from": inst.version, "to": to, "at": at.unix_timestamp() }),
            )
            .await?;
            Outcome::Scheduled(at)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Drops a scheduled upgrade of server `id`.
pub async fn cancel_upgrade(
    pool: &PgPool,
    by: Requester<'_>,
    id: Uuid,
) -> Result<Outcome, FleetError> {
    let mut tx = pool.begin().await?;
    let inst = locked(&mut tx, by, id).await?;
    let Some(to) = inst.upgrade_to.clone() else {
        return Ok(Outcome::AlreadySo);
    };
    fleet::cancel_upgrade(&mut *tx, id).await?;
    record(
        &mut tx,
        by,
        &inst,
        &format!("Scheduled upgrade to {to} cancelled"),
        "instance.upgrade.cancelled",
        serde_json::json!({ "to": to }),
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome::Requested)
}

/// Starts the scheduled upgrades whose time has come (the worker, every minute). One that
/// is no longer allowed (the server was moved meanwhile) is dropped, and its history says
/// why. Returns how many started.
pub async fn start_due_upgrades(pool: &PgPool) -> Result<usize, FleetError> {
    let mut started = 0;
    for id in fleet::due_upgrades(pool).await? {
        let mut tx = pool.begin().await?;
        let Some(inst) = fleet::lock_instance(&mut tx, id).await? else {
            continue;
        };
        let (Some(to), Some(at)) = (inst.upgrade_to.clone(), inst.upgrade_at) else {
            continue;
        };
        if at > OffsetDateTime::now_utc() {
            continue;
        }
        let app = App::parse(&inst.app).unwrap_or(App::Mastodon);
        let refused = match inst.desired {
            _ if inst.desired != Desired::Running => Some("the server is not running".to_owned()),
            _ if inst.running_version.as_deref() != Some(inst.version.as_str()) => Some(format!(
                "the server was not running {} yet (set-up or another upgrade was under way)",
                inst.version
            )),
            _ => version::check_upgrade(app, &inst.version, &to).err(),
        };
        let (action, note) = match &refused {
            Some(why) => ("instance.upgrade.dropped", why.clone()),
            None => ("instance.upgrade.started", String::new()),
        };
        audit::record(
            &mut tx,
            NewEntry {
                actor: None,
                org: Some(OrgId(inst.org_id)),
                action,
                target: inst.domain.clone(),
                source_ip: None,
                details: serde_json::json!({
                    "instance": id, "by": "maintenance window",
                    "from": inst.version, "to": to, "reason": note,
                }),
            },
        )
        .await?;
        if let Some(why) = refused {
            fleet::cancel_upgrade(&mut *tx, id).await?;
            fleet::add_event(
                &mut tx,
                id,
                EventKind::Error,
                &format!("The scheduled upgrade to {to} did not start: {why}"),
                None,
            )
            .await?;
        } else {
            fleet::set_version(&mut *tx, id, &to).await?;
            fleet::add_event(
                &mut tx,
                id,
                EventKind::Action,
                &format!(
                    "Upgrade from {} to {to} started in the maintenance window",
                    inst.version
                ),
                None,
            )
            .await?;
            herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
            started += 1;
        }
        tx.commit().await?;
    }
    Ok(started)
}

/// Deletes server `id`, for good: `typed` must be its domain, as the requester typed it to
/// confirm. The cluster's operator takes a final database dump (where a backup destination
/// is configured) before it removes the server's namespace; the domain stays reserved.
pub async fn delete(
    pool: &PgPool,
    by: Requester<'_>,
    id: Uuid,
    typed: &str,
) -> Result<Outcome, FleetError> {
    let mut tx = pool.begin().await?;
    let inst = locked(&mut tx, by, id).await?;
    if inst.desired == Desired::Deleted {
        return Ok(Outcome::AlreadySo);
    }
    if !typed.trim().eq_ignore_ascii_case(&inst.domain) {
        return Err(FleetError::Invalid(format!(
            "To confirm, type the server's address: {}",
            inst.domain
        )));
    }
    fleet::set_desired(&mut *tx, id, Desired::Deleted).await?;
    fleet::cancel_upgrade(&mut *tx, id).await?;
    record(
        &mut tx,
        by,
        &inst,
        "Deletion requested",
        "instance.deleted",
        serde_json::json!({ "plan": inst.plan_code }),
    )
    .await?;
    herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
    tx.commit().await?;
    Ok(Outcome::Requested)
}

/// Sets an organization's maintenance window (its owners and admins); audited.
pub async fn set_maintenance_window(
    pool: &PgPool,
    who: Actor<'_>,
    org: OrgId,
    window: MaintenanceWindow,
) -> Result<Outcome, FleetError> {
    let mut tx = pool.begin().await?;
    if !fleet::set_maintenance_window(&mut *tx, org, window.day.into(), window.hour.into()).await? {
        return Ok(Outcome::AlreadySo);
    }
    // Upgrades scheduled into the old window move to the new one.
    let moved =
        fleet::reschedule_upgrades(&mut *tx, org, window.next_start(OffsetDateTime::now_utc()))
            .await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: Some(org),
            action: "org.maintenance_window.changed",
            target: window.label(),
            source_ip: Some(who.ip),
            details: serde_json::json!({ "day": window.day, "hour": window.hour, "upgrades_moved": moved }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome::Requested)
}

/// An organization's maintenance window.
pub async fn maintenance_window(
    pool: &PgPool,
    org: OrgId,
) -> Result<MaintenanceWindow, FleetError> {
    let (day, hour) = fleet::maintenance_window(pool, org).await?;
    MaintenanceWindow::new(day as u8, hour as u8).map_err(FleetError::Invalid)
}
