//! A storm of Stripe events processed by the job runner: 1,000 subscriptions with eight
//! events each (8,000 events, stored and queued as the webhook stores them).
//!
//! - Processing alone: the storm is stored first, then processed by one worker running
//!   jobs one at a time and by one running 16 at once, on the same data, for two arrival
//!   orders: each subscription's events together (a renewal run) and the subscriptions'
//!   events interleaved (every subscription changing at once).
//! - End to end: 32 tasks store the storm (verified, stored and queued as the webhook
//!   does, without HTTP: `webhook_ingest` measures that part) while one worker running 16
//!   jobs at once processes it; timed from the first delivery to the last event processed.
//!
//! Each run must leave every event processed and every subscription in its newest state.
//! Compare figures measured in one run; machines here are shared. `cargo test` runs a
//! tenth of the storm in a debug build as a check that it works; the figures come from
//! `make bench` (release).
//!
//! Needs a PostgreSQL server: `DATABASE_URL` names one (scratch databases are created).
#![expect(clippy::unwrap_used, reason = "benchmark")]

use herd_jobs::{Registry, Runner, Settings};
use herd_testkit::stripe;
use secrecy::SecretString;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_storm";
const EVENTS_PER_SUB: usize = 8;
const CLIENTS: usize = 32;

#[derive(Debug, Clone, Copy)]
enum Arrival {
    /// s0e0..s0e7, s1e0..: each subscription's events together.
    BySubscription,
    /// s0e0, s1e0, .., s0e1, s1e1, ..: every subscription changing at once.
    Interleaved,
}

/// The storm's bodies in arrival order: `subs` subscriptions, eight status changes each.
fn storm(subs: usize, arrival: Arrival) -> Vec<String> {
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
    let body = |s: usize, i: usize| {
        let sub = stripe::subscription(
            &format!("sub_storm_{s}"),
            &format!("cus_storm_{s}"),
            statuses[i],
            "price_community",
            t0 + 30 * 86_400,
            serde_json::json!({}),
        );
        stripe::event(
            &format!("evt_storm_{s}_{i}"),
            "customer.subscription.updated",
            t0 + i as i64,
            sub,
        )
        .to_string()
    };
    match arrival {
        Arrival::BySubscription => (0..subs)
            .flat_map(|s| (0..EVENTS_PER_SUB).map(move |i| (s, i)))
            .map(|(s, i)| body(s, i))
            .collect(),
        Arrival::Interleaved => (0..EVENTS_PER_SUB)
            .flat_map(|i| (0..subs).map(move |s| (s, i)))
            .map(|(s, i)| body(s, i))
            .collect(),
    }
}

