//! Plans' support tiers: the tier a ticket follows, and the console's editor.

use crate::{SupportError, Who};
use herd_domain::support::{BusinessHours, SupportHours, SupportTier, Targets};
use herd_store::audit::{self, NewEntry};
use herd_store::support::{self as store, PlanTier, TierRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::{PgExecutor, PgPool};

/// The first-response hours of the default tier when an organization has no plan.
pub const NO_PLAN_RESPONSE_HOURS: i32 = 48;

/// The tier a stored row describes; `None` when its values no longer make one (an
/// unknown time zone), so that callers fall back to the plan's default.
pub fn tier_of_row(r: &TierRow) -> Option<SupportTier> {
    let hours = if r.around_the_clock {
        SupportHours::Always
    } else {
        SupportHours::Business(
            BusinessHours::new(
                u16::try_from(r.business_start_minute).ok()?,
                u16::try_from(r.business_end_minute).ok()?,
                &r.time_zone,
            )
            .ok()?,
        )
    };
    let minutes = |v: &[i32], i: usize| u32::try_from(*v.get(i)?).ok();
    let mut targets = [Targets {
        first_response_minutes: 0,
        resolution_minutes: 0,
    }; 4];
    for (i, t) in targets.iter_mut().enumerate() {
        t.first_response_minutes = minutes(&r.first_response_minutes, i)?;
        t.resolution_minutes = minutes(&r.resolution_minutes, i)?;
    }
    SupportTier::new(targets, r.urgent_allowed, hours).ok()
}

/// A plan's tier: the one set for it, or the default derived from its response hours.
pub fn tier_of_plan(p: &PlanTier) -> SupportTier {
    p.tier
        .as_ref()
        .and_then(tier_of_row)
        .unwrap_or_else(|| SupportTier::default_for(p.support_response_hours))
}

/// The tier of plan `code` (`None`: no plan).
pub async fn tier_for(
    ex: impl PgExecutor<'_>,
    code: Option<&str>,
) -> Result<SupportTier, SupportError> {
    let plan = match code {
        Some(c) => store::plan_tier(ex, c).await?,
        None => None,
    };
    Ok(plan.as_ref().map_or_else(
        || SupportTier::default_for(NO_PLAN_RESPONSE_HOURS),
        tier_of_plan,
    ))
}

/// A tier as stored on a ticket's event: what was in force then, whatever the plan's tier
/// becomes later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Snapshot {
    urgent_allowed: bool,
    around_the_clock: bool,
    business_start_minute: i32,
    business_end_minute: i32,
    time_zone: String,
    first_response_minutes: Vec<i32>,
    resolution_minutes: Vec<i32>,
}

/// `tier` as a snapshot for a ticket's event.
pub fn snapshot(tier: &SupportTier) -> Value {
    let (around_the_clock, start, end, zone) = match &tier.hours {
        SupportHours::Always => (true, 0, 0, String::new()),
        SupportHours::Business(b) => (false, b.start(), b.end(), b.zone().to_owned()),
    };
    let minutes = |f: fn(&Targets) -> u32| {
        tier.targets
            .iter()
            .map(|t| i32::try_from(f(t)).unwrap_or(i32::MAX))
            .collect()
    };
    serde_json::to_value(Snapshot {
        urgent_allowed: tier.urgent_allowed,
        around_the_clock,
        business_start_minute: i32::from(start),
        business_end_minute: i32::from(end),
        time_zone: zone,
        first_response_minutes: minutes(|t| t.first_response_minutes),
        resolution_minutes: minutes(|t| t.resolution_minutes),
    })
    .unwrap_or(Value::Null)
}

/// The tier a snapshot describes; `None` when it does not make one.
pub fn from_snapshot(v: &Value) -> Option<SupportTier> {
    let s: Snapshot = serde_json::from_value(v.clone()).ok()?;
    tier_of_row(&TierRow {
        plan_code: String::new(),
        urgent_allowed: s.urgent_allowed,
        around_the_clock: s.around_the_clock,
        business_start_minute: s.business_start_minute,
        business_end_minute: s.business_end_minute,
        time_zone: s.time_zone,
        first_response_minutes: s.first_response_minutes,
        resolution_minutes: s.resolution_minutes,
    })
}

