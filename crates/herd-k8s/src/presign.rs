//! Presigned URLs for a tenant's backups: `PUT` URLs for the objects a backup or export
//! Job writes, `GET` URLs for the objects a restore Job reads.
//!
//! The operator holds the backup bucket's credentials; the tenant's namespace never does.
//! For each object the final-backup Job may write (the pieces of each artifact and the
//! manifest, all under the tenant's own key prefix), the operator signs a `PUT` URL (AWS
//! Signature Version 4, query-string authentication) valid for [`URL_VALIDITY`], and puts
//! only those URLs in the tenant's namespace. A URL lets its holder write that one object
//! until it expires, nothing else: no read, no list, no other key. It carries the access
//! key's *id* in `X-Amz-Credential` (as every presigned URL does), never the secret key.

use crate::crd::RestoreSpec;
use crate::render::backup::BackupTarget;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long the upload URLs are valid; the Job is stopped before they expire
/// (its `activeDeadlineSeconds`), and a retry gets new ones.
pub const URL_VALIDITY: Duration = Duration::from_secs(2 * 60 * 60);

/// The backup bucket's credentials, read from the Secret in the operator's namespace.
#[derive(Clone)]
pub struct BackupCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl BackupCredentials {
    /// The credentials in a Secret's `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
    /// (as strings, from [`crate::reconcile::secret_strings`]); `Err`: the key that is
    /// missing or empty.
    pub fn from_secret(
        mut data: BTreeMap<String, String>,
    ) -> Result<BackupCredentials, &'static str> {
        let mut take = |key: &'static str| data.remove(key).filter(|v| !v.is_empty()).ok_or(key);
        Ok(BackupCredentials {
            access_key_id: take("AWS_ACCESS_KEY_ID")?,
            secret_access_key: take("AWS_SECRET_ACCESS_KEY")?,
        })
    }
}

impl std::fmt::Debug for BackupCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PresignError {
    #[error("the backup endpoint {endpoint:?} is not an http(s) URL with a host (HERD_BACKUP_S3_ENDPOINT)")]
    Endpoint { endpoint: String },
    #[error("the backup bucket name {bucket:?} cannot be used in a URL (HERD_BACKUP_S3_BUCKET)")]
    Bucket { bucket: String },
}

/// `PUT` URLs for the objects `names` under `dir` (a key prefix ending in `/`), signed at
/// `now`, valid for `valid_for`: file name → URL.
pub fn upload_urls(
    target: &BackupTarget,
    credentials: &BackupCredentials,
    dir: &str,
    names: &[String],
    now: jiff::Timestamp,
    valid_for: Duration,
) -> Result<BTreeMap<String, String>, PresignError> {
    sign(Method::Put, target, credentials, dir, names, now, valid_for)
}

/// `GET` URLs for the objects `names` of the backup directory `dir` (a key prefix ending
/// in `/`, from [`source_dir`]: under the target's prefix), signed at `now`, valid for
/// `valid_for`: file name → URL. A URL lets its holder read that one object until it
/// expires: no write, no list, no other key.
pub fn download_urls(
    target: &BackupTarget,
    credentials: &BackupCredentials,
    dir: &str,
    names: &[String],
    now: jiff::Timestamp,
    valid_for: Duration,
) -> Result<BTreeMap<String, String>, PresignError> {
    sign(Method::Get, target, credentials, dir, names, now, valid_for)
}

