//! The password policy, stated on the sign-up form and enforced here.
//!
//! Rules (NIST SP 800-63B style): 12 to 128 characters, any characters allowed; not one of
//! the passwords most often seen in breaches; not built around an obvious pattern
//! ("password", "qwerty", "123456"…) unless it is long; not containing your email name;
//! at least five different characters.

pub const PASSWORD_MIN_LEN: usize = 12;
pub const PASSWORD_MAX_LEN: usize = 128;

/// What the form says about passwords, kept next to the rules it describes.
pub const PASSWORD_RULES: &str = "At least 12 characters (a few words make a good one). \
Passwords seen in data breaches, keyboard or number runs, and your email name are refused.";

/// Passwords of 12 characters or more that top the public breach corpora.
const BREACHED: &[&str] = &[
    "123456789012",
    "1234567890123",
    "12345678901234",
    "123456789000",
    "111111111111",
    "000000000000",
    "123123123123",
    "123412341234",
    "password1234",
    "password12345",
    "password123456",
    "passwordpassword",
    "qwertyuiopas",
    "qwerty123456",
    "qwertyuiop123",
    "1q2w3e4r5t6y",
    "1qaz2wsx3edc",
    "zaq12wsxcde3",
    "iloveyou1234",
    "administrator",
    "abcdefghijkl",
    "abcdefghijklm",
    "abc123abc123",
    "letmein12345",
    "welcome12345",
    "welcome123456",
    "changeme1234",
    "trustno1trustno1",
    "football1234",
    "baseball1234",
    "superman1234",
    "sunshine1234",
    "princess1234",
    "starwars1234",
    "monkey123456",
    "dragon123456",
    "master123456",
    "whatever1234",
    "mastodon1234",
    "fediverse123",
    "correcthorsebatterystaple",
    "p@ssw0rd1234",
    "passw0rd1234",
    "aaaaaaaaaaaa",
];

/// Fragments that make a short password easy to guess.
const WEAK_PATTERNS: &[&str] = &[
    "password", "passw0rd", "p@ssw0rd", "qwerty", "azerty", "qwertz", "123456", "654321", "abcdef",
    "letmein", "iloveyou", "welcome", "admin", "111111", "000000",
];

/// Below this length a password built around a weak pattern is refused.
const PATTERN_SAFE_LEN: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("Use at least {PASSWORD_MIN_LEN} characters.")]
    TooShort,
    #[error("Use at most {PASSWORD_MAX_LEN} characters.")]
    TooLong,
    #[error("This password appears in lists of breached passwords; choose another.")]
    Breached,
    #[error("This password is built around an easily guessed pattern; make it longer or choose another.")]
    Pattern,
    #[error("The password must not contain your email name.")]
    ContainsEmail,
    #[error("Use at least five different characters.")]
    TooRepetitive,
}

/// Checks `password` against the policy. `email_local` is the part of the user's email
/// before the `@`, which must not appear in the password.
pub fn check_password(password: &str, email_local: &str) -> Result<(), PasswordError> {
    let len = password.chars().count();
    if len < PASSWORD_MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    if len > PASSWORD_MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    let lower = password.to_lowercase();
    if BREACHED.contains(&lower.as_str()) {
        return Err(PasswordError::Breached);
    }
    if len < PATTERN_SAFE_LEN && WEAK_PATTERNS.iter().any(|p| lower.contains(p)) {
        return Err(PasswordError::Pattern);
    }
    let local = email_local.to_lowercase();
    if local.chars().count() >= 4 && lower.contains(&local) {
        return Err(PasswordError::ContainsEmail);
    }
    let mut distinct: Vec<char> = lower.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return Err(PasswordError::TooRepetitive);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_good_passwords() {
        assert_eq!(check_password("violet tram harbour 42", "alice"), Ok(()));
        assert_eq!(check_password("Zx8#kq!mW2pL", "alice"), Ok(()));
        // A long passphrase may contain a weak fragment.
        assert_eq!(
            check_password("my admin password is long enough", "alice"),
            Ok(())
        );
    }

    #[test]
    fn refuses_each_rule() {
        assert_eq!(check_password("short", "a"), Err(PasswordError::TooShort));
        assert_eq!(
            check_password(&"x".repeat(129), "a"),
            Err(PasswordError::TooLong)
        );
        assert_eq!(
            check_password("Password1234", "a"),
            Err(PasswordError::Breached)
        );
        assert_eq!(
            check_password("MyPassword!9x", "a"),
            Err(PasswordError::Pattern)
        );
        assert_eq!(
            check_password("xx-alice-horse-9", "alice"),
            Err(PasswordError::ContainsEmail)
        );
        assert_eq!(
            check_password("abababababab", "z"),
            Err(PasswordError::TooRepetitive)
        );
    }

    #[test]
    fn counts_characters_not_bytes() {
        // 11 characters, 22 bytes: still too short.
        assert_eq!(
            check_password("ééééééééééé", "a"),
            Err(PasswordError::TooShort)
        );
    }
}
