//! Accounts and organizations through the real router, against a real PostgreSQL.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{TestApp, PASSWORD};
use sqlx::PgPool;

async fn audit_actions(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar::<_, String>("SELECT action FROM audit_log ORDER BY at, id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn full_membership_journey(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;

    // Sign-up sends a confirmation link; login is refused until it is followed.
    let alice = app.client();
    alice
        .get("/signup")
        .await
        .assert_status(200)
        .assert_contains("At least 12 characters");
    alice
        .post(
            "/signup",
            &[
                ("name", "Alice Martin"),
                ("email", "Alice@Lyon.example"),
                ("password", PASSWORD),
                ("org_name", "Ville de Lyon"),
            ],
        )
        .await
        .assert_status(200)
        .assert_contains("alice@lyon.example");
    alice.get("/login").await;
    alice
        .post(
            "/login",
            &[("email", "alice@lyon.example"), ("password", PASSWORD)],
        )
        .await
        .assert_status(401)
        .assert_contains("the address is not confirmed yet");

    let link = app.link_in_last_mail_to("alice@lyon.example").await;
    assert!(link.starts_with("/verify-email/"), "{link}");
    // Opening the link changes nothing; the button does.
    alice
        .get(&link)
        .await
        .assert_status(200)
        .assert_contains("Confirm my email address");
    alice
        .post(&link, &[])
        .await
        .assert_status(200)
        .assert_contains("Email confirmed");
    // A reused link is refused.
    alice.get(&link).await;
    alice
        .post(&link, &[])
        .await
        .assert_status(410)
        .assert_contains("already used");

    alice.get("/login").await;
    alice
        .post(
            "/login",
            &[("email", "alice@lyon.example"), ("password", PASSWORD)],
        )
        .await
        .assert_redirect("/orgs");
    let orgs = alice.get("/orgs").await;
    orgs.assert_status(200)
        .assert_contains("Ville de Lyon")
        .assert_contains("Owner");
    alice
        .get("/o/ville-de-lyon")
        .await
        .assert_status(200)
        .assert_contains("You are Owner");

    // A second organization, created later with an explicit short name.
    alice.get("/orgs/new").await;
    alice
        .post(
            "/orgs",
            &[("name", "Lyon Culture"), ("slug", "lyon-culture")],
        )
        .await
        .assert_redirect("/o/lyon-culture");
    alice.get("/orgs/new").await;
    alice
        .post("/orgs", &[("name", "Other"), ("slug", "lyon-culture")])
        .await
        .assert_status(422)
        .assert_contains("This short name is taken");

    // Invite Bob as a member.
    alice
        .get("/o/ville-de-lyon/members")
        .await
        .assert_status(200);
    alice
        .post(
            "/o/ville-de-lyon/invitations",
            &[("email", "bob@lyon.example"), ("role", "member")],
        )
        .await
        .assert_redirect("/o/ville-de-lyon/members");
    alice
        .get("/o/ville-de-lyon/members")
        .await
        .assert_contains("bob@lyon.example")
        .assert_contains("Open invitations");
    let invite = app.link_in_last_mail_to("bob@lyon.example").await;
    assert!(invite.starts_with("/invitations/"), "{invite}");

    // Bob has no account yet: the invitation page asks him to log in or sign up.
    let bob = app.signed_up("Bob Durand", "bob@lyon.example", None).await;
    bob.get("/o/ville-de-lyon").await.assert_status(404);
    bob.get(&invite)
        .await
        .assert_status(200)
        .assert_contains("Accept invitation")
        .assert_contains("Member");
    bob.post(&format!("{invite}/accept"), &[])
        .await
        .assert_redirect("/o/ville-de-lyon");
    bob.get("/o/ville-de-lyon")
        .await
        .assert_status(200)
        .assert_contains("You are Member");
    // The link is single-use.
    bob.get(&invite).await.assert_status(410);

    // A member cannot manage members.
    let bob_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'bob@lyon.example'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let alice_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'alice@lyon.example'")
            .fetch_one(&pool)
            .await
            .unwrap();
    bob.get("/o/ville-de-lyon/members").await.assert_status(200);
    bob.post(
        &format!("/o/ville-de-lyon/members/{alice_id}/role"),
        &[("role", "member")],
    )
    .await
    .assert_status(403);

    // Alice makes Bob an admin.
    alice.get("/o/ville-de-lyon/members").await;
    alice
        .post(
            &format!("/o/ville-de-lyon/members/{bob_id}/role"),
            &[("role", "admin")],
        )
        .await
        .assert_redirect("/o/ville-de-lyon/members");
    bob.get("/o/ville-de-lyon")
        .await
        .assert_contains("You are Admin");

    // An admin cannot demote the owner; the last owner cannot demote herself or leave.
    bob.get("/o/ville-de-lyon/members").await;
    bob.post(
        &format!("/o/ville-de-lyon/members/{alice_id}/role"),
        &[("role", "member")],
    )
    .await
    .assert_redirect("/o/ville-de-lyon/members");
    bob.get("/o/ville-de-lyon/members")
        .await
        .assert_contains("Only an owner can");
    alice.get("/o/ville-de-lyon/members").await;
    alice
        .post(
            &format!("/o/ville-de-lyon/members/{alice_id}/role"),
            &[("role", "admin")],
        )
        .await;
    alice
        .get("/o/ville-de-lyon/members")
        .await
        .assert_contains("The last owner cannot");
    alice
        .get("/o/ville-de-lyon/leave")
        .await
        .assert_status(200)
        .assert_contains("Leave Ville de Lyon?");
    alice
        .post("/o/ville-de-lyon/leave", &[])
        .await
        .assert_redirect("/o/ville-de-lyon");
    let role: String = sqlx::query_scalar("SELECT role FROM memberships m JOIN users u ON u.id = m.user_id WHERE u.email = 'alice@lyon.example' AND m.org_id = (SELECT id FROM organizations WHERE slug = 'ville-de-lyon')")
        .fetch_one(&pool).await.unwrap();
    assert_eq!(role, "owner");

    // Removal asks for confirmation, then takes effect at once.
    alice
        .get(&format!("/o/ville-de-lyon/members/{bob_id}/remove"))
        .await
        .assert_status(200)
        .assert_contains("Remove Bob Durand?");
    alice
        .post(&format!("/o/ville-de-lyon/members/{bob_id}/remove"), &[])
        .await
        .assert_redirect("/o/ville-de-lyon/members");
    bob.get("/o/ville-de-lyon").await.assert_status(404);

    let actions = audit_actions(&pool).await;
    for expected in [
        "user.signed_up",
        "org.created",
        "user.email_verified",
        "user.logged_in",
        "org.member.invited",
        "org.member.joined",
        "org.member.role_changed",
        "org.member.removed",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from audit log: {actions:?}"
        );
    }
    // Refused changes are not logged as changes.
    let role_changes = actions
        .iter()
        .filter(|a| *a == "org.member.role_changed")
        .count();
    assert_eq!(role_changes, 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn bad_sign_up_input_is_shown_and_changes_nothing(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let c = app.client();
    c.get("/signup").await;
    let r = c
        .post(
            "/signup",
            &[
                ("name", ""),
                ("email", "not-an-email"),
                ("password", "Password1234"),
                ("org_name", ""),
            ],
        )
        .await;
    r.assert_status(422)
        .assert_contains("Enter your name")
        .assert_contains("Enter an email address like");
    c.get("/signup").await;
    let r = c
        .post(
            "/signup",
            &[
                ("name", "Eve"),
                ("email", "eve@example.org"),
                ("password", "Password1234"),
                ("org_name", ""),
            ],
        )
        .await;
    r.assert_status(422).assert_contains("breached passwords");
    assert_eq!(
        r.field_value("password").unwrap_or_default(),
        "",
        "the password is not echoed back"
    );
    assert_eq!(
        r.field_value("email").as_deref(),
        Some("eve@example.org"),
        "other fields are kept"
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 0);
    assert!(app.mails().await.is_empty());

    // A taken address makes no second account (and the page does not say it is taken:
    // see account_security.rs).
    app.signed_up("Eve", "eve@example.org", None).await;
    let c = app.client();
    c.get("/signup").await;
    c.post(
        "/signup",
        &[
            ("name", "Eve 2"),
            ("email", "EVE@example.org"),
            ("password", PASSWORD),
            ("org_name", ""),
        ],
    )
    .await
    .assert_status(200)
    .assert_contains("Check your inbox");
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn wrong_password_and_rate_limit(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.signed_up("Carol", "carol@example.org", None).await;
    let c = app.client();
    c.get("/login").await;
    c.post(
        "/login",
        &[
            ("email", "carol@example.org"),
            ("password", "wrong password here"),
        ],
    )
    .await
    .assert_status(401)
    .assert_contains("Wrong email or password");
    // Unknown accounts get the same answer.
    c.post(
        "/login",
        &[
            ("email", "nobody@example.org"),
            ("password", "wrong password here"),
        ],
    )
    .await
    .assert_status(401)
    .assert_contains("Wrong email or password");
    for _ in 0..4 {
        c.post(
            "/login",
            &[
                ("email", "carol@example.org"),
                ("password", "wrong password here"),
            ],
        )
        .await
        .assert_status(401);
    }
    // Five failures: even the right password is refused for a while.
    c.post(
        "/login",
        &[("email", "carol@example.org"), ("password", PASSWORD)],
    )
    .await
    .assert_status(429)
    .assert_contains("Too many failed attempts for this account");

    // Per address: many accounts tried from one IP (a fresh count for this part).
    sqlx::query("DELETE FROM login_attempts")
        .execute(&pool)
        .await
        .unwrap();
    let app2 = TestApp::spawn_with(pool.clone(), |cfg| cfg.login_max_per_ip = 3).await;
    let d = app2.client();
    d.get("/login").await;
    for i in 0..3 {
        d.post(
            "/login",
            &[
                ("email", &format!("x{i}@example.org")),
                ("password", "wrong password here"),
            ],
        )
        .await
        .assert_status(401);
    }
    d.post(
        "/login",
        &[
            ("email", "x9@example.org"),
            ("password", "wrong password here"),
        ],
    )
    .await
    .assert_status(429)
    .assert_contains("from your network");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn expired_and_unknown_links(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let c = app.client();
    c.get("/signup").await;
    c.post(
        "/signup",
        &[
            ("name", "Dan"),
            ("email", "dan@example.org"),
            ("password", PASSWORD),
            ("org_name", ""),
        ],
    )
    .await
    .assert_status(200);
    let link = app.link_in_last_mail_to("dan@example.org").await;
    sqlx::query("UPDATE user_tokens SET expires_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    c.get(&link).await;
    c.post(&link, &[])
        .await
        .assert_status(410)
        .assert_contains("expired");
    let verified: bool = sqlx::query_scalar("SELECT email_verified_at IS NOT NULL FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!verified);
    c.get("/verify-email/not-a-token").await;
    c.post("/verify-email/not-a-token", &[])
        .await
        .assert_status(404);

    // A new link works.
    c.get("/verify-email/resend").await;
    c.post("/verify-email/resend", &[("email", "dan@example.org")])
        .await
        .assert_redirect("/login");
    let link2 = app.link_in_last_mail_to("dan@example.org").await;
    assert_ne!(link, link2);
    c.get(&link2).await;
    c.post(&link2, &[]).await.assert_status(200);

    // An expired invitation cannot be accepted.
    let owner = app
        .signed_up("Olga", "olga@example.org", Some("Olga Org"))
        .await;
    owner.get("/o/olga-org/members").await;
    owner
        .post(
            "/o/olga-org/invitations",
            &[("email", "dan@example.org"), ("role", "billing")],
        )
        .await
        .assert_redirect("/o/olga-org/members");
    let invite = app.link_in_last_mail_to("dan@example.org").await;
    sqlx::query("UPDATE invitations SET expires_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    c.get("/login").await;
    c.post(
        "/login",
        &[("email", "dan@example.org"), ("password", PASSWORD)],
    )
    .await
    .assert_redirect("/orgs");
    c.get(&invite)
        .await
        .assert_status(410)
        .assert_contains("expired");
    c.post(&format!("{invite}/accept"), &[])
        .await
        .assert_status(410);
    c.get("/o/olga-org").await.assert_status(404);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn password_reset_is_single_use_and_expires(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    // Erin is logged in on another device.
    let elsewhere = app.signed_up("Erin", "erin@example.org", None).await;
    elsewhere.get("/orgs").await.assert_status(200);
    let c = app.client();
    c.get("/password/forgot").await;
    c.post("/password/forgot", &[("email", "erin@example.org")])
        .await
        .assert_redirect("/login");
    // Unknown addresses get the same answer and no email.
    let before = app.mails().await.len();
    c.get("/password/forgot").await;
    c.post("/password/forgot", &[("email", "nobody@example.org")])
        .await
        .assert_redirect("/login");
    assert_eq!(app.mails().await.len(), before);

    let link = app.link_in_last_mail_to("erin@example.org").await;
    assert!(link.starts_with("/password/reset/"), "{link}");
    c.get(&link).await.assert_status(200);
    c.post(&link, &[("password", "short")])
        .await
        .assert_status(422)
        .assert_contains("at least 12");
    c.get(&link).await.assert_status(200);
    let new_password = "another long harbour pass";
    c.post(&link, &[("password", new_password)])
        .await
        .assert_redirect("/login");
    c.get(&link).await.assert_status(410);
    // The reset ended every session opened with the old password.
    elsewhere.get("/orgs").await.assert_redirect("/login?next=");

    c.get("/login").await;
    c.post(
        "/login",
        &[("email", "erin@example.org"), ("password", PASSWORD)],
    )
    .await
    .assert_status(401);
    c.post(
        "/login",
        &[("email", "erin@example.org"), ("password", new_password)],
    )
    .await
    .assert_redirect("/orgs");

    // Expired reset link.
    c.get("/password/forgot").await;
    c.post("/password/forgot", &[("email", "erin@example.org")])
        .await;
    let link = app.link_in_last_mail_to("erin@example.org").await;
    sqlx::query(
        "UPDATE user_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
    )
    .execute(&pool)
    .await
    .unwrap();
    c.get(&link)
        .await
        .assert_status(410)
        .assert_contains("expired");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn forms_without_the_csrf_token_are_refused(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let alice = app
        .signed_up("Alice", "alice@example.org", Some("Acme"))
        .await;
    alice.get("/orgs/new").await;
    alice
        .post_raw("/orgs", &[("name", "Sneaky")])
        .await
        .assert_status(403)
        .assert_contains("Form expired");
    alice
        .post_raw("/orgs", &[("name", "Sneaky"), ("csrf_token", "forged")])
        .await
        .assert_status(403);
    alice.post_raw("/logout", &[]).await.assert_status(403);
    let anon = app.client();
    anon.post_raw(
        "/login",
        &[("email", "alice@example.org"), ("password", PASSWORD)],
    )
    .await
    .assert_status(403);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "nothing was created");
    // With the token it works.
    alice.get("/orgs/new").await;
    alice
        .post("/orgs", &[("name", "Sneaky")])
        .await
        .assert_redirect("/o/sneaky");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn session_id_rotates_at_login_and_cookie_is_locked_down(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.signed_up("Finn", "finn@example.org", None).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/login", app.base))
        .send()
        .await
        .unwrap();
    let cookie = page
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http in tests: {cookie}");
    let before = cookie.split(';').next().unwrap().to_owned();
    let body = page.text().await.unwrap();
    let token = body
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let resp = http
        .post(format!("{}/login", app.base))
        .header("cookie", &before)
        .form(&[
            ("email", "finn@example.org"),
            ("password", PASSWORD),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let after = resp
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(before, after, "the session id changes at login");
    // The old id no longer carries the login.
    let old = http
        .get(format!("{}/orgs", app.base))
        .header("cookie", &before)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 303);
    let new = http
        .get(format!("{}/orgs", app.base))
        .header("cookie", &after)
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn pricing_renders_plans_from_the_database(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let c = app.client();
    let r = c.get("/pricing").await;
    r.assert_status(200)
        .assert_contains("49.00 EUR")
        .assert_contains("Institution");
    sqlx::query("UPDATE plans SET name = 'Civic', price_minor = 12345 WHERE code = 'community'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE plans SET active = false WHERE code = 'institution'")
        .execute(&pool)
        .await
        .unwrap();
    let r = c.get("/pricing").await;
    r.assert_contains("Civic").assert_contains("123.45 EUR");
    assert!(!r.body.contains("Institution"));
}

/// Account emails go through the job queue: queued with the sign-up (no token in the
/// queue: it is made when the email is built), kept and retried while the mail server is
/// down, sent once it answers; an invitation revoked before its email left sends nothing.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn account_emails_are_queued_retried_and_carry_no_secret_in_the_queue(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let c = app.client();
    c.get("/signup").await;
    c.post(
        "/signup",
        &[
            ("name", "Gaëlle"),
            ("email", "gaelle@example.org"),
            ("password", PASSWORD),
            ("org_name", ""),
        ],
    )
    .await
    .assert_status(200)
    .assert_contains("on its way to");
    // Queued, not sent; no token exists yet, and the job's payload names only the user.
    let payload: serde_json::Value =
        sqlx::query_scalar("SELECT payload FROM jobs WHERE kind = 'accounts.send_verification'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(payload.get("user_id").is_some(), "{payload}");
    assert!(!payload.to_string().contains("verify-email"), "{payload}");
    let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM user_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tokens, 0);
    assert!(herd_mail::read_outbox(&app.outbox)
        .unwrap_or_default()
        .is_empty());

    // The mail server is down: the attempt fails and the email waits, nothing lost.
    let down = herd_mail::Mailer::smtp("smtp://127.0.0.1:1", "Herd <noreply@herd.test>").unwrap();
    let mut r = herd_jobs::Registry::new();
    herd_web::emails::register(&mut r, &pool, &down);
    let settings = herd_testkit::jobs::fast_settings();
    herd_jobs::Runner::new(pool.clone(), r, settings)
        .drain()
        .await
        .unwrap();
    let (state, attempts): (String, i32) = sqlx::query_as(
        "SELECT state, attempts FROM jobs WHERE kind = 'accounts.send_verification'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(state, "queued", "kept for a retry");
    assert!(attempts >= 1);
    assert!(herd_mail::read_outbox(&app.outbox)
        .unwrap_or_default()
        .is_empty());

    // It answers again: the retry sends one email whose link works once.
    sqlx::query("UPDATE jobs SET run_at = now() WHERE kind = 'accounts.send_verification'")
        .execute(&pool)
        .await
        .unwrap();
    let link = app.link_in_last_mail_to("gaelle@example.org").await;
    assert_eq!(
        app.mails()
            .await
            .iter()
            .filter(|m| m.to.contains("gaelle@example.org"))
            .count(),
        1
    );
    c.get(&link).await.assert_status(200);
    c.post(&link, &[]).await.assert_status(200);
    c.post(&link, &[]).await.assert_status(410);

    // An invitation revoked before its email left: no email goes out.
    let owner = app
        .signed_up("Hugo", "hugo@lyon.example", Some("Lyon"))
        .await;
    owner.get("/o/lyon/members").await;
    owner
        .post(
            "/o/lyon/invitations",
            &[("email", "ines@lyon.example"), ("role", "member")],
        )
        .await
        .assert_redirect("/o/lyon/members");
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM invitations")
        .fetch_one(&pool)
        .await
        .unwrap();
    owner.get("/o/lyon/members").await;
    owner
        .post(&format!("/o/lyon/invitations/{id}/revoke"), &[])
        .await
        .assert_redirect("/o/lyon/members");
    assert!(!app
        .mails()
        .await
        .iter()
        .any(|m| m.to.contains("ines@lyon.example")));
}

/// `next` values a browser would take off-site (it drops tabs and newlines, reads `\` as
/// `/`, follows `//host`), or that are not paths at all.
const OFF_SITE_NEXT: &[&str] = &[
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "/%5Cevil.example",
    "/%09/evil.example",
    "https://evil.example",
    "http:/evil.example",
    "javascript:alert(1)",
    "evil.example",
    " /orgs",
    "/ /evil.example",
    "/o\u{0}x",
    "/o\u{1b}x",
    "/o\u{7f}x",
    "/\u{3002}/evil.example",
    "",
];

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn login_follows_next_only_to_a_path_on_this_site(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.signed_up("Nina", "nina@example.org", None).await;
    let login = |next: String| {
        let c = app.client();
        async move {
            c.get("/login").await.assert_status(200);
            let r = c
                .post(
                    "/login",
                    &[
                        ("email", "nina@example.org"),
                        ("password", PASSWORD),
                        ("next", &next),
                    ],
                )
                .await;
            (c, r)
        }
    };
    for next in OFF_SITE_NEXT {
        let (c, r) = login((*next).to_owned()).await;
        assert_eq!(r.status, 303, "next={next:?}: {}", r.body);
        assert_eq!(r.location.as_deref(), Some("/orgs"), "next={next:?}");
        // Already logged in, the login page sends `next` on too: the same check.
        let query: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let r = c.get(&format!("/login?next={query}")).await;
        assert_eq!(r.location.as_deref(), Some("/orgs"), "GET next={next:?}");
    }
    // A path on this site is followed, query and all.
    let (c, r) = login("/account/2fa?from=login".to_owned()).await;
    r.assert_redirect("/account/2fa?from=login");
    c.get("/login?next=%2Faccount")
        .await
        .assert_redirect("/account");
}

/// A browser behind the reverse proxy: logs in with `X-Forwarded-For: xff` (as the proxy
/// passes it on) and returns the status.
async fn login_through_proxy(app: &TestApp, xff: &str, email: &str) -> u16 {
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/login", app.base))
        .header("x-forwarded-for", xff)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = page
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    http.post(format!("{}/login", app.base))
        .header("x-forwarded-for", xff)
        .form(&[
            ("email", email),
            ("password", "wrong password here"),
            ("csrf_token", &token),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn behind_a_proxy_the_address_it_saw_is_throttled(pool: PgPool) {
    // One trusted proxy: the client is the last X-Forwarded-For entry, the one the proxy
    // added; whatever the client sent before it is its own say-so.
    let app = TestApp::spawn_with(pool.clone(), |cfg| {
        cfg.trust_proxy = true;
        cfg.login_max_per_ip = 3;
    })
    .await;
    for i in 0..3 {
        let xff = format!("10.9.0.{i}, 198.51.100.7");
        let status = login_through_proxy(&app, &xff, &format!("x{i}@example.org")).await;
        assert_eq!(status, 401, "{xff}");
    }
    let status = login_through_proxy(&app, "10.9.0.99, 198.51.100.7", "y@example.org").await;
    assert_eq!(status, 429, "a forged first entry does not reset the count");
    let status = login_through_proxy(&app, "198.51.100.8", "y@example.org").await;
    assert_eq!(status, 401, "another client is not throttled");

    // Two trusted proxies: the client is the second entry from the right.
    let app = TestApp::spawn_with(pool, |cfg| {
        cfg.trust_proxy = true;
        cfg.trusted_proxy_hops = 2;
        cfg.login_max_per_ip = 3;
    })
    .await;
    for i in 0..3 {
        let xff = format!("10.8.0.{i}, 192.0.2.5, 10.0.0.1");
        let status = login_through_proxy(&app, &xff, &format!("z{i}@example.org")).await;
        assert_eq!(status, 401, "{xff}");
    }
    let status = login_through_proxy(&app, "10.8.0.99, 192.0.2.5, 10.0.0.2", "w@example.org").await;
    assert_eq!(status, 429);
    let status = login_through_proxy(&app, "192.0.2.6, 10.0.0.1", "w@example.org").await;
    assert_eq!(status, 401);
}
