//! VAT on Herd's invoices: countries (ISO 3166-1 alpha-2), the EU member states' standard
//! rates, the format of their VAT identification numbers, and which treatment an invoice
//! gets from the issuer's country and the customer's country and VAT id.
//!
//! Herd sells one kind of service (hosting), so only standard rates apply. The rules:
//! - customer in the issuer's country: the domestic rate;
//! - customer in another member state with a VAT id: reverse charge, no VAT, with the
//!   legal mention (Article 196 of Directive 2006/112/EC);
//! - customer in another member state without a VAT id: that state's rate;
//! - customer outside the EU: no VAT, outside the scope of EU VAT;
//! - issuer's country not set, not in the EU, or customer's country unknown: no VAT
//!   computed, and the invoice says so.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The mention a reverse-charge invoice must carry.
pub const REVERSE_CHARGE_NOTE: &str =
    "Reverse charge: VAT to be accounted for by the customer, Article 196 of Directive 2006/112/EC";

/// The mention of an invoice to a customer established outside the EU.
pub const OUTSIDE_SCOPE_NOTE: &str =
    "Outside the scope of EU VAT: the customer is established outside the EU";

/// The mention of an invoice issued while the issuer's country is not configured.
pub const NO_ISSUER_COUNTRY_NOTE: &str = "VAT not computed: HERD_INVOICE_ISSUER_COUNTRY is not set";

/// The mention of an invoice whose contract does not say the customer's country.
pub const NO_CUSTOMER_COUNTRY_NOTE: &str =
    "VAT not computed: the contract does not say the customer's country";

/// The officially assigned ISO 3166-1 alpha-2 codes (249).
const ISO_3166_ALPHA2: &str =
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI \
BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE \
DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS \
GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW \
KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW \
MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO \
RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM \
TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// A country, by its ISO 3166-1 alpha-2 code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country([u8; 2]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Enter the country as its two-letter ISO code, such as FR, DE, GR or CH.")]
pub struct CountryError;

