//! The releases the provider offers: operators list a version once they have tested it;
//! new servers start on the newest, running servers are offered the next step the upgrade
//! rule allows.

use crate::clusters::Actor;
use crate::FleetError;
use herd_domain::version::{self, App};
use herd_store::audit::{self, NewEntry};
use herd_store::fleet::{self, Release};
use sqlx::PgPool;

/// Every listed release.
pub async fn list(pool: &PgPool) -> Result<Vec<Release>, FleetError> {
    Ok(fleet::releases(pool).await?)
}

/// Why a release was not listed: the form field at fault and what to fix.
#[derive(Debug)]
pub enum AddError {
    Refused {
        field: &'static str,
        message: String,
    },
    Fleet(FleetError),
}

impl<E: Into<FleetError>> From<E> for AddError {
    fn from(e: E) -> Self {
        AddError::Fleet(e.into())
    }
}

fn refused(field: &'static str, message: impl Into<String>) -> AddError {
    AddError::Refused {
        field,
        message: message.into(),
    }
}

/// Lists a release of `app` (an operator, audited). The tag must be the app's image tag
/// form; a release listed already is refused.
pub async fn add(
    pool: &PgPool,
    who: Actor<'_>,
    app: &str,
    tag: &str,
    note: &str,
) -> Result<(), AddError> {
    let app = App::parse(app).ok_or_else(|| refused("app", "Choose an app."))?;
    let tag = tag.trim();
    version::check_release_tag(app, tag).map_err(|m| refused("version", m))?;
    let note = note.trim();
    if note.chars().count() > 500 {
        return Err(refused("note", "Keep the note under 500 characters."));
    }
    let mut tx = pool.begin().await?;
    match fleet::add_release(&mut tx, app.as_str(), tag, note, who.id).await {
        Ok(()) => {}
        Err(e) if e.is_conflict_on(fleet::RELEASE_LISTED) => {
            return Err(refused(
                "version",
                format!("{} {tag} is listed already.", app.label()),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: None,
            action: "release.added",
            target: format!("{app} {tag}"),
            source_ip: Some(who.ip),
            details: serde_json::json!({ "note": note }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
