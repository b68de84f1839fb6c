//! Media in object storage: the operator reads the bucket's versioning with the tenant's
//! own media credentials and reports it in `status.mediaBucket` (the control plane alerts
//! unless it is on). The bucket is a local HTTP server answering `GetBucketVersioning` as
//! S3 does: it checks the request's SigV4 signature against the key it knows, its expiry
//! and its date on its own clock, and answers 403 or 404 with S3's error codes.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;
use crate::operator::{harness_with, Harness, TENANT};
use herd_k8s::crd::{BucketVersioning, MediaBucketStatus, S3Spec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

const KEY_ID: &str = "AKIDLYONMEDIA";
const SECRET: &str = "lyon-media-secret-key";

/// What the fake bucket answers, and what it was asked.
#[derive(Default)]
struct State {
    /// `Some("Enabled")`, `Some("Suspended")`, or `None` (never turned on).
    status: Option<&'static str>,
    now: Option<jiff::Timestamp>,
    requests: Vec<String>,
}

struct FakeS3 {
    url: String,
    state: Arc<Mutex<State>>,
}

impl FakeS3 {
    /// Serves bucket `bucket` (region `fr-par`) on a free port, in a thread.
    fn start(bucket: &'static str) -> FakeS3 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let base = url.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                // The headers: `host` is signed, so it must be the address served here.
                let mut host = None;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = h.split_once(':') {
                        if name.eq_ignore_ascii_case("host") {
                            host = Some(value.trim().to_owned());
                        }
                    }
                }
                let target = line.split(' ').nth(1).unwrap_or("").to_owned();
                let (code, body) = match host.as_deref() == base.strip_prefix("http://") {
                    true => answer(&base, bucket, &target, &s),
                    false => (403, error("SignatureDoesNotMatch")),
                };
                s.lock().unwrap().requests.push(target);
                let (reason, location) = match code {
                    200 => ("OK", String::new()),
                    // As S3 answers a bucket asked at another region's endpoint.
                    301 => (
                        "Moved Permanently",
                        format!("location: {base}/{bucket}/?versioning\r\n"),
                    ),
                    403 => ("Forbidden", String::new()),
                    _ => ("Not Found", String::new()),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} {reason}\r\n{location}content-type: application/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeS3 { url, state }
    }

    fn set(&self, status: Option<&'static str>, now: jiff::Timestamp) {
        let mut s = self.state.lock().unwrap();
        s.status = status;
        s.now = Some(now);
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

fn error(code: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>refused</Message></Error>")
}

/// S3's answer to `GET target`: the signature must be the one [`KEY_ID`]'s secret gives
/// for this very request, made within its validity on the bucket's clock.
fn answer(base: &str, bucket: &str, target: &str, state: &Mutex<State>) -> (u16, String) {
    let url: url::Url = format!("{base}{target}").parse().unwrap();
    let q: std::collections::BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let (Some(credential), Some(date), Some(expires), Some(signature), Some("host")) = (
        q.get("X-Amz-Credential"),
        q.get("X-Amz-Date"),
        q.get("X-Amz-Expires"),
        q.get("X-Amz-Signature"),
        q.get("X-Amz-SignedHeaders").map(String::as_str),
    ) else {
        return (403, error("AccessDenied"));
    };
    if !credential.starts_with(&format!("{KEY_ID}/")) {
        return (403, error("InvalidAccessKeyId"));
    }
    let signed_at = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", date)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp();
    // What the signature must be: the request signed again with the secret, its own
    // parameters (all but the signature) in order.
    let params: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| !k.starts_with("X-Amz-"))
        .collect();
    let mut unsigned = url.clone();
    unsigned.set_query(None);
    let expected = rusty_s3::signing::sign(
        &signed_at,
        rusty_s3::Method::Get,
        unsigned,
        KEY_ID,
        SECRET,
        None,
        "fr-par",
        expires.parse().unwrap(),
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        std::iter::empty(),
    );
    let expected: std::collections::BTreeMap<String, String> =
        expected.query_pairs().into_owned().collect();
    if expected.get("X-Amz-Signature") != Some(signature) {
        return (403, error("SignatureDoesNotMatch"));
    }
    let s = state.lock().unwrap();
    let now = s.now.unwrap();
    let valid = jiff::SignedDuration::from_secs(expires.parse().unwrap());
    if now < signed_at - jiff::SignedDuration::from_secs(900) || now > signed_at + valid {
        return (403, error("AccessDenied"));
    }
    if url.path() == "/lyon-media-elsewhere/" {
        return (301, error("PermanentRedirect"));
    }
    if url.path() != format!("/{bucket}/") {
        return (404, error("NoSuchBucket"));
    }
    if !q.contains_key("versioning") {
        return (403, error("AccessDenied"));
    }
    let ns = r#"xmlns="http://s3.amazonaws.com/doc/2006-03-01/""#;
    (
        200,
        match s.status {
            Some(status) => format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<VersioningConfiguration {ns}><Status>{status}</Status></VersioningConfiguration>"),
            None => format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<VersioningConfiguration {ns}/>"),
        },
    )
}

fn at(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

async fn media_secret(h: &Harness, secret: &str) {
    let api: Api<Secret> = Api::namespaced(h.client(), TENANT);
    api.patch(
        "media-s3",
        &PatchParams::apply("test").force(),
        &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "media-s3", "namespace": TENANT },
            "stringData": { "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": secret },
        })),
    )
    .await
    .unwrap();
}

