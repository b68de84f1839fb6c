//! A tenant's app secrets, sealed for its backups.
//!
//! A database dump alone does not restore a Mastodon server: without `SECRET_KEY_BASE`,
//! the Active Record encryption keys, `OTP_SECRET` and the VAPID keys, encrypted columns
//! and two-factor secrets cannot be read and every session and push subscription breaks.
//! So every backup carries the tenant's `app-secrets` too, but never in clear: the
//! operator encrypts them to the control plane's [age](https://age-encryption.org/v1)
//! recipient (an X25519 public key, `HERD_BACKUP_SECRETS_RECIPIENT`) before anything
//! leaves its process. Only the holder of the matching identity (kept by the platform's
//! operators, never in a cluster) can open them: `age -d -i identity.txt
//! app-secrets.env.age`. The plain text is an env file, `KEY=value` per line, which
//! `kubectl create secret generic app-secrets --from-env-file=…` reads back.

use crate::secrets::AppSecrets;
use sha2::{Digest, Sha256};
use std::str::FromStr;

/// The sealed secrets' object name in a backup (and in an export that has them).
pub use herd_domain::export::SECRETS_ARTIFACT;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("HERD_BACKUP_SECRETS_RECIPIENT is not an age X25519 recipient (age1…): {0}")]
    Recipient(String),
    #[error("could not encrypt the app secrets: {0}")]
    Encrypt(String),
}

/// Parses an age X25519 recipient (`age1…`).
pub fn recipient(s: &str) -> Result<age::x25519::Recipient, SealError> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|e| SealError::Recipient(e.to_string()))
}

/// The secrets as an env file (sorted, one `KEY=value` per line). Every value is from a
/// fixed alphabet (hex, base64url, alphanumerics), so no quoting is needed.
pub fn env_file(secrets: &AppSecrets) -> String {
    secrets
        .data()
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect()
}

/// A digest of the secrets and the recipient, stamped on the sealed Secret: the operator
/// seals again only when one of them changed (age output is randomized, so sealing on
/// every reconcile would rewrite the Secret every time).
pub fn digest(secrets: &AppSecrets, recipient: &str) -> String {
    let mut h = Sha256::new();
    h.update(recipient.trim().as_bytes());
    h.update(b"\0");
    h.update(env_file(secrets).as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The secrets encrypted to `recipient` (binary age format).
pub fn seal(secrets: &AppSecrets, recipient_str: &str) -> Result<Vec<u8>, SealError> {
    let r = recipient(recipient_str)?;
    age::encrypt(&r, env_file(secrets).as_bytes()).map_err(|e| SealError::Encrypt(e.to_string()))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn sealed_secrets_open_only_with_the_identity_and_read_back_as_an_env_file() {
        let identity = age::x25519::Identity::generate();
        let public = identity.to_public().to_string();
        let secrets = AppSecrets::generate();
        let sealed = seal(&secrets, &public).unwrap();
        let text = String::from_utf8_lossy(&sealed);
        for (k, v) in secrets.data() {
            assert!(!text.contains(v.as_str()), "{k} in clear");
        }
        let opened = String::from_utf8(age::decrypt(&identity, &sealed).unwrap()).unwrap();
        let back: std::collections::BTreeMap<String, String> = opened
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        assert_eq!(&back, secrets.data());
        assert!(back.contains_key("OTP_SECRET") && back.contains_key("SECRET_KEY_BASE"));
        // Another identity cannot open them.
        let other = age::x25519::Identity::generate();
        assert!(age::decrypt(&other, &sealed).is_err());
        // The identity is the only secret: it never appears in what is sealed.
        assert!(!text.contains(identity.to_string().expose_secret()));
    }

    #[test]
    fn a_bad_recipient_is_refused_with_the_setting_named() {
        let err = seal(&AppSecrets::generate(), "not-a-key").unwrap_err();
        assert!(
            err.to_string().contains("HERD_BACKUP_SECRETS_RECIPIENT"),
            "{err}"
        );
    }

    #[test]
    fn the_digest_follows_the_secrets_and_the_recipient() {
        let a = AppSecrets::generate();
        let b = AppSecrets::generate();
        assert_eq!(digest(&a, "age1x"), digest(&a, "age1x"));
        assert_ne!(digest(&a, "age1x"), digest(&b, "age1x"));
        assert_ne!(digest(&a, "age1x"), digest(&a, "age1y"));
    }
}
