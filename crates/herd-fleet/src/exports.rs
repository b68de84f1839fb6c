//! A customer's export of a server (issue 12). An owner or admin asks for one in the
//! portal ([`request`]): the row and the apply job are written in one transaction, the
//! apply puts the export's id in the Instance's `spec.export`, and the cluster's operator
//! writes a database dump, a media archive and a manifest (`manifest.txt`, every piece's
//! size and SHA-256) under `<backup prefix>exports/<slug>/<id>/`, in pieces of up to
//! 4 GiB. The status sync records `status.export` ([`record`]); a success emails the
//! organization's owners and whoever asked ([`ExportReadyEmail`]). An export that is to
//! carry the server's secrets is announced to every owner when it is asked for
//! ([`SecretsAskedEmail`]).
//!
//! The control plane reads the export straight from the bucket with read-only credentials
//! ([`ExportStore`], `HERD_EXPORTS_URL`) and serves it ([`download`]): the manifest is
//! checked against the checksum the cluster reported, then each artifact is streamed
//! piece after piece, each piece hashed as it goes. The last chunk of every piece is held
//! back until its hash is known, so a piece that does not match its manifest ends the
//! response with an error before the client has every byte: the client sees a failed
//! download, never a short or altered file, and the export is marked corrupt.

use crate::clusters::Actor;
use crate::jobs::ApplyInstance;
use crate::FleetError;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use herd_domain::export::{ExportState, Manifest, ARTIFACTS, MANIFEST};
use herd_domain::{Desired, InstancePhase, OrgId, Role};
use herd_jobs::{Job, Registry};
use herd_mail::{Email, Mailer};
use herd_store::audit::{self, NewEntry};
use herd_store::exports::{self as store, Export};
use herd_store::fleet::{self, EventKind};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use std::fmt;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

pub use herd_store::exports::Reported;

/// How long an export's link lasts by default (`HERD_EXPORT_LINK_DAYS`).
pub const DEFAULT_LINK_DAYS: i32 = 7;

/// Where exports are read from: the backup bucket (`s3://bucket/prefix`, the prefix the
/// operator writes backups under), or a local directory; cheap to clone.
#[derive(Clone)]
pub struct ExportStore {
    inner: Arc<dyn ObjectStore>,
    /// Where, for logs (never credentials).
    place: String,
}

impl fmt::Debug for ExportStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ExportStore").field(&self.place).finish()
    }
}

