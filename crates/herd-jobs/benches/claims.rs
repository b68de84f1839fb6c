//! Job claims per second: Herd's claim and completion (`herd_store::jobs::claim`, one
//! `UPDATE … WHERE id IN (…)` over candidates taken `FOR UPDATE SKIP LOCKED`, one per job
//! group, then `complete` under the
//! claim's lease token, as the runner does, through sqlx) against pgbench running the same
//! two statements, on the same table, with as many clients. Each side takes `n` jobs from a
//! queue of `2n` (so no claim finds the queue empty), rebuilt before each side (same rows,
//! freshly vacuumed), so neither pays for the other's dead tuples. Reports cycles/s for
//! both and their ratio. `cargo test` runs 400 jobs in a debug build as a check that it
//! works; the figures come from `make bench` (release). pgbench comes with Debian's
//! PostgreSQL server package; without it, only Herd's side runs.
//!
//! Needs a PostgreSQL server: `DATABASE_URL` names one (a scratch database is created).
#![expect(clippy::unwrap_used, reason = "benchmark")]

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const CLIENTS: usize = 8;
const KIND: &str = "bench.noop";
const LEASE_MS: i64 = 10_000;

/// The statements `herd_store::jobs::claim` (for one job of `KIND`) and
/// `herd_store::jobs::complete` run, as a pgbench script.
fn claim_sql() -> String {
    let claim = format!(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1,
                lease_token = gen_random_uuid(), updated_at = now(),
                locked_until = now() + make_interval(secs => {LEASE_MS}::float8 / 1000)
         WHERE id IN (
             SELECT d.id FROM (
                 SELECT DISTINCT ON (coalesce(c.group_key, c.id::text)) c.id, c.run_at
                 FROM (SELECT q.id, q.group_key, q.run_at FROM jobs q
                       WHERE q.kind = ANY(ARRAY['{KIND}']) AND q.state = 'queued' AND q.run_at <= now()
                         AND (q.group_key IS NULL OR NOT EXISTS (
                             SELECT 1 FROM jobs r
                             WHERE r.group_key = q.group_key AND r.state = 'running'))
                       ORDER BY q.run_at
                       LIMIT 8
                       FOR UPDATE SKIP LOCKED) c
                 ORDER BY coalesce(c.group_key, c.id::text), c.run_at) d
             ORDER BY d.run_at
             LIMIT 1)
         RETURNING id, kind, payload, lease_token, attempts, max_attempts"
    );
    let complete = "UPDATE jobs SET state = 'done', finished_at = now(), locked_until = NULL,
                lease_token = NULL, last_error = NULL, updated_at = now()
         WHERE id = :id AND lease_token = :lease_token AND state = 'running';";
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    format!("{} \\gset\n{}\n", one_line(&claim), one_line(complete))
}

async fn scratch(base: &str, name: &str) -> (PgPool, String) {
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect(base)
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let (server, _) = base.rsplit_once('/').unwrap();
    let url = format!("{server}/{name}");
    let pool = PgPoolOptions::new()
        .max_connections(CLIENTS as u32 + 2)
        .connect(&url)
        .await
        .unwrap();
    herd_store::migrate(&pool).await.unwrap();
    (pool, url)
}

/// An empty, vacuumed queue with `n` due jobs of `KIND`.
async fn fill(pool: &PgPool, n: usize) {
    sqlx::query("TRUNCATE jobs").execute(pool).await.unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, max_attempts, run_at)
         SELECT gen_random_uuid(), $1, '{}'::jsonb, 5, now() - make_interval(secs => g)
         FROM generate_series(1, $2) AS g",
    )
    .bind(KIND)
    .bind(n as i32)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE jobs")
        .execute(pool)
        .await
        .unwrap();
}

async fn claimed(pool: &PgPool) -> usize {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'done'")
        .fetch_one(pool)
        .await
        .unwrap();
    n as usize
}

/// Herd's side: `CLIENTS` tasks each claim and complete `n / CLIENTS` jobs, one at a time.
async fn herd(pool: &PgPool, n: usize) -> f64 {
    fill(pool, 2 * n).await;
    let count = Arc::new(AtomicUsize::new(0));
    let lease = time::Duration::milliseconds(LEASE_MS);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (pool, count) = (pool.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..n / CLIENTS {
                let got = herd_store::jobs::claim(&pool, &[KIND], 1, lease)
                    .await
                    .unwrap();
                for job in got {
                    assert!(herd_store::jobs::complete(&pool, job.id, job.lease_token)
                        .await
                        .unwrap());
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(count.load(Ordering::Relaxed), n, "a job per claim");
    assert_eq!(claimed(pool).await, n);
    n as f64 / elapsed
}

/// pgbench's side: the same statements, `CLIENTS` clients, `n` claims in all.
async fn pgbench(pool: &PgPool, url: &str, n: usize) -> Option<f64> {
    let bin = ["/usr/bin/pgbench", "pgbench"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok())?;
    fill(pool, 2 * n).await;
    let script = std::env::temp_dir().join("herd-bench-claim.sql");
    std::fs::write(&script, claim_sql()).unwrap();
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["-n", "-M", "prepared", "-j", "2"])
        .args(["-c", &CLIENTS.to_string()])
        .args(["-t", &(n / CLIENTS).to_string()])
        .arg("-f")
        .arg(&script)
        .arg(url)
        .output()
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Counted from the table, over the wall time (as Herd's side is measured).
    let got = claimed(pool).await;
    assert_eq!(got, n, "pgbench completed {got} of {n}");
    Some(got as f64 / elapsed)
}

#[tokio::main]
async fn main() {
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL: a PostgreSQL server's maintenance database (make bench sets it)");
    herd_testkit::print_conditions(&base).await;
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 400 } else { 40_000 };
    let (pool, url) = scratch(&base, "herd_bench_claims").await;
    // Two rounds, alternating, so a noisy moment hits both sides.
    let mut herd_rates = Vec::new();
    let mut pgbench_rates = Vec::new();
    for _ in 0..2 {
        herd_rates.push(herd(&pool, n).await);
        if let Some(r) = pgbench(&pool, &url, n).await {
            pgbench_rates.push(r);
        }
    }
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let h = best(&herd_rates);
    if pgbench_rates.is_empty() {
        println!(
            "job claim + complete, {n} jobs, {CLIENTS} clients: Herd {h:.0}/s (pgbench not found)"
        );
    } else {
        let p = best(&pgbench_rates);
        println!(
            "job claim + complete, {n} jobs from a queue of {}, {CLIENTS} clients: Herd {h:.0}/s, pgbench (same statements) {p:.0}/s, Herd at {:.0}% of pgbench",
            2 * n,
            100.0 * h / p
        );
    }
}
