//! Files attached to tickets: customers attach them when they open a ticket or reply
//! (in the portal or by email), operators when they reply. Each file is checked on its
//! bytes (herd-domain's [`attachment`](herd_domain::support::attachment) rules: kind by
//! magic number, size, count), kept in the [`AttachmentStore`] (a local directory, or an
//! S3 bucket, through `object_store`) under a key Herd makes, and recorded with its
//! message in the message's transaction, audited. Anything refused changes nothing: no
//! ticket, no message, no stored object.
//!
//! An attachment is served to whoever may see its ticket, and an internal note's only to
//! operators ([`customer_download`], [`operator_download`]).

use crate::tickets::{self, AfterReply, Member, Opening};
use crate::{SupportError, Who};
use bytes::Bytes;
use herd_domain::ids::TicketId;
use herd_domain::support::attachment::{check_files, AttachmentKind, Checked};
use herd_domain::OrgId;
use herd_store::audit::{self, NewEntry};
use herd_store::support_attachments::{self as store, NewAttachment};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use std::fmt;
use std::sync::Arc;
use time::OffsetDateTime;
use uuid::Uuid;

pub use herd_store::support_attachments::Attachment;

/// What the attachment store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    #[error(
        "attachment store {0:?}: use a directory, file:///path, s3://bucket/prefix or memory:"
    )]
    Scheme(String),
    #[error("attachment directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("attachment store: {0}")]
    ObjectStore(#[from] object_store::Error),
}

/// Where attachments' bytes are kept; cheap to clone.
#[derive(Clone)]
pub struct AttachmentStore {
    inner: Arc<dyn ObjectStore>,
    /// Where, for logs (never credentials).
    place: String,
}

impl fmt::Debug for AttachmentStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AttachmentStore").field(&self.place).finish()
    }
}

