//! Storing and processing at once, as in production: events keep arriving on several
//! connections while several workers, in this process and in others (replicas of the
//! worker), process them. However they interleave, each subscription's row ends as the
//! recompute of all its stored events: never an older snapshot written over a newer one.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common::{DAY, PRICE, T0};
use crate::pipeline::{count, deliver, runner};
use herd_billing::event::Envelope;
use herd_billing::Ingested;
use herd_store::billing;
use herd_testkit::stripe;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::process::Stdio;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// The database a worker process works on (set by the test that starts it).
const WORKER_DB: &str = "HERD_BILLING_TEST_WORKER_DB";
/// What a worker process prints once its runner is started.
const READY: &str = "billing worker ready";
/// The `application_name` of a worker process's connections.
const WORKER_APP: &str = "herd-test-worker-process";

/// The life of subscription `sub` in `n` events a day apart: created, then updated, each
/// snapshot with its own billing period, status and cancellation flag, so the stored row
/// tells which snapshot it was computed from.
fn life(sub: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|j| {
            let j = j as i64;
            let end = T0 + (j + 1) * 30 * DAY;
            let status = match j {
                0 => "incomplete",
                j if j % 4 == 2 => "past_due",
                _ => "active",
            };
            let mut s =
                stripe::subscription(sub, &format!("cus_{sub}"), status, PRICE, end, json!({}));
            s["items"]["data"][0]["current_period_start"] = json!(end - 30 * DAY);
            s["cancel_at_period_end"] = json!(j % 3 == 1);
            let type_ = if j == 0 {
                "customer.subscription.created"
            } else {
                "customer.subscription.updated"
            };
            stripe::event(&format!("evt_{sub}_{j:02}"), type_, T0 + j * DAY, s)
        })
        .collect()
}

