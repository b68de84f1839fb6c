//! The support desk through the router: a ticket's whole life (opened in the portal,
//! answered in the console, the answer emailed, the customer's reply, the clock paused
//! while waiting on the customer, resolved, closed by the job, rated), who may see which
//! ticket, internal notes kept from customers, and bad input refused without a change.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_support::jobs::AutoClose;
use herd_testkit::{Client, TestApp};
use herd_web::route_table;
use sqlx::PgPool;
use uuid::Uuid;

/// Opens a ticket as `c` in `org`; returns its id.
async fn open(c: &Client, org: &str, subject: &str, shared: bool) -> Uuid {
    c.get(&format!("/o/{org}/support/new"))
        .await
        .assert_status(200);
    let mut form = vec![
        ("subject", subject),
        ("body", "Our server answers 502 since this morning."),
        ("category", "technical"),
        ("priority", "normal"),
        ("instance", ""),
    ];
    if shared {
        form.push(("shared", "on"));
    }
    let r = c.post(&format!("/o/{org}/support"), &form).await;
    r.assert_redirect(&format!("/o/{org}/support/"));
    let location = r.location.clone().unwrap();
    location.rsplit('/').next().unwrap().parse().unwrap()
}

async fn status_of(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM tickets WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn next_due(pool: &PgPool, id: Uuid) -> Option<time::OffsetDateTime> {
    sqlx::query_scalar("SELECT next_due FROM tickets WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_ticket_lives_from_opening_to_rating(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.support_inbound_secret = Some("inbound-secret".to_owned().into());
    })
    .await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;

    let id = open(&carla, "acme", "Server down", false).await;
    let page = carla.get(&format!("/o/acme/support/{id}")).await;
    page.assert_status(200);
    assert_eq!(page.select_text("#ticket-status"), vec!["New"]);
    assert!(next_due(&pool, id).await.is_some(), "the clock runs");

    // The operator finds it in the queue, notes something internal and answers.
    let queue = op.get("/operator/support?view=unassigned").await;
    queue.assert_status(200).assert_contains("Server down");
    op.get(&format!("/operator/support/{id}"))
        .await
        .assert_status(200);
    op.post(
        &format!("/operator/support/{id}/note"),
        &[("note", "Customer is on the old cluster; SECRET-NOTE")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{id}"));
    op.post(
        &format!("/operator/support/{id}/reply"),
        &[
            ("body", "Please restart the web pod and tell us."),
            ("then", "wait"),
        ],
    )
    .await
    .assert_redirect(&format!("/operator/support/{id}"));
    assert_eq!(status_of(&pool, id).await, "waiting_on_customer");
    let first: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT first_response_at FROM tickets WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(first.is_some(), "the first answer is recorded");
    // Waiting on the customer pauses the clock.
    assert_eq!(next_due(&pool, id).await, None);

    // The answer is emailed with its text and a link, and without the internal note.
    app.run_jobs().await;
    let mail = app.last_mail_to("carla@acme.example").await;
    assert!(mail.subject.contains("Server down"), "{mail:?}");
    assert!(mail.body.contains("Please restart the web pod"), "{mail:?}");
    assert!(
        mail.body.contains(&format!("/o/acme/support/{id}")),
        "{mail:?}"
    );
    let link = app.link_in_last_mail_to("carla@acme.example").await;
    let page = carla.get(&link).await;
    page.assert_status(200)
        .assert_contains("Please restart the web pod");
    assert!(
        !page.body.contains("SECRET-NOTE"),
        "an internal note shown to the customer"
    );
    assert!(page.select_text("#sla-resolution")[0].starts_with("paused"));

    // Three days of waiting count nothing: move the whole history three days back (the
    // answer and the wait with it) and the resolution target (240 hours of support time
    // without a plan) is still untouched.
    for sql in [
        "UPDATE tickets SET created_at = created_at - interval '3 days' WHERE id = $1",
        "UPDATE ticket_events SET at = at - interval '3 days' WHERE ticket_id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&pool).await.unwrap();
    }
    let page = carla.get(&format!("/o/acme/support/{id}")).await;
    let left = page.select_text("#sla-resolution").pop().unwrap();
    let hours: i64 = left
        .strip_prefix("paused, ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("{left:?}"));
    assert!(hours >= 239, "the wait was counted: {left:?}");

    // The customer replies by answering the email (as the mail server's pipe hands it
    // on): open again, the clock runs on.
    let quoted: String = mail.body.lines().map(|l| format!("> {l}\r\n")).collect();
    let raw = format!(
        "From: Carla <carla@acme.example>\r\nTo: {}\r\nSubject: Re: {}\r\nMessage-ID: <life-1@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRestarted, still 502.\r\n\r\nOn Mon, 7 Dec 2026 at 10:00, Herd wrote:\r\n{quoted}",
        mail.reply_to.as_deref().expect("a signed Reply-To"),
        mail.subject
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/inbound/support-mail", app.base))
        .header("authorization", "Bearer inbound-secret")
        .header("content-type", "message/rfc822")
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let last: String = sqlx::query_scalar(
        "SELECT body FROM ticket_messages WHERE ticket_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(last, "Restarted, still 502.", "added without the quote");
    assert_eq!(status_of(&pool, id).await, "open");
    assert!(next_due(&pool, id).await.is_some());

    // Resolved; the customer reopens within the window; resolved again.
    op.post(
        &format!("/operator/support/{id}/status"),
        &[("status", "resolved")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{id}"));
    carla
        .post(&format!("/o/acme/support/{id}/reopen"), &[])
        .await
        .assert_redirect(&format!("/o/acme/support/{id}"));
    assert_eq!(status_of(&pool, id).await, "open");
    op.post(
        &format!("/operator/support/{id}/reply"),
        &[
            ("body", "Fixed: the node was replaced."),
            ("then", "resolve"),
        ],
    )
    .await
    .assert_redirect(&format!("/operator/support/{id}"));
    assert_eq!(status_of(&pool, id).await, "resolved");

    // Eight days later the job closes it; it can no longer be reopened.
    sqlx::query("UPDATE tickets SET resolved_at = now() - interval '8 days' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    herd_jobs::enqueue(
        &pool,
        &AutoClose {
            bucket: 1,
            after_days: 7,
        },
    )
    .await
    .unwrap();
    app.run_jobs().await;
    assert_eq!(status_of(&pool, id).await, "closed");
    let r = carla
        .post(&format!("/o/acme/support/{id}/reopen"), &[])
        .await;
    r.assert_status(422).assert_contains("more than 7 days");
    assert_eq!(status_of(&pool, id).await, "closed");

    // Rated once.
    carla
        .post(
            &format!("/o/acme/support/{id}/rate"),
            &[("score", "5"), ("comment", "Quick and kind")],
        )
        .await
        .assert_redirect(&format!("/o/acme/support/{id}"));
    carla
        .get(&format!("/o/acme/support/{id}"))
        .await
        .assert_contains("You rated the answer 5 out of 5");
    carla
        .post(&format!("/o/acme/support/{id}/rate"), &[("score", "1")])
        .await
        .assert_status(422);

    // No email ever carried the note; everything is in the audit log.
    for m in app.mails().await {
        assert!(!m.body.contains("SECRET-NOTE"), "{m:?}");
    }
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'support.%' ORDER BY at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for a in [
        "support.ticket.opened",
        "support.ticket.noted",
        "support.ticket.answered",
        "support.ticket.replied",
        "support.ticket.status_changed",
        "support.ticket.reopened",
        "support.ticket.auto_closed",
        "support.ticket.rated",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} missing from {actions:?}"
        );
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn tickets_are_seen_only_by_whom_they_concern(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let max = app.signed_up("Max", "max@acme.example", None).await;
    app.join("acme", "max@acme.example", "member").await;
    let ada = app.signed_up("Ada", "ada@acme.example", None).await;
    app.join("acme", "ada@acme.example", "admin").await;
    let olive = app
        .signed_up("Olive", "olive@other.example", Some("Other"))
        .await;

    let private = open(&carla, "acme", "Private matter", false).await;
    let shared = open(&carla, "acme", "Shared matter", true).await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_messages")
        .fetch_one(&pool)
        .await
        .unwrap();

    // Another organization's member: not found on every ticket route, under either
    // organization's address.
    let routes: Vec<_> = route_table()
        .into_iter()
        .filter(|r| r.path.starts_with("/o/{slug}/support/{ticket}"))
        .collect();
    assert!(routes.len() >= 5, "{routes:?}");
    for r in &routes {
        for slug in ["acme", "other"] {
            let path = r
                .path
                .replace("{slug}", slug)
                .replace("{ticket}", &shared.to_string());
            let resp = if r.method == "GET" {
                olive.get(&path).await
            } else {
                olive.get("/orgs").await;
                olive.post(&path, &[("body", "hi"), ("score", "5")]).await
            };
            assert_eq!(resp.status, 404, "{} {path}", r.method);
        }
    }
    assert!(!olive.get("/o/other/support").await.body.contains("matter"));

    // A member sees the shared ticket, not another member's private one.
    let list = max.get("/o/acme/support").await;
    list.assert_status(200).assert_contains("Shared matter");
    assert!(!list.body.contains("Private matter"));
    max.get(&format!("/o/acme/support/{private}"))
        .await
        .assert_status(404);
    max.get("/orgs").await;
    max.post(
        &format!("/o/acme/support/{private}/reply"),
        &[("body", "let me in")],
    )
    .await
    .assert_status(404);
    max.get(&format!("/o/acme/support/{shared}"))
        .await
        .assert_status(200);

    // An admin sees every ticket of the organization.
    let list = ada.get("/o/acme/support").await;
    list.assert_contains("Private matter")
        .assert_contains("Shared matter");
    ada.get(&format!("/o/acme/support/{private}"))
        .await
        .assert_status(200);

    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(before, after, "refused calls added messages");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn bad_input_is_refused_and_changes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let tickets = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tickets")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    carla.get("/o/acme/support/new").await.assert_status(200);
    let r = carla
        .post(
            "/o/acme/support",
            &[
                ("subject", "  "),
                ("body", ""),
                ("category", "sales"),
                ("priority", "normal"),
            ],
        )
        .await;
    r.assert_status(422)
        .assert_contains("Enter a subject.")
        .assert_contains("Write a message.")
        .assert_contains("Choose a category.");
    // Urgent is refused on a tier without it (the default tier).
    let r = carla
        .post(
            "/o/acme/support",
            &[
                ("subject", "Everything is on fire"),
                ("body", "Help"),
                ("category", "technical"),
                ("priority", "urgent"),
            ],
        )
        .await;
    r.assert_status(422)
        .assert_contains("does not include urgent tickets");
    assert_eq!(
        r.field_value("subject").as_deref(),
        Some("Everything is on fire")
    );
    assert_eq!(tickets().await, 0);

    // The operator gives the plan urgent support; a bad time zone changes nothing first.
    let org: Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = 'acme'")
        .fetch_one(&pool)
        .await
        .unwrap();
    community_server(&pool, org).await;
    op.get("/operator/support/tiers").await.assert_status(200);
    op.get("/operator/support/tiers/community")
        .await
        .assert_status(200);
    let mut tier = vec![
        ("urgent_allowed", "on"),
        ("start", "08:00"),
        ("end", "18:00"),
        ("time_zone", "Mars/Olympus"),
        ("first_low", "48"),
        ("first_normal", "24"),
        ("first_high", "4"),
        ("first_urgent", "1"),
        ("resolution_low", "240"),
        ("resolution_normal", "120"),
        ("resolution_high", "24"),
        ("resolution_urgent", "0.5"),
    ];
    let r = op.post("/operator/support/tiers/community", &tier).await;
    r.assert_status(422)
        .assert_contains("Unknown time zone")
        .assert_contains("Resolution cannot be due before the first response.");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM plan_support_tiers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
    tier[3] = ("time_zone", "Europe/Paris");
    tier[11] = ("resolution_urgent", "8");
    op.post("/operator/support/tiers/community", &tier)
        .await
        .assert_redirect("/operator/support/tiers");
    let r = carla
        .post(
            "/o/acme/support",
            &[
                ("subject", "Everything is on fire"),
                ("body", "Help"),
                ("category", "technical"),
                ("priority", "urgent"),
            ],
        )
        .await;
    r.assert_redirect("/o/acme/support/");
    let id: Uuid = r
        .location
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // Empty replies and notes are refused; unknown statuses too.
    let r = carla
        .post(&format!("/o/acme/support/{id}/reply"), &[("body", "   ")])
        .await;
    r.assert_status(422).assert_contains("Write a message.");
    let r = op
        .post(&format!("/operator/support/{id}/note"), &[("note", "")])
        .await;
    r.assert_status(422).assert_contains("Write a message.");
    let r = op
        .post(
            &format!("/operator/support/{id}/status"),
            &[("status", "done")],
        )
        .await;
    r.assert_status(422).assert_contains("Choose a status.");
    let r = op
        .post(
            &format!("/operator/support/{id}/status"),
            &[("status", "new")],
        )
        .await;
    r.assert_status(422).assert_contains("cannot become new");
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(messages, 1, "only the opening message");
    assert_eq!(status_of(&pool, id).await, "new");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_sla_check_records_breaches_and_the_queue_sorts_and_filters(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let olive = app
        .signed_up("Olive", "olive@other.example", Some("Other"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let late = open(&carla, "acme", "Late ticket", false).await;
    let fresh = open(&olive, "other", "Fresh ticket", false).await;

    // The late ticket was opened 30 days ago: its first answer (48 business hours without a
    // plan) is long overdue, its resolution (240 business hours) not yet. The check job
    // records the breach, once, in the audit log.
    for sql in [
        "UPDATE tickets SET created_at = created_at - interval '30 days' WHERE id = $1",
        "UPDATE ticket_events SET at = at - interval '30 days' WHERE ticket_id = $1",
    ] {
        sqlx::query(sql).bind(late).execute(&pool).await.unwrap();
    }
    for bucket in [1, 2] {
        herd_jobs::enqueue(&pool, &herd_support::jobs::CheckSlas { bucket })
            .await
            .unwrap();
        app.run_jobs().await;
    }
    let breached: (bool, bool) = sqlx::query_as(
        "SELECT first_response_breached, resolution_breached FROM tickets WHERE id = $1",
    )
    .bind(late)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(breached, (true, false));
    let fresh_breached: bool =
        sqlx::query_scalar("SELECT first_response_breached FROM tickets WHERE id = $1")
            .bind(fresh)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!fresh_breached);
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'support.ticket.breached' AND target = $1",
    )
    .bind(late.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, 1, "one entry per breach, not one per check");

    // The queue: soonest due first; the breached view; filters.
    let subjects = |r: &herd_testkit::Resp| r.select_text(".queue-row td:first-child");
    // The late ticket's breached first response no longer counts: its resolution, due in
    // days, comes after the fresh ticket's first response.
    let all = op.get("/operator/support?view=open").await;
    assert_eq!(subjects(&all), vec!["Fresh ticket", "Late ticket"]);
    let breached = op.get("/operator/support?view=breached").await;
    assert_eq!(subjects(&breached), vec!["Late ticket"]);
    let by_org = op.get("/operator/support?view=open&org=other").await;
    assert_eq!(subjects(&by_org), vec!["Fresh ticket"]);
    let by_priority = op.get("/operator/support?view=open&priority=high").await;
    assert!(subjects(&by_priority).is_empty());
    // Breaching soon: a target not breached yet due within two hours.
    let soon = op.get("/operator/support?view=breaching").await;
    assert!(subjects(&soon).is_empty(), "{:?}", subjects(&soon));
    sqlx::query("UPDATE tickets SET next_due = now() + interval '1 hour' WHERE id = $1")
        .bind(fresh)
        .execute(&pool)
        .await
        .unwrap();
    let soon = op.get("/operator/support?view=breaching").await;
    assert_eq!(subjects(&soon), vec!["Fresh ticket"]);

    // Assigned to the operator: in "mine", out of "unassigned".
    let me: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'ops@herd.test'")
        .fetch_one(&pool)
        .await
        .unwrap();
    op.post(
        &format!("/operator/support/{fresh}/assign"),
        &[("assignee", &me.to_string())],
    )
    .await
    .assert_redirect(&format!("/operator/support/{fresh}"));
    let mine = op.get("/operator/support?view=mine").await;
    assert_eq!(subjects(&mine), vec!["Fresh ticket"]);
    let unassigned = op.get("/operator/support?view=unassigned").await;
    assert_eq!(subjects(&unassigned), vec!["Late ticket"]);
    // Only operators can be assignees.
    let carla_id: Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'carla@acme.example'")
            .fetch_one(&pool)
            .await
            .unwrap();
    op.post(
        &format!("/operator/support/{late}/assign"),
        &[("assignee", &carla_id.to_string())],
    )
    .await
    .assert_status(422)
    .assert_contains("Choose an operator.");
}

/// The organization's id.
/// Acme's server on the community plan (acme.social), as an order's fulfilment leaves it.
async fn community_server(pool: &PgPool, org: Uuid) {
    let order = Uuid::now_v7();
    sqlx::query("INSERT INTO orders (id, org_id, plan_code, app, domain) VALUES ($1, $2, 'community', 'mastodon', 'acme.social')")
        .bind(order)
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO instances (id, org_id, order_id, app, version, plan_code, slug, domain, owner_username, owner_email) VALUES ($1, $2, $3, 'mastodon', 'v4.7.6', 'community', 'acme-social', 'acme.social', 'carla', 'carla@acme.example')")
        .bind(Uuid::now_v7())
        .bind(org)
        .bind(order)
        .execute(pool)
        .await
        .unwrap();
}

async fn org_id(pool: &PgPool, slug: &str) -> Uuid {
    sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1")
        .bind(slug)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Moves a ticket's whole history `days` back.
async fn age(pool: &PgPool, id: Uuid, days: i32) {
    for sql in [
        "UPDATE tickets SET created_at = created_at - make_interval(days => $2) WHERE id = $1",
        "UPDATE ticket_events SET at = at - make_interval(days => $2) WHERE ticket_id = $1",
    ] {
        sqlx::query(sql)
            .bind(id)
            .bind(days)
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn breach_entries(pool: &PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT details->>'target' FROM audit_log
         WHERE action = 'support.ticket.breached' AND target = $1 ORDER BY at",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_ended_contract_no_longer_gives_its_support_tier(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let org = org_id(&pool, "acme").await;
    sqlx::query(
        "INSERT INTO contracts (id, org_id, plan_code, price_minor, currency, period, payment_terms_days, billing_address, starts_on, next_invoice_on, ends_on)
         VALUES ($1, $2, 'institution', 100000, 'EUR', 'year', 30, 'Acme', current_date - 400, current_date + 330, current_date - 1)",
    )
    .bind(Uuid::now_v7())
    .bind(org)
    .execute(&pool)
    .await
    .unwrap();
    let plan_of = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>("SELECT plan_code FROM tickets WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let ended = open(&carla, "acme", "After the contract", false).await;
    assert_eq!(plan_of(ended).await, None, "an ended contract's tier");

    // Running until tomorrow: its plan's tier.
    sqlx::query("UPDATE contracts SET ends_on = current_date + 1 WHERE org_id = $1")
        .bind(org)
        .execute(&pool)
        .await
        .unwrap();
    let running = open(&carla, "acme", "During the contract", false).await;
    assert_eq!(plan_of(running).await.as_deref(), Some("institution"));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn no_status_change_stops_the_first_response_clock_without_an_answer(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let id = open(&carla, "acme", "Nobody answers", false).await;
    let due = next_due(&pool, id).await;
    assert!(due.is_some());

    for status in ["waiting_on_customer", "resolved"] {
        let r = op
            .post(
                &format!("/operator/support/{id}/status"),
                &[("status", status)],
            )
            .await;
        r.assert_status(422)
            .assert_contains("Answer the customer first");
        assert_eq!(status_of(&pool, id).await, "new", "{status}");
        assert_eq!(next_due(&pool, id).await, due, "{status}");
    }
    let changed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'support.ticket.status_changed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(changed, 0);

    // Closing without an answer (spam, say) stays possible but is no answer: a first
    // response already overdue stays breached, and reopened the clock runs on.
    age(&pool, id, 30).await;
    op.post(
        &format!("/operator/support/{id}/status"),
        &[("status", "closed")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{id}"));
    let (first_at, breached): (Option<time::OffsetDateTime>, bool) = sqlx::query_as(
        "SELECT first_response_at, first_response_breached FROM tickets WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(first_at, None);
    assert!(breached, "closing unanswered hid an overdue first response");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_breach_found_by_an_action_is_audited_and_does_not_starve_the_check(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let late = open(&carla, "acme", "Late ticket", false).await;
    let unanswered = open(&carla, "acme", "Unanswered ticket", false).await;
    age(&pool, late, 30).await;
    age(&pool, unanswered, 30).await;

    // The operator's late answer finds the breach: audited at once, not by the check.
    op.post(
        &format!("/operator/support/{late}/reply"),
        &[("body", "Sorry for the wait."), ("then", "keep")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{late}"));
    assert_eq!(breach_entries(&pool, late).await, vec!["first_response"]);

    // The customer's reply finds the other one's breach.
    carla
        .post(
            &format!("/o/acme/support/{unanswered}/reply"),
            &[("body", "Anyone?")],
        )
        .await
        .assert_redirect(&format!("/o/acme/support/{unanswered}"));
    assert_eq!(
        breach_entries(&pool, unanswered).await,
        vec!["first_response"]
    );

    // A breached, still unanswered first response no longer holds a past due time: the
    // next due time is the resolution's, in the future, so the check moves on.
    let (next, resolution_due): (Option<time::OffsetDateTime>, Option<time::OffsetDateTime>) =
        sqlx::query_as("SELECT next_due, resolution_due FROM tickets WHERE id = $1")
            .bind(unanswered)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(next, resolution_due);
    assert!(next.unwrap() > time::OffsetDateTime::now_utc());
    herd_jobs::enqueue(&pool, &herd_support::jobs::CheckSlas { bucket: 1 })
        .await
        .unwrap();
    app.run_jobs().await;
    assert_eq!(
        breach_entries(&pool, unanswered).await.len(),
        1,
        "recorded once"
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_address_that_fails_does_not_resend_the_reply_to_the_others(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    app.signed_up("Max", "max@acme.example", None).await;
    app.join("acme", "max@acme.example", "member").await;
    // An address the mailer cannot send to (stored before addresses were checked).
    sqlx::query("UPDATE users SET email = 'zz not an address' WHERE email = 'max@acme.example'")
        .execute(&pool)
        .await
        .unwrap();
    let op = app.operator("ops@herd.test").await;
    let id = open(&carla, "acme", "Shared trouble", true).await;
    op.post(
        &format!("/operator/support/{id}/reply"),
        &[("body", "Looking into it."), ("then", "keep")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{id}"));

    // Every attempt runs (each retry made due at once) until the bad one gives up.
    for _ in 0..20 {
        app.runner().drain().await.unwrap();
        sqlx::query("UPDATE jobs SET run_at = now() WHERE state = 'queued'")
            .execute(&pool)
            .await
            .unwrap();
    }
    let to_carla = read_outbox_to(&app, "carla@acme.example");
    assert_eq!(to_carla, 1, "the reply was sent again to a good address");
    let jobs: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT payload->>'to', state, attempts FROM jobs WHERE kind = 'support.reply_email' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(jobs.len(), 2, "one job per recipient: {jobs:?}");
    assert_eq!(
        jobs[0],
        ("carla@acme.example".to_owned(), "done".to_owned(), 1)
    );
    assert_eq!(jobs[1].0, "zz not an address");
    assert_ne!(jobs[1].1, "done");
    assert_eq!(jobs[1].2, 10, "{jobs:?}");
}

fn read_outbox_to(app: &TestApp, to: &str) -> usize {
    herd_mail::read_outbox(&app.outbox)
        .unwrap_or_default()
        .iter()
        .filter(|m| m.to.contains(to) && m.body.contains("Looking into it."))
        .count()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_member_cannot_close_reopen_or_rate_another_members_private_ticket(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let max = app.signed_up("Max", "max@acme.example", None).await;
    app.join("acme", "max@acme.example", "member").await;
    let op = app.operator("ops@herd.test").await;
    let private = open(&carla, "acme", "Private matter", false).await;

    max.get("/orgs").await;
    max.post(&format!("/o/acme/support/{private}/close"), &[])
        .await
        .assert_status(404);
    assert_eq!(status_of(&pool, private).await, "new");

    op.post(
        &format!("/operator/support/{private}/reply"),
        &[("body", "Done."), ("then", "resolve")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{private}"));
    max.post(&format!("/o/acme/support/{private}/reopen"), &[])
        .await
        .assert_status(404);
    assert_eq!(status_of(&pool, private).await, "resolved");
    max.post(
        &format!("/o/acme/support/{private}/rate"),
        &[("score", "1"), ("comment", "not mine")],
    )
    .await
    .assert_status(404);
    let ratings: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_ratings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ratings, 0);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_tier_change_applies_from_then_on_and_keeps_the_time_counted(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let org = org_id(&pool, "acme").await;
    community_server(&pool, org).await;
    // Opened three days ago under the plan's business-hours tier.
    let id = open(&carla, "acme", "Slow timeline", false).await;
    age(&pool, id, 3).await;
    let counted = || async {
        herd_support::tickets::operator_view(&pool, herd_domain::ids::TicketId(id))
            .await
            .unwrap()
            .sla
            .resolution
            .elapsed
    };
    let before = counted().await;

    // The plan's tier becomes 24/7: the three days stay counted in business hours.
    let tier = [
        ("around_the_clock", "on"),
        ("start", "08:00"),
        ("end", "18:00"),
        ("time_zone", "Europe/Paris"),
        ("first_low", "48"),
        ("first_normal", "24"),
        ("first_high", "4"),
        ("first_urgent", "1"),
        ("resolution_low", "240"),
        ("resolution_normal", "120"),
        ("resolution_high", "24"),
        ("resolution_urgent", "8"),
    ];
    op.get("/operator/support/tiers/community").await;
    op.post("/operator/support/tiers/community", &tier)
        .await
        .assert_redirect("/operator/support/tiers");
    let after = counted().await;
    assert!(
        (0..120).contains(&(after - before)),
        "the past was recounted in the new tier: {before} s, then {after} s"
    );
    let plan_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ticket_events WHERE ticket_id = $1 AND kind = 'plan' AND tier IS NOT NULL",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(plan_events, 2, "opening and the tier change");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_rating_waits_for_a_reopen_in_flight_and_sees_it(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let id = open(&carla, "acme", "Fixed?", false).await;
    op.post(
        &format!("/operator/support/{id}/reply"),
        &[("body", "Fixed."), ("then", "resolve")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{id}"));
    carla.get(&format!("/o/acme/support/{id}")).await;

    // A reopen holds the ticket's lock while the rating arrives: the rating must read the
    // status under the lock, once the reopen is committed, and refuse.
    let mut reopen = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM tickets WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *reopen)
        .await
        .unwrap();
    sqlx::query("UPDATE tickets SET status = 'open', resolved_at = NULL WHERE id = $1")
        .bind(id)
        .execute(&mut *reopen)
        .await
        .unwrap();
    let path = format!("/o/acme/support/{id}/rate");
    let (r, ()) = tokio::join!(carla.post(&path, &[("score", "2")]), async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        reopen.commit().await.unwrap();
    });
    r.assert_status(422)
        .assert_contains("Tickets are rated once resolved.");
    let ratings: i64 = sqlx::query_scalar("SELECT count(*) FROM ticket_ratings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ratings, 0, "an open ticket was rated");
}
