//! Sending a decision's action to the server, at most once.
//!
//! Before each call the attempt is marked and committed (`first_attempt_at`). A later
//! attempt that finds the mark does not know whether the earlier call reached the server
//! (the worker may have died, or the answer been lost after the server applied it), so it
//! re-reads the server first: an account action with a report resolves that report on
//! the server, and sets the account's flag (silenced, suspended, …); when both say it is
//! applied, the action is marked sent without a second call. Resolve and reopen are
//! idempotent on the server and are simply sent again. The row's lock is held during the
//! call, so two runs of one action never call at once.
//!
//! Outcomes: applied → sent; 401/403 → the connection is broken and the action failed
//! (shown; a moderator sends it again once a new token is connected); 404 → the report
//! is recorded as gone and the action failed; 429 → pending until the time the server
//! gave, with a job queued then; 5xx or unreachable → pending with the error shown, and
//! the job fails so the runner retries it with backoff.

use crate::client::{AccountFlags, ActionForm, AdminApi, ApiError};
use crate::connections;
use herd_domain::moderation::{AccountAction, Decision, OutboxState, ReportState};
use herd_fleet::seal::SealKey;
use herd_store::moderation::{self as store, Outgoing};
use sqlx::PgPool;
use uuid::Uuid;

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Applied by this call.
    Applied,
    /// Found applied by an earlier attempt: not sent again.
    AlreadyApplied,
    /// Nothing to do (sent already, failed and waiting for a moderator, or unknown).
    Nothing,
    /// Failed for good (token refused, report gone): shown.
    Failed,
    /// The server asked to wait; queued again for then.
    Later,
}

/// Does the server show `out`'s action as applied? (Only asked after an attempt whose
/// outcome is unknown.)
async fn applied(api: &AdminApi, out: &Outgoing) -> Result<bool, ApiError> {
    let Decision::Act(action) = out.decision else {
        return Ok(false);
    };
    let report = api.report(&out.remote_id).await?;
    if !report.action_taken {
        return Ok(false);
    }
    let account = api.account(&out.target_account_id).await?;
    Ok(AccountFlags::of(&account).shows(action))
}

async fn call(api: &AdminApi, out: &Outgoing) -> Result<(), ApiError> {
    match out.decision {
        Decision::Resolve => api.resolve(&out.remote_id).await.map(drop),
        Decision::Reopen => api.reopen(&out.remote_id).await.map(drop),
        Decision::Act(action) => {
            api.account_action(
                &out.target_account_id,
                &ActionForm {
                    kind: action.as_str(),
                    report_id: &out.remote_id,
                    text: &out.note,
                    send_email_notification: out.notify_user,
                },
            )
            .await
        }
        Decision::Escalate => Ok(()),
    }
}

/// Sends decision `decision`'s action. An error asks the job to be retried.
pub async fn send(
    pool: &PgPool,
    http: &reqwest::Client,
    key: Option<&SealKey>,
    decision: Uuid,
) -> anyhow::Result<Sent> {
    // 1. Mark the attempt, and learn whether an earlier one may have reached the server.
    let mut tx = pool.begin().await?;
    let Some(out) = store::lock_outgoing(&mut tx, decision).await? else {
        return Ok(Sent::Nothing);
    };
    if matches!(out.state, OutboxState::Sent | OutboxState::Failed) {
        return Ok(Sent::Nothing);
    }
    let Some(instance) = store::instance(&mut *tx, out.instance_id).await? else {
        return Ok(Sent::Nothing);
    };
    let Some(api) = connections::api(http, key, &instance)? else {
        store::mark_error(
            &mut *tx,
            decision,
            "the server's token is revoked or refused: connect a new one, then send again",
            true,
            None,
        )
        .await?;
        tx.commit().await?;
        return Ok(Sent::Failed);
    };
    let earlier = out.first_attempt_at.is_some();
    store::begin_attempt(&mut tx, decision).await?;
    tx.commit().await?;

    // 2. Call, holding the row's lock.
    let mut tx = pool.begin().await?;
    let Some(out) = store::lock_outgoing(&mut tx, decision).await? else {
        return Ok(Sent::Nothing);
    };
    if matches!(out.state, OutboxState::Sent | OutboxState::Failed) {
        return Ok(Sent::Nothing);
    }
    let result = if earlier {
        match applied(&api, &out).await {
            Ok(true) => Ok(true),
            Ok(false) => call(&api, &out).await.map(|()| false),
            Err(e) => Err(e),
        }
    } else {
        call(&api, &out).await.map(|()| false)
    };
    let outcome = match result {
        Ok(by_reread) => {
            store::mark_sent(&mut *tx, decision, by_reread).await?;
            if by_reread {
                tracing::info!(%decision, "moderation action found applied by an earlier attempt; not sent again");
                Sent::AlreadyApplied
            } else {
                Sent::Applied
            }
        }
        Err(ApiError::NotFound) => {
            store::mark_error(
                &mut *tx,
                decision,
                "the report is gone from the server",
                true,
                None,
            )
            .await?;
            store::set_report_state(&mut *tx, out.report_id, ReportState::Vanished).await?;
            Sent::Failed
        }
        Err(e) if e.token_refused() => {
            let reason = e.to_string();
            store::mark_error(&mut *tx, decision, &reason, true, None).await?;
            store::mark_broken(&mut *tx, out.instance_id, &reason).await?;
            Sent::Failed
        }
        Err(ApiError::RateLimited { until }) => {
            store::mark_error(
                &mut *tx,
                decision,
                "rate limited by the server",
                false,
                Some(until),
            )
            .await?;
            crate::jobs::enqueue_send_at(&mut *tx, decision, until).await?;
            Sent::Later
        }
        Err(e) => {
            let message = e.to_string();
            store::mark_error(&mut *tx, decision, &message, false, None).await?;
            tx.commit().await?;
            return Err(anyhow::anyhow!(
                "sending the moderation action to {}: {message}",
                instance.domain
            ));
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

impl AccountFlags {
    /// Does the account show `action` applied? (`none` sets no flag: the resolved report
    /// is the whole of it.)
    pub fn shows(self, action: AccountAction) -> bool {
        match action {
            AccountAction::None => true,
            AccountAction::Sensitive => self.sensitized,
            AccountAction::Disable => self.disabled,
            AccountAction::Silence => self.silenced,
            AccountAction::Suspend => self.suspended,
        }
    }
}
