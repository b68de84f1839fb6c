//! Invoice billing pages. Operators put an organization on invoice billing with a contract
//! (plan, negotiated price, period, payment terms, purchase order, billing address, country
//! and VAT id), list invoices (overdue ones on their own) and record payments; customers
//! read and print their invoices, which show only what was frozen on them at issue. Every
//! operator action is audited.

use super::FieldErrors;
use crate::audit::{self, Actor};
use crate::auth::{Operator, OrgCtx};
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Capability, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{render, render_status, Layout, Pager};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::invoice::Period;
use herd_domain::vat::{self, Country, VatId};
use herd_domain::{Money, OrgId};
use herd_store::invoicing::{self, Contract, Invoice, Terms};
use herd_store::orgs::{self, Org};
use herd_store::plans::{self, Plan};
use herd_store::Page;
use serde::Deserialize;
use serde_json::json;
use time::{Date, OffsetDateTime};
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    r.get(
        "/operator/orgs/{slug}/contract",
        Access::Operator,
        contract_form,
    )
    .post(
        "/operator/orgs/{slug}/contract",
        Access::Operator,
        contract_save,
    )
    .get("/operator/invoices", Access::Operator, invoice_list)
    .get(
        "/operator/invoices/{invoice}",
        Access::Operator,
        operator_invoice,
    )
    .post(
        "/operator/invoices/{invoice}/payment",
        Access::Operator,
        record_payment,
    )
    .get(
        "/o/{slug}/invoices/{invoice}",
        Access::Org(Capability::ManageBilling),
        customer_invoice,
    )
}

const DATE: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s.trim(), DATE).ok()
}

#[derive(Debug, Default, Deserialize)]
struct ContractForm {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    period: String,
    #[serde(default)]
    terms_days: String,
    #[serde(default)]
    po_reference: String,
    #[serde(default)]
    billing_address: String,
    #[serde(default)]
    vat_id: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    starts_on: String,
    #[serde(default)]
    ends_on: String,
}

impl ContractForm {
    fn from_contract(c: &Contract) -> Self {
        Self {
            plan: c.plan_code.clone(),
            price: Money {
                minor: c.price_minor,
                currency: c.currency.clone(),
            }
            .major(),
            currency: c.currency.clone(),
            period: c.period.clone(),
            terms_days: c.payment_terms_days.to_string(),
            po_reference: c.po_reference.clone(),
            billing_address: c.billing_address.clone(),
            vat_id: c.vat_id.clone(),
            country: c.country.clone(),
            starts_on: c.starts_on.to_string(),
            ends_on: c.ends_on.map(|d| d.to_string()).unwrap_or_default(),
        }
    }

