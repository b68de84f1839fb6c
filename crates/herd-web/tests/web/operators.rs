//! Operators: two-factor authentication is required, the console lists and searches with
//! pagination, and the audit log can be filtered.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{Client, TestApp, PASSWORD};
use herd_web::totp;
use sqlx::PgPool;

async fn make_operator(app: &TestApp, email: &str) -> Client {
    let c = app.signed_up("Operator", email, None).await;
    sqlx::query("UPDATE users SET is_operator = true WHERE email = $1")
        .bind(email)
        .execute(&app.pool)
        .await
        .unwrap();
    c
}

fn current_code(secret: &str, offset_steps: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    totp::code_at(
        &totp::base32_decode(secret).unwrap(),
        totp::step_of(now) + offset_steps,
    )
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn operators_need_two_factor_and_see_the_console(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = make_operator(&app, "ops@provider.example").await;
    op.get("/operator/orgs")
        .await
        .assert_status(403)
        .assert_contains("two-factor");

    // Enrol.
    op.get("/account/2fa").await.assert_status(200);
    let r = op.post("/account/2fa/start", &[]).await;
    r.assert_status(200).assert_contains("<svg");
    let secret = r.select_text("#totp-secret").pop().unwrap();
    op.post(
        "/account/2fa/confirm",
        &[("code", "000000"), ("password", PASSWORD)],
    )
    .await
    .assert_status(422);
    let r = op
        .post(
            "/account/2fa/confirm",
            &[("code", &current_code(&secret, 0)), ("password", PASSWORD)],
        )
        .await;
    r.assert_status(200);
    let recovery = r.select_text("#recovery-codes li");
    assert_eq!(recovery.len(), 10);

    // The console opens.
    op.get("/operator/orgs").await.assert_status(200);

    // A new login asks for the second factor; a replayed code is refused.
    let c = app.client();
    c.get("/login").await;
    c.post(
        "/login",
        &[("email", "ops@provider.example"), ("password", PASSWORD)],
    )
    .await
    .assert_redirect("/login/2fa");
    c.get("/operator/orgs").await.assert_redirect("/login");
    c.get("/login/2fa").await.assert_status(200);
    c.post("/login/2fa", &[("code", &current_code(&secret, 0))])
        .await
        .assert_status(401);
    c.post("/login/2fa", &[("code", &recovery[0])])
        .await
        .assert_redirect("/orgs");
    c.get("/operator/orgs").await.assert_status(200);

    // A recovery code works once.
    let d = app.client();
    d.get("/login").await;
    d.post(
        "/login",
        &[("email", "ops@provider.example"), ("password", PASSWORD)],
    )
    .await
    .assert_redirect("/login/2fa");
    d.get("/login/2fa").await;
    d.post("/login/2fa", &[("code", &recovery[0])])
        .await
        .assert_status(401);
    d.post("/login/2fa", &[("code", &current_code(&secret, 1))])
        .await
        .assert_redirect("/orgs");

    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE actor_email = 'ops@provider.example'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        actions.contains(&"user.2fa_enabled".to_owned()),
        "{actions:?}"
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn console_lists_search_and_paginate(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = make_operator(&app, "ops@provider.example").await;
    op.get("/account/2fa").await;
    let r = op.post("/account/2fa/start", &[]).await;
    let secret = r.select_text("#totp-secret").pop().unwrap();
    op.post(
        "/account/2fa/confirm",
        &[("code", &current_code(&secret, 0)), ("password", PASSWORD)],
    )
    .await
    .assert_status(200);

    // 30 organizations of one owner, plus one to search for.
    let owner = app
        .signed_up("Owner", "owner@city.example", Some("Needle Town"))
        .await;
    for i in 0..30 {
        owner.get("/orgs/new").await;
        owner
            .post("/orgs", &[("name", &format!("Hay {i:02}"))])
            .await
            .assert_redirect("/o/hay-");
    }
    let page1 = op.get("/operator/orgs").await;
    page1.assert_status(200);
    let rows1 = page1.select_text("table tbody tr");
    assert_eq!(rows1.len(), 25);
    assert!(rows1[0].contains("Hay 29"), "newest first: {}", rows1[0]);
    let next = page1.select_text("a[rel=next]");
    assert_eq!(next.len(), 1);
    let page2 = op.get("/operator/orgs?page=2").await;
    let rows2 = page2.select_text("table tbody tr");
    assert_eq!(rows2.len(), 6);
    assert!(page2.select_text("a[rel=next]").is_empty());
    assert_eq!(page2.select_text("a[rel=prev]").len(), 1);

    let found = op
        .get("/operator/orgs?q=needle")
        .await
        .select_text("table tbody tr");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].contains("needle-town") && found[0].contains("owner@city.example"),
        "{found:?}"
    );
    // LIKE wildcards are taken literally.
    let none = op
        .get("/operator/orgs?q=%25")
        .await
        .select_text("table tbody tr");
    assert_eq!(none, vec!["No organization matches."]);

    let users = op
        .get("/operator/users?q=owner%40city")
        .await
        .select_text("table tbody tr");
    assert_eq!(users.len(), 1);
    assert!(
        users[0].contains("31"),
        "member of 31 organizations: {users:?}"
    );

    let audit = op
        .get("/operator/audit?action=org.created&org=needle-town")
        .await;
    let entries = audit.select_text("tr.audit-entry");
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].contains("owner@city.example"));
    let logins = op
        .get("/operator/audit?action=user.&actor=owner%40city")
        .await
        .select_text("tr.audit-entry");
    assert!(
        logins.iter().any(|e| e.contains("user.logged_in"))
            && logins.iter().all(|e| e.contains("user.")),
        "{logins:?}"
    );
}

