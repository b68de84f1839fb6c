//! The operator's plan editor: every plan (on sale or retired), and a form per plan. Each
//! change is written to the audit log with the values before and after.

use super::public::PlanView;
use super::FieldErrors;
use crate::audit::{self, Actor};
use crate::auth::Operator;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{render, render_status, Layout};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::{BillingInterval, ComputeSize, Money, PlanLimits};
use herd_store::plans::{self, Plan, PlanUpdate};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tower_sessions::Session;

pub fn routes(r: Routes) -> Routes {
    use Access::Operator;
    r.get("/operator/plans", Operator, list)
        .get("/operator/plans/new", Operator, new_form)
        .post("/operator/plans", Operator, create)
        .get("/operator/plans/{code}/edit", Operator, edit_form)
        .post("/operator/plans/{code}", Operator, update)
}

#[derive(Template)]
#[template(path = "operator_plans.html")]
struct PlansPage {
    l: Layout,
    plans: Vec<(PlanView, bool)>,
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
) -> Result<Response, AppError> {
    let plans = plans::all(&state.pool).await?;
    render(&PlansPage {
        l: Layout::new(&session, Some(&op)).await?,
        plans: plans
            .into_iter()
            .map(|p| {
                let active = p.active;
                (PlanView::from(p), active)
            })
            .collect(),
    })
}

/// The form as typed; checkboxes are absent when unticked.
#[derive(Debug, Default, Deserialize)]
struct PlanForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    interval: String,
    #[serde(default)]
    max_active_users: String,
    #[serde(default)]
    media_storage_gb: String,
    custom_domain: Option<String>,
    #[serde(default)]
    support_response_hours: String,
    #[serde(default)]
    moderation_hours_per_month: String,
    #[serde(default)]
    compute: String,
    active: Option<String>,
    #[serde(default)]
    stripe_price: String,
}

impl PlanForm {
    fn from_plan(p: &Plan) -> Self {
        Self {
            name: p.name.clone(),
            description: p.description.clone(),
            price: p.price().major(),
            currency: p.currency.clone(),
            interval: p.billing_interval.clone(),
            max_active_users: p.max_active_users.to_string(),
            media_storage_gb: p.media_storage_gb.to_string(),
            custom_domain: p.custom_domain.then(|| "on".into()),
            support_response_hours: p.support_response_hours.to_string(),
            moderation_hours_per_month: p.moderation_hours_per_month.to_string(),
            compute: p.compute_size.clone(),
            active: p.active.then(|| "on".into()),
            stripe_price: p.provider_price_id.clone().unwrap_or_default(),
        }
    }