    /// The contract's terms, or what is wrong with them. With the issuer's country set
    /// (VAT is computed), the customer's country is required; a VAT id is checked against
    /// the country (an EU VAT id's format and prefix, EL for Greece).
    fn validate(
        &self,
        plans: &[Plan],
        issuer_country: Option<Country>,
    ) -> Result<Terms, FieldErrors> {
        let mut errors = FieldErrors::default();
        if !plans.iter().any(|p| p.code == self.plan) {
            errors.add("plan", "Choose one of the plans.");
        }
        let price = Money::parse(&self.price, &self.currency)
            .map_err(|e| errors.add("price", e))
            .ok();
        let period = Period::parse(&self.period);
        if period.is_none() {
            errors.add("period", "Choose month, quarter or year.");
        }
        let terms_days = match self.terms_days.trim().parse::<i32>() {
            Ok(n) if (0..=120).contains(&n) => n,
            _ => {
                errors.add("terms_days", "Enter a number of days from 0 to 120.");
                0
            }
        };
        let address = self.billing_address.trim().to_owned();
        if address.is_empty() || address.chars().count() > 1000 {
            errors.add(
                "billing_address",
                "Enter the billing address (at most 1000 characters).",
            );
        }
        if self.po_reference.chars().count() > 100 {
            errors.add(
                "po_reference",
                "Keep the purchase order under 100 characters.",
            );
        }
        let country_given = !self.country.trim().is_empty();
        let country = Country::parse(&self.country)
            .map_err(|e| {
                if country_given {
                    errors.add("country", e);
                }
            })
            .ok();
        let vat_id = self.vat_id.trim();
        if !country_given && (issuer_country.is_some() || !vat_id.is_empty()) {
            errors.add(
                "country",
                "Enter the customer's country, such as FR or DE: the VAT on its invoices and the format of its VAT id depend on it.",
            );
        }
        let vat_id = match country {
            Some(c) if !vat_id.is_empty() => VatId::parse(vat_id, c)
                .map_err(|e| errors.add("vat_id", e))
                .map(|v| v.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let starts_on = parse_date(&self.starts_on);
        if starts_on.is_none() {
            errors.add("starts_on", "Enter a date like 2026-12-01.");
        }
        let ends_on = if self.ends_on.trim().is_empty() {
            None
        } else {
            match (parse_date(&self.ends_on), starts_on) {
                (Some(e), Some(s)) if e > s => Some(e),
                _ => {
                    errors.add("ends_on", "Leave empty, or enter a date after the start.");
                    None
                }
            }
        };
        match (price, period, starts_on, errors.is_empty()) {
            (Some(price), Some(period), Some(starts_on), true) => Ok(Terms {
                plan_code: self.plan.clone(),
                price_minor: price.minor,
                currency: price.currency,
                period,
                payment_terms_days: terms_days,
                po_reference: self.po_reference.trim().to_owned(),
                billing_address: address,
                vat_id,
                country,
                starts_on,
                ends_on,
            }),
            _ => Err(errors),
        }
    }
}

#[derive(Template)]
#[template(path = "operator_contract.html")]
struct ContractPage {
    l: Layout,
    org: Org,
    plans: Vec<Plan>,
    form: ContractForm,
    errors: FieldErrors,
    existing: bool,
    /// Why VAT is not computed on this contract's invoices, when it is not.
    vat_notice: Option<String>,
}

/// Why the invoices of a contract will carry no VAT although they should: the issuer's
/// country is not set, or not in the EU; or why they are held (see `vat::held`).
fn vat_notice(
    issuer: &invoicing::Issuer,
    existing: Option<&invoicing::Contract>,
) -> Option<String> {
    if let Some(c) = existing {
        let customer = Country::parse(&c.country).ok();
        let tax = vat::vat_for(
            issuer.country,
            customer,
            customer.is_some() && !c.vat_id.is_empty(),
        );
        if let Some(reason) = vat::held(
            issuer.country,
            issuer.vat_id.is_some(),
            customer.is_some(),
            &tax,
        ) {
            return Some(format!("This contract's {reason}."));
        }
    }
    match issuer.country {
        None => Some(format!(
            "{}: this contract's invoices will carry no VAT and say so. Set it where Herd runs, then restart.",
            vat::NO_ISSUER_COUNTRY_NOTE
        )),
        Some(c) if !c.is_eu() => Some(format!(
            "The invoice issuer's country ({c}) is outside the EU: Herd computes EU VAT only, so this contract's invoices will carry no VAT."
        )),
        Some(_) => None,
    }
}

async fn org_by_slug(state: &AppState, slug: &str) -> Result<Org, AppError> {
    orgs::by_slug(&state.pool, slug)
        .await?
        .ok_or(AppError::NotFound)
}

async fn contract_form(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(slug): Path<String>,
) -> Result<Response, AppError> {
    let org = org_by_slug(&state, &slug).await?;
    let existing = invoicing::contract_of(&state.pool, org.id()).await?;
    let issuer = invoicing::issuer(&state.pool).await?;
    let form = existing.as_ref().map_or_else(
        || ContractForm {
            currency: "EUR".into(),
            period: "year".into(),
            terms_days: "30".into(),
            starts_on: OffsetDateTime::now_utc().date().to_string(),
            ..ContractForm::default()
        },
        ContractForm::from_contract,
    );
    render(&ContractPage {
        l: Layout::new(&session, Some(&op)).await?,
        plans: plans::all(&state.pool).await?,
        existing: existing.is_some(),
        org,
        form,
        errors: FieldErrors::default(),
        vat_notice: vat_notice(&issuer, existing.as_ref()),
    })
}

async fn contract_save(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(slug): Path<String>,
    Form(form): Form<ContractForm>,
) -> Result<Response, AppError> {
    let org = org_by_slug(&state, &slug).await?;
    let plans = plans::all(&state.pool).await?;
    // The issuer invoices will be issued by, as recorded at start.
    let issuer = invoicing::issuer(&state.pool).await?;
    let terms = match form.validate(&plans, issuer.country) {
        Ok(t) => t,
        Err(errors) => {
            let contract = invoicing::contract_of(&state.pool, org.id()).await?;
            let existing = contract.is_some();
            return render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &ContractPage {
                    l: Layout::new(&session, Some(&op)).await?,
                    plans,
                    org,
                    form,
                    errors,
                    existing,
                    vat_notice: vat_notice(&issuer, contract.as_ref()),
                },
            );
        }
    };
    let mut tx = state.pool.begin().await?;
    let (saved, moved) = herd_billing::invoicing::save_contract(&mut tx, org.id(), &terms).await?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(&op),
            ip: &ip,
        },
        Some(org.id()),
        "billing.contract.saved",
        saved.id.to_string(),
        json!({
            "plan": saved.plan_code, "price_minor": saved.price_minor, "currency": saved.currency,
            "period": saved.period, "payment_terms_days": saved.payment_terms_days,
            "po_reference": saved.po_reference, "vat_id": saved.vat_id, "country": saved.country,
            "starts_on": saved.starts_on.to_string(), "ends_on": saved.ends_on.map(|d| d.to_string()),
            "servers_moved": moved,
        }),
    )
    .await?;
    tx.commit().await?;
    // This contract's invoices already due go out now rather than at the worker's next round.
    let issued = herd_billing::invoicing::issue_for_contract(
        &state.pool,
        saved.id,
        &saved.plan_code,
        OffsetDateTime::now_utc().date(),
    )
    .await?;
    session::flash(
        &session,
        "ok",
        format!(
            "{} is on invoice billing{}{}.",
            org.name,
            if moved.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} server(s) move to the {} plan (the new price applies from the next invoice)",
                    moved.len(),
                    saved.plan_code
                )
            },
            if issued.is_empty() {
                String::new()
            } else {
                format!("; {} invoice(s) issued", issued.len())
            }
        ),
    )
    .await?;
    Ok(Redirect::to(&format!("/operator/orgs/{slug}/contract")).into_response())
}

