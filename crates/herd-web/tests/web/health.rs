//! Health, readiness, metrics and request ids; readiness follows the database down and up.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{TempPostgres, TestApp};
use sqlx::PgPool;
use std::time::{Duration, Instant};

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn probes_metrics_and_request_ids(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let c = app.client();
    c.get("/healthz").await.assert_status(200);
    c.get("/readyz")
        .await
        .assert_status(200)
        .assert_contains("ready");
    c.get("/pricing").await.assert_status(200);
    c.get("/no-such-page").await.assert_status(404);
    let m = c.get("/metrics").await;
    m.assert_status(200);
    assert!(
        m.content_type.starts_with("text/plain"),
        "{}",
        m.content_type
    );
    assert!(
        m.body
            .contains("herd_http_requests_total{method=\"GET\",route=\"/pricing\",status=\"200\"}"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains(
            "herd_http_request_duration_seconds_bucket{method=\"GET\",route=\"/pricing\""
        ),
        "{}",
        m.body
    );
    assert!(m.body.contains("herd_db_pool_connections"), "{}", m.body);

    let resp = reqwest::get(format!("{}/healthz", app.base)).await.unwrap();
    let id = resp
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
}

async fn wait_for(c: &herd_testkit::Client, path: &str, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = c.get(path).await;
        if r.status == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{path} still {} after {within:?}: {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn readiness_follows_the_database_and_recovers_without_restart() {
    let pg = TempPostgres::start_new();
    let pool = herd_store::connect_lazy(&pg.url(), 5).unwrap();
    herd_store::migrate(&pool).await.unwrap();
    let app = TestApp::spawn(pool).await;
    let c = app.client();
    c.get("/readyz").await.assert_status(200);
    c.get("/pricing").await.assert_status(200);

    pg.stop();
    wait_for(&c, "/readyz", 503, Duration::from_secs(10)).await;
    let started = Instant::now();
    let page = c.get("/pricing").await;
    page.assert_status(503)
        .assert_contains("Temporarily unavailable");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a page answers 503 quickly, took {:?}",
        started.elapsed()
    );

    pg.start();
    wait_for(&c, "/readyz", 200, Duration::from_secs(15)).await;
    c.get("/pricing")
        .await
        .assert_status(200)
        .assert_contains("Community");
}

/// Log lines, kept in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The access log of every app in this process, as `herd serve` writes it. Process-wide
/// (a thread's own subscriber misses events whose interest another test thread cached);
/// `None` when another subscriber came first (`TEST_LOG`).
fn access_log() -> Option<&'static LogBuffer> {
    static LOGS: std::sync::OnceLock<Option<LogBuffer>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_env_filter("herd_web=info,tower_http=info")
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .ok()
            .map(|()| logs)
    })
    .as_ref()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn access_log_names_the_route_never_a_token(pool: PgPool) {
    let Some(logs) = access_log() else {
        eprintln!("another tracing subscriber is installed (TEST_LOG?): nothing to read");
        return;
    };
    let app = TestApp::spawn(pool).await;
    let http = reqwest::Client::new();
    let token = "Zq7TOKENnotforlogs4Xb9";
    let requests = [
        (
            format!("/password/reset/{token}"),
            "/password/reset/{token}",
        ),
        (format!("/verify-email/{token}"), "/verify-email/{token}"),
        (format!("/invitations/{token}"), "/invitations/{token}"),
        (format!("/no-such-page/{token}"), "unmatched"),
    ];
    for (i, (path, _)) in requests.iter().enumerate() {
        http.get(format!("{}{path}", app.base))
            .header("x-request-id", format!("log-test-{i}"))
            .send()
            .await
            .unwrap();
    }
    let c = app.client();
    c.get("/login").await;
    c.post(&format!("/password/reset/{token}"), &[("password", "x")])
        .await;
    let text = logs.text();
    assert!(!text.contains(token), "a token in the log:\n{text}");
    for (i, (_, route)) in requests.iter().enumerate() {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("request_id=log-test-{i} ")))
            .unwrap_or_else(|| panic!("request {i} not logged:\n{text}"));
        assert!(line.contains(&format!("path={route}}}")), "{line}");
        assert!(line.contains("finished processing request"), "{line}");
    }
}

const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("x-content-type-options", "nosniff"),
];