impl Country {
    /// Reads a code such as "FR" (any case, surrounding spaces ignored); only codes ISO
    /// assigns are accepted ("EL", Greece's VAT prefix, is not one: Greece is GR).
    pub fn parse(s: &str) -> Result<Self, CountryError> {
        let code = s.trim().to_ascii_uppercase();
        match code.as_bytes() {
            [a, b]
                if a.is_ascii_uppercase()
                    && b.is_ascii_uppercase()
                    && ISO_3166_ALPHA2.split_whitespace().any(|c| c == code) =>
            {
                Ok(Self([*a, *b]))
            }
            _ => Err(CountryError),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The EU member state this country is, if it is one.
    fn member(self) -> Option<&'static Member> {
        MEMBERS.iter().find(|m| m.code == self.as_str())
    }

    pub fn is_eu(self) -> bool {
        self.member().is_some()
    }

    /// Where this country stands for VAT: Monaco is part of France's VAT territory (its
    /// businesses hold FR VAT ids); the French overseas departments (Guadeloupe,
    /// Martinique, Réunion, French Guiana, Mayotte) are in the EU but outside its VAT
    /// territory, with rules of their own that Herd does not compute.
    fn for_vat(self) -> VatPlace {
        match self.as_str() {
            "MC" => VatPlace::Country(Country(*b"FR")),
            "GP" | "MQ" | "RE" | "GF" | "YT" => VatPlace::OwnRules,
            _ => VatPlace::Country(self),
        }
    }

    /// The standard VAT rate of an EU member state, in basis points (2000 = 20%).
    pub fn standard_rate_bp(self) -> Option<u32> {
        self.member().map(|m| m.rate_bp)
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Country {
    type Error = CountryError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Country> for String {
    fn from(c: Country) -> Self {
        c.as_str().to_owned()
    }
}

/// An EU member state: its standard rate and the VIES format of its VAT ids.
struct Member {
    code: &'static str,
    name: &'static str,
    /// The prefix of its VAT ids (the country code, but EL for Greece).
    prefix: &'static str,
    rate_bp: u32,
    /// The shapes of a VAT id after the prefix: `#` a digit, `A` a letter, `X` a letter or
    /// a digit, `K` a digit or a letter other than I and O, `S` a letter, a digit, `+` or
    /// `*`; any other character stands for itself.
    formats: &'static [&'static str],
    example: &'static str,
}

/// The 27 member states. Standard rates in force in 2026, from the European Commission's
/// Taxes in Europe Database (TEDB, https://ec.europa.eu/taxation_customs/tedb/), as
/// compiled in vatnode/eu-vat-rates-data's data/eu-vat-rates-history.json (version
/// 2026-09-23) and checked against eurofiscalis.com's "EU VAT rates 2026" table (updated
/// 2026-02-02). Changes since 2024: Finland 25.5% (1 September 2024), Slovakia 23%
/// (1 January 2025), Estonia 24% (1 July 2025), Romania 21% (1 August 2025). VAT id
/// formats are VIES's ("VIES VAT number validation", European Commission FAQ).
#[rustfmt::skip]
const MEMBERS: [Member; 27] = [
    Member { code: "AT", name: "Austria", prefix: "AT", rate_bp: 2000, formats: &["U########"], example: "ATU12345678" },
    Member { code: "BE", name: "Belgium", prefix: "BE", rate_bp: 2100, formats: &["0#########", "1#########"], example: "BE0123456789" },
    Member { code: "BG", name: "Bulgaria", prefix: "BG", rate_bp: 2000, formats: &["#########", "##########"], example: "BG123456789" },
    Member { code: "CY", name: "Cyprus", prefix: "CY", rate_bp: 1900, formats: &["########A"], example: "CY12345678L" },
    Member { code: "CZ", name: "Czechia", prefix: "CZ", rate_bp: 2100, formats: &["########", "#########", "##########"], example: "CZ12345678" },
    Member { code: "DE", name: "Germany", prefix: "DE", rate_bp: 1900, formats: &["#########"], example: "DE123456789" },
    Member { code: "DK", name: "Denmark", prefix: "DK", rate_bp: 2500, formats: &["########"], example: "DK12345678" },
    Member { code: "EE", name: "Estonia", prefix: "EE", rate_bp: 2400, formats: &["#########"], example: "EE123456789" },
    Member { code: "ES", name: "Spain", prefix: "ES", rate_bp: 2100, formats: &["X#######X"], example: "ESB12345674" },
    Member { code: "FI", name: "Finland", prefix: "FI", rate_bp: 2550, formats: &["########"], example: "FI12345678" },
    Member { code: "FR", name: "France", prefix: "FR", rate_bp: 2000, formats: &["KK#########"], example: "FR12345678901" },
    Member { code: "GR", name: "Greece", prefix: "EL", rate_bp: 2400, formats: &["#########"], example: "EL123456789" },
    Member { code: "HR", name: "Croatia", prefix: "HR", rate_bp: 2500, formats: &["###########"], example: "HR12345678901" },
    Member { code: "HU", name: "Hungary", prefix: "HU", rate_bp: 2700, formats: &["########"], example: "HU12345678" },
    Member { code: "IE", name: "Ireland", prefix: "IE", rate_bp: 2300, formats: &["#S#####A", "#S#####AA"], example: "IE1234567T" },
    Member { code: "IT", name: "Italy", prefix: "IT", rate_bp: 2200, formats: &["###########"], example: "IT12345678901" },
    Member { code: "LT", name: "Lithuania", prefix: "LT", rate_bp: 2100, formats: &["#########", "############"], example: "LT123456789" },
    Member { code: "LU", name: "Luxembourg", prefix: "LU", rate_bp: 1700, formats: &["########"], example: "LU12345678" },
    Member { code: "LV", name: "Latvia", prefix: "LV", rate_bp: 2100, formats: &["###########"], example: "LV12345678901" },
    Member { code: "MT", name: "Malta", prefix: "MT", rate_bp: 1800, formats: &["########"], example: "MT12345678" },
    Member { code: "NL", name: "the Netherlands", prefix: "NL", rate_bp: 2100, formats: &["#########B##"], example: "NL123456789B01" },
    Member { code: "PL", name: "Poland", prefix: "PL", rate_bp: 2300, formats: &["##########"], example: "PL1234567890" },
    Member { code: "PT", name: "Portugal", prefix: "PT", rate_bp: 2300, formats: &["#########"], example: "PT123456789" },
    Member { code: "RO", name: "Romania", prefix: "RO", rate_bp: 2100, formats: &["##", "###", "####", "#####", "######", "#######", "########", "#########", "##########"], example: "RO1234567" },
    Member { code: "SE", name: "Sweden", prefix: "SE", rate_bp: 2500, formats: &["##########01"], example: "SE123456789001" },
    Member { code: "SI", name: "Slovenia", prefix: "SI", rate_bp: 2200, formats: &["########"], example: "SI12345678" },
    Member { code: "SK", name: "Slovakia", prefix: "SK", rate_bp: 2300, formats: &["##########"], example: "SK1234567890" },
];

fn fits(format: &str, s: &str) -> bool {
    format.len() == s.len()
        && format.chars().zip(s.chars()).all(|(f, c)| match f {
            '#' => c.is_ascii_digit(),
            'A' => c.is_ascii_uppercase(),
            'X' => c.is_ascii_digit() || c.is_ascii_uppercase(),
            'K' => c.is_ascii_digit() || (c.is_ascii_uppercase() && c != 'I' && c != 'O'),
            'S' => c.is_ascii_digit() || c.is_ascii_uppercase() || c == '+' || c == '*',
            literal => c == literal,
        })
}

/// A VAT identification number, checked against its country's format: for an EU member
/// state, VIES's (prefix included, spaces, dots and dashes removed: `FR12345678901`,
/// `EL123456789`); for another country, its tax number as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VatId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VatIdError {
    #[error("A VAT id from {name} starts with {prefix}, such as {example}.")]
    Prefix {
        name: &'static str,
        prefix: &'static str,
        example: &'static str,
    },
    #[error("This is not the format of a VAT id from {name}, such as {example}.")]
    Format {
        name: &'static str,
        example: &'static str,
    },
    #[error("Enter the VAT id on one line, in at most 40 characters.")]
    TooLong,
    #[error("Enter the VAT id.")]
    Empty,
}

impl VatId {
    /// Reads the VAT id of a customer (or issuer) established in `country`.
    pub fn parse(s: &str, country: Country) -> Result<Self, VatIdError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(VatIdError::Empty);
        }
        if s.chars().count() > 40 || s.chars().any(char::is_control) {
            return Err(VatIdError::TooLong);
        }
        let country = match country.for_vat() {
            VatPlace::Country(c) => c,
            VatPlace::OwnRules => country,
        };
        let Some(m) = country.member() else {
            return Ok(Self(s.to_owned()));
        };
        let id: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '.' && *c != '-')
            .collect::<String>()
            .to_uppercase();
        let Some(rest) = id.strip_prefix(m.prefix) else {
            return Err(VatIdError::Prefix {
                name: m.name,
                prefix: m.prefix,
                example: m.example,
            });
        };
        let shaped = m.formats.iter().any(|f| fits(f, rest));
        // Spain: the first and last characters are not both digits.
        let spanish_rule = m.code != "ES"
            || !(rest.starts_with(|c: char| c.is_ascii_digit())
                && rest.ends_with(|c: char| c.is_ascii_digit()));
        if !shaped || !spanish_rule {
            return Err(VatIdError::Format {
                name: m.name,
                example: m.example,
            });
        }
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How VAT applies to an invoice; stored with it as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxTreatment {
    /// The customer is in the issuer's country: its rate.
    Domestic,
    /// An EU business customer in another member state, with a VAT id: the customer
    /// accounts for the VAT.
    ReverseCharge,
    /// A customer in another member state without a VAT id: that state's rate.
    DestinationRate,
    /// A customer outside the EU: no EU VAT.
    OutsideScope,
    /// Not computed (issuer's or customer's country unknown, issuer outside the EU, or
    /// issued before Herd computed VAT): no VAT on the invoice, and a mention saying why.
    NotComputed,
}

impl TaxTreatment {
    pub fn as_str(self) -> &'static str {
        match self {
            TaxTreatment::Domestic => "domestic",
            TaxTreatment::ReverseCharge => "reverse_charge",
            TaxTreatment::DestinationRate => "destination_rate",
            TaxTreatment::OutsideScope => "outside_scope",
            TaxTreatment::NotComputed => "not_computed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            TaxTreatment::Domestic,
            TaxTreatment::ReverseCharge,
            TaxTreatment::DestinationRate,
            TaxTreatment::OutsideScope,
            TaxTreatment::NotComputed,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// Whether VAT is charged on the invoice (possibly at a rate of zero).
    pub fn charges_vat(self) -> bool {
        matches!(self, TaxTreatment::Domestic | TaxTreatment::DestinationRate)
    }
}

/// A country's place for VAT (see `Country::for_vat`).
enum VatPlace {
    Country(Country),
    OwnRules,
}

/// What an invoice to one of the French overseas departments says.
pub const OWN_RULES_NOTE: &str = "VAT not computed: the French overseas departments have VAT rules of their own, which Herd does not compute";

/// The VAT an invoice gets: its treatment, rate and the mention printed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vat {
    pub treatment: TaxTreatment,
    /// In basis points: 2000 is 20%.
    pub rate_bp: u32,
    pub note: String,
}

impl Vat {
    fn none(treatment: TaxTreatment, note: impl Into<String>) -> Self {
        Self {
            treatment,
            rate_bp: 0,
            note: note.into(),
        }
    }
}

/// The VAT of an invoice from an issuer established in `issuer` to a customer established
/// in `customer`, with or without a VAT id (checked against `customer` beforehand).
pub fn vat_for(issuer: Option<Country>, customer: Option<Country>, customer_vat_id: bool) -> Vat {
    let Some(issuer) = issuer else {
        return Vat::none(TaxTreatment::NotComputed, NO_ISSUER_COUNTRY_NOTE);
    };
    let (VatPlace::Country(issuer), Some(VatPlace::Country(customer))) =
        (issuer.for_vat(), customer.map(Country::for_vat))
    else {
        return match customer {
            None => Vat::none(TaxTreatment::NotComputed, NO_CUSTOMER_COUNTRY_NOTE),
            Some(_) => Vat::none(TaxTreatment::NotComputed, OWN_RULES_NOTE),
        };
    };
    let customer = Some(customer);
    let Some(issuer_rate) = issuer.standard_rate_bp() else {
        return Vat::none(
            TaxTreatment::NotComputed,
            format!("VAT not computed: the issuer's country ({issuer}) is outside the EU"),
        );
    };
    let Some(customer) = customer else {
        return Vat::none(TaxTreatment::NotComputed, NO_CUSTOMER_COUNTRY_NOTE);
    };
    if customer == issuer {
        return Vat {
            treatment: TaxTreatment::Domestic,
            rate_bp: issuer_rate,
            note: String::new(),
        };
    }
    match customer.standard_rate_bp() {
        None => Vat::none(TaxTreatment::OutsideScope, OUTSIDE_SCOPE_NOTE),
        Some(_) if customer_vat_id => Vat::none(TaxTreatment::ReverseCharge, REVERSE_CHARGE_NOTE),
        Some(rate_bp) => Vat {
            treatment: TaxTreatment::DestinationRate,
            rate_bp,
            note: String::new(),
        },
    }
}

/// Why an invoice must not be issued yet, when it must not: issuing it would freeze a
/// wrong VAT. The issuer computes VAT (its country is in the EU) but the customer's
/// country is not recorded (contracts made before VAT, or from an order); or the invoice
/// is a reverse charge, which must show the issuer's VAT id, and none is set.
pub fn held(
    issuer: Option<Country>,
    issuer_vat_id: bool,
    customer_recorded: bool,
    vat: &Vat,
) -> Option<&'static str> {
    if issuer.is_some_and(Country::is_eu) && !customer_recorded {
        return Some(HELD_NO_COUNTRY);
    }
    if vat.treatment == TaxTreatment::ReverseCharge && !issuer_vat_id {
        return Some(HELD_NO_ISSUER_VAT_ID);
    }
    None
}

