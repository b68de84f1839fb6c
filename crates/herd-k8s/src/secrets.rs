//! A tenant's app secrets, generated natively in the formats Mastodon expects, once. A
//! reconcile reads them back from the tenant's Secret and never generates them again:
//! changing `SECRET_KEY_BASE` logs everyone out, changing the Active Record encryption keys
//! loses data.

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use std::collections::BTreeMap;

pub const SECRET_KEY_BASE: &str = "SECRET_KEY_BASE";
pub const VAPID_PRIVATE_KEY: &str = "VAPID_PRIVATE_KEY";
pub const VAPID_PUBLIC_KEY: &str = "VAPID_PUBLIC_KEY";
pub const AR_PRIMARY_KEY: &str = "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY";
pub const AR_DETERMINISTIC_KEY: &str = "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY";
pub const AR_KEY_DERIVATION_SALT: &str = "ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT";
/// Mastodon up to 4.3 refuses to boot without it (`config/environments/production.rb`
/// fetches it; 4.4.0 removed it). Every tenant gets one, kept like the others, so a server
/// on 4.3 starts and keeps its two-factor secrets readable across upgrades; later versions
/// ignore it.
pub const OTP_SECRET: &str = "OTP_SECRET";
/// The password of the database's superuser where Herd runs PostgreSQL itself (the
/// StatefulSet's `POSTGRES_USER`), or of the app's login where CloudNativePG runs it.
/// Only the database's pod and its role keeper read it there: see [`DB_APP_PASS`].
pub const DB_PASS: &str = "DB_PASS";
/// The password of the app's own login to a StatefulSet database (a role without
/// superuser, owning the database and its `public` schema: see
/// `render::data::ROLES_SCRIPT`), which the app, the backups and the restores use. Made
/// for every tenant; a Secret made before it was kept gets one when read back.
pub const DB_APP_PASS: &str = "DB_APP_PASS";
pub const REDIS_PASSWORD: &str = "REDIS_PASSWORD";

/// Every key of the app Secret.
pub const KEYS: [&str; 8] = [
    SECRET_KEY_BASE,
    VAPID_PRIVATE_KEY,
    VAPID_PUBLIC_KEY,
    AR_PRIMARY_KEY,
    AR_DETERMINISTIC_KEY,
    AR_KEY_DERIVATION_SALT,
    DB_PASS,
    REDIS_PASSWORD,
];

