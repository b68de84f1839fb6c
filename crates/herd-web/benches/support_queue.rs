//! The support desk under load: the operator queue with 100,000 tickets across 5,000
//! organizations, viewed as "breaching soon" (`/operator/support?view=breaching`) by 32
//! operators at once over real HTTP, on the real router and PostgreSQL: requests/s and
//! latency percentiles. Then the SLA clock: the due-time computation of one ticket
//! (`herd_domain::support::sla::compute`, ns/op) for a few histories, and the minute's SLA
//! check job (`check_slas`: lock, read the history, compute, store) per ticket.
//!
//! `cargo test` runs a small database with 4 clients in a debug build as a check that it
//! works; the figures come from `make bench`. Needs a PostgreSQL server: `DATABASE_URL`
//! names one (a scratch database is created on it).
#![expect(clippy::unwrap_used, reason = "benchmark")]

use herd_domain::support::sla::{compute, Change, ClockEvent};
use herd_domain::support::{BusinessHours, Priority, Status, SupportHours, SupportTier, Targets};
use herd_testkit::TestApp;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::macros::datetime;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `orgs` organizations, each with an owner, and `tickets` tickets spread over them:
/// two in five resolved or closed; of the unresolved, one in ten waiting on the customer
/// and the others due from an hour ago to six days ahead (about one ticket in a hundred
/// within the two hours of "breaching soon"), one in twenty breached; one in three
/// assigned.
async fn fill(pool: &sqlx::PgPool, orgs: i32, tickets: i32) {
    sqlx::query(
        "INSERT INTO organizations (id, slug, name)
         SELECT gen_random_uuid(), 'org-' || g, 'Organization ' || g
         FROM generate_series(1, $1) AS g",
    )
    .bind(orgs)
    .execute(pool)
    .await
    .unwrap();
    for sql in [
        "INSERT INTO users (id, email, display_name, password_hash, email_verified_at)
         SELECT gen_random_uuid(), 'owner@' || slug || '.example', 'Owner ' || slug, 'x', now()
         FROM organizations WHERE slug LIKE 'org-%'",
        "INSERT INTO memberships (org_id, user_id, role)
         SELECT o.id, u.id, 'owner' FROM organizations o
         JOIN users u ON u.email = 'owner@' || o.slug || '.example'",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    sqlx::query(
        "WITH o AS (SELECT o.id, u.id AS owner, row_number() OVER (ORDER BY o.slug) - 1 AS n
                    FROM organizations o JOIN memberships m ON m.org_id = o.id
                    JOIN users u ON u.id = m.user_id WHERE o.slug LIKE 'org-%'),
              ops AS (SELECT array_agg(id ORDER BY email) AS ids FROM users WHERE is_operator),
              t AS (SELECT g, (g * 7919) % 1000 AS r FROM generate_series(0, $1 - 1) AS g)
         INSERT INTO tickets (id, org_id, opener_id, subject, category, priority, status,
                              plan_code, assignee_id, next_due, first_response_due,
                              resolution_due, first_response_breached, resolved_at,
                              closed_at, created_at, updated_at)
         SELECT gen_random_uuid(), o.id, o.owner, 'Ticket ' || t.g,
                (ARRAY['technical','billing','moderation','abuse','account','other'])[1 + t.g % 6],
                (ARRAY['low','normal','normal','high'])[1 + t.g % 4],
                CASE WHEN t.r < 300 THEN 'closed' WHEN t.r < 400 THEN 'resolved'
                     WHEN t.r < 460 THEN 'waiting_on_customer' WHEN t.r < 700 THEN 'new'
                     ELSE 'open' END,
                (ARRAY['community','organization','institution'])[1 + t.g % 3],
                CASE WHEN t.g % 3 = 0 THEN ops.ids[1 + t.g % cardinality(ops.ids)] END,
                CASE WHEN t.r < 460 THEN NULL
                     ELSE now() - interval '1 hour' + (t.r - 460) * interval '16 minutes' END,
                now() + interval '1 day', now() + interval '5 days',
                t.r BETWEEN 460 AND 489,
                CASE WHEN t.r < 400 THEN now() - interval '1 day' END,
                CASE WHEN t.r < 300 THEN now() - interval '12 hours' END,
                now() - (t.g % 720) * interval '1 hour', now()
         FROM t JOIN o ON o.n = t.g % $2 CROSS JOIN ops",
    )
    .bind(tickets)
    .bind(orgs)
    .execute(pool)
    .await
    .unwrap();
    // Each unresolved ticket's events as opening leaves them (the SLA check reads them).
    sqlx::query(
        "INSERT INTO ticket_events (ticket_id, at, kind, priority)
         SELECT id, created_at, 'priority', priority FROM tickets",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE").execute(pool).await.unwrap();
}

