//! A customer's export (`spec.export`): a one-off Job like the final backup, but taken
//! while the app runs (the database dump first, then the media archive, as the scheduled
//! backup does, see docs/BACKUPS.md "Consistency"), without the app secrets, under
//! `<prefix>exports/<slug>/<id>/`. Its manifest's header names the app, its version and the
//! domain; the Job reports what it uploaded in its termination message, read as a backup
//! Job's is ([`super::backup::Summary`]).

use super::backup::{one_off, upload_names, urls_secret, BackupKind, BackupTarget};
use super::{Child, RenderError, Tenant};
use std::collections::BTreeMap;

/// The export Job of export `id`.
pub fn job_name(id: &str) -> String {
    format!("export-{id}")
}

/// The Secret of export `id`'s upload URLs.
pub fn urls_secret_name(id: &str) -> String {
    format!("export-{id}-urls")
}

/// The key prefix (ending in `/`) of export `id` of tenant `slug`.
pub fn export_dir(target: &BackupTarget, slug: &str, id: &str) -> String {
    format!("{}exports/{slug}/{id}/", target.prefix)
}

/// The name of every object the export Job may upload (one presigned URL each): the
/// pieces of the dump and, with media on a volume, of the media archive, then the
/// manifest. No app secrets.
pub fn names(t: &Tenant<'_>) -> Result<Vec<String>, RenderError> {
    upload_names(t, BackupKind::Export)
}

/// Export `id`: its URL Secret (`urls`, from [`crate::presign::upload_urls`] for
/// [`names`] under [`export_dir`]) and its Job.
pub fn export(
    t: &Tenant<'_>,
    target: &BackupTarget,
    urls: &BTreeMap<String, String>,
    id: &str,
) -> Result<Vec<Child>, RenderError> {
    let dir = export_dir(target, &t.instance.spec.slug, id);
    let secret = urls_secret_name(id);
    Ok(vec![
        urls_secret(t, &secret, urls)?,
        one_off(
            t,
            BackupKind::Export,
            &job_name(id),
            &secret,
            format!("s3://{}/{dir}", target.bucket),
        )?,
    ])
}
