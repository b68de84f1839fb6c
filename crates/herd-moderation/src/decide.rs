//! Decisions on reports. A moderator's decision is written with the policy version in
//! force and the minutes spent; one that goes to the server is written with its outbox
//! row and the job that sends it, in one transaction (the job is never lost, and never
//! queued for a decision that was not saved). Escalating asks the customer instead: their
//! owners and admins are emailed, and their decision is recorded and sent the same way.

use crate::{record, require_moderator, ModerationError, Who};
use herd_domain::moderation::{check_minutes, check_note, Decision, EscalationState, ReportState};
use herd_domain::OrgId;
use herd_store::moderation::{self as store, NewDecision};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A decision as typed in a form.
#[derive(Debug, Clone, Default)]
pub struct DecisionForm {
    /// `resolve`, `reopen`, `escalate` or an account action (`silence`, …).
    pub decision: String,
    pub note: String,
    pub notify_user: bool,
    /// Minutes spent on the report (moderators only).
    pub minutes: String,
}

/// Writes the decision, its outbox row and job (when it goes to the server), and the
/// report's new state. The report's row is locked by the caller.
async fn write(
    conn: &mut PgConnection,
    d: &NewDecision<'_>,
    report: &store::Report,
) -> Result<(), ModerationError> {
    store::insert_decision(&mut *conn, d).await?;
    let state = match d.decision {
        Decision::Resolve | Decision::Act(_) => ReportState::Resolved,
        Decision::Reopen => ReportState::Open,
        Decision::Escalate => ReportState::Escalated,
    };
    store::set_report_state(&mut *conn, report.id, state).await?;
    if d.decision.is_sent() {
        store::insert_outbox(&mut *conn, d.id).await?;
        crate::jobs::enqueue_send(&mut *conn, d.id, 0).await?;
    }
    Ok(())
}

