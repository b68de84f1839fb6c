//! The moderators' work beyond a decision, through the router with a fake Mastodon admin
//! API: only operators who manage operators give or take the moderator role; time logged
//! on a report without deciding (bad input changes nothing, a double submission counts
//! once); the overdue alert, one digest per moderator, once per report (again after a
//! reopening, once the new due time passes), marked in the queue and on /metrics, never
//! claimed without a moderator to email; and a deleted server's moderation forgotten
//! (connection wiped, reports out of the queue, personal data erased, counts kept).
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::fake_mastodon::{FakeMastodon, ADMIN_SCOPES};
use herd_testkit::{Client, TestApp};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

const TOKEN: &str = "tok_moderation_work_0123456789abcdef";

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn make_moderator(pool: &PgPool, email: &str) {
    sqlx::query("INSERT INTO operator_moderators (user_id) SELECT id FROM users WHERE email = $1")
        .bind(email)
        .execute(pool)
        .await
        .unwrap();
}

/// The time form's one-time token on a report's page.
fn submission(body: &str) -> String {
    let field = "name=\"submission\" value=\"";
    let at = body.find(field).unwrap() + field.len();
    body[at..].split('"').next().unwrap().to_owned()
}

/// Lyon's server on the institution plan (response target one hour), its API at the
/// fake, connected by its owner Olga; Mia an operator with the moderator role.
struct World {
    app: TestApp,
    fake: FakeMastodon,
    olga: Client,
    mia: Client,
    instance: Uuid,
    alice: String,
    troll: String,
}

async fn world(pool: &PgPool) -> World {
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
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO plan_moderation (plan_code, included, monthly_hours, response_target_hours) VALUES ('institution', true, 20, 1)")
        .execute(pool)
        .await
        .unwrap();
    let page = format!("/o/lyon/moderation/{instance}");
    olga.get(&page).await.assert_status(200);
    olga.post(
        &format!("{page}/connect"),
        &[("moderator_account", "herdmod"), ("token", TOKEN)],
    )
    .await
    .assert_redirect(&page);
    let mia = app.operator("mia@herd.test").await;
    make_moderator(pool, "mia@herd.test").await;
    World {
        app,
        fake,
        olga,
        mia,
        instance,
        alice,
        troll,
    }
}

impl World {
    async fn report_id(&self, remote: &str) -> Uuid {
        sqlx::query_scalar("SELECT id FROM moderation_reports WHERE remote_id = $1")
            .bind(remote)
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }

    /// Emails whose subject says a report is overdue.
    async fn overdue_mails(&self) -> usize {
        self.overdue_mails_to("").await
    }

