//! Webhook ingestion: signed Stripe events posted over real HTTP to the real router by 32
//! concurrent clients; each is verified, stored and queued in PostgreSQL, then
//! acknowledged. Reports events per second and latency percentiles.
//!
//! Needs a PostgreSQL server: `DATABASE_URL` names one (a scratch database is created on
//! it). `make bench` starts the private one and runs this.
#![expect(clippy::unwrap_used, reason = "benchmark")]

use herd_testkit::{stripe, TestApp};
use secrecy::SecretString;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_bench";
const CONCURRENCY: usize = 32;
const PER_CLIENT: usize = 250;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL is not set: run `make bench`"));
    herd_testkit::print_conditions(&base).await;
    let db = format!("herd_bench_{}", std::process::id());
    let pool = herd_testkit::scratch_database(&base, &db, 40).await;
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.stripe_webhook_secrets = vec![SecretString::from(SECRET.to_owned())];
    })
    .await;

    // Bodies prepared up front: the measure is the server's work, not the client's.
    let template = stripe::event(
        "evt_template",
        "customer.subscription.updated",
        stripe::now(),
        stripe::subscription(
            "sub_Bench",
            "cus_Bench",
            "active",
            "price_x",
            stripe::now() + 86_400,
            serde_json::json!({}),
        ),
    );
    let mut work = Vec::new();
    for c in 0..CONCURRENCY {
        let mut mine = Vec::new();
        for i in 0..PER_CLIENT {
            let mut e = template.clone();
            e["id"] = serde_json::json!(format!("evt_bench_{c}_{i}"));
            let body = e.to_string();
            let sig = stripe::signature(SECRET, stripe::now(), body.as_bytes());
            mine.push((body, sig));
        }
        work.push(mine);
    }
    let bytes = work[0][0].0.len();
    let url = format!("{}/webhooks/stripe", app.base);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mine in work {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::with_capacity(mine.len());
            for (body, sig) in mine {
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("stripe-signature", sig)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let n = latencies.len();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&pool)
        .await
        .unwrap();
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored as usize, n, "every event stored");
    assert_eq!(queued as usize, n, "every event queued");
    println!("webhook ingestion, concurrency {CONCURRENCY}, {n} events of {bytes} bytes");
    println!(
        "  throughput: {:.0} events/s",
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.90).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies[n - 1].as_secs_f64() * 1e3
    );
    drop(app);
    pool.close().await;
    herd_testkit::drop_database(&base, &db).await;
}
