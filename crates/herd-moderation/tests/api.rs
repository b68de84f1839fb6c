//! Managed moderation against a fake of Mastodon's admin API over real HTTP and a real
//! PostgreSQL: fetching every page, acting, escalating, retries after server errors and
//! rate limits without ever sending an action twice, a vanished report, a revoked token,
//! who may act, the monthly report, and the token kept out of the logs.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::moderation::Policy;
use herd_domain::{OrgId, UserId};
use herd_fleet::seal::SealKey;
use herd_moderation::decide::{self, DecisionForm};
use herd_moderation::{connections, policy, views, ModerationError, Who};
use herd_testkit::fake_mastodon::{Failure, FakeMastodon, ADMIN_SCOPES};
use herd_testkit::jobs::{fast_settings, registry_with, FakeClusters};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::time::Duration;
use uuid::Uuid;

const TOKEN: &str = "tok_moderator_SECRET_1234567890";

struct World {
    pool: PgPool,
    key: SealKey,
    fake: FakeMastodon,
    org: Uuid,
    instance: Uuid,
    owner: Uuid,
    moderator: Uuid,
    runner: herd_jobs::Runner,
    registry: herd_jobs::Registry,
    outbox: std::path::PathBuf,
    /// Accounts on the fake server: the reporter and the reported.
    reporter: String,
    troll: String,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.outbox);
    }
}

async fn user(pool: &PgPool, email: &str, operator: bool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, display_name, password_hash, is_operator) VALUES ($1, $2, $3, 'x', $4)")
        .bind(id)
        .bind(email)
        .bind(email.split('@').next().unwrap())
        .bind(operator)
        .execute(pool)
        .await
        .unwrap();
    id
}

fn who(id: Uuid, name: &'static str) -> Who<'static> {
    Who {
        id: UserId(id),
        name,
        email: "someone@example.test",
        ip: "127.0.0.1",
    }
}

/// Lyon's server on the institution plan (20 moderation hours), its API at the fake, its
/// owner Olga, admin Adam and member Max; Mia an operator with the moderator role; the
/// token connected by Olga.
async fn world(pool: PgPool) -> World {
    herd_testkit::init_test_log();
    let mut tx = pool.begin().await.unwrap();
    herd_store::plans::seed_if_empty(&mut tx, &herd_domain::plan::default_catalogue())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let fake = FakeMastodon::start().await;
    fake.add_token(TOKEN, ADMIN_SCOPES);
    let reporter = fake.add_account("alice");
    let troll = fake.add_account("troll");
    let org = Uuid::now_v7();
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, 'lyon', 'Lyon')")
        .bind(org)
        .execute(&pool)
        .await
        .unwrap();
    let owner = user(&pool, "olga@lyon.example", false).await;
    let admin = user(&pool, "adam@lyon.example", false).await;
    let member = user(&pool, "max@lyon.example", false).await;
    for (u, role) in [(owner, "owner"), (admin, "admin"), (member, "member")] {
        sqlx::query("INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3)")
            .bind(org)
            .bind(u)
            .bind(role)
            .execute(&pool)
            .await
            .unwrap();
    }
    let moderator = user(&pool, "mia@herd.test", true).await;
    sqlx::query("INSERT INTO operator_moderators (user_id) VALUES ($1)")
        .bind(moderator)
        .execute(&pool)
        .await
        .unwrap();
    let instance = Uuid::now_v7();
    sqlx::query("INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email, url) VALUES ($1, $2, 'mastodon', 'v4.7.6', 'institution', 'lyon-social', 'lyon.social', 'olga', 'olga@lyon.example', $3)")
        .bind(instance)
        .bind(org)
        .bind(&fake.base)
        .execute(&pool)
        .await
        .unwrap();
    let key = SealKey::from_base64(&SealKey::generate_base64()).unwrap();
    let outbox = std::env::temp_dir().join(format!("herd-moderation-{instance}"));
    let mailer = herd_mail::Mailer::outbox(&outbox, "Herd <noreply@herd.test>").unwrap();
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 9));
    let registry = registry_with(
        &pool,
        &mailer,
        &FakeClusters::default(),
        Some(key.clone()),
        nowhere,
    );
    let runner = herd_jobs::Runner::new(pool.clone(), registry.clone(), fast_settings());
    connections::connect(
        &pool,
        Some(&key),
        who(owner, "Olga"),
        OrgId(org),
        instance,
        ("herdmod", TOKEN),
        "https://herd.test",
    )
    .await
    .unwrap();
    World {
        pool,
        key,
        fake,
        org,
        instance,
        owner,
        moderator,
        runner,
        registry,
        outbox,
        reporter,
        troll,
    }
}

