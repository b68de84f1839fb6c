//! Support tickets' files: their links on a ticket's page, and their downloads. A member
//! downloads the files of a ticket they may see (another organization's, or one they may
//! not see: not found), never one of an internal note; operators download any. Every file
//! is sent as a download (`Content-Disposition: attachment`, the safe name it was kept
//! under), with the type its bytes were recognized as and `nosniff`: never shown inline,
//! never as HTML.

use super::support::{app_error, member};
use crate::auth::{Operator, OrgCtx};
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::routes::{Access, Capability, Routes};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use herd_domain::ids::TicketId;
use herd_domain::support::attachment::{ascii_file_name, size_label, AttachmentKind};
use herd_support::attachments::{self, Attachment, Download};
use herd_support::tickets::TicketView;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    r.get(
        "/o/{slug}/support/{ticket}/files/{file}",
        Access::Org(Capability::View),
        customer_download,
    )
    .get(
        "/operator/support/{ticket}/files/{file}",
        Access::Operator,
        operator_download,
    )
}

/// A file's link under its message.
#[derive(Debug, Clone)]
pub struct FileLink {
    pub href: String,
    pub name: String,
    /// "PNG image, 120 KB"
    pub about: String,
}

/// The files of a ticket's page, by message; `base` is the ticket pages' path
/// (`/o/acme/support` or `/operator/support`).
pub fn links(v: &TicketView, base: &str) -> Vec<(Uuid, Vec<FileLink>)> {
    let mut out: Vec<(Uuid, Vec<FileLink>)> = Vec::new();
    for a in &v.attachments {
        let link = link(a, base);
        match out.iter_mut().find(|(m, _)| *m == a.message_id) {
            Some((_, list)) => list.push(link),
            None => out.push((a.message_id, vec![link])),
        }
    }
    out
}

pub fn link(a: &Attachment, base: &str) -> FileLink {
    FileLink {
        href: format!("{base}/{}/files/{}", a.ticket_id, a.id),
        name: a.file_name.clone(),
        about: format!(
            "{}, {}",
            a.kind.label(),
            size_label(usize::try_from(a.size_bytes).unwrap_or(usize::MAX))
        ),
    }
}

/// A file as a download, never rendered by the browser.
fn download(d: Download) -> Response {
    let content_type = match d.kind {
        AttachmentKind::Text => "text/plain; charset=utf-8",
        kind => kind.content_type(),
    };
    let encoded: String = url::form_urlencoded::byte_serialize(d.name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    let disposition = format!(
        "attachment; filename=\"{}\"; filename*=UTF-8''{encoded}",
        ascii_file_name(&d.name)
    );
    let mut resp = d.bytes.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition)
            .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    resp
}

/// A file's id from its path segment; anything else is not found.
fn file_id(segment: &str) -> Result<Uuid, AppError> {
    segment.parse().map_err(|_| AppError::NotFound)
}

async fn customer_download(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, ticket, file)): Path<(String, Uuid, String)>,
) -> Result<Response, AppError> {
    let file = file_id(&file)?;
    let d = attachments::customer_download(
        &state.pool,
        &state.config.support_attachments,
        member(&ctx, &ip),
        TicketId(ticket),
        file,
    )
    .await
    .map_err(app_error)?;
    Ok(download(d))
}

async fn operator_download(
    State(state): State<AppState>,
    Operator(_op): Operator,
    Path((ticket, file)): Path<(Uuid, String)>,
) -> Result<Response, AppError> {
    let file = file_id(&file)?;
    let d = attachments::operator_download(
        &state.pool,
        &state.config.support_attachments,
        TicketId(ticket),
        file,
    )
    .await
    .map_err(app_error)?;
    Ok(download(d))
}
