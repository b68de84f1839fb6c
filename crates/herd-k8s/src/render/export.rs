//! A customer's export (`spec.export`): a one-off Job like the final backup, but taken
//! while the app runs (the database dump first, then the media archive, as the scheduled
//! backup does, see docs/BACKUPS.md "Consistency"), under `<prefix>exports/<slug>/<id>/`.
//! The app secrets are in it only when the owner gave an age recipient of their own
//! (`spec.export.secretsRecipient`): sealed to it by the operator, never in clear. Its manifest's header names the app, its version and the
//! domain; the Job reports what it uploaded in its termination message, read as a backup
//! Job's is ([`super::backup::Summary`]).

use super::backup::{
    one_off, sealed_from, sealed_secret, upload_names, urls_secret, BackupKind, BackupTarget,
};
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

/// The Secret of export `id`'s app secrets, sealed to its owner's recipient.
pub fn sealed_secret_name(id: &str) -> String {
    format!("export-{id}-sealed")
}

/// The key prefix (ending in `/`) of export `id` of tenant `slug`.
pub fn export_dir(target: &BackupTarget, slug: &str, id: &str) -> String {
    format!("{}exports/{slug}/{id}/", target.prefix)
}

/// The name of every object the export Job may upload (one presigned URL each): the
/// pieces of the dump and, with media on a volume, of the media archive, the sealed app
/// secrets when the export has a recipient, then the manifest.
pub fn names(t: &Tenant<'_>) -> Result<Vec<String>, RenderError> {
    upload_names(t, BackupKind::Export)
}

/// Export `id`: its URL Secret (`urls`, from [`crate::presign::upload_urls`] for
/// [`names`] under [`export_dir`]), the Secret of its sealed app secrets when it has a
/// recipient (`sealed`: what [`crate::seal::seal`] made for it, and its digest), and its
/// Job.
pub fn export(
    t: &Tenant<'_>,
    target: &BackupTarget,
    urls: &BTreeMap<String, String>,
    id: &str,
    sealed: Option<(&[u8], &str)>,
) -> Result<Vec<Child>, RenderError> {
    let dir = export_dir(target, &t.instance.spec.slug, id);
    let secret = urls_secret_name(id);
    let mut children = vec![urls_secret(t, &secret, urls)?];
    if let Some(name) = sealed_from(t, BackupKind::Export) {
        let (bytes, digest) = sealed.ok_or(RenderError::ExportUnsealed)?;
        children.push(sealed_secret(t, &name, bytes, digest)?);
    }
    children.extend([one_off(
        t,
        BackupKind::Export,
        &job_name(id),
        &secret,
        format!("s3://{}/{dir}", target.bucket),
    )?]);
    Ok(children)
}
