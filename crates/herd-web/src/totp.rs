//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits), the
//! enrolment URI and QR code, and recovery codes.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;

pub const STEP_SECONDS: i64 = 30;
pub const DIGITS: u32 = 6;
/// Steps accepted either side of now, for clocks that drift.
pub const WINDOW: i64 = 1;

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A new 160-bit secret, base32 (no padding), as authenticator apps expect.
pub fn new_secret() -> String {
    let mut b = [0u8; 20];
    rand::thread_rng().fill_bytes(&mut b);
    base32_encode(&b)
}

pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(B32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = B32
            .iter()
            .position(|&b| b as char == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The code for one time step.
pub fn code_at(secret: &[u8], step: i64) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = (h[19] & 0x0f) as usize;
    let bin = (u32::from(h[offset] & 0x7f) << 24)
        | (u32::from(h[offset + 1]) << 16)
        | (u32::from(h[offset + 2]) << 8)
        | u32::from(h[offset + 3]);
    format!(
        "{:0width$}",
        bin % 10u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

/// The step of a Unix time.
pub fn step_of(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS)
}

/// The step `code` matches within the window around `unix_seconds`, if any.
pub fn verify(secret_b32: &str, code: &str, unix_seconds: i64) -> Option<i64> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secret = base32_decode(secret_b32)?;
    let now = step_of(unix_seconds);
    (now - WINDOW..=now + WINDOW).find(|&s| code_at(&secret, s) == code)
}

/// The `otpauth://` URI an authenticator app scans.
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={}&period={}",
        enc(issuer),
        enc(account),
        secret_b32,
        enc(issuer),
        DIGITS,
        STEP_SECONDS
    )
}

/// The URI as an inline SVG QR code.
pub fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build(),
        Err(_) => String::new(),
    }
}

/// Ten recovery codes like `k3f9-x2pq-7mzt`.
pub fn recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    (0..10)
        .map(|_| {
            let chars: String = (0..12)
                .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
                .collect();
            format!("{}-{}-{}", &chars[0..4], &chars[4..8], &chars[8..12])
        })
        .collect()
}

/// Recovery codes are compared without dashes, spaces or case.
pub fn normalize_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238, appendix B (SHA-1 secret "12345678901234567890"), 8-digit values truncated
    // to their last 6 digits.
    #[test]
    fn matches_rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        for (t, expected) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_at(secret, step_of(t)), expected, "t={t}");
        }
    }

    #[test]
    fn base32_round_trip() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI").as_deref(), Some(&b"foobar"[..]));
        let s = new_secret();
        assert_eq!(s.len(), 32);
        assert_eq!(base32_decode(&s).map(|v| v.len()), Some(20));
        assert_eq!(base32_decode("not base32!"), None);
    }

    #[test]
    fn verifies_within_window_only() {
        let secret = new_secret();
        let raw = base32_decode(&secret).expect("decode");
        let now = 1_700_000_000;
        let code = code_at(&raw, step_of(now));
        assert_eq!(verify(&secret, &code, now), Some(step_of(now)));
        assert_eq!(verify(&secret, &code, now + 30), Some(step_of(now)));
        assert_eq!(verify(&secret, &code, now + 120), None);
        assert_eq!(verify(&secret, "12345", now), None);
        assert_eq!(verify(&secret, "abcdef", now), None);
    }

    #[test]
    fn enrolment_material() {
        let uri = otpauth_uri("Herd", "ops@example.org", "MZXW6YTBOI");
        assert!(
            uri.starts_with("otpauth://totp/Herd:ops%40example.org?secret=MZXW6YTBOI&issuer=Herd")
        );
        assert!(qr_svg(&uri).contains("<svg"));
        let codes = recovery_codes();
        assert_eq!(codes.len(), 10);
        assert_eq!(normalize_recovery_code(&codes[0].to_uppercase()).len(), 12);
    }
}
