//! The job system against a real PostgreSQL: concurrency, leases and their tokens,
//! heartbeats, a worker killed mid-job, retries, dead jobs, wake-ups and operator actions.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::{JobState, UserId};
use herd_jobs::admin::{self, ActionError, Operator};
use herd_jobs::{Job, Registry, Runner, Settings};
use herd_store::jobs;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    n: u32,
    /// How long the handler takes.
    ms: u64,
}

impl Job for Work {
    const KIND: &'static str = "test.work";
    const MAX_ATTEMPTS: i32 = 3;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Broken {
    n: u32,
}

impl Job for Broken {
    const KIND: &'static str = "test.broken";
    const MAX_ATTEMPTS: i32 = 3;
    fn dedupe_key(&self) -> Option<String> {
        Some(format!("broken:{}", self.n))
    }
}

fn settings(concurrency: usize) -> Settings {
    Settings {
        concurrency,
        lease: Duration::from_millis(600),
        poll: Duration::from_millis(50),
        retry_base: Duration::from_millis(10),
        timeout: Duration::from_secs(60),
    }
}

/// What the handlers saw: runs per job number, and the most that ran at once.
#[derive(Default)]
struct Seen {
    runs: Mutex<HashMap<u32, usize>>,
    now: AtomicUsize,
    peak: AtomicUsize,
}

/// A registry whose `Work` handler records its runs and applies its effect once (an
/// idempotent insert), and whose `Broken` handler always fails.
fn registry(pool: &PgPool, seen: Arc<Seen>) -> Registry {
    let mut r = Registry::new();
    let p = pool.clone();
    r.register(move |w: Work| {
        let (pool, seen) = (p.clone(), seen.clone());
        async move {
            let now = seen.now.fetch_add(1, Ordering::SeqCst) + 1;
            seen.peak.fetch_max(now, Ordering::SeqCst);
            *seen.runs.lock().unwrap().entry(w.n).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(w.ms)).await;
            sqlx::query("INSERT INTO effects (n) VALUES ($1) ON CONFLICT DO NOTHING")
                .bind(w.n as i32)
                .execute(&pool)
                .await?;
            seen.now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    });
    r.register(|b: Broken| async move { anyhow::bail!("the remote refused job {}", b.n) });
    r
}

async fn setup(pool: &PgPool) {
    sqlx::query("CREATE TABLE effects (n integer PRIMARY KEY)")
        .execute(pool)
        .await
        .unwrap();
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn enqueue_work(pool: &PgPool, n: u32, ms: u64) -> uuid::Uuid {
    herd_jobs::enqueue(pool, &Work { n, ms })
        .await
        .unwrap()
        .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_runner_runs_jobs_concurrently(pool: PgPool) {
    setup(&pool).await;
    for n in 0..16 {
        enqueue_work(&pool, n, 150).await;
    }
    let seen = Arc::new(Seen::default());
    let stats = Runner::new(pool.clone(), registry(&pool, seen.clone()), settings(8))
        .drain()
        .await
        .unwrap();
    assert_eq!(stats.completed, 16);
    let peak = seen.peak.load(Ordering::SeqCst);
    assert!(peak > 1, "jobs ran one after another (peak {peak})");
    assert!(peak <= 8, "more than the concurrency ran at once ({peak})");
    assert_eq!(count(&pool, "SELECT count(*) FROM effects").await, 16);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn two_workers_on_one_database_never_run_the_same_job(pool: PgPool) {
    setup(&pool).await;
    for n in 0..200 {
        enqueue_work(&pool, n, 2).await;
    }
    let seen = Arc::new(Seen::default());
    let a = Runner::new(pool.clone(), registry(&pool, seen.clone()), settings(4));
    let b = Runner::new(pool.clone(), registry(&pool, seen.clone()), settings(4));
    let (sa, sb) = tokio::join!(a.drain(), b.drain());
    let (sa, sb) = (sa.unwrap(), sb.unwrap());
    assert_eq!(sa.completed + sb.completed, 200);
    assert!(
        sa.completed > 0 && sb.completed > 0,
        "both workers took part"
    );
    let runs = seen.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 200);
    assert!(runs.values().all(|&r| r == 1), "a job ran twice");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE state = 'done'").await,
        200
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_heartbeat_keeps_a_long_job_from_being_taken_over(pool: PgPool) {
    setup(&pool).await;
    // Runs for about three leases: without renewal a second worker would take it over.
    // (A lease of 1.5 s renewed every 0.5 s leaves room for a busy test machine.)
    let slow = Settings {
        lease: Duration::from_millis(1500),
        ..settings(2)
    };
    enqueue_work(&pool, 1, 4000).await;
    let seen = Arc::new(Seen::default());
    let a = Runner::new(pool.clone(), registry(&pool, seen.clone()), slow.clone());
    let b = Runner::new(pool.clone(), registry(&pool, seen.clone()), slow);
    let first = tokio::spawn(async move { a.drain().await.unwrap() });
    // The other worker keeps looking while the first one runs.
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(b.drain().await.unwrap().claimed(), 0, "taken over");
    }
    assert_eq!(first.await.unwrap().completed, 1);
    assert_eq!(seen.runs.lock().unwrap()[&1], 1);
    assert_eq!(count(&pool, "SELECT attempts::bigint FROM jobs").await, 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_worker_killed_mid_job_leaves_it_to_another_and_the_effect_happens_once(pool: PgPool) {
    setup(&pool).await;
    let id = enqueue_work(&pool, 7, 60_000).await;
    let seen = Arc::new(Seen::default());
    // A worker picks the job up, then dies without a word (its task is dropped, as a
    // process killed with -9 stops renewing and recording).
    let dying = Runner::new(pool.clone(), registry(&pool, seen.clone()), settings(1));
    let killed = tokio::spawn(dying.run(std::future::pending()));
    for _ in 0..100 {
        if seen.runs.lock().unwrap().contains_key(&7) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.runs.lock().unwrap().contains_key(&7), "never started");
    killed.abort();
    let _ = killed.await;
    // Make the retry quick: the same job, now fast.
    sqlx::query("UPDATE jobs SET payload = jsonb_set(payload, '{ms}', '5')")
        .execute(&pool)
        .await
        .unwrap();
    let next = Runner::new(pool.clone(), registry(&pool, seen.clone()), settings(1));
    let started = std::time::Instant::now();
    let mut done = false;
    while started.elapsed() < Duration::from_secs(10) {
        if next.drain().await.unwrap().completed == 1 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the killed worker's job never ran again");
    let job = jobs::get(&pool, id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Done);
    assert_eq!(job.attempts, 2, "the killed run counted as an attempt");
    assert_eq!(seen.runs.lock().unwrap()[&7], 2);
    assert_eq!(count(&pool, "SELECT count(*) FROM effects").await, 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn only_the_current_lease_may_record_an_outcome(pool: PgPool) {
    setup(&pool).await;
    let id = enqueue_work(&pool, 1, 0).await;
    let old = jobs::claim(&pool, &[Work::KIND], 1, time::Duration::milliseconds(50))
        .await
        .unwrap()
        .remove(0);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(jobs::reap_expired(&pool, 0.0).await.unwrap(), 1);
    let new = jobs::claim(&pool, &[Work::KIND], 1, time::Duration::seconds(30))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(new.id, id);
    assert_ne!(new.lease_token, old.lease_token);
    // The stale run can neither renew, fail nor complete the job.
    assert!(
        !jobs::renew(&pool, id, old.lease_token, time::Duration::seconds(30))
            .await
            .unwrap()
    );
    assert_eq!(
        jobs::fail(&pool, id, old.lease_token, "stale", time::Duration::ZERO)
            .await
            .unwrap(),
        jobs::Failed::LeaseLost
    );
    assert!(!jobs::complete(&pool, id, old.lease_token).await.unwrap());
    let job = jobs::get(&pool, id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempts, 2);
    assert!(jobs::complete(&pool, id, new.lease_token).await.unwrap());
    assert_eq!(
        jobs::get(&pool, id).await.unwrap().unwrap().state,
        JobState::Done
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_expired_lease_honours_max_attempts_and_backoff(pool: PgPool) {
    setup(&pool).await;
    let id = enqueue_work(&pool, 1, 0).await;
    // Three claims whose workers all die: the third uses the last attempt.
    for attempt in 1..=3 {
        sqlx::query("UPDATE jobs SET run_at = now()")
            .execute(&pool)
            .await
            .unwrap();
        let c = jobs::claim(&pool, &[Work::KIND], 1, time::Duration::milliseconds(20))
            .await
            .unwrap();
        assert_eq!(c.len(), 1, "attempt {attempt}");
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(jobs::reap_expired(&pool, 60.0).await.unwrap(), 1);
        let job = jobs::get(&pool, id).await.unwrap().unwrap();
        if attempt < 3 {
            assert_eq!(job.state, JobState::Queued);
            // Backoff: 60 s doubling, ±20%.
            let wait = (job.run_at - time::OffsetDateTime::now_utc()).as_seconds_f64();
            let mid = 60.0 * 2f64.powi(attempt - 1);
            assert!(wait > mid * 0.75 && wait <= mid * 1.2, "waits {wait}s");
            assert!(job.last_error.unwrap().contains("lease expired"));
        } else {
            assert_eq!(job.state, JobState::Dead);
        }
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_job_that_keeps_failing_ends_dead_with_its_error(pool: PgPool) {
    setup(&pool).await;
    herd_jobs::enqueue(&pool, &Broken { n: 4 }).await.unwrap();
    // The same key again: not enqueued twice.
    assert!(herd_jobs::enqueue(&pool, &Broken { n: 4 })
        .await
        .unwrap()
        .is_none());
    let seen = Arc::new(Seen::default());
    let runner = Runner::new(pool.clone(), registry(&pool, seen), settings(2));
    let mut stats = herd_jobs::Stats::default();
    for _ in 0..200 {
        let s = runner.drain().await.unwrap();
        stats.retrying += s.retrying;
        stats.dead += s.dead;
        if s.dead > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((stats.retrying, stats.dead), (2, 1));
    let failing = admin::failing(&pool).await.unwrap();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].state, JobState::Dead);
    assert_eq!(failing[0].attempts, 3);
    assert_eq!(
        failing[0].last_error.as_deref(),
        Some("the remote refused job 4")
    );
    // Dead jobs are not run again by themselves.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(runner.drain().await.unwrap().claimed(), 0);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_hanging_handler_is_stopped_and_counts_as_failed(pool: PgPool) {
    setup(&pool).await;
    let id = enqueue_work(&pool, 3, 3_600_000).await;
    let seen = Arc::new(Seen::default());
    let stats = Runner::new(
        pool.clone(),
        registry(&pool, seen),
        Settings {
            timeout: Duration::from_millis(300),
            // Long enough that this drain never sees the job due again, however slow the
            // machine (with 10 ms it sometimes ran twice under CI load).
            retry_base: Duration::from_secs(60),
            ..settings(1)
        },
    )
    .drain()
    .await
    .unwrap();
    assert_eq!(stats.retrying, 1);
    let job = jobs::get(&pool, id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert!(job.last_error.unwrap().contains("ran longer than"));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_panicking_handler_is_a_failed_run(pool: PgPool) {
    #[derive(Debug, Serialize, Deserialize)]
    struct Panics;
    impl Job for Panics {
        const KIND: &'static str = "test.panics";
        const MAX_ATTEMPTS: i32 = 1;
    }
    let mut r = Registry::new();
    r.register(|_: Panics| async move {
        let v: Vec<u8> = Vec::new();
        let _ = v[3];
        Ok(())
    });
    let id = herd_jobs::enqueue(&pool, &Panics).await.unwrap().unwrap();
    let stats = Runner::new(pool.clone(), r, settings(1))
        .drain()
        .await
        .unwrap();
    assert_eq!(stats.dead, 1);
    let job = jobs::get(&pool, id).await.unwrap().unwrap();
    assert!(job.last_error.unwrap().starts_with("the job panicked"));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_notification_wakes_an_idle_worker_long_before_it_would_poll(pool: PgPool) {
    setup(&pool).await;
    let seen = Arc::new(Seen::default());
    let runner = Runner::new(
        pool.clone(),
        registry(&pool, seen.clone()),
        Settings {
            poll: Duration::from_secs(120),
            ..settings(2)
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(runner.run(async {
        let _ = stop_rx.await;
    }));
    // Let it make its first (empty) pass and go to sleep on the listener.
    tokio::time::sleep(Duration::from_millis(500)).await;
    enqueue_work(&pool, 9, 0).await;
    let mut woke = false;
    for _ in 0..200 {
        if count(&pool, "SELECT count(*) FROM effects").await == 1 {
            woke = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(woke, "the job waited for the 120 s poll");
    stop_tx.send(()).unwrap();
    worker.await.unwrap();
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn operators_retry_a_dead_job_and_cancel_a_queued_one_and_both_are_audited(pool: PgPool) {
    setup(&pool).await;
    let uid = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, display_name, password_hash, email_verified_at, is_operator) VALUES ($1, 'ops@provider.example', 'Ops', 'x', now(), true)")
        .bind(uid)
        .execute(&pool)
        .await
        .unwrap();
    let op = Operator {
        id: UserId(uid),
        email: "ops@provider.example",
        ip: "192.0.2.1",
    };
    let dead = herd_jobs::enqueue(&pool, &Broken { n: 1 })
        .await
        .unwrap()
        .unwrap();
    sqlx::query("UPDATE jobs SET state = 'dead', attempts = 3, last_error = 'boom' WHERE id = $1")
        .bind(dead)
        .execute(&pool)
        .await
        .unwrap();
    let queued = enqueue_work(&pool, 2, 0).await;

    admin::retry(&pool, op, dead).await.unwrap();
    let j = jobs::get(&pool, dead).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Queued, 0));
    admin::cancel(&pool, op, queued).await.unwrap();
    assert_eq!(
        jobs::get(&pool, queued).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    // A cancelled job does not run.
    let seen = Arc::new(Seen::default());
    let stats = Runner::new(pool.clone(), registry(&pool, seen.clone()), settings(2))
        .drain()
        .await
        .unwrap();
    assert!(!seen.runs.lock().unwrap().contains_key(&2));
    assert_eq!(stats.retrying, 1, "the retried job ran (and failed again)");
    // A finished job can be neither retried nor cancelled.
    let done = enqueue_work(&pool, 3, 0).await;
    Runner::new(pool.clone(), registry(&pool, seen), settings(2))
        .drain()
        .await
        .unwrap();
    assert!(matches!(
        admin::retry(&pool, op, done).await,
        Err(ActionError::CannotRetry(JobState::Done))
    ));
    assert!(matches!(
        admin::cancel(&pool, op, done).await,
        Err(ActionError::CannotCancel(JobState::Done))
    ));
    assert!(matches!(
        admin::retry(&pool, op, uuid::Uuid::now_v7()).await,
        Err(ActionError::NotFound)
    ));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action IN ('jobs.retried', 'jobs.cancelled') AND actor_email = 'ops@provider.example'"
        )
        .await,
        2
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn cancelling_a_running_job_discards_its_outcome(pool: PgPool) {
    setup(&pool).await;
    let id = enqueue_work(&pool, 5, 0).await;
    let c = jobs::claim(&pool, &[Work::KIND], 1, time::Duration::seconds(30))
        .await
        .unwrap()
        .remove(0);
    assert!(jobs::cancel(&pool, id).await.unwrap());
    assert!(!jobs::complete(&pool, id, c.lease_token).await.unwrap());
    assert_eq!(
        jobs::get(&pool, id).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
}

/// A job that waits until a later one has run: only a runner that fills a freed slot at
/// once (without waiting for the rest of its batch) finishes.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn drain_fills_a_freed_slot_without_waiting_for_the_rest_of_its_batch(pool: PgPool) {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Step {
        n: u32,
    }
    impl Job for Step {
        const KIND: &'static str = "test.step";
    }
    let released = Arc::new(tokio::sync::Notify::new());
    let mut r = Registry::new();
    let r2 = released.clone();
    r.register(move |s: Step| {
        let released = r2.clone();
        async move {
            match s.n {
                // The first waits for the third; the second finishes at once.
                0 => released.notified().await,
                2 => released.notify_one(),
                _ => {}
            }
            Ok(())
        }
    });
    let t0 = time::OffsetDateTime::now_utc() - time::Duration::seconds(10);
    for n in 0..3u32 {
        herd_jobs::enqueue_at(
            &pool,
            &Step { n },
            Some(t0 + time::Duration::seconds(n.into())),
        )
        .await
        .unwrap();
    }
    let runner = Runner::new(pool.clone(), r, settings(2));
    let stats = tokio::time::timeout(Duration::from_secs(20), runner.drain())
        .await
        .expect("the third job never ran while the first waited for it")
        .unwrap();
    assert_eq!(stats.completed, 3);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn completing_queued_jobs_by_key_leaves_running_and_other_kinds_alone(pool: PgPool) {
    for n in 0..3 {
        herd_jobs::enqueue(&pool, &Broken { n })
            .await
            .unwrap()
            .unwrap();
    }
    // Job 0 is running: it must be left to finish (its outcome belongs to its lease).
    let claimed = jobs::claim(&pool, &["test.broken"], 1, time::Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let keys: Vec<String> = (0..3).map(|n| format!("broken:{n}")).collect();
    // Another kind named with these keys touches nothing (the kind is part of the match).
    assert_eq!(
        herd_jobs::complete_queued::<Work>(&pool, &keys)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE state = 'queued'").await,
        2
    );
    let done = herd_jobs::complete_queued::<Broken>(&pool, &keys)
        .await
        .unwrap();
    assert_eq!(done, 2, "the two queued jobs, not the running one");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM jobs WHERE state = 'running'").await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE state = 'done' AND finished_at IS NOT NULL"
        )
        .await,
        2
    );
    assert!(jobs::complete(&pool, claimed[0].id, claimed[0].lease_token)
        .await
        .unwrap());
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_deferred_wakeup_notifies_after_the_commit_not_at_it(pool: PgPool) {
    setup(&pool).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen("herd_jobs").await.unwrap();
    // An ordinary enqueue notifies at its commit.
    enqueue_work(&pool, 1, 0).await;
    assert!(!quiet(&mut listener).await, "an enqueue notifies at commit");

    // A deferred one commits silently: its commit does not take NOTIFY's lock.
    let mut tx = pool.begin().await.unwrap();
    herd_jobs::defer_wakeup(&mut tx).await.unwrap();
    herd_jobs::enqueue(&mut *tx, &Work { n: 2, ms: 0 })
        .await
        .unwrap();
    herd_jobs::enqueue(&mut *tx, &Work { n: 3, ms: 0 })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        quiet(&mut listener).await,
        "the deferred enqueue notified at commit"
    );
    // The setting was the transaction's only: the next enqueue notifies again.
    enqueue_work(&pool, 4, 0).await;
    assert!(
        !quiet(&mut listener).await,
        "the deferral outlived its transaction"
    );

    // `wake` notifies; a burst of wake-ups is coalesced but the last one is never lost.
    herd_jobs::wake(&pool);
    assert!(!quiet(&mut listener).await, "wake sent nothing");
    for _ in 0..50 {
        herd_jobs::wake(&pool);
    }
    let mut got = 0;
    while !quiet(&mut listener).await {
        got += 1;
    }
    assert!(
        (1..50).contains(&got),
        "50 wake-ups in a burst made {got} notifications"
    );

    // An idle worker (polling every 120 s) runs a deferred job as soon as it is woken.
    let seen = Arc::new(Seen::default());
    let runner = Runner::new(
        pool.clone(),
        registry(&pool, seen.clone()),
        Settings {
            poll: Duration::from_secs(120),
            ..settings(2)
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(runner.run(async {
        let _ = stop_rx.await;
    }));
    let mut woke = false;
    for _ in 0..200 {
        if count(&pool, "SELECT count(*) FROM effects").await == 4 {
            woke = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(woke, "the first pass did not run the four jobs");
    let mut tx = pool.begin().await.unwrap();
    herd_jobs::defer_wakeup(&mut tx).await.unwrap();
    herd_jobs::enqueue(&mut *tx, &Work { n: 5, ms: 0 })
        .await
        .unwrap();
    tx.commit().await.unwrap();
    herd_jobs::wake(&pool);
    let mut woke = false;
    for _ in 0..200 {
        if count(&pool, "SELECT count(*) FROM effects").await == 5 {
            woke = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(woke, "the deferred job waited for the 120 s poll");
    stop_tx.send(()).unwrap();
    worker.await.unwrap();
}

/// No notification arrives on `l` within 300 ms.
async fn quiet(l: &mut sqlx::postgres::PgListener) -> bool {
    tokio::time::timeout(Duration::from_millis(300), l.try_recv())
        .await
        .is_err()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn jobs_of_one_group_run_one_at_a_time_in_order_and_groups_run_side_by_side(pool: PgPool) {
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct Grouped {
        g: u32,
        n: u32,
    }
    impl Job for Grouped {
        const KIND: &'static str = "test.grouped";
        fn group_key(&self) -> Option<String> {
            Some(format!("g{}", self.g))
        }
    }
    /// (group, job) in the order they started, and what ran at once per group.
    #[derive(Default)]
    struct Log {
        started: Mutex<Vec<(u32, u32)>>,
        running: Mutex<HashMap<u32, usize>>,
        overlap: AtomicUsize,
        now: AtomicUsize,
        peak: AtomicUsize,
    }
    let log = Arc::new(Log::default());
    let mut registry = Registry::new();
    let l = log.clone();
    registry.register(move |j: Grouped| {
        let log = l.clone();
        async move {
            {
                let mut running = log.running.lock().unwrap();
                let r = running.entry(j.g).or_default();
                *r += 1;
                if *r > 1 {
                    log.overlap.fetch_add(1, Ordering::SeqCst);
                }
                log.started.lock().unwrap().push((j.g, j.n));
            }
            let now = log.now.fetch_add(1, Ordering::SeqCst) + 1;
            log.peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(40)).await;
            log.now.fetch_sub(1, Ordering::SeqCst);
            *log.running.lock().unwrap().get_mut(&j.g).unwrap() -= 1;
            Ok(())
        }
    });
    // Each group's jobs enqueued together, one group after the other (as a renewal run
    // sends one subscription's events together).
    for g in 0..4 {
        for n in 0..5 {
            herd_jobs::enqueue(&pool, &Grouped { g, n }).await.unwrap();
        }
    }
    let stats = Runner::new(pool.clone(), registry, settings(8))
        .drain()
        .await
        .unwrap();
    assert_eq!(stats.retrying + stats.dead, 0);
    let started = log.started.lock().unwrap().clone();
    assert_eq!(started.len(), 20, "every job ran once: {started:?}");
    assert_eq!(
        log.overlap.load(Ordering::SeqCst),
        0,
        "two jobs of one group ran at once: {started:?}"
    );
    for g in 0..4 {
        let order: Vec<u32> = started
            .iter()
            .filter(|(sg, _)| *sg == g)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(order, vec![0, 1, 2, 3, 4], "group {g} out of order");
    }
    assert!(
        log.peak.load(Ordering::SeqCst) >= 3,
        "the groups did not run side by side (peak {})",
        log.peak.load(Ordering::SeqCst)
    );
}