/// Every plan with the tier it gives.
pub async fn all(pool: &PgPool) -> Result<Vec<(PlanTier, SupportTier)>, SupportError> {
    Ok(store::plan_tiers(pool)
        .await?
        .into_iter()
        .map(|p| {
            let t = tier_of_plan(&p);
            (p, t)
        })
        .collect())
}

/// The editor's form as typed: targets in hours (decimals allowed), low to urgent.
#[derive(Debug, Clone, Default)]
pub struct TierForm {
    pub urgent_allowed: bool,
    pub around_the_clock: bool,
    /// `HH:MM`.
    pub start: String,
    pub end: String,
    pub time_zone: String,
    pub first_response_hours: [String; 4],
    pub resolution_hours: [String; 4],
}

impl TierForm {
    /// The form showing `tier`.
    pub fn from_tier(t: &SupportTier) -> Self {
        let hours = |m: u32| {
            let h = f64::from(m) / 60.0;
            if h.fract() == 0.0 {
                format!("{h:.0}")
            } else {
                format!("{h:.2}")
            }
        };
        let (around, start, end, zone) = match &t.hours {
            SupportHours::Always => (true, 9 * 60, 17 * 60, "UTC".to_owned()),
            SupportHours::Business(b) => (false, b.start(), b.end(), b.zone().to_owned()),
        };
        let clock = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        Self {
            urgent_allowed: t.urgent_allowed,
            around_the_clock: around,
            start: clock(start),
            end: clock(end),
            time_zone: zone,
            first_response_hours: t.targets.map(|x| hours(x.first_response_minutes)),
            resolution_hours: t.targets.map(|x| hours(x.resolution_minutes)),
        }
    }

    /// The row to store, or every field's problem.
    pub fn validate(&self, plan_code: &str) -> Result<TierRow, SupportError> {
        let mut errors = Vec::new();
        let clock = |s: &str| -> Option<i32> {
            let (h, m) = s.trim().split_once(':')?;
            let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
            ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 1440)
                .then_some(h * 60 + m)
        };
        let start = clock(&self.start);
        let end = clock(&self.end);
        if start.is_none() {
            errors.push(("start", "Enter the start as HH:MM, e.g. 09:00.".to_owned()));
        }
        if end.is_none() {
            errors.push(("end", "Enter the end as HH:MM, e.g. 17:00.".to_owned()));
        }
        let zone = self.time_zone.trim().to_owned();
        let (start, end) = (start.unwrap_or(540), end.unwrap_or(1020));
        if errors.is_empty() {
            let s = u16::try_from(start).unwrap_or(0);
            let e = u16::try_from(end).unwrap_or(0);
            if let Err(e) = BusinessHours::new(s, e, &zone) {
                let field = if matches!(e, herd_domain::support::TierError::UnknownZone(_)) {
                    "time_zone"
                } else {
                    "end"
                };
                errors.push((field, e.to_string()));
            }
        }
        let minutes = |s: &str| -> Option<i32> {
            let h: f64 = s.trim().replace(',', ".").parse().ok()?;
            (h.is_finite() && h > 0.0 && h <= 24.0 * 365.0).then(|| (h * 60.0).round() as i32)
        };
        let mut first = Vec::new();
        let mut resolution = Vec::new();
        const FIRST: [&str; 4] = ["first_low", "first_normal", "first_high", "first_urgent"];
        const RES: [&str; 4] = [
            "resolution_low",
            "resolution_normal",
            "resolution_high",
            "resolution_urgent",
        ];
        for i in 0..4 {
            let f = minutes(&self.first_response_hours[i]);
            let r = minutes(&self.resolution_hours[i]);
            if f.is_none() {
                errors.push((FIRST[i], "Enter a number of hours above 0.".to_owned()));
            }
            match (f, r) {
                (_, None) => errors.push((RES[i], "Enter a number of hours above 0.".to_owned())),
                (Some(f), Some(r)) if r < f => errors.push((
                    RES[i],
                    "Resolution cannot be due before the first response.".to_owned(),
                )),
                _ => {}
            }
            first.push(f.unwrap_or(0).max(1));
            resolution.push(r.unwrap_or(0).max(1));
        }
        if !errors.is_empty() {
            return Err(SupportError::Invalid(errors));
        }
        Ok(TierRow {
            plan_code: plan_code.to_owned(),
            urgent_allowed: self.urgent_allowed,
            around_the_clock: self.around_the_clock,
            business_start_minute: start,
            business_end_minute: end,
            time_zone: zone,
            first_response_minutes: first,
            resolution_minutes: resolution,
        })
    }
}

