//! Members of an organization: the list, invitations, role changes and removals.

use super::FieldErrors;
use crate::audit::{self, Actor};
use crate::auth::OrgCtx;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Capability, Routes};
use crate::state::AppState;
use crate::views::{datetime, render, render_status, ConfirmPage, Layout};
use crate::{crypto, emails, session};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::role::{check_change, check_invite};
use herd_domain::{Email, InvitationId, Role, UserId};
use herd_store::invitations::{self, Invitation};
use herd_store::orgs::{self, Member};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    use Access::Org;
    use Capability::{ManageMembers, View};
    r.get("/o/{slug}/members", Org(View), list)
        .post("/o/{slug}/invitations", Org(ManageMembers), invite)
        .post(
            "/o/{slug}/invitations/{id}/revoke",
            Org(ManageMembers),
            revoke,
        )
        .post(
            "/o/{slug}/members/{user_id}/role",
            Org(ManageMembers),
            change_role,
        )
        .get(
            "/o/{slug}/members/{user_id}/remove",
            Org(ManageMembers),
            remove_confirm,
        )
        .post(
            "/o/{slug}/members/{user_id}/remove",
            Org(ManageMembers),
            remove,
        )
}

pub struct InvitationView {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub expires: String,
    pub expired: bool,
}

#[derive(Debug, Default, Deserialize)]
struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

#[derive(Template)]
#[template(path = "members.html")]
struct MembersPage {
    l: Layout,
    ctx: OrgCtx,
    members: Vec<Member>,
    invitations: Vec<InvitationView>,
    can_manage: bool,
    roles: [Role; 4],
    /// What each role may do, in words.
    roles_summary: String,
    form: InviteForm,
    errors: FieldErrors,
}

async fn page(
    state: &AppState,
    session: &Session,
    ctx: OrgCtx,
    form: InviteForm,
    errors: FieldErrors,
) -> Result<Response, AppError> {
    let members = orgs::members(&state.pool, ctx.org.id()).await?;
    let now = OffsetDateTime::now_utc();
    let invitations = if ctx.role.can(Capability::ManageMembers) {
        invitations::pending(&state.pool, ctx.org.id())
            .await?
            .into_iter()
            .map(|i: Invitation| InvitationView {
                id: i.id,
                role: i.role(),
                expires: datetime(i.expires_at),
                expired: i.expires_at <= now,
                email: i.email,
            })
            .collect()
    } else {
        Vec::new()
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    render_status(
        status,
        &MembersPage {
            l: Layout::new(session, Some(&ctx.user)).await?,
            can_manage: ctx.role.can(Capability::ManageMembers),
            ctx,
            members,
            invitations,
            roles: Role::ALL,
            roles_summary: herd_domain::role::roles_summary(),
            form,
            errors,
        },
    )
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
) -> Result<Response, AppError> {
    page(
        &state,
        &session,
        ctx,
        InviteForm {
            role: "member".into(),
            ..Default::default()
        },
        FieldErrors::default(),
    )
    .await
}

fn back(ctx: &OrgCtx) -> Response {
    Redirect::to(&format!("/o/{}/members", ctx.org.slug)).into_response()
}

async fn invite(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Form(form): Form<InviteForm>,
) -> Result<Response, AppError> {
    let mut errors = FieldErrors::default();
    let email = Email::parse(&form.email)
        .map_err(|e| errors.add("email", e))
        .ok();
    let role = match Role::parse(&form.role) {
        Ok(r) => match check_invite(ctx.role, r) {
            Ok(()) => Some(r),
            Err(e) => {
                errors.add("role", e);
                None
            }
        },
        Err(e) => {
            errors.add("role", e);
            None
        }
    };
    let (Some(email), Some(role), true) = (email, role, errors.is_empty()) else {
        return page(&state, &session, ctx, form, errors).await;
    };
    let members = orgs::members(&state.pool, ctx.org.id()).await?;
    if members.iter().any(|m| m.email == email.as_str()) {
        errors.add("email", "This person is already a member.");
        return page(&state, &session, ctx, form, errors).await;
    }
    // A placeholder token no one knows: the email job gives the invitation the token its
    // link carries when it sends it.
    let token = crypto::random_token();
    let expires = OffsetDateTime::now_utc() + state.config.invitation_ttl;
    let mut tx = state.pool.begin().await?;
    invitations::revoke_expired_for(&mut tx, ctx.org.id(), &email).await?;
    match invitations::create(
        &mut tx,
        ctx.org.id(),
        &email,
        role,
        &crypto::token_hash(&token),
        ctx.user.id(),
        expires,
    )
    .await
    {
        Ok(id) => emails::queue_invitation(&mut tx, &state, id).await?,
        Err(e) if e.is_conflict_on(invitations::ALREADY_INVITED) => {
            drop(tx);
            errors.add(
                "email",
                "This address already has an open invitation. Revoke it first to send a new one.",
            );
            return page(&state, &session, ctx, form, errors).await;
        }
        Err(e) => return Err(e.into()),
    }
    audit::record(
        &mut tx,
        Actor {
            user: Some(&ctx.user),
            ip: &ip,
        },
        Some(ctx.org.id()),
        "org.member.invited",
        email.to_string(),
        json!({ "role": role.as_str() }),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &session,
        "ok",
        format!("An invitation is on its way to {email}."),
    )
    .await?;
    Ok(back(&ctx))
}

async fn revoke(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    let email = invitations::revoke(&mut tx, ctx.org.id(), InvitationId(id))
        .await?
        .ok_or(AppError::NotFound)?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(&ctx.user),
            ip: &ip,
        },
        Some(ctx.org.id()),
        "org.invitation.revoked",
        email.clone(),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &session,
        "ok",
        format!("The invitation for {email} was revoked."),
    )
    .await?;
    Ok(back(&ctx))
}