impl ExportStore {
    /// The store `setting` names (`HERD_EXPORTS_URL`): `s3://bucket/prefix` (credentials,
    /// region and endpoint from the usual `AWS_*` variables; read-only ones suffice), a
    /// directory (a plain path or `file:///path`, created if missing), or `memory:`.
    pub fn from_setting(setting: &str) -> Result<Self, FleetError> {
        let setting = setting.trim();
        let bad = |e: &dyn fmt::Display| FleetError::Invalid(format!("exports store: {e}"));
        if setting == "memory:" {
            return Ok(Self::in_memory());
        }
        if let Some(rest) = setting.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| bad(&e))?;
            let prefix = prefix.trim_matches('/');
            let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    s3,
                    ObjectPath::from(prefix),
                ))
            };
            let base = match prefix {
                "" => format!("s3://{bucket}/"),
                p => format!("s3://{bucket}/{p}/"),
            };
            return Ok(Self { inner, place: base });
        }
        let dir = match setting.strip_prefix("file://") {
            Some(path) => path,
            None if setting.contains("://") => {
                return Err(FleetError::Invalid(format!(
                    "exports store {setting:?}: use a directory, file:///path, s3://bucket/prefix or memory:"
                )))
            }
            None => setting,
        };
        Self::local(std::path::Path::new(dir))
    }

    /// Files under `dir`, created if missing.
    pub fn local(dir: &std::path::Path) -> Result<Self, FleetError> {
        let bad = |e: &dyn fmt::Display| {
            FleetError::Invalid(format!("exports directory {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| bad(&e))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| bad(&e))?;
        Ok(Self {
            inner: Arc::new(fs),
            place: dir.display().to_string(),
        })
    }

    /// Kept in memory only (nothing to download).
    pub fn in_memory() -> Self {
        Self {
            inner: Arc::new(object_store::memory::InMemory::new()),
            place: "memory:".to_owned(),
        }
    }

    /// Where it reads from, for logs.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// The key of object `name` of export `e`: always where the operator writes this
    /// export (`exports/<slug>/<id>/`, under the store's base). The location the cluster
    /// reports is never followed: a report could otherwise point a customer's download at
    /// another tenant's objects.
    fn key(&self, e: &Export, name: &str) -> ObjectPath {
        ObjectPath::from(format!("exports/{}/{}/{name}", e.slug, e.id))
    }

    pub(crate) async fn read_small(&self, key: &ObjectPath) -> Result<Bytes, object_store::Error> {
        self.inner.get(key).await?.bytes().await
    }
}

/// Can an export of a server in this state be asked for? Running or suspended, and not
/// on its way to deletion.
pub fn exportable(desired: Desired, phase: InstancePhase) -> bool {
    matches!(desired, Desired::Running | Desired::Suspended)
        && matches!(phase, InstancePhase::Running | InstancePhase::Suspended)
}

/// What an export is asked with.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// An age X25519 recipient (`age1…`, the public key `age-keygen` prints) to seal the
    /// server's app secrets to, into the export; none or blank: the export has no secrets.
    /// Only an owner of the organization may give one.
    pub secrets_recipient: Option<&'a str>,
    /// How many days its link lasts once it is ready.
    pub link_days: i32,
    /// Where the portal is, for the "ready" email's link.
    pub base_url: &'a str,
}

/// The age recipient an owner typed, checked; `None` when blank. The message never
/// repeats what was typed (it may be a private identity pasted by mistake).
pub fn secrets_recipient(input: Option<&str>) -> Result<Option<String>, FleetError> {
    let Some(r) = input.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let upper = r.to_ascii_uppercase();
    if upper.contains("AGE-SECRET-KEY-") || upper.contains("AGE-PLUGIN-") {
        return Err(FleetError::Invalid(
            "Age recipient: that is a private identity (AGE-SECRET-KEY-…), which must never leave your machine; it was not kept. Give its public key instead (age1…, printed by `age-keygen -y key.txt`), and make a new identity if this one was shared.".into(),
        ));
    }
    // `age-keygen` prints "Public key: age1…": that line pasted whole is fine.
    let r = r
        .strip_prefix("# public key:")
        .or_else(|| r.strip_prefix("Public key:"))
        .map_or(r, str::trim);
    match r.parse::<age::x25519::Recipient>() {
        Ok(recipient) => Ok(Some(recipient.to_string())),
        Err(_) => Err(FleetError::Invalid(
            "Age recipient: not an age public key. Give the line that starts with age1 (`age-keygen -o key.txt` prints it as \"Public key: age1…\"); SSH keys are not accepted.".into(),
        )),
    }
}

/// Asks for an export of server `id` for its organization `org`: the server must be
/// running, and one export at a time is taken; with a recipient (an owner only, `role`),
/// the app secrets are sealed into it. Written with its apply job in one transaction;
/// audited. Returns the export's id.
pub async fn request(
    pool: &PgPool,
    org: OrgId,
    who: Actor<'_>,
    role: Role,
    id: Uuid,
    ask: Ask<'_>,
) -> Result<Uuid, FleetError> {
    let recipient = secrets_recipient(ask.secrets_recipient)?;
    let not_owner = || {
        FleetError::Invalid(
            "Age recipient: only an owner of the organization can have an export carry the server's secrets; ask for one without a recipient, or ask an owner.".into(),
        )
    };
    if recipient.is_some() && role != Role::Owner {
        return Err(not_owner());
    }
    let mut tx = pool.begin().await?;
    // The role the request was let in with, read again and held until the export is
    // written: an owner demoted or removed meanwhile takes no secrets away.
    if recipient.is_some()
        && herd_store::orgs::held_role(&mut tx, org, who.id).await? != Some(Role::Owner)
    {
        return Err(not_owner());
    }
    let inst = fleet::lock_instance(&mut tx, id)
        .await?
        .filter(|i| i.org_id == org.0)
        .ok_or(FleetError::NotFound)?;
    // Running or suspended (its database keeps running): an organization whose server is
    // suspended, for non-payment too, can still take its data away.
    if !exportable(inst.desired, inst.phase) {
        return Err(FleetError::Invalid(format!(
            "An export can be taken only while the server is running or suspended; it is {} now.",
            inst.phase.label().to_lowercase()
        )));
    }
    if recipient.is_some() && inst.app != "mastodon" {
        return Err(FleetError::Invalid(
            "Age recipient: only a Mastodon server has secrets to carry elsewhere (its database holds everything else); ask without a key.".into(),
        ));
    }
    if store::open_for(&mut *tx, id).await?.is_some() {
        return Err(FleetError::Conflict(
            "An export of this server is already being taken; it is listed below. You can ask for another once it is done.".into(),
        ));
    }
    let export = store::insert(
        &mut tx,
        id,
        who.id.0,
        ask.link_days.max(1),
        ask.base_url,
        recipient.as_deref(),
    )
    .await?;
    fleet::add_event(
        &mut tx,
        id,
        EventKind::Action,
        &match &recipient {
            Some(r) => format!("Export requested, with the app secrets sealed to {r}"),
            None => "Export requested".to_owned(),
        },
        Some(who.id.0),
    )
    .await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: Some(org),
            action: "fleet.instance.export_requested",
            target: inst.domain.clone(),
            source_ip: Some(who.ip),
            details: serde_json::json!({
                "instance": id, "export": export, "secrets_recipient": recipient,
            }),
        },
    )
    .await?;
    herd_jobs::enqueue(&mut *tx, &ApplyInstance { instance_id: id }).await?;
    if recipient.is_some() {
        herd_jobs::enqueue(&mut *tx, &SecretsAskedEmail { export_id: export }).await?;
    }
    tx.commit().await?;
    Ok(export)
}

