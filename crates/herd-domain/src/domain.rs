//! A DNS name a tenant's server is reached at (`social.example.org`).

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DomainName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("Enter a domain name, such as social.example.org.")]
    Empty,
    #[error("A domain name has at most 253 characters.")]
    TooLong,
    #[error("Use a full domain name with at least two parts, such as social.example.org.")]
    NotQualified,
    #[error("Each part of a domain name has 1 to 63 letters, digits or hyphens, and does not start or end with a hyphen.")]
    BadLabel,
    #[error("The last part of a domain name is letters only (org, fr, social…).")]
    BadTopLevel,
}

impl DomainName {
    /// Parses a domain name: lower-cased, without a trailing dot; internationalized names
    /// must be given in their `xn--` form.
    pub fn parse(input: &str) -> Result<DomainName, DomainError> {
        let s = input.trim().trim_end_matches('.').to_ascii_lowercase();
        if s.is_empty() {
            return Err(DomainError::Empty);
        }
        if s.len() > 253 {
            return Err(DomainError::TooLong);
        }
        let labels: Vec<&str> = s.split('.').collect();
        if labels.len() < 2 {
            return Err(DomainError::NotQualified);
        }
        for l in &labels {
            let ok = !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(DomainError::BadLabel);
            }
        }
        let tld = labels[labels.len() - 1];
        if !(tld.chars().all(|c| c.is_ascii_alphabetic()) || tld.starts_with("xn--")) {
            return Err(DomainError::BadTopLevel);
        }
        Ok(DomainName(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Is this a name the provider hands out under its base domain (`lyon.<base>`, ready
    /// at once), rather than the customer's own domain (proven by a DNS record first)?
    /// The base itself, and names more than one level under it, are refused.
    pub fn under_base(&self, base: &DomainName) -> Result<bool, String> {
        if self == base {
            return Err(format!(
                "{base} is the provider's own domain: choose a name under it, such as social.{base}."
            ));
        }
        match self.0.strip_suffix(&format!(".{base}")) {
            Some(name) if !name.contains('.') => Ok(true),
            Some(_) => Err(format!(
                "Under {base}, use a single name, such as social.{base}."
            )),
            None => Ok(false),
        }
    }

    /// Where the TXT record proving this domain goes.
    pub fn challenge_name(&self) -> String {
        format!("{CHALLENGE_LABEL}.{}", self.0)
    }
}

/// The label of the TXT record that proves a custom domain.
pub const CHALLENGE_LABEL: &str = "_herd-challenge";

/// The TXT record's value for a domain's `token`.
pub fn challenge_value(token: &str) -> String {
    format!("herd-verification={token}")
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_under_the_base_are_one_level_deep() {
        let base = DomainName::parse("herd.example.net").expect("a domain");
        let d = |s: &str| DomainName::parse(s).expect("a domain");
        assert_eq!(d("lyon.herd.example.net").under_base(&base), Ok(true));
        assert_eq!(d("social.lyon.fr").under_base(&base), Ok(false));
        assert_eq!(d("xherd.example.net").under_base(&base), Ok(false));
        assert!(d("a.b.herd.example.net").under_base(&base).is_err());
        assert!(d("herd.example.net").under_base(&base).is_err());
        assert_eq!(
            d("social.lyon.fr").challenge_name(),
            "_herd-challenge.social.lyon.fr"
        );
    }

    #[test]
    fn accepts_and_normalizes() {
        assert_eq!(
            DomainName::parse(" Social.Lyon.FR. ")
                .expect("valid")
                .as_str(),
            "social.lyon.fr"
        );
        assert!(DomainName::parse("xn--bcher-kva.example").is_ok());
        assert!(DomainName::parse("a-b.example.org").is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_host_name() {
        assert_eq!(DomainName::parse(""), Err(DomainError::Empty));
        assert_eq!(
            DomainName::parse("localhost"),
            Err(DomainError::NotQualified)
        );
        assert_eq!(DomainName::parse("-a.example"), Err(DomainError::BadLabel));
        assert_eq!(DomainName::parse("a..example"), Err(DomainError::BadLabel));
        assert_eq!(DomainName::parse("a_b.example"), Err(DomainError::BadLabel));
        assert_eq!(
            DomainName::parse("https://x.example"),
            Err(DomainError::BadLabel)
        );
        assert_eq!(DomainName::parse("10.0.0.1"), Err(DomainError::BadTopLevel));
        assert_eq!(
            DomainName::parse(&format!("{}.example", "a".repeat(64))),
            Err(DomainError::BadLabel)
        );
        assert_eq!(
            DomainName::parse(&format!("{}.org", ["abcdefghi"; 26].join("."))),
            Err(DomainError::TooLong)
        );
    }
}
