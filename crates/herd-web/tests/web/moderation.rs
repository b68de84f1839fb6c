//! Managed moderation through the router, with a fake Mastodon admin API over real HTTP:
//! the owner connects the moderator account's token and writes the policy; an operator
//! without the moderator role is refused, one with it works the queue and acts; the action
//! reaches the server once; an escalation is decided by the customer; a revoked token
//! shows as broken; a customer sees only their own servers; and the token never appears
//! in a page, the audit log or the logs.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::fake_mastodon::{FakeMastodon, ADMIN_SCOPES};
use herd_testkit::{Client, TestApp};
use sqlx::PgPool;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

const TOKEN: &str = "tok_SECRET_moderation_4f9a8b7c6d";

/// Everything logged while the test runs (every level), to look for the token in.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Lyon's server on the institution plan, its API at the fake.
async fn server(pool: &PgPool, org_slug: &str, domain: &str, api: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email, url) SELECT $1, id, 'mastodon', 'v4.7.6', 'institution', $3, $2, 'owner', 'owner@example.test', $4 FROM organizations WHERE slug = $5")
        .bind(id)
        .bind(domain)
        .bind(domain.replace('.', "-"))
        .bind(api)
        .bind(org_slug)
        .execute(pool)
        .await
        .unwrap();
    id
}