async fn enrolled_operator(app: &TestApp, email: &str) -> Client {
    app.operator(email).await
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn operators_edit_plans_with_validation_and_audit(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = enrolled_operator(&app, "ops@provider.example").await;
    let list = op.get("/operator/plans").await;
    list.assert_status(200);
    assert_eq!(list.select_text("tr.plan-row").len(), 3);
    let form = op.get("/operator/plans/community/edit").await;
    form.assert_status(200);
    assert_eq!(form.field_value("price").as_deref(), Some("49.00"));

    let good = [
        ("name", "Community+"),
        ("description", "More room."),
        ("price", "59.50"),
        ("currency", "eur"),
        ("interval", "month"),
        ("max_active_users", "80"),
        ("media_storage_gb", "30"),
        ("support_response_hours", "48"),
        ("moderation_hours_per_month", "0"),
        ("compute", "small"),
        ("active", "on"),
        ("stripe_price", "price_1PgafmB7WZ01zgkW6dKueIc5"),
    ];
    // Bad input: every problem shown, nothing changed.
    let mut bad = good.to_vec();
    bad[2] = ("price", "59,50");
    bad[5] = ("max_active_users", "0");
    bad[9] = ("compute", "huge");
    bad[11] = ("stripe_price", "prod_123; DROP");
    let r = op.post("/operator/plans/community", &bad).await;
    r.assert_status(422)
        .assert_contains("Enter a price like")
        .assert_contains("at least 1")
        .assert_contains("Choose small, medium or large")
        .assert_contains("A Stripe price id looks like");
    assert_eq!(
        r.field_value("name").as_deref(),
        Some("Community+"),
        "the form keeps what was typed"
    );
    let price: i64 = sqlx::query_scalar("SELECT price_minor FROM plans WHERE code = 'community'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(price, 4_900);

    op.post("/operator/plans/community", &good)
        .await
        .assert_redirect("/operator/plans");
    app.client()
        .get("/pricing")
        .await
        .assert_contains("Community+")
        .assert_contains("59.50 EUR");
    let details: serde_json::Value =
        sqlx::query_scalar("SELECT details FROM audit_log WHERE action = 'plan.updated'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        details["changes"]["price_minor"],
        serde_json::json!([4_900, 5_950])
    );
    assert_eq!(
        details["changes"]["custom_domain"],
        serde_json::Value::Null,
        "unchanged fields are not listed"
    );
    assert_eq!(
        details["changes"]["provider_price_id"],
        serde_json::json!([null, "price_1PgafmB7WZ01zgkW6dKueIc5"]),
        "the Stripe price is set and audited"
    );

    // Unticking "on sale" takes the plan off the pricing page.
    let retired: Vec<_> = good
        .iter()
        .filter(|(k, _)| *k != "active")
        .copied()
        .collect();
    op.post("/operator/plans/community", &retired)
        .await
        .assert_redirect("/operator/plans");
    assert!(!app
        .client()
        .get("/pricing")
        .await
        .body
        .contains("Community+"));
    // A new plan: validated, created once, audited, sellable.
    op.get("/operator/plans/new")
        .await
        .assert_status(200)
        .assert_contains("New plan");
    let mut new_plan = vec![("code", "Bad Code!")];
    new_plan.extend(good.iter().copied());
    new_plan[1] = ("name", "City");
    let r = op.post("/operator/plans", &new_plan).await;
    r.assert_status(422)
        .assert_contains("Choose a code of 2 to 30");
    new_plan[0] = ("code", "community");
    op.post("/operator/plans", &new_plan)
        .await
        .assert_status(422)
        .assert_contains("A plan has this code already");
    new_plan[0] = ("code", "city");
    op.post("/operator/plans", &new_plan)
        .await
        .assert_redirect("/operator/plans");
    let (name, price): (String, Option<String>) =
        sqlx::query_as("SELECT name, provider_price_id FROM plans WHERE code = 'city'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (name.as_str(), price.as_deref()),
        ("City", Some("price_1PgafmB7WZ01zgkW6dKueIc5"))
    );
    let created: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'plan.created' AND target = 'city'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(created, 1);
    app.client().get("/pricing").await.assert_contains("City");

    op.get("/operator/plans/nope/edit").await.assert_status(404);
    op.post("/operator/plans/nope", &good)
        .await
        .assert_status(404);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_one_time_password_must_be_replaced_at_first_login(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = herd_domain::Email::parse("new-op@provider.example").unwrap();
    let hash = herd_web::crypto::hash_password("generated-once-9Kq2".into())
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let user = herd_store::users::create(&mut tx, &email, "New Op", &hash, true)
        .await
        .unwrap();
    herd_store::users::mark_email_verified(&mut tx, user.id())
        .await
        .unwrap();
    herd_store::users::require_password_change(&mut tx, user.id())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let c = app.client();
    c.get("/login").await;
    let r = c
        .post(
            "/login",
            &[
                ("email", "new-op@provider.example"),
                ("password", "generated-once-9Kq2"),
            ],
        )
        .await;
    r.assert_redirect("/password/reset/");
    let reset = r.location.clone().unwrap();
    c.get("/orgs").await.assert_redirect("/login");
    c.get(&reset)
        .await
        .assert_status(200)
        .assert_contains("one-time password");
    c.post(&reset, &[("password", PASSWORD)])
        .await
        .assert_redirect("/login");
    c.get("/login").await;
    c.post(
        "/login",
        &[
            ("email", "new-op@provider.example"),
            ("password", "generated-once-9Kq2"),
        ],
    )
    .await
    .assert_status(401);
    c.post(
        "/login",
        &[("email", "new-op@provider.example"), ("password", PASSWORD)],
    )
    .await
    .assert_redirect("/account/2fa");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn operators_see_subscriptions_and_events_and_reprocess_a_failed_one(pool: PgPool) {
    use herd_testkit::stripe;
    let secret = "whsec_console";
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.stripe_webhook_secrets = vec![secrecy::SecretString::from(secret.to_owned())];
    })
    .await;
    // A subscription whose renewal failed, delivered and processed.
    let body = stripe::event(
        "evt_console_pastdue",
        "customer.subscription.updated",
        stripe::now(),
        stripe::subscription(
            "sub_Console",
            "cus_Console",
            "past_due",
            "price_x",
            stripe::now(),
            serde_json::json!({}),
        ),
    )
    .to_string();
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", app.base))
        .header(
            "stripe-signature",
            stripe::signature(secret, stripe::now(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // An event whose processing fails (its payload cannot be read).
    sqlx::query("INSERT INTO stripe_events (id, type, livemode, created, payload, subscription_id) VALUES ('evt_console_broken', 'invoice.paid', false, now(), '{\"broken\": true}', 'sub_Console')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO jobs (id, kind, payload, dedupe_key, max_attempts) VALUES ($1, 'stripe.event', '{\"event_id\": \"evt_console_broken\"}', 'evt_console_broken', 1)")
        .bind(uuid::Uuid::now_v7())
        .execute(&pool)
        .await
        .unwrap();
    herd_testkit::jobs::runner(&pool, &app.mailer)
        .drain()
        .await
        .unwrap();

    let op = enrolled_operator(&app, "ops@provider.example").await;
    op.get("/operator/billing?problems=1")
        .await
        .assert_status(200)
        .assert_contains("sub_Console")
        .assert_contains("past_due");
    let failed = op.get("/operator/billing/events?state=failed").await;
    failed
        .assert_status(200)
        .assert_contains("evt_console_broken");
    assert!(
        !failed.body.contains("evt_console_pastdue"),
        "filtered by state"
    );
    op.get("/operator/billing/events?type=customer.")
        .await
        .assert_contains("evt_console_pastdue");
    op.get("/operator/billing/events/evt_console_broken")
        .await
        .assert_status(200)
        .assert_contains("cannot be read");

    // The cause is fixed (here: the payload), and the operator reprocesses the event.
    let fixed = stripe::event(
        "evt_console_broken",
        "invoice.paid",
        stripe::now(),
        stripe::invoice("in_console", "cus_Console", "sub_Console", "paid"),
    )
    .to_string();
    sqlx::query("UPDATE stripe_events SET payload = $1 WHERE id = 'evt_console_broken'")
        .bind(fixed)
        .execute(&pool)
        .await
        .unwrap();
    op.post("/operator/billing/events/evt_console_broken/reprocess", &[])
        .await
        .assert_redirect("/operator/billing/events/evt_console_broken");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'billing.event.reprocessed' AND target = 'evt_console_broken'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    assert_eq!(app.run_jobs().await.completed, 1);
    op.get("/operator/billing/events/evt_console_broken")
        .await
        .assert_contains("id=\"event-state\">processed");
    op.get("/operator/billing/events/evt_nope")
        .await
        .assert_status(404);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn operators_extend_grace_and_pause_the_clock_with_a_reason(pool: PgPool) {
    use herd_testkit::stripe;
    let secret = "whsec_access_console";
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.stripe_webhook_secrets = vec![secrecy::SecretString::from(secret.to_owned())];
    })
    .await;
    let owner = app
        .signed_up("Léa", "lea@nantes.example", Some("Nantes"))
        .await;
    let org: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = 'nantes'")
        .fetch_one(&pool)
        .await
        .unwrap();
    // The renewal failed two days ago.
    let body = stripe::event(
        "evt_nantes_pastdue",
        "customer.subscription.updated",
        stripe::now() - 2 * 86_400,
        stripe::subscription(
            "sub_Nantes",
            "cus_Nantes",
            "past_due",
            "price_x",
            stripe::now(),
            serde_json::json!({ "herd_org_id": org.to_string() }),
        ),
    )
    .to_string();
    reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", app.base))
        .header(
            "stripe-signature",
            stripe::signature(secret, stripe::now(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    app.run_jobs().await;
    assert!(app
        .mails()
        .await
        .iter()
        .any(|m| m.to == "lea@nantes.example" && m.subject.contains("Payment problem")));
    owner
        .get("/o/nantes/billing")
        .await
        .assert_contains("it will be suspended on");

    let op = enrolled_operator(&app, "ops@provider.example").await;
    let page = op.get("/operator/billing/access/stripe:sub_Nantes").await;
    page.assert_status(200)
        .assert_contains("id=\"access-state\">grace");
    // No reason, bad date: refused, nothing changed.
    let r = op
        .post(
            "/operator/billing/access/stripe:sub_Nantes/grace",
            &[("until", "31/12/2026"), ("reason", " ")],
        )
        .await;
    r.assert_status(422)
        .assert_contains("Enter a date within the next year")
        .assert_contains("Say why");
    let until = (time::OffsetDateTime::now_utc() + time::Duration::days(30))
        .date()
        .to_string();
    op.post(
        "/operator/billing/access/stripe:sub_Nantes/grace",
        &[
            ("until", &until),
            ("reason", "City council votes the budget on the 20th"),
        ],
    )
    .await
    .assert_redirect("/operator/billing/access/stripe:sub_Nantes");
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'billing.access.grace_extended'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        details["reason"],
        "City council votes the budget on the 20th"
    );
    // The customer's banner moves with it.
    let banner = owner.get("/o/nantes/billing").await;
    let d = time::Date::parse(
        &until,
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .unwrap();
    banner.assert_contains(&format!(
        "suspended on {} {} {}",
        d.day(),
        d.month(),
        d.year()
    ));

    op.get("/operator/billing/access/stripe:sub_Nantes").await;
    op.post(
        "/operator/billing/access/stripe:sub_Nantes/clock",
        &[("pause", "1"), ("reason", "Dispute with the bank")],
    )
    .await
    .assert_redirect("/operator/billing/access/stripe:sub_Nantes");
    op.get("/operator/billing/access/stripe:sub_Nantes")
        .await
        .assert_contains("clock paused since");
    op.post(
        "/operator/billing/access/stripe:sub_Nantes/clock",
        &[("pause", "0"), ("reason", "Resolved")],
    )
    .await;
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'billing.access.%' ORDER BY at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "billing.access.grace_extended",
            "billing.access.clock_paused",
            "billing.access.clock_resumed"
        ]
    );
    op.get("/operator/billing/access/stripe:sub_Nobody")
        .await
        .assert_status(404);
}

/// An operator enrolled in two-factor authentication; returns its TOTP secret.
async fn enrolled_secret(app: &TestApp, email: &str) -> String {
    let op = make_operator(app, email).await;
    op.get("/account/2fa").await;
    let r = op.post("/account/2fa/start", &[]).await;
    let secret = r.select_text("#totp-secret").pop().unwrap();
    op.post(
        "/account/2fa/confirm",
        &[("code", &current_code(&secret, 0)), ("password", PASSWORD)],
    )
    .await
    .assert_status(200);
    secret
}

/// A new browser past the password step, at the second factor.
async fn at_second_factor(app: &TestApp, email: &str) -> Client {
    let c = app.client();
    c.get("/login").await;
    c.post("/login", &[("email", email), ("password", PASSWORD)])
        .await
        .assert_redirect("/login/2fa");
    c.get("/login/2fa").await.assert_status(200);
    c
}

/// Even the right password and a right code do not get in for a while.
async fn locked_out(app: &TestApp, email: &str, secret: &str) {
    let c = app.client();
    c.get("/login").await;
    let r = c
        .post("/login", &[("email", email), ("password", PASSWORD)])
        .await;
    if r.status != 429 {
        r.assert_redirect("/login/2fa");
        c.get("/login/2fa").await;
        let r = c
            .post("/login/2fa", &[("code", &current_code(secret, 1))])
            .await;
        r.assert_status(429);
    }
    c.get("/operator/orgs").await.assert_redirect("/login");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn second_factor_failures_are_not_reset_by_the_password(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = "ops@provider.example";
    let secret = enrolled_secret(&app, email).await;
    // The password, then four wrong codes, over and over: the right password does not
    // wipe the second factor's failures.
    for _ in 0..3 {
        let c = at_second_factor(&app, email).await;
        for _ in 0..4 {
            let r = c.post("/login/2fa", &[("code", "000000")]).await;
            assert!(matches!(r.status, 401 | 429), "{}", r.status);
        }
    }
    locked_out(&app, email, &secret).await;
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn parallel_second_factor_guesses_are_limited(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = "ops@provider.example";
    let secret = enrolled_secret(&app, email).await;
    let browsers = futures::future::join_all((0..4).map(|_| at_second_factor(&app, email))).await;
    let guesses = browsers.iter().flat_map(|c| {
        (0..6).map(move |i| async move {
            c.post("/login/2fa", &[("code", &format!("{:06}", 100 + i))])
                .await
                .status
        })
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        checked <= 5,
        "{checked} guesses checked, at most 5 may be: {statuses:?}"
    );
    assert_eq!(
        checked + statuses.iter().filter(|s| **s == 429).count(),
        24,
        "{statuses:?}"
    );
    locked_out(&app, email, &secret).await;
}