    fn validate(&self) -> Result<PlanUpdate, FieldErrors> {
        let mut errors = FieldErrors::default();
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 60 {
            errors.add("name", "Enter a name of at most 60 characters.");
        }
        if self.description.chars().count() > 500 {
            errors.add("description", "At most 500 characters.");
        }
        let price = Money::parse(&self.price, &self.currency)
            .map_err(|e| errors.add("price", e))
            .ok();
        let interval = BillingInterval::parse(&self.interval);
        if interval.is_none() {
            errors.add("interval", "Choose month or year.");
        }
        let compute = ComputeSize::parse(&self.compute);
        if compute.is_none() {
            errors.add("compute", "Choose small, medium or large.");
        }
        let mut number =
            |field: &'static str, value: &str, min: i32| match value.trim().parse::<i32>() {
                Ok(n) if n >= min => n,
                _ => {
                    errors.add(field, format!("Enter a whole number of at least {min}."));
                    0
                }
            };
        let limits = PlanLimits {
            max_active_users: number("max_active_users", &self.max_active_users, 1),
            media_storage_gb: number("media_storage_gb", &self.media_storage_gb, 1),
            custom_domain: self.custom_domain.is_some(),
            support_response_hours: number(
                "support_response_hours",
                &self.support_response_hours,
                1,
            ),
            moderation_hours_per_month: number(
                "moderation_hours_per_month",
                &self.moderation_hours_per_month,
                0,
            ),
            compute: compute.unwrap_or(ComputeSize::Small),
        };
        let stripe_price = self.stripe_price.trim();
        let ok_price = stripe_price.is_empty()
            || (stripe_price.starts_with("price_")
                && stripe_price.len() <= 255
                && stripe_price[6..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if !ok_price {
            errors.add(
                "stripe_price",
                "A Stripe price id looks like price_1PgafmB7WZ01zgkW6dKueIc5; leave empty to sell this plan by invoice only.",
            );
        }
        match (price, interval, errors.is_empty()) {
            (Some(price), Some(interval), true) => Ok(PlanUpdate {
                name,
                description: self.description.trim().to_owned(),
                price,
                interval,
                limits,
                active: self.active.is_some(),
                provider_price_id: (!stripe_price.is_empty()).then(|| stripe_price.to_owned()),
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Template)]
#[template(path = "operator_plan_edit.html")]
struct EditPage {
    l: Layout,
    code: String,
    form: PlanForm,
    errors: FieldErrors,
    /// A new plan: its code is typed in the form.
    is_new: bool,
}

async fn edit_form(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(code): Path<String>,
) -> Result<Response, AppError> {
    let plan = plans::by_code(&state.pool, &code)
        .await?
        .ok_or(AppError::NotFound)?;
    render(&EditPage {
        l: Layout::new(&session, Some(&op)).await?,
        form: PlanForm::from_plan(&plan),
        code,
        errors: FieldErrors::default(),
        is_new: false,
    })
}

/// The fields that changed, as `{field: [before, after]}`.
fn changes(before: &Plan, after: &Plan) -> Value {
    let fields = |p: &Plan| -> Vec<(&'static str, Value)> {
        vec![
            ("name", json!(p.name)),
            ("description", json!(p.description)),
            ("price_minor", json!(p.price_minor)),
            ("currency", json!(p.currency)),
            ("billing_interval", json!(p.billing_interval)),
            ("max_active_users", json!(p.max_active_users)),
            ("media_storage_gb", json!(p.media_storage_gb)),
            ("custom_domain", json!(p.custom_domain)),
            ("support_response_hours", json!(p.support_response_hours)),
            (
                "moderation_hours_per_month",
                json!(p.moderation_hours_per_month),
            ),
            ("compute_size", json!(p.compute_size)),
            ("active", json!(p.active)),
            ("provider_price_id", json!(p.provider_price_id)),
        ]
    };
    let mut out = Map::new();
    for ((field, b), (_, a)) in fields(before).into_iter().zip(fields(after)) {
        if a != b {
            out.insert(field.to_owned(), json!([b, a]));
        }
    }
    Value::Object(out)
}

async fn update(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(code): Path<String>,
    Form(form): Form<PlanForm>,
) -> Result<Response, AppError> {
    let update = match form.validate() {
        Ok(u) => u,
        Err(errors) => {
            return render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &EditPage {
                    l: Layout::new(&session, Some(&op)).await?,
                    code,
                    form,
                    errors,
                    is_new: false,
                },
            );
        }
    };
    let mut tx = state.pool.begin().await?;
    let (before, after) = plans::update(&mut tx, &code, &update)
        .await?
        .ok_or(AppError::NotFound)?;
    let changed = changes(&before, &after);
    audit::record(
        &mut tx,
        Actor {
            user: Some(&op),
            ip: &ip,
        },
        None,
        "plan.updated",
        code.clone(),
        json!({ "changes": changed }),
    )
    .await?;
    tx.commit().await?;
    session::flash(&session, "ok", format!("Plan {} saved.", after.name)).await?;
    Ok(Redirect::to("/operator/plans").into_response())
}

async fn new_form(session: Session, Operator(op): Operator) -> Result<Response, AppError> {
    render(&EditPage {
        l: Layout::new(&session, Some(&op)).await?,
        code: String::new(),
        form: PlanForm {
            currency: "EUR".into(),
            interval: "month".into(),
            compute: "small".into(),
            ..PlanForm::default()
        },
        errors: FieldErrors::default(),
        is_new: true,
    })
}

#[derive(Debug, Default, Deserialize)]
struct NewPlanForm {
    #[serde(default)]
    code: String,
    #[serde(flatten)]
    plan: PlanForm,
}

/// A plan code: lower-case letters, digits and hyphens, starting with a letter.
fn valid_code(code: &str) -> bool {
    (2..=30).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

async fn create(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Form(form): Form<NewPlanForm>,
) -> Result<Response, AppError> {
    let code = form.code.trim().to_owned();
    let validated = form.plan.validate();
    let mut errors = validated.as_ref().err().cloned().unwrap_or_default();
    if !valid_code(&code) {
        errors.add(
            "code",
            "Choose a code of 2 to 30 lower-case letters, digits and hyphens, starting with a letter.",
        );
    }
    let rerender = |errors| async {
        render_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            &EditPage {
                l: Layout::new(&session, Some(&op)).await?,
                code: code.clone(),
                form: form.plan,
                errors,
                is_new: true,
            },
        )
    };
    let (Ok(plan), true) = (validated, errors.is_empty()) else {
        return rerender(errors).await;
    };
    let mut tx = state.pool.begin().await?;
    let created = match plans::create(&mut tx, &code, &plan).await {
        Ok(p) => p,
        Err(e) if e.is_conflict_on("plans_code_key") => {
            drop(tx);
            let mut errors = FieldErrors::default();
            errors.add("code", "A plan has this code already.");
            return rerender(errors).await;
        }
        Err(e) => return Err(e.into()),
    };
    audit::record(
        &mut tx,
        Actor {
            user: Some(&op),
            ip: &ip,
        },
        None,
        "plan.created",
        code.clone(),
        json!({ "name": created.name, "price_minor": created.price_minor, "currency": created.currency }),
    )
    .await?;
    tx.commit().await?;
    session::flash(&session, "ok", format!("Plan {} created.", created.name)).await?;
    Ok(Redirect::to("/operator/plans").into_response())
}
