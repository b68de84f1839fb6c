//! Ordering and paying: the order form (plan, app, domain) that hands over to Stripe
//! Checkout, the order's live state after payment, and the organization's billing page
//! (subscriptions, payment problems, the Customer Portal, plan changes, cancelling at the
//! end of the period and undoing it). Every route needs [`Capability::ManageBilling`].

use super::FieldErrors;
use crate::audit::{self, Actor};
use crate::auth::OrgCtx;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Capability, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{render, render_status, ConfirmPage, Layout};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_billing::stripe_api::CheckoutRequest;
use herd_domain::access::Access as ServerAccess;
use herd_domain::DomainName;
use herd_store::billing::{self, NewOrder, Order, Subscription};
use herd_store::plans::{self, Plan};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    let billing = Access::Org(Capability::ManageBilling);
    r.get("/o/{slug}/order", billing, order_form)
        .post("/o/{slug}/order", billing, order_create)
        .get("/o/{slug}/orders/{order}", billing, order_status)
        .get("/o/{slug}/billing", billing, overview)
        .post("/o/{slug}/billing/portal", billing, portal)
        .get(
            "/o/{slug}/billing/subscriptions/{sub}/cancel",
            billing,
            cancel_confirm,
        )
        .post(
            "/o/{slug}/billing/subscriptions/{sub}/cancel",
            billing,
            cancel,
        )
        .post(
            "/o/{slug}/billing/subscriptions/{sub}/resume",
            billing,
            resume,
        )
        .post(
            "/o/{slug}/billing/subscriptions/{sub}/plan",
            billing,
            change_plan,
        )
}

/// Plans that can be ordered: on sale (by card only those with a Stripe price).
async fn sellable(state: &AppState) -> Result<Vec<Plan>, AppError> {
    Ok(plans::active(&state.pool).await?)
}

#[derive(Debug, Default, Deserialize)]
struct OrderForm {
    #[serde(default)]
    plan: String,
    #[serde(default)]
    app: String,
    #[serde(default)]
    domain: String,
    /// `card` or `invoice`.
    #[serde(default)]
    payment: String,
    #[serde(default)]
    billing_address: String,
    #[serde(default)]
    vat_id: String,
    #[serde(default)]
    po_reference: String,
    /// The form's one-time token: a second submission of the same form (a double click,
    /// a browser retry) finds the order the first made instead of making another.
    #[serde(default)]
    submission: String,
}

#[derive(Template)]
#[template(path = "order.html")]
struct OrderPage {
    l: Layout,
    ctx: OrgCtx,
    plans: Vec<Plan>,
    form: OrderForm,
    errors: FieldErrors,
    card_billing: bool,
    /// The provider's base domain, for the domain field's hint.
    base_domain: Option<String>,
}

async fn order_page(
    state: &AppState,
    session: &Session,
    ctx: OrgCtx,
    form: OrderForm,
    errors: FieldErrors,
    status: StatusCode,
) -> Result<Response, AppError> {
    render_status(
        status,
        &OrderPage {
            l: Layout::new(session, Some(&ctx.user)).await?,
            plans: sellable(state).await?,
            card_billing: state.stripe.is_some(),
            base_domain: state.config.base_domain.as_ref().map(|d| d.to_string()),
            ctx,
            form,
            errors,
        },
    )
}