    /// Those of them sent to `to` (every one with "").
    async fn overdue_mails_to(&self, to: &str) -> usize {
        self.app
            .mails()
            .await
            .iter()
            .filter(|m| m.subject.contains("Overdue") && m.to.contains(to))
            .count()
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn only_operators_who_manage_operators_give_or_take_the_moderator_role(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let mia = app.operator("mia@herd.test").await;
    let boss = app.operator("boss@herd.test").await;
    sqlx::query("UPDATE users SET manages_operators = true WHERE email = 'boss@herd.test'")
        .execute(&pool)
        .await
        .unwrap();
    let granted = "SELECT count(*) FROM operator_moderators";
    let audited = "SELECT count(*) FROM audit_log WHERE action LIKE 'moderation.moderator.%'";

    // An ordinary operator sees the settings without the forms, and is refused.
    let page = mia.get("/operator/moderation/settings").await;
    page.assert_status(200)
        .assert_contains("Only operators who manage operators give or take the moderator role");
    assert!(!page
        .body
        .contains("action=\"/operator/moderation/moderators\""));
    mia.post(
        "/operator/moderation/moderators",
        &[("email", "mia@herd.test")],
    )
    .await
    .assert_status(403);
    assert_eq!(count(&pool, granted).await, 0);
    assert_eq!(count(&pool, audited).await, 0);

    // One who manages operators gives it, audited.
    boss.get("/operator/moderation/settings")
        .await
        .assert_status(200)
        .assert_contains("Give the role");
    boss.post(
        "/operator/moderation/moderators",
        &[("email", "mia@herd.test")],
    )
    .await
    .assert_redirect("/operator/moderation/settings");
    assert_eq!(count(&pool, granted).await, 1);
    assert_eq!(count(&pool, audited).await, 1);

    // A moderator who does not manage operators cannot take it away either.
    let id: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'mia@herd.test'")
        .fetch_one(&pool)
        .await
        .unwrap();
    mia.get("/operator/moderation/settings").await;
    mia.post(
        &format!("/operator/moderation/moderators/{id}/withdraw"),
        &[],
    )
    .await
    .assert_status(403);
    assert_eq!(count(&pool, granted).await, 1);
    assert_eq!(count(&pool, audited).await, 1);
    boss.post(
        &format!("/operator/moderation/moderators/{id}/withdraw"),
        &[],
    )
    .await
    .assert_redirect("/operator/moderation/settings");
    assert_eq!(count(&pool, granted).await, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action = 'moderation.moderator.withdrawn'"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn time_logged_without_a_decision_counts_in_the_month(pool: PgPool) {
    let w = world(&pool).await;
    let remote = w
        .fake
        .add_report(&w.alice, &w.troll, "spam", "pills", Duration::from_secs(60));
    w.app.run_jobs().await;
    let report = w.report_id(&remote).await;
    let page = format!("/operator/moderation/reports/{report}");
    let entries = "SELECT count(*) FROM moderation_time_entries";
    let audited = "SELECT count(*) FROM audit_log WHERE action = 'moderation.time.logged'";

    w.mia.get(&page).await.assert_status(200);
    for bad in ["0", "-5", "481", "ten", ""] {
        let r = w
            .mia
            .post(
                &format!("{page}/time"),
                &[("time_minutes", bad), ("time_note", "read the thread")],
            )
            .await;
        r.assert_status(422)
            .assert_contains("Enter the minutes spent, a whole number from 1 to 480.")
            .assert_contains("read the thread");
        assert_eq!(count(&pool, entries).await, 0, "{bad}");
    }
    assert_eq!(count(&pool, audited).await, 0);

    // An operator without the moderator role is refused.
    let max = w.app.operator("max@herd.test").await;
    max.post(
        &format!("{page}/time"),
        &[("time_minutes", "10"), ("time_note", "")],
    )
    .await
    .assert_status(403);
    assert_eq!(count(&pool, entries).await, 0);

    w.mia
        .post(
            &format!("{page}/time"),
            &[("time_minutes", "25"), ("time_note", "read the thread")],
        )
        .await
        .assert_redirect(&format!("{page}#time"));
    assert_eq!(count(&pool, entries).await, 1);
    assert_eq!(count(&pool, audited).await, 1);
    w.mia
        .get(&page)
        .await
        .assert_contains("read the thread")
        .assert_contains("0 h 25 min of 20 h");
    // A decision's minutes add up with it, for the customer too, and in the CSV.
    w.mia
        .post(
            &format!("{page}/decide"),
            &[("decision", "resolve"), ("note", ""), ("minutes", "5")],
        )
        .await
        .assert_redirect(&page);
    let customer = format!("/o/lyon/moderation/{}", w.instance);
    w.olga
        .get(&customer)
        .await
        .assert_contains("0 h 30 min of 20 h");
    let csv = w.olga.download(&format!("{customer}/report.csv")).await;
    let text = String::from_utf8(csv.bytes).unwrap();
    assert!(
        text.contains(",lyon.social,moderation_minutes,,30,"),
        "{text}"
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_time_form_posted_twice_logs_the_minutes_once(pool: PgPool) {
    let w = world(&pool).await;
    let remote = w
        .fake
        .add_report(&w.alice, &w.troll, "spam", "pills", Duration::from_secs(60));
    w.app.run_jobs().await;
    let page = format!(
        "/operator/moderation/reports/{}",
        w.report_id(&remote).await
    );
    let entries = "SELECT count(*) FROM moderation_time_entries";
    let audited = "SELECT count(*) FROM audit_log WHERE action = 'moderation.time.logged'";

    let token = submission(&w.mia.get(&page).await.body);
    // Refused input keeps the token (nothing was logged with it).
    let r = w
        .mia
        .post(
            &format!("{page}/time"),
            &[("time_minutes", "0"), ("submission", &token)],
        )
        .await;
    r.assert_status(422);
    assert_eq!(submission(&r.body), token);
    // The same form twice (a double click): counted once, audited once.
    for _ in 0..2 {
        w.mia
            .post(
                &format!("{page}/time"),
                &[
                    ("time_minutes", "15"),
                    ("time_note", "read"),
                    ("submission", &token),
                ],
            )
            .await
            .assert_redirect(&format!("{page}#time"));
    }
    assert_eq!(count(&pool, entries).await, 1);
    assert_eq!(count(&pool, audited).await, 1);
    // The page after it has a new token: the next form counts.
    let next = submission(&w.mia.get(&page).await.body);
    assert_ne!(next, token);
    w.mia
        .post(
            &format!("{page}/time"),
            &[("time_minutes", "5"), ("submission", &next)],
        )
        .await
        .assert_redirect(&format!("{page}#time"));
    assert_eq!(count(&pool, entries).await, 2);
    w.mia.get(&page).await.assert_contains("0 h 20 min of 20 h");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn overdue_reports_make_one_digest_per_moderator_and_again_after_a_reopening(pool: PgPool) {
    let w = world(&pool).await;
    // Nina a second moderator, Max an operator without the role.
    let _nina = w.app.operator("nina@herd.test").await;
    make_moderator(&pool, "nina@herd.test").await;
    let _max = w.app.operator("max@herd.test").await;
    // Filed two hours ago: past the plan's one-hour target (two of them). Another one is
    // not yet due.
    let late = w.fake.add_report(
        &w.alice,
        &w.troll,
        "spam",
        "pills",
        Duration::from_secs(7200),
    );
    let later = w.fake.add_report(
        &w.alice,
        &w.troll,
        "violation",
        "insults",
        Duration::from_secs(7300),
    );
    w.fake.add_report(
        &w.alice,
        &w.troll,
        "other",
        "fresh",
        Duration::from_secs(60),
    );
    w.app.run_jobs().await;
    let report = w.report_id(&late).await;
    let other = w.report_id(&later).await;

    // The tick queues the check on herd-jobs; it emails each moderator one digest of
    // both, the operator without the role nothing.
    herd_moderation::jobs::tick(&pool).await.unwrap();
    w.app.run_jobs().await;
    assert_eq!(w.overdue_mails().await, 2);
    assert_eq!(w.overdue_mails_to("mia@herd.test").await, 1);
    assert_eq!(w.overdue_mails_to("nina@herd.test").await, 1);
    assert_eq!(w.overdue_mails_to("max@herd.test").await, 0);
    let mail = w.app.last_mail_to("mia@herd.test").await;
    assert!(mail.subject.contains("2 reports"), "{mail:?}");
    for id in [report, other] {
        assert!(
            mail.body
                .contains(&format!("{}/operator/moderation/reports/{id}", w.app.base)),
            "{mail:?}"
        );
    }
    assert!(mail.body.contains("lyon.social"), "{mail:?}");
    // The queue marks it, and /metrics counts them.
    w.mia
        .get("/operator/moderation")
        .await
        .assert_contains("moderators emailed");
    let m = w.app.client().get("/metrics").await;
    m.assert_status(200)
        .assert_contains("herd_moderation_reports_overdue 2\n");

    // Later runs do not send them again.
    for bucket in [1, 2] {
        let checked = herd_moderation::jobs::check_overdue(&pool, bucket)
            .await
            .unwrap();
        assert_eq!(checked.overdue, 0);
    }
    w.app.run_jobs().await;
    assert_eq!(w.overdue_mails().await, 2);

    // Resolved, then reopened: due again an hour from now, so not alerted at once.
    let page = format!("/operator/moderation/reports/{report}");
    for decision in ["resolve", "reopen"] {
        w.mia.get(&page).await;
        w.mia
            .post(
                &format!("{page}/decide"),
                &[("decision", decision), ("note", ""), ("minutes", "")],
            )
            .await
            .assert_redirect(&page);
        w.app.run_jobs().await;
    }
    let due: time::OffsetDateTime =
        sqlx::query_scalar("SELECT due_at FROM moderation_reports WHERE id = $1")
            .bind(report)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(due > time::OffsetDateTime::now_utc() + time::Duration::minutes(50));
    let checked = herd_moderation::jobs::check_overdue(&pool, 3)
        .await
        .unwrap();
    assert_eq!(checked.overdue, 0);

    // Once that due time passes, it is alerted again; Nina, whose role is withdrawn
    // before the email goes, gets nothing.
    sqlx::query("UPDATE moderation_reports SET due_at = now() - interval '1 minute' WHERE id = $1")
        .bind(report)
        .execute(&pool)
        .await
        .unwrap();
    let checked = herd_moderation::jobs::check_overdue(&pool, 4)
        .await
        .unwrap();
    assert_eq!((checked.overdue, checked.emails), (1, 2));
    sqlx::query("DELETE FROM operator_moderators WHERE user_id = (SELECT id FROM users WHERE email = 'nina@herd.test')")
        .execute(&pool)
        .await
        .unwrap();
    w.app.run_jobs().await;
    assert_eq!(w.overdue_mails_to("mia@herd.test").await, 2);
    assert_eq!(w.overdue_mails_to("nina@herd.test").await, 1);
    let mail = w.app.last_mail_to("mia@herd.test").await;
    assert!(mail.subject.contains("1 report "), "{mail:?}");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn without_a_moderator_to_email_overdue_reports_are_not_marked_emailed(pool: PgPool) {
    let w = world(&pool).await;
    let _max = w.app.operator("max@herd.test").await;
    sqlx::query("DELETE FROM operator_moderators")
        .execute(&pool)
        .await
        .unwrap();
    let late = w.fake.add_report(
        &w.alice,
        &w.troll,
        "spam",
        "pills",
        Duration::from_secs(7200),
    );
    w.app.run_jobs().await;
    herd_moderation::jobs::tick(&pool).await.unwrap();
    w.app.run_jobs().await;
    assert_eq!(w.overdue_mails().await, 0);
    let unmarked = "SELECT count(*) FROM moderation_reports WHERE overdue_alerted_at IS NULL";
    assert_eq!(count(&pool, unmarked).await, 1);

    // A moderator again: the queue does not claim anyone was emailed; the next check does
    // email them.
    make_moderator(&pool, "mia@herd.test").await;
    let q = w.mia.get("/operator/moderation").await;
    q.assert_status(200).assert_contains("overdue");
    assert!(!q.body.contains("moderators emailed"));
    let checked = herd_moderation::jobs::check_overdue(&pool, 1)
        .await
        .unwrap();
    assert_eq!(checked.overdue, 1);
    w.app.run_jobs().await;
    assert_eq!(w.overdue_mails_to("mia@herd.test").await, 1);
    let id = w.report_id(&late).await;
    assert!(w
        .app
        .last_mail_to("mia@herd.test")
        .await
        .body
        .contains(&id.to_string()));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_deleted_servers_moderation_is_forgotten_and_its_history_kept(pool: PgPool) {
    let w = world(&pool).await;
    let open = w
        .fake
        .add_report(&w.alice, &w.troll, "spam", "pills", Duration::from_secs(60));
    let decided = w.fake.add_report(
        &w.alice,
        &w.troll,
        "legal",
        "about the mayor",
        Duration::from_secs(60),
    );
    let unsent = w.fake.add_report(
        &w.alice,
        &w.troll,
        "spam",
        "casino",
        Duration::from_secs(60),
    );
    let sending = w.fake.add_report(
        &w.alice,
        &w.troll,
        "spam",
        "crypto",
        Duration::from_secs(60),
    );
    let asked = w.fake.add_report(
        &w.alice,
        &w.troll,
        "legal",
        "about the council",
        Duration::from_secs(60),
    );
    w.app.run_jobs().await;
    let customer = format!("/o/lyon/moderation/{}", w.instance);
    w.olga.get(&customer).await;
    w.olga
        .post(
            &format!("{customer}/policy"),
            &[
                ("house_rules", "Be kind."),
                ("remove", "Spam."),
                ("escalate", "Anything about elected officials."),
                ("urgent_contacts", "Olga +33 1 23 45 67 89"),
                ("language", "French"),
            ],
        )
        .await
        .assert_redirect(&customer);
    let decide = |remote: String, decision: &'static str, note: &'static str| {
        let w = &w;
        async move {
            let page = format!(
                "/operator/moderation/reports/{}",
                w.report_id(&remote).await
            );
            w.mia.get(&page).await;
            w.mia
                .post(
                    &format!("{page}/decide"),
                    &[("decision", decision), ("note", note), ("minutes", "10")],
                )
                .await
                .assert_redirect(&page);
            page
        }
    };
    let page = decide(decided.clone(), "suspend", "Illegal.").await;
    w.mia
        .post(
            &format!("{page}/time"),
            &[("time_minutes", "5"), ("time_note", "called Olga")],
        )
        .await
        .assert_redirect(&format!("{page}#time"));
    w.app.run_jobs().await;
    w.mia
        .get("/operator/moderation")
        .await
        .assert_contains("pills");
    // An escalation waits for the customer; two actions are not sent yet, one of them
    // on its way (its job may still finish).
    decide(asked.clone(), "escalate", "Is this about the council?").await;
    decide(unsent.clone(), "suspend", "Casino spam.").await;
    decide(sending.clone(), "suspend", "Crypto spam.").await;
    sqlx::query("UPDATE moderation_outbox o SET state = 'sending' FROM moderation_decisions d, moderation_reports r WHERE d.id = o.decision_id AND r.id = d.report_id AND r.remote_id = $1")
        .bind(&sending)
        .execute(&pool)
        .await
        .unwrap();

    // The server's deletion is asked for (final; the phase follows later).
    sqlx::query("UPDATE instances SET desired = 'deleted' WHERE id = $1")
        .bind(w.instance)
        .execute(&pool)
        .await
        .unwrap();
    let checked = herd_moderation::jobs::check_overdue(&pool, 0)
        .await
        .unwrap();
    assert_eq!(checked.forgotten, 1);

    // Its connection (with the sealed token) is gone, its open report left the queue.
    assert_eq!(
        count(&pool, "SELECT count(*) FROM moderation_connections").await,
        0
    );
    let q = w.mia.get("/operator/moderation").await;
    q.assert_status(200);
    assert!(!q.body.contains("pills"));
    let state = |remote: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT o.state FROM moderation_outbox o JOIN moderation_decisions d ON d.id = o.decision_id JOIN moderation_reports r ON r.id = d.report_id WHERE r.remote_id = $1",
            )
            .bind(remote)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(state(unsent).await, "failed");
    assert_eq!(state(sending).await, "sending");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM moderation_escalations WHERE state = 'waiting'"
        )
        .await,
        0
    );
    let vanished: Vec<String> = sqlx::query_scalar(
        "SELECT remote_id FROM moderation_reports WHERE state = 'vanished' ORDER BY remote_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut expected = vec![open, asked];
    expected.sort();
    assert_eq!(vanished, expected);

    // The personal data is erased: reporters' comments, accounts, statuses, notes, the
    // policy's urgent contacts.
    for personal in [
        "SELECT count(*) FROM moderation_reports WHERE comment <> '' OR reporter_acct <> '' OR target_acct <> '' OR target_account_id <> '' OR statuses <> '[]' OR erased_at IS NULL",
        "SELECT count(*) FROM moderation_decisions WHERE note <> '' OR decided_by_name <> '' OR decided_by IS NOT NULL",
        "SELECT count(*) FROM moderation_time_entries WHERE note <> '' OR logged_by_name <> ''",
        "SELECT count(*) FROM moderation_policies WHERE urgent_contacts <> '' OR written_by_name <> ''",
    ] {
        assert_eq!(count(&pool, personal).await, 0, "{personal}");
    }
    // What the monthly reports count stays: reports, categories, decisions, minutes.
    assert_eq!(
        count(&pool, "SELECT count(*) FROM moderation_reports").await,
        5
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM moderation_reports WHERE category = 'legal'"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM moderation_decisions WHERE kind = 'account_action'"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &pool,
            "SELECT sum(minutes_spent)::bigint FROM moderation_decisions"
        )
        .await
            + count(
                &pool,
                "SELECT sum(minutes)::bigint FROM moderation_time_entries"
            )
            .await,
        45
    );
    // No fetch is queued for it any more, and a second run finds nothing left to do.
    assert!(herd_store::moderation::fetchable(&pool)
        .await
        .unwrap()
        .is_empty());
    let again = herd_moderation::jobs::check_overdue(&pool, 1)
        .await
        .unwrap();
    assert_eq!(again.forgotten, 0);
}
