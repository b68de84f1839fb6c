//! A deleted server's moderation history in the portal: its organization's owners and
//! admins still download its monthly reports for the months it ran (the same counts as
//! while it ran, no erased field), others do not; and the "manages operators" standing
//! given and taken in the console (managers only, never from the last one, after a
//! confirmation, with CSRF, audited).
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::fake_mastodon::{FakeMastodon, ADMIN_SCOPES};
use herd_testkit::{Client, TestApp};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

const TOKEN: &str = "tok_moderation_history_0123456789abcd";

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn this_month(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The body of a download as text, after checking it is one.
async fn csv(c: &Client, path: &str) -> String {
    let d = c.download(path).await;
    assert_eq!(d.status, 200, "{path}");
    assert!(d.header("content-type").starts_with("text/csv"));
    String::from_utf8(d.bytes).unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_deleted_servers_monthly_reports_stay_downloadable_without_personal_data(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let fake = FakeMastodon::start().await;
    fake.add_token(TOKEN, ADMIN_SCOPES);
    let alice = fake.add_account("alice");
    let troll = fake.add_account("troll");
    let olga = app
        .signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    let instance = Uuid::now_v7();
    sqlx::query("INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email, url) SELECT $1, id, 'mastodon', 'v4.7.6', 'institution', 'lyon-social', 'lyon.social', 'owner', 'owner@example.test', $2 FROM organizations WHERE slug = 'lyon'")
        .bind(instance)
        .bind(&fake.base)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO plan_moderation (plan_code, included, monthly_hours, response_target_hours) VALUES ('institution', true, 20, 1)")
        .execute(&pool)
        .await
        .unwrap();
    let live = format!("/o/lyon/moderation/{instance}");
    olga.get(&live).await.assert_status(200);
    olga.post(
        &format!("{live}/connect"),
        &[("moderator_account", "herdmod"), ("token", TOKEN)],
    )
    .await
    .assert_redirect(&live);
    olga.post(
        &format!("{live}/policy"),
        &[
            ("house_rules", "Be kind."),
            ("remove", "Spam."),
            ("escalate", "Anything about elected officials."),
            ("urgent_contacts", "Olga +33 1 23 45 67 89"),
            ("language", "French"),
        ],
    )
    .await
    .assert_redirect(&live);
    let mia = app.operator("mia@herd.test").await;
    sqlx::query("INSERT INTO operator_moderators (user_id) SELECT id FROM users WHERE email = 'mia@herd.test'")
        .execute(&pool)
        .await
        .unwrap();
    for (category, comment) in [
        ("spam", "pills"),
        ("spam", "casino"),
        ("legal", "about the mayor"),
    ] {
        fake.add_report(&alice, &troll, category, comment, Duration::from_secs(60));
    }
    app.run_jobs().await;
    let reports: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM moderation_reports ORDER BY comment")
            .fetch_all(&pool)
            .await
            .unwrap();
    // about the mayor, casino, pills: escalated, suspended, suspended.
    for (report, decision, note) in [
        (reports[0], "escalate", "Is this about the mayor?"),
        (reports[1], "suspend", "Casino spam by troll."),
        (reports[2], "suspend", "Pills spam by troll."),
    ] {
        let page = format!("/operator/moderation/reports/{report}");
        mia.get(&page).await.assert_status(200);
        mia.post(
            &format!("{page}/decide"),
            &[("decision", decision), ("note", note), ("minutes", "10")],
        )
        .await
        .assert_redirect(&page);
    }
    app.run_jobs().await;
    let month = this_month(&pool).await;
    let live_csv = csv(&olga, &format!("{live}/report.csv?month={month}")).await;
    assert!(live_csv.contains(",spam,suspend,2,"), "{live_csv}");
    let history = format!("/o/lyon/moderation/deleted/{instance}");
    // While the server runs it has no history page, and the index no deleted servers.
    olga.get(&history).await.assert_status(404);
    let index = olga.get("/o/lyon/moderation").await;
    index.assert_status(200);
    assert!(!index.body.contains("id=\"deleted-servers\""));

    // The server is deleted and its moderation forgotten (personal fields erased).
    sqlx::query("UPDATE instances SET desired = 'deleted' WHERE id = $1")
        .bind(instance)
        .execute(&pool)
        .await
        .unwrap();
    let checked = herd_moderation::jobs::check_overdue(&pool, 0)
        .await
        .unwrap();
    assert_eq!(checked.forgotten, 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM moderation_reports WHERE erased_at IS NULL OR comment <> ''"
        )
        .await,
        0
    );
    olga.get(&live).await.assert_status(404);

    // The index lists it, its page its months, and the month's CSV is what it was.
    let index = olga.get("/o/lyon/moderation").await;
    index
        .assert_status(200)
        .assert_contains("id=\"deleted-servers\"")
        .assert_contains(&format!("href=\"{history}\""));
    let page = olga.get(&history).await;
    page.assert_status(200)
        .assert_contains("lyon.social")
        .assert_contains(&format!("{history}/report.csv?month={month}"));
    let deleted_csv = csv(&olga, &format!("{history}/report.csv?month={month}")).await;
    assert_eq!(deleted_csv, live_csv);
    // Nothing the erasure wiped is on the page or in the CSV (it never was in the CSV:
    // only counts, categories, actions and times).
    for erased in [
        "pills", "casino", "mayor", "troll", "alice", "+33", "Mia", "mia@", "Operator",
    ] {
        assert!(!page.body.contains(erased), "{erased} on the history page");
        assert!(!deleted_csv.contains(erased), "{erased} in the CSV");
    }
    // A month without activity: zero counts, no failure.
    let empty = csv(&olga, &format!("{history}/report.csv?month=2001-01")).await;
    assert!(empty.contains("2001-01,lyon.social,all,all,0,"), "{empty}");
    // Without a month: its last month with moderation.
    assert_eq!(csv(&olga, &format!("{history}/report.csv")).await, live_csv);

    // Another organization's people get 404, through their organization or Lyon's.
    let bob = app.signed_up("Bob", "bob@nice.example", Some("Nice")).await;
    for path in [
        format!("/o/nice/moderation/deleted/{instance}"),
        format!("/o/nice/moderation/deleted/{instance}/report.csv?month={month}"),
        history.clone(),
        format!("{history}/report.csv?month={month}"),
    ] {
        bob.get(&path).await.assert_status(404);
    }
    assert!(!bob
        .get("/o/nice/moderation")
        .await
        .body
        .contains("lyon.social"));
    // A member of Lyon without the moderation capability is refused.
    let max = app.signed_up("Max", "max@lyon.example", None).await;
    app.join("lyon", "max@lyon.example", "member").await;
    max.get(&history).await.assert_status(403);
    max.get(&format!("{history}/report.csv?month={month}"))
        .await
        .assert_status(403);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_deleted_servers_list_is_paginated(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let olga = app
        .signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    // 26 deleted servers that had a report, and one that had none (not listed).
    for n in 0..27 {
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email, desired) SELECT $1, id, 'mastodon', 'v4.7.6', 'institution', $2, $3, 'owner', 'owner@example.test', 'deleted' FROM organizations WHERE slug = 'lyon'")
            .bind(id)
            .bind(format!("old-{n}"))
            .bind(format!("old{n}.example"))
            .execute(&pool)
            .await
            .unwrap();
        if n < 26 {
            sqlx::query("INSERT INTO moderation_reports (id, instance_id, remote_id, category, target_account_id, target_acct, reported_at, due_at, erased_at) VALUES ($1, $2, '1', 'spam', '', '', now() - make_interval(days => $3), now(), now())")
                .bind(Uuid::now_v7())
                .bind(id)
                .bind(n)
                .execute(&pool)
                .await
                .unwrap();
        }
    }
    let rows = "#deleted-servers tbody tr";
    let first = olga.get("/o/lyon/moderation").await;
    first.assert_status(200);
    assert_eq!(first.select_text(rows).len(), 25);
    assert!(first.body.contains("old0.example"));
    assert!(!first.body.contains("old25.example"));
    let next = first.select_text("#deleted-servers a[rel=next]");
    assert_eq!(next.len(), 1);
    let second = olga.get("/o/lyon/moderation?page=2").await;
    second.assert_status(200);
    assert_eq!(second.select_text(rows).len(), 1);
    assert!(second.body.contains("old25.example"));
    assert!(!second.body.contains("old26.example"));
}

/// Operators: Boss manages operators, Mia and Zoe do not.
async fn operators(pool: &PgPool, app: &TestApp) -> (Client, Client, Uuid, Uuid) {
    let boss = app.operator("boss@herd.test").await;
    let mia = app.operator("mia@herd.test").await;
    app.operator("zoe@herd.test").await;
    sqlx::query("UPDATE users SET display_name = initcap(split_part(email, '@', 1)), manages_operators = (email = 'boss@herd.test') WHERE is_operator")
        .execute(pool)
        .await
        .unwrap();
    let id = |email: &'static str| async move {
        sqlx::query_scalar::<_, Uuid>("SELECT id FROM users WHERE email = $1")
            .bind(email)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    (
        boss,
        mia,
        id("boss@herd.test").await,
        id("zoe@herd.test").await,
    )
}

async fn managers(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT email FROM users WHERE manages_operators ORDER BY email")
        .fetch_all(pool)
        .await
        .unwrap()
}

const AUDITED: &str = "SELECT count(*) FROM audit_log WHERE action = 'operator.changed'";

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn operators_who_manage_operators_give_and_take_the_standing_in_the_console(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let (boss, mia, boss_id, zoe) = operators(&pool, &app).await;
    let grant = format!("/operator/operators/{zoe}/manages-operators/grant");
    let settings = "/operator/moderation/settings";

    // An operator who does not manage operators sees no link and is refused.
    let page = mia.get(settings).await;
    page.assert_status(200);
    assert!(!page.body.contains(&grant));
    mia.get(&grant).await.assert_status(403);
    mia.post(&grant, &[]).await.assert_status(403);
    assert_eq!(managers(&pool).await, ["boss@herd.test"]);
    assert_eq!(count(&pool, AUDITED).await, 0);

    // A manager: the link, a confirmation step, then the change, audited with who and whom.
    boss.get(settings).await.assert_contains(&grant);
    boss.get(&grant)
        .await
        .assert_status(200)
        .assert_contains("Let Zoe manage operators?")
        .assert_contains(&format!("action=\"{grant}\""));
    // Without the form's CSRF token nothing changes.
    boss.post_raw(&grant, &[]).await.assert_status(403);
    boss.post_raw(&grant, &[("csrf_token", "forged")])
        .await
        .assert_status(403);
    assert_eq!(managers(&pool).await, ["boss@herd.test"]);
    assert_eq!(count(&pool, AUDITED).await, 0);
    boss.post(&grant, &[]).await.assert_redirect(settings);
    assert_eq!(managers(&pool).await, ["boss@herd.test", "zoe@herd.test"]);
    let (actor, target, details): (Option<Uuid>, String, serde_json::Value) = sqlx::query_as(
        "SELECT actor_id, target, details FROM audit_log WHERE action = 'operator.changed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(actor, Some(boss_id));
    assert_eq!(target, "zoe@herd.test");
    assert_eq!(details["user_id"], zoe.to_string());
    assert_eq!(details["manages_operators"], true);
    assert_eq!(details["via"], "console");
    // The same again changes nothing and audits nothing.
    boss.post(&grant, &[]).await.assert_redirect(settings);
    assert_eq!(count(&pool, AUDITED).await, 1);

    // Boss stops himself managing operators (Zoe still does); then he is refused.
    let remove_boss = format!("/operator/operators/{boss_id}/manages-operators/remove");
    boss.get(&remove_boss)
        .await
        .assert_status(200)
        .assert_contains("Stop Boss managing operators?");
    boss.post(&remove_boss, &[]).await.assert_redirect(settings);
    assert_eq!(managers(&pool).await, ["zoe@herd.test"]);
    assert_eq!(count(&pool, AUDITED).await, 2);
    let remove_zoe = format!("/operator/operators/{zoe}/manages-operators/remove");
    boss.get(settings).await;
    boss.post(&remove_zoe, &[]).await.assert_status(403);
    assert_eq!(managers(&pool).await, ["zoe@herd.test"]);

    // The last one who manages operators keeps the standing.
    sqlx::query(
        "UPDATE users SET manages_operators = (email = 'boss@herd.test') WHERE is_operator",
    )
    .execute(&pool)
    .await
    .unwrap();
    boss.get(settings).await;
    boss.post(&remove_boss, &[])
        .await
        .assert_status(422)
        .assert_contains("last one who manages operators");
    assert_eq!(managers(&pool).await, ["boss@herd.test"]);
    assert_eq!(count(&pool, AUDITED).await, 2);

    // Not an operator, or not a change: not found.
    app.signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    let olga_id: Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'olga@lyon.example'")
            .fetch_one(&pool)
            .await
            .unwrap();
    boss.get(&format!(
        "/operator/operators/{olga_id}/manages-operators/grant"
    ))
    .await
    .assert_status(404);
    boss.post(
        &format!("/operator/operators/{olga_id}/manages-operators/grant"),
        &[],
    )
    .await
    .assert_status(404);
    boss.get(&format!(
        "/operator/operators/{zoe}/manages-operators/promote"
    ))
    .await
    .assert_status(404);
    assert_eq!(count(&pool, AUDITED).await, 2);
}
