//! Media in object storage (`spec.mediaS3`) are not copied by Herd's backups: the
//! bucket's versioning is their backup (a deleted or overwritten upload keeps its earlier
//! version). The operator reads that versioning (`GetBucketVersioning`) with the tenant's
//! own media credentials, every [`CHECK_EVERY`] and whenever the bucket changes, and
//! reports it in `status.mediaBucket`; the control plane raises the tenant's backup alert
//! unless it is `Enabled`. Herd does not turn versioning on: the tenant's credentials are
//! for its media, not for its bucket's settings (docs/BACKUPS.md says how).

use crate::crd::{BucketVersioning, MediaBucketStatus, S3Spec};
use crate::presign::BackupCredentials;
use rusty_s3::{Bucket, UrlStyle};
use std::time::Duration;

/// How often the versioning is read again.
pub const CHECK_EVERY: Duration = Duration::from_secs(60 * 60);

/// How soon an unreadable bucket is tried again (one timeout or 503 is not an alert: the
/// control plane waits an hour of them, `herd_domain::backup::MEDIA_UNREADABLE_GRACE`).
pub const RETRY_UNREADABLE: Duration = Duration::from_secs(5 * 60);

/// How long one read may take, and its connection.
pub const TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of an answer read: a versioning configuration or an error document is a few
/// hundred bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// The client the operator reads buckets with: no redirect followed (S3 answers a wrong
/// region or endpoint with one; following it would send the signed request elsewhere),
/// bounded times.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// Whether `last` is due to be read again at `now` for bucket `s3`: after
/// [`CHECK_EVERY`] ([`RETRY_UNREADABLE`] when it was unreadable), or at once when the
/// bucket, endpoint, region or Secret changed or the time is unreadable.
pub fn due(last: &MediaBucketStatus, s3: &S3Spec, now: jiff::Timestamp) -> bool {
    if last.bucket != s3.bucket
        || last.endpoint != s3.endpoint
        || last.region != s3.region
        || last.secret_ref != s3.secret_ref
    {
        return true;
    }
    let every = match last.versioning {
        BucketVersioning::Unreadable => RETRY_UNREADABLE,
        _ => CHECK_EVERY,
    };
    match last.checked_at.parse::<jiff::Timestamp>() {
        Ok(at) => now.duration_since(at).unsigned_abs() >= every,
        Err(_) => true,
    }
}

/// What went wrong with a request, without its URL (it carries the key's id and the
/// signature), with the cause reqwest's own message leaves out.
fn failure(what: &str, e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut why = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    let why: String = why.chars().take(200).collect();
    match why.is_empty() {
        true => format!("{what} {kind}"),
        false => format!("{what} {kind} ({why})"),
    }
}

/// The presigned `GET …/<bucket>/?versioning` (path style, as the backup URLs), valid
/// for a minute from `now`.
pub fn versioning_url(
    s3: &S3Spec,
    credentials: &BackupCredentials,
    now: jiff::Timestamp,
) -> Result<url::Url, String> {
    let endpoint: url::Url = s3
        .endpoint
        .parse()
        .ok()
        .filter(|u: &url::Url| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| format!("the endpoint {:?} is not an http(s) URL", s3.endpoint))?;
    let region = s3.region.clone().unwrap_or_else(|| "us-east-1".to_owned());
    let bucket = Bucket::new(endpoint, UrlStyle::Path, s3.bucket.clone(), region)
        .map_err(|_| format!("the bucket name {:?} cannot be used in a URL", s3.bucket))?;
    Ok(rusty_s3::signing::sign(
        &now,
        rusty_s3::Method::Get,
        bucket.base_url().clone(),
        &credentials.access_key_id,
        &credentials.secret_access_key,
        None,
        bucket.region(),
        60,
        std::iter::once(("versioning", "")),
        std::iter::empty(),
    ))
}

/// The versioning a `GetBucketVersioning` answer says: `Enabled` or `Suspended` as its
/// `Status`; `Off` for a configuration without one (a bucket whose versioning was never
/// turned on); `None` for anything else (an error document, another body).
pub fn parse(body: &str) -> Option<BucketVersioning> {
    if !body.contains("<VersioningConfiguration") {
        return None;
    }
    Some(match element(body, "Status") {
        Some("Enabled") => BucketVersioning::Enabled,
        Some("Suspended") => BucketVersioning::Suspended,
        Some(_) => return None,
        None => BucketVersioning::Off,
    })
}

/// The error code of an S3 error document (`<Code>AccessDenied</Code>`), as letters and
/// digits only (it ends up in the status, the alert and the tenant's history: nothing
/// else an endpoint says is repeated).
fn error_code(body: &str) -> String {
    let code: String = element(body, "Code")
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    match code.is_empty() {
        true => "(no error code)".to_owned(),
        false => code,
    }
}

/// The text of the first `<name>…</name>` of `xml`, trimmed.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + len].trim())
}