async fn order_form(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
) -> Result<Response, AppError> {
    let form = OrderForm {
        app: "mastodon".into(),
        payment: if state.stripe.is_some() {
            "card"
        } else {
            "invoice"
        }
        .into(),
        submission: Uuid::now_v7().to_string(),
        ..OrderForm::default()
    };
    order_page(
        &state,
        &session,
        ctx,
        form,
        FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn order_create(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Form(form): Form<OrderForm>,
) -> Result<Response, AppError> {
    let mut errors = FieldErrors::default();
    let plans = sellable(&state).await?;
    let plan = plans.iter().find(|p| p.code == form.plan).cloned();
    if plan.is_none() {
        errors.add("plan", "Choose one of the plans.");
    }
    if !matches!(form.app.as_str(), "mastodon" | "gotosocial") {
        errors.add("app", "Choose Mastodon or GoToSocial.");
    }
    let domain = DomainName::parse(&form.domain)
        .map_err(|e| errors.add("domain", e))
        .ok();
    let mut preverified = false;
    if let (Some(d), Some(base)) = (&domain, &state.config.base_domain) {
        match d.under_base(base) {
            Ok(under) => preverified = under,
            Err(e) => errors.add("domain", e),
        }
    }
    if let Some(d) = &domain {
        if herd_store::fleet::domain_in_use(&state.pool, d.as_str()).await? {
            errors.add(
                "domain",
                "A server with this domain exists already; choose another domain.",
            );
        } else if !preverified
            && herd_store::fleet::waiting_for_proof(&state.pool, ctx.org.id()).await?
                >= herd_fleet::domains::MAX_WAITING
        {
            errors.add(
                "domain",
                format!(
                    "{} of your servers are waiting for their domain's DNS record; prove those domains (or delete those servers) before ordering another of your own domain.",
                    herd_fleet::domains::MAX_WAITING
                ),
            );
        }
    }
    // Without a choice (a form from before the choice existed), card as before.
    if !matches!(form.payment.as_str(), "" | "card" | "invoice") {
        errors.add("payment", "Choose how to pay: by card or by invoice.");
    }
    let by_invoice = form.payment == "invoice";
    if by_invoice {
        let address = form.billing_address.trim();
        if address.is_empty() || address.chars().count() > 500 {
            errors.add(
                "billing_address",
                "Enter the address invoices go to (at most 500 characters).",
            );
        }
        if form.vat_id.trim().chars().count() > 40 {
            errors.add("vat_id", "A VAT id has at most 40 characters.");
        }
        if form.po_reference.trim().chars().count() > 100 {
            errors.add(
                "po_reference",
                "A purchase-order reference has at most 100 characters.",
            );
        }
    } else if state.stripe.is_none() {
        errors.add(
            "payment",
            "Card payment is not available here: choose payment by invoice.",
        );
    } else if plan.as_ref().is_some_and(|p| p.provider_price_id.is_none()) {
        errors.add(
            "plan",
            "This plan cannot be paid by card yet: choose payment by invoice.",
        );
    }
    let (Some(plan), Some(domain), true) = (plan, domain, errors.is_empty()) else {
        return order_page(
            &state,
            &session,
            ctx,
            form,
            errors,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    if by_invoice {
        return order_by_invoice(&state, &ip, &ctx, &form, &plan, &domain, preverified).await;
    }
    if state.stripe.is_none() {
        return Err(AppError::Internal("card billing is off".into()));
    }
    let mut tx = state.pool.begin().await?;
    let (order, new) = billing::create_order(
        &mut tx,
        &NewOrder {
            org: ctx.org.id(),
            plan_code: &plan.code,
            app: &form.app,
            domain: domain.as_str(),
            created_by: Some(ctx.user.id().0),
            invoice: None,
            domain_preverified: preverified,
            submission: Uuid::parse_str(&form.submission).ok(),
        },
    )
    .await?;
    if new {
        audit::record(
            &mut tx,
            Actor {
                user: Some(&ctx.user),
                ip: &ip,
            },
            Some(ctx.org.id()),
            "billing.order.created",
            order.to_string(),
            json!({ "plan": plan.code, "app": form.app, "domain": domain.as_str() }),
        )
        .await?;
    }
    tx.commit().await?;
    let order = org_order(&state, &ctx, order).await?;
    match checkout_of(&state, &ctx, &order).await {
        Ok(Some(url)) => Ok(Redirect::to(&url).into_response()),
        // The form was sent again after the order was paid or ended: its page says so.
        Ok(None) => {
            Ok(Redirect::to(&format!("/o/{}/orders/{}", ctx.org.slug, order.id)).into_response())
        }
        Err(e) if e.outcome_unknown() => {
            tracing::warn!(error = %e, order = %order.id, "Stripe did not answer in time: the Checkout Session's fate is unknown");
            session::flash(
                &session,
                "error",
                "Stripe did not answer in time, so we cannot tell yet whether the payment page was opened. Nothing is charged twice: this page asks Stripe again.".to_owned(),
            )
            .await?;
            Ok(Redirect::to(&format!("/o/{}/orders/{}", ctx.org.slug, order.id)).into_response())
        }
        Err(e) => {
            tracing::error!(error = %e, order = %order.id, "could not start Stripe Checkout");
            errors.add(
                "plan",
                "The payment page could not be opened (Stripe refused). Nothing was charged; please try again.",
            );
            order_page(&state, &session, ctx, form, errors, StatusCode::BAD_GATEWAY).await
        }
    }
}

/// The Checkout Session of a pending card order, made the first time (with the order's
/// idempotency key, so a repeat, after a double submission or a timeout, finds the session
/// Stripe made) and recorded on the order: its payment page while it is open, `None` once
/// it is complete or expired.
async fn checkout_of(
    state: &AppState,
    ctx: &OrgCtx,
    order: &Order,
) -> Result<Option<String>, herd_billing::stripe_api::StripeApiError> {
    use herd_billing::stripe_api::StripeApiError;
    let (Some(api), "pending", "card") = (
        state.stripe.as_ref(),
        order.state.as_str(),
        order.payment.as_str(),
    ) else {
        return Ok(None);
    };
    if let Some(id) = &order.checkout_session_id {
        let s = api.checkout_session(id).await?;
        return Ok(s.url.filter(|_| s.status.as_deref() == Some("open")));
    }
    let internal = StripeApiError::Local;
    let price = plans::by_code(&state.pool, &order.plan_code)
        .await
        .map_err(|e| internal(e.to_string()))?
        .and_then(|p| p.provider_price_id)
        .ok_or(StripeApiError::Incomplete(
            "a Stripe price for the order's plan",
        ))?;
    let customer = match billing::customer_of(&state.pool, ctx.org.id())
        .await
        .map_err(|e| internal(e.to_string()))?
    {
        Some(c) => c,
        None => {
            let created = api
                .create_customer(ctx.org.id().0, &ctx.org.name, ctx.user.email.as_str())
                .await?;
            let mut conn = state
                .pool
                .acquire()
                .await
                .map_err(|e| internal(e.to_string()))?;
            billing::link_customer(&mut conn, ctx.org.id(), &created)
                .await
                .map_err(|e| internal(e.to_string()))?
        }
    };
    let slug = &ctx.org.slug;
    let success = state.config.link(&format!(
        "/o/{slug}/orders/{}?session_id={{CHECKOUT_SESSION_ID}}",
        order.id
    ));
    let cancel = state.config.link(&format!("/o/{slug}/order"));
    let s = api
        .create_checkout(&CheckoutRequest {
            customer: &customer,
            price_id: &price,
            org: ctx.org.id().0,
            order: order.id,
            success_url: &success,
            cancel_url: &cancel,
        })
        .await?;
    billing::set_checkout_session(&state.pool, order.id, &s.id)
        .await
        .map_err(|e| internal(e.to_string()))?;
    Ok(s.url)
}

/// An order paid by invoice: recorded (audited), then approved at once when the provider
/// says so (`HERD_AUTO_APPROVE_INVOICE_ORDERS`), otherwise waiting for an operator.
async fn order_by_invoice(
    state: &AppState,
    ip: &str,
    ctx: &OrgCtx,
    form: &OrderForm,
    plan: &Plan,
    domain: &DomainName,
    domain_preverified: bool,
) -> Result<Response, AppError> {
    let mut tx = state.pool.begin().await?;
    let (order, new) = billing::create_order(
        &mut tx,
        &NewOrder {
            org: ctx.org.id(),
            plan_code: &plan.code,
            app: &form.app,
            domain: domain.as_str(),
            created_by: Some(ctx.user.id().0),
            invoice: Some(billing::InvoiceDetails {
                billing_address: form.billing_address.trim(),
                vat_id: form.vat_id.trim(),
                po_reference: form.po_reference.trim(),
            }),
            domain_preverified,
            submission: Uuid::parse_str(&form.submission).ok(),
        },
    )
    .await?;
    if !new {
        // The same form again: the first submission's order stands.
        return Ok(Redirect::to(&format!("/o/{}/orders/{order}", ctx.org.slug)).into_response());
    }
    audit::record(
        &mut tx,
        Actor {
            user: Some(&ctx.user),
            ip,
        },
        Some(ctx.org.id()),
        "billing.order.created",
        order.to_string(),
        json!({ "plan": plan.code, "app": form.app, "domain": domain.as_str(), "payment": "invoice" }),
    )
    .await?;
    tx.commit().await?;
    if state.config.auto_approve_invoice_orders
        && herd_billing::fulfil::may_auto_approve(&state.pool, ctx.org.id()).await?
    {
        // A refusal leaves the order waiting for an operator, who sees why.
        if let Err(e) = herd_billing::fulfil::approve_invoice_order(&state.pool, None, order).await
        {
            tracing::warn!(%order, error = %e, "an invoice order could not be approved at once");
        }
    }
    Ok(Redirect::to(&format!("/o/{}/orders/{order}", ctx.org.slug)).into_response())
}

#[derive(Debug, Deserialize)]
struct Return {
    session_id: Option<String>,
}

#[derive(Template)]
#[template(path = "order_status.html")]
struct OrderStatusPage {
    l: Layout,
    ctx: OrgCtx,
    order: Order,
    /// The server the order created, once fulfilled.
    server: Option<Uuid>,
    /// The open payment page of a pending card order.
    pay_url: Option<String>,
    /// Stripe could not be asked about the pending order just now.
    stripe_silent: bool,
}

/// Fulfils an order from its Checkout Session when Stripe says it is complete: the same
/// idempotent step the webhook's processing takes, so whichever comes first wins and the
/// other changes nothing.
async fn fulfil_from_checkout(
    state: &AppState,
    ctx: &OrgCtx,
    order: &Order,
) -> Result<(), AppError> {
    let (Some(api), Some(session_id)) = (&state.stripe, &order.checkout_session_id) else {
        return Ok(());
    };
    let s = match api.checkout_session(session_id).await {
        Ok(s) => s,
        Err(e) => {
            // The webhook will do it; the page shows the order as pending meanwhile.
            tracing::warn!(error = %e, order = %order.id, "could not read the Checkout Session");
            return Ok(());
        }
    };
    // Complete is not paid: a delayed method (SEPA Direct Debit) completes unpaid, and its
    // order waits for `checkout.session.async_payment_succeeded`.
    let (true, Some(sub)) = (s.is_paid(), s.subscription.as_deref()) else {
        return Ok(());
    };
    if s.client_reference_id.as_deref() != Some(order.id.to_string().as_str()) {
        return Ok(());
    }
    let mut tx = state.pool.begin().await?;
    if let Some(c) = &s.customer {
        billing::link_customer(&mut tx, ctx.org.id(), c).await?;
    }
    herd_billing::fulfil::fulfil_paid(&mut tx, order.id, ctx.org.id(), sub).await?;
    tx.commit().await?;
    Ok(())
}

async fn org_order(state: &AppState, ctx: &OrgCtx, id: Uuid) -> Result<Order, AppError> {
    billing::order(&state.pool, id)
        .await?
        .filter(|o| o.org_id == ctx.org.id().0)
        .ok_or(AppError::NotFound)
}

async fn order_status(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
    Query(ret): Query<Return>,
) -> Result<Response, AppError> {
    let mut order = org_order(&state, &ctx, id).await?;
    if order.state == "pending" && ret.session_id.is_some() {
        fulfil_from_checkout(&state, &ctx, &order).await?;
        order = org_order(&state, &ctx, id).await?;
    }
    // A pending card order is resolved from Stripe: its open payment page, made now if the
    // first attempt's outcome was unknown (the order's idempotency key finds it).
    let (mut pay_url, mut stripe_silent) = (None, false);
    if order.state == "pending" && order.payment == "card" && ret.session_id.is_none() {
        match checkout_of(&state, &ctx, &order).await {
            Ok(url) => pay_url = url,
            Err(e) => {
                tracing::warn!(error = %e, order = %order.id, "could not resolve the order's Checkout Session");
                stripe_silent = true;
            }
        }
        order = org_order(&state, &ctx, id).await?;
    }
    render(&OrderStatusPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        server: herd_store::fleet::by_order(&state.pool, order.id).await?,
        ctx,
        order,
        pay_url,
        stripe_silent,
    })
}

/// A subscription as the billing page shows it.
pub struct SubscriptionView {
    pub sub: Subscription,
    pub plan: Option<Plan>,
    pub access: ServerAccess,
    /// The next step of the access policy and its date.
    pub next: Option<(ServerAccess, String)>,
}

impl SubscriptionView {
    pub fn status_label(&self) -> &'static str {
        match self.sub.status.as_str() {
            "active" => "Active",
            "trialing" => "Trial",
            "past_due" => "Payment overdue",
            "unpaid" => "Unpaid",
            "canceled" => "Ended",
            "paused" => "Paused",
            "incomplete" | "incomplete_expired" => "Awaiting first payment",
            _ => "Unknown",
        }
    }

    pub fn period_end(&self) -> String {
        self.sub.current_period_end.map(date).unwrap_or_default()
    }

    pub fn access_label(&self) -> &'static str {
        describe(self.access)
    }

    /// "suspended on 8 December 2026", for the banner.
    pub fn next_label(&self) -> Option<String> {
        self.next
            .as_ref()
            .map(|(a, d)| format!("{} on {d}", describe(*a)))
    }

    /// The access policy deleted the server: final, whatever is paid afterwards.
    pub fn is_deleted(&self) -> bool {
        self.access == ServerAccess::Deleted
    }

    /// A canceled subscription cannot be paid again: only a new order brings a server.
    pub fn has_ended(&self) -> bool {
        matches!(self.sub.status.as_str(), "canceled" | "incomplete_expired")
    }

    pub fn can_change(&self) -> bool {
        matches!(self.sub.status.as_str(), "active" | "trialing" | "past_due")
    }
}

fn date(t: OffsetDateTime) -> String {
    format!("{} {} {}", t.day(), t.month(), t.year())
}

fn describe(a: ServerAccess) -> &'static str {
    match a {
        ServerAccess::NotProvisioned => "not set up",
        ServerAccess::Running => "running",
        ServerAccess::Grace => "running, payment overdue",
        ServerAccess::Suspended => "suspended",
        ServerAccess::ScheduledForDeletion => "scheduled for deletion",
        ServerAccess::Deleted => "deleted",
    }
}