impl World {
    /// Runs the queue until nothing is due or waiting for a retry (retries are a few
    /// milliseconds apart in tests); fails when a job is left failing.
    async fn settle(&self) {
        for _ in 0..200 {
            self.runner.drain().await.unwrap();
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            if waiting == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failing = herd_jobs::admin::failing(&self.pool).await.unwrap();
        assert!(
            failing.is_empty(),
            "jobs left failing: {:?}",
            failing
                .iter()
                .map(|j| (&j.kind, &j.last_error))
                .collect::<Vec<_>>()
        );
    }

    /// A runner whose retries wait an hour: one failed run stays failed to look at.
    fn slow_runner(&self) -> herd_jobs::Runner {
        let settings = herd_jobs::Settings {
            retry_base: Duration::from_secs(3600),
            ..fast_settings()
        };
        herd_jobs::Runner::new(self.pool.clone(), self.registry.clone(), settings)
    }

    /// Makes the jobs waiting for a retry due now.
    async fn retries_due(&self) {
        sqlx::query("UPDATE jobs SET run_at = now() WHERE state = 'queued' AND attempts > 0")
            .execute(&self.pool)
            .await
            .unwrap();
    }

    async fn fetch_now(&self) {
        let mut conn = self.pool.acquire().await.unwrap();
        herd_moderation::jobs::enqueue_fetch_now(&mut *conn, self.instance)
            .await
            .unwrap();
    }

    async fn report_id(&self, remote: &str) -> Uuid {
        sqlx::query_scalar("SELECT id FROM moderation_reports WHERE remote_id = $1")
            .bind(remote)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn state(&self, remote: &str) -> String {
        sqlx::query_scalar("SELECT state FROM moderation_reports WHERE remote_id = $1")
            .bind(remote)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn decide(
        &self,
        report: Uuid,
        decision: &str,
        note: &str,
    ) -> Result<Uuid, ModerationError> {
        decide::decide(
            &self.pool,
            who(self.moderator, "Mia"),
            report,
            &DecisionForm {
                decision: decision.into(),
                note: note.into(),
                notify_user: false,
                minutes: "12".into(),
            },
            "https://herd.test",
        )
        .await
    }

    async fn outbox_row(&self, decision: Uuid) -> (String, i32, bool, Option<String>) {
        sqlx::query_as(
            "SELECT state, attempts, confirmed_by_reread, last_error FROM moderation_outbox WHERE decision_id = $1",
        )
        .bind(decision)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn fetches_every_page_and_keeps_the_reports_while_the_server_is_down(pool: PgPool) {
    let w = world(pool).await;
    w.fake.set_max_limit(2);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(w.fake.add_report(
            &w.reporter,
            &w.troll,
            if n == 0 { "violation" } else { "spam" },
            &format!("comment {n}"),
            Duration::from_secs(3600 * (n + 1)),
        ));
    }
    w.settle().await; // the fetch queued by connecting
    let pages: Vec<String> = w
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/admin/reports?"))
        .collect();
    assert_eq!(pages.len(), 3, "three pages of two: {pages:?}");
    assert!(pages[1].contains("max_id="), "{pages:?}");
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM moderation_reports WHERE state = 'open'")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(count, 5);
    let (category, comment, target, rules, statuses, due_hours): (String, String, String, serde_json::Value, serde_json::Value, f64) =
        sqlx::query_as("SELECT category, comment, target_acct, rules, statuses, extract(epoch FROM due_at - reported_at)::float8 / 3600 FROM moderation_reports WHERE remote_id = $1")
            .bind(&ids[0])
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(
        (category.as_str(), comment.as_str(), target.as_str()),
        ("violation", "comment 0", "troll")
    );
    assert_eq!(rules[0]["text"], "No harassment.");
    assert!(statuses[0]["content"]
        .as_str()
        .unwrap()
        .contains("Reported post"));
    assert_eq!(due_hours, 24.0, "due after the plan's response target");

    // The server fails for a while: the fetch is retried, and the reports stay.
    w.fake
        .fail_next(&[Failure::Status(502), Failure::Status(503)]);
    w.fetch_now().await;
    w.settle().await;
    let error: Option<String> =
        sqlx::query_scalar("SELECT last_fetch_error FROM moderation_connections")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(error, None, "the retry worked");
    let after: Vec<String> = w
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/admin/reports?"))
        .collect();
    assert_eq!(
        after.len(),
        3 + 2 + 3,
        "two failed calls, then three pages: {after:?}"
    );
    let queue = views::queue(
        &w.pool,
        UserId(w.moderator),
        &Default::default(),
        herd_store::Page::new(None, None),
    )
    .await
    .unwrap();
    assert_eq!(queue.reports.items.len(), 5);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_action_whose_answer_was_lost_is_not_sent_again(pool: PgPool) {
    let w = world(pool).await;
    let remote = w.fake.add_report(
        &w.reporter,
        &w.troll,
        "spam",
        "buy pills",
        Duration::from_secs(60),
    );
    w.settle().await;
    let report = w.report_id(&remote).await;
    // The server applies the suspension, then fails to answer.
    w.fake.fail_next(&[Failure::ApplyThen500]);
    let d = w.decide(report, "suspend", "Spam account.").await.unwrap();
    assert_eq!(w.state(&remote).await, "resolved");
    w.settle().await;
    let sent = w.fake.applied("/action");
    assert_eq!(sent.len(), 1, "sent exactly once: {sent:?}");
    assert_eq!(
        sent[0].form.get("type").map(String::as_str),
        Some("suspend")
    );
    assert_eq!(sent[0].form.get("report_id"), Some(&remote));
    assert!(w.fake.flags(&w.troll).0, "suspended");
    let (state, attempts, reread, error) = w.outbox_row(d).await;
    assert_eq!(
        (state.as_str(), attempts, reread, error),
        ("sent", 2, true, None)
    );
    // Every call that reached the action endpoint, applied or not: one.
    assert_eq!(
        w.fake
            .received()
            .iter()
            .filter(|r| r.path.ends_with("/action"))
            .count(),
        1
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn server_errors_and_rate_limits_are_retried_and_shown(pool: PgPool) {
    let w = world(pool).await;
    let remote = w.fake.add_report(
        &w.reporter,
        &w.troll,
        "other",
        "rude",
        Duration::from_secs(60),
    );
    w.settle().await;
    let report = w.report_id(&remote).await;
    w.fake.fail_next(&[Failure::Status(500)]);
    let d = w.decide(report, "silence", "").await.unwrap();
    // One run: the failure is recorded and shown, the job waits for its retry.
    w.slow_runner().drain().await.unwrap();
    let (state, _, _, error) = w.outbox_row(d).await;
    assert_eq!(state, "pending");
    assert!(error.unwrap().contains("500"));
    let unsent = herd_store::moderation::unsent(&w.pool).await.unwrap();
    assert_eq!(unsent.len(), 1, "shown among the actions not applied");
    // Then a rate limit: waited out until the time the server gave.
    w.fake.fail_next(&[Failure::RateLimited { secs: 1 }]);
    w.retries_due().await;
    w.runner.drain().await.unwrap();
    let (state, _, _, error) = w.outbox_row(d).await;
    assert_eq!(
        (state.as_str(), error.as_deref()),
        ("pending", Some("rate limited by the server"))
    );
    let not_before: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT not_before FROM moderation_outbox WHERE decision_id = $1")
            .bind(d)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert!(not_before.unwrap() > time::OffsetDateTime::now_utc());
    assert!(w.fake.applied("/action").is_empty(), "nothing applied yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.settle().await;
    assert_eq!(w.fake.applied("/action").len(), 1);
    assert_eq!(w.outbox_row(d).await.0, "sent");
    assert!(w.fake.flags(&w.troll).1, "silenced");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_vanished_report_is_recorded(pool: PgPool) {
    let w = world(pool).await;
    let gone = w
        .fake
        .add_report(&w.reporter, &w.troll, "spam", "a", Duration::from_secs(60));
    let other = w
        .fake
        .add_report(&w.reporter, &w.troll, "spam", "b", Duration::from_secs(60));
    w.settle().await;
    // Deleted on the server: the next fetch looks it up and records it gone.
    w.fake.remove_report(&gone);
    w.fetch_now().await;
    w.settle().await;
    assert_eq!(w.state(&gone).await, "vanished");
    assert_eq!(w.state(&other).await, "open");
    // Gone between the decision and its sending: recorded, the action failed and shown.
    let report = w.report_id(&other).await;
    let d = w.decide(report, "resolve", "").await.unwrap();
    w.fake.remove_report(&other);
    w.settle().await;
    let (state, _, _, error) = w.outbox_row(d).await;
    assert_eq!(state, "failed");
    assert!(error.unwrap().contains("gone"));
    assert_eq!(w.state(&other).await, "vanished");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_revoked_token_breaks_the_connection_until_a_new_one(pool: PgPool) {
    let w = world(pool).await;
    let remote = w
        .fake
        .add_report(&w.reporter, &w.troll, "spam", "a", Duration::from_secs(60));
    w.settle().await;
    let report = w.report_id(&remote).await;
    let d = w.decide(report, "disable", "").await.unwrap();
    w.fake.revoke_token(TOKEN);
    w.settle().await;
    let (state, _, _, error) = w.outbox_row(d).await;
    assert_eq!(state, "failed");
    assert!(error.unwrap().contains("401"));
    let broken: Option<String> =
        sqlx::query_scalar("SELECT broken_reason FROM moderation_connections")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert!(broken.unwrap().contains("refused the token"));
    // Nothing more is called; a moderator cannot send anything now.
    let calls = w.fake.requests().len();
    w.fetch_now().await;
    w.settle().await;
    assert_eq!(
        w.fake.requests().len(),
        calls,
        "a broken connection is not called"
    );
    let other = w
        .fake
        .add_report(&w.reporter, &w.troll, "spam", "b", Duration::from_secs(60));
    let _ = other;
    // A new token: connected, the failed action is sent again by a moderator.
    let fresh = "tok_second_SECRET_0987654321";
    w.fake.add_token(fresh, ADMIN_SCOPES);
    connections::connect(
        &w.pool,
        Some(&w.key),
        who(w.owner, "Olga"),
        OrgId(w.org),
        w.instance,
        ("herdmod", fresh),
        "https://herd.test",
    )
    .await
    .unwrap();
    decide::retry(&w.pool, who(w.moderator, "Mia"), d)
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.outbox_row(d).await.0, "sent");
    assert_eq!(w.fake.applied("/action").len(), 1);
    // Revoked by the owner: the token is wiped and the reports leave the queue.
    connections::revoke(&w.pool, who(w.owner, "Olga"), OrgId(w.org), w.instance)
        .await
        .unwrap();
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT token_sealed FROM moderation_connections")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert!(sealed.is_empty());
    let queue = views::queue(
        &w.pool,
        UserId(w.moderator),
        &Default::default(),
        herd_store::Page::new(None, None),
    )
    .await
    .unwrap();
    assert!(queue.reports.items.is_empty());
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn escalations_ask_the_owners_and_admins_and_their_decision_is_sent(pool: PgPool) {
    let w = world(pool).await;
    let version = policy::save(
        &w.pool,
        who(w.owner, "Olga"),
        OrgId(w.org),
        w.instance,
        Policy {
            house_rules: "Be kind.".into(),
            escalate: "Anything about elected officials.".into(),
            language: "French".into(),
            ..Policy::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(version, 1);
    let remote = w.fake.add_report(
        &w.reporter,
        &w.troll,
        "legal",
        "defamation of the mayor",
        Duration::from_secs(60),
    );
    w.settle().await;
    let report = w.report_id(&remote).await;
    // Escalating needs a question.
    assert!(matches!(
        w.decide(report, "escalate", " ").await,
        Err(ModerationError::Invalid(_))
    ));
    w.decide(
        report,
        "escalate",
        "Is this about the mayor's office? Your policy says to ask.",
    )
    .await
    .unwrap();
    assert_eq!(w.state(&remote).await, "escalated");
    w.settle().await;
    let mails = herd_mail::read_outbox(&w.outbox).unwrap();
    let mut to: Vec<&str> = mails.iter().map(|m| m.to.as_str()).collect();
    to.sort();
    assert_eq!(
        to,
        ["adam@lyon.example", "olga@lyon.example"],
        "owners and admins only"
    );
    assert!(mails[0].body.contains("mayor's office"));
    assert!(mails[0]
        .body
        .contains(&format!("/o/lyon/moderation/{}", w.instance)));
    assert!(w.fake.received().is_empty(), "nothing sent while it waits");

    // A second policy version, then the customer decides.
    policy::save(
        &w.pool,
        who(w.owner, "Olga"),
        OrgId(w.org),
        w.instance,
        Policy {
            house_rules: "Be kind. Really.".into(),
            language: "French".into(),
            ..Policy::default()
        },
    )
    .await
    .unwrap();
    let escalation: Uuid = sqlx::query_scalar("SELECT id FROM moderation_escalations")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    let form = DecisionForm {
        decision: "silence".into(),
        note: "Per our policy.".into(),
        notify_user: true,
        minutes: String::new(),
    };
    decide::customer_decide(
        &w.pool,
        who(w.owner, "Olga"),
        OrgId(w.org),
        w.instance,
        &escalation.to_string(),
        &form,
    )
    .await
    .unwrap();
    // Twice is refused.
    assert!(matches!(
        decide::customer_decide(
            &w.pool,
            who(w.owner, "Olga"),
            OrgId(w.org),
            w.instance,
            &escalation.to_string(),
            &form
        )
        .await,
        Err(ModerationError::Invalid(_))
    ));
    w.settle().await;
    let sent = w.fake.applied("/action");
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]
            .form
            .get("send_email_notification")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        sent[0].form.get("text").map(String::as_str),
        Some("Per our policy.")
    );
    let rows: Vec<(String, Option<i32>, bool)> = sqlx::query_as(
        "SELECT kind, policy_version, by_customer FROM moderation_decisions ORDER BY created_at",
    )
    .fetch_all(&w.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("escalate".to_owned(), Some(1), false),
            ("account_action".to_owned(), Some(2), true)
        ]
    );
    // Another organization's escalation is not found for them.
    let outsider = Uuid::now_v7();
    assert!(matches!(
        decide::customer_decide(
            &w.pool,
            who(w.owner, "Olga"),
            OrgId(outsider),
            w.instance,
            &escalation.to_string(),
            &form
        )
        .await,
        Err(ModerationError::Invalid(_))
    ));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn only_moderators_act_and_see_the_queue(pool: PgPool) {
    let w = world(pool).await;
    let remote = w
        .fake
        .add_report(&w.reporter, &w.troll, "spam", "a", Duration::from_secs(60));
    w.settle().await;
    let report = w.report_id(&remote).await;
    let plain = user(&w.pool, "otto@herd.test", true).await;
    let form = DecisionForm {
        decision: "suspend".into(),
        ..DecisionForm::default()
    };
    assert!(matches!(
        decide::decide(
            &w.pool,
            who(plain, "Otto"),
            report,
            &form,
            "https://herd.test"
        )
        .await,
        Err(ModerationError::Forbidden(_))
    ));
    assert!(matches!(
        views::queue(
            &w.pool,
            UserId(plain),
            &Default::default(),
            herd_store::Page::new(None, None)
        )
        .await,
        Err(ModerationError::Forbidden(_))
    ));
    assert_eq!(w.state(&remote).await, "open", "nothing changed");
    // A customer cannot connect a token to another organization's server.
    assert!(matches!(
        connections::connect(
            &w.pool,
            Some(&w.key),
            who(w.owner, "Olga"),
            OrgId(Uuid::now_v7()),
            w.instance,
            ("x", TOKEN),
            "https://herd.test"
        )
        .await,
        Err(ModerationError::NotFound)
    ));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_monthly_report_counts_by_category_and_action(pool: PgPool) {
    let w = world(pool).await;
    let a = w
        .fake
        .add_report(&w.reporter, &w.troll, "spam", "a", Duration::from_secs(600));
    let b = w.fake.add_report(
        &w.reporter,
        &w.troll,
        "spam",
        "b",
        Duration::from_secs(1200),
    );
    let c = w.fake.add_report(
        &w.reporter,
        &w.troll,
        "violation",
        "c",
        Duration::from_secs(1800),
    );
    w.settle().await;
    // Resolve first (suspend would resolve every report on the account).
    w.decide(w.report_id(&c).await, "resolve", "")
        .await
        .unwrap();
    w.decide(w.report_id(&a).await, "suspend", "")
        .await
        .unwrap();
    w.decide(w.report_id(&b).await, "escalate", "Ask them.")
        .await
        .unwrap();
    w.settle().await;
    let (y, m) = views::this_month();
    let report = views::monthly(&w.pool, OrgId(w.org), w.instance, y, m)
        .await
        .unwrap();
    let csv = report.csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "month,server,category,action,count,median_minutes_to_action"
    );
    let month = format!("{y:04}-{:02}", u8::from(m));
    assert!(
        lines.contains(&format!("{month},lyon.social,spam,suspend,1,10").as_str()),
        "{csv}"
    );
    assert!(
        lines.contains(&format!("{month},lyon.social,violation,resolve,1,30").as_str()),
        "{csv}"
    );
    assert!(
        lines.contains(&format!("{month},lyon.social,all,all,2,20").as_str()),
        "{csv}"
    );
    assert!(
        lines.contains(&format!("{month},lyon.social,moderation_minutes,,36,").as_str()),
        "{csv}"
    );
}

/// Operators `names` (emails `<name>@herd.test`), those in `managers` managing operators.
async fn operators_managing(pool: &PgPool, names: &[&str], managers: &[&str]) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for name in names {
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO users (id, email, display_name, password_hash, is_operator, manages_operators) VALUES ($1, $2, $3, 'x', true, $4)")
            .bind(id)
            .bind(format!("{name}@herd.test"))
            .bind(*name)
            .bind(managers.contains(name))
            .execute(pool)
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn manager_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE manages_operators")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_last_operator_who_manages_operators_keeps_the_standing(pool: PgPool) {
    use herd_moderation::moderators::{set_manages_operators, LAST_OPERATOR_MANAGER};
    let ids = operators_managing(&pool, &["ann", "ben"], &["ann"]).await;
    let (ann, ben) = (UserId(ids[0]), UserId(ids[1]));
    let audited = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM audit_log WHERE action = 'operator.changed'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    // On the server (`herd admin set-operator`, no one acting): not from the last one.
    match set_manages_operators(&pool, None, ann, false).await {
        Err(ModerationError::Invalid(e)) => assert_eq!(e[0].1, LAST_OPERATOR_MANAGER),
        other => panic!("{other:?}"),
    }
    // Nothing to change is no change and no audit; someone who is no operator is not found.
    assert!(!set_manages_operators(&pool, None, ann, true).await.unwrap());
    assert!(matches!(
        set_manages_operators(&pool, None, UserId(Uuid::now_v7()), true).await,
        Err(ModerationError::NotFound)
    ));
    assert_eq!(audited().await, 0);
    assert!(set_manages_operators(&pool, None, ben, true).await.unwrap());
    assert_eq!(audited().await, 1);
    // Two managers taking the standing from each other at once: one of them keeps it.
    for _ in 0..5 {
        let who = |id: UserId| Who {
            id,
            name: "op",
            email: "op@herd.test",
            ip: "127.0.0.1",
        };
        let (a, b) = tokio::join!(
            set_manages_operators(&pool, Some(who(ann)), ben, false),
            set_manages_operators(&pool, Some(who(ben)), ann, false),
        );
        assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
        assert_eq!(manager_count(&pool).await, 1);
        sqlx::query("UPDATE users SET manages_operators = true WHERE is_operator")
            .execute(&pool)
            .await
            .unwrap();
    }
}
