//! Organization slugs: the short name in URLs (`/o/<slug>`) and, later, in the
//! tenant's Kubernetes namespace (`herd-<slug>`), so they follow DNS label rules.

use serde::{Deserialize, Serialize};
use std::fmt;

pub const SLUG_MIN_LEN: usize = 3;
/// `herd-` plus the slug must fit a 63-character DNS label, with room for suffixes.
pub const SLUG_MAX_LEN: usize = 40;

const RESERVED: &[&str] = &[
    "admin",
    "api",
    "app",
    "assets",
    "herd",
    "login",
    "logout",
    "new",
    "operator",
    "orgs",
    "pricing",
    "signup",
    "static",
    "system",
    "www",
    "kube",
    "default",
    // The internal organization of restore drills' scratch tenants.
    "herd-restore-drills",
    // Directories of the backup bucket beside the tenants' own (`<prefix><slug>/`):
    // imports, exports, scheduled backups, CloudNativePG's (see herd-k8s presign.rs).
    "imports",
    "exports",
    "scheduled",
    "cnpg",
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("The short name must be between {SLUG_MIN_LEN} and {SLUG_MAX_LEN} characters.")]
    Length,
    #[error("The short name may contain only lower-case letters, digits and hyphens, and must start with a letter and not end with a hyphen.")]
    Characters,
    #[error("That short name is reserved; choose another.")]
    Reserved,
}

impl Slug {
    pub fn parse(input: &str) -> Result<Self, SlugError> {
        let s = input.trim();
        if s.len() < SLUG_MIN_LEN || s.len() > SLUG_MAX_LEN {
            return Err(SlugError::Length);
        }
        let chars_ok = s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let starts_ok = s.starts_with(|c: char| c.is_ascii_lowercase());
        if !chars_ok || !starts_ok || s.ends_with('-') || s.contains("--") {
            return Err(SlugError::Characters);
        }
        if RESERVED.contains(&s) {
            return Err(SlugError::Reserved);
        }
        Ok(Self(s.to_owned()))
    }

    /// A slug suggested from an organization's display name ("Ville de Lyon" → "ville-de-lyon").
    /// Returns `None` when nothing usable is left.
    pub fn suggest(name: &str) -> Option<Self> {
        let mut out = String::new();
        for c in name.chars() {
            let c = fold_accent(c).to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        // A slug starts with a letter: drop leading digits and the hyphens they leave.
        let mut out = out
            .trim_start_matches(|c: char| c.is_ascii_digit() || c == '-')
            .trim_end_matches('-')
            .to_owned();
        out.truncate(SLUG_MAX_LEN);
        let out = out.trim_end_matches('-');
        match Self::parse(out) {
            Ok(s) => Some(s),
            Err(SlugError::Reserved) => Self::parse(&format!("{out}-org")).ok(),
            Err(_) if !out.is_empty() && out.len() < SLUG_MIN_LEN => {
                Self::parse(&format!("{out}-org")).ok()
            }
            Err(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn fold_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' => 'a',
        'ç' | 'Ç' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => 'i',
        'ñ' | 'Ñ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' => 'o',
        'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' => 'u',
        'ý' | 'ÿ' | 'Ý' => 'y',
        'ß' => 's',
        other => other,
    }
}

impl TryFrom<String> for Slug {
    type Error = SlugError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Slug> for String {
    fn from(s: Slug) -> String {
        s.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_label_like_slugs() {
        assert_eq!(
            Slug::parse("ville-de-lyon").expect("ok").as_str(),
            "ville-de-lyon"
        );
        assert_eq!(Slug::parse("eu2").expect("ok").as_str(), "eu2");
    }

    #[test]
    fn rejects_bad_slugs() {
        assert_eq!(Slug::parse("ab"), Err(SlugError::Length));
        assert_eq!(Slug::parse(&"a".repeat(41)), Err(SlugError::Length));
        assert_eq!(Slug::parse("Lyon"), Err(SlugError::Characters));
        assert_eq!(Slug::parse("1lyon"), Err(SlugError::Characters));
        assert_eq!(Slug::parse("lyon-"), Err(SlugError::Characters));
        assert_eq!(Slug::parse("ly--on"), Err(SlugError::Characters));
        assert_eq!(Slug::parse("admin"), Err(SlugError::Reserved));
    }

    #[test]
    fn the_backup_trees_directories_cannot_be_taken() {
        for dir in ["imports", "exports", "scheduled", "cnpg"] {
            assert_eq!(Slug::parse(dir), Err(SlugError::Reserved), "{dir}");
        }
    }

    #[test]
    fn the_drills_organization_cannot_be_taken() {
        assert_eq!(Slug::parse("herd-restore-drills"), Err(SlugError::Reserved));
    }

    #[test]
    fn suggests_from_names() {
        let s = |n: &str| Slug::suggest(n).map(|s| s.0);
        assert_eq!(s("Ville de Lyon").as_deref(), Some("ville-de-lyon"));
        assert_eq!(
            s("Région Île-de-France").as_deref(),
            Some("region-ile-de-france")
        );
        assert_eq!(s("  42 Newsroom!! ").as_deref(), Some("newsroom"));
        assert_eq!(s("EU").as_deref(), Some("eu-org"));
        assert_eq!(s("Admin").as_deref(), Some("admin-org"));
        assert_eq!(s("!!!"), None);
    }
}
