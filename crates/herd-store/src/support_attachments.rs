//! Support tickets' attachments (the rows: the bytes are in the attachment store) and the
//! email origin of messages (their Message-ID, unique: an email is added once).

use crate::StoreError;
use herd_domain::ids::TicketId;
use herd_domain::support::attachment::AttachmentKind;
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// The unique index on `ticket_messages.email_message_id`.
pub const EMAIL_SEEN: &str = "ticket_messages_email_message_id_key";

/// An attachment with what its authorization needs (its ticket, and whether its message
/// is an internal note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub id: Uuid,
    pub ticket_id: Uuid,
    pub message_id: Uuid,
    /// Its message is an internal note (operators only).
    pub internal: bool,
    pub file_name: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub kind: AttachmentKind,
    pub storage_key: String,
    pub created_at: OffsetDateTime,
}

struct Row {
    id: Uuid,
    ticket_id: Uuid,
    message_id: Uuid,
    internal: bool,
    file_name: String,
    size_bytes: i64,
    sha256: String,
    content_type: String,
    storage_key: String,
    created_at: OffsetDateTime,
}

impl TryFrom<Row> for Attachment {
    type Error = StoreError;
    fn try_from(r: Row) -> Result<Self, StoreError> {
        Ok(Attachment {
            kind: AttachmentKind::parse(&r.content_type)
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
            id: r.id,
            ticket_id: r.ticket_id,
            message_id: r.message_id,
            internal: r.internal,
            file_name: r.file_name,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            storage_key: r.storage_key,
            created_at: r.created_at,
        })
    }
}

/// An attachment to record (its bytes are stored under `storage_key` first).
#[derive(Debug, Clone)]
pub struct NewAttachment<'a> {
    pub id: Uuid,
    pub ticket: TicketId,
    pub message: Uuid,
    pub file_name: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a str,
    pub kind: AttachmentKind,
    pub storage_key: &'a str,
    pub at: OffsetDateTime,
}

#[tracing::instrument(skip(conn, a), fields(ticket = %a.ticket, attachment = %a.id))]
pub async fn insert(conn: &mut PgConnection, a: &NewAttachment<'_>) -> Result<(), StoreError> {
    sqlx::query!(
        "INSERT INTO ticket_attachments (id, ticket_id, message_id, file_name, size_bytes, sha256,
                                         content_type, storage_key, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        a.id,
        a.ticket.0,
        a.message,
        a.file_name,
        a.size_bytes,
        a.sha256,
        a.kind.content_type(),
        a.storage_key,
        a.at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The attachments of these messages, oldest first; those of internal notes only when
/// `with_internal`.
#[tracing::instrument(skip(ex, messages))]
pub async fn of_messages(
    ex: impl PgExecutor<'_>,
    messages: &[Uuid],
    with_internal: bool,
) -> Result<Vec<Attachment>, StoreError> {
    sqlx::query_as!(
        Row,
        "SELECT a.id, a.ticket_id, a.message_id, m.internal, a.file_name, a.size_bytes, a.sha256,
                a.content_type, a.storage_key, a.created_at
         FROM ticket_attachments a JOIN ticket_messages m ON m.id = a.message_id
         WHERE a.message_id = ANY($1) AND ($2 OR NOT m.internal)
         ORDER BY a.created_at, a.id",
        messages,
        with_internal
    )
    .fetch_all(ex)
    .await?
    .into_iter()
    .map(Attachment::try_from)
    .collect()
}

/// One attachment of `ticket`.
#[tracing::instrument(skip(ex))]
pub async fn get(
    ex: impl PgExecutor<'_>,
    ticket: TicketId,
    id: Uuid,
) -> Result<Option<Attachment>, StoreError> {
    sqlx::query_as!(
        Row,
        "SELECT a.id, a.ticket_id, a.message_id, m.internal, a.file_name, a.size_bytes, a.sha256,
                a.content_type, a.storage_key, a.created_at
         FROM ticket_attachments a JOIN ticket_messages m ON m.id = a.message_id
         WHERE a.id = $1 AND a.ticket_id = $2",
        id,
        ticket.0
    )
    .fetch_optional(ex)
    .await?
    .map(Attachment::try_from)
    .transpose()
}

/// Marks message `id` as having come by email, with the email's Message-ID; a Message-ID
/// already recorded is a [`StoreError::Conflict`] on [`EMAIL_SEEN`].
#[tracing::instrument(skip(conn))]
pub async fn mark_from_email(
    conn: &mut PgConnection,
    id: Uuid,
    email_message_id: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE ticket_messages SET from_email = true, email_message_id = $2 WHERE id = $1",
        id,
        email_message_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The ticket of the message that came from the email with this Message-ID, if one did.
#[tracing::instrument(skip(ex))]
pub async fn email_seen(
    ex: impl PgExecutor<'_>,
    email_message_id: &str,
) -> Result<Option<TicketId>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT ticket_id FROM ticket_messages WHERE email_message_id = $1",
        email_message_id
    )
    .fetch_optional(ex)
    .await?
    .map(TicketId))
}

/// Which of these storage keys belong to a recorded attachment.
pub async fn known_keys(
    ex: impl PgExecutor<'_>,
    keys: &[String],
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT storage_key FROM ticket_attachments WHERE storage_key = ANY($1)",
        keys
    )
    .fetch_all(ex)
    .await?)
}

/// Is any attachment recorded at all?
pub async fn any(ex: impl PgExecutor<'_>) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar!("SELECT EXISTS (SELECT 1 FROM ticket_attachments) AS \"any!\"")
            .fetch_one(ex)
            .await?,
    )
}
