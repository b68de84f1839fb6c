//! Random tokens, their hashes, and password hashing (argon2id).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// 256 random bits, URL-safe.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// What is stored for a token sent by email: its SHA-256.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Hashes a password with argon2id (OWASP's default parameters), off the async threads.
pub async fn hash_password(password: String) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Verifies a password against a stored hash, off the async threads. A malformed hash
/// verifies nothing.
pub async fn verify_password(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash to verify against when the account does not exist, so that a wrong email takes
/// as long as a wrong password.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$VdWj6H6Yq0NpBzCwQ3E+5yZ3nUpuO0Q0f1sNqAqfXhY";

/// A human-friendly random password for generated accounts (20 characters, ~119 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn password_hash_round_trip() {
        let h = hash_password("violet tram harbour".into())
            .await
            .expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("violet tram harbour".into(), h.clone()).await);
        assert!(!verify_password("violet tram harbor".into(), h).await);
        assert!(!verify_password("x".into(), "garbage".into()).await);
        assert!(!verify_password("x".into(), DUMMY_HASH.into()).await);
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = random_token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token());
        assert_eq!(token_hash(&a).len(), 32);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_eq!(random_password().len(), 20);
    }
}
