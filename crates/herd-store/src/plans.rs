//! The plan catalogue.

use crate::StoreError;
use herd_domain::{BillingInterval, ComputeSize, Money, PlanId, PlanLimits, PlanSeed};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Plan {
    pub id: Uuid,
    pub code: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub currency: String,
    pub billing_interval: String,
    pub max_active_users: i32,
    pub media_storage_gb: i32,
    pub custom_domain: bool,
    pub support_response_hours: i32,
    pub moderation_hours_per_month: i32,
    pub compute_size: String,
    pub provider_price_id: Option<String>,
    pub active: bool,
    pub sort_order: i32,
}

impl Plan {
    pub fn price(&self) -> Money {
        Money {
            minor: self.price_minor,
            currency: self.currency.clone(),
        }
    }
    pub fn interval(&self) -> BillingInterval {
        BillingInterval::parse(&self.billing_interval).unwrap_or(BillingInterval::Month)
    }
    pub fn limits(&self) -> PlanLimits {
        PlanLimits {
            max_active_users: self.max_active_users,
            media_storage_gb: self.media_storage_gb,
            custom_domain: self.custom_domain,
            support_response_hours: self.support_response_hours,
            moderation_hours_per_month: self.moderation_hours_per_month,
            compute: ComputeSize::parse(&self.compute_size).unwrap_or(ComputeSize::Small),
        }
    }
}

