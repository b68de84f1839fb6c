//! The plan catalogue: prices, limits and the sizes the provisioning engine turns into
//! Kubernetes resources.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A price in minor units of an ISO 4217 currency: cents for EUR, yen for JPY (which has
/// no minor unit), fils for KWD (a thousandth of a dinar); see [`minor_units`].
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
    #[error("{}", decimals_message(currency, *exponent))]
    Decimals { currency: String, exponent: u32 },
    #[error("The currency is a three-letter ISO code such as EUR.")]
    Currency,
    #[error("The price is too large.")]
    TooLarge,
}

fn decimals_message(currency: &str, exponent: u32) -> String {
    match exponent {
        0 => format!("{currency} has no minor unit: enter a whole amount such as 1200."),
        3 => format!("{currency} has at most 3 decimals, such as 1.234."),
        n => format!("{currency} has at most {n} decimals, such as 49.90."),
    }
}

/// The number of decimals of a currency's minor unit (its ISO 4217 exponent): 0 for the
/// currencies without one (JPY, KRW, ISK, CLP, VND, UGX, XAF, XOF, …), 3 for the dinars
/// and rials that count in thousandths (BHD, IQD, JOD, KWD, LYD, OMR, TND), 4 for the
/// units of account CLF and UYW, 2 for every other code.
pub fn minor_units(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

impl Money {
    /// Reads a price in major units with at most the currency's decimals ("49", "49.9",
    /// "49.90" for EUR; "1200" for JPY, which has none; "1.234" for KWD). Negative prices
    /// are refused.
    pub fn parse(amount: &str, currency: &str) -> Result<Self, MoneyError> {
        let currency = currency.trim().to_ascii_uppercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(MoneyError::Currency);
        }
        let exponent = minor_units(&currency);
        let amount = amount.trim();
        let (whole, frac) = amount.split_once('.').unwrap_or((amount, ""));
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        let point = amount.contains('.');
        if !digits(whole) || (point && !digits(frac) && exponent > 0) {
            return Err(MoneyError::Format);
        }
        if point && (exponent == 0 || frac.len() > exponent as usize) {
            return Err(MoneyError::Decimals { currency, exponent });
        }
        let whole: i64 = whole.parse().map_err(|_| MoneyError::TooLarge)?;
        let frac: i64 = if exponent == 0 {
            0
        } else {
            format!("{frac:0<width$}", width = exponent as usize)
                .parse()
                .map_err(|_| MoneyError::Format)?
        };
        let minor = whole
            .checked_mul(10_i64.pow(exponent))
            .and_then(|w| w.checked_add(frac))
            .ok_or(MoneyError::TooLarge)?;
        Ok(Self { minor, currency })
    }

    /// The number of decimals of this currency's minor unit.
    pub fn exponent(&self) -> u32 {
        minor_units(&self.currency)
    }

    /// The amount in major units without the currency ("49.00", "1200" for JPY), as forms
    /// show it.
    pub fn major(&self) -> String {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        match self.exponent() {
            0 => format!("{sign}{abs}"),
            e => {
                let unit = 10_u64.pow(e);
                format!(
                    "{sign}{}.{:0width$}",
                    abs / unit,
                    abs % unit,
                    width = e as usize
                )
            }
        }
    }
}

impl fmt::Display for Money {
    /// `49.00 EUR`, `1200 JPY`, `1.234 KWD`: the currency's decimals, its code after.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.major(), self.currency)
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
        assert!(matches!(
            p("49.999", "EUR"),
            Err(MoneyError::Decimals { exponent: 2, .. })
        ));
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
    fn minor_units_follow_iso_4217() {
        for c in [
            "JPY", "KRW", "ISK", "CLP", "VND", "UGX", "XAF", "XOF", "PYG", "XPF",
        ] {
            assert_eq!(minor_units(c), 0, "{c}");
        }
        for c in ["BHD", "KWD", "OMR", "JOD", "TND", "IQD", "LYD"] {
            assert_eq!(minor_units(c), 3, "{c}");
        }
        for c in ["EUR", "USD", "GBP", "CHF", "SEK", "HUF"] {
            assert_eq!(minor_units(c), 2, "{c}");
        }
    }

    #[test]
    fn zero_decimal_currencies_have_no_minor_unit() {
        let yen = Money::parse("1200", "jpy").expect("a yen price");
        assert_eq!(
            yen,
            Money {
                minor: 1_200,
                currency: "JPY".into()
            }
        );
        assert_eq!(yen.to_string(), "1200 JPY");
        assert_eq!(yen.major(), "1200");
        assert!(matches!(
            Money::parse("1200.5", "JPY"),
            Err(MoneyError::Decimals { exponent: 0, .. })
        ));
        assert!(Money::parse("1200.00", "JPY").is_err());
        assert!(Money::parse("1200.", "JPY").is_err());
        assert_eq!(
            Money::parse("1200.5", "JPY")
                .expect_err("no decimals")
                .to_string(),
            "JPY has no minor unit: enter a whole amount such as 1200."
        );
        assert_eq!(
            Money {
                minor: -5,
                currency: "KRW".into()
            }
            .to_string(),
            "-5 KRW"
        );
    }

    #[test]
    fn three_decimal_currencies_have_three_decimals() {
        assert_eq!(Money::parse("1.234", "KWD").map(|m| m.minor), Ok(1_234));
        assert_eq!(Money::parse("1.2", "KWD").map(|m| m.minor), Ok(1_200));
        assert_eq!(Money::parse("12", "BHD").map(|m| m.minor), Ok(12_000));
        assert!(matches!(
            Money::parse("1.2345", "KWD"),
            Err(MoneyError::Decimals { exponent: 3, .. })
        ));
        let dinar = |minor| Money {
            minor,
            currency: "KWD".into(),
        };
        assert_eq!(dinar(1_234).to_string(), "1.234 KWD");
        assert_eq!(dinar(5).to_string(), "0.005 KWD");
        assert_eq!(dinar(1_234).major(), "1.234");
        // Two decimals stay the default, and prices stored in minor units keep their value.
        assert_eq!(
            Money::parse("49.999", "EUR")
                .expect_err("two decimals")
                .to_string(),
            "EUR has at most 2 decimals, such as 49.90."
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