/// The export the Instance's `spec.export` asks for: the one in progress.
pub async fn pending(
    conn: &mut PgConnection,
    instance: Uuid,
) -> Result<Option<store::Open>, FleetError> {
    Ok(store::open_for(&mut *conn, instance).await?)
}

/// Records what the cluster reports of export `id` (`status.export`) of `instance`, in the
/// sync's transaction. A success is noted in the server's history and emailed; a failure
/// noted. An id that is not one of this server's exports is ignored.
pub async fn record(
    conn: &mut PgConnection,
    instance: Uuid,
    id: &str,
    reported: &Reported<'_>,
) -> Result<(), FleetError> {
    let Ok(id) = id.parse::<Uuid>() else {
        return Ok(());
    };
    // Asked with the owner's key, it succeeds only with the secrets sealed to that key: an
    // operator older than the control plane ignores the key and would take the export
    // without them while the page, the history and the email said it had them.
    let missing = "the cluster did not seal the server's secrets into it (is its operator older than the control plane?); ask again once it is updated";
    let checked;
    // (Read only for a success: the sync reports the last export on every pass.)
    let asked = match reported.outcome {
        ExportState::Succeeded => store::get(&mut *conn, id).await?,
        _ => None,
    };
    let reported = match asked {
        Some(e)
            if e.instance_id == instance
                && e.secrets_recipient.is_some()
                && e.secrets_recipient.as_deref() != reported.secrets_sealed_to =>
        {
            checked = Reported {
                outcome: ExportState::Failed,
                message: Some(missing),
                ..reported.clone()
            };
            &checked
        }
        _ => reported,
    };
    match store::record(&mut *conn, instance, id, reported).await? {
        Some(ExportState::Succeeded) => {
            fleet::add_event(
                &mut *conn,
                instance,
                EventKind::Phase,
                "The export is ready to download",
                None,
            )
            .await?;
            herd_jobs::enqueue(&mut *conn, &ExportReadyEmail { export_id: id }).await?;
        }
        Some(ExportState::Failed) => {
            fleet::add_event(
                &mut *conn,
                instance,
                EventKind::Error,
                "The export failed; you can ask for another",
                None,
            )
            .await?;
            tracing::warn!(%instance, export = %id, message = reported.message.unwrap_or_default(), "export failed");
        }
        _ => {}
    }
    Ok(())
}

/// A file of an export, as the server page offers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub size: u64,
}

/// An export as the server page shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub export: Export,
    /// Its files, when it can be downloaded.
    pub files: Vec<File>,
    /// Why its files cannot be listed just now.
    pub files_problem: Option<String>,
    pub expired: bool,
}

