//! The `herd` binary as an operator runs it: help texts, `serve` migrating and seeding an
//! empty database, JSON logs carrying the request id, and `admin create-operator`.
#![expect(clippy::unwrap_used, reason = "tests")]

use sqlx::PgPool;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HERD: &str = env!("CARGO_BIN_EXE_herd");

fn help(args: &[&str]) -> String {
    let out = Command::new(HERD)
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_explains_every_command_and_its_environment() {
    let top = help(&[]);
    for cmd in [
        "serve", "migrate", "worker", "admin", "crd", "render", "operator",
    ] {
        assert!(top.contains(cmd), "{top}");
    }
    let serve = help(&["serve"]);
    for env in [
        "DATABASE_URL",
        "HERD_LISTEN",
        "HERD_PUBLIC_URL",
        "HERD_NO_MIGRATE",
        "HERD_SMTP_URL",
        "HERD_MAIL_OUTBOX",
        "HERD_MAIL_FROM",
        "HERD_TRUST_PROXY",
        "HERD_LOG_FORMAT",
        "HERD_DB_MAX_CONNECTIONS",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_SECRET_KEY",
        "STRIPE_API_BASE",
        "HERD_NO_WORKER",
    ] {
        assert!(serve.contains(env), "serve --help lacks {env}:\n{serve}");
    }
    assert!(
        serve.contains("127.0.0.1:8080"),
        "default listen address shown"
    );
    let operator = help(&["operator"]);
    for env in [
        "HERD_OPERATOR_NAMESPACE",
        "HERD_OPERATOR_LISTEN",
        "POD_NAME",
        "HERD_LEASE_SECONDS",
        "HERD_INGRESS_CLASS",
        "HERD_INGRESS_NAMESPACE",
        "HERD_CLUSTER_ISSUER",
        "HERD_BACKUP_S3_BUCKET",
        "HERD_BACKUP_S3_ENDPOINT",
        "HERD_BACKUP_S3_PREFIX",
        "HERD_BACKUP_SECRET",
    ] {
        assert!(
            operator.contains(env),
            "operator --help lacks {env}:\n{operator}"
        );
    }
    let admin = help(&["admin", "create-operator"]);
    assert!(
        admin.contains("--email") && admin.contains("two-factor"),
        "{admin}"
    );
}

/// The README and `--help` name the same settings: every variable of the README's
/// configuration tables is read by a command, and every variable a command reads is in the
/// README (tables or the operator's paragraph).
#[test]
fn the_readme_and_help_name_the_same_settings() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let helps: String = [
        &["serve"][..],
        &["worker"],
        &["operator"],
        &["migrate"],
        &["render"],
        &["admin", "create-operator"],
    ]
    .iter()
    .map(|args| help(args))
    .collect();
    let in_tables: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|v| v.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(in_tables.len() > 10, "the README's tables were not found");
    for v in &in_tables {
        assert!(
            helps.contains(v),
            "the README lists {v}, which no command's --help names"
        );
    }
    for v in helps.split("[env: ").skip(1) {
        let v: String = v
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        assert!(
            readme.contains(&v),
            "--help reads {v}, which the README does not name"
        );
    }
}

/// `herd operator` refuses a half-configured backup target, and says how to reach a
/// cluster when it cannot, instead of starting without one.
#[test]
fn operator_explains_what_it_is_missing() {
    let out = Command::new(HERD)
        .arg("operator")
        .env("HERD_BACKUP_S3_BUCKET", "backups")
        .env_remove("HERD_BACKUP_S3_ENDPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HERD_BACKUP_S3_ENDPOINT"), "{err}");

    let out = Command::new(HERD)
        .arg("operator")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("HERD_BACKUP_S3_BUCKET")
        .env("HERD_OPERATOR_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to Kubernetes"), "{err}");
}

/// The URL of the database `#[sqlx::test]` made for this test.
fn url_of(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let db = pool.connect_options().get_database().unwrap().to_owned();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{db}")
}