#[derive(Template)]
#[template(path = "billing.html")]
struct BillingPage {
    l: Layout,
    ctx: OrgCtx,
    subscriptions: Vec<SubscriptionView>,
    orders: Vec<Order>,
    plans: Vec<Plan>,
    card_billing: bool,
    has_customer: bool,
    invoices: Vec<super::invoicing::InvoiceView>,
    stripe_invoices: Vec<(billing::StripeInvoice, String, String)>,
    contract: Option<herd_store::invoicing::Contract>,
}

async fn overview(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
) -> Result<Response, AppError> {
    let plans = sellable(&state).await?;
    let all_plans = plans::all(&state.pool).await?;
    let now = OffsetDateTime::now_utc();
    let mut subscriptions = Vec::new();
    for sub in billing::subscriptions_of_org(&state.pool, ctx.org.id()).await? {
        // What the access policy decided (recorded and emailed by the worker), as stored.
        let subject = herd_billing::access::card_subject(&sub.stripe_subscription_id);
        let stored = herd_store::access::get(&state.pool, &subject).await?;
        let access = stored
            .as_ref()
            .and_then(|a| ServerAccess::parse(&a.state))
            .unwrap_or(ServerAccess::NotProvisioned);
        let next = stored.and_then(|a| {
            Some((
                ServerAccess::parse(a.next_state.as_deref()?)?,
                date(a.next_at?),
            ))
        });
        subscriptions.push(SubscriptionView {
            plan: all_plans
                .iter()
                .find(|p| Some(&p.code) == sub.plan_code.as_ref())
                .cloned(),
            access,
            next,
            sub,
        });
    }
    render(&BillingPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        orders: billing::orders_of_org(&state.pool, ctx.org.id()).await?,
        has_customer: billing::customer_of(&state.pool, ctx.org.id())
            .await?
            .is_some(),
        card_billing: state.stripe.is_some(),
        invoices: herd_store::invoicing::invoices_of_org(&state.pool, ctx.org.id())
            .await?
            .into_iter()
            .map(|i| super::invoicing::InvoiceView::new(i, now.date()))
            .collect(),
        contract: herd_store::invoicing::contract_of(&state.pool, ctx.org.id()).await?,
        stripe_invoices: billing::stripe_invoices_of_org(&state.pool, ctx.org.id())
            .await?
            .into_iter()
            .map(|i| {
                let amount = herd_domain::Money {
                    minor: i.amount_due,
                    currency: i.currency.clone(),
                }
                .to_string();
                let created = date(i.created);
                (i, created, amount)
            })
            .collect(),
        subscriptions,
        plans,
        ctx,
    })
}

