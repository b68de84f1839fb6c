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