/// The secrets a Mastodon server needs to run elsewhere on its own database: those an
/// export sealed to its owner carries, and those an import takes. Not the passwords of
/// this tenant's database and Redis ([`DB_PASS`], [`DB_APP_PASS`], [`REDIS_PASSWORD`]),
/// which stay valid here and are of no use elsewhere.
pub const PORTABLE: [&str; 7] = herd_domain::export::PORTABLE_SECRETS;

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the app secret lacks {0}")]
    Missing(&'static str),
    #[error("{0} is not in the expected format")]
    Malformed(&'static str),
}

/// The generated secrets of one tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct AppSecrets(BTreeMap<String, String>);

impl std::fmt::Debug for AppSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the values.
        f.debug_struct("AppSecrets")
            .field("keys", &self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn alnum(n: usize) -> String {
    let mut rng = OsRng;
    (0..n)
        .map(|_| ALNUM[rng.gen_range(0..ALNUM.len())] as char)
        .collect()
}

/// A P-256 key pair for Web Push: (private, public), URL-safe base64 with padding.
pub fn vapid_key_pair() -> (String, String) {
    let secret = p256::SecretKey::random(&mut OsRng);
    let public = secret.public_key().to_encoded_point(false);
    (
        URL_SAFE.encode(secret.to_bytes()),
        URL_SAFE.encode(public.as_bytes()),
    )
}

/// The public key that belongs to a VAPID private key.
pub fn vapid_public_from_private(private: &str) -> Result<String, SecretError> {
    let bytes = URL_SAFE
        .decode(private)
        .map_err(|_| SecretError::Malformed(VAPID_PRIVATE_KEY))?;
    let secret = p256::SecretKey::from_slice(&bytes)
        .map_err(|_| SecretError::Malformed(VAPID_PRIVATE_KEY))?;
    Ok(URL_SAFE.encode(secret.public_key().to_encoded_point(false).as_bytes()))
}

/// A new admin API access token for the moderator account: 32 random bytes as URL-safe
/// base64 without padding, 43 characters, the form of Doorkeeper's own tokens
/// (`SecureRandom.urlsafe_base64(32)`, its `UniqueToken` default).
pub fn api_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl AppSecrets {
    /// New secrets for a new tenant.
    pub fn generate() -> Self {
        let mut key_base = [0u8; 64];
        OsRng.fill_bytes(&mut key_base);
        let mut otp = [0u8; 64];
        OsRng.fill_bytes(&mut otp);
        let (vapid_private, vapid_public) = vapid_key_pair();
        let mut m = BTreeMap::new();
        m.insert(SECRET_KEY_BASE.to_owned(), hex::encode(key_base));
        m.insert(VAPID_PRIVATE_KEY.to_owned(), vapid_private);
        m.insert(VAPID_PUBLIC_KEY.to_owned(), vapid_public);
        m.insert(AR_PRIMARY_KEY.to_owned(), alnum(32));
        m.insert(AR_DETERMINISTIC_KEY.to_owned(), alnum(32));
        m.insert(AR_KEY_DERIVATION_SALT.to_owned(), alnum(32));
        m.insert(DB_PASS.to_owned(), alnum(40));
        m.insert(REDIS_PASSWORD.to_owned(), alnum(40));
        m.insert(OTP_SECRET.to_owned(), hex::encode(otp));
        m.insert(DB_APP_PASS.to_owned(), alnum(40));
        Self(m)
    }

    /// Reads secrets back from a Secret's data, checking every key is present and well
    /// formed, so that a damaged Secret is reported instead of silently replaced.
    pub fn from_data(data: &BTreeMap<String, String>) -> Result<Self, SecretError> {
        for key in KEYS {
            let v = data.get(key).ok_or(SecretError::Missing(key))?;
            if !well_formed(key, v) {
                return Err(SecretError::Malformed(key));
            }
        }
        let private = &data[VAPID_PRIVATE_KEY];
        if vapid_public_from_private(private)? != data[VAPID_PUBLIC_KEY] {
            return Err(SecretError::Malformed(VAPID_PUBLIC_KEY));
        }
        let mut m: BTreeMap<String, String> = KEYS
            .iter()
            .map(|k| ((*k).to_owned(), data[*k].clone()))
            .collect();
        // A Secret made before OTP_SECRET was kept gets one now, once: the next apply of
        // the Secret stores it.
        let otp = match data.get(OTP_SECRET) {
            Some(v) if well_formed(OTP_SECRET, v) => v.clone(),
            Some(_) => return Err(SecretError::Malformed(OTP_SECRET)),
            None => {
                let mut otp = [0u8; 64];
                OsRng.fill_bytes(&mut otp);
                hex::encode(otp)
            }
        };
        m.insert(OTP_SECRET.to_owned(), otp);
        // The same for the app's own database login, which came after.
        let app_pass = match data.get(DB_APP_PASS) {
            Some(v) if well_formed(DB_APP_PASS, v) => v.clone(),
            Some(_) => return Err(SecretError::Malformed(DB_APP_PASS)),
            None => alnum(40),
        };
        m.insert(DB_APP_PASS.to_owned(), app_pass);
        Ok(Self(m))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The Secret's `stringData`.
    pub fn data(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Only the [`PORTABLE`] ones (none for an app that has none of them).
    pub fn portable(&self) -> AppSecrets {
        AppSecrets(
            self.0
                .iter()
                .filter(|(k, _)| PORTABLE.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

fn well_formed(key: &str, v: &str) -> bool {
    let is_alnum = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric());
    match key {
        SECRET_KEY_BASE | OTP_SECRET => {
            v.len() == 128
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }
        VAPID_PRIVATE_KEY => v.len() == 44 && URL_SAFE.decode(v).is_ok_and(|b| b.len() == 32),
        VAPID_PUBLIC_KEY => {
            v.len() == 88
                && URL_SAFE
                    .decode(v)
                    .is_ok_and(|b| b.len() == 65 && b[0] == 0x04)
        }
        AR_PRIMARY_KEY | AR_DETERMINISTIC_KEY | AR_KEY_DERIVATION_SALT => is_alnum(v, 32),
        DB_PASS | DB_APP_PASS | REDIS_PASSWORD => {
            v.len() >= 24 && v.bytes().all(|b| b.is_ascii_alphanumeric())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_portable_secrets_are_every_generated_one_but_the_passwords() {
        let generated = AppSecrets::generate();
        let kept = generated.portable();
        let portable: Vec<&str> = kept.data().keys().map(String::as_str).collect();
        let mut want = PORTABLE.to_vec();
        want.sort_unstable();
        assert_eq!(portable, want, "each portable name is one Herd generates");
        for password in [DB_PASS, DB_APP_PASS, REDIS_PASSWORD] {
            assert!(generated.data().contains_key(password));
            assert!(!generated.portable().data().contains_key(password));
        }
    }

    #[test]
    fn api_tokens_are_doorkeepers_form_and_new_each_time() {
        let a = api_token();
        assert_eq!(a.len(), 43, "{a}");
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{a}"
        );
        assert_ne!(a, api_token());
    }

    #[test]
    fn otp_secret_is_made_once_and_kept() {
        let s = AppSecrets::generate();
        let otp = s.get(OTP_SECRET).expect("an OTP_SECRET").to_owned();
        assert!(well_formed(OTP_SECRET, &otp));
        // Read back: kept as it is.
        let again = AppSecrets::from_data(s.data()).expect("valid");
        assert_eq!(again.get(OTP_SECRET), Some(otp.as_str()));
        // A Secret from before it was kept: the other values stay, one is made.
        let mut old = s.data().clone();
        old.remove(OTP_SECRET);
        let upgraded = AppSecrets::from_data(&old).expect("still valid");
        assert_eq!(upgraded.get(SECRET_KEY_BASE), s.get(SECRET_KEY_BASE));
        let made = upgraded.get(OTP_SECRET).expect("made");
        assert!(well_formed(OTP_SECRET, made) && made != otp);
        // A damaged one is reported, not replaced.
        old.insert(OTP_SECRET.to_owned(), "short".into());
        assert_eq!(
            AppSecrets::from_data(&old),
            Err(SecretError::Malformed(OTP_SECRET))
        );
    }

    #[test]
    fn the_apps_database_password_is_made_once_and_kept() {
        let s = AppSecrets::generate();
        let pass = s.get(DB_APP_PASS).expect("a DB_APP_PASS").to_owned();
        assert!(well_formed(DB_APP_PASS, &pass));
        assert_ne!(s.get(DB_APP_PASS), s.get(DB_PASS), "not the superuser's");
        let again = AppSecrets::from_data(s.data()).expect("valid");
        assert_eq!(again.get(DB_APP_PASS), Some(pass.as_str()));
        // A Secret from before it was kept: one is made, the superuser's stays.
        let mut old = s.data().clone();
        old.remove(DB_APP_PASS);
        let upgraded = AppSecrets::from_data(&old).expect("still valid");
        assert_eq!(upgraded.get(DB_PASS), s.get(DB_PASS));
        let made = upgraded.get(DB_APP_PASS).expect("made");
        assert!(well_formed(DB_APP_PASS, made) && made != pass);
        old.insert(DB_APP_PASS.to_owned(), "short".into());
        assert_eq!(
            AppSecrets::from_data(&old),
            Err(SecretError::Malformed(DB_APP_PASS))
        );
    }

    #[test]
    fn formats_match_what_mastodon_expects() {
        let s = AppSecrets::generate();
        let kb = s.get(SECRET_KEY_BASE).expect("key base");
        assert_eq!(kb.len(), 128);
        assert!(kb
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        let private = s.get(VAPID_PRIVATE_KEY).expect("private");
        let public = s.get(VAPID_PUBLIC_KEY).expect("public");
        assert_eq!(private.len(), 44);
        assert!(private.ends_with('='));
        assert_eq!(URL_SAFE.decode(private).expect("b64").len(), 32);
        assert_eq!(public.len(), 88);
        let point = URL_SAFE.decode(public).expect("b64");
        assert_eq!(
            (point.len(), point[0]),
            (65, 0x04),
            "uncompressed P-256 point"
        );
        assert!(
            !public.contains('+') && !public.contains('/'),
            "URL-safe alphabet"
        );
        for k in [AR_PRIMARY_KEY, AR_DETERMINISTIC_KEY, AR_KEY_DERIVATION_SALT] {
            let v = s.get(k).expect(k);
            assert_eq!(v.len(), 32, "{k}");
            assert!(v.chars().all(|c| c.is_ascii_alphanumeric()), "{k}");
        }
    }

    #[test]
    fn vapid_public_key_derives_from_the_private_key() {
        let s = AppSecrets::generate();
        let derived =
            vapid_public_from_private(s.get(VAPID_PRIVATE_KEY).expect("private")).expect("derive");
        assert_eq!(derived, s.get(VAPID_PUBLIC_KEY).expect("public"));
        let (p2, q2) = vapid_key_pair();
        assert_ne!(derived, q2);
        assert_eq!(vapid_public_from_private(&p2).expect("derive"), q2);
    }

    #[test]
    fn secrets_are_random() {
        let a = AppSecrets::generate();
        let b = AppSecrets::generate();
        for k in KEYS {
            assert_ne!(a.get(k), b.get(k), "{k}");
        }
    }

    #[test]
    fn reading_back_checks_every_key() {
        let s = AppSecrets::generate();
        assert_eq!(AppSecrets::from_data(s.data()), Ok(s.clone()));
        let mut missing = s.data().clone();
        missing.remove(AR_PRIMARY_KEY);
        assert_eq!(
            AppSecrets::from_data(&missing),
            Err(SecretError::Missing(AR_PRIMARY_KEY))
        );
        let mut bad = s.data().clone();
        bad.insert(SECRET_KEY_BASE.into(), "XYZ".into());
        assert_eq!(
            AppSecrets::from_data(&bad),
            Err(SecretError::Malformed(SECRET_KEY_BASE))
        );
        let mut mismatched = s.data().clone();
        mismatched.insert(VAPID_PUBLIC_KEY.into(), vapid_key_pair().1);
        assert_eq!(
            AppSecrets::from_data(&mismatched),
            Err(SecretError::Malformed(VAPID_PUBLIC_KEY))
        );
        assert!(
            !format!("{s:?}").contains(s.get(SECRET_KEY_BASE).expect("kb")),
            "Debug hides values"
        );
    }
}