async fn stripe_failed(
    session: &Session,
    slug: &str,
    e: impl std::fmt::Display,
) -> Result<Response, AppError> {
    tracing::error!(error = %e, "Stripe call failed");
    session::flash(
        session,
        "error",
        "Stripe did not answer; nothing was changed. Please try again in a moment.".to_owned(),
    )
    .await?;
    Ok(Redirect::to(&format!("/o/{slug}/billing")).into_response())
}

async fn portal(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
) -> Result<Response, AppError> {
    let (Some(api), Some(customer)) = (
        state.stripe.as_ref(),
        billing::customer_of(&state.pool, ctx.org.id()).await?,
    ) else {
        return Err(AppError::NotFound);
    };
    let back = state.config.link(&format!("/o/{}/billing", ctx.org.slug));
    match api.portal(&customer, &back).await {
        Ok(url) => Ok(Redirect::to(&url).into_response()),
        Err(e) => stripe_failed(&session, &ctx.org.slug, e).await,
    }
}

/// Writes an audit entry of the organization in its own transaction (for actions whose
/// effect happened at Stripe).
async fn audit_action(
    state: &AppState,
    ctx: &OrgCtx,
    ip: &str,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), AppError> {
    let mut tx = state.pool.begin().await?;
    audit::record(
        &mut tx,
        Actor {
            user: Some(&ctx.user),
            ip,
        },
        Some(ctx.org.id()),
        action,
        target.to_owned(),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn org_subscription(
    state: &AppState,
    ctx: &OrgCtx,
    sub: &str,
) -> Result<Subscription, AppError> {
    billing::subscription(&state.pool, sub)
        .await?
        .filter(|s| s.org_id == Some(ctx.org.id().0))
        .ok_or(AppError::NotFound)
}

async fn cancel_confirm(
    State(state): State<AppState>,
    session: Session,
    ctx: OrgCtx,
    Path((_slug, sub)): Path<(String, String)>,
) -> Result<Response, AppError> {
    let s = org_subscription(&state, &ctx, &sub).await?;
    let end = s
        .current_period_end
        .map(date)
        .unwrap_or_else(|| "the end of the period".into());
    render(&ConfirmPage {
        l: Layout::new(&session, Some(&ctx.user)).await?,
        title: "Cancel the subscription?".into(),
        message: format!(
            "The server keeps running until {end}, then it is suspended. Its data is kept for 30 days (you can export it) and then deleted. You can undo this until {end}."
        ),
        action: format!("/o/{}/billing/subscriptions/{sub}/cancel", ctx.org.slug),
        button: "Cancel at the end of the period".into(),
        cancel: format!("/o/{}/billing", ctx.org.slug),
    })
}

async fn set_cancel(
    state: AppState,
    session: Session,
    ip: String,
    ctx: OrgCtx,
    sub: String,
    cancel: bool,
) -> Result<Response, AppError> {
    org_subscription(&state, &ctx, &sub).await?;
    let api = state.stripe.as_ref().ok_or(AppError::NotFound)?;
    if let Err(e) = api.cancel_at_period_end(&sub, cancel).await {
        return stripe_failed(&session, &ctx.org.slug, e).await;
    }
    let action = if cancel {
        "billing.subscription.cancel_requested"
    } else {
        "billing.subscription.cancel_undone"
    };
    audit_action(&state, &ctx, &ip, action, &sub, json!({})).await?;
    let msg = if cancel {
        "The subscription will end at the end of the period. You can undo this until then."
    } else {
        "The subscription continues."
    };
    session::flash(&session, "ok", msg.to_owned()).await?;
    Ok(Redirect::to(&format!("/o/{}/billing", ctx.org.slug)).into_response())
}

async fn cancel(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, sub)): Path<(String, String)>,
) -> Result<Response, AppError> {
    set_cancel(state, session, ip, ctx, sub, true).await
}

