//! The SLA clock over a ticket's stored history: what herd-domain computes, with the
//! tiers of the plans the ticket went through, and recorded back on the ticket.

use crate::tiers::tier_for;
use crate::SupportError;
use herd_domain::ids::TicketId;
use herd_domain::support::sla::{self, Change, ClockEvent};
use herd_domain::support::{Priority, Sla, SupportTier};
use herd_store::support::{self as store, Event, SlaColumns, Ticket};
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
            Event::Plan(code) => {
                let tier = match tiers.get(&code) {
                    Some(t) => t.clone(),
                    None => {
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
/// plan) and stores its due times; returns the breaches newly recorded.
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
            store::set_plan(&mut *conn, id, plan.as_deref(), now).await?;
            ticket.plan_code = plan;
        }
    }
    let (sla, _) = clock(&mut *conn, &ticket, now).await?;
    let running = |t: &herd_domain::support::SlaTarget| {
        (t.met_at.is_none() && !t.paused).then_some(t.due).flatten()
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
    Ok(store::set_sla(conn, id, columns).await?)
}
