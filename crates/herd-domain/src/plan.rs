//! The plan catalogue: prices, limits and the sizes the provisioning engine turns into
//! Kubernetes resources.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A price in minor units (cents) of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

/// Why a price could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("Enter a price like 49 or 49.90.")]
    Format,
    #[error("The currency is a three-letter ISO code such as EUR.")]
    Currency,
    #[error("The price is too large.")]
    TooLarge,
}

impl Money {
    /// Reads a price in major units with at most two decimals ("49", "49.9", "49.90").
    /// Negative prices are refused.
    pub fn parse(amount: &str, currency: &str) -> Result<Self, MoneyError> {
        let currency = currency.trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(MoneyError::Currency);
        }
        let amount = amount.trim();
        let (whole, frac) = amount.split_once('.').unwrap_or((amount, ""));
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        if !digits(whole)
            || (!frac.is_empty() && !digits(frac))
            || frac.len() > 2
            || amount.ends_with('.')
        {
            return Err(MoneyError::Format);
        }
        let whole: i64 = whole.parse().map_err(|_| MoneyError::TooLarge)?;
        let cents: i64 = format!("{frac:0<2}")
            .parse()
            .map_err(|_| MoneyError::Format)?;
        let minor = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(cents))
            .ok_or(MoneyError::TooLarge)?;
        Ok(Self { minor, currency })
    }

    /// The amount in major units without the currency ("49.00"), as forms show it.
    pub fn major(&self) -> String {
        let s = self.to_string();
        s.rsplit_once(' ').map(|(a, _)| a.to_owned()).unwrap_or(s)
    }
}

impl fmt::Display for Money {
    /// `49.00 EUR`: two decimals, the currency code after.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BillingInterval {
    Month,
    Year,
}

impl BillingInterval {
    pub fn as_str(self) -> &'static str {
        match self {
            BillingInterval::Month => "month",
            BillingInterval::Year => "year",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "month" => Some(Self::Month),
            "year" => Some(Self::Year),
            _ => None,
        }
    }
}

/// The compute class of a tenant; the renderer maps it to replicas, requests and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComputeSize {
    Small,
    Medium,
    Large,
}

impl ComputeSize {
    pub fn as_str(self) -> &'static str {
        match self {
            ComputeSize::Small => "small",
            ComputeSize::Medium => "medium",
            ComputeSize::Large => "large",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "small" => Some(Self::Small),
            "medium" => Some(Self::Medium),
            "large" => Some(Self::Large),
            _ => None,
        }
    }
}

/// What a plan allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanLimits {
    pub max_active_users: i32,
    pub media_storage_gb: i32,
    pub custom_domain: bool,
    pub support_response_hours: i32,
    pub moderation_hours_per_month: i32,
    pub compute: ComputeSize,
}

/// A plan as first written into an empty database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSeed {
    pub code: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub price: Money,
    pub interval: BillingInterval,
    pub limits: PlanLimits,
}

/// The catalogue a new installation starts with; operators edit it afterwards.
pub fn default_catalogue() -> Vec<PlanSeed> {
    let eur = |minor| Money {
        minor,
        currency: "EUR".into(),
    };
    vec![
        PlanSeed {
            code: "community",
            name: "Community",
            description: "For a team, a newsroom or a small association finding its voice.",
            price: eur(4_900),
            interval: BillingInterval::Month,
            limits: PlanLimits {
                max_active_users: 50,
                media_storage_gb: 25,
                custom_domain: false,
                support_response_hours: 48,
                moderation_hours_per_month: 0,
                compute: ComputeSize::Small,
            },
        },
        PlanSeed {
            code: "organization",
            name: "Organization",
            description: "For a company, a university or a city with its own domain.",
            price: eur(19_900),
            interval: BillingInterval::Month,
            limits: PlanLimits {
                max_active_users: 500,
                media_storage_gb: 200,
                custom_domain: true,
                support_response_hours: 24,
                moderation_hours_per_month: 4,
                compute: ComputeSize::Medium,
            },
        },
        PlanSeed {
            code: "institution",
            name: "Institution",
            description: "For ministries and regions: high availability and a moderation service.",
            price: eur(89_900),
            interval: BillingInterval::Month,
            limits: PlanLimits {
                max_active_users: 5_000,
                media_storage_gb: 1_000,
                custom_domain: true,
                support_response_hours: 4,
                moderation_hours_per_month: 20,
                compute: ComputeSize::Large,
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_formats_with_two_decimals() {
        let m = |minor| {
            Money {
                minor,
                currency: "EUR".into(),
            }
            .to_string()
        };
        assert_eq!(m(4_900), "49.00 EUR");
        assert_eq!(m(5), "0.05 EUR");
        assert_eq!(m(-1_250), "-12.50 EUR");
    }

    #[test]
    fn money_parses_major_units() {
        let p = |a, c| Money::parse(a, c);
        assert_eq!(
            p("49", "eur"),
            Ok(Money {
                minor: 4_900,
                currency: "EUR".into()
            })
        );
        assert_eq!(p(" 49.9 ", "EUR").map(|m| m.minor), Ok(4_990));
        assert_eq!(p("0.05", "EUR").map(|m| m.minor), Ok(5));
        assert_eq!(p("49.999", "EUR"), Err(MoneyError::Format));
        assert_eq!(p("-1", "EUR"), Err(MoneyError::Format));
        assert_eq!(p("4,90", "EUR"), Err(MoneyError::Format));
        assert_eq!(p("49.", "EUR"), Err(MoneyError::Format));
        assert_eq!(p("", "EUR"), Err(MoneyError::Format));
        assert_eq!(p("49", "EURO"), Err(MoneyError::Currency));
        assert_eq!(p("99999999999999999999", "EUR"), Err(MoneyError::TooLarge));
        assert_eq!(
            Money {
                minor: 4_900,
                currency: "EUR".into()
            }
            .major(),
            "49.00"
        );
    }

    #[test]
    fn catalogue_grows_with_price() {
        let c = default_catalogue();
        assert_eq!(c.len(), 3);
        for pair in c.windows(2) {
            assert!(pair[0].price.minor < pair[1].price.minor);
            assert!(pair[0].limits.max_active_users < pair[1].limits.max_active_users);
            assert!(pair[0].limits.support_response_hours >= pair[1].limits.support_response_hours);
        }
        assert_eq!(BillingInterval::parse("year"), Some(BillingInterval::Year));
        assert_eq!(
            ComputeSize::parse(ComputeSize::Large.as_str()),
            Some(ComputeSize::Large)
        );
    }
}