async fn resume(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, sub)): Path<(String, String)>,
) -> Result<Response, AppError> {
    set_cancel(state, session, ip, ctx, sub, false).await
}

#[derive(Debug, Deserialize)]
struct PlanForm {
    #[serde(default)]
    plan: String,
}

async fn change_plan(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, sub)): Path<(String, String)>,
    Form(form): Form<PlanForm>,
) -> Result<Response, AppError> {
    let current = org_subscription(&state, &ctx, &sub).await?;
    let back = format!("/o/{}/billing", ctx.org.slug);
    let Some(plan) = sellable(&state)
        .await?
        .into_iter()
        .find(|p| p.code == form.plan)
    else {
        session::flash(&session, "error", "Choose one of the plans.".to_owned()).await?;
        return Ok(Redirect::to(&back).into_response());
    };
    if current.plan_code.as_deref() == Some(plan.code.as_str()) {
        session::flash(&session, "ok", format!("You are on {} already.", plan.name)).await?;
        return Ok(Redirect::to(&back).into_response());
    }
    let api = state.stripe.as_ref().ok_or(AppError::NotFound)?;
    let price = plan.provider_price_id.clone().unwrap_or_default();
    if let Err(e) = api.change_price(&sub, &price).await {
        return stripe_failed(&session, &ctx.org.slug, e).await;
    }
    audit_action(
        &state,
        &ctx,
        &ip,
        "billing.subscription.plan_changed",
        &sub,
        json!({ "from": current.plan_code, "to": plan.code }),
    )
    .await?;
    session::flash(
        &session,
        "ok",
        format!(
            "Moving to {}: the difference is prorated on your next invoice.",
            plan.name
        ),
    )
    .await?;
    Ok(Redirect::to(&back).into_response())
}
