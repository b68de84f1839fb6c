//! A browser-like HTTP client: cookies kept, redirects not followed (tests look at them),
//! the CSRF token of the last page put into every form it posts.

use reqwest::redirect::Policy;
use std::sync::Mutex;

pub struct Client {
    http: reqwest::Client,
    base: String,
    csrf: Mutex<Option<String>>,
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub location: Option<String>,
    pub content_type: String,
    /// `Cache-Control`, for pages that must not be cached.
    pub cache_control: Option<String>,
    pub body: String,
}

impl Resp {
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected status; body:\n{}",
            self.body
        );
        self
    }

    #[track_caller]
    pub fn assert_redirect(&self, to_prefix: &str) -> &Self {
        assert!(
            (300..400).contains(&self.status)
                && self
                    .location
                    .as_deref()
                    .is_some_and(|l| l.starts_with(to_prefix)),
            "expected a redirect to {to_prefix}, got {} {:?}\n{}",
            self.status,
            self.location,
            self.body
        );
        self
    }

    #[track_caller]
    pub fn assert_contains(&self, text: &str) -> &Self {
        assert!(
            self.body.contains(text),
            "expected {text:?} in:\n{}",
            self.body
        );
        self
    }

    /// Text of the elements matching a CSS selector.
    pub fn select_text(&self, selector: &str) -> Vec<String> {
        let doc = scraper::Html::parse_document(&self.body);
        let Ok(sel) = scraper::Selector::parse(selector) else {
            return Vec::new();
        };
        doc.select(&sel)
            .map(|e| e.text().collect::<String>().trim().to_owned())
            .collect()
    }

    /// The POST forms of the page (their `action`, or `(this page)`) that carry no CSRF
    /// token field, and how many POST forms it has.
    pub fn forms_without_csrf(&self) -> (Vec<String>, usize) {
        let doc = scraper::Html::parse_document(&self.body);
        let (Ok(forms), Ok(token)) = (
            scraper::Selector::parse("form"),
            scraper::Selector::parse(&format!(
                "input[type=\"hidden\"][name=\"{}\"]",
                herd_web::csrf::FIELD
            )),
        ) else {
            return (Vec::new(), 0);
        };
        let mut missing = Vec::new();
        let mut posts = 0;
        for form in doc.select(&forms) {
            let method = form.value().attr("method").unwrap_or("get");
            if !method.eq_ignore_ascii_case("post") {
                continue;
            }
            posts += 1;
            let has = form
                .select(&token)
                .any(|t| t.value().attr("value").is_some_and(|v| !v.is_empty()));
            if !has {
                missing.push(
                    form.value()
                        .attr("action")
                        .unwrap_or("(this page)")
                        .to_owned(),
                );
            }
        }
        (missing, posts)
    }

    /// The first form field named `name`'s value.
    pub fn field_value(&self, name: &str) -> Option<String> {
        let doc = scraper::Html::parse_document(&self.body);
        let sel = scraper::Selector::parse(&format!("input[name=\"{name}\"]")).ok()?;
        doc.select(&sel)
            .next()
            .and_then(|e| e.value().attr("value"))
            .map(str::to_owned)
    }
}

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            http,
            base: base.to_owned(),
            csrf: Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    async fn read(&self, resp: reqwest::Result<reqwest::Response>) -> Resp {
        let resp = resp.unwrap_or_else(|e| panic!("request failed: {e}"));
        let status = resp.status().as_u16();
        let header = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header(reqwest::header::LOCATION);
        let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let cache_control = header(reqwest::header::CACHE_CONTROL);
        let body = resp.text().await.unwrap_or_default();
        let r = Resp {
            status,
            location,
            content_type,
            cache_control,
            body,
        };
        if let Some(t) = r.field_value(herd_web::csrf::FIELD) {
            *self.csrf.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        }
        r
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.read(self.http.get(self.url(path)).send().await).await
    }

    /// GETs a stream of server-sent events and returns its status, its content type and
    /// the first event's text (up to the blank line that ends it; empty when the answer is
    /// not a stream). Stops reading after that, or after 10 seconds.
    pub async fn first_event(&self, path: &str) -> (u16, String, String) {
        let mut resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request failed: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut text = String::new();
        if content_type.starts_with("text/event-stream") {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while !text.contains("\n\n") {
                match tokio::time::timeout_at(deadline, resp.chunk()).await {
                    Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
                    _ => break,
                }
            }
        }
        (status, content_type, text)
    }

    /// GET, following redirects within the site.
    pub async fn get_follow(&self, path: &str) -> Resp {
        let mut r = self.get(path).await;
        for _ in 0..10 {
            match (&r.status, &r.location) {
                (300..=399, Some(loc)) => {
                    let loc = loc.clone();
                    r = self.get(&loc).await;
                }
                _ => break,
            }
        }
        r
    }

    /// The CSRF token seen on the last page.
    pub fn csrf(&self) -> Option<String> {
        self.csrf.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// POSTs a form with the CSRF token of the last page added.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        let token = self.csrf().unwrap_or_default();
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        fields.push((herd_web::csrf::FIELD, &token));
        self.post_raw(path, &fields).await
    }

    /// POSTs exactly the given fields (no CSRF token added).
    pub async fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.read(self.http.post(self.url(path)).form(form).send().await)
            .await
    }

    /// POSTs a form with files as `multipart/form-data`, as a browser does for a form with
    /// a file input: the CSRF token of the last page first, then the fields, then the
    /// files, each (field, file name, bytes).
    pub async fn post_multipart(
        &self,
        path: &str,
        form: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> Resp {
        let token = self.csrf().unwrap_or_default();
        let mut fields = vec![(herd_web::csrf::FIELD, token.as_str())];
        fields.extend_from_slice(form);
        self.post_multipart_raw(path, &fields, files).await
    }

    /// POSTs exactly these fields and files as `multipart/form-data` (no token added).
    pub async fn post_multipart_raw(
        &self,
        path: &str,
        form: &[(&str, &str)],
        files: &[(&str, &str, &[u8])],
    ) -> Resp {
        let boundary = format!("herd-test-{}", uuid_like());
        let mut body = Vec::new();
        for (name, value) in form {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        for (field, file_name, bytes) in files {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let req = self
            .http
            .post(self.url(path))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        self.read(req.send().await).await
    }

    /// GETs a file: its status, headers and bytes, as they came. A connection the server
    /// ends before its headers gives status 0 and the error.
    pub async fn download(&self, path: &str) -> Download {
        let resp = match self.http.get(self.url(path)).send().await {
            Ok(r) => r,
            Err(e) => {
                return Download {
                    status: 0,
                    headers: reqwest::header::HeaderMap::new(),
                    bytes: Vec::new(),
                    body_error: Some(format!("{e:?}")),
                }
            }
        };
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let (bytes, body_error) = match resp.bytes().await {
            Ok(b) => (b.to_vec(), None),
            Err(e) => (Vec::new(), Some(format!("{e:?}"))),
        };
        Download {
            status,
            headers,
            bytes,
            body_error,
        }
    }
}

/// A file as downloaded.
#[derive(Debug, Clone)]
pub struct Download {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: Vec<u8>,
    /// Why the body could not be read whole (the server ended it with an error).
    pub body_error: Option<String>,
}

impl Download {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}
