//! Pages anyone can see: the home page and the pricing page.

use crate::auth::MaybeUser;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::state::AppState;
use crate::views::{render, Layout};
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use tower_sessions::Session;

pub fn routes(r: Routes) -> Routes {
    r.get("/", Access::Public, home)
        .get("/pricing", Access::Public, pricing)
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    l: Layout,
}

async fn home(session: Session, MaybeUser(user): MaybeUser) -> Result<Response, AppError> {
    render(&HomePage {
        l: Layout::new(&session, user.as_ref()).await?,
    })
}

/// A plan as the pricing page shows it.
pub struct PlanView {
    pub code: String,
    pub name: String,
    pub description: String,
    pub price: String,
    pub interval: &'static str,
    pub max_active_users: i32,
    pub media_storage_gb: i32,
    pub custom_domain: bool,
    pub support_response_hours: i32,
    pub moderation_hours_per_month: i32,
    pub compute: &'static str,
}

impl From<herd_store::plans::Plan> for PlanView {
    fn from(p: herd_store::plans::Plan) -> Self {
        let limits = p.limits();
        Self {
            price: p.price().to_string(),
            interval: p.interval().as_str(),
            compute: limits.compute.as_str(),
            code: p.code,
            name: p.name,
            description: p.description,
            max_active_users: limits.max_active_users,
            media_storage_gb: limits.media_storage_gb,
            custom_domain: limits.custom_domain,
            support_response_hours: limits.support_response_hours,
            moderation_hours_per_month: limits.moderation_hours_per_month,
        }
    }
}

#[derive(Template)]
#[template(path = "pricing.html")]
struct PricingPage {
    l: Layout,
    plans: Vec<PlanView>,
}

async fn pricing(
    State(state): State<AppState>,
    session: Session,
    MaybeUser(user): MaybeUser,
) -> Result<Response, AppError> {
    let plans = herd_store::plans::active(&state.pool).await?;
    render(&PricingPage {
        l: Layout::new(&session, user.as_ref()).await?,
        plans: plans.into_iter().map(PlanView::from).collect(),
    })
}