async fn media(h: &Harness) -> Option<MediaBucketStatus> {
    h.status().await.media_bucket
}

#[tokio::test]
async fn the_operator_reads_the_media_buckets_versioning_hourly_with_the_tenants_key() {
    let s3 = FakeS3::start("lyon-media");
    let mut i = common::lyon("community");
    i.spec.media_s3 = Some(S3Spec {
        bucket: "lyon-media".into(),
        endpoint: s3.url.clone(),
        region: Some("fr-par".into()),
        alias_host: None,
        secret_ref: "media-s3".into(),
        permission: None,
    });
    let h = harness_with(i, true).await;
    let mut now = at("2026-12-07T10:00:00Z");
    h.set_clock(now);
    s3.set(Some("Enabled"), now);

    // Installed before its media Secret exists: unreadable, and why, without asking.
    h.install().await;
    let m = media(&h).await.unwrap();
    assert_eq!(m.versioning, BucketVersioning::Unreadable);
    assert_eq!(m.message.as_deref(), Some("no Secret herd-lyon/media-s3"));
    assert_eq!(s3.requests(), 0);
    // Come back in minutes, not in the usual ten.
    assert_eq!(
        h.reconcile().await.unwrap(),
        Action::requeue(herd_k8s::media_bucket::RETRY_UNREADABLE)
    );

    // With the Secret: read at the next hour, not before.
    media_secret(&h, SECRET).await;
    h.ok().await;
    assert_eq!(
        media(&h).await.unwrap().versioning,
        BucketVersioning::Unreadable
    );
    now += jiff::SignedDuration::from_hours(1);
    h.set_clock(now);
    s3.set(Some("Enabled"), now);
    h.ok().await;
    let m = media(&h).await.unwrap();
    assert_eq!(
        (m.versioning, m.message.as_deref(), m.bucket.as_str()),
        (BucketVersioning::Enabled, None, "lyon-media")
    );
    assert_eq!(m.checked_at, now.to_string());
    assert_eq!(s3.requests(), 1);
    assert_eq!(
        h.reconcile().await.unwrap(),
        Action::requeue(std::time::Duration::from_secs(600))
    );
    h.ok().await;
    assert_eq!(s3.requests(), 1, "not read again within the hour");

    // A key that is not the bucket's: the provider refuses it, and the status says how.
    media_secret(&h, "not-the-secret").await;
    now += jiff::SignedDuration::from_hours(1);
    h.set_clock(now);
    s3.set(Some("Enabled"), now);
    h.ok().await;
    let m = media(&h).await.unwrap();
    assert_eq!(m.versioning, BucketVersioning::Unreadable);
    assert_eq!(m.message.as_deref(), Some("HTTP 403 SignatureDoesNotMatch"));
    assert!(!serde_json::to_string(&m)
        .unwrap()
        .contains("not-the-secret"));

    // Suspended, and never turned on.
    media_secret(&h, SECRET).await;
    for (status, want) in [
        (Some("Suspended"), BucketVersioning::Suspended),
        (None, BucketVersioning::Off),
    ] {
        now += jiff::SignedDuration::from_hours(1);
        h.set_clock(now);
        s3.set(status, now);
        h.ok().await;
        let m = media(&h).await.unwrap();
        assert_eq!((m.versioning, m.message), (want, None));
    }

    // Another bucket is read at once (this provider has no such bucket).
    let before = s3.requests();
    h.edit(|spec| spec["mediaS3"] = json!({ "bucket": "lyon-media-2" }))
        .await;
    h.ok().await;
    let m = media(&h).await.unwrap();
    assert_eq!(s3.requests(), before + 1);
    assert_eq!(
        (m.bucket.as_str(), m.versioning, m.message.as_deref()),
        (
            "lyon-media-2",
            BucketVersioning::Unreadable,
            Some("HTTP 404 NoSuchBucket")
        )
    );

    // A bucket in another region: S3 redirects, the operator does not follow (the signed
    // request would go elsewhere) and says so.
    let before = s3.requests();
    h.edit(|spec| spec["mediaS3"] = json!({ "bucket": "lyon-media-elsewhere" }))
        .await;
    h.ok().await;
    let m = media(&h).await.unwrap();
    assert_eq!(s3.requests(), before + 1, "the redirect is not followed");
    assert_eq!(
        (m.versioning, m.message.as_deref()),
        (
            BucketVersioning::Unreadable,
            Some("HTTP 301 PermanentRedirect")
        )
    );
    // Unreadable is tried again within minutes, not an hour; a rotated key at once.
    h.edit(|spec| spec["mediaS3"] = json!({ "bucket": "lyon-media" }))
        .await;
    h.ok().await;
    assert_eq!(media(&h).await.unwrap().versioning, BucketVersioning::Off);
    now += jiff::SignedDuration::from_mins(5);
    h.set_clock(now);
    s3.set(Some("Enabled"), now);
    let before = s3.requests();
    h.ok().await;
    assert_eq!(s3.requests(), before, "on: not before the hour");
    h.edit(|spec| spec["mediaS3"] = json!({ "secretRef": "media-s3-rotated" }))
        .await;
    h.ok().await;
    let m = media(&h).await.unwrap();
    assert_eq!(
        (m.versioning, m.message.as_deref(), m.checked_at),
        (
            BucketVersioning::Unreadable,
            Some("no Secret herd-lyon/media-s3-rotated"),
            now.to_string()
        ),
        "another key: read at once"
    );
    assert_eq!(s3.requests(), before, "no request without the key");
    // Once it exists, five minutes later (unreadable is retried soon).
    let api: Api<Secret> = Api::namespaced(h.client(), TENANT);
    let mut rotated: Secret = api.get("media-s3").await.unwrap();
    rotated.metadata = kube::api::ObjectMeta {
        name: Some("media-s3-rotated".into()),
        namespace: Some(TENANT.into()),
        ..Default::default()
    };
    api.create(&kube::api::PostParams::default(), &rotated)
        .await
        .unwrap();
    now += jiff::SignedDuration::from_mins(5);
    h.set_clock(now);
    s3.set(Some("Enabled"), now);
    h.ok().await;
    assert_eq!(
        media(&h).await.unwrap().versioning,
        BucketVersioning::Enabled
    );

    // Media no longer in object storage: nothing to report (once the operator decided
    // where they go, its first reconcile after the change).
    h.edit(|spec| spec["mediaS3"] = json!(null)).await;
    h.ok().await;
    h.ok().await;
    assert_eq!(media(&h).await, None);
}