/// The most recent exports of server `instance` (newest first), each downloadable one
/// with its files as its manifest lists them.
pub async fn for_page(
    pool: &PgPool,
    exports: &ExportStore,
    instance: Uuid,
    now: OffsetDateTime,
) -> Result<Vec<Listed>, FleetError> {
    let mut out = Vec::new();
    for e in store::recent(pool, instance, 10).await? {
        let expired = e.outcome == ExportState::Succeeded && !e.downloadable(now);
        let (mut files, mut files_problem) = (Vec::new(), None);
        if e.downloadable(now) {
            match exports.read_small(&exports.key(&e, MANIFEST)).await {
                Ok(text) => match Manifest::parse(&String::from_utf8_lossy(&text)) {
                    Ok(m) => {
                        files.push(File {
                            name: MANIFEST.to_owned(),
                            size: text.len() as u64,
                        });
                        files.extend(m.artifacts.iter().map(|a| File {
                            name: a.name.clone(),
                            size: a.size(),
                        }));
                    }
                    Err(why) => files_problem = Some(format!("its manifest is unreadable ({why})")),
                },
                Err(err) => {
                    tracing::warn!(export = %e.id, error = %err, "export manifest unreadable");
                    files_problem = Some("its files cannot be reached just now".into());
                }
            }
        }
        out.push(Listed {
            export: e,
            files,
            files_problem,
            expired,
        });
    }
    Ok(out)
}

/// Why a download is refused.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No such export of this organization's server, or no such file in it.
    #[error("not found")]
    NotFound,
    /// Its link expired.
    #[error("the export's link expired on {0}")]
    Expired(OffsetDateTime),
    /// Not ready (or failed).
    #[error("the export is {}", .0.label())]
    NotReady(ExportState),
    /// Its bytes do not match what the cluster reported: it is not served.
    #[error("the export is corrupt: {0}")]
    Corrupt(String),
    /// The bucket cannot be read just now.
    #[error("the export's files cannot be read: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

impl From<herd_store::StoreError> for DownloadError {
    fn from(e: herd_store::StoreError) -> Self {
        DownloadError::Fleet(e.into())
    }
}

impl From<sqlx::Error> for DownloadError {
    fn from(e: sqlx::Error) -> Self {
        DownloadError::Fleet(e.into())
    }
}

/// A download about to stream.
pub struct Download {
    /// The file's name (for `Content-Disposition`).
    pub file_name: String,
    /// Its length, from the manifest.
    pub length: u64,
    /// Its bytes; ends with an error (and the export marked corrupt) if a piece does not
    /// match its manifest.
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("file_name", &self.file_name)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// Which file of which export of which server.
#[derive(Debug, Clone, Copy)]
pub struct FileRef<'a> {
    pub instance: Uuid,
    pub export: Uuid,
    /// `manifest.txt`, or an artifact ([`ARTIFACTS`]).
    pub file: &'a str,
}

/// The file `want.file` (`manifest.txt`, or an artifact joined from its pieces) of
/// export `want.export` of server `want.instance` of organization `org`, for `who` (the
/// caller checked the capability). The manifest's own SHA-256 is checked against the one the cluster
/// reported first; the download is audited and counted.
pub async fn download(
    pool: &PgPool,
    exports: &ExportStore,
    org: OrgId,
    who: Actor<'_>,
    want: FileRef<'_>,
    now: OffsetDateTime,
) -> Result<Download, DownloadError> {
    let FileRef {
        instance,
        export,
        file,
    } = want;
    let e = store::get(pool, export)
        .await?
        .filter(|e| e.org_id == org.0 && e.instance_id == instance)
        .ok_or(DownloadError::NotFound)?;
    if file != MANIFEST && !ARTIFACTS.contains(&file) {
        return Err(DownloadError::NotFound);
    }
    match e.outcome {
        ExportState::Succeeded => {}
        ExportState::Corrupt => {
            return Err(DownloadError::Corrupt(
                e.message.clone().unwrap_or_default(),
            ))
        }
        other => return Err(DownloadError::NotReady(other)),
    }
    match e.expires_at {
        Some(at) if at > now => {}
        Some(at) => return Err(DownloadError::Expired(at)),
        None => return Err(DownloadError::NotReady(e.outcome)),
    }
    let text = match exports.read_small(&exports.key(&e, MANIFEST)).await {
        Ok(t) => t,
        Err(object_store::Error::NotFound { .. }) => {
            let why = "its manifest is missing from the bucket";
            corrupt(pool, &e, why).await;
            return Err(DownloadError::Corrupt(why.into()));
        }
        Err(err) => {
            tracing::warn!(export = %e.id, error = %err, "export manifest unreadable");
            return Err(DownloadError::Unavailable(err.to_string()));
        }
    };
    let sum = hex::encode(Sha256::digest(&text));
    if !e
        .checksum
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case(&sum))
    {
        let why = format!(
            "its manifest's SHA-256 is {sum}, not the {} the cluster reported",
            e.checksum.as_deref().unwrap_or("(none)")
        );
        corrupt(pool, &e, &why).await;
        return Err(DownloadError::Corrupt(why));
    }
    let manifest = match Manifest::parse(&String::from_utf8_lossy(&text)) {
        Ok(m) => m,
        Err(why) => {
            let why = format!("its manifest is unreadable: {why}");
            corrupt(pool, &e, &why).await;
            return Err(DownloadError::Corrupt(why));
        }
    };
    let (length, body) = if file == MANIFEST {
        let len = text.len() as u64;
        (len, futures::stream::iter([Ok(text)]).boxed())
    } else {
        let artifact = manifest.artifact(file).ok_or(DownloadError::NotFound)?;
        let length = artifact.size();
        (
            length,
            stream_pieces(
                pool.clone(),
                exports.clone(),
                e.clone(),
                artifact.pieces.clone(),
            ),
        )
    };
    let mut tx = pool.begin().await?;
    store::count_download(&mut *tx, e.id).await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((who.id, who.email)),
            org: Some(org),
            action: "fleet.instance.export_downloaded",
            target: e.domain.clone(),
            source_ip: Some(who.ip),
            details: serde_json::json!({
                "instance": instance, "export": e.id, "file": file, "bytes": length,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Download {
        file_name: format!("{}-export-{}", e.slug, file),
        length,
        body,
    })
}