/// The key prefix (ending in `/`) of the directory restore `wanted` reads (its `source`,
/// `s3://bucket/prefix/.../`, as a backup record's location) for a restore into tenant
/// `slug`, or why the operator refuses to read it:
///
/// - a backup (`import` false) must be one of its tenant's own: `<prefix><tenant>/<dir>/`
///   (final backups, backups before an upgrade) or `<prefix>scheduled/keep-<n>d/<tenant>/
///   <stamp>/`, where the tenant is `sourceTenant` when given, else `slug` (another
///   tenant's backups are never read on this tenant's behalf);
/// - an import (`import` true) must be an import prepared by `herd import prepare`,
///   `<prefix>imports/<id>/`, or one of this provider's exports, `<prefix>exports/<slug>/
///   <id>/`, never a tenant's backup;
/// - anything outside the operator's bucket and prefix, with `..`, `.` or an empty part, or
///   a CloudNativePG barman backup (restored by CloudNativePG's own recovery, see
///   docs/BACKUPS.md) is refused.
pub fn source_dir(
    target: &BackupTarget,
    wanted: &RestoreSpec,
    slug: &str,
) -> Result<String, String> {
    let source = wanted.source.as_str();
    let outside = || {
        format!(
            "the restore source {source:?} is not under the operator's backup prefix s3://{}/{}: only backups taken by this operator's target can be restored",
            target.bucket, target.prefix
        )
    };
    if source.contains("barman backup") {
        return Err(format!("the restore source {source:?} is a CloudNativePG barman backup: restore it with CloudNativePG's recovery (docs/BACKUPS.md); the operator restores dump backups only"));
    }
    let Some(key) = source.strip_prefix(&format!("s3://{}/", target.bucket)) else {
        return Err(outside());
    };
    let mut dir = key.to_owned();
    if !dir.ends_with('/') {
        dir.push('/');
    }
    let Some(rest) = dir.strip_prefix(&target.prefix) else {
        return Err(outside());
    };
    let clean = !rest.is_empty()
        && rest != "/"
        && !dir.contains("//")
        && dir.split('/').all(|part| part != ".." && part != ".")
        && dir
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '?' | '#' | '%' | '\\'));
    if !clean {
        return Err(outside());
    }
    if rest.starts_with("cnpg/") {
        return Err(format!("the restore source {source:?} is in CloudNativePG's object store (barman base backups and WAL): restore it with CloudNativePG's recovery (docs/BACKUPS.md); the operator restores dump backups only"));
    }
    let base = format!("s3://{}/{}", target.bucket, target.prefix);
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if wanted.import {
        return match parts.as_slice() {
            ["imports", _] | ["exports", _, _] => Ok(dir),
            _ => Err(format!(
                "the import source {source:?} is neither an import prepared with `herd import prepare` ({base}imports/<id>/) nor an export ({base}exports/<slug>/<id>/): an import never reads a tenant's backups"
            )),
        };
    }
    let owner = wanted.source_tenant.as_deref().unwrap_or(slug);
    let owned = match parts.as_slice() {
        ["scheduled", keep, tenant, _] => keep.starts_with("keep-") && *tenant == owner,
        [tenant, _, ..] => *tenant == owner,
        _ => false,
    };
    if owned {
        return Ok(dir);
    }
    if matches!(parts.first(), Some(&("imports" | "exports"))) {
        return Err(format!("the restore source {source:?} is an import or an export, not a backup: ask for it as an import (spec.restore.import)"));
    }
    let whose = match &wanted.source_tenant {
        Some(t) => format!("tenant {t}'s (spec.restore.sourceTenant)"),
        None => format!("this tenant's ({slug})"),
    };
    Err(format!(
        "the restore source {source:?} is not one of {whose} backups ({base}{owner}/<backup>/ or {base}scheduled/keep-<n>d/{owner}/<stamp>/): a restore never reads another tenant's backups"
    ))
}

#[derive(Clone, Copy)]
enum Method {
    Put,
    Get,
}

fn sign(
    method: Method,
    target: &BackupTarget,
    credentials: &BackupCredentials,
    dir: &str,
    names: &[String],
    now: jiff::Timestamp,
    valid_for: Duration,
) -> Result<BTreeMap<String, String>, PresignError> {
    let endpoint: url::Url = target
        .endpoint
        .parse()
        .ok()
        .filter(|u: &url::Url| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| PresignError::Endpoint {
            endpoint: target.endpoint.clone(),
        })?;
    // Path-style URLs (`https://endpoint/bucket/key`): every S3-compatible service accepts
    // them, and a bucket name with dots needs no wildcard certificate.
    let bucket = Bucket::new(
        endpoint,
        UrlStyle::Path,
        target.bucket.clone(),
        target.region.clone(),
    )
    .map_err(|_| PresignError::Bucket {
        bucket: target.bucket.clone(),
    })?;
    let credentials = Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
    );
    Ok(names
        .iter()
        .map(|name| {
            let key = format!("{dir}{name}");
            let url = match method {
                Method::Put => bucket
                    .put_object(Some(&credentials), &key)
                    .sign_with_time(valid_for, &now),
                Method::Get => bucket
                    .get_object(Some(&credentials), &key)
                    .sign_with_time(valid_for, &now),
            };
            (name.clone(), url.to_string())
        })
        .collect())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