/// Saves plan `code`'s tier (an operator's change, audited with before and after).
pub async fn save(
    pool: &PgPool,
    op: Who<'_>,
    code: &str,
    form: &TierForm,
) -> Result<(), SupportError> {
    let row = form.validate(code)?;
    let mut tx = pool.begin().await?;
    let before = store::plan_tier(&mut *tx, code)
        .await?
        .ok_or(SupportError::NotFound)?;
    store::set_tier(&mut tx, &row).await?;
    // The plan's unresolved tickets follow the new tier from now on: the time counted so
    // far stays counted in the tier of then.
    let tier = tier_for(&mut *tx, Some(code)).await?;
    let at = crate::tickets::now();
    for id in store::active_tickets_on_plan(&mut *tx, code).await? {
        if !store::lock(&mut tx, id).await? {
            continue;
        }
        store::add_event(
            &mut tx,
            id,
            at,
            store::Event::Plan(Some(code.to_owned()), Some(snapshot(&tier))),
        )
        .await?;
        crate::sla::refresh(&mut tx, id, at).await?;
    }
    let describe = |r: &TierRow| {
        json!({
            "urgent_allowed": r.urgent_allowed,
            "around_the_clock": r.around_the_clock,
            "business_hours": [r.business_start_minute, r.business_end_minute],
            "time_zone": r.time_zone,
            "first_response_minutes": r.first_response_minutes,
            "resolution_minutes": r.resolution_minutes,
        })
    };
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((op.id, op.email)),
            org: None,
            action: "support.tier.updated",
            target: code.to_owned(),
            source_ip: Some(op.ip),
            details: json!({
                "before": before.tier.as_ref().map(describe),
                "after": describe(&row),
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: SupportError) -> Vec<&'static str> {
        match err {
            SupportError::Invalid(list) => list.into_iter().map(|(f, _)| f).collect(),
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn a_snapshot_gives_the_tier_back() {
        let business = SupportTier::default_for(24);
        assert_eq!(from_snapshot(&snapshot(&business)), Some(business));
        let always = SupportTier {
            hours: SupportHours::Always,
            ..SupportTier::default_for(4)
        };
        assert_eq!(from_snapshot(&snapshot(&always)), Some(always));
        assert_eq!(from_snapshot(&json!({ "around_the_clock": true })), None);
    }

    #[test]
    fn the_form_shows_a_tier_and_reads_it_back() {
        let tier = SupportTier::default_for(24);
        let form = TierForm::from_tier(&tier);
        assert_eq!(form.start, "09:00");
        assert_eq!(form.first_response_hours[1], "24");
        let row = form
            .validate("community")
            .expect("the default tier is valid");
        assert_eq!(tier_of_row(&row), Some(tier));
    }

    #[test]
    fn bad_values_are_named_by_field() {
        let mut form = TierForm::from_tier(&SupportTier::default_for(24));
        form.start = "9h".into();
        form.time_zone = "Europe/Atlantis".into();
        form.first_response_hours[3] = "0".into();
        form.resolution_hours[0] = "1".into();
        let err = form.validate("community").expect_err("refused");
        assert_eq!(fields(err), vec!["start", "resolution_low", "first_urgent"]);
        // With the hours right, the zone is checked too.
        form.start = "09:30".into();
        let err = form.validate("community").expect_err("refused");
        assert_eq!(
            fields(err),
            vec!["time_zone", "resolution_low", "first_urgent"]
        );
        form.time_zone = "Europe/Berlin".into();
        form.end = "08:00".into();
        let err = form.validate("community").expect_err("refused");
        assert_eq!(fields(err), vec!["end", "resolution_low", "first_urgent"]);
    }
}