pub const HELD_NO_COUNTRY: &str = "invoices are held until the customer's country is entered in the contract (Console › Organizations › Invoice billing): its VAT depends on it";
pub const HELD_NO_ISSUER_VAT_ID: &str = "reverse-charge invoices are held until HERD_INVOICE_ISSUER_VAT_ID is set: they must show the issuer's VAT id";

/// The VAT on `net_minor` at `rate_bp`, in minor units, rounded half up (half away from
/// zero): 0.5 cent is a cent.
pub fn tax_minor(net_minor: i64, rate_bp: u32) -> i64 {
    let product = i128::from(net_minor) * i128::from(rate_bp);
    let rounded = (product.abs() + 5_000) / 10_000;
    let signed = if product < 0 { -rounded } else { rounded };
    i64::try_from(signed).unwrap_or(if signed < 0 { i64::MIN } else { i64::MAX })
}

/// An invoice's totals, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub net: i64,
    pub tax: i64,
    pub gross: i64,
}

pub fn totals(net_minor: i64, rate_bp: u32) -> Totals {
    let tax = tax_minor(net_minor, rate_bp);
    Totals {
        net: net_minor,
        tax,
        gross: net_minor.saturating_add(tax),
    }
}

/// A rate in basis points as a percentage: "20%", "25.5%", "8.25%".
pub fn percent(rate_bp: u32) -> String {
    let (whole, frac) = (rate_bp / 100, rate_bp % 100);
    match frac {
        0 => format!("{whole}%"),
        f if f % 10 == 0 => format!("{whole}.{}%", f / 10),
        f => format!("{whole}.{f:02}%"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(code: &str) -> Country {
        Country::parse(code).expect("a country")
    }

    #[test]
    fn countries_are_iso_codes() {
        assert_eq!(ISO_3166_ALPHA2.split_whitespace().count(), 249);
        assert_eq!(c(" fr ").as_str(), "FR");
        assert_eq!(c("GR").to_string(), "GR");
        for bad in ["", "F", "FRA", "EL", "XX", "UK", "1A", "é"] {
            assert_eq!(Country::parse(bad), Err(CountryError), "{bad}");
        }
        assert!(c("FR").is_eu() && c("GR").is_eu() && c("HR").is_eu());
        assert!(!c("CH").is_eu() && !c("GB").is_eu() && !c("NO").is_eu());
        assert_eq!(MEMBERS.len(), 27);
        for m in &MEMBERS {
            assert!(c(m.code).is_eu(), "{}", m.code);
            assert!(
                VatId::parse(m.example, c(m.code)).is_ok(),
                "the example of {} is valid",
                m.code
            );
        }
    }

    #[test]
    fn standard_rates_of_2026() {
        let rate = |code| c(code).standard_rate_bp();
        assert_eq!(rate("FI"), Some(2550));
        assert_eq!(rate("EE"), Some(2400));
        assert_eq!(rate("RO"), Some(2100));
        assert_eq!(rate("SK"), Some(2300));
        assert_eq!(rate("FR"), Some(2000));
        assert_eq!(rate("DE"), Some(1900));
        assert_eq!(rate("HU"), Some(2700));
        assert_eq!(rate("LU"), Some(1700));
        assert_eq!(rate("GR"), Some(2400));
        assert_eq!(rate("CH"), None);
        assert!(MEMBERS.iter().all(|m| (1500..=2700).contains(&m.rate_bp)));
    }

    #[test]
    fn vat_ids_follow_vies_formats() {
        let ok = |id: &str, code: &str| {
            VatId::parse(id, c(code))
                .unwrap_or_else(|e| panic!("{id} for {code}: {e}"))
                .to_string()
        };
        assert_eq!(ok("fr 12 345 678 901", "FR"), "FR12345678901");
        assert_eq!(ok("FRXA345678901", "FR"), "FRXA345678901");
        assert_eq!(ok("DE-123.456.789", "DE"), "DE123456789");
        assert_eq!(ok("ATU12345678", "AT"), "ATU12345678");
        assert_eq!(ok("NL123456789B01", "NL"), "NL123456789B01");
        assert_eq!(ok("EL123456789", "GR"), "EL123456789");
        assert_eq!(ok("ESB12345674", "ES"), "ESB12345674");
        assert_eq!(ok("ES12345678Z", "ES"), "ES12345678Z");
        assert_eq!(ok("IE1234567WA", "IE"), "IE1234567WA");
        assert_eq!(ok("IE1A23456B", "IE"), "IE1A23456B");
        assert_eq!(ok("SE123456789001", "SE"), "SE123456789001");
        assert_eq!(ok("RO12", "RO"), "RO12");
        // Outside the EU, the tax number is kept as written.
        assert_eq!(ok("CHE-123.456.789 MWST", "CH"), "CHE-123.456.789 MWST");

        let err = |id: &str, code: &str| VatId::parse(id, c(code)).expect_err(id);
        // Greece's prefix is EL, not its country code.
        assert_eq!(
            err("GR123456789", "GR").to_string(),
            "A VAT id from Greece starts with EL, such as EL123456789."
        );
        // The prefix must be the customer's country's.
        assert!(matches!(
            err("DE123456789", "FR"),
            VatIdError::Prefix { prefix: "FR", .. }
        ));
        assert!(matches!(
            err("12345678901", "FR"),
            VatIdError::Prefix { .. }
        ));
        for (id, code) in [
            ("FR1234567890", "FR"),   // one digit short
            ("FRIO345678901", "FR"),  // I and O are not keys
            ("DE12345678", "DE"),     // eight digits
            ("ATA12345678", "AT"),    // U after AT
            ("BE2123456789", "BE"),   // starts with 0 or 1
            ("NL123456789C01", "NL"), // B
            ("ES123456789", "ES"),    // both ends digits
            ("SE123456789002", "SE"), // ends with 01
            ("RO1", "RO"),            // two digits at least
            ("IT1234567890A", "IT"),
        ] {
            assert!(
                matches!(err(id, code), VatIdError::Format { .. }),
                "{id} is not a VAT id from {code}"
            );
        }
        assert_eq!(
            VatId::parse(&"1".repeat(41), c("CH")),
            Err(VatIdError::TooLong)
        );
    }

    #[test]
    fn treatment_follows_the_countries() {
        let (fr, de, gr, ch, us) = (c("FR"), c("DE"), c("GR"), c("CH"), c("US"));
        let v = vat_for(Some(fr), Some(fr), false);
        assert_eq!(
            (v.treatment, v.rate_bp, v.note.as_str()),
            (TaxTreatment::Domestic, 2000, "")
        );
        // A domestic business customer pays VAT too.
        assert_eq!(vat_for(Some(fr), Some(fr), true).rate_bp, 2000);
        let v = vat_for(Some(fr), Some(de), true);
        assert_eq!(
            (v.treatment, v.rate_bp, v.note.as_str()),
            (TaxTreatment::ReverseCharge, 0, REVERSE_CHARGE_NOTE)
        );
        assert!(v.note.contains("Article 196 of Directive 2006/112/EC"));
        let v = vat_for(Some(fr), Some(gr), false);
        assert_eq!(
            (v.treatment, v.rate_bp),
            (TaxTreatment::DestinationRate, 2400)
        );
        for outside in [ch, us] {
            for vat_id in [false, true] {
                let v = vat_for(Some(fr), Some(outside), vat_id);
                assert_eq!(
                    (v.treatment, v.rate_bp, v.note.as_str()),
                    (TaxTreatment::OutsideScope, 0, OUTSIDE_SCOPE_NOTE)
                );
            }
        }
        let v = vat_for(None, Some(fr), false);
        assert_eq!(
            (v.treatment, v.rate_bp, v.note.as_str()),
            (TaxTreatment::NotComputed, 0, NO_ISSUER_COUNTRY_NOTE)
        );
        let v = vat_for(Some(fr), None, true);
        assert_eq!(
            (v.treatment, v.note.as_str()),
            (TaxTreatment::NotComputed, NO_CUSTOMER_COUNTRY_NOTE)
        );
        let v = vat_for(Some(ch), Some(ch), false);
        assert_eq!(v.treatment, TaxTreatment::NotComputed);
        assert!(v.note.contains("(CH) is outside the EU"), "{}", v.note);
        for t in [
            TaxTreatment::Domestic,
            TaxTreatment::ReverseCharge,
            TaxTreatment::DestinationRate,
            TaxTreatment::OutsideScope,
            TaxTreatment::NotComputed,
        ] {
            assert_eq!(TaxTreatment::parse(t.as_str()), Some(t));
        }
        assert_eq!(TaxTreatment::parse("exempt"), None);
    }

    #[test]
    fn tax_rounds_half_up_in_minor_units() {
        assert_eq!(tax_minor(4_990, 2000), 998);
        assert_eq!(tax_minor(2, 2500), 1); // 0.5 → 1
        assert_eq!(tax_minor(1, 2500), 0); // 0.25 → 0
        assert_eq!(tax_minor(3, 2550), 1); // 0.765 → 1
        assert_eq!(tax_minor(999, 2100), 210); // 209.79 → 210
        assert_eq!(tax_minor(50, 100), 1); // 0.5 → 1
        assert_eq!(tax_minor(149, 100), 1); // 1.49 → 1
        assert_eq!(tax_minor(-2, 2500), -1); // half away from zero
        assert_eq!(tax_minor(480_000, 0), 0);
        // JPY has no minor unit: ¥1,234 at 10% is ¥123.
        assert_eq!(tax_minor(1_234, 1000), 123);
        assert_eq!(tax_minor(i64::MAX, 20_000), i64::MAX); // saturates
        assert_eq!(
            totals(480_000, 2000),
            Totals {
                net: 480_000,
                tax: 96_000,
                gross: 576_000
            }
        );
        assert_eq!(percent(2000), "20%");
        assert_eq!(percent(2550), "25.5%");
        assert_eq!(percent(825), "8.25%");
        assert_eq!(percent(0), "0%");
    }

    #[test]
    fn monaco_is_french_for_vat_and_the_overseas_departments_are_not_computed() {
        // Monaco: French VAT from a French issuer, reverse charge from another member
        // state with its (FR-prefixed) VAT id.
        let v = vat_for(Some(c("FR")), Some(c("MC")), false);
        assert_eq!((v.treatment, v.rate_bp), (TaxTreatment::Domestic, 2000));
        assert!(VatId::parse("FR40303265045", c("MC")).is_ok());
        assert!(VatId::parse("MC40303265045", c("MC")).is_err());
        let v = vat_for(Some(c("DE")), Some(c("MC")), true);
        assert_eq!(v.treatment, TaxTreatment::ReverseCharge);
        // Réunion: in the EU, outside its VAT territory; never "outside the EU".
        for dom in ["RE", "GP", "MQ", "GF", "YT"] {
            let v = vat_for(Some(c("FR")), Some(c(dom)), false);
            assert_eq!(
                (v.treatment, v.rate_bp),
                (TaxTreatment::NotComputed, 0),
                "{dom}"
            );
            assert_eq!(v.note, OWN_RULES_NOTE);
        }
    }

    #[test]
    fn invoices_that_would_freeze_a_wrong_vat_are_held() {
        let fr = Some(c("FR"));
        let domestic = vat_for(fr, Some(c("FR")), false);
        assert_eq!(held(fr, true, true, &domestic), None);
        // No country on the contract while the issuer computes VAT.
        let unknown = vat_for(fr, None, false);
        assert_eq!(held(fr, true, false, &unknown), Some(HELD_NO_COUNTRY));
        // Without an issuer country nothing is computed, and nothing is held.
        let none = vat_for(None, None, false);
        assert_eq!(held(None, false, false, &none), None);
        // Reverse charge needs the issuer's VAT id.
        let rc = vat_for(fr, Some(c("DE")), true);
        assert_eq!(rc.treatment, TaxTreatment::ReverseCharge);
        assert_eq!(held(fr, false, true, &rc), Some(HELD_NO_ISSUER_VAT_ID));
        assert_eq!(held(fr, true, true, &rc), None);
    }
}