async fn headers(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::header::HeaderMap {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    http.request(method, format!("{}{path}", app.base))
        .send()
        .await
        .unwrap()
        .headers()
        .clone()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn every_response_carries_the_security_headers(pool: PgPool) {
    use reqwest::Method;
    let app = TestApp::spawn(pool.clone()).await;
    for (method, path) in [
        (Method::GET, "/pricing"),
        (Method::GET, "/login"),
        (Method::GET, "/no-such-page"),
        (Method::GET, "/orgs"),
        (Method::GET, "/assets/server.js"),
        (Method::GET, "/assets/herd.css"),
        (Method::GET, "/healthz"),
        (Method::POST, "/login"),
        (Method::DELETE, "/pricing"),
    ] {
        let h = headers(&app, method.clone(), path).await;
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(
                h.get(*name).and_then(|v| v.to_str().ok()),
                Some(*value),
                "{name} on {method} {path}"
            );
        }
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no CSP on {method} {path}"));
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{directive} missing: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS over plain http ({method} {path})"
        );
    }

    // Over https, browsers are told to keep to it.
    let secure = TestApp::spawn_with(pool, |cfg| {
        cfg.public_url = url::Url::parse("https://herd.example").unwrap();
    })
    .await;
    for path in ["/pricing", "/no-such-page", "/orgs", "/assets/herd.css"] {
        let h = headers(&secure, Method::GET, path).await;
        let hsts = h
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no HSTS on {path}"));
        assert!(hsts.starts_with("max-age=31536000"), "{hsts}");
        assert!(h.get("content-security-policy").is_some(), "{path}");
    }
}

/// The policy allows no inline script or style, so no template may carry any.
#[test]
fn templates_have_no_inline_script_or_style() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap().to_lowercase();
        for bad in ["<style", " style=", "javascript:"] {
            assert!(!text.contains(bad), "{bad} in {}", path.display());
        }
        for (i, _) in text.match_indices("<script") {
            let tag = &text[i..text[i..].find('>').map_or(text.len(), |e| i + e)];
            assert!(tag.contains(" src="), "inline script in {}", path.display());
        }
        // ` onclick=`, ` onsubmit=` …
        let handler = text.match_indices(" on").any(|(i, _)| {
            let rest = &text[i + 3..];
            let name = rest.chars().take_while(char::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        });
        assert!(!handler, "inline event handler in {}", path.display());
        checked += 1;
    }
    assert!(checked > 20, "templates not found in {}", dir.display());
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn metrics_answer_allowed_addresses_or_the_token_only(pool: PgPool) {
    use secrecy::SecretString;
    let get = |app: &TestApp, headers: &[(&str, &str)]| {
        let mut req = reqwest::Client::new().get(format!("{}/metrics", app.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Nothing configured: loopback only (the test app is on 127.0.0.1).
    let app = TestApp::spawn(pool.clone()).await;
    let (status, body) = get(&app, &[]).await;
    assert_eq!(status, 200, "{body}");
    // The proxy's own address does not count when the client is elsewhere.
    let proxied = TestApp::spawn_with(pool.clone(), |cfg| cfg.trust_proxy = true).await;
    let (status, body) = get(&proxied, &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("herd_"), "{body}");
    let (status, _) = get(&proxied, &[("x-forwarded-for", "127.0.0.1, 203.0.113.9")]).await;
    assert_eq!(status, 403, "a spoofed first hop counts for nothing");
    let (status, _) = get(&proxied, &[("x-forwarded-for", "203.0.113.9, 127.0.0.1")]).await;
    assert_eq!(status, 200);

    // A range that leaves the caller out, and a token.
    let app = TestApp::spawn_with(pool, |cfg| {
        cfg.metrics_allow = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        cfg.metrics_token = Some(SecretString::from("scrape-me-9f3k".to_owned()));
    })
    .await;
    let (status, body) = get(&app, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("herd_"), "{body}");
    for wrong in [
        "Bearer scrape-me-9f3",
        "Bearer scrape-me-9f3kk",
        "scrape-me-9f3k",
        "Basic scrape-me-9f3k",
    ] {
        let (status, _) = get(&app, &[("authorization", wrong)]).await;
        assert_eq!(status, 403, "{wrong}");
    }
    let (status, body) = get(&app, &[("authorization", "Bearer scrape-me-9f3k")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("herd_db_pool_connections"), "{body}");
}

#[tokio::test]
async fn readiness_does_not_show_the_database_error() {
    let pool = herd_store::connect_lazy("postgres://herd:hunter2@127.0.0.1:9/herd", 1).unwrap();
    let app = TestApp::spawn_unseeded(pool, |_| {}).await;
    let r = app.client().get("/readyz").await;
    r.assert_status(503);
    assert_eq!(r.body, "not ready: database unavailable\n");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn readyz_fails_while_the_in_process_worker_is_not_running(pool: PgPool) {
    let worker = herd_jobs::WorkerHealth::new();
    let app = TestApp::spawn_with(pool, {
        let worker = worker.clone();
        move |c| c.worker = Some(worker)
    })
    .await;
    let r = app.client().get("/readyz").await;
    r.assert_status(503);
    assert_eq!(r.body, "not ready: worker stopped\n");
    // Running (as the supervisor marks it): ready.
    let supervisor = tokio::spawn(herd_jobs::supervise(
        "test",
        worker.clone(),
        std::time::Duration::from_millis(1),
        std::future::pending::<()>,
    ));
    while !worker.is_running() {
        tokio::task::yield_now().await;
    }
    app.client().get("/readyz").await.assert_status(200);
    supervisor.abort();
}
