//! Stripe's webhook signatures. The header is `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`;
//! the signed string is `"{t}.{raw body}"`, signed with HMAC-SHA256 keyed with the endpoint
//! secret (`whsec_…`). Every `v1` is compared in constant time against every configured
//! secret (several while a rolled secret overlaps the old one), and the timestamp must be
//! within the tolerance (300 s, as Stripe's libraries use).

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Stripe's default tolerance, in seconds.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Expired,
    #[error("no signature matches")]
    Mismatch,
    #[error("no webhook secret is configured")]
    NotConfigured,
}

impl SignatureError {
    /// A bounded label for the rejection metric.
    pub fn reason(self) -> &'static str {
        match self {
            SignatureError::MissingHeader => "missing_header",
            SignatureError::Malformed => "malformed_header",
            SignatureError::Expired => "expired",
            SignatureError::Mismatch => "bad_signature",
            SignatureError::NotConfigured => "not_configured",
        }
    }
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(payload);
    m
}

/// The hex `v1` signature of `payload` at `timestamp`, as Stripe computes it.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, payload).finalize().into_bytes())
}

/// A `Stripe-Signature` header value, as Stripe sends it.
pub fn header(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, payload))
}

/// Checks the raw body against the header with any of `secrets`, at `now` (unix seconds).
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[SecretString],
    now: i64,
    tolerance: i64,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NotConfigured);
    }
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {} // v0 and future schemes are ignored
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let matches = secrets.iter().any(|secret| {
        signatures.iter().any(|sig| {
            mac(secret.expose_secret(), timestamp, payload)
                .verify_slice(sig)
                .is_ok()
        })
    });
    if !matches {
        return Err(SignatureError::Mismatch);
    }
    if (now - timestamp).abs() > tolerance {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(s: &[&str]) -> Vec<SecretString> {
        s.iter()
            .map(|s| SecretString::from((*s).to_owned()))
            .collect()
    }

    const BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    const NOW: i64 = 1_764_400_000;

    #[test]
    fn a_valid_signature_passes() {
        let h = header("whsec_a", NOW, BODY);
        assert_eq!(
            verify(BODY, Some(&h), &secrets(&["whsec_a"]), NOW, 300),
            Ok(())
        );
        // Known answer, computed independently with Python's hmac module.
        assert_eq!(
            sign("whsec_test", 1_700_000_000, b"{}"),
            "35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn a_wrong_secret_fails() {
        let h = header("whsec_other", NOW, BODY);
        assert_eq!(
            verify(BODY, Some(&h), &secrets(&["whsec_a"]), NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn during_rotation_either_secret_and_either_signature_pass() {
        let both = secrets(&["whsec_old", "whsec_new"]);
        let h = header("whsec_new", NOW, BODY);
        assert_eq!(verify(BODY, Some(&h), &both, NOW, 300), Ok(()));
        // Stripe signs with both while they overlap: one v1 per secret.
        let two = format!(
            "t={NOW},v1={},v1={}",
            sign("whsec_x", NOW, BODY),
            sign("whsec_old", NOW, BODY)
        );
        assert_eq!(verify(BODY, Some(&two), &both, NOW, 300), Ok(()));
    }

    #[test]
    fn an_old_or_future_timestamp_fails() {
        let h = header("whsec_a", NOW - 301, BODY);
        assert_eq!(
            verify(BODY, Some(&h), &secrets(&["whsec_a"]), NOW, 300),
            Err(SignatureError::Expired)
        );
        let h = header("whsec_a", NOW + 301, BODY);
        assert_eq!(
            verify(BODY, Some(&h), &secrets(&["whsec_a"]), NOW, 300),
            Err(SignatureError::Expired)
        );
        let h = header("whsec_a", NOW - 300, BODY);
        assert_eq!(
            verify(BODY, Some(&h), &secrets(&["whsec_a"]), NOW, 300),
            Ok(())
        );
    }

    #[test]
    fn a_tampered_body_fails() {
        let h = header("whsec_a", NOW, BODY);
        let tampered = br#"{"id":"evt_2","object":"event"}"#;
        assert_eq!(
            verify(tampered, Some(&h), &secrets(&["whsec_a"]), NOW, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_or_malformed_headers_fail() {
        let s = secrets(&["whsec_a"]);
        assert_eq!(
            verify(BODY, None, &s, NOW, 300),
            Err(SignatureError::MissingHeader)
        );
        for bad in [
            "",
            "garbage",
            "t=abc,v1=00",
            "v1=00",
            &format!("t={NOW}"),
            &format!("t={NOW},v1=zz"),
        ] {
            assert_eq!(
                verify(BODY, Some(bad), &s, NOW, 300),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        // v0 (Stripe's test-only scheme) is ignored, not trusted.
        let v0 = format!("t={NOW},v0={}", sign("whsec_a", NOW, BODY));
        assert_eq!(
            verify(BODY, Some(&v0), &s, NOW, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(BODY, Some("t=1,v1=00"), &[], NOW, 300),
            Err(SignatureError::NotConfigured)
        );
    }
}