/// Reads the versioning of `s3`'s bucket with `credentials` (`Err`: why there are none)
/// at `now`. Never fails: what went wrong is the status's `Unreadable` and its message
/// (no credential, URL or signature in it).
pub async fn check(
    http: &reqwest::Client,
    s3: &S3Spec,
    credentials: Result<BackupCredentials, String>,
    now: jiff::Timestamp,
) -> MediaBucketStatus {
    let read = async {
        let credentials = credentials?;
        let url = versioning_url(s3, &credentials, now)?;
        let mut response = http
            .get(url)
            .send()
            .await
            .map_err(|e| failure("the request", &e))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failure("reading the answer", &e))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(format!(
                    "HTTP {}, with an answer longer than {MAX_BODY} bytes",
                    status.as_u16()
                ));
            }
        }
        let body = String::from_utf8_lossy(&body);
        if !status.is_success() {
            return Err(format!("HTTP {} {}", status.as_u16(), error_code(&body)));
        }
        parse(&body).ok_or_else(|| {
            format!(
                "HTTP {}, but not a versioning configuration",
                status.as_u16()
            )
        })
    };
    let (versioning, message) = match read.await {
        Ok(v) => (v, None),
        Err(why) => (BucketVersioning::Unreadable, Some(why)),
    };
    MediaBucketStatus {
        bucket: s3.bucket.clone(),
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        secret_ref: s3.secret_ref.clone(),
        versioning,
        checked_at: now.to_string(),
        message,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn s3() -> S3Spec {
        S3Spec {
            bucket: "lyon-media".into(),
            endpoint: "https://s3.fr-par.scw.cloud".into(),
            region: Some("fr-par".into()),
            alias_host: None,
            secret_ref: "media-s3".into(),
            permission: None,
        }
    }

    #[test]
    fn the_answers_of_get_bucket_versioning_are_read() {
        let ns = r#"xmlns="http://s3.amazonaws.com/doc/2006-03-01/""#;
        for (body, want) in [
            (
                format!(r#"<?xml version="1.0" encoding="UTF-8"?><VersioningConfiguration {ns}><Status>Enabled</Status></VersioningConfiguration>"#),
                Some(BucketVersioning::Enabled),
            ),
            (
                format!("<VersioningConfiguration {ns}>\n  <Status>Suspended</Status>\n  <MfaDelete>Disabled</MfaDelete>\n</VersioningConfiguration>"),
                Some(BucketVersioning::Suspended),
            ),
            (format!("<VersioningConfiguration {ns}/>"), Some(BucketVersioning::Off)),
            (
                "<Error><Code>AccessDenied</Code><Status>Enabled</Status></Error>".to_owned(),
                None,
            ),
            (
                format!("<VersioningConfiguration {ns}><Status>Maybe</Status></VersioningConfiguration>"),
                None,
            ),
        ] {
            assert_eq!(parse(&body), want, "{body}");
        }
    }

    #[test]
    fn only_an_error_codes_letters_are_repeated() {
        assert_eq!(
            error_code("<Error><Code>SignatureDoesNotMatch</Code></Error>"),
            "SignatureDoesNotMatch"
        );
        assert_eq!(
            error_code("<Error><Code>Nope\n<a href=x>click</a></Code></Error>"),
            "Nopeahrefxclicka"
        );
        assert_eq!(
            error_code("<html>502 Bad Gateway</html>"),
            "(no error code)"
        );
    }

    #[test]
    fn the_url_asks_for_the_versioning_of_the_bucket_path_style_and_signed() {
        let creds = BackupCredentials {
            access_key_id: "AKIDMEDIA".into(),
            secret_access_key: "s3cr3t".into(),
        };
        let now: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let url = versioning_url(&s3(), &creds, now).unwrap();
        assert_eq!(url.path(), "/lyon-media/");
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert!(
            query.contains(&("versioning".into(), String::new())),
            "{url}"
        );
        assert!(query
            .iter()
            .any(|(k, v)| k == "X-Amz-Credential"
                && v == "AKIDMEDIA/20261207/fr-par/s3/aws4_request"));
        assert!(query.iter().any(|(k, _)| k == "X-Amz-Signature"));
        assert!(!url.as_str().contains("s3cr3t"));
        // The signature AWS computes for this request (written out independently).
        use crate::presign::tests::{sigv4, KEY_ID, SECRET};
        let creds = BackupCredentials {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
        };
        let url = versioning_url(&s3(), &creds, now).unwrap();
        let query = url.query().unwrap();
        let (unsigned, signature) = query.split_once("&X-Amz-Signature=").unwrap();
        assert!(unsigned.ends_with("&versioning="), "{unsigned}");
        assert_eq!(
            signature,
            sigv4(
                "GET",
                "s3.fr-par.scw.cloud",
                "/lyon-media/",
                unsigned,
                "20261207T100000Z",
                "fr-par"
            )
        );
        let mut bad = s3();
        bad.endpoint = "s3.fr-par.scw.cloud".into();
        assert!(versioning_url(&bad, &creds, now).is_err());
    }

    #[test]
    fn it_is_read_again_hourly_and_when_the_bucket_changes() {
        let now: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let last = MediaBucketStatus {
            bucket: "lyon-media".into(),
            endpoint: "https://s3.fr-par.scw.cloud".into(),
            region: Some("fr-par".into()),
            secret_ref: "media-s3".into(),
            versioning: BucketVersioning::Enabled,
            checked_at: "2026-12-07T09:30:00Z".into(),
            message: None,
        };
        assert!(!due(&last, &s3(), now));
        let later: jiff::Timestamp = "2026-12-07T10:30:00Z".parse().unwrap();
        assert!(due(&last, &s3(), later));
        let mut moved = s3();
        moved.bucket = "lyon-media-2".into();
        assert!(due(&last, &moved, now));
        let mut region = s3();
        region.region = Some("nl-ams".into());
        assert!(due(&last, &region, now));
        let mut key = s3();
        key.secret_ref = "media-s3-rotated".into();
        assert!(due(&last, &key, now));
        // Unreadable: tried again within minutes.
        let unreadable = MediaBucketStatus {
            versioning: BucketVersioning::Unreadable,
            ..last.clone()
        };
        let soon: jiff::Timestamp = "2026-12-07T09:35:00Z".parse().unwrap();
        assert!(due(&unreadable, &s3(), soon));
        assert!(!due(&last, &s3(), soon));
        let garbled = MediaBucketStatus {
            checked_at: "yesterday".into(),
            ..last
        };
        assert!(due(&garbled, &s3(), now));
    }
}