/// Every page a test looked at, to check none shows the token.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    async fn get(&mut self, c: &Client, path: &str) -> herd_testkit::Resp {
        let r = c.get(path).await;
        self.0.push(r.body.clone());
        r
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn moderation_from_connection_to_decision(pool: PgPool) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::spawn(pool.clone()).await;
    let fake = FakeMastodon::start().await;
    fake.add_token(TOKEN, ADMIN_SCOPES);
    let alice = fake.add_account("alice");
    let troll = fake.add_account("troll");
    let mut seen = Seen::default();

    let olga = app
        .signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    let id = server(&pool, "lyon", "lyon.social", &fake.base).await;
    let page = format!("/o/lyon/moderation/{id}");

    // The owner connects the token: stored, never shown back.
    seen.get(&olga, "/o/lyon/moderation")
        .await
        .assert_status(200)
        .assert_contains("lyon.social");
    let p = seen.get(&olga, &page).await;
    p.assert_status(200).assert_contains("not connected");
    let (missing, posts) = p.forms_without_csrf();
    assert!(missing.is_empty() && posts >= 2, "{missing:?}");
    // Bad input changes nothing.
    let r = olga
        .post(
            &format!("{page}/connect"),
            &[("moderator_account", "herdmod"), ("token", "short")],
        )
        .await;
    r.assert_status(422);
    seen.0.push(r.body.clone());
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM moderation_connections")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    seen.get(&olga, &page).await;
    olga.post(
        &format!("{page}/connect"),
        &[("moderator_account", "herdmod"), ("token", TOKEN)],
    )
    .await
    .assert_redirect(&page);
    let p = seen.get(&olga, &page).await;
    p.assert_contains("connected (moderator account @herdmod)");
    olga.post(
        &format!("{page}/policy"),
        &[
            ("house_rules", "Be kind."),
            ("remove", "Spam."),
            ("escalate", "Anything about elected officials."),
            ("urgent_contacts", "+33 1 23 45 67 89"),
            ("language", "French"),
        ],
    )
    .await
    .assert_redirect(&page);

    // Reports on the server; the fetch queued by connecting copies them.
    let spam = fake.add_report(&alice, &troll, "spam", "pills", Duration::from_secs(7200));
    let mayor = fake.add_report(
        &alice,
        &troll,
        "legal",
        "about the mayor",
        Duration::from_secs(60),
    );
    app.run_jobs().await;

    // An operator without the moderator role is refused; the role is given in the console.
    let mia = app.operator("mia@herd.test").await;
    let r = seen.get(&mia, "/operator/moderation").await;
    r.assert_status(403);
    // Mia manages operators: she may give the role (to herself, here).
    sqlx::query("UPDATE users SET manages_operators = true WHERE email = 'mia@herd.test'")
        .execute(&pool)
        .await
        .unwrap();
    seen.get(&mia, "/operator/moderation/settings")
        .await
        .assert_status(200);
    mia.post(
        "/operator/moderation/moderators",
        &[("email", "mia@herd.test")],
    )
    .await
    .assert_redirect("/operator/moderation/settings");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'moderation.moderator.granted'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    let q = seen.get(&mia, "/operator/moderation").await;
    q.assert_status(200).assert_contains("pills");
    let (missing, _) = q.forms_without_csrf();
    assert!(missing.is_empty(), "{missing:?}");
    // Filters: by category.
    let only_legal = seen.get(&mia, "/operator/moderation?category=legal").await;
    only_legal.assert_contains("about the mayor");
    assert!(!only_legal.body.contains("pills"));

    let report = |remote: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>("SELECT id FROM moderation_reports WHERE remote_id = $1")
                .bind(remote)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let spam_id = report(spam.clone()).await;
    let rp = seen
        .get(&mia, &format!("/operator/moderation/reports/{spam_id}"))
        .await;
    rp.assert_status(200)
        .assert_contains("Anything about elected officials.");
    // A bad decision re-renders with a message and changes nothing.
    let r = mia
        .post(
            &format!("/operator/moderation/reports/{spam_id}/decide"),
            &[("decision", "ban"), ("note", ""), ("minutes", "x")],
        )
        .await;
    r.assert_status(422);
    seen.0.push(r.body.clone());
    seen.get(&mia, &format!("/operator/moderation/reports/{spam_id}"))
        .await;
    mia.post(
        &format!("/operator/moderation/reports/{spam_id}/decide"),
        &[
            ("decision", "suspend"),
            ("note", "Spam."),
            ("minutes", "15"),
        ],
    )
    .await
    .assert_redirect(&format!("/operator/moderation/reports/{spam_id}"));
    let mayor_id = report(mayor.clone()).await;
    seen.get(&mia, &format!("/operator/moderation/reports/{mayor_id}"))
        .await;
    mia.post(
        &format!("/operator/moderation/reports/{mayor_id}/decide"),
        &[
            ("decision", "escalate"),
            ("note", "Is this about the mayor's office?"),
            ("minutes", "5"),
        ],
    )
    .await
    .assert_redirect(&format!("/operator/moderation/reports/{mayor_id}"));
    app.run_jobs().await;
    assert_eq!(fake.applied("/action").len(), 1, "sent once");
    let mail = app.last_mail_to("olga@lyon.example").await;
    assert!(mail.subject.contains("lyon.social"), "{mail:?}");

    // The customer sees the decision with its policy version, the hours, and decides.
    let p = seen.get(&olga, &page).await;
    p.assert_contains("Suspend")
        .assert_contains("v1")
        .assert_contains("0 h 20 min of 20 h")
        .assert_contains("Is this about the mayor&#39;s office?");
    let escalation: Uuid = sqlx::query_scalar("SELECT id FROM moderation_escalations")
        .fetch_one(&pool)
        .await
        .unwrap();
    olga.post(
        &format!("{page}/decide"),
        &[
            ("escalation", &escalation.to_string()),
            ("decision", "resolve"),
            ("note", ""),
        ],
    )
    .await
    .assert_redirect(&page);
    app.run_jobs().await;
    assert!(fake.is_resolved(&mayor));
    let csv = olga.download(&format!("{page}/report.csv")).await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").starts_with("text/csv"));
    let text = String::from_utf8(csv.bytes).unwrap();
    assert!(text.contains(",lyon.social,spam,suspend,1,"), "{text}");
    assert!(text.contains(",lyon.social,legal,resolve,1,"), "{text}");

    // Another organization sees none of it.
    let eve = app
        .signed_up("Eve", "eve@other.example", Some("Other"))
        .await;
    seen.get(&eve, &page).await.assert_status(404);
    seen.get(&eve, &format!("/o/other/moderation/{id}"))
        .await
        .assert_status(404);
    // A member of Lyon without the capability is refused.
    app.signed_up("Max", "max@lyon.example", None).await;
    app.join("lyon", "max@lyon.example", "member").await;
    let max = app.client();
    max.get("/login").await;
    max.post(
        "/login",
        &[
            ("email", "max@lyon.example"),
            ("password", herd_testkit::PASSWORD),
        ],
    )
    .await;
    seen.get(&max, &page).await.assert_status(403);

    // The server revokes the token: the connection shows as broken, to both sides.
    fake.revoke_token(TOKEN);
    mia.get("/operator/moderation").await;
    mia.post("/operator/moderation/fetch", &[("instance", "")])
        .await
        .assert_redirect("/operator/moderation");
    app.run_jobs().await;
    seen.get(&mia, "/operator/moderation")
        .await
        .assert_contains("broken");
    seen.get(&olga, &page).await.assert_contains("broken");

    // The token is in no page, no audit entry, no log line, and only sealed in the table.
    for body in &seen.0 {
        assert!(!body.contains(TOKEN), "a page shows the token");
    }
    let audit: Vec<String> = sqlx::query_scalar("SELECT details::text || target FROM audit_log")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(audit.iter().all(|a| !a.contains(TOKEN)));
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT token_sealed FROM moderation_connections")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!sealed.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(logged.contains("moderation"), "the logs were captured");
    assert!(!logged.contains(TOKEN), "the token was logged");
}
