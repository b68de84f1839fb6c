//! Test helpers for Herd (dev only): [`TestApp`] runs the real router on a real socket
//! against a real PostgreSQL database, [`Client`] is a browser-like HTTP client that keeps
//! cookies and fills in CSRF tokens, [`TempPostgres`] is a private PostgreSQL server a
//! test may stop and start, [`fake_cluster`] is an in-memory Kubernetes API, and
//! [`stripe`] builds signed webhook deliveries from Stripe's published fixtures.
#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

mod client;
pub mod fake_cluster;
pub mod fake_dns;
pub mod fake_mastodon;
pub mod fake_rules;
pub mod fake_ssa;
pub mod jobs;
pub mod netpol;
mod pg;
pub mod stripe;

pub use client::{Client, Download, Resp};
pub use pg::print_conditions;
pub use pg::{drop_database, scratch_database, TempPostgres};

use herd_mail::{read_outbox, Mailer, OutboxMessage};
use herd_web::{AppState, WebConfig};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A password every test user has; it passes the password policy.
pub const PASSWORD: &str = "violet tram harbour 42";

/// Logs to stderr when `TEST_LOG` is set.
pub fn init_test_log() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,sqlx=warn")
            .with_test_writer()
            .try_init();
    }
}

/// Herd's portal running on 127.0.0.1 on a free port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub pool: PgPool,
    pub outbox: PathBuf,
    /// The app's mailer (writing to `outbox`), for workers a test runs beside the app.
    pub mailer: Mailer,
    /// The registered clusters' API servers, as the app's worker reaches them: plug a
    /// fake cluster in under a registered cluster's name.
    pub clusters: jobs::FakeClusters,
    /// The app's `HERD_ENCRYPTION_KEY`.
    pub seal_key: herd_fleet::seal::SealKey,
    /// The name server the app and its worker ask to prove custom domains (it answers
    /// with each server's proof unless set to `manual()`).
    pub dns: fake_dns::FakeDns,
    /// Stripe's API as the app is configured to reach it (a `FakeStripe`), which the
    /// worker uses too.
    pub stripe: Option<herd_billing::stripe_api::StripeApi>,
    /// The support desk's addresses (support@support.herd.test unless the test set
    /// others), which the worker signs reply emails with.
    pub support_replies: Option<herd_support::inbound::ReplyAddresses>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.outbox);
    }
}