/// Waits until every Stripe event job is done (the workers run meanwhile).
async fn until_processed(pool: &PgPool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(
        pool,
        "SELECT count(*) FROM jobs WHERE kind = 'stripe.event' AND state <> 'done'",
    )
    .await
        > 0
    {
        assert!(Instant::now() < deadline, "the queue did not empty");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Not a test of its own: the body of a worker process (another replica of the worker)
/// that the test below starts with its database; it runs billing's jobs until its stdin
/// closes. Run without that database, it does nothing.
#[tokio::test]
#[ignore = "a worker process, started by the test of concurrent processing"]
async fn worker_process() {
    let Ok(database) = std::env::var(WORKER_DB) else {
        return;
    };
    let url = std::env::var("DATABASE_URL").unwrap();
    let options = PgConnectOptions::from_str(&url)
        .unwrap()
        .database(&database)
        .application_name(WORKER_APP);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    let worker = tokio::spawn(runner(&pool, 4).run(async {
        let mut rest = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut rest).await;
    }));
    println!("{READY}");
    worker.await.unwrap();
    pool.close().await;
}

/// Starts a worker process on the test's database and waits until its runner is started.
async fn worker_process_on(database: &str) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "concurrent::worker_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(WORKER_DB, database)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == READY {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "the worker process did not start");
    // Keep reading, so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// In each round, every one of eight subscriptions receives an older event it had not had
/// yet (late, as Stripe's retries come), then a newer one 2 to 23 ms later, while the older
/// one's recompute is under way, and an event it had already; meanwhile a worker in this
/// process and two worker processes run. After each round, every row must be the
/// recompute of all that was stored: a recompute written over one that read more (a lost
/// update) leaves an older snapshot.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn events_of_one_subscription_processed_concurrently_leave_the_newest_state(pool: PgPool) {
    let database = pool.connect_options().get_database().unwrap().to_owned();
    // Room for the deliveries and this process's worker at once (the test's own pool has
    // five connections).
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(
            (*pool.connect_options())
                .clone()
                .application_name("herd-test"),
        )
        .await
        .unwrap();
    // The database plays the worst scheduler: writing a subscription takes 20 ms, and a
    // write computed from fewer events than are stored by then (a newer event arrived after
    // its read) is held back 100 ms more, long enough for the newer event's recompute to be
    // written first. A lost update then shows whenever the interleaving occurs. Each write
    // is noted, with its process and whether it was held back.
    for sql in [
        "CREATE TABLE subscription_writes (writer text NOT NULL, held_back boolean NOT NULL)",
        "CREATE FUNCTION hold_back_stale_writes() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE
             stale boolean;
         BEGIN
             PERFORM pg_sleep(0.02);
             stale := NEW.source_time < (SELECT max(created) FROM stripe_events
                                         WHERE subscription_id = NEW.stripe_subscription_id);
             INSERT INTO subscription_writes VALUES (current_setting('application_name'), stale);
             IF stale THEN
                 PERFORM pg_sleep(0.1);
             END IF;
             RETURN NEW;
         END $$",
        // Before the row is locked (an upsert locks the existing row after its insert
        // triggers), so the row lock does not put the writes in order either.
        "CREATE TRIGGER hold_back_stale_writes BEFORE INSERT ON subscriptions
         FOR EACH ROW EXECUTE FUNCTION hold_back_stale_writes()",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }

    let mut processes = Vec::new();
    for _ in 0..2 {
        processes.push(worker_process_on(&database).await);
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut stopped_too = stopped.clone();
    let here = tokio::spawn(runner(&pool, 4).run(async move {
        let _ = stopped_too.wait_for(|s| *s).await;
    }));
    drop(stopped);

    let subs: Vec<String> = (0..8).map(|i| format!("sub_Race{i}")).collect();
    let lives: Vec<Vec<Value>> = subs.iter().map(|s| life(s, 12)).collect();
    for round in 0..6 {
        let mut senders = Vec::new();
        for (i, life) in lives.iter().enumerate() {
            let (old, new) = (life[round].clone(), life[6 + round].clone());
            let again = if round > 0 && i % 2 == 0 {
                life[round - 1].clone()
            } else {
                new.clone()
            };
            // The subscriptions spread the newer event over the span of a recompute.
            let gap = Duration::from_millis(2 + 3 * i as u64);
            let p = pool.clone();
            senders.push(tokio::spawn(async move {
                assert_eq!(deliver(&p, &old).await, Ingested::Stored);
            }));
            let p = pool.clone();
            senders.push(tokio::spawn(async move {
                tokio::time::sleep(gap).await;
                assert_eq!(deliver(&p, &new).await, Ingested::Stored);
                assert_eq!(deliver(&p, &again).await, Ingested::Duplicate);
            }));
        }
        for s in senders {
            s.await.unwrap();
        }
        until_processed(&pool).await;
        for (sub, life) in subs.iter().zip(&lives) {
            let stored: Vec<Envelope> = life[..=round]
                .iter()
                .chain(&life[6..=6 + round])
                .map(|e| Envelope::parse(e.to_string().as_bytes()).unwrap())
                .collect();
            let all = herd_billing::subscription::recompute(sub, &stored).unwrap();
            let row = billing::subscription(&pool, sub).await.unwrap().unwrap();
            assert_eq!(
                (
                    row.source_time,
                    row.status.as_str(),
                    row.status_since,
                    row.current_period_end,
                    row.cancel_at_period_end,
                ),
                (
                    all.source_time,
                    all.status.as_str(),
                    all.status_since,
                    all.current_period_end,
                    all.cancel_at_period_end,
                ),
                "round {round}, {sub}: the row holds an older snapshot"
            );
        }
    }
    stop.send(true).unwrap();
    here.await.unwrap();
    for mut p in processes {
        drop(p.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), p.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "a worker process failed: {status}");
    }

    // The test did what it says: recomputes read before a newer event was stored and
    // wrote after it (the interleaving a lost update needs), and the worker processes
    // wrote some of the rows.
    assert!(
        count(
            &pool,
            "SELECT count(*) FROM subscription_writes WHERE held_back"
        )
        .await
            > 0
    );
    assert!(
        count(
            &pool,
            &format!("SELECT count(*) FROM subscription_writes WHERE writer = '{WORKER_APP}'")
        )
        .await
            > 0
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE kind = 'stripe.event' AND state = 'done'"
        )
        .await,
        8 * 12,
        "one job per event, all done"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM stripe_events WHERE state <> 'processed'"
        )
        .await,
        0
    );
    pool.close().await;
}