impl AttachmentStore {
    /// The store `setting` names (`HERD_SUPPORT_ATTACHMENTS_URL`): a directory (a plain
    /// path or `file:///path`, created if missing), `s3://bucket/prefix` (credentials,
    /// region and endpoint from the usual `AWS_*` variables), or `memory:` (kept in memory,
    /// lost at exit: for tests and demonstrations).
    pub fn from_setting(setting: &str) -> Result<Self, StoreSetupError> {
        let setting = setting.trim();
        if setting == "memory:" {
            return Ok(Self::in_memory());
        }
        if let Some(rest) = setting.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            let prefix = prefix.trim_matches('/');
            let inner: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    s3,
                    ObjectPath::from(prefix),
                ))
            };
            return Ok(Self {
                inner,
                place: format!("s3://{bucket}/{prefix}"),
            });
        }
        let dir = match setting.strip_prefix("file://") {
            Some(path) => path,
            None if setting.contains("://") => {
                return Err(StoreSetupError::Scheme(setting.to_owned()))
            }
            None => setting,
        };
        Self::local(std::path::Path::new(dir))
    }

    /// Files under `dir`, created if missing.
    pub fn local(dir: &std::path::Path) -> Result<Self, StoreSetupError> {
        let err = |source| StoreSetupError::Directory {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?
            .with_automatic_cleanup(true);
        Ok(Self {
            inner: Arc::new(fs),
            place: dir.display().to_string(),
        })
    }

    /// Kept in memory only.
    pub fn in_memory() -> Self {
        Self {
            inner: Arc::new(object_store::memory::InMemory::new()),
            place: "memory:".to_owned(),
        }
    }

    /// Where it keeps files, for logs.
    pub fn place(&self) -> &str {
        &self.place
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), SupportError> {
        self.inner
            .put(&ObjectPath::from(key), PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| SupportError::Attachments(format!("storing {key}: {e}")))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, SupportError> {
        let read = async { self.inner.get(&ObjectPath::from(key)).await?.bytes().await };
        read.await
            .map_err(|e| SupportError::Attachments(format!("reading {key}: {e}")))
    }

    async fn remove(&self, keys: &[String]) {
        for key in keys {
            if let Err(e) = self.inner.delete(&ObjectPath::from(key.as_str())).await {
                tracing::warn!(key, error = %e, "could not remove an attachment left behind");
            }
        }
    }

    /// Removes the objects under `tickets/` that no attachment row names and that were
    /// written before `cutoff` (an upload is put before its row commits, so a younger
    /// object may be one whose message is being saved right now). Such objects are left
    /// by a process that died between storing files and committing their message, or
    /// by a removal that failed after a refused one. Returns how many were removed; a
    /// removal that fails is logged and left for the next sweep.
    pub async fn sweep_orphans(
        &self,
        pool: &PgPool,
        cutoff: OffsetDateTime,
    ) -> Result<usize, SupportError> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from("tickets");
        let old: Vec<String> = self
            .inner
            .list(Some(&prefix))
            .try_filter(|m| {
                let written = OffsetDateTime::from_unix_timestamp(m.last_modified.timestamp())
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH);
                std::future::ready(written < cutoff)
            })
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(|e| SupportError::Attachments(format!("listing: {e}")))?;
        // A store that holds old files while the database knows no attachment at all is
        // the wrong database (or a bucket shared with another deployment): remove nothing.
        if !old.is_empty() && !store::any(pool).await? {
            tracing::error!(
                objects = old.len(),
                place = %self.place,
                "the attachment store holds files but the database has no attachment: not sweeping (is HERD_SUPPORT_ATTACHMENTS_URL shared or the database new?)"
            );
            return Ok(0);
        }
        let mut removed = 0;
        for batch in old.chunks(1000).take(SWEEP_BATCHES) {
            let known: std::collections::HashSet<String> =
                store::known_keys(pool, batch).await?.into_iter().collect();
            for key in batch.iter().filter(|k| !known.contains(*k)) {
                match self.inner.delete(&ObjectPath::from(key.as_str())).await {
                    Ok(()) => {
                        tracing::info!(key, "orphaned support attachment removed");
                        removed += 1;
                    }
                    Err(e) => {
                        tracing::warn!(key, error = %e, "could not remove an orphaned attachment")
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Every key in the store (for tests and checks: a refused upload leaves none).
    pub async fn keys(&self) -> Result<Vec<String>, SupportError> {
        use futures::TryStreamExt;
        let mut keys: Vec<String> = self
            .inner
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(|e| SupportError::Attachments(format!("listing: {e}")))?;
        keys.sort();
        Ok(keys)
    }
}

/// At most this many batches of 1,000 old files are looked at per sweep (the rest at the
/// next one), so that one sweep stays short.
const SWEEP_BATCHES: usize = 10;

/// A file as the browser or the email sent it.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Its name as sent (only its last segment is kept, cleaned).
    pub name: String,
    pub bytes: Bytes,
}

#[derive(Debug, Clone)]
struct File {
    checked: Checked,
    sha256: String,
    bytes: Bytes,
}

/// What comes with a message besides its text: checked files and where they go, the
/// email it came from, and the problems found with the files (reported with the form's
/// other errors).
#[derive(Debug, Default)]
pub(crate) struct Extras<'a> {
    store: Option<&'a AttachmentStore>,
    files: Vec<File>,
    /// The Message-ID of the email the message came from.
    pub(crate) email_message_id: Option<&'a str>,
    /// How its sender was authenticated ([`crate::inbound::SenderAuth::as_str`]).
    pub(crate) email_authentication: Option<&'a str>,
    pub(crate) errors: Vec<(&'static str, String)>,
}

/// The form field attachment problems are shown next to.
pub const FIELD: &str = "attachments";

impl<'a> Extras<'a> {
    /// Checks `uploads` for one message, to be kept in `store`.
    pub(crate) fn files(store: &'a AttachmentStore, uploads: Vec<Upload>) -> Self {
        let sent: Vec<(&str, &[u8])> = uploads
            .iter()
            .map(|u| (u.name.as_str(), u.bytes.as_ref()))
            .collect();
        match check_files(&sent) {
            Ok(checked) => Extras {
                store: Some(store),
                files: checked
                    .into_iter()
                    .zip(uploads)
                    .map(|(checked, u)| File {
                        checked,
                        sha256: hex::encode(Sha256::digest(&u.bytes)),
                        bytes: u.bytes,
                    })
                    .collect(),
                ..Extras::default()
            },
            Err(problems) => Extras {
                errors: vec![(FIELD, problems.join(" "))],
                ..Extras::default()
            },
        }
    }

    /// A message body checked alongside the files: refused with every problem at once.
    pub(crate) fn body(
        &self,
        field: &'static str,
        checked: Result<String, &'static str>,
    ) -> Result<String, SupportError> {
        match checked {
            Ok(body) if self.errors.is_empty() => Ok(body),
            checked => {
                let mut errors: Vec<_> = checked
                    .err()
                    .map(|e| (field, e.to_owned()))
                    .into_iter()
                    .collect();
                errors.extend(self.errors.iter().cloned());
                Err(SupportError::Invalid(errors))
            }
        }
    }

    /// Stores the files, records them (and the email origin) for `message` of `ticket`,
    /// audited as done by `who` (`None`: by email without a session), then commits `tx`.
    /// The files are put into the store last, under the ticket's lock; if anything fails
    /// after that, they are removed again, so a refused message leaves nothing behind.
    pub(crate) async fn attach_and_commit(
        &self,
        mut tx: Transaction<'_, Postgres>,
        who: Who<'_>,
        org: OrgId,
        ticket: TicketId,
        message: Uuid,
        at: OffsetDateTime,
    ) -> Result<(), SupportError> {
        if let Some(id) = self.email_message_id {
            store::mark_from_email(&mut tx, message, id).await?;
            audit::record(
                &mut tx,
                NewEntry {
                    actor: Some((who.id, who.email)),
                    org: Some(org),
                    action: "support.ticket.email_received",
                    target: ticket.to_string(),
                    source_ip: Some(who.ip),
                    details: json!({
                        "via": "email",
                        "message_id": id,
                        "authentication": self.email_authentication,
                    }),
                },
            )
            .await?;
        }
        let Some(files) = self.store.filter(|_| !self.files.is_empty()) else {
            tx.commit().await?;
            return Ok(());
        };
        let mut keys = Vec::new();
        let mut listed = Vec::new();
        for f in &self.files {
            let id = Uuid::now_v7();
            let key = format!("tickets/{}/{id}", ticket.0);
            store::insert(
                &mut tx,
                &NewAttachment {
                    id,
                    ticket,
                    message,
                    file_name: &f.checked.name,
                    size_bytes: i64::try_from(f.checked.size).unwrap_or(i64::MAX),
                    sha256: &f.sha256,
                    kind: f.checked.kind,
                    storage_key: &key,
                    at,
                },
            )
            .await?;
            listed.push(json!({
                "id": id, "name": f.checked.name, "size": f.checked.size,
                "type": f.checked.kind.content_type(), "sha256": f.sha256,
            }));
            keys.push(key);
        }
        audit::record(
            &mut tx,
            NewEntry {
                actor: Some((who.id, who.email)),
                org: Some(org),
                action: "support.ticket.attached",
                target: ticket.to_string(),
                source_ip: Some(who.ip),
                details: json!({ "message": message, "files": listed }),
            },
        )
        .await?;
        let mut stored = Vec::new();
        for (f, key) in self.files.iter().zip(&keys) {
            if let Err(e) = files.put(key, f.bytes.clone()).await {
                files.remove(&stored).await;
                return Err(e);
            }
            stored.push(key.clone());
        }
        if let Err(e) = tx.commit().await {
            files.remove(&stored).await;
            return Err(e.into());
        }
        Ok(())
    }
}

/// Opens a ticket with files; refused files are reported with the form's other errors
/// and nothing is written or stored.
pub async fn open(
    pool: &PgPool,
    files: &AttachmentStore,
    m: Member<'_>,
    o: &Opening,
    uploads: Vec<Upload>,
) -> Result<TicketId, SupportError> {
    tickets::open_with(pool, m, o, Extras::files(files, uploads)).await
}

/// A member's reply with files.
pub async fn customer_reply(
    pool: &PgPool,
    files: &AttachmentStore,
    m: Member<'_>,
    id: TicketId,
    body: &str,
    uploads: Vec<Upload>,
) -> Result<(), SupportError> {
    tickets::customer_reply_with(pool, m, id, body, Extras::files(files, uploads)).await
}

/// An operator's public reply with files (emailed like any reply; the email links to the
/// ticket, where the customer downloads them).
#[expect(
    clippy::too_many_arguments,
    reason = "a reply's parts, as the handler has them"
)]
pub async fn operator_reply(
    pool: &PgPool,
    files: &AttachmentStore,
    op: Who<'_>,
    id: TicketId,
    body: &str,
    after: AfterReply,
    base_url: &str,
    uploads: Vec<Upload>,
) -> Result<(), SupportError> {
    tickets::operator_reply_with(
        pool,
        op,
        id,
        body,
        after,
        base_url,
        Extras::files(files, uploads),
    )
    .await
}

/// An operator's internal note with files: only operators ever get them.
pub async fn note(
    pool: &PgPool,
    files: &AttachmentStore,
    op: Who<'_>,
    id: TicketId,
    body: &str,
    uploads: Vec<Upload>,
) -> Result<(), SupportError> {
    tickets::note_with(pool, op, id, body, Extras::files(files, uploads)).await
}

/// A file to download.
#[derive(Debug, Clone)]
pub struct Download {
    /// The safe name it was kept under.
    pub name: String,
    pub kind: AttachmentKind,
    pub bytes: Bytes,
}

async fn download(
    pool: &PgPool,
    files: &AttachmentStore,
    ticket: TicketId,
    id: Uuid,
    operator: bool,
) -> Result<Download, SupportError> {
    let a = store::get(pool, ticket, id)
        .await?
        .filter(|a| operator || !a.internal)
        .ok_or(SupportError::NotFound)?;
    Ok(Download {
        bytes: files.get(&a.storage_key).await?,
        name: a.file_name,
        kind: a.kind,
    })
}

/// Attachment `id` of ticket `ticket` for a member: only on a ticket they may see, and
/// never one of an internal note (anything else: not found).
pub async fn customer_download(
    pool: &PgPool,
    files: &AttachmentStore,
    m: Member<'_>,
    ticket: TicketId,
    id: Uuid,
) -> Result<Download, SupportError> {
    tickets::visible(pool, m, ticket).await?;
    download(pool, files, ticket, id, false).await
}

/// Attachment `id` of ticket `ticket` for an operator.
pub async fn operator_download(
    pool: &PgPool,
    files: &AttachmentStore,
    ticket: TicketId,
    id: Uuid,
) -> Result<Download, SupportError> {
    download(pool, files, ticket, id, true).await
}