/// Chunks in flight between the bucket and the client (each object_store chunk is small):
/// memory stays bounded whatever the file's size.
const IN_FLIGHT: usize = 4;

/// Streams `pieces` of export `e` one after the other, each hashed as it goes; the last
/// chunk of each piece is sent only once the piece matched its manifest. A mismatch (or a
/// piece of the wrong size, or a missing one) marks the export corrupt and ends the stream
/// with an error.
fn stream_pieces(
    pool: PgPool,
    exports: ExportStore,
    e: Export,
    pieces: Vec<herd_domain::export::Piece>,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(IN_FLIGHT);
    tokio::spawn(async move {
        let fail = |why: String| {
            let (pool, e, tx) = (pool.clone(), e.clone(), tx.clone());
            async move {
                corrupt(&pool, &e, &why).await;
                let _ = tx.send(Err(std::io::Error::other(why))).await;
            }
        };
        for piece in pieces {
            let key = exports.key(&e, &piece.name);
            let mut chunks = match exports.inner.get(&key).await {
                Ok(r) => r.into_stream(),
                Err(object_store::Error::NotFound { .. }) => {
                    return fail(format!("piece {} is missing from the bucket", piece.name)).await;
                }
                Err(err) => {
                    tracing::warn!(export = %e.id, piece = %piece.name, error = %err, "export piece unreadable");
                    let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
                    return;
                }
            };
            let mut hasher = Sha256::new();
            let mut seen: u64 = 0;
            let mut held: Option<Bytes> = None;
            while let Some(chunk) = chunks.next().await {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(err) => {
                        tracing::warn!(export = %e.id, piece = %piece.name, error = %err, "reading an export piece failed");
                        let _ = tx.send(Err(std::io::Error::other(err.to_string()))).await;
                        return;
                    }
                };
                hasher.update(&chunk);
                seen += chunk.len() as u64;
                if seen > piece.size {
                    return fail(format!(
                        "piece {} is longer than the {} bytes its manifest lists",
                        piece.name, piece.size
                    ))
                    .await;
                }
                if let Some(previous) = held.replace(chunk) {
                    if tx.send(Ok(previous)).await.is_err() {
                        return; // the client went away
                    }
                }
            }
            let sum = hex::encode(hasher.finalize());
            if seen != piece.size {
                return fail(format!(
                    "piece {} has {seen} bytes, not the {} its manifest lists",
                    piece.name, piece.size
                ))
                .await;
            }
            if sum != piece.sha256 {
                return fail(format!(
                    "piece {}'s SHA-256 is {sum}, not the {} its manifest lists",
                    piece.name, piece.sha256
                ))
                .await;
            }
            if let Some(last) = held {
                if tx.send(Ok(last)).await.is_err() {
                    return;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

/// Marks export `e` corrupt, once: logged, and noted in its server's history.
async fn corrupt(pool: &PgPool, e: &Export, why: &str) {
    tracing::error!(export = %e.id, instance = %e.instance_id, reason = why, "export corrupt: withdrawn");
    let result = async {
        let mut tx = pool.begin().await?;
        if store::mark_corrupt(&mut *tx, e.id, why).await? {
            fleet::add_event(
                &mut tx,
                e.instance_id,
                EventKind::Error,
                "An export failed its integrity check and is withdrawn; ask for a new one",
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok::<_, FleetError>(())
    }
    .await;
    if let Err(err) = result {
        tracing::error!(export = %e.id, error = %err, "could not mark the export corrupt");
    }
}

/// Email the organization's owners, and whoever asked, that export `export_id` is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportReadyEmail {
    pub export_id: Uuid,
}

impl Job for ExportReadyEmail {
    const KIND: &'static str = "fleet.export_ready_email";
    const MAX_ATTEMPTS: i32 = 10;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("export-ready:{}", self.export_id))
    }
}

/// The "export ready" emails of `id`: none unless it succeeded and was not announced yet.
pub async fn ready_emails(pool: &PgPool, id: Uuid) -> Result<Vec<Email>, FleetError> {
    let Some(e) = store::get(pool, id).await? else {
        return Ok(Vec::new());
    };
    if e.outcome != ExportState::Succeeded || e.notified_at.is_some() {
        return Ok(Vec::new());
    }
    let Some(inst) = fleet::instance(pool, e.instance_id).await? else {
        return Ok(Vec::new());
    };
    let mut to: Vec<String> = herd_store::orgs::members(pool, OrgId(e.org_id))
        .await?
        .into_iter()
        .filter(|m| m.role == Role::Owner)
        .map(|m| m.email)
        .collect();
    if let Some(asker) = &e.requested_by_email {
        if !to.contains(asker) {
            to.push(asker.clone());
        }
    }
    let link = format!(
        "{}/o/{}/servers/{}#exports",
        e.base_url.trim_end_matches('/'),
        inst.org_slug,
        inst.id
    );
    let until = e
        .expires_at
        .map(herd_domain::utc_minute)
        .unwrap_or_default();
    let who = e.requested_by_email.as_deref().unwrap_or("a member");
    let secrets = match &e.secrets_recipient {
        Some(r) => format!(" It also holds the server's secrets, app-secrets.env.age, sealed to the age key {r}: only that key's identity opens it (`age -d -i key.txt app-secrets.env.age`)."),
        None => String::new(),
    };
    Ok(to
        .into_iter()
        .map(|to| Email {
            to,
            subject: format!("[Herd] The export of {} is ready", inst.domain),
            body: format!(
                "The export of {domain} that {who} asked for is ready.\n\nDownload it from the server's page until {until}:\n{link}\n\nIt holds the database dump (pg_dump custom format: restore it with pg_restore), the media archive (a tar of the server's uploaded files, when they are kept on its volume) and manifest.txt, which lists every file's SHA-256 (check the pieces with `sha256sum -c manifest.txt`). Herd checks every byte against the manifest while you download.{secrets}\n\nOnly owners and admins of {org} can download it, and each download is recorded in the organization's audit log.\n",
                domain = inst.domain,
                org = inst.org_name,
            ),
        })
        .collect())
}

/// Email every owner of the organization that export `export_id`, which carries the
/// server's secrets, was asked for: the secrets open every account of the server, so no
/// owner learns of it only when it is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsAskedEmail {
    pub export_id: Uuid,
}

impl Job for SecretsAskedEmail {
    const KIND: &'static str = "fleet.export_secrets_asked_email";
    const MAX_ATTEMPTS: i32 = 10;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("export-secrets-asked:{}", self.export_id))
    }
}

/// The notices of [`SecretsAskedEmail`]: one to each owner of the organization, for an
/// export asked with a key; none otherwise.
pub async fn secrets_asked_emails(pool: &PgPool, id: Uuid) -> Result<Vec<Email>, FleetError> {
    let Some(e) = store::get(pool, id).await? else {
        return Ok(Vec::new());
    };
    let Some(key) = &e.secrets_recipient else {
        return Ok(Vec::new());
    };
    let Some(inst) = fleet::instance(pool, e.instance_id).await? else {
        return Ok(Vec::new());
    };
    let who = e.requested_by_email.as_deref().unwrap_or("a member");
    let at = herd_domain::utc_minute(e.requested_at);
    let link = format!(
        "{}/o/{}/servers/{}#exports",
        e.base_url.trim_end_matches('/'),
        inst.org_slug,
        inst.id
    );
    Ok(herd_store::orgs::members(pool, OrgId(e.org_id))
        .await?
        .into_iter()
        .filter(|m| m.role == Role::Owner)
        .map(|m| Email {
            to: m.email,
            subject: format!("[Herd] An export of {} with its secrets was asked for", inst.domain),
            body: format!(
                "{who} asked on {at} for an export of {domain} that carries the server's secrets (SECRET_KEY_BASE, OTP_SECRET and the encryption keys), sealed to the age key\n\n  {key}\n\nWhoever holds that key's identity can read the export's two-factor secrets and encrypted data, and run the server elsewhere. It is listed on the server's page:\n{link}\n\nIf nobody in {org} meant to ask for it, contact support now, and have the account of {who} change its password: asking for it took that password.\n",
                domain = inst.domain,
                org = inst.org_name,
            ),
        })
        .collect())
}

/// Registers the export emails' handlers.
pub fn register(registry: &mut Registry, pool: &PgPool, mailer: &Mailer) {
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: SecretsAskedEmail| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            for email in secrets_asked_emails(&pool, job.export_id).await? {
                mailer.send(&email).await?;
            }
            Ok(())
        }
    });
    let (p, m) = (pool.clone(), mailer.clone());
    registry.register(move |job: ExportReadyEmail| {
        let (pool, mailer) = (p.clone(), m.clone());
        async move {
            for email in ready_emails(&pool, job.export_id).await? {
                mailer.send(&email).await?;
            }
            store::mark_notified(&pool, job.export_id).await?;
            Ok(())
        }
    });
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn export(location: Option<&str>) -> Export {
        let now = OffsetDateTime::now_utc();
        Export {
            id: Uuid::nil(),
            instance_id: Uuid::nil(),
            org_id: Uuid::nil(),
            slug: "lyon".into(),
            domain: "lyon.social".into(),
            requested_by: None,
            requested_by_email: None,
            requested_at: now,
            outcome: ExportState::Succeeded,
            location: location.map(str::to_owned),
            size_bytes: None,
            checksum: None,
            started_at: None,
            finished_at: None,
            message: None,
            link_days: 7,
            expires_at: None,
            download_count: 0,
            base_url: String::new(),
            notified_at: None,
            secrets_recipient: None,
        }
    }

    #[test]
    fn only_an_age_public_key_is_a_recipient_and_a_private_one_is_never_echoed() {
        let identity = age::x25519::Identity::generate();
        let public = identity.to_public().to_string();
        assert_eq!(secrets_recipient(None).ok(), Some(None));
        assert_eq!(secrets_recipient(Some("  \n")).ok(), Some(None));
        assert_eq!(
            secrets_recipient(Some(&format!(" {public}\n"))).ok(),
            Some(Some(public.clone()))
        );
        use age::secrecy::ExposeSecret;
        let private = identity.to_string().expose_secret().to_owned();
        for (bad, says) in [
            (private.as_str(), "private identity"),
            (private.to_lowercase().as_str(), "private identity"),
            ("age1qqqq", "not an age public key"),
            (
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
                "not an age public key",
            ),
        ] {
            let message = secrets_recipient(Some(bad)).unwrap_err().to_string();
            assert!(message.contains(says), "{bad}: {message}");
            assert!(!message.contains(bad), "never echoed: {message}");
        }
    }

    #[test]
    fn an_exports_objects_are_where_the_operator_writes_that_export_whatever_is_reported() {
        let store = ExportStore::in_memory();
        let nil = Uuid::nil();
        let at = |e: &Export| store.key(e, MANIFEST).to_string();
        let own = format!("exports/lyon/{nil}/manifest.txt");
        // Another export's directory, another bucket, nothing reported: its own place.
        assert_eq!(
            at(&export(Some("s3://herd-backups/herd/exports/lyon/x1/"))),
            own
        );
        assert_eq!(
            at(&export(Some("s3://herd-backups/herd/exports/paris/x2/"))),
            own
        );
        assert_eq!(at(&export(Some("s3://other/exports/lyon/x1/"))), own);
        assert_eq!(at(&export(None)), own);
    }
}