/// Writes `catalogue` when the plans table is empty; returns how many plans were written.
/// Safe to call from several processes at once (the table is locked while checking).
#[tracing::instrument(skip_all)]
pub async fn seed_if_empty(
    conn: &mut PgConnection,
    catalogue: &[PlanSeed],
) -> Result<usize, StoreError> {
    sqlx::query!("LOCK TABLE plans IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await?;
    let n = sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM plans"#)
        .fetch_one(&mut *conn)
        .await?;
    if n > 0 {
        return Ok(0);
    }
    for (i, p) in catalogue.iter().enumerate() {
        sqlx::query!(
            "INSERT INTO plans (id, code, name, description, price_minor, currency, billing_interval,
                                max_active_users, media_storage_gb, custom_domain,
                                support_response_hours, moderation_hours_per_month, compute_size,
                                sort_order)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            PlanId::new().0,
            p.code,
            p.name,
            p.description,
            p.price.minor,
            p.price.currency,
            p.interval.as_str(),
            p.limits.max_active_users,
            p.limits.media_storage_gb,
            p.limits.custom_domain,
            p.limits.support_response_hours,
            p.limits.moderation_hours_per_month,
            p.limits.compute.as_str(),
            i32::try_from(i).unwrap_or(i32::MAX),
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(catalogue.len())
}

/// Plans on sale, in catalogue order.
#[tracing::instrument(skip(ex))]
pub async fn active(ex: impl PgExecutor<'_>) -> Result<Vec<Plan>, StoreError> {
    Ok(sqlx::query_as!(
        Plan,
        "SELECT id, code, name, description, price_minor, currency, billing_interval,
                max_active_users, media_storage_gb, custom_domain, support_response_hours,
                moderation_hours_per_month, compute_size, provider_price_id, active, sort_order
         FROM plans WHERE active ORDER BY sort_order, price_minor, code"
    )
    .fetch_all(ex)
    .await?)
}

/// Every plan, including retired ones, for operators.
#[tracing::instrument(skip(ex))]
pub async fn all(ex: impl PgExecutor<'_>) -> Result<Vec<Plan>, StoreError> {
    Ok(sqlx::query_as!(
        Plan,
        "SELECT id, code, name, description, price_minor, currency, billing_interval,
                max_active_users, media_storage_gb, custom_domain, support_response_hours,
                moderation_hours_per_month, compute_size, provider_price_id, active, sort_order
         FROM plans ORDER BY sort_order, price_minor, code"
    )
    .fetch_all(ex)
    .await?)
}

#[tracing::instrument(skip(ex))]
pub async fn by_code(ex: impl PgExecutor<'_>, code: &str) -> Result<Option<Plan>, StoreError> {
    Ok(sqlx::query_as!(
        Plan,
        "SELECT id, code, name, description, price_minor, currency, billing_interval,
                max_active_users, media_storage_gb, custom_domain, support_response_hours,
                moderation_hours_per_month, compute_size, provider_price_id, active, sort_order
         FROM plans WHERE code = $1",
        code
    )
    .fetch_optional(ex)
    .await?)
}

/// New values for a plan's editable fields.
#[derive(Debug, Clone)]
pub struct PlanUpdate {
    pub name: String,
    pub description: String,
    pub price: Money,
    pub interval: BillingInterval,
    pub limits: PlanLimits,
    pub active: bool,
    /// The Stripe price this plan is sold at by card (`price_…`); `None` means not by card.
    pub provider_price_id: Option<String>,
}

/// Updates the plan `code`, locking it first; returns the plan before and after.
#[tracing::instrument(skip(conn, update))]
pub async fn update(
    conn: &mut PgConnection,
    code: &str,
    update: &PlanUpdate,
) -> Result<Option<(Plan, Plan)>, StoreError> {
    let before = sqlx::query_as!(
        Plan,
        "SELECT id, code, name, description, price_minor, currency, billing_interval,
                max_active_users, media_storage_gb, custom_domain, support_response_hours,
                moderation_hours_per_month, compute_size, provider_price_id, active, sort_order
         FROM plans WHERE code = $1 FOR UPDATE",
        code
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(before) = before else {
        return Ok(None);
    };
    let after = sqlx::query_as!(
        Plan,
        "UPDATE plans SET name = $2, description = $3, price_minor = $4, currency = $5,
                billing_interval = $6, max_active_users = $7, media_storage_gb = $8,
                custom_domain = $9, support_response_hours = $10,
                moderation_hours_per_month = $11, compute_size = $12, active = $13,
                provider_price_id = $14, updated_at = now()
         WHERE code = $1
         RETURNING id, code, name, description, price_minor, currency, billing_interval,
                   max_active_users, media_storage_gb, custom_domain, support_response_hours,
                   moderation_hours_per_month, compute_size, provider_price_id, active, sort_order",
        code,
        update.name,
        update.description,
        update.price.minor,
        update.price.currency,
        update.interval.as_str(),
        update.limits.max_active_users,
        update.limits.media_storage_gb,
        update.limits.custom_domain,
        update.limits.support_response_hours,
        update.limits.moderation_hours_per_month,
        update.limits.compute.as_str(),
        update.active,
        update.provider_price_id
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some((before, after)))
}

/// Creates a plan with the code `code`, placed after the existing ones. A taken code is a
/// `Conflict` on `plans_code_key`.
#[tracing::instrument(skip(conn, plan))]
pub async fn create(
    conn: &mut PgConnection,
    code: &str,
    plan: &PlanUpdate,
) -> Result<Plan, StoreError> {
    Ok(sqlx::query_as!(
        Plan,
        "INSERT INTO plans (id, code, name, description, price_minor, currency, billing_interval,
                            max_active_users, media_storage_gb, custom_domain, support_response_hours,
                            moderation_hours_per_month, compute_size, active, provider_price_id, sort_order)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                 (SELECT coalesce(max(sort_order), -1) + 1 FROM plans))
         RETURNING id, code, name, description, price_minor, currency, billing_interval,
                   max_active_users, media_storage_gb, custom_domain, support_response_hours,
                   moderation_hours_per_month, compute_size, provider_price_id, active, sort_order",
        PlanId::new().0,
        code,
        plan.name,
        plan.description,
        plan.price.minor,
        plan.price.currency,
        plan.interval.as_str(),
        plan.limits.max_active_users,
        plan.limits.media_storage_gb,
        plan.limits.custom_domain,
        plan.limits.support_response_hours,
        plan.limits.moderation_hours_per_month,
        plan.limits.compute.as_str(),
        plan.active,
        plan.provider_price_id
    )
    .fetch_one(conn)
    .await?)
}
