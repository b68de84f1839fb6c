//! Secrets kept in the database (cluster kubeconfigs, owners' one-time passwords) are
//! sealed with XChaCha20-Poly1305 under a key from the environment (`HERD_ENCRYPTION_KEY`,
//! 32 bytes in base64). Each sealed value is bound to what it is for (the associated
//! data), so a value copied onto another row does not open there.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::fmt;

const NONCE: usize = 24;

/// The key; its `Debug` never shows it.
#[derive(Clone)]
pub struct SealKey(XChaCha20Poly1305);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "HERD_ENCRYPTION_KEY must be 32 bytes in base64 (make one with `openssl rand -base64 32`)"
    )]
    BadKey,
    #[error(
        "the sealed value cannot be opened: wrong HERD_ENCRYPTION_KEY, or it was tampered with"
    )]
    Open,
}

impl SealKey {
    /// Parses a base64 key of 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, SealError> {
        let bytes = STANDARD.decode(s.trim()).map_err(|_| SealError::BadKey)?;
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        Ok(Self(
            XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?,
        ))
    }

    /// A fresh random key in base64 (for `make run` and tests).
    pub fn generate_base64() -> String {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        STANDARD.encode(k)
    }

    /// Seals `plain` for `purpose`: a random nonce, then the ciphertext.
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        // Encryption with a valid key and nonce cannot fail.
        out.extend(
            self.0
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: plain,
                        aad: purpose.as_bytes(),
                    },
                )
                .unwrap_or_default(),
        );
        out
    }

    /// Opens what [`seal`](Self::seal) made for the same `purpose`.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE + 16 {
            return Err(SealError::Open);
        }
        let (nonce, ct) = sealed.split_at(NONCE);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }
}

/// The purpose a cluster's kubeconfig is sealed for.
pub fn kubeconfig_purpose(cluster_name: &str) -> String {
    format!("herd:kubeconfig:{cluster_name}")
}

/// The purpose an instance's owner password is sealed for.
pub fn owner_password_purpose(instance: uuid::Uuid) -> String {
    format!("herd:owner-password:{instance}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_for_the_same_purpose_and_key() {
        let key =
            SealKey::from_base64(&SealKey::generate_base64()).unwrap_or_else(|e| panic!("{e}"));
        let sealed = key.seal("a", b"kubeconfig: yes");
        assert!(!sealed.windows(4).any(|w| w == b"kube"), "plaintext leaked");
        assert_eq!(key.open("a", &sealed), Ok(b"kubeconfig: yes".to_vec()));
        assert_eq!(key.open("b", &sealed), Err(SealError::Open));
        let other =
            SealKey::from_base64(&SealKey::generate_base64()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(other.open("a", &sealed), Err(SealError::Open));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open("a", &tampered), Err(SealError::Open));
        assert_eq!(key.open("a", b"short"), Err(SealError::Open));
        // Two seals of one value differ (fresh nonces).
        assert_ne!(key.seal("a", b"x"), key.seal("a", b"x"));
        assert_eq!(
            SealKey::from_base64("dG9vIHNob3J0").err(),
            Some(SealError::BadKey)
        );
        assert!(format!("{key:?}").contains(".."));
    }
}