/// A moderator decides on a report; returns the decision's id. Resolve and account
/// actions need an open report, reopening a resolved one; the server's connection must
/// work for what is sent. Audited.
pub async fn decide(
    pool: &PgPool,
    who: Who<'_>,
    report: Uuid,
    form: &DecisionForm,
    base_url: &str,
) -> Result<Uuid, ModerationError> {
    require_moderator(pool, who.id).await?;
    let mut errors = Vec::new();
    let decision = Decision::parse(form.decision.trim())
        .map_err(|_| errors.push(("decision", "Choose what to do.".to_owned())))
        .ok();
    let escalating = decision == Some(Decision::Escalate);
    let note = check_note(&form.note, escalating || form.notify_user)
        .map_err(|e| errors.push(("note", e.to_owned())))
        .ok();
    let minutes = check_minutes(&form.minutes)
        .map_err(|e| errors.push(("minutes", e.to_owned())))
        .ok();
    let mut tx = pool.begin().await?;
    if !store::lock_report(&mut tx, report).await? {
        return Err(ModerationError::NotFound);
    }
    let r = store::report(&mut *tx, report)
        .await?
        .ok_or(ModerationError::NotFound)?;
    if let Some(d) = decision {
        let fits = match d {
            Decision::Reopen => r.state == ReportState::Resolved,
            _ => r.state == ReportState::Open,
        };
        if !fits {
            errors.push((
                "decision",
                format!(
                    "This report is {}: {} is not possible now.",
                    r.state.label().to_lowercase(),
                    d.label().to_lowercase()
                ),
            ));
        }
        if d.is_sent() {
            let i = store::instance(&mut *tx, r.instance_id).await?;
            let usable = i
                .as_ref()
                .and_then(|i| i.connection.as_ref())
                .is_some_and(|c| c.usable());
            if !usable {
                errors.push((
                    "decision",
                    "The server's token is revoked or refused: nothing can be sent until the customer connects a new one. Escalate instead."
                        .to_owned(),
                ));
            }
        }
    }
    let (Some(decision), Some(note), Some(minutes), true) =
        (decision, note, minutes, errors.is_empty())
    else {
        return Err(ModerationError::Invalid(errors));
    };
    let policy_version = store::current_policy(&mut *tx, r.instance_id)
        .await?
        .map(|p| p.version);
    let id = Uuid::now_v7();
    let d = NewDecision {
        id,
        report,
        decision,
        note: &note,
        notify_user: form.notify_user && decision.is_sent(),
        policy_version,
        by: who.id,
        by_name: who.name,
        by_customer: false,
        minutes_spent: i32::try_from(minutes).unwrap_or(0),
    };
    write(&mut tx, &d, &r).await?;
    if decision == Decision::Escalate {
        let escalation = Uuid::now_v7();
        store::insert_escalation(&mut tx, escalation, report, id).await?;
        crate::jobs::enqueue_escalation_emails(&mut tx, escalation, r.org_id, base_url).await?;
    }
    record(
        &mut tx,
        who,
        Some(r.org_id),
        "moderation.report.decided",
        report.to_string(),
        json!({ "decision": decision.as_str(), "domain": r.instance_domain, "remote_id": r.remote_id,
                "policy_version": policy_version, "minutes": minutes, "notify_user": d.notify_user }),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// The customer decides an escalation of one of their servers' reports: the decision is
/// recorded (with the policy version in force) and sent to the server. Audited.
pub async fn customer_decide(
    pool: &PgPool,
    who: Who<'_>,
    org: OrgId,
    instance: Uuid,
    escalation: &str,
    form: &DecisionForm,
) -> Result<(), ModerationError> {
    let mut errors = Vec::new();
    let e = match escalation.trim().parse::<Uuid>() {
        Ok(id) => store::escalation(pool, id)
            .await?
            .filter(|e| e.org_id == org.0 && e.instance_id == instance),
        Err(_) => None,
    };
    let e = match e {
        Some(e) if e.state == EscalationState::Waiting => Some(e),
        Some(_) => {
            errors.push((
                "escalation",
                "This question was answered already.".to_owned(),
            ));
            None
        }
        None => {
            errors.push((
                "escalation",
                "Choose one of the questions waiting for you.".to_owned(),
            ));
            None
        }
    };
    let decision = Decision::parse(form.decision.trim())
        .ok()
        .filter(|d| Decision::customer_choices().contains(d));
    if decision.is_none() {
        errors.push((
            "decision",
            "Choose what the moderators should do.".to_owned(),
        ));
    }
    let note = check_note(&form.note, form.notify_user)
        .map_err(|m| errors.push(("note", m.to_owned())))
        .ok();
    let (Some(e), Some(decision), Some(note), true) = (e, decision, note, errors.is_empty()) else {
        return Err(ModerationError::Invalid(errors));
    };
    let mut tx = pool.begin().await?;
    store::lock_report(&mut tx, e.report_id).await?;
    let r = store::report(&mut *tx, e.report_id)
        .await?
        .ok_or(ModerationError::NotFound)?;
    let policy_version = store::current_policy(&mut *tx, r.instance_id)
        .await?
        .map(|p| p.version);
    let id = Uuid::now_v7();
    let d = NewDecision {
        id,
        report: r.id,
        decision,
        note: &note,
        notify_user: form.notify_user,
        policy_version,
        by: who.id,
        by_name: who.name,
        by_customer: true,
        minutes_spent: 0,
    };
    // The decision first: the escalation refers to it. Dropping the transaction on a
    // refusal below takes it back.
    write(&mut tx, &d, &r).await?;
    if !store::decide_escalation(&mut tx, e.id, id).await? {
        return Err(ModerationError::invalid(
            "escalation",
            "This question was answered already.",
        ));
    }
    record(
        &mut tx,
        who,
        Some(r.org_id),
        "moderation.escalation.decided",
        e.id.to_string(),
        json!({ "decision": decision.as_str(), "domain": r.instance_domain, "remote_id": r.remote_id,
                "policy_version": policy_version }),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A moderator puts a failed action back in line (after the customer connected a new
/// token, say). Audited.
pub async fn retry(pool: &PgPool, who: Who<'_>, decision: Uuid) -> Result<(), ModerationError> {
    require_moderator(pool, who.id).await?;
    let mut tx = pool.begin().await?;
    if !store::requeue_failed(&mut *tx, decision).await? {
        return Err(ModerationError::invalid(
            "retry",
            "Only a failed action can be sent again.",
        ));
    }
    let round = time::OffsetDateTime::now_utc().unix_timestamp();
    crate::jobs::enqueue_send(&mut *tx, decision, round).await?;
    record(
        &mut tx,
        who,
        None,
        "moderation.action.retried",
        decision.to_string(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Minutes logged on their own, as typed: a whole number from 1 to 480.
fn check_logged_minutes(s: &str) -> Result<i32, &'static str> {
    const MESSAGE: &str = "Enter the minutes spent, a whole number from 1 to 480.";
    match check_minutes(s) {
        Ok(0) | Err(_) => Err(MESSAGE),
        Ok(m) => i32::try_from(m).map_err(|_| MESSAGE),
    }
}

/// A moderator logs time spent on a report without deciding (reading, asking around):
/// counted in the month's hours like a decision's minutes. `submission`: the form's
/// one-time token; the same form posted again logs nothing (returns false). Audited.
pub async fn log_time(
    pool: &PgPool,
    who: Who<'_>,
    report: Uuid,
    (minutes, note): (&str, &str),
    submission: Option<Uuid>,
) -> Result<bool, ModerationError> {
    require_moderator(pool, who.id).await?;
    let r = store::report(pool, report)
        .await?
        .ok_or(ModerationError::NotFound)?;
    let mut errors = Vec::new();
    let minutes = check_logged_minutes(minutes)
        .map_err(|e| errors.push(("time_minutes", e.to_owned())))
        .ok();
    let note = check_note(note, false)
        .map_err(|e| errors.push(("time_note", e.to_owned())))
        .ok();
    let (Some(minutes), Some(note), true) = (minutes, note, errors.is_empty()) else {
        return Err(ModerationError::Invalid(errors));
    };
    let mut tx = pool.begin().await?;
    if !store::insert_time(
        &mut tx,
        report,
        minutes,
        &note,
        (who.id, who.name),
        submission,
    )
    .await?
    {
        return Ok(false);
    }
    record(
        &mut tx,
        who,
        Some(r.org_id),
        "moderation.time.logged",
        report.to_string(),
        json!({ "domain": r.instance_domain, "remote_id": r.remote_id, "minutes": minutes }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::check_logged_minutes;

    #[test]
    fn logged_minutes_are_1_to_480() {
        assert_eq!(check_logged_minutes(" 25 "), Ok(25));
        assert_eq!(check_logged_minutes("480"), Ok(480));
        for bad in ["", "0", "-5", "481", "ten", "2.5"] {
            assert!(check_logged_minutes(bad).is_err(), "{bad}");
        }
    }
}
