//! The portal under load with a full database: 10,000 organizations, each with an owner and
//! two servers (20,000 instances), and 64 signed-in owners, each on its own connection,
//! asking for their organization's dashboard (`/o/{org}`) and then its servers page
//! (`/o/{org}/servers`) over real HTTP, on the real router and PostgreSQL. Reports
//! requests/s and latency percentiles per page. `cargo test` runs a small database with 8
//! clients in a debug build as a check that it works; the figures come from `make bench`.
//!
//! Needs a PostgreSQL server: `DATABASE_URL` names one (a scratch database is created on
//! it). `make bench` starts the private one and runs this.
#![expect(clippy::unwrap_used, reason = "benchmark")]

use herd_testkit::TestApp;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `orgs` organizations (the first `clients` of them signed up through the portal), each
/// with an owner and two servers.
async fn fill(pool: &sqlx::PgPool, orgs: usize, clients: usize) {
    sqlx::query(
        "INSERT INTO organizations (id, slug, name)
         SELECT gen_random_uuid(), 'org-' || g, 'Organization ' || g
         FROM generate_series($1, $2) AS g",
    )
    .bind(clients as i32)
    .bind(orgs as i32 - 1)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO users (id, email, display_name, password_hash, email_verified_at)
         SELECT gen_random_uuid(), 'owner@' || slug || '.example', 'Owner', 'x', now()
         FROM organizations WHERE slug LIKE 'org-%'",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role)
         SELECT o.id, u.id, 'owner' FROM organizations o
         JOIN users u ON u.email = 'owner@' || o.slug || '.example'",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain,
                                owner_username, owner_email, domain_verified_at, phase, url,
                                running_version)
         SELECT gen_random_uuid(), o.id, 'mastodon', 'v4.7.6', 'community',
                'srv-' || n || '-' || left(replace(o.id::text, '-', ''), 12),
                'social' || n || '.' || o.slug || '.example', 'owner', 'owner@example.org',
                now(), 'running', 'https://social' || n || '.' || o.slug || '.example', 'v4.7.6'
         FROM organizations o CROSS JOIN generate_series(1, 2) AS n",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE").execute(pool).await.unwrap();
}

/// Each client asks for its own page `requests` times; returns the latencies and the time.
async fn load(
    clients: &[Arc<(herd_testkit::Client, String)>],
    page: &'static str,
    requests: usize,
) -> (Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let (client, slug) = &*c;
            let path = format!("/o/{slug}{page}");
            let mut latencies = Vec::with_capacity(requests);
            for _ in 0..requests {
                let t = Instant::now();
                client.get(&path).await.assert_status(200);
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

#[tokio::main]
async fn main() {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL is not set: run `make bench`"));
    herd_testkit::print_conditions(&base).await;
    let quick = !std::env::args().any(|a| a == "--bench");
    let (orgs, clients, requests) = if quick {
        (200, 8, 5)
    } else {
        (10_000, 64, 100)
    };
    let db = format!("herd_bench_dashboard_{}", std::process::id());
    let pool = herd_testkit::scratch_database(&base, &db, 40).await;
    let app = TestApp::spawn(pool.clone()).await;
    // The clients sign up through the portal (their sessions are real), then the rest of
    // the organizations and every server are written directly.
    let mut signed = Vec::new();
    for i in 0..clients {
        let email = format!("client{i}@bench.example");
        let client = app
            .signed_up("Client", &email, Some(&format!("Bench {i}")))
            .await;
        signed.push(Arc::new((client, format!("bench-{i}"))));
    }
    fill(&pool, orgs, clients).await;
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM organizations), (SELECT count(*) FROM instances)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counts, (orgs as i64, 2 * orgs as i64));
    // Each client's servers page lists its two servers.
    let (first, slug) = &*signed[0];
    let page = first.get(&format!("/o/{slug}/servers")).await;
    assert_eq!(
        page.select_text("a[href*='/servers/']").len(),
        2,
        "{}",
        page.body
    );

    println!(
        "portal with {} organizations and {} servers, {clients} signed-in clients, {requests} requests each",
        counts.0, counts.1
    );
    for (page, name) in [
        ("", "dashboard /o/{org}"),
        ("/servers", "servers /o/{org}/servers"),
    ] {
        load(&signed, page, 1).await; // warm-up
        let (lat, elapsed) = load(&signed, page, requests).await;
        let n = lat.len();
        println!(
            "  {name}: {:.0} requests/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            n as f64 / elapsed.as_secs_f64(),
            percentile(&lat, 0.50).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            lat[n - 1].as_secs_f64() * 1e3
        );
    }
    drop(signed);
    drop(app);
    pool.close().await;
    herd_testkit::drop_database(&base, &db).await;
}
