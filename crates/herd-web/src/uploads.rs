//! Forms that may carry files. [`FormWithFiles`] reads a form posted as
//! `multipart/form-data` (its text fields into the handler's form type, its files as
//! [`Upload`]s) or as an ordinary url-encoded form (no files), so a form gains a file input
//! without its handler changing shape. The CSRF middleware has checked the token first,
//! in either encoding ([`crate::csrf`]); checking the files themselves (kinds, sizes,
//! counts) is herd-support's.

use crate::error::AppError;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::Form;
use bytes::Bytes;
use herd_domain::support::attachment::{MAX_FILES, MAX_TOTAL_BYTES};
pub use herd_support::attachments::Upload;
use serde::de::DeserializeOwned;

/// The largest multipart body read: the files one message may carry, their encoding and
/// the form's text. Larger requests are refused whole (413) before anything is read into a
/// form.
pub const MAX_MULTIPART_BYTES: usize = MAX_TOTAL_BYTES + 2 * 1024 * 1024;

/// At most this many parts are read from a multipart body (files past the limit still
/// count, so that "too many files" can be said).
const MAX_PARTS: usize = 64 + MAX_FILES;

/// A form's text fields as `T`, and the files it carried.
#[derive(Debug)]
pub struct FormWithFiles<T>(pub T, pub Vec<Upload>);

/// The routes whose forms take files (a ticket's opening and replies): only there may a
/// signed-in user's multipart body be larger than an ordinary form (see `csrf`). Kept
/// next to the routes' paths in `pages::support` and `pages::operator_support`; the test
/// `uploads::tests::only_the_ticket_forms_take_files` pins them.
pub fn takes_files(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["o", _, "support"] | ["o", _, "support", _, "reply"] | ["operator", "support", _, "reply"]
    )
}

/// Is this request's body `multipart/form-data`? Its boundary, when it is.
pub fn multipart_boundary(content_type: Option<&str>) -> Option<String> {
    let ct = content_type?;
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return None;
    }
    multer::parse_boundary(ct).ok()
}

/// The parts of a multipart body: text fields (name, value) and files.
pub async fn read_multipart(
    body: Bytes,
    boundary: &str,
) -> Result<(Vec<(String, String)>, Vec<Upload>), multer::Error> {
    let stream = futures::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    let mut files = Vec::new();
    let mut count = 0;
    while let Some(field) = parts.next_field().await? {
        count += 1;
        if count > MAX_PARTS {
            break;
        }
        let name = field.name().unwrap_or_default().to_owned();
        match field.file_name().map(str::to_owned) {
            Some(file_name) => {
                let bytes = field.bytes().await?;
                // A file input left empty sends a part with no name and no bytes.
                if file_name.is_empty() && bytes.is_empty() {
                    continue;
                }
                files.push(Upload {
                    name: file_name,
                    bytes,
                });
            }
            None => fields.push((name, field.text().await?)),
        }
    }
    Ok((fields, files))
}

impl<S, T> FromRequest<S> for FormWithFiles<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = axum::response::Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::response::IntoResponse;
        let boundary = multipart_boundary(
            req.headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let Some(boundary) = boundary else {
            let Form(form) = Form::<T>::from_request(req, state)
                .await
                .map_err(IntoResponse::into_response)?;
            return Ok(FormWithFiles(form, Vec::new()));
        };
        let body = axum::body::to_bytes(req.into_body(), MAX_MULTIPART_BYTES)
            .await
            .map_err(|_| too_large())?;
        let (fields, files) = read_multipart(body, &boundary)
            .await
            .map_err(|e| AppError::BadRequest(format!("unreadable form: {e}")).into_response())?;
        let encoded = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&fields)
            .finish();
        let text = Request::builder()
            .method("POST")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(encoded))
            .map_err(|e| AppError::Internal(e.to_string()).into_response())?;
        let Form(form) = Form::<T>::from_request(text, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(FormWithFiles(form, files))
    }
}

/// What a body larger than any form takes is answered.
pub const TOO_LARGE: &str = "The files sent are larger than Herd takes at once (25 MB per message). Go back and attach fewer or smaller files; nothing was changed.";

/// The answer to a body larger than any form takes.
pub fn too_large() -> axum::response::Response {
    use axum::response::IntoResponse;
    AppError::TooLarge(TOO_LARGE.to_owned()).into_response()
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn only_the_ticket_forms_take_files() {
        assert!(takes_files("/o/acme/support"));
        assert!(takes_files("/o/acme/support/0190/reply"));
        assert!(takes_files("/operator/support/0190/reply"));
        for p in [
            "/login",
            "/o/acme/support/0190/close",
            "/o/acme/settings",
            "/operator/support/0190/note",
            "/o/acme/support/new",
        ] {
            assert!(!takes_files(p), "{p}");
        }
    }

    #[tokio::test]
    async fn a_multipart_form_gives_its_fields_and_files_but_not_an_empty_file_input() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\nHello\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"attachments\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nabc\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"attachments\"; filename=\"\"\r\nContent-Type: application/octet-stream\r\n\r\n\r\n\
                    --b--\r\n";
        let (fields, files) = read_multipart(Bytes::from(body), "b").await.unwrap();
        assert_eq!(fields, vec![("body".to_owned(), "Hello".to_owned())]);
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].name.as_str(), files[0].bytes.as_ref()),
            ("a.txt", &b"abc"[..])
        );
        assert_eq!(
            multipart_boundary(Some("multipart/form-data; boundary=xyz")).as_deref(),
            Some("xyz")
        );
        assert_eq!(
            multipart_boundary(Some("application/x-www-form-urlencoded")),
            None
        );
    }

    #[test]
    fn the_refusal_names_the_limit() {
        let mb = MAX_TOTAL_BYTES / (1024 * 1024);
        assert!(
            TOO_LARGE.contains(&format!("{mb} MB per message")),
            "{TOO_LARGE}"
        );
    }
}
