//! The console's "Import a server": a tenant made from an export prepared for import
//! (`herd import prepare`, uploaded under the backup bucket's `imports/<id>/`), with the
//! old install's app secrets, behind a typed confirmation of the domain. The new tenant's
//! page then follows the import as any restore. The secrets are never shown back: a form
//! that comes back with an error asks for them again. The server is billed under an order
//! of the organization chosen from those without a server, or is outside billing.

use crate::auth::Operator;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{render, render_status, Layout};
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_fleet::clusters::Actor;
use herd_fleet::imports::{self, Request, Secrets};
use herd_fleet::FleetError;
use herd_store::billing::OpenOrder;
use herd_store::plans::Plan;
use serde::Deserialize;
use tower_sessions::Session;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get("/operator/imports/new", Operator, import_form).post(
        "/operator/imports",
        Operator,
        import,
    )
}

/// The form's fields. The secrets are read, never rendered back.
#[derive(Default, Deserialize)]
struct ImportForm {
    #[serde(default)]
    org: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    import_id: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    order: String,
    #[serde(default)]
    secret_key_base: String,
    #[serde(default)]
    otp_secret: String,
    #[serde(default)]
    vapid_private_key: String,
    #[serde(default)]
    vapid_public_key: String,
    #[serde(default)]
    ar_primary_key: String,
    #[serde(default)]
    ar_deterministic_key: String,
    #[serde(default)]
    ar_key_derivation_salt: String,
}

impl std::fmt::Debug for ImportForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportForm")
            .field("org", &self.org)
            .field("domain", &self.domain)
            .field("import_id", &self.import_id)
            .finish_non_exhaustive()
    }
}

impl ImportForm {
    fn secrets(&self) -> Secrets {
        Secrets::new([
            (imports::SECRET_KEY_BASE, self.secret_key_base.as_str()),
            (imports::OTP_SECRET, self.otp_secret.as_str()),
            (imports::VAPID_PRIVATE_KEY, self.vapid_private_key.as_str()),
            (imports::VAPID_PUBLIC_KEY, self.vapid_public_key.as_str()),
            (imports::AR_PRIMARY_KEY, self.ar_primary_key.as_str()),
            (
                imports::AR_DETERMINISTIC_KEY,
                self.ar_deterministic_key.as_str(),
            ),
            (
                imports::AR_KEY_DERIVATION_SALT,
                self.ar_key_derivation_salt.as_str(),
            ),
        ])
    }
}

/// The form as the page shows it: no secret, no confirmation.
#[derive(Debug, Default)]
struct Shown {
    org: String,
    plan: String,
    version: String,
    domain: String,
    slug: String,
    import_id: String,
    order: String,
}

/// One secret field.
struct SecretField {
    name: &'static str,
    id: &'static str,
    required: bool,
}

const FIELDS: [SecretField; 7] = [
    SecretField {
        name: imports::SECRET_KEY_BASE,
        id: "secret_key_base",
        required: true,
    },
    SecretField {
        name: imports::OTP_SECRET,
        id: "otp_secret",
        required: true,
    },
    SecretField {
        name: imports::VAPID_PRIVATE_KEY,
        id: "vapid_private_key",
        required: false,
    },
    SecretField {
        name: imports::VAPID_PUBLIC_KEY,
        id: "vapid_public_key",
        required: false,
    },
    SecretField {
        name: imports::AR_PRIMARY_KEY,
        id: "ar_primary_key",
        required: false,
    },
    SecretField {
        name: imports::AR_DETERMINISTIC_KEY,
        id: "ar_deterministic_key",
        required: false,
    },
    SecretField {
        name: imports::AR_KEY_DERIVATION_SALT,
        id: "ar_key_derivation_salt",
        required: false,
    },
];

#[derive(Template)]
#[template(path = "operator_import.html")]
struct ImportPage {
    l: Layout,
    plans: Vec<Plan>,
    /// The orders an import may be billed under.
    orders: Vec<OpenOrder>,
    /// The submitted order is among them (one that is not stays chosen, never silently
    /// replaced by "none").
    order_listed: bool,
    releases: Vec<String>,
    fields: &'static [SecretField],
    form: Shown,
    error: Option<String>,
    /// Secrets were typed before this page came back: ask for them again.
    secrets_cleared: bool,
    bucket: String,
}

async fn page(
    state: &AppState,
    session: &Session,
    op: &herd_store::users::User,
    form: Shown,
    error: Option<String>,
    secrets_cleared: bool,
) -> Result<ImportPage, AppError> {
    let mut releases = herd_store::fleet::release_versions(&state.pool, "mastodon").await?;
    releases.sort();
    let orders = herd_store::billing::open_orders(&state.pool, "mastodon").await?;
    let order_listed = orders.iter().any(|o| o.id.to_string() == form.order);
    Ok(ImportPage {
        l: Layout::new(session, Some(op)).await?,
        plans: herd_store::plans::active(&state.pool).await?,
        orders,
        order_listed,
        releases,
        fields: &FIELDS,
        form,
        error,
        secrets_cleared,
        bucket: imports::location(&state.config.exports, "<id>"),
    })
}

async fn import_form(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
) -> Result<Response, AppError> {
    render(&page(&state, &session, &op, Shown::default(), None, false).await?)
}

async fn import(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Form(form): Form<ImportForm>,
) -> Result<Response, AppError> {
    let secrets = form.secrets();
    let who = Actor {
        id: op.id(),
        email: &op.email,
        ip: &ip,
    };
    let result = imports::import(
        &state.pool,
        &state.config.exports,
        state.config.seal_key.as_ref(),
        who,
        &Request {
            org: &form.org,
            plan: &form.plan,
            app: &form.app,
            version: &form.version,
            domain: &form.domain,
            slug: &form.slug,
            import_id: &form.import_id,
            confirm: &form.confirm,
            secrets: &secrets,
            order: &form.order,
        },
    )
    .await;
    match result {
        Ok(done) => {
            session::flash(
                &session,
                "ok",
                "Import requested: the new tenant is placed, gets the app secrets, then restores the import. Its progress shows below.",
            )
            .await?;
            Ok(Redirect::to(&format!("/operator/instances/{}", done.instance)).into_response())
        }
        Err(FleetError::Invalid(m) | FleetError::Conflict(m)) => {
            let shown = Shown {
                org: form.org,
                plan: form.plan,
                version: form.version,
                domain: form.domain,
                slug: form.slug,
                import_id: form.import_id,
                order: form.order,
            };
            let cleared = !secrets.names().is_empty();
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &page(&state, &session, &op, shown, Some(m), cleared).await?,
            )
        }
        Err(e) => Err(e.into()),
    }
}
