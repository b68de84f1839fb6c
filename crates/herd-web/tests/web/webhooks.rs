//! `POST /webhooks/stripe` over real HTTP: signed deliveries are stored and queued once;
//! anything else gets 400 problem+json, stores nothing and is counted.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{stripe, TestApp};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;

const OLD: &str = "whsec_old_secret";
const NEW: &str = "whsec_new_secret";

async fn app(pool: PgPool) -> TestApp {
    TestApp::spawn_with(pool, |c| {
        c.stripe_webhook_secrets = vec![
            SecretString::from(OLD.to_owned()),
            SecretString::from(NEW.to_owned()),
        ];
    })
    .await
}

fn body(id: &str) -> String {
    stripe::event(
        id,
        "customer.subscription.updated",
        stripe::now(),
        stripe::subscription(
            "sub_Web1",
            "cus_Web1",
            "active",
            "price_x",
            stripe::now() + 86_400,
            json!({}),
        ),
    )
    .to_string()
}

async fn post(app: &TestApp, body: &str, signature: Option<String>) -> (u16, String, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(s) = signature {
        req = req.header("stripe-signature", s);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

async fn stored(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A metrics recorder of the test's own. Set as its thread's default (with
/// [`metrics::set_default_local_recorder`]), it receives what the app counts (the app runs
/// on the test's single-threaded runtime) and nothing of the tests running beside it,
/// which the process-wide `/metrics` also counts.
fn own_metrics() -> (PrometheusRecorder, PrometheusHandle) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    (recorder, handle)
}

fn rejections(metrics: &PrometheusHandle, reason: &str) -> f64 {
    let series = format!("herd_stripe_webhook_rejections_total{{reason=\"{reason}\"}}");
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_signed_delivery_is_stored_queued_and_acknowledged(pool: PgPool) {
    let app = app(pool.clone()).await;
    let b = body("evt_web_ok");
    let (status, _, text) = post(
        &app,
        &b,
        Some(stripe::signature(NEW, stripe::now(), b.as_bytes())),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["duplicate"],
        false
    );
    assert_eq!(stored(&pool).await, 1);
    let payload: String =
        sqlx::query_scalar("SELECT payload FROM stripe_events WHERE id = 'evt_web_ok'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(payload, b, "the raw body is kept byte for byte");
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE dedupe_key = 'evt_web_ok' AND state = 'queued'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(jobs, 1);

    // Stripe delivers it again: acknowledged, not stored or queued twice.
    let (status, _, text) = post(
        &app,
        &b,
        Some(stripe::signature(OLD, stripe::now(), b.as_bytes())),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["duplicate"],
        true
    );
    assert_eq!(stored(&pool).await, 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn bad_deliveries_get_400_and_change_nothing(pool: PgPool) {
    let (recorder, metrics) = own_metrics();
    let _counted_here = metrics::set_default_local_recorder(&recorder);
    let app = app(pool.clone()).await;
    let b = body("evt_web_bad");
    let now = stripe::now();
    let cases = [
        (
            "bad_signature",
            Some(stripe::signature("whsec_wrong", now, b.as_bytes())),
            b.clone(),
        ),
        (
            "expired",
            Some(stripe::signature(NEW, now - 301, b.as_bytes())),
            b.clone(),
        ),
        (
            "bad_signature",
            Some(stripe::signature(NEW, now, b.as_bytes())),
            b.replace("active", "canceled"),
        ),
        ("missing_header", None, b.clone()),
        (
            "malformed_header",
            Some("t=now,v1=nothex".to_owned()),
            b.clone(),
        ),
    ];
    for (reason, signature, payload) in cases {
        let before = rejections(&metrics, reason);
        let (status, ctype, text) = post(&app, &payload, signature).await;
        assert_eq!(status, 400, "{reason}: {text}");
        assert_eq!(ctype, "application/problem+json", "{reason}");
        let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(problem["status"], 400);
        assert_eq!(
            rejections(&metrics, reason),
            before + 1.0,
            "{reason} is counted, once"
        );
    }
    // bad_signature twice, each of the others once.
    for (reason, n) in [
        ("bad_signature", 2.0),
        ("expired", 1.0),
        ("missing_header", 1.0),
        ("malformed_header", 1.0),
    ] {
        assert_eq!(rejections(&metrics, reason), n, "{reason}");
    }
    assert_eq!(stored(&pool).await, 0);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0);

    // Signed, but not an event.
    let junk = r#"{"hello":"world"}"#;
    let (status, _, _) = post(
        &app,
        junk,
        Some(stripe::signature(NEW, now, junk.as_bytes())),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(stored(&pool).await, 0);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn without_a_secret_every_delivery_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let b = body("evt_web_unset");
    let (status, _, text) = post(
        &app,
        &b,
        Some(stripe::signature(NEW, stripe::now(), b.as_bytes())),
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("no webhook secret"), "{text}");
    assert_eq!(stored(&pool).await, 0);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn one_event_on_32_connections_at_once_is_stored_once(pool: PgPool) {
    let app = app(pool.clone()).await;
    let b = body("evt_web_race");
    let sig = stripe::signature(NEW, stripe::now(), b.as_bytes());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (url, b, sig) = (
            format!("{}/webhooks/stripe", app.base),
            b.clone(),
            sig.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // One connection per delivery, as Stripe's retries would come.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            client
                .post(url)
                .header("stripe-signature", sig)
                .body(b)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }));
    }
    let mut new = 0;
    for t in tasks {
        let v = t.await.unwrap();
        assert_eq!(v["received"], true);
        if v["duplicate"] == false {
            new += 1;
        }
    }
    assert_eq!(new, 1);
    assert_eq!(stored(&pool).await, 1);
    let deliveries: i32 = sqlx::query_scalar("SELECT deliveries FROM stripe_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(deliveries, 32);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_event_of_the_other_mode_than_the_key_is_refused(pool: PgPool) {
    // A live installation (live key) receives a test-mode event signed with its secret:
    // refused, not stored.
    let (recorder, metrics) = own_metrics();
    let _counted_here = metrics::set_default_local_recorder(&recorder);
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.stripe_webhook_secrets = vec![SecretString::from(NEW.to_owned())];
        c.stripe_secret_key = Some(SecretString::from("sk_live_herd".to_owned()));
    })
    .await;
    let test_event = body("evt_web_testmode");
    let sig = stripe::signature(NEW, stripe::now(), test_event.as_bytes());
    let (status, _, text) = post(&app, &test_event, Some(sig)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("test mode"), "{text}");
    assert_eq!(stored(&pool).await, 0);
    assert_eq!(rejections(&metrics, "livemode_mismatch"), 1.0);
    // The same event in live mode is taken.
    let mut live: serde_json::Value = serde_json::from_str(&body("evt_web_livemode")).unwrap();
    live["livemode"] = json!(true);
    let live = live.to_string();
    let sig = stripe::signature(NEW, stripe::now(), live.as_bytes());
    assert_eq!(post(&app, &live, Some(sig)).await.0, 200);
    assert_eq!(stored(&pool).await, 1);
}