pub(crate) mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    pub(crate) const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
    pub(crate) const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    /// SigV4 query-string authentication written out from AWS's documentation
    /// ("Authenticating Requests: Using Query Parameters"), independently of rusty-s3:
    /// the signature of `method host path` with these (already encoded, sorted) query
    /// parameters before `X-Amz-Signature`, signed with [`SECRET`].
    pub(crate) fn sigv4(
        method: &str,
        host: &str,
        path: &str,
        query: &str,
        date: &str,
        region: &str,
    ) -> String {
        let canonical = format!("{method}\n{path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
        let day = &date[..8];
        let scope = format!("{day}/{region}/s3/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut k = hmac(format!("AWS4{SECRET}").as_bytes(), day);
        for part in [region, "s3", "aws4_request"] {
            k = hmac(&k, part);
        }
        hex::encode(hmac(&k, &to_sign))
    }

    #[test]
    fn credentials_come_from_a_secrets_two_keys_both_set() {
        let data = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let c = BackupCredentials::from_secret(data(&[
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ]))
        .unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            (KEY_ID, SECRET)
        );
        assert_eq!(
            BackupCredentials::from_secret(data(&[("AWS_ACCESS_KEY_ID", KEY_ID)])).unwrap_err(),
            "AWS_SECRET_ACCESS_KEY"
        );
        assert_eq!(
            BackupCredentials::from_secret(data(&[
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", SECRET),
            ]))
            .unwrap_err(),
            "AWS_ACCESS_KEY_ID"
        );
    }

    #[test]
    fn the_independent_signer_matches_aws_documented_example() {
        // AWS's example presigned URL: GET examplebucket/test.txt, 2013-05-24, 86400 s,
        // signature aeeed9bb… as the SigV4 documentation gives it.
        let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host";
        assert_eq!(
            sigv4(
                "GET",
                "examplebucket.s3.amazonaws.com",
                "/test.txt",
                query,
                "20130524T000000Z",
                "us-east-1"
            ),
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    fn target() -> BackupTarget {
        BackupTarget {
            bucket: "herd-backups".into(),
            endpoint: "https://s3.fr-par.scw.cloud".into(),
            prefix: "final/".into(),
            region: "fr-par".into(),
            secrets_recipient: "age1302c8smchfv42meeqncfqp9dg39kscy7a06xlx9s0frmwvc0zsnqrl9ujm"
                .into(),
        }
    }

    #[test]
    fn an_upload_url_is_for_one_key_expires_and_is_signed() {
        let credentials = BackupCredentials {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
        };
        let now: jiff::Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let names = vec!["database.dump.000".to_owned(), "manifest.txt".to_owned()];
        let urls = upload_urls(
            &target(),
            &credentials,
            "final/lyon/final-20261129T120000Z/",
            &names,
            now,
            URL_VALIDITY,
        )
        .unwrap();
        assert_eq!(urls.len(), 2);
        let url: url::Url = urls["database.dump.000"].parse().unwrap();
        assert_eq!(url.host_str(), Some("s3.fr-par.scw.cloud"));
        assert_eq!(
            url.path(),
            "/herd-backups/final/lyon/final-20261129T120000Z/database.dump.000"
        );
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["X-Amz-Expires"], "7200");
        assert_eq!(q["X-Amz-Date"], "20261129T120000Z");
        assert_eq!(
            q["X-Amz-Credential"],
            "AKIAIOSFODNN7EXAMPLE/20261129/fr-par/s3/aws4_request"
        );
        assert_eq!(q["X-Amz-SignedHeaders"], "host");
        assert!(!urls
            .values()
            .any(|u| u.contains(SECRET) || u.contains("wJalrXUtnFEMI")));

        // The signature is the one AWS computes for a PUT of exactly this key.
        let query = url.query().unwrap();
        let (unsigned, signature) = query.split_once("&X-Amz-Signature=").unwrap();
        assert_eq!(
            signature,
            sigv4(
                "PUT",
                "s3.fr-par.scw.cloud",
                url.path(),
                unsigned,
                "20261129T120000Z",
                "fr-par"
            )
        );
        // …and not the one of a GET, or of another key.
        assert_ne!(
            signature,
            sigv4(
                "GET",
                "s3.fr-par.scw.cloud",
                url.path(),
                unsigned,
                "20261129T120000Z",
                "fr-par"
            )
        );
        let other: url::Url = urls["manifest.txt"].parse().unwrap();
        assert_ne!(
            other
                .query()
                .unwrap()
                .split_once("&X-Amz-Signature=")
                .unwrap()
                .1,
            signature
        );
    }

    #[test]
    fn a_bad_endpoint_is_refused_with_the_setting_named() {
        let credentials = BackupCredentials {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
        };
        let mut t = target();
        t.endpoint = "s3.fr-par.scw.cloud".into();
        let err = upload_urls(
            &t,
            &credentials,
            "d/",
            &[],
            jiff::Timestamp::now(),
            URL_VALIDITY,
        )
        .unwrap_err();
        assert!(err.to_string().contains("HERD_BACKUP_S3_ENDPOINT"), "{err}");
    }

    #[test]
    fn a_download_url_is_a_signed_get_of_one_key() {
        let credentials = BackupCredentials {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
        };
        let now: jiff::Timestamp = "2026-12-06T12:00:00Z".parse().unwrap();
        let dir = "final/scheduled/keep-7d/lyon/20261206T021700Z/";
        let urls = download_urls(
            &target(),
            &credentials,
            dir,
            &["manifest.txt".to_owned()],
            now,
            Duration::from_secs(6 * 3600),
        )
        .unwrap();
        let url: url::Url = urls["manifest.txt"].parse().unwrap();
        assert_eq!(url.path(), format!("/herd-backups/{dir}manifest.txt"));
        let query = url.query().unwrap();
        let (unsigned, signature) = query.split_once("&X-Amz-Signature=").unwrap();
        assert!(unsigned.contains("X-Amz-Expires=21600"), "{unsigned}");
        let get = sigv4(
            "GET",
            "s3.fr-par.scw.cloud",
            url.path(),
            unsigned,
            "20261206T120000Z",
            "fr-par",
        );
        assert_eq!(signature, get, "a GET");
        assert_ne!(
            signature,
            sigv4(
                "PUT",
                "s3.fr-par.scw.cloud",
                url.path(),
                unsigned,
                "20261206T120000Z",
                "fr-par"
            ),
            "never a PUT"
        );
    }

    fn wanted(source: &str, source_tenant: Option<&str>, import: bool) -> RestoreSpec {
        serde_json::from_value(serde_json::json!({
            "id": "r1", "source": source, "sourceTenant": source_tenant, "import": import,
        }))
        .unwrap()
    }

    /// `source_dir` for a restore of `source` into tenant `lyon`.
    fn dir(source: &str, source_tenant: Option<&str>, import: bool) -> Result<String, String> {
        source_dir(&target(), &wanted(source, source_tenant, import), "lyon")
    }

    #[test]
    fn a_restore_source_must_be_a_dump_backup_under_the_prefix() {
        assert_eq!(
            dir(
                "s3://herd-backups/final/lyon/final-20261129T120000Z/",
                None,
                false
            )
            .unwrap(),
            "final/lyon/final-20261129T120000Z/"
        );
        assert_eq!(
            dir(
                "s3://herd-backups/final/scheduled/keep-7d/lyon/x",
                None,
                false
            )
            .unwrap(),
            "final/scheduled/keep-7d/lyon/x/",
            "a directory, with its slash"
        );
        for outside in [
            "s3://other-bucket/final/lyon/x/",
            "s3://herd-backups/elsewhere/lyon/x/",
            "s3://herd-backups/final/",
            "s3://herd-backups/final/../secret/",
            "s3://herd-backups/final/lyon/../paris/x/",
            "s3://herd-backups/final/lyon/./x/",
            "s3://herd-backups/final/lyon//x/",
            "s3://herd-backups/final/lyon/x?versionId=1",
            "https://herd-backups/final/lyon/x/",
            "s3://herd-backups-2/final/lyon/x/",
        ] {
            for import in [false, true] {
                let why = dir(outside, None, import).unwrap_err();
                assert!(
                    why.contains("not under the operator's backup prefix"),
                    "{outside}: {why}"
                );
            }
        }
        for barman in [
            "s3://herd-backups/final/cnpg/lyon/",
            "s3://herd-backups/final/cnpg/lyon/ (barman backup 20261206T021700)",
        ] {
            let why = dir(barman, None, false).unwrap_err();
            assert!(why.contains("CloudNativePG"), "{barman}: {why}");
        }
    }

    #[test]
    fn a_backup_is_read_only_for_its_own_tenant() {
        // Another tenant's backups are refused, final, before an upgrade or scheduled.
        for other in [
            "s3://herd-backups/final/paris/final-20261129T120000Z/",
            "s3://herd-backups/final/paris/upgrade-v4-3-2/",
            "s3://herd-backups/final/scheduled/keep-7d/paris/20261206T021700Z/",
            "s3://herd-backups/final/lyon/",
            "s3://herd-backups/final/scheduled/keep-7d/lyon/",
            "s3://herd-backups/final/scheduled/lyon/x/",
            "s3://herd-backups/final/lyonnais/final-x/",
        ] {
            let why = dir(other, None, false).unwrap_err();
            assert!(
                why.contains("not one of this tenant's (lyon) backups")
                    && why.contains("s3://herd-backups/final/lyon/<backup>/"),
                "{other}: {why}"
            );
        }
        // Named as the source tenant (a restore into a new tenant, a drill), they are read…
        assert_eq!(
            dir(
                "s3://herd-backups/final/paris/final-x/",
                Some("paris"),
                false
            )
            .unwrap(),
            "final/paris/final-x/"
        );
        assert_eq!(
            dir(
                "s3://herd-backups/final/scheduled/keep-30d/paris/20261206T021700Z/",
                Some("paris"),
                false
            )
            .unwrap(),
            "final/scheduled/keep-30d/paris/20261206T021700Z/"
        );
        // …and then only theirs, not the target's own nor a third tenant's.
        for not_theirs in [
            "s3://herd-backups/final/lyon/final-x/",
            "s3://herd-backups/final/nice/final-x/",
        ] {
            let why = dir(not_theirs, Some("paris"), false).unwrap_err();
            assert!(
                why.contains("not one of tenant paris's (spec.restore.sourceTenant) backups"),
                "{not_theirs}: {why}"
            );
        }
        // Imports and exports are not backups, even of a tenant of that name's.
        for import in [
            "s3://herd-backups/final/imports/i1/",
            "s3://herd-backups/final/exports/lyon/e1/",
        ] {
            let why = dir(import, None, false).unwrap_err();
            assert!(why.contains("spec.restore.import"), "{import}: {why}");
        }
    }

    #[test]
    fn an_import_reads_an_import_or_an_export_and_nothing_else() {
        assert_eq!(
            dir("s3://herd-backups/final/imports/i-20261207/", None, true).unwrap(),
            "final/imports/i-20261207/"
        );
        assert_eq!(
            dir("s3://herd-backups/final/exports/paris/e1", None, true).unwrap(),
            "final/exports/paris/e1/"
        );
        for not_import in [
            "s3://herd-backups/final/lyon/final-x/",
            "s3://herd-backups/final/scheduled/keep-7d/lyon/20261206T021700Z/",
            "s3://herd-backups/final/imports/",
            "s3://herd-backups/final/imports/i1/nested/",
            "s3://herd-backups/final/exports/paris/",
            "s3://herd-backups/final/exports/paris/e1/x/",
        ] {
            for tenant in [None, Some("lyon")] {
                let why = dir(not_import, tenant, true).unwrap_err();
                assert!(
                    why.contains("an import never reads a tenant's backups"),
                    "{not_import}: {why}"
                );
            }
        }
        let why = dir(
            "s3://herd-backups/final/imports/../lyon/final-x/",
            None,
            true,
        )
        .unwrap_err();
        assert!(
            why.contains("not under the operator's backup prefix"),
            "{why}"
        );
    }

    #[test]
    fn credentials_never_print_the_secret() {
        let credentials = BackupCredentials {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
        };
        assert!(!format!("{credentials:?}").contains(SECRET));
    }
}
