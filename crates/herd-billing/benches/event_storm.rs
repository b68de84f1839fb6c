//! A storm of Stripe events processed by the job runner: 1,000 subscriptions with eight
//! events each (8,000 events, stored and queued as the webhook stores them), then processed
//! by one worker running jobs one at a time and by one running 16 at once, on the same
//! data. Reports events per second for each and their ratio (compare ratios measured in
//! one run; machines here are shared). `cargo test` runs a tenth of the storm in a debug
//! build as a check that it works; the figures come from `make bench` (release).
//!
//! Needs a PostgreSQL server: `DATABASE_URL` names one (scratch databases are created).
#![expect(clippy::unwrap_used, reason = "benchmark")]

use herd_jobs::{Registry, Runner, Settings};
use herd_testkit::stripe;
use secrecy::SecretString;
use sqlx::PgPool;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_storm";
const EVENTS_PER_SUB: usize = 8;

/// Stores and queues the storm: `subs` subscriptions, eight status changes each.
async fn storm(pool: &PgPool, subs: usize) -> usize {
    let secrets = [SecretString::from(SECRET.to_owned())];
    let statuses = [
        "incomplete",
        "trialing",
        "active",
        "past_due",
        "active",
        "past_due",
        "unpaid",
        "canceled",
    ];
    let t0 = stripe::now() - 3_600;
    let mut n = 0;
    for s in 0..subs {
        for (i, status) in statuses.iter().enumerate().take(EVENTS_PER_SUB) {
            let sub = stripe::subscription(
                &format!("sub_storm_{s}"),
                &format!("cus_storm_{s}"),
                status,
                "price_community",
                t0 + 30 * 86_400,
                serde_json::json!({}),
            );
            let e = stripe::event(
                &format!("evt_storm_{s}_{i}"),
                "customer.subscription.updated",
                t0 + i as i64,
                sub,
            );
            let body = e.to_string();
            let now = stripe::now();
            let sig = stripe::signature(SECRET, now, body.as_bytes());
            herd_billing::ingest(pool, body.as_bytes(), Some(&sig), &secrets, now)
                .await
                .unwrap();
            n += 1;
        }
    }
    n
}

async fn process(pool: &PgPool, concurrency: usize) -> Duration {
    let mut registry = Registry::new();
    let mailer = herd_mail::Mailer::outbox(
        &std::env::temp_dir().join("herd-storm-mail"),
        "Herd <noreply@herd.test>",
    )
    .unwrap();
    herd_billing::worker::register(&mut registry, pool, &mailer);
    let runner = Runner::new(
        pool.clone(),
        registry,
        Settings {
            concurrency,
            ..Settings::default()
        },
    );
    let start = Instant::now();
    let stats = runner.drain().await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(stats.retrying + stats.dead, 0, "every event processed");
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE state <> 'pending'")
            .fetch_one(pool)
            .await
            .unwrap();
    let canceled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE status = 'canceled'")
            .fetch_one(pool)
            .await
            .unwrap();
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(processed, total, "every event processed");
    assert_eq!(
        canceled * EVENTS_PER_SUB as i64,
        total,
        "each subscription ends in its newest state"
    );
    elapsed
}

#[tokio::main]
async fn main() {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL is not set: run `make bench`"));
    let subs = if cfg!(debug_assertions) { 100 } else { 1_000 };
    let mut results = Vec::new();
    for concurrency in [1, 16] {
        let name = format!("herd_storm_{}_{concurrency}", std::process::id());
        let pool = herd_testkit::scratch_database(&base, &name, 40).await;
        let n = storm(&pool, subs).await;
        let elapsed = process(&pool, concurrency).await;
        results.push((concurrency, n, elapsed));
        pool.close().await;
        herd_testkit::drop_database(&base, &name).await;
    }
    println!(
        "event storm: {subs} subscriptions × {EVENTS_PER_SUB} events, processed by one worker"
    );
    for (c, n, e) in &results {
        println!(
            "  concurrency {c:>2}: {n} events in {:.2} s, {:.0} events/s",
            e.as_secs_f64(),
            *n as f64 / e.as_secs_f64()
        );
    }
    let ratio = results[0].2.as_secs_f64() / results[1].2.as_secs_f64();
    println!("  speed-up of 16 over 1: {ratio:.1}×");
}
