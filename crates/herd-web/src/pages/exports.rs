//! A server's exports in the portal (issue 12): an owner or admin asks for one on the
//! server's page, and downloads its files there until its link expires. The files are
//! streamed from the bucket, each piece checked against the export's manifest as it goes
//! (see [`herd_fleet::exports`]): a file that does not match ends in a failed download,
//! never a short one.

use crate::auth::OrgCtx;
use crate::client_ip::ClientIp;
use crate::error::AppError;
use crate::pages::auth::{reauthenticate, Refusal};
use crate::routes::{Access, Capability, Routes};
use crate::session;
use crate::state::AppState;
use crate::views::{datetime, render_status, Layout, MessagePage};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use herd_domain::export::ExportState;
use herd_domain::support::attachment::size_label;
use herd_fleet::clusters::Actor;
use herd_fleet::exports::{self, Ask, DownloadError, FileRef, Listed};
use herd_fleet::FleetError;
use serde::Deserialize;
use time::OffsetDateTime;
use tower_sessions::Session;
use uuid::Uuid;

pub fn routes(r: Routes) -> Routes {
    let manage = Access::Org(Capability::ManageServers);
    r.post("/o/{slug}/servers/{server}/exports", manage, ask)
        .get(
            "/o/{slug}/servers/{server}/exports/{export}/{name}",
            manage,
            download,
        )
}

/// An export as the server page lists it.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub id: Uuid,
    pub state: ExportState,
    pub label: String,
    pub requested: String,
    pub requested_by: String,
    pub size: Option<String>,
    /// "until 2026-12-14 10:00 UTC", or "expired on …".
    pub expiry: Option<String>,
    pub message: Option<String>,
    /// (href, name, size) of each file to download.
    pub files: Vec<(String, String, String)>,
    pub files_problem: Option<String>,
    /// The age recipient its app secrets are sealed to, when it has them.
    pub secrets_recipient: Option<String>,
}

fn bytes_label(n: u64) -> String {
    size_label(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The exports of server `id` for its page (owners and admins only see them).
pub async fn rows(state: &AppState, ctx: &OrgCtx, id: Uuid) -> Result<Vec<ExportRow>, AppError> {
    let now = OffsetDateTime::now_utc();
    let listed = exports::for_page(&state.pool, &state.config.exports, id, now).await?;
    Ok(listed
        .into_iter()
        .map(|l: Listed| {
            let e = &l.export;
            let base = format!("/o/{}/servers/{id}/exports/{}", ctx.org.slug, e.id);
            ExportRow {
                id: e.id,
                state: e.outcome,
                label: if l.expired {
                    "Expired".to_owned()
                } else {
                    e.outcome.label().to_owned()
                },
                requested: datetime(e.requested_at),
                requested_by: e
                    .requested_by_email
                    .clone()
                    .unwrap_or_else(|| "a former member".into()),
                size: e
                    .size_bytes
                    .map(|s| bytes_label(u64::try_from(s).unwrap_or(0))),
                expiry: e.expires_at.map(|at| {
                    if l.expired {
                        format!("expired on {}", datetime(at))
                    } else {
                        format!("until {}", datetime(at))
                    }
                }),
                message: match e.outcome {
                    ExportState::Failed => {
                        Some("The cluster could not take it; our operators see why. You can ask for another.".into())
                    }
                    ExportState::Corrupt => Some(
                        "Its files did not match their checksums, so it is withdrawn. Ask for a new one."
                            .into(),
                    ),
                    _ => None,
                },
                files: l
                    .files
                    .iter()
                    .map(|f| {
                        (
                            format!("{base}/{}", f.name),
                            f.name.clone(),
                            bytes_label(f.size),
                        )
                    })
                    .collect(),
                files_problem: l.files_problem.clone(),
                secrets_recipient: e.secrets_recipient.clone(),
            }
        })
        .collect())
}

/// The export form: an owner may give an age recipient to have the app secrets in it,
/// with their password.
#[derive(Deserialize)]
struct AskForm {
    #[serde(default)]
    secrets_recipient: String,
    #[serde(default)]
    credential: String,
}

async fn ask(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id)): Path<(String, Uuid)>,
    Form(form): Form<AskForm>,
) -> Result<Response, AppError> {
    let who = Actor {
        id: ctx.user.id(),
        email: &ctx.user.email,
        ip: &ip,
    };
    // The secrets open every account of the server: asking for them takes the password
    // again, as turning off two-factor authentication does (a stolen session alone is not
    // enough). The key is checked first: one refused costs no password attempt.
    if !form.secrets_recipient.trim().is_empty() {
        let refused = match exports::secrets_recipient(Some(&form.secrets_recipient)) {
            Err(FleetError::Invalid(m)) => Some(m),
            Err(e) => return Err(e.into()),
            Ok(_) => match reauthenticate(&state, &ctx.user, &ip, &form.credential).await? {
                Ok(_) => None,
                Err(Refusal { message, .. }) => Some(format!(
                    "Your password: {message} It is asked to include the server's secrets."
                )),
            },
        };
        if let Some(message) = refused {
            session::flash(&session, "error", message).await?;
            return Ok(
                Redirect::to(&format!("/o/{}/servers/{id}#exports", ctx.org.slug)).into_response(),
            );
        }
    }
    let result = exports::request(
        &state.pool,
        ctx.org.id(),
        who,
        ctx.role,
        id,
        Ask {
            secrets_recipient: Some(&form.secrets_recipient),
            link_days: state.config.export_link_days,
            base_url: state.config.public_url.as_str(),
        },
    )
    .await;
    let (kind, message) = match result {
        Ok(_) => (
            "ok",
            "The export is being taken. We email you when it is ready to download from this page."
                .to_owned(),
        ),
        Err(FleetError::Invalid(m) | FleetError::Conflict(m)) => ("error", m),
        Err(e) => return Err(e.into()),
    };
    session::flash(&session, kind, message).await?;
    Ok(Redirect::to(&format!("/o/{}/servers/{id}#exports", ctx.org.slug)).into_response())
}

