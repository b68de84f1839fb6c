//! The SLA clock over a ticket's stored history: what herd-domain computes, with the
//! tiers of the plans the ticket went through, and recorded back on the ticket.

use crate::tiers::{from_snapshot, snapshot, tier_for};
use crate::SupportError;
use herd_domain::ids::TicketId;
use herd_domain::support::sla::{self, Change, ClockEvent};
use herd_domain::support::{Priority, Sla, SupportTier};
use herd_store::audit::{self, NewEntry};
use herd_store::support::{self as store, Event, SlaColumns, Ticket};
use serde_json::json;
use sqlx::PgConnection;
use std::collections::HashMap;
use time::OffsetDateTime;

/// The clock of `ticket` at `now`, and the tier it follows now.
pub async fn clock(
    conn: &mut PgConnection,
    ticket: &Ticket,
    now: OffsetDateTime,
) -> Result<(Sla, SupportTier), SupportError> {
    let events = store::events(&mut *conn, ticket.id()).await?;
    let mut tiers: HashMap<Option<String>, SupportTier> = HashMap::new();
    let mut opening_priority = None;
    let mut opening_tier = None;
    let mut clock_events = Vec::new();
    for (at, e) in events {
        let change = match e {
            Event::Status(s) => Change::Status(s),
            Event::Priority(p) => {
                if at <= ticket.created_at && opening_priority.is_none() {
                    opening_priority = Some(p);
                    continue;
                }
                Change::Priority(p)
            }
            Event::Plan(code, snapshot) => {
                // The tier in force then; the plan's tier as it is now only for events
                // written before snapshots.
                let tier = match (snapshot.as_ref().and_then(from_snapshot), tiers.get(&code)) {
                    (Some(t), _) => t,
                    (None, Some(t)) => t.clone(),
                    (None, None) => {
                        let t = tier_for(&mut *conn, code.as_deref()).await?;
                        tiers.insert(code, t.clone());
                        t
                    }
                };
                if at <= ticket.created_at && opening_tier.is_none() {
                    opening_tier = Some(tier);
                    continue;
                }
                Change::Tier(tier)
            }
            Event::FirstResponse => Change::FirstResponse,
        };
        clock_events.push(ClockEvent { at, change });
    }
    let opening_tier = match opening_tier {
        Some(t) => t,
        None => tier_for(&mut *conn, ticket.plan_code.as_deref()).await?,
    };
    let current_tier = clock_events
        .iter()
        .rev()
        .find_map(|e| match &e.change {
            Change::Tier(t) => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_else(|| opening_tier.clone());
    let sla = sla::compute(
        ticket.created_at,
        opening_priority.unwrap_or(Priority::Normal),
        &opening_tier,
        &clock_events,
        now,
    );
    Ok((sla, current_tier))
}

/// Recomputes `ticket`'s clock at `now` (after noting a change of the organization's
/// plan) and stores its due times; returns the breaches newly recorded, each of which it
/// writes to the audit log (`support.ticket.breached`), whichever action found it.
pub async fn refresh(
    conn: &mut PgConnection,
    id: TicketId,
    now: OffsetDateTime,
) -> Result<(bool, bool), SupportError> {
    let Some(mut ticket) = store::ticket(&mut *conn, id).await? else {
        return Err(SupportError::NotFound);
    };
    if ticket.status.is_active() {
        let plan = store::org_plan(&mut *conn, ticket.org()).await?;
        if plan != ticket.plan_code {
            let tier = tier_for(&mut *conn, plan.as_deref()).await?;
            store::set_plan(&mut *conn, id, plan.as_deref(), snapshot(&tier), now).await?;
            ticket.plan_code = plan;
        }
    }
    let (sla, _) = clock(&mut *conn, &ticket, now).await?;
    // Only targets still to meet: one already breached stays breached (and recorded), so
    // its past due time must not hold the ticket at the head of the check and the queue.
    let running = |t: &herd_domain::support::SlaTarget| {
        (t.met_at.is_none() && !t.paused && !t.breached())
            .then_some(t.due)
            .flatten()
    };
    let next_due = [running(&sla.first_response), running(&sla.resolution)]
        .into_iter()
        .flatten()
        .min();
    let columns = SlaColumns {
        first_response_due: sla.first_response.due,
        resolution_due: sla.resolution.due,
        next_due: if ticket.status.is_active() {
            next_due
        } else {
            None
        },
        first_response_breached: sla.first_response.breached(),
        resolution_breached: sla.resolution.breached(),
    };
    let (first, resolution) = store::set_sla(&mut *conn, id, columns).await?;
    for (breached, which) in [(first, "first_response"), (resolution, "resolution")] {
        if breached {
            audit::record(
                &mut *conn,
                NewEntry {
                    actor: None,
                    org: Some(ticket.org()),
                    action: "support.ticket.breached",
                    target: id.to_string(),
                    source_ip: None,
                    details: json!({ "target": which, "priority": ticket.priority.as_str() }),
                },
            )
            .await?;
        }
    }
    Ok((first, resolution))
}
