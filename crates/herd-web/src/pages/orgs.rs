//! The user's organizations: the list, creating one, the dashboard, leaving.

use super::auth::create_org_unique_slug;
use super::FieldErrors;
use crate::audit::{self, Actor};
use crate::auth::{CurrentUser, OrgCtx};
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Capability, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{render, render_status, ConfirmPage, Layout};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::role::check_change;
use herd_domain::Slug;
use herd_store::orgs::{self, OrgMembership};
use serde::Deserialize;
use serde_json::json;
use tower_sessions::Session;

pub fn routes(r: Routes) -> Routes {
    use Capability::View;
    r.get("/orgs", Access::User, list)
        .get("/orgs/new", Access::User, new_form)
        .post("/orgs", Access::User, create)
        .get("/o/{slug}", Access::Org(View), dashboard)
        .get("/o/{slug}/leave", Access::Org(View), leave_confirm)
        .post("/o/{slug}/leave", Access::Org(View), leave)
}

#[derive(Template)]
#[template(path = "orgs.html")]
struct OrgsPage {
    l: Layout,
    orgs: Vec<OrgMembership>,
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    CurrentUser(user): CurrentUser,
) -> Result<Response, AppError> {
    let orgs = orgs::for_user(&state.pool, user.id()).await?;
    render(&OrgsPage {
        l: Layout::new(&session, Some(&user)).await?,
        orgs,
    })
}

#[derive(Debug, Default, Deserialize)]
struct NewOrgForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    slug: String,
}

#[derive(Template)]
#[template(path = "org_new.html")]
struct NewOrgPage {
    l: Layout,
    form: NewOrgForm,
    errors: FieldErrors,
}

async fn new_form(session: Session, CurrentUser(user): CurrentUser) -> Result<Response, AppError> {
    render(&NewOrgPage {
        l: Layout::new(&session, Some(&user)).await?,
        form: NewOrgForm::default(),
        errors: FieldErrors::default(),
    })
}

async fn create(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    CurrentUser(user): CurrentUser,
    Form(form): Form<NewOrgForm>,
) -> Result<Response, AppError> {
    let mut errors = FieldErrors::default();
    let name = form.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 {
        errors.add(
            "name",
            "Enter the organization's name (at most 100 characters).",
        );
    }
    // An explicit short name must be free; a suggested one gets a number when taken.
    let explicit = !form.slug.trim().is_empty();
    let slug = if explicit {
        Slug::parse(&form.slug)
            .map_err(|e| errors.add("slug", e))
            .ok()
    } else {
        Slug::suggest(&name).or_else(|| {
            if errors.get("name").is_none() {
                errors.add(
                    "slug",
                    "Choose a short name: lower-case letters, digits and hyphens.",
                );
            }
            None
        })
    };
    let rerender = |errors| async {
        render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &NewOrgPage {
                l: Layout::new(&session, Some(&user)).await?,
                form,
                errors,
            },
        )
    };
    let (Some(slug), true) = (slug, errors.is_empty()) else {
        return rerender(errors).await;
    };
    let mut tx = state.pool.begin().await?;
    let org = if explicit {
        match orgs::create(&mut tx, &slug, &name, user.id()).await {
            Ok(org) => org,
            Err(e) if e.is_conflict_on(orgs::SLUG_TAKEN) => {
                drop(tx);
                errors.add("slug", "This short name is taken; choose another.");
                return rerender(errors).await;
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        create_org_unique_slug(&mut tx, &slug, &name, &user).await?
    };
    audit::record(
        &mut tx,
        Actor {
            user: Some(&user),
            ip: &ip,
        },
        Some(org.id()),
        "org.created",
        org.slug.clone(),
        json!({ "name": org.name }),
    )
    .await?;
    tx.commit().await?;
    session::flash(
        &session,
        "ok",
        format!("{} was created. You are its owner.", org.name),
    )
    .await?;
    Ok(Redirect::to(&format!("/o/{}", org.slug)).into_response())
}

#[derive(Template)]
#[template(path = "org_dashboard.html")]
struct DashboardPage {
    l: Layout,
    ctx: OrgCtx,
    member_count: usize,
    can_manage: bool,
    can_bill: bool,
    /// Who orders servers and manages billing, for those who do not.
    billing_rule: String,
}

async fn dashboard(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
) -> Result<Response, AppError> {
    let members = orgs::members(&state.pool, ctx.org.id()).await?;
    render(&DashboardPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        member_count: members.len(),
        can_manage: ctx.role.can(Capability::ManageMembers),
        can_bill: ctx.role.can(Capability::ManageBilling),
        billing_rule: Capability::ManageBilling.rule(),
        ctx,
    })
}

async fn leave_confirm(session: Session, ctx: OrgCtx) -> Result<Response, AppError> {
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        title: format!("Leave {}?", ctx.org.name),
        message: "You will lose access to this organization until someone invites you again."
            .into(),
        action: format!("/o/{}/leave", ctx.org.slug),
        button: "Leave organization".into(),
        cancel: format!("/o/{}", ctx.org.slug),
    })
}

async fn leave(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    let (role, owners) = orgs::lock_for_change(&mut tx, ctx.org.id(), ctx.user.id()).await?;
    let role = role.ok_or(AppError::NotFound)?;
    if let Err(e) = check_change(role, true, role, None, owners) {
        drop(tx);
        session::flash(&session, "error", e.to_string()).await?;
        return Ok(Redirect::to(&format!("/o/{}", ctx.org.slug)).into_response());
    }
    orgs::remove_member(&mut tx, ctx.org.id(), ctx.user.id()).await?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(&ctx.user),
            ip: &ip,
        },
        Some(ctx.org.id()),
        "org.member.left",
        ctx.user.email.clone(),
        json!({ "role": role.as_str() }),
    )
    .await?;
    tx.commit().await?;
    session::flash(&session, "ok", format!("You left {}.", ctx.org.name)).await?;
    Ok(Redirect::to("/orgs").into_response())
}