#[sqlx::test(migrations = false)]
async fn serve_migrates_seeds_and_logs_json_with_request_ids(pool: PgPool) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let outbox = std::env::temp_dir().join(format!("herd-bin-outbox-{port}"));
    let mut child = Command::new(HERD)
        .arg("serve")
        .env("DATABASE_URL", url_of(&pool))
        .env("HERD_LISTEN", format!("127.0.0.1:{port}"))
        .env("HERD_LOG_FORMAT", "json")
        .env("HERD_MAIL_OUTBOX", &outbox)
        .env_remove("RUST_LOG")
        .env_remove("HERD_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });

    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await {
            break r;
        }
        assert!(Instant::now() < deadline, "herd serve did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ready.status(), 200);
    let plans: i64 = sqlx::query_scalar("SELECT count(*) FROM plans")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(plans, 3, "an empty database gets the plan catalogue");
    let pricing = reqwest::get(format!("{base}/pricing")).await.unwrap();
    let request_id = pricing
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(pricing.text().await.unwrap().contains("Organization"));

    // Every log line is JSON; the request's lines carry its id.
    let mut seen = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            if v.pointer("/span/request_id").and_then(|x| x.as_str()) == Some(request_id.as_str()) {
                seen = true;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&outbox);
    assert!(seen, "no log line carried request id {request_id}");
}

#[sqlx::test(migrations = false)]
async fn create_operator_prints_a_one_time_password(pool: PgPool) {
    let url = url_of(&pool);
    let out = Command::new(HERD)
        .args([
            "admin",
            "create-operator",
            "--email",
            "Ops@Provider.example",
        ])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("One-time password: "))
        .unwrap();
    assert_eq!(password.len(), 20);
    let (is_op, verified, must_change): (bool, bool, bool) =
        sqlx::query_as("SELECT is_operator, email_verified_at IS NOT NULL, password_must_change FROM users WHERE email = 'ops@provider.example'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(is_op && verified && must_change);
    let audit: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'operator.created'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audit, 1);
    // The password is not stored in clear.
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(password));

    // A second operator with the same email is refused clearly.
    let again = Command::new(HERD)
        .args([
            "admin",
            "create-operator",
            "--email",
            "ops@provider.example",
        ])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // A bad email is refused before touching the database.
    let bad = Command::new(HERD)
        .args(["admin", "create-operator", "--email", "nope"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[sqlx::test(migrations = false)]
async fn set_operator_grants_and_takes_managing_operators(pool: PgPool) {
    let url = url_of(&pool);
    let herd = |args: &[&str]| {
        Command::new(HERD)
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    for email in ["first@provider.example", "second@provider.example"] {
        assert!(herd(&["admin", "create-operator", "--email", email])
            .status
            .success());
    }
    let manages = |email: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT manages_operators FROM users WHERE email = $1")
                .bind(email)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(!manages("second@provider.example").await);
    let out = herd(&[
        "admin",
        "set-operator",
        "Second@Provider.example",
        "--manages-operators",
        "true",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(manages("second@provider.example").await);
    // Not from the last one who manages operators (the console's rule too).
    let out = herd(&[
        "admin",
        "set-operator",
        "second@provider.example",
        "--manages-operators",
        "false",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("last one who manages operators"));
    assert!(manages("second@provider.example").await);
    assert!(herd(&[
        "admin",
        "set-operator",
        "first@provider.example",
        "--manages-operators",
        "true"
    ])
    .status
    .success());
    let out = herd(&[
        "admin",
        "set-operator",
        "second@provider.example",
        "--manages-operators",
        "false",
    ]);
    assert!(out.status.success());
    assert!(!manages("second@provider.example").await);
    let audit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'operator.changed' AND target = 'second@provider.example'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audit, 2);
    // An unknown email is refused, and nothing is audited.
    let unknown = herd(&[
        "admin",
        "set-operator",
        "nobody@provider.example",
        "--manages-operators",
        "true",
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no operator"));
    let audit: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'operator.changed'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audit, 3);
}

#[test]
fn crd_prints_the_committed_definition() {
    let out = Command::new(HERD).arg("crd").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crd/instances.herd.dev.yaml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn render_prints_a_tenant_offline_and_refuses_unknown_plans() {
    let out = Command::new(HERD)
        .args([
            "render",
            "--app",
            "mastodon",
            "--domain",
            "social.example.org",
            "--plan",
            "organization",
            "--version",
            "v4.7.6",
            "--media-shared-storage-class",
            "cephfs",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<&str> = yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    assert!(docs.len() >= 20, "{} documents", docs.len());
    assert!(
        docs[0].contains("kind: Namespace") && docs[0].contains("name: herd-social-example-org")
    );
    assert!(yaml.contains("image: ghcr.io/mastodon/mastodon:v4.7.6"));
    assert!(
        yaml.contains("kind: PodDisruptionBudget"),
        "the organization plan runs two web replicas"
    );

    assert!(yaml.contains("storageClassName: cephfs"));
    // Two web pods and media on a volume, without shared storage: refused, saying why.
    let unshared = Command::new(HERD)
        .args([
            "render",
            "--domain",
            "social.example.org",
            "--plan",
            "organization",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!unshared.status.success());
    let why = String::from_utf8_lossy(&unshared.stderr);
    assert!(why.contains("HERD_MEDIA_SHARED_STORAGE_CLASS"), "{why}");

    let bad = Command::new(HERD)
        .args(["render", "--domain", "social.example.org", "--plan", "nope"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr)
        .contains("known: community, organization, institution"));
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/readyz")).await.is_err() {
        assert!(Instant::now() < deadline, "herd serve did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts a signed `customer.subscription.created` event for `sub` to the web server at
/// `base`, as Stripe delivers it; returns the answer's status.
async fn deliver_subscription_created(
    base: &str,
    secret: &str,
    event_id: &str,
    sub: &str,
    customer: &str,
) -> u16 {
    let event = herd_testkit::stripe::event(
        event_id,
        "customer.subscription.created",
        herd_testkit::stripe::now(),
        herd_testkit::stripe::subscription(
            sub,
            customer,
            "active",
            "price_none",
            herd_testkit::stripe::now() + 86_400,
            serde_json::json!({}),
        ),
    )
    .to_string();
    let signature =
        herd_testkit::stripe::signature(secret, herd_testkit::stripe::now(), event.as_bytes());
    reqwest::Client::new()
        .post(format!("{base}/webhooks/stripe"))
        .header("stripe-signature", signature)
        .body(event)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The process is killed after it acknowledged a Stripe event and before anything processed
/// it; after a restart the event is processed, once.
#[sqlx::test(migrations = false)]
async fn an_acknowledged_event_survives_a_crash_and_is_processed_once(pool: PgPool) {
    let secret = "whsec_binary_test";
    let port = free_port();
    let outbox = std::env::temp_dir().join(format!("herd-bin-outbox-{port}"));
    let serve = |no_worker: bool| {
        Command::new(HERD)
            .arg("serve")
            .env("DATABASE_URL", url_of(&pool))
            .env("HERD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERD_MAIL_OUTBOX", &outbox)
            .env("STRIPE_WEBHOOK_SECRET", format!("whsec_previous,{secret}"))
            .env("HERD_NO_WORKER", no_worker.to_string())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // First run: the web server only, so nothing processes the event.
    let mut first = serve(true);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    assert_eq!(
        deliver_subscription_created(&base, secret, "evt_crash_test", "sub_Crash", "cus_Crash")
            .await,
        200
    );
    first.kill().unwrap(); // SIGKILL: no shutdown of any kind
    first.wait().unwrap();
    let state: String =
        sqlx::query_scalar("SELECT state FROM stripe_events WHERE id = 'evt_crash_test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "pending", "acknowledged and stored, not processed");

    // Restart, this time with the worker.
    let mut second = serve(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state: String =
            sqlx::query_scalar("SELECT state FROM stripe_events WHERE id = 'evt_crash_test'")
                .fetch_one(&pool)
                .await
                .unwrap();
        if state == "processed" {
            break;
        }
        assert!(Instant::now() < deadline, "not processed after restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give a second worker pass the chance to run it again: it must not.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let (job_state, attempts): (String, i32) =
        sqlx::query_as("SELECT state, attempts FROM jobs WHERE dedupe_key = 'evt_crash_test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((job_state.as_str(), attempts), ("done", 1));
    let subscriptions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM subscriptions WHERE stripe_subscription_id = 'sub_Crash' AND status = 'active'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(subscriptions, 1);
    let _ = std::fs::remove_dir_all(&outbox);
}

/// A worker killed with SIGKILL in the middle of a job: its lease runs out, another worker
/// takes the job again within 30 seconds, and its effect is applied once.
#[sqlx::test(migrations = false)]
async fn a_job_of_a_killed_worker_restarts_within_30_seconds_and_applies_once(pool: PgPool) {
    let secret = "whsec_kill_test";
    let port = free_port();
    let outbox = std::env::temp_dir().join(format!("herd-bin-outbox-{port}"));
    // The web server, without a worker: it migrates and stores the event.
    let mut web = Command::new(HERD)
        .arg("serve")
        .env("DATABASE_URL", url_of(&pool))
        .env("HERD_LISTEN", format!("127.0.0.1:{port}"))
        .env("HERD_MAIL_OUTBOX", &outbox)
        .env("STRIPE_WEBHOOK_SECRET", secret)
        .env("HERD_NO_WORKER", "1")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    let worker = || {
        Command::new(HERD)
            .arg("worker")
            .env("DATABASE_URL", url_of(&pool))
            .env("HERD_MAIL_OUTBOX", &outbox)
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    // The event's processing takes the subscription's lock first; the test holds it, so
    // the first worker's run stops in the middle of the job.
    let mut held = pool.begin().await.unwrap();
    herd_store::lock_key(&mut held, "subscription:sub_Killed")
        .await
        .unwrap();
    assert_eq!(
        deliver_subscription_created(&base, secret, "evt_kill_test", "sub_Killed", "cus_Killed")
            .await,
        200
    );

    let job = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, i32)>(
            "SELECT state, attempts FROM jobs WHERE dedupe_key = 'evt_kill_test'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let mut first = worker();
    let deadline = Instant::now() + Duration::from_secs(30);
    while job(pool.clone()).await != ("running".to_owned(), 1) {
        assert!(
            Instant::now() < deadline,
            "the first worker never took the job"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It is inside the job, waiting for the lock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(job(pool.clone()).await, ("running".to_owned(), 1));
    first.kill().unwrap(); // SIGKILL: no shutdown, the lease is not given back
    first.wait().unwrap();
    let killed_at = Instant::now();
    let mut second = worker();
    held.rollback().await.unwrap();

    loop {
        let (state, attempts) = job(pool.clone()).await;
        if state == "done" {
            assert_eq!(attempts, 2, "taken again once, after the lease ran out");
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "the killed worker's job was not done within 30 s (state {state}, attempts {attempts})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    second.kill().unwrap();
    second.wait().unwrap();
    web.kill().unwrap();
    web.wait().unwrap();
    let state: String =
        sqlx::query_scalar("SELECT state FROM stripe_events WHERE id = 'evt_kill_test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "processed");
    let subscriptions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM subscriptions WHERE stripe_subscription_id = 'sub_Killed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(subscriptions, 1, "the effect is applied once");
    let _ = std::fs::remove_dir_all(&outbox);
}

/// The workspace's declared `rust-version` is at least what every dependency declares, so
/// the minimum Rust the README promises really builds Herd.
#[test]
fn the_declared_rust_version_covers_every_dependency() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = |v: &str| -> Vec<u64> {
        let mut parts: Vec<u64> = v.split('.').map(|p| p.parse().unwrap()).collect();
        parts.resize(3, 0);
        parts
    };
    let in_graph: std::collections::HashSet<&str> = m["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let herd = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "herd")
        .unwrap();
    let declared = version(herd["rust_version"].as_str().unwrap());
    let mut checked = 0;
    for p in m["packages"].as_array().unwrap() {
        if !in_graph.contains(p["id"].as_str().unwrap()) {
            continue;
        }
        if let Some(needs) = p["rust_version"].as_str() {
            assert!(
                version(needs) <= declared,
                "{} {} needs Rust {needs}; the workspace declares {declared:?}",
                p["name"],
                p["version"]
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} packages declare a rust-version");
}

/// A scratch directory for `herd import prepare`, removed at the end.
struct ImportDir(std::path::PathBuf);

impl ImportDir {
    fn new(tag: &str) -> ImportDir {
        let p = std::env::temp_dir().join(format!("herd-import-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        ImportDir(p)
    }

    /// A file in custom format's shape with Mastodon's tables in its table of contents.
    fn dump(&self) -> std::path::PathBuf {
        let f = self.0.join("database.dump");
        std::fs::write(
            &f,
            b"PGDMP\x01\x0e\x00\nCREATE TABLE public.accounts (\n id bigint\n);\nCREATE TABLE public.statuses (\n id bigint\n);\n\x00\xff data",
        )
        .unwrap();
        f
    }
}

impl Drop for ImportDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn import_prepare(args: &[&str]) -> std::process::Output {
    Command::new(HERD)
        .args(["import", "prepare"])
        .args(args)
        .env_remove("HERD_BACKUP_S3_BUCKET")
        .env_remove("HERD_BACKUP_S3_PREFIX")
        .output()
        .unwrap()
}

#[test]
fn import_prepare_explains_itself() {
    assert!(help(&[]).contains("import"));
    let h = help(&["import", "prepare"]);
    for word in [
        "--dump",
        "--media",
        "--domain",
        "--version",
        "--export",
        "--out",
        "--id",
        "LOCAL_DOMAIN",
        "public/system",
        "pg_dump -Fc",
        "imports/<id>/",
        "HERD_BACKUP_S3_BUCKET",
        "secrets",
    ] {
        assert!(h.contains(word), "import prepare --help lacks {word}:\n{h}");
    }
}

#[test]
fn import_prepare_refuses_bad_input_and_writes_nothing() {
    let d = ImportDir::new("bad");
    let dump = d.dump();
    let dump = dump.to_str().unwrap();
    let text = d.0.join("notes.txt");
    std::fs::write(&text, "hello\n").unwrap();
    let text = text.to_str().unwrap();
    let out = d.0.join("out");
    let out_s = out.to_str().unwrap();
    let missing = d.0.join("missing.dump");
    let missing = missing.to_str().unwrap();
    let empty = d.0.join("empty-export");
    std::fs::create_dir_all(&empty).unwrap();
    let plain = d.0.join("mastodon.sql");
    std::fs::write(
        &plain,
        "--\n-- PostgreSQL database dump\n--\nCREATE TABLE public.accounts (\n id bigint\n);\nCREATE TABLE public.statuses (\n id bigint\n);\nSELECT 1; \\! echo x\n",
    )
    .unwrap();
    let plain = plain.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "--dump",
                plain,
                "--domain",
                "social.example.org",
                "--out",
                out_s,
            ],
            "is a plain SQL dump, which Herd does not import",
        ),
        (vec!["--out", out_s], "give either --dump"),
        (
            vec![
                "--dump",
                missing,
                "--domain",
                "social.example.org",
                "--out",
                out_s,
            ],
            "missing.dump",
        ),
        (
            vec![
                "--dump",
                text,
                "--domain",
                "social.example.org",
                "--out",
                out_s,
            ],
            "is not a PostgreSQL dump",
        ),
        (
            vec!["--dump", dump, "--domain", "localhost", "--out", out_s],
            "is not a domain name",
        ),
        (vec!["--dump", dump, "--out", out_s], "--domain is required"),
        (
            vec![
                "--dump",
                dump,
                "--domain",
                "social.example.org",
                "--version",
                "latest",
                "--out",
                out_s,
            ],
            "is not a Mastodon version",
        ),
        (
            vec![
                "--dump",
                dump,
                "--domain",
                "social.example.org",
                "--media",
                text,
                "--out",
                out_s,
            ],
            "is not a directory",
        ),
        (
            vec![
                "--dump",
                dump,
                "--domain",
                "social.example.org",
                "--id",
                "Bad_Id",
                "--out",
                out_s,
            ],
            "cannot name an import",
        ),
        (
            vec!["--export", empty.to_str().unwrap(), "--out", out_s],
            "no manifest.txt",
        ),
        (
            vec![
                "--export",
                empty.to_str().unwrap(),
                "--dump",
                dump,
                "--out",
                out_s,
            ],
            "cannot be used with",
        ),
    ] {
        let o = import_prepare(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {out_s}");
    }
    // An existing directory is never written into.
    std::fs::create_dir_all(&out).unwrap();
    let o = import_prepare(&[
        "--dump",
        dump,
        "--domain",
        "social.example.org",
        "--out",
        out_s,
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists already"));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
}

#[test]
fn import_prepare_writes_a_directory_whose_manifest_verifies() {
    let d = ImportDir::new("ok");
    let dump = d.dump();
    let media = d.0.join("system");
    std::fs::create_dir_all(media.join("media_attachments/files/1")).unwrap();
    std::fs::write(media.join("media_attachments/files/1/a.png"), b"png").unwrap();
    let out = d.0.join("prepared");
    let o = import_prepare(&[
        "--dump",
        dump.to_str().unwrap(),
        "--media",
        media.to_str().unwrap(),
        "--domain",
        "social.example.org",
        "--version",
        "v4.3.2",
        "--id",
        "lyon-1",
        "--bucket",
        "herd-backups",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sum = |dir: &std::path::Path| {
        let s = Command::new("sha256sum")
            .arg("manifest.txt")
            .current_dir(dir)
            .output()
            .unwrap();
        String::from_utf8(s.stdout).unwrap()[..64].to_owned()
    };
    let sha = sum(&out);
    assert!(
        stdout.contains(&format!("manifest.txt SHA-256: {sha}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("s3://herd-backups/final/imports/lyon-1/"),
        "{stdout}"
    );
    let check = Command::new("sha256sum")
        .args(["-c", "manifest.txt"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for n in ["manifest.txt", "database.dump.000", "media.tar.000"] {
        assert!(names.contains(&n.to_owned()), "{names:?}");
    }
    let manifest = std::fs::read_to_string(out.join("manifest.txt")).unwrap();
    for line in [
        "# tenant: - (social.example.org), mastodon v4.3.2",
        "# app mastodon",
        "# domain social.example.org",
        "# version v4.3.2",
    ] {
        assert!(manifest.lines().any(|l| l == line), "{line}: {manifest}");
    }

    // Taken again as an export: checked, and its manifest kept byte for byte.
    let again = d.0.join("again");
    let o = import_prepare(&[
        "--export",
        out.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sum(&again), sha);
    // One byte changed in a piece: refused, nothing written.
    let piece = out.join("media.tar.000");
    let mut bytes = std::fs::read(&piece).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&piece, &bytes).unwrap();
    let third = d.0.join("third");
    let o = import_prepare(&[
        "--export",
        out.to_str().unwrap(),
        "--out",
        third.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("media.tar.000 does not match its SHA-256 in the manifest"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!third.exists());
}

/// tar's warnings are read while its archive is: many of them (more than a pipe holds)
/// do not stop `herd import prepare`.
#[test]
fn import_prepare_is_not_stopped_by_many_tar_warnings() {
    let d = ImportDir::new("warnings");
    let dump = d.dump();
    let media = d.0.join("system");
    std::fs::create_dir_all(media.join("media_attachments")).unwrap();
    std::fs::write(media.join("media_attachments/a.png"), b"png").unwrap();
    // A tar that warns a lot (1 MiB on its standard error) before archiving.
    let bin = d.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v tar"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fake = bin.join("tar");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nhead -c 1048576 /dev/zero | tr '\\0' w >&2\nexec {} \"$@\"\n",
            real.trim()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let out = d.0.join("prepared");
    let mut child = Command::new(HERD)
        .args(["import", "prepare", "--dump"])
        .arg(&dump)
        .arg("--media")
        .arg(&media)
        .args(["--domain", "social.example.org", "--out"])
        .arg(&out)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("herd import prepare hung on tar's warnings");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(out.join("media.tar.000").is_file());
}