/// Each client asks for `path` `requests` times; returns the latencies and the time.
async fn load(
    clients: &[Arc<herd_testkit::Client>],
    path: &'static str,
    requests: usize,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(requests);
            for _ in 0..requests {
                let t = Instant::now();
                c.get(path).await.assert_status(200);
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
    (latencies, elapsed)
}

/// Nanoseconds per call of `f`, over `n` calls (after a warm-up).
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn paris_tier() -> SupportTier {
    let t = |f: u32| Targets {
        first_response_minutes: f,
        resolution_minutes: f * 5,
    };
    SupportTier::new(
        [t(2880), t(1440), t(240), t(60)],
        true,
        SupportHours::Business(BusinessHours::new(9 * 60, 18 * 60, "Europe/Paris").unwrap()),
    )
    .unwrap()
}

/// The due-time computation of one ticket, for histories of growing length.
fn sla_compute(n: u32) {
    let opened = datetime!(2026-11-27 14:00 UTC);
    let always = SupportTier {
        hours: SupportHours::Always,
        ..SupportTier::default_for(4)
    };
    let paris = paris_tier();
    let ev = |h: i64, change| ClockEvent {
        at: opened + time::Duration::hours(h),
        change,
    };
    let busy = vec![
        ev(2, Change::FirstResponse),
        ev(3, Change::Status(Status::WaitingOnCustomer)),
        ev(70, Change::Status(Status::Open)),
        ev(75, Change::Priority(Priority::High)),
        ev(80, Change::Tier(always.clone())),
        ev(90, Change::Status(Status::WaitingOnCustomer)),
        ev(150, Change::Status(Status::Open)),
    ];
    let now = opened + time::Duration::days(10);
    let cases: [(&str, &SupportTier, &[ClockEvent]); 3] = [
        ("24/7, no event", &always, &[]),
        ("business hours (Europe/Paris), no event", &paris, &[]),
        (
            "business hours, 10 days, 7 events (answer, pauses, priority and plan changes)",
            &paris,
            &busy,
        ),
    ];
    for (name, tier, events) in cases {
        let ns = per_call(n, || {
            black_box(compute(
                black_box(opened),
                Priority::Normal,
                black_box(tier),
                black_box(events),
                black_box(now),
            ));
        });
        println!("  SLA due times, {name}: {ns:.0} ns/op");
    }
}

#[tokio::main]
async fn main() {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL is not set: run `make bench`"));
    herd_testkit::print_conditions(&base).await;
    let quick = !std::env::args().any(|a| a == "--bench");
    let (orgs, tickets, clients, requests, iterations) = if quick {
        (100, 2_000, 4, 5, 1_000)
    } else {
        (5_000, 100_000, 32, 200, 200_000)
    };
    let db = format!("herd_bench_support_{}", std::process::id());
    let pool = herd_testkit::scratch_database(&base, &db, 40).await;
    let app = TestApp::spawn(pool.clone()).await;
    let mut operators = Vec::new();
    for i in 0..clients {
        operators.push(Arc::new(app.operator(&format!("op{i}@herd.test")).await));
    }
    fill(&pool, orgs, tickets).await;
    let (total, soon): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE status IN ('new', 'open', 'waiting_on_customer')
                                           AND next_due <= now() + interval '2 hours')
         FROM tickets",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(total, i64::from(tickets));
    // The page lists a full page of tickets breaching soon, soonest first.
    let page = operators[0].get("/operator/support?view=breaching").await;
    let rows = page.select_text(".queue-row").len();
    assert_eq!(
        rows,
        usize::try_from(soon.min(25)).unwrap(),
        "{}",
        page.body
    );

    println!(
        "operator queue, breaching soon: {total} tickets across {orgs} organizations, {soon} breaching soon, {clients} operators, {requests} requests each"
    );
    let path = "/operator/support?view=breaching";
    load(&operators, path, 2).await; // warm-up
    let (lat, elapsed) = load(&operators, path, requests).await;
    let n = lat.len();
    println!(
        "  {path}: {:.0} requests/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        n as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat[n - 1].as_secs_f64() * 1e3
    );

    // The dashboard reads every ticket of its twelve weeks (here all of them): one
    // operator at a time, as a team lead opens it.
    let mut dashboard = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        operators[0]
            .get("/operator/support/dashboard")
            .await
            .assert_status(200);
        dashboard.push(t.elapsed());
    }
    dashboard.sort();
    println!(
        "  /operator/support/dashboard: median {:.1} ms of 5, one at a time",
        dashboard[2].as_secs_f64() * 1e3
    );

    sla_compute(iterations);

    // The minute's SLA check over the soonest-due unresolved tickets (at most 5,000 a run).
    let start = Instant::now();
    herd_support::tickets::check_slas(&pool).await.unwrap();
    let checked = 5_000.min(
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tickets WHERE status IN ('new', 'open', 'waiting_on_customer')",
        )
        .fetch_one(&pool)
        .await
        .unwrap(),
    );
    let elapsed = start.elapsed();
    println!(
        "  SLA check job: {checked} tickets in {:.2} s, {:.2} ms per ticket",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / checked as f64
    );

    drop(operators);
    drop(app);
    pool.close().await;
    herd_testkit::drop_database(&base, &db).await;
}