/// Verifies, stores and queues `bodies` from `clients` concurrent tasks, as the webhook
/// does, each signed at its delivery.
async fn deliver(pool: &PgPool, bodies: Vec<String>, clients: usize) {
    let next = Arc::new(std::sync::Mutex::new(bodies.into_iter()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (pool, next) = (pool.clone(), next.clone());
        tasks.spawn(async move {
            let secrets = [SecretString::from(SECRET.to_owned())];
            loop {
                let Some(body) = next.lock().unwrap().next() else {
                    return;
                };
                let now = stripe::now();
                let sig = stripe::signature(SECRET, now, body.as_bytes());
                herd_billing::ingest(&pool, body.as_bytes(), Some(&sig), &secrets, now)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
}

fn runner(pool: &PgPool, concurrency: usize) -> Runner {
    let mut registry = Registry::new();
    let mailer = herd_mail::Mailer::outbox(
        &std::env::temp_dir().join("herd-storm-mail"),
        "Herd <noreply@herd.test>",
    )
    .unwrap();
    herd_billing::worker::register(&mut registry, pool, &mailer);
    Runner::new(
        pool.clone(),
        registry,
        Settings {
            concurrency,
            ..Settings::default()
        },
    )
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Every event stored and processed, every job done, each subscription in its newest state.
async fn check(pool: &PgPool, n: usize) {
    let total = count(pool, "SELECT count(*) FROM stripe_events").await;
    assert_eq!(total, n as i64, "every event stored");
    let processed = count(
        pool,
        "SELECT count(*) FROM stripe_events WHERE state = 'processed'",
    )
    .await;
    assert_eq!(processed, total, "every event processed");
    let open = count(pool, "SELECT count(*) FROM jobs WHERE state <> 'done'").await;
    assert_eq!(open, 0, "every job done");
    let canceled = count(
        pool,
        "SELECT count(*) FROM subscriptions WHERE status = 'canceled'",
    )
    .await;
    assert_eq!(
        canceled * EVENTS_PER_SUB as i64,
        total,
        "each subscription ends in its newest state"
    );
}

/// Stores the storm, then times its processing by one worker.
async fn process_stored(pool: &PgPool, bodies: Vec<String>, concurrency: usize) -> Duration {
    let n = bodies.len();
    deliver(pool, bodies, CLIENTS).await;
    let runner = runner(pool, concurrency);
    let start = Instant::now();
    let stats = runner.drain().await.unwrap();
    let elapsed = start.elapsed();
    assert_eq!(stats.retrying + stats.dead, 0, "every event processed");
    check(pool, n).await;
    elapsed
}

/// Times the storm from its first delivery to its last event processed, with the worker
/// running while the events arrive.
async fn end_to_end(pool: &PgPool, bodies: Vec<String>, concurrency: usize) -> Duration {
    let n = bodies.len();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(runner(pool, concurrency).run(async {
        let _ = stopped.await;
    }));
    let start = Instant::now();
    deliver(pool, bodies, CLIENTS).await;
    while count(pool, "SELECT count(*) FROM jobs WHERE state <> 'done'").await > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    stop.send(()).unwrap();
    worker.await.unwrap();
    check(pool, n).await;
    elapsed
}

async fn scratch<F, Fut>(base: &str, run: F) -> Duration
where
    F: FnOnce(PgPool) -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    let name = format!("herd_storm_{}", std::process::id());
    let pool = herd_testkit::scratch_database(base, &name, 40).await;
    let elapsed = run(pool.clone()).await;
    pool.close().await;
    herd_testkit::drop_database(base, &name).await;
    elapsed
}

fn rate(n: usize, d: Duration) -> String {
    format!(
        "{n} events in {:.2} s, {:.0} events/s",
        d.as_secs_f64(),
        n as f64 / d.as_secs_f64()
    )
}

#[tokio::main]
async fn main() {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL is not set: run `make bench`"));
    let subs = if cfg!(debug_assertions) { 100 } else { 1_000 };
    let n = subs * EVENTS_PER_SUB;
    println!("event storm: {subs} subscriptions × {EVENTS_PER_SUB} events, one worker");
    herd_testkit::print_conditions(&base).await;
    for arrival in [Arrival::BySubscription, Arrival::Interleaved] {
        let mut times = Vec::new();
        for concurrency in [1, 16] {
            let bodies = storm(subs, arrival);
            let t = scratch(&base, |pool| async move {
                process_stored(&pool, bodies, concurrency).await
            })
            .await;
            println!(
                "  stored first, {arrival:?}, concurrency {concurrency:>2}: {}",
                rate(n, t)
            );
            times.push(t);
        }
        println!(
            "  speed-up of 16 over 1 ({arrival:?}): {:.1}×",
            times[0].as_secs_f64() / times[1].as_secs_f64()
        );
    }
    for arrival in [Arrival::BySubscription, Arrival::Interleaved] {
        let mut times = Vec::new();
        for wakeup in [Wakeup::AtCommit, Wakeup::AfterCommit] {
            let bodies = storm(subs, arrival);
            let t = scratch(&base, |pool| async move {
                if wakeup == Wakeup::AtCommit {
                    notify_at_commit(&pool).await;
                }
                end_to_end(&pool, bodies, 16).await
            })
            .await;
            println!(
                "  end to end ({CLIENTS} delivering, concurrency 16), {arrival:?}, {wakeup:?}: {}",
                rate(n, t)
            );
            times.push(t);
        }
        println!(
            "  speed-up of waking after the commit ({arrival:?}): {:.1}×",
            times[0].as_secs_f64() / times[1].as_secs_f64()
        );
    }
}

/// How the webhook's commits wake the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wakeup {
    /// As before 20261208600001: `NOTIFY` in every delivery's transaction, so their
    /// commits take PostgreSQL's notification lock one after another.
    AtCommit,
    /// As Herd does: one coalesced `NOTIFY` after the commits (`herd_jobs::wake`).
    AfterCommit,
}

/// Puts back, in this scratch database only, the trigger function of before
/// 20261208600001, which notifies in every enqueueing transaction.
async fn notify_at_commit(pool: &PgPool) {
    sqlx::query(
        "CREATE OR REPLACE FUNCTION herd_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_notify('herd_jobs', ''); RETURN NULL; END $$",
    )
    .execute(pool)
    .await
    .unwrap();
}