impl TestApp {
    /// Starts the app on a migrated database (as `#[sqlx::test]` hands out) and seeds plans.
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, |_| {}).await
    }

    /// Like [`spawn`](Self::spawn), adjusting the configuration first.
    pub async fn spawn_with(pool: PgPool, adjust: impl FnOnce(&mut WebConfig)) -> Self {
        init_test_log();
        let mut tx = pool.begin().await.unwrap();
        herd_store::plans::seed_if_empty(&mut tx, &herd_domain::plan::default_catalogue())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // As `herd serve` does at start: invoices are issued by the configured issuer.
        let mut issuer = None;
        let app = Self::spawn_unseeded(pool.clone(), |c| {
            adjust(c);
            issuer = Some(c.invoice_issuer());
        })
        .await;
        herd_billing::invoicing::record_issuer(&pool, &issuer.unwrap())
            .await
            .unwrap();
        app
    }

    /// Starts the app without touching the database first.
    pub async fn spawn_unseeded(pool: PgPool, adjust: impl FnOnce(&mut WebConfig)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let outbox = std::env::temp_dir().join(format!(
            "herd-outbox-{}-{}",
            std::process::id(),
            addr.port()
        ));
        let _ = std::fs::remove_dir_all(&outbox);
        let mailer = Mailer::outbox(&outbox, "Herd <noreply@herd.test>").unwrap();
        let mut config = WebConfig::new(url::Url::parse(&base).unwrap());
        let seal_base64 = herd_fleet::seal::SealKey::generate_base64();
        let seal_key = herd_fleet::seal::SealKey::from_base64(&seal_base64).unwrap();
        config.seal_key = Some(seal_key.clone());
        // As `herd serve` derives them from HERD_SUPPORT_EMAIL and HERD_ENCRYPTION_KEY.
        config.support_replies = Some(
            herd_support::inbound::ReplyAddresses::new(
                "support@support.herd.test",
                seal_base64.as_bytes(),
            )
            .unwrap(),
        );
        let dns = fake_dns::FakeDns::start(pool.clone()).await;
        config.dns_server = Some(dns.addr);
        adjust(&mut config);
        let stripe = config
            .stripe_secret_key
            .as_ref()
            .map(|k| herd_billing::stripe_api::StripeApi::new(k, &config.stripe_api_base).unwrap());
        let support_replies = config.support_replies.clone();
        let state = AppState::new(pool.clone(), config, mailer.clone());
        let app = herd_web::app(state).into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            base,
            pool,
            outbox,
            mailer,
            clusters: jobs::FakeClusters::default(),
            seal_key,
            dns,
            stripe,
            support_replies,
            server,
        }
    }

    /// The worker's runner, as `herd serve` runs it, with the fake clusters plugged in
    /// and quick test settings.
    pub fn runner(&self) -> herd_jobs::Runner {
        herd_jobs::Runner::new(
            self.pool.clone(),
            jobs::registry_with_stripe(
                &self.pool,
                &self.mailer,
                &self.clusters,
                Some(self.seal_key.clone()),
                self.dns.addr,
                self.stripe.clone(),
                self.support_replies.as_ref(),
            ),
            jobs::fast_settings(),
        )
    }

    /// Runs the job queue until nothing is due; fails the test if a job is left failing.
    pub async fn run_jobs(&self) -> herd_jobs::Stats {
        jobs::drain_checked(&self.runner(), &self.pool).await
    }

    /// Reads every cluster's Instances back now, as the worker's sync does every 15 s
    /// (whose jobs are one per period, so a second `tick` within a period does not sync
    /// again), then runs what it queued.
    pub async fn sync_clusters(&self) {
        let o = herd_orchestrator::Orchestrator {
            pool: self.pool.clone(),
            clusters: std::sync::Arc::new(self.clusters.clone()),
            key: Some(self.seal_key.clone()),
            moderator_email: Some("moderation@provider.example".to_owned()),
        };
        for c in herd_store::fleet::clusters(&self.pool).await.unwrap() {
            herd_orchestrator::sync::sync_cluster(&o, c.id)
                .await
                .unwrap();
        }
        self.run_jobs().await;
    }

    /// Connects a cluster as an operator does: starts a fake cluster serving Instances,
    /// plugs it in as `name` (region eu-west, room for 10, operator namespace
    /// herd-system), registers it through the console with `op` (an operator's client),
    /// and runs the jobs that follow (its health check, placing waiting servers).
    pub async fn connect_cluster(&self, op: &Client, name: &str) -> fake_cluster::FakeCluster {
        let cluster =
            fake_cluster::start_with(|b| b.with_resource::<herd_k8s::crd::Instance>()).await;
        self.clusters.plug(name, cluster.client.clone());
        op.get("/operator/clusters/new").await.assert_status(200);
        op.post(
            "/operator/clusters",
            &[
                ("name", name),
                ("region", "eu-west"),
                ("capacity", "10"),
                ("operator_namespace", "herd-system"),
                ("kubeconfig", ""),
            ],
        )
        .await
        .assert_redirect("/operator/clusters");
        self.run_jobs().await;
        cluster
    }

    /// Makes the user with `email` a member of organization `org` with `role` (owner,
    /// admin, billing, member), as an accepted invitation does.
    pub async fn join(&self, org: &str, email: &str, role: &str) {
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role)
             SELECT o.id, u.id, $3 FROM organizations o, users u WHERE o.slug = $1 AND u.email = $2",
        )
        .bind(org)
        .bind(email)
        .bind(role)
        .execute(&self.pool)
        .await
        .unwrap();
    }

    /// A fresh client, like a new browser profile.
    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }

    /// Sends the queued account emails (confirmations, resets, invitations), as the
    /// worker beside `herd serve` does, and only those: other jobs wait for
    /// [`run_jobs`](Self::run_jobs). Fails the test if one is left failing.
    pub async fn send_queued_mail(&self) {
        let mut r = herd_jobs::Registry::new();
        herd_web::emails::register(&mut r, &self.pool, &self.mailer);
        let runner = herd_jobs::Runner::new(self.pool.clone(), r, jobs::fast_settings());
        runner.drain().await.expect("job queue");
        let failing = herd_jobs::admin::failing(&self.pool)
            .await
            .expect("job list");
        let mail: Vec<_> = failing
            .iter()
            .filter(|j| j.kind.starts_with("accounts."))
            .map(|j| (&j.kind, &j.last_error))
            .collect();
        assert!(mail.is_empty(), "account emails left failing: {mail:#?}");
    }

    /// Every email sent so far (after sending the queued account emails), oldest first.
    pub async fn mails(&self) -> Vec<OutboxMessage> {
        self.send_queued_mail().await;
        read_outbox(&self.outbox).unwrap_or_default()
    }

    /// The newest email to `to`; panics when there is none.
    pub async fn last_mail_to(&self, to: &str) -> OutboxMessage {
        let mails = self.mails().await;
        mails
            .iter()
            .rev()
            .find(|m| m.to.contains(to))
            .cloned()
            .unwrap_or_else(|| panic!("no email to {to}; outbox: {mails:?}"))
    }

    /// The path of the first link in the newest email to `to`.
    pub async fn link_in_last_mail_to(&self, to: &str) -> String {
        let mail = self.last_mail_to(to).await;
        let link = mail
            .first_link()
            .unwrap_or_else(|| panic!("no link in {mail:?}"));
        link.strip_prefix(&self.base).unwrap_or(link).to_owned()
    }

    /// Signs up (with an organization when `org` is given), confirms the email from the
    /// outbox and logs in. Returns the logged-in client.
    pub async fn signed_up(&self, name: &str, email: &str, org: Option<&str>) -> Client {
        let c = self.client();
        c.get("/signup").await.assert_status(200);
        c.post(
            "/signup",
            &[
                ("name", name),
                ("email", email),
                ("password", PASSWORD),
                ("org_name", org.unwrap_or("")),
            ],
        )
        .await
        .assert_status(200);
        let link = self.link_in_last_mail_to(email).await;
        c.get(&link).await.assert_status(200);
        c.post(&link, &[]).await.assert_status(200);
        c.get("/login").await.assert_status(200);
        let r = c
            .post("/login", &[("email", email), ("password", PASSWORD)])
            .await;
        assert_eq!(r.status, 303, "login failed: {}", r.body);
        c
    }
}

impl TestApp {
    /// An operator (the provider's staff) with two-factor authentication enrolled,
    /// logged in: the console is open to it.
    pub async fn operator(&self, email: &str) -> Client {
        let op = self.signed_up("Operator", email, None).await;
        sqlx::query("UPDATE users SET is_operator = true WHERE email = $1")
            .bind(email)
            .execute(&self.pool)
            .await
            .unwrap();
        op.get("/account/2fa").await;
        let r = op.post("/account/2fa/start", &[]).await;
        let secret = r.select_text("#totp-secret").pop().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let code = herd_web::totp::code_at(
            &herd_web::totp::base32_decode(&secret).unwrap(),
            herd_web::totp::step_of(now),
        );
        op.post(
            "/account/2fa/confirm",
            &[("code", &code), ("password", PASSWORD)],
        )
        .await
        .assert_status(200);
        op
    }
}

/// Runs a closure with the outbox's messages; handy for assertions on email content.
pub fn find_mail<'a>(
    mails: &'a [OutboxMessage],
    subject_contains: &str,
) -> Option<&'a OutboxMessage> {
    mails
        .iter()
        .rev()
        .find(|m| m.subject.contains(subject_contains))
}
