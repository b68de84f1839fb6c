//! An organization's servers as the portal shows them, and the operators' view of every
//! tenant: lists, the steps of an install as the cluster reports them, the history, and
//! the owner's one-time password, shown once.

use crate::clusters::Actor;
use crate::seal::{owner_password_purpose, SealKey};
use crate::FleetError;
use herd_domain::{InstancePhase, OrgId};
use herd_store::audit::{self, NewEntry};
use herd_store::fleet::{self, Event, Instance, Search};
use herd_store::{Page, Paged};
use serde::Deserialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// An organization's servers, those needing attention first, then newest first.
pub async fn list_for_org(
    pool: &PgPool,
    org: OrgId,
    page: Page,
) -> Result<Paged<Instance>, FleetError> {
    let s = Search {
        org: Some(org),
        ..Search::default()
    };
    Ok(fleet::search(pool, &s, page).await?)
}

/// One of an organization's servers; `NotFound` for another organization's (never a
/// hint that it exists).
pub async fn get_for_org(pool: &PgPool, org: OrgId, id: Uuid) -> Result<Instance, FleetError> {
    fleet::instance(pool, id)
        .await?
        .filter(|i| i.org_id == org.0)
        .ok_or(FleetError::NotFound)
}

/// Any instance (operators).
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Instance, FleetError> {
    fleet::instance(pool, id).await?.ok_or(FleetError::NotFound)
}

/// Every tenant matching `s`, stuck ones first (operators).
pub async fn search(pool: &PgPool, s: &Search, page: Page) -> Result<Paged<Instance>, FleetError> {
    Ok(fleet::search(pool, s, page).await?)
}

/// The newest entries of an instance's history.
pub async fn history(pool: &PgPool, id: Uuid) -> Result<Vec<Event>, FleetError> {
    Ok(fleet::events(pool, id, 50).await?)
}

/// How far one step of the install is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    Done,
    Working,
    Waiting,
    Failed,
}

impl StepState {
    pub fn label(self) -> &'static str {
        match self {
            StepState::Done => "Done",
            StepState::Working => "In progress",
            StepState::Waiting => "Waiting",
            StepState::Failed => "Failed",
        }
    }
    pub fn css(self) -> &'static str {
        match self {
            StepState::Done => "done",
            StepState::Working => "working",
            StepState::Waiting => "waiting",
            StepState::Failed => "failed",
        }
    }
}

/// One step of bringing a server up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub state: StepState,
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

fn step_name(condition: &str) -> &str {
    match condition {
        "Database" => "Database",
        "Redis" => "Cache (Redis)",
        "Migrations" => "Database migrations and owner account",
        "Web" => "Web server",
        "Streaming" => "Streaming server",
        "Sidekiq" => "Background workers",
        "Ingress" => "Address and certificate",
        other => other,
    }
}

/// The steps of an install, in order: the cluster placement, then each component as the
/// operator last reported it.
pub fn steps(i: &Instance) -> Vec<Step> {
    let placed = match (&i.cluster_name, i.phase) {
        (Some(c), _) => Step {
            name: "Cluster".into(),
            state: StepState::Done,
            message: format!("placed on {c}"),
        },
        (None, _) => Step {
            name: "Cluster".into(),
            state: StepState::Waiting,
            message: i
                .phase_message
                .clone()
                .unwrap_or_else(|| "waiting for a cluster".into()),
        },
    };
    let mut out = vec![placed];
    let conditions: Vec<Condition> =
        serde_json::from_value(i.conditions.clone()).unwrap_or_default();
    if conditions.is_empty() {
        for name in ["Database", "Migrations", "Web", "Ingress"] {
            out.push(Step {
                name: step_name(name).into(),
                state: StepState::Waiting,
                message: "not started".into(),
            });
        }
        return out;
    }
    // A reset of the owner's password, or the moderator account of managed moderation, is
    // not a step of the install: the page's owner (or moderation) section says how it went.
    for c in conditions
        .into_iter()
        .filter(|c| c.type_ != "OwnerPassword" && c.type_ != "ModeratorAccount")
    {
        let failed = c.status == "False"
            && (i.phase == InstancePhase::Failed || c.reason.contains("Failed"));
        let state = match c.status.as_str() {
            "True" => StepState::Done,
            _ if failed => StepState::Failed,
            _ => StepState::Working,
        };
        out.push(Step {
            name: step_name(&c.type_).into(),
            state,
            message: c.message,
        });
    }
    out
}

/// The outcome of asking for the owner's one-time password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reveal {
    /// Here it is; it will not be shown again.
    Password { username: String, password: String },
    /// It was shown already, at this time.
    AlreadyShown(OffsetDateTime),
    /// The owner account does not exist yet (or the password is not collected yet).
    NotReady,
}

/// Shows the owner's one-time password of an organization's server once, and wipes it;
/// the showing is audited. The caller checks the viewer's role.
pub async fn reveal_owner_password(
    pool: &PgPool,
    key: Option<&SealKey>,
    who: Actor<'_>,
    org: OrgId,
    id: Uuid,
) -> Result<Reveal, FleetError> {
    let mut tx = pool.begin().await?;
    let inst = fleet::lock_instance(&mut tx, id)
        .await?
        .filter(|i| i.org_id == org.0)
        .ok_or(FleetError::NotFound)?;
    if let Some(at) = inst.owner_password_revealed_at {
        return Ok(Reveal::AlreadyShown(at));
    }
    let (Some(sealed), Some(key)) = (fleet::sealed_owner_password(&mut *tx, id).await?, key) else {
        return Ok(Reveal::NotReady);
    };
    let password = key.open(&owner_password_purpose(id), &sealed)?;
    let password = String::from_utf8(password)
        .map_err(|_| FleetError::Invalid("the stored password is not text".into()))?;
    fleet::mark_password_revealed(&mut *tx, id).await?;
    fleet::add_event(
        &mut tx,
        id,
        fleet::EventKind::Action,
        "Owner's one-time password shown",
        Some(who.id.0),
    )
    .await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: Some(org),
            action: "instance.owner_password.revealed",
            target: inst.domain.clone(),
            source_ip: Some(who.ip),
            details: serde_json::json!({ "instance": id, "username": inst.owner_username }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Reveal::Password {
        username: inst.owner_username,
        password,
    })
}
