//! `POST /webhooks/stripe` while the database is down: a correctly signed event cannot be
//! stored, so it is not acknowledged (503, and Stripe delivers it again); once the database
//! is back, Stripe's next attempt is stored and queued, once.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{stripe, TempPostgres, TestApp};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::time::{Duration, Instant};

const WHSEC: &str = "whsec_db_down";

/// Delivers `body` as Stripe does, signed now; returns the status, content type and body.
async fn deliver(app: &TestApp, body: &str) -> (u16, String, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", app.base))
        .header("content-type", "application/json")
        .header(
            "stripe-signature",
            stripe::signature(WHSEC, stripe::now(), body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

fn event(id: &str) -> String {
    stripe::event(
        id,
        "customer.subscription.updated",
        stripe::now(),
        stripe::subscription(
            "sub_DbDown",
            "cus_DbDown",
            "active",
            "price_x",
            stripe::now() + 86_400,
            json!({}),
        ),
    )
    .to_string()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn a_delivery_while_the_database_is_down_gets_503_and_its_retry_is_stored_once() {
    let pg = TempPostgres::start_new();
    let pool = herd_store::connect_lazy(&pg.url(), 5).unwrap();
    herd_store::migrate(&pool).await.unwrap();
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.stripe_webhook_secrets = vec![SecretString::from(WHSEC.to_owned())];
    })
    .await;
    // Up: taken.
    assert_eq!(deliver(&app, &event("evt_db_before")).await.0, 200);

    pg.stop();
    let body = event("evt_db_down");
    let started = Instant::now();
    let (status, ctype, text) = deliver(&app, &body).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(ctype, "application/problem+json");
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["status"], 503);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("deliver it again later"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered in {:?}: Stripe waits at most 10 s for an answer",
        started.elapsed()
    );

    pg.start();
    // Nothing of the refused delivery was kept.
    let deadline = Instant::now() + Duration::from_secs(15);
    let stored = loop {
        match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM stripe_events")
            .fetch_one(&pool)
            .await
        {
            Ok(n) => break n,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the database did not come back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(stored, 1, "only the event delivered before");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE dedupe_key = 'evt_db_down'"
        )
        .await,
        0
    );

    // Stripe's retry (the same event, signed anew) is stored and queued; a further retry
    // is a duplicate.
    let (status, _, text) = deliver(&app, &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["duplicate"],
        false
    );
    let (status, _, text) = deliver(&app, &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["duplicate"],
        true
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM stripe_events WHERE id = 'evt_db_down'"
        )
        .await,
        1
    );
    let payload: String =
        sqlx::query_scalar("SELECT payload FROM stripe_events WHERE id = 'evt_db_down'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(payload, body);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE dedupe_key = 'evt_db_down' AND state = 'queued'"
        )
        .await,
        1
    );
}