#[derive(Debug, Deserialize)]
struct RoleForm {
    #[serde(default)]
    role: String,
}

/// Applies a role change (`Some`) or removal (`None`) under the organization's lock.
async fn change(
    state: &AppState,
    session: &Session,
    ip: &str,
    ctx: &OrgCtx,
    target: UserId,
    to: Option<Role>,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    let (from, owners) = orgs::lock_for_change(&mut tx, ctx.org.id(), target).await?;
    let from = from.ok_or(AppError::NotFound)?;
    let acting_on_self = target == ctx.user.id();
    if let Err(e) = check_change(ctx.role, acting_on_self, from, to, owners) {
        drop(tx);
        session::flash(session, "error", e.to_string()).await?;
        return Ok(back(ctx));
    }
    let target_email = orgs::members(&mut *tx, ctx.org.id())
        .await?
        .into_iter()
        .find(|m| m.user_id == target.0)
        .map(|m| m.email)
        .unwrap_or_default();
    let actor = Actor {
        user: Some(&ctx.user),
        ip,
    };
    let message = match to {
        Some(to) => {
            orgs::set_role(&mut tx, ctx.org.id(), target, to).await?;
            audit::record(
                &mut tx,
                actor,
                Some(ctx.org.id()),
                "org.member.role_changed",
                target_email.clone(),
                json!({ "from": from.as_str(), "to": to.as_str() }),
            )
            .await?;
            format!("{target_email} is now {}.", to.label())
        }
        None => {
            orgs::remove_member(&mut tx, ctx.org.id(), target).await?;
            audit::record(
                &mut tx,
                actor,
                Some(ctx.org.id()),
                "org.member.removed",
                target_email.clone(),
                json!({ "role": from.as_str() }),
            )
            .await?;
            format!("{target_email} was removed from {}.", ctx.org.name)
        }
    };
    tx.commit().await?;
    session::flash(session, "ok", message).await?;
    if acting_on_self && to.is_none() {
        return Ok(Redirect::to("/orgs").into_response());
    }
    Ok(back(ctx))
}

async fn change_role(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, user_id)): Path<(String, Uuid)>,
    Form(form): Form<RoleForm>,
) -> Result<Response, AppError> {
    let Ok(role) = Role::parse(&form.role) else {
        session::flash(&session, "error", "Choose one of the listed roles.").await?;
        return Ok(back(&ctx));
    };
    change(&state, &session, &ip, &ctx, UserId(user_id), Some(role)).await
}

async fn remove_confirm(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, user_id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let member = orgs::members(&state.pool, ctx.org.id())
        .await?
        .into_iter()
        .find(|m| m.user_id == user_id)
        .ok_or(AppError::NotFound)?;
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        title: format!("Remove {}?", member.display_name),
        message: format!(
            "{} ({}) will lose access to {} at once.",
            member.display_name, member.email, ctx.org.name
        ),
        action: format!("/o/{}/members/{}/remove", ctx.org.slug, user_id),
        button: "Remove member".into(),
        cancel: format!("/o/{}/members", ctx.org.slug),
    })
}

async fn remove(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, user_id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    change(&state, &session, &ip, &ctx, UserId(user_id), None).await
}
