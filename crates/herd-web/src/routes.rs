//! The route table. Every portal route is added through [`Routes`] with a declared
//! [`Access`] level, which wraps it in the matching middleware; the same table is exported
//! so tests can enumerate every route and check it refuses whom it must. For organization
//! routes the level names the [`Capability`] a role needs: the table of who may do what
//! inside an organization, which [`roles_markdown`] prints for docs/SECURITY.md.

use crate::auth;
use crate::pages;
use crate::state::AppState;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
pub use herd_domain::role::Capability;
use herd_domain::Role;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, logged in or not.
    Public,
    /// Any logged-in user.
    User,
    /// Members of the organization in the `{slug}` path segment whose role has the
    /// capability (others of its members get 403); non-members get 404.
    Org(Capability),
    /// Operators with two-factor authentication.
    Operator,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
}

/// Collects routes with their access levels; [`Routes::into_router`] wraps each in the
/// middleware its level asks for.
pub struct Routes {
    routes: Vec<(RouteInfo, MethodRouter<AppState>)>,
}

impl Routes {
    fn new() -> Self {
        Self { routes: Vec::new() }
    }

    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        access: Access,
        mr: MethodRouter<AppState>,
    ) -> Self {
        self.routes.push((
            RouteInfo {
                method,
                path,
                access,
            },
            mr,
        ));
        self
    }

    pub fn get<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        self.add("GET", path, access, get(handler))
    }

    pub fn post<H, T>(self, path: &'static str, access: Access, handler: H) -> Self
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        self.add("POST", path, access, post(handler))
    }

    pub fn table(&self) -> Vec<RouteInfo> {
        self.routes.iter().map(|(info, _)| info.clone()).collect()
    }

    pub fn into_router(self, state: &AppState) -> Router<AppState> {
        use axum::middleware::from_fn_with_state;
        self.routes
            .into_iter()
            .fold(Router::new(), |router, (info, mr)| {
                let mr = match info.access {
                    Access::Public => mr,
                    Access::User => {
                        mr.route_layer(from_fn_with_state(state.clone(), auth::require_user))
                    }
                    Access::Org(capability) => mr.route_layer(from_fn_with_state(
                        state.clone(),
                        move |ctx: Result<auth::OrgCtx, crate::AppError>,
                              req: axum::extract::Request,
                              next: axum::middleware::Next| {
                            auth::require_org(capability, ctx, req, next)
                        },
                    )),
                    Access::Operator => {
                        mr.route_layer(from_fn_with_state(state.clone(), auth::require_operator))
                    }
                };
                router.route(info.path, mr)
            })
    }
}

/// Every page and form of the portal and the operator console.
pub fn portal() -> Routes {
    let r = Routes::new();
    let r = pages::public::routes(r);
    let r = pages::assets::routes(r);
    let r = pages::auth::routes(r);
    let r = pages::account::routes(r);
    let r = pages::orgs::routes(r);
    let r = pages::members::routes(r);
    let r = pages::invitations::routes(r);
    let r = pages::operator::routes(r);
    let r = pages::billing::routes(r);
    let r = pages::operator_billing::routes(r);
    let r = pages::invoicing::routes(r);
    let r = pages::servers::routes(r);
    let r = pages::exports::routes(r);
    let r = pages::operator_fleet::routes(r);
    let r = pages::operator_restores::routes(r);
    let r = pages::operator_imports::routes(r);
    let r = pages::operator_jobs::routes(r);
    let r = pages::operator_orders::routes(r);
    let r = pages::support::routes(r);
    let r = pages::support_files::routes(r);
    let r = pages::operator_support::routes(r);
    let r = pages::moderation::routes(r);
    pages::plans::routes(r)
}

/// Who may do what inside an organization, as docs/SECURITY.md prints it (a test compares
/// the two): the rule of each [`Capability`], then every organization route of `table`
/// with the capability it needs.
pub fn roles_markdown(table: &[RouteInfo]) -> String {
    let mut out = String::from("| Capability | What it covers |");
    for role in Role::ALL {
        out.push_str(&format!(" {} |", role.label()));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(Role::ALL.len()));
    out.push('\n');
    for capability in Capability::ALL {
        out.push_str(&format!(
            "| {} | {} |",
            capability.as_str(),
            capability.covers()
        ));
        for role in Role::ALL {
            out.push_str(if role.can(capability) {
                " yes |"
            } else {
                " no |"
            });
        }
        out.push('\n');
    }
    out.push_str("\n| Route | Needs |\n|---|---|\n");
    for route in table {
        if let Access::Org(capability) = route.access {
            out.push_str(&format!(
                "| `{} {}` | {} |\n",
                route.method,
                route.path,
                capability.as_str()
            ));
        }
    }
    out
}