/// An invoice with its amounts formatted in its currency's minor units, for the templates.
pub struct InvoiceView {
    pub i: Invoice,
    /// The amount due (the gross).
    pub amount: String,
    pub net: String,
    pub tax: String,
    /// The VAT rate ("20%").
    pub rate: String,
    /// Whether the invoice charges VAT (a rate line) or carries a mention instead.
    pub charges_vat: bool,
    pub overdue: bool,
}

impl InvoiceView {
    pub(crate) fn new(i: Invoice, today: Date) -> Self {
        let money = |minor| {
            Money {
                minor,
                currency: i.currency.clone(),
            }
            .to_string()
        };
        Self {
            amount: money(i.amount_minor),
            net: money(i.net_minor),
            tax: money(i.tax_minor),
            rate: vat::percent(u32::try_from(i.vat_rate_bp).unwrap_or(0)),
            charges_vat: i.tax_treatment.charges_vat(),
            overdue: i.status == "open" && i.due_on < today,
            i,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct InvoicesQuery {
    #[serde(default)]
    overdue: String,
    page: Option<u32>,
}

#[derive(Template)]
#[template(path = "operator_invoices.html")]
struct InvoicesPage {
    l: Layout,
    overdue_only: bool,
    rows: Vec<(InvoiceView, String)>,
    pager: Pager,
}

async fn invoice_list(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Query(q): Query<InvoicesQuery>,
) -> Result<Response, AppError> {
    let today = OffsetDateTime::now_utc().date();
    let overdue_only = q.overdue == "1";
    let paged =
        invoicing::list_invoices(&state.pool, overdue_only, today, Page::new(q.page, None)).await?;
    let pager = Pager::new(
        "/operator/invoices",
        &[("overdue", q.overdue.as_str())],
        &paged,
    );
    let mut rows = Vec::with_capacity(paged.items.len());
    for i in paged.items {
        let slug = orgs::by_id(&state.pool, OrgId(i.org_id))
            .await?
            .map(|o| o.slug)
            .unwrap_or_default();
        rows.push((InvoiceView::new(i, today), slug));
    }
    render(&InvoicesPage {
        l: Layout::new(&session, Some(&op)).await?,
        overdue_only,
        rows,
        pager,
    })
}

#[derive(Template)]
#[template(path = "invoice.html")]
struct InvoicePage {
    l: Layout,
    /// Everything it shows was frozen on the invoice at issue (issuer, customer, lines).
    v: InvoiceView,
    /// Operators record payments from the same page.
    operator: bool,
    errors: FieldErrors,
}

async fn invoice_page(
    state: &AppState,
    session: &Session,
    user: &herd_store::users::User,
    mut i: Invoice,
    operator: bool,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, AppError> {
    // Invoices issued before issuers were kept on them (their VAT "not computed") show the
    // issuer recorded now, as they always did.
    if i.issuer.is_empty() {
        i.issuer = invoicing::issuer(&state.pool).await?.details;
    }
    render_status(
        status,
        &InvoicePage {
            l: Layout::new(session, Some(user)).await?,
            v: InvoiceView::new(i, OffsetDateTime::now_utc().date()),
            operator,
            errors,
        },
    )
}

async fn operator_invoice(
    State(state): State<AppState>,
    session: Session,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
) -> Result<Response, AppError> {
    let i = invoicing::invoice(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    invoice_page(
        &state,
        &session,
        &op,
        i,
        true,
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn customer_invoice(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
) -> Result<Response, AppError> {
    let i = invoicing::invoice(&state.pool, id)
        .await?
        .filter(|i| i.org_id == ctx.org.id().0)
        .ok_or(AppError::NotFound)?;
    invoice_page(
        &state,
        &session,
        &ctx.user,
        i,
        false,
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

#[derive(Debug, Default, Deserialize)]
struct PaymentForm {
    #[serde(default)]
    paid_on: String,
    #[serde(default)]
    reference: String,
}

async fn record_payment(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    Operator(op): Operator,
    Path(id): Path<Uuid>,
    Form(form): Form<PaymentForm>,
) -> Result<Response, AppError> {
    let i = invoicing::invoice(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let mut errors = FieldErrors::default();
    let today = OffsetDateTime::now_utc().date();
    let paid_on = match parse_date(&form.paid_on) {
        Some(d) if d <= today && d >= i.issued_on - time::Duration::days(366) => Some(d),
        _ => {
            errors.add(
                "paid_on",
                "Enter the date the transfer arrived, like 2026-12-05 (not in the future).",
            );
            None
        }
    };
    let reference = form.reference.trim().to_owned();
    if reference.is_empty() || reference.chars().count() > 200 {
        errors.add("reference", "Enter the bank transfer's reference.");
    }
    if i.status == "paid" {
        errors.add("paid_on", "This invoice is paid already.");
    }
    let (Some(paid_on), true) = (paid_on, errors.is_empty()) else {
        return invoice_page(
            &state,
            &session,
            &op,
            i,
            true,
            errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let mut tx = state.pool.begin().await?;
    invoicing::record_payment(&mut *tx, i.id, paid_on, &reference).await?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(&op),
            ip: &ip,
        },
        Some(OrgId(i.org_id)),
        "billing.invoice.paid",
        i.number.clone(),
        json!({ "paid_on": paid_on.to_string(), "reference": reference }),
    )
    .await?;
    tx.commit().await?;
    herd_billing::access::refresh_subject(
        &state.pool,
        &herd_billing::invoicing::contract_subject(i.contract_id),
        OffsetDateTime::now_utc(),
        state.stripe.as_ref(),
    )
    .await?;
    session::flash(&session, "ok", format!("{} is recorded as paid.", i.number)).await?;
    Ok(Redirect::to(&format!("/operator/invoices/{}", i.id)).into_response())
}