async fn download(
    State(state): State<AppState>,
    session: Session,
    ClientIp(ip): ClientIp,
    ctx: OrgCtx,
    Path((_slug, id, export, name)): Path<(String, Uuid, String, String)>,
) -> Result<Response, AppError> {
    let export: Uuid = export.parse().map_err(|_| AppError::NotFound)?;
    let who = Actor {
        id: ctx.user.id(),
        email: &ctx.user.email,
        ip: &ip,
    };
    let want = FileRef {
        instance: id,
        export,
        file: &name,
    };
    let now = OffsetDateTime::now_utc();
    let back = format!("/o/{}/servers/{id}#exports", ctx.org.slug);
    let refused = |status: StatusCode, title: &str, message: String| {
        let (title, back) = (title.to_owned(), back.clone());
        let session = session.clone();
        let user = ctx.user.clone();
        async move {
            render_status(
                status,
                &MessagePage {
                    l: Layout::new(&session, Some(&user)).await?,
                    title,
                    message,
                    link: Some((back, "Back to the server".into())),
                },
            )
        }
    };
    match exports::download(
        &state.pool,
        &state.config.exports,
        ctx.org.id(),
        who,
        want,
        now,
    )
    .await
    {
        Ok(d) => Ok(attachment(d)),
        Err(DownloadError::NotFound) => Err(AppError::NotFound),
        Err(DownloadError::Expired(at)) => {
            refused(
                StatusCode::GONE,
                "This export's link has expired",
                format!(
                    "Its link expired on {}, and its files are no longer offered. Ask for a new export on the server's page.",
                    datetime(at)
                ),
            )
            .await
        }
        Err(DownloadError::NotReady(s)) => {
            refused(
                StatusCode::CONFLICT,
                "This export cannot be downloaded",
                format!("It is not ready: {}.", s.label().to_lowercase()),
            )
            .await
        }
        Err(DownloadError::Corrupt(_)) => {
            refused(
                StatusCode::CONFLICT,
                "This export failed its integrity check",
                "Its files do not match the checksums the cluster recorded when it took them, so Herd does not serve them. It is withdrawn and our operators are told; ask for a new export on the server's page.".into(),
            )
            .await
        }
        Err(DownloadError::Unavailable(detail)) => {
            tracing::warn!(export = %export, error = %detail, "export download: bucket unreachable");
            Err(AppError::Unavailable)
        }
        Err(DownloadError::Fleet(e)) => Err(e.into()),
    }
}

/// A download: streamed, with its length, never compressed, never shown inline.
fn attachment(d: exports::Download) -> Response {
    let mut resp = Body::from_stream(d.body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if d.file_name.ends_with(".txt") {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        }),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(d.length));
    // Sent as it is (the compression layer leaves it alone): the length stays true.
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    // The name is made of a slug, an artifact name and ASCII: safe in the header.
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", d.file_name))
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
