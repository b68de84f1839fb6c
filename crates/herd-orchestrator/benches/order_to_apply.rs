//! From a committed order to its `Instance` applied on a cluster: 1,000 orders fulfilled
//! (each in its own transaction, as a paid checkout or an approval commits them), then
//! 8 workers (job runners, each with its own pool of 12 connections and 8 jobs at once) place and apply
//! them on a kube-fake-client cluster (an in-memory API server, in this process). Reports
//! the latency from each order's commit to its Instance applied (p50, p99) and the
//! servers applied per second. `cargo test` runs 40 orders in a debug build as a check
//! that it works; the figures come from `make bench` (release).
//!
//! Needs a PostgreSQL server: `DATABASE_URL` names one (a scratch database is created).
#![expect(clippy::unwrap_used, reason = "benchmark")]

use herd_domain::OrgId;
use herd_fleet::clusters::Registration;
use herd_jobs::{Runner, Settings};
use herd_k8s::crd::Instance;
use herd_testkit::fake_cluster;
use herd_testkit::jobs::{registry_with, FakeClusters};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::time::Instant;
use uuid::Uuid;

const WORKERS: usize = 8;
/// Jobs each worker runs at once, and its database connections.
const CONCURRENCY: usize = 8;
const CONNECTIONS: u32 = 12;

async fn scratch(base: &str, name: &str) -> PgPool {
    let pool = herd_testkit::scratch_database(base, name, 10).await;
    let mut tx = pool.begin().await.unwrap();
    herd_store::plans::seed_if_empty(&mut tx, &herd_domain::plan::default_catalogue())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pool
}

/// An organization with an owner, and a healthy cluster `eu-1` with room for `orders`.
async fn setup(pool: &PgPool, orders: usize) -> OrgId {
    let (org, user) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, 'bench', 'Bench')")
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO users (id, email, display_name, password_hash, email_verified_at) VALUES ($1, 'owner@bench.example', 'Owner', 'x', now())")
        .bind(user)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(org)
        .bind(user)
        .execute(pool)
        .await
        .unwrap();
    herd_fleet::clusters::register(
        pool,
        None,
        None,
        &Registration {
            name: "eu-1".into(),
            region: "eu-west".into(),
            kubeconfig: String::new(),
            operator_namespace: "herd-system".into(),
            capacity: (orders + 10).to_string(),
        },
    )
    .await
    .unwrap();
    sqlx::query("UPDATE clusters SET health = 'healthy'")
        .execute(pool)
        .await
        .unwrap();
    OrgId(org)
}

/// Fulfils `n` orders, one transaction each (the domain needs no proof, as one under the
/// provider's base domain).
async fn orders(pool: &PgPool, org: OrgId, n: usize) {
    for i in 0..n {
        let mut tx = pool.begin().await.unwrap();
        let domain = format!("s{i}.bench.example");
        let order = herd_store::billing::create_order(
            &mut tx,
            &herd_store::billing::NewOrder {
                org,
                plan_code: "community",
                app: "mastodon",
                domain: &domain,
                created_by: None,
                invoice: None,
                domain_preverified: true,
                submission: None,
            },
        )
        .await
        .unwrap()
        .0;
        let o = herd_store::billing::order(&mut *tx, order)
            .await
            .unwrap()
            .unwrap();
        herd_fleet::orders::fulfil(&mut tx, &o).await.unwrap();
        tx.commit().await.unwrap();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(base: &str, n: usize) -> (f64, f64, f64) {
    let pool = scratch(base, "herd_bench_order_to_apply").await;
    let org = setup(&pool, n).await;
    let cluster = fake_cluster::start_with(|b| b.with_resource::<Instance>()).await;
    let clusters = FakeClusters::default();
    clusters.plug("eu-1", cluster.client.clone());
    let outbox = std::env::temp_dir().join("herd-bench-outbox");
    let mailer = herd_mail::Mailer::outbox(&outbox, "Herd <bench@herd.test>").unwrap();
    let nowhere = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    orders(&pool, org, n).await;

    // Each worker has its own pool, as each `herd worker` process does; 8 × 12 connections
    // stay under PostgreSQL's default limit of 100.
    let url = pool.connect_options().clone();
    let mut worker_pools = Vec::new();
    for _ in 0..WORKERS {
        worker_pools.push(
            PgPoolOptions::new()
                .max_connections(CONNECTIONS)
                .connect_with((*url).clone())
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for wp in worker_pools {
        let runner = Runner::new(
            wp.clone(),
            registry_with(&wp, &mailer, &clusters, None, nowhere),
            Settings {
                concurrency: CONCURRENCY,
                ..Settings::default()
            },
        );
        workers.push(tokio::spawn(async move { runner.drain().await.unwrap() }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    // From the order's commit (the row's creation) to the apply (the last write to it).
    let mut latencies: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM (updated_at - created_at))::float8 FROM instances
         WHERE applied_generation >= 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(latencies.len(), n, "every server applied");
    let api: kube::Api<Instance> = kube::Api::namespaced(cluster.client.clone(), "herd-system");
    let listed = api.list(&Default::default()).await.unwrap().items.len();
    assert_eq!(listed, n, "every Instance on the cluster");
    latencies.sort_by(f64::total_cmp);
    (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        n as f64 / elapsed,
    )
}

#[tokio::main]
async fn main() {
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL: a PostgreSQL server's maintenance database (make bench sets it)");
    herd_testkit::print_conditions(&base).await;
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 40 } else { 1_000 };
    let (p50, p99, rate) = run(&base, n).await;
    println!(
        "order → Instance applied, {n} queued orders, {WORKERS} workers × {CONCURRENCY} jobs: p50 {p50:.2} s, p99 {p99:.2} s, {rate:.0} servers applied/s"
    );
}
