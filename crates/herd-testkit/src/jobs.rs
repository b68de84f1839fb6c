//! Running the job queue in tests, with every capability's handlers registered as in
//! `herd worker`, and fake clusters standing in for the registered ones.

use futures::future::BoxFuture;
use herd_fleet::seal::SealKey;
use herd_jobs::{Registry, Runner, Settings, Stats};
use herd_mail::Mailer;
use herd_store::fleet::Cluster;
use sqlx::PgPool;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Registered clusters' clients by cluster name: fake clusters a test plugs in. A cluster
/// with no client plugged in is unreachable, as a real one whose API does not answer.
#[derive(Default, Clone)]
pub struct FakeClusters {
    clients: Arc<Mutex<HashMap<String, kube::Client>>>,
}

impl FakeClusters {
    /// Serves the registered cluster `name` with `client` (a fake cluster's).
    pub fn plug(&self, name: &str, client: kube::Client) {
        self.clients.lock().unwrap().insert(name.to_owned(), client);
    }

    /// Makes `name` unreachable again.
    pub fn unplug(&self, name: &str) {
        self.clients.lock().unwrap().remove(name);
    }
}

impl herd_orchestrator::Connector for FakeClusters {
    fn client<'a>(&'a self, cluster: &'a Cluster) -> BoxFuture<'a, anyhow::Result<kube::Client>> {
        let found = self.clients.lock().unwrap().get(&cluster.name).cloned();
        Box::pin(async move {
            found.ok_or_else(|| {
                anyhow::anyhow!(
                    "cluster {} is unreachable (connection refused)",
                    cluster.name
                )
            })
        })
    }
}

/// Every job kind's handler, as `herd worker` registers them, with `clusters` as the
/// registered clusters' API servers and `dns` the name server domain checks ask.
pub fn registry_with(
    pool: &PgPool,
    mailer: &Mailer,
    clusters: &FakeClusters,
    key: Option<SealKey>,
    dns: SocketAddr,
) -> Registry {
    registry_with_stripe(pool, mailer, clusters, key, dns, None, None)
}

/// [`registry_with`], with `stripe` (a [`crate::stripe::FakeStripe`]'s) as Stripe's API.
pub fn registry_with_stripe(
    pool: &PgPool,
    mailer: &Mailer,
    clusters: &FakeClusters,
    key: Option<SealKey>,
    dns: SocketAddr,
    stripe: Option<herd_billing::stripe_api::StripeApi>,
    replies: Option<&herd_support::inbound::ReplyAddresses>,
) -> Registry {
    let mut r = Registry::new();
    herd_billing::worker::register_with(&mut r, pool, mailer, stripe);
    herd_web::emails::register(&mut r, pool, mailer);
    let checker = herd_fleet::domains::DnsChecker::at(dns).expect("a DNS resolver");
    herd_fleet::domains::register(&mut r, pool, &checker);
    herd_fleet::backups::register(&mut r, pool, mailer);
    herd_fleet::drills::register(&mut r, pool);
    herd_support::jobs::register(&mut r, pool, mailer, replies);
    herd_moderation::jobs::register(&mut r, pool, mailer, key.clone());
    herd_orchestrator::register(
        &mut r,
        &herd_orchestrator::Orchestrator {
            pool: pool.clone(),
            clusters: Arc::new(clusters.clone()),
            key,
            moderator_email: Some("moderation@provider.example".to_owned()),
        },
    );
    r
}

/// Every handler, with no cluster reachable and no name server (a closed local port:
/// domain checks find nothing).
pub fn registry(pool: &PgPool, mailer: &Mailer) -> Registry {
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 9));
    registry_with(pool, mailer, &FakeClusters::default(), None, nowhere)
}

/// Settings for tests: a short lease and retries a few milliseconds apart, so that tests
/// about leases and retries need no long sleeps.
pub fn fast_settings() -> Settings {
    Settings {
        concurrency: 8,
        lease: Duration::from_millis(600),
        poll: Duration::from_millis(50),
        retry_base: Duration::from_millis(10),
        timeout: Duration::from_secs(60),
    }
}

/// A runner with every handler and production settings.
pub fn runner(pool: &PgPool, mailer: &Mailer) -> Runner {
    Runner::new(pool.clone(), registry(pool, mailer), Settings::default())
}

/// Runs `runner` until nothing is due, then fails the test if any job is dead or waiting
/// to be retried after a failure: a test must not leave work silently undone.
pub async fn drain_checked(runner: &Runner, pool: &PgPool) -> Stats {
    let stats = runner.drain().await.expect("job queue");
    let failing = herd_jobs::admin::failing(pool).await.expect("job list");
    assert!(
        failing.is_empty(),
        "jobs left failing: {:#?}",
        failing
            .iter()
            .map(|j| (&j.kind, j.state, &j.last_error))
            .collect::<Vec<_>>()
    );
    stats
}

/// Runs the queue (no cluster reachable, `stripe` as Stripe's API) until nothing is due;
/// fails the test if a job is left failing.
pub async fn run_jobs_with_stripe(
    pool: &PgPool,
    mailer: &Mailer,
    stripe: &herd_billing::stripe_api::StripeApi,
) -> Stats {
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 9));
    let registry = registry_with_stripe(
        pool,
        mailer,
        &FakeClusters::default(),
        None,
        nowhere,
        Some(stripe.clone()),
        None,
    );
    drain_checked(
        &Runner::new(pool.clone(), registry, Settings::default()),
        pool,
    )
    .await
}

/// Runs the queue (no cluster reachable) until nothing is due; fails the test if a job is
/// left failing.
pub async fn run_jobs(pool: &PgPool, mailer: &Mailer) -> Stats {
    drain_checked(&runner(pool, mailer), pool).await
}
