//! The "manages operators" standing in the console: an operator who manages operators lets
//! another operator manage operators (give and take the moderator role, and this standing),
//! or stops them, after a confirmation step. Never from the last one who has it (the rule
//! lives in herd-moderation, which `herd admin set-operator` calls too); audited with who
//! and whom. The operators and their standing are listed in Moderation → Moderators and
//! plans.

use super::app_error;
use super::console::settings_answer;
use crate::auth::Operator;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::state::AppState;
use crate::views::{render, ConfirmPage, Layout};
use axum::extract::{Path, State};
use axum::response::Response;
use herd_domain::UserId;
use herd_moderation::{moderators, Who};
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    let path = "/operator/operators/{user}/manages-operators/{change}";
    r.get(path, Operator, confirm).post(path, Operator, change)
}

/// `grant` or `remove` in the path: the standing wanted.
fn wanted(change: &str) -> Result<bool, AppError> {
    match change {
        "grant" => Ok(true),
        "remove" => Ok(false),
        _ => Err(AppError::NotFound),
    }
}

async fn confirm(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path((user, change)): Path<(Uuid, String)>,
) -> Result<Response, AppError> {
    let manages = wanted(&change)?;
    let target = moderators::operator_to_manage(&state.pool, op.id(), user)
        .await
        .map_err(app_error)?;
    let (title, message, button) = if manages {
        (
            format!("Let {} manage operators?", target.name),
            format!(
                "{} ({}) will give and take operators' moderator role, and let other operators manage operators or stop them.",
                target.name, target.email
            ),
            format!("Let {} manage operators", target.name),
        )
    } else {
        (
            format!("Stop {} managing operators?", target.name),
            format!(
                "{} ({}) will no longer give or take operators' moderator role, nor this standing. Their own roles stay as they are.",
                target.name, target.email
            ),
            format!("Stop {} managing operators", target.name),
        )
    };
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&op)).await?,
        title,
        message,
        action: format!("/operator/operators/{user}/manages-operators/{change}"),
        button,
        cancel: "/operator/moderation/settings#moderators".to_owned(),
    })
}

async fn change(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path((user, change)): Path<(Uuid, String)>,
) -> Result<Response, AppError> {
    let manages = wanted(&change)?;
    let who = Who {
        id: op.id(),
        name: &op.display_name,
        email: &op.email,
        ip: &ip,
    };
    let result =
        moderators::set_manages_operators(&state.pool, Some(who), UserId(user), manages).await;
    let done = match (&result, manages) {
        (Ok(false), _) => "Nothing changed: the operator's standing was already so.",
        (_, true) => "The operator manages operators now.",
        (_, false) => "The operator no longer manages operators.",
    };
    settings_answer(&state, &session, &op, result.map(drop), done, String::new()).await
}
