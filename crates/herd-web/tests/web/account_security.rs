//! What protects an account beyond its password: turning off or moving the second factor
//! asks for the password (and operators keep theirs) and ends the other sessions, secrets
//! are never cached, neither sign-up nor login tells who has an account, idle sessions
//! end, a password reset and the lockout, and pages while mail is down.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{Client, TestApp, PASSWORD};
use herd_web::totp;
use sqlx::PgPool;

fn code(secret: &str, offset_steps: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    totp::code_at(
        &totp::base32_decode(secret).unwrap(),
        totp::step_of(now) + offset_steps,
    )
}

/// Turns two-factor authentication on for `c`'s user; returns the secret.
async fn enrol(c: &Client) -> String {
    c.get("/account/2fa").await.assert_status(200);
    let r = c.post("/account/2fa/start", &[]).await;
    let secret = r.select_text("#totp-secret").pop().unwrap();
    c.post(
        "/account/2fa/confirm",
        &[("code", &code(&secret, 0)), ("password", PASSWORD)],
    )
    .await
    .assert_status(200);
    secret
}

/// The user's TOTP secret while two-factor authentication is on.
async fn active_secret(pool: &PgPool, email: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT totp_secret FROM users WHERE email = $1 AND totp_enabled_at IS NOT NULL",
    )
    .bind(email)
    .fetch_optional(pool)
    .await
    .unwrap()
    .flatten()
}

/// The audit entries of `action`: their details.
async fn audited(pool: &PgPool, action: &str) -> Vec<serde_json::Value> {
    sqlx::query_scalar("SELECT details FROM audit_log WHERE action = $1 ORDER BY at, id")
        .bind(action)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn turning_off_two_factor_asks_for_the_password(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = "mona@example.org";
    let c = app.signed_up("Mona", email, None).await;
    let secret = enrol(&c).await;

    // The session alone is not enough: no answer, a wrong password, a code.
    c.get("/account/2fa/disable")
        .await
        .assert_status(200)
        .assert_contains("id=\"credential\"");
    c.post("/account/2fa/disable", &[])
        .await
        .assert_status(422)
        .assert_contains("Enter your password");
    c.post(
        "/account/2fa/disable",
        &[("credential", "not my password at all")],
    )
    .await
    .assert_status(401)
    .assert_contains("Nothing was changed");
    c.post("/account/2fa/disable", &[("credential", "000000")])
        .await
        .assert_status(401);
    // A current code is not enough either (the code of the next step: this one was used
    // at set-up).
    c.post("/account/2fa/disable", &[("credential", &code(&secret, 1))])
        .await
        .assert_status(401);
    assert_eq!(active_secret(&pool, email).await.as_deref(), Some(&*secret));
    assert!(audited(&pool, "user.2fa_disabled").await.is_empty());

    // The password does it.
    c.post("/account/2fa/disable", &[("credential", PASSWORD)])
        .await
        .assert_redirect("/account");
    assert_eq!(active_secret(&pool, email).await, None);
    let how: Vec<_> = audited(&pool, "user.2fa_disabled")
        .await
        .iter()
        .map(|d| d["confirmed_by"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(how, ["password"]);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn wrong_answers_before_turning_off_two_factor_are_throttled(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = "nils@example.org";
    let c = app.signed_up("Nils", email, None).await;
    let secret = enrol(&c).await;
    c.get("/account/2fa/disable").await;
    for i in 0..5 {
        c.post(
            "/account/2fa/disable",
            &[("credential", &format!("{:06}", 100 + i))],
        )
        .await
        .assert_status(401);
    }
    // The sixth try is not even checked: the right code waits too.
    c.post("/account/2fa/disable", &[("credential", &code(&secret, 1))])
        .await
        .assert_status(429)
        .assert_contains("Too many");
    assert_eq!(active_secret(&pool, email).await.as_deref(), Some(&*secret));
    // The wrong answers count against the account at login too.
    let d = app.client();
    d.get("/login").await;
    let r = d
        .post("/login", &[("email", email), ("password", PASSWORD)])
        .await;
    assert_eq!(r.status, 429, "the account's count is shared: {}", r.body);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn moving_two_factor_to_a_new_app_needs_the_password_and_a_code_from_the_new_app(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = "olga@example.org";
    let c = app.signed_up("Olga", email, None).await;
    let old = enrol(&c).await;

    // A wrong answer: no new secret is shown, nothing changes.
    c.get("/account/2fa").await;
    let r = c
        .post(
            "/account/2fa/replace",
            &[("credential", "wrong password here")],
        )
        .await;
    r.assert_status(401).assert_contains("Nothing was changed");
    assert!(r.select_text("#totp-secret").is_empty(), "{}", r.body);

    // The password: a new secret to scan; the old one stays in force meanwhile.
    let r = c
        .post("/account/2fa/replace", &[("credential", PASSWORD)])
        .await;
    r.assert_status(200).assert_contains("<svg");
    let new = r.select_text("#totp-secret").pop().unwrap();
    assert_ne!(new, old);
    assert_eq!(active_secret(&pool, email).await.as_deref(), Some(&*old));
    c.post(
        "/account/2fa/replace/confirm",
        &[("secret", &new), ("code", "000000")],
    )
    .await
    .assert_status(422)
    .assert_contains("does not match");
    assert_eq!(active_secret(&pool, email).await.as_deref(), Some(&*old));

    // A secret of the caller's choosing (not the one shown after the proof) is refused,
    // even with a right code for it.
    let forged = totp::new_secret();
    c.post(
        "/account/2fa/replace/confirm",
        &[("secret", &forged), ("code", &code(&forged, 0))],
    )
    .await
    .assert_redirect("/account/2fa");
    assert_eq!(active_secret(&pool, email).await.as_deref(), Some(&*old));

    // A code from the new app: it is the account's factor now, with new recovery codes.
    let r = c
        .post(
            "/account/2fa/replace/confirm",
            &[("secret", &new), ("code", &code(&new, 0))],
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.select_text("#recovery-codes li").len(), 10);
    assert_eq!(active_secret(&pool, email).await.as_deref(), Some(&*new));
    let how: Vec<_> = audited(&pool, "user.2fa_replaced")
        .await
        .iter()
        .map(|d| d["confirmed_by"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(how, ["password"]);

    // Logging in takes the new app's code, not the old one's.
    let d = app.client();
    d.get("/login").await;
    d.post("/login", &[("email", email), ("password", PASSWORD)])
        .await
        .assert_redirect("/login/2fa");
    d.get("/login/2fa").await;
    d.post("/login/2fa", &[("code", &code(&old, 1))])
        .await
        .assert_status(401);
    d.post("/login/2fa", &[("code", &code(&new, 1))])
        .await
        .assert_redirect("/orgs");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn operators_cannot_turn_off_two_factor(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = "ops@provider.example";
    let op = app.operator(email).await;
    let secret = active_secret(&pool, email).await.unwrap();
    let account = op.get("/account").await;
    assert!(
        !account.body.contains("/account/2fa/disable"),
        "{}",
        account.body
    );
    op.get("/account/2fa/disable")
        .await
        .assert_status(200)
        .assert_contains("Operators keep two-factor authentication");
    // Even with the right password and a right code.
    for credential in [PASSWORD.to_owned(), code(&secret, 1)] {
        op.get("/account/2fa").await;
        op.post("/account/2fa/disable", &[("credential", &credential)])
            .await
            .assert_status(403)
            .assert_contains("console needs it");
    }
    assert_eq!(active_secret(&pool, email).await.as_deref(), Some(&*secret));
    op.get("/operator/orgs").await.assert_status(200);
    assert!(audited(&pool, "user.2fa_disabled").await.is_empty());

    // Moving it to a new app is how an operator changes phones; the console stays open.
    op.get("/account/2fa").await;
    let r = op
        .post("/account/2fa/replace", &[("credential", PASSWORD)])
        .await;
    let new = r.select_text("#totp-secret").pop().unwrap();
    op.post(
        "/account/2fa/replace/confirm",
        &[("secret", &new), ("code", &code(&new, 0))],
    )
    .await
    .assert_status(200);
    op.get("/operator/orgs").await.assert_status(200);
    let how: Vec<_> = audited(&pool, "user.2fa_replaced")
        .await
        .iter()
        .map(|d| d["confirmed_by"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(how, ["password"]);
}

/// The sign-up's answer with the address and the CSRF token taken out.
fn comparable(body: &str, address: &str, csrf: Option<String>) -> String {
    let mut body = body.replace(address, "ADDRESS");
    if let Some(t) = csrf {
        body = body.replace(&t, "TOKEN");
    }
    body
}

async fn sign_up(app: &TestApp, email: &str) -> (u16, String) {
    let c = app.client();
    c.get("/signup").await.assert_status(200);
    let r = c
        .post(
            "/signup",
            &[
                ("name", "Someone"),
                ("email", email),
                ("password", "a fresh long passphrase"),
                ("org_name", "Somewhere"),
            ],
        )
        .await;
    (r.status, comparable(&r.body, email, c.csrf()))
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn sign_up_does_not_tell_whether_an_address_has_an_account(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.signed_up("Paula", "paula@example.org", Some("Paula's"))
        .await;
    let mails_before = app.mails().await.len();

    let hour = || {
        time::OffsetDateTime::now_utc()
            .unix_timestamp()
            .div_euclid(3600)
    };
    let first_hour = hour();
    let fresh = sign_up(&app, "petra@example.org").await;
    let taken = sign_up(&app, "paula@example.org").await;
    assert_eq!(fresh.0, 200);
    assert_eq!(
        taken, fresh,
        "the same page for a taken address as for a new one"
    );

    // No second account and no organization for the second try; Paula gets an email
    // with the ways in, Petra her confirmation link.
    let accounts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'paula@example.org'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(accounts, 1);
    let orgs: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(orgs, 2, "Paula's and Petra's");
    let mail = app.last_mail_to("paula@example.org").await;
    assert_eq!(mail.subject, "You already have a Herd account");
    assert!(
        mail.body.contains(&format!("{}/login", app.base)),
        "{mail:?}"
    );
    assert!(
        mail.body.contains(&format!("{}/password/forgot", app.base)),
        "{mail:?}"
    );
    assert!(app
        .last_mail_to("petra@example.org")
        .await
        .first_link()
        .unwrap()
        .contains("/verify-email/"));
    assert_eq!(app.mails().await.len(), mails_before + 2);
    assert_eq!(
        audited(&pool, "user.signed_up_with_existing_email")
            .await
            .len(),
        1
    );

    // Trying again and again does not flood Paula's inbox: one such email an hour.
    for _ in 0..3 {
        assert_eq!(sign_up(&app, "paula@example.org").await, fresh);
    }
    let new_hour = usize::from(hour() != first_hour);
    assert_eq!(app.mails().await.len(), mails_before + 2 + new_hour);
    // Her password is still hers.
    let c = app.client();
    c.get("/login").await;
    c.post(
        "/login",
        &[("email", "paula@example.org"), ("password", PASSWORD)],
    )
    .await
    .assert_redirect("/orgs");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_idle_session_ends_and_use_keeps_it_alive(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let c = app.signed_up("Quentin", "quentin@example.org", None).await;
    c.get("/orgs").await.assert_status(200);
    let expiry = || async {
        sqlx::query_scalar::<_, time::OffsetDateTime>(
            "SELECT max(expiry_date) FROM tower_sessions.session",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let limit = herd_web::session::IDLE_TIMEOUT;
    assert_eq!(limit, time::Duration::days(7));

    // Last used almost seven days ago: still logged in, and any request (here one that
    // only redirects, no page) starts the seven days again.
    sqlx::query("UPDATE tower_sessions.session SET expiry_date = now() + interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    c.get("/login").await.assert_redirect("/orgs");
    let left = expiry().await - time::OffsetDateTime::now_utc();
    assert!(
        left > limit - time::Duration::minutes(1) && left <= limit,
        "the session lives {left} more after a request"
    );
    c.get("/orgs").await.assert_status(200);

    // Unused for longer than the limit: over, the login page asks again.
    sqlx::query("UPDATE tower_sessions.session SET expiry_date = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    c.get("/orgs").await.assert_redirect("/login?next=");
    c.get("/account").await.assert_redirect("/login?next=");
}

/// Fails `n` logins of `email` with a wrong password.
async fn fail_logins(app: &TestApp, email: &str, n: usize) {
    let c = app.client();
    c.get("/login").await;
    for _ in 0..n {
        c.post(
            "/login",
            &[("email", email), ("password", "wrong password here")],
        )
        .await
        .assert_status(401);
    }
}

async fn reset_password(app: &TestApp, email: &str, new_password: &str) {
    let c = app.client();
    c.get("/password/forgot").await;
    c.post("/password/forgot", &[("email", email)])
        .await
        .assert_redirect("/login");
    let link = app.link_in_last_mail_to(email).await;
    c.get(&link).await.assert_status(200);
    c.post(&link, &[("password", new_password)])
        .await
        .assert_redirect("/login");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_password_reset_lifts_the_password_lockout_but_not_the_second_factors(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = "rita@example.org";
    app.signed_up("Rita", email, None).await;
    fail_logins(&app, email, 5).await;
    let c = app.client();
    c.get("/login").await;
    c.post("/login", &[("email", email), ("password", PASSWORD)])
        .await
        .assert_status(429)
        .assert_contains("or reset your password");

    // As the page says: a reset (which proves the mailbox) lets her in at once.
    let new_password = "another long harbour pass";
    reset_password(&app, email, new_password).await;
    c.post("/login", &[("email", email), ("password", new_password)])
        .await
        .assert_redirect("/orgs");

    // The second factor's own count is not lifted by a reset: the link does not prove the
    // second factor.
    let email = "sven@example.org";
    let s = app.signed_up("Sven", email, None).await;
    let secret = enrol(&s).await;
    for _ in 0..2 {
        let c = app.client();
        c.get("/login").await;
        c.post("/login", &[("email", email), ("password", PASSWORD)])
            .await
            .assert_redirect("/login/2fa");
        c.get("/login/2fa").await;
        for i in 0..3 {
            let r = c
                .post("/login/2fa", &[("code", &format!("{:06}", 100 + i))])
                .await;
            assert!(matches!(r.status, 401 | 429), "{}", r.status);
        }
    }
    reset_password(&app, email, new_password).await;
    let c = app.client();
    c.get("/login").await;
    c.post("/login", &[("email", email), ("password", new_password)])
        .await
        .assert_redirect("/login/2fa");
    c.get("/login/2fa").await;
    c.post("/login/2fa", &[("code", &code(&secret, 1))])
        .await
        .assert_status(429);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn pages_that_send_email_answer_while_the_mail_server_is_down(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.signed_up("Tom", "tom@example.org", None).await;
    let sent_before = app.mails().await.len();

    // The mail server is down. Asking for a reset, for a new confirmation link, and
    // signing up (new, and with a taken address) all answer as usual.
    let c = app.client();
    c.get("/password/forgot").await;
    c.post("/password/forgot", &[("email", "tom@example.org")])
        .await
        .assert_redirect("/login");
    c.get("/login")
        .await
        .assert_contains("a link to reset its password is on its way");
    let (status, page) = sign_up(&app, "uma@example.org").await;
    assert_eq!(status, 200);
    assert!(page.contains("Check your inbox"), "{page}");
    assert_eq!(sign_up(&app, "tom@example.org").await, (status, page));
    c.get("/verify-email/resend").await;
    c.post("/verify-email/resend", &[("email", "uma@example.org")])
        .await
        .assert_redirect("/login");

    let down = herd_mail::Mailer::smtp("smtp://127.0.0.1:1", "Herd <noreply@herd.test>").unwrap();
    let mut registry = herd_jobs::Registry::new();
    herd_web::emails::register(&mut registry, &pool, &down);
    // Retries an hour apart at first, so that this drain makes one attempt each.
    let settings = herd_jobs::Settings {
        retry_base: std::time::Duration::from_secs(3600),
        ..herd_testkit::jobs::fast_settings()
    };
    herd_jobs::Runner::new(pool.clone(), registry, settings)
        .drain()
        .await
        .unwrap();
    // Each email tried, failed, and kept for a retry: none lost, none sent.
    let jobs: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT kind, state, attempts, last_error FROM jobs
          WHERE kind LIKE 'accounts.%' AND state <> 'done' ORDER BY kind",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let kinds: Vec<&str> = jobs.iter().map(|j| j.0.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "accounts.send_account_exists",
            "accounts.send_password_reset",
            "accounts.send_verification",
            "accounts.send_verification",
        ],
        "{jobs:#?}"
    );
    for (kind, state, attempts, error) in &jobs {
        assert_eq!(state, "queued", "{kind}");
        assert!(*attempts >= 1, "{kind}");
        assert!(error.is_some(), "{kind}: the failure is on Console → Jobs");
    }
    assert_eq!(
        herd_mail::read_outbox(&app.outbox).unwrap().len(),
        sent_before
    );

    // The mail server answers again: each email goes out once.
    sqlx::query("UPDATE jobs SET run_at = now() WHERE state = 'queued'")
        .execute(&pool)
        .await
        .unwrap();
    let mails = app.mails().await;
    let to = |who: &str| mails.iter().filter(|m| m.to.contains(who)).count();
    assert_eq!(mails.len(), sent_before + 4, "{mails:#?}");
    assert_eq!(
        to("tom@example.org"),
        1 + 2,
        "confirmation, reset, taken address"
    );
    assert_eq!(to("uma@example.org"), 2, "confirmation, and the new link");
}

/// A session alone cannot put an authenticator on an account that has none: whoever took
/// it over would lock the owner out with a second factor of their own.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn turning_on_two_factor_asks_for_the_password(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let c = app.signed_up("Léa", "lea@lyon.example", None).await;
    c.get("/account/2fa").await.assert_status(200);
    let r = c.post("/account/2fa/start", &[]).await;
    let secret = r.select_text("#totp-secret").pop().unwrap();
    let enabled = || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT totp_enabled_at IS NOT NULL FROM users WHERE email = 'lea@lyon.example'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    // A right code without the password, and with a wrong one: refused, nothing changes.
    c.post("/account/2fa/confirm", &[("code", &code(&secret, 0))])
        .await
        .assert_status(422)
        .assert_contains("Enter your password");
    c.post(
        "/account/2fa/confirm",
        &[
            ("code", &code(&secret, 0)),
            ("password", "not the password at all"),
        ],
    )
    .await
    .assert_status(401);
    assert!(!enabled().await);
    // With the password it goes on.
    c.post(
        "/account/2fa/confirm",
        &[("code", &code(&secret, 0)), ("password", PASSWORD)],
    )
    .await
    .assert_status(200)
    .assert_contains("ecovery code");
    assert!(enabled().await);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_stolen_session_and_a_relayed_code_cannot_move_two_factor(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = "rosa@example.org";
    let c = app.signed_up("Rosa", email, None).await;
    let old = enrol(&c).await;
    c.get("/account/2fa").await;
    // A current code from the owner's app, as a phishing page would relay it.
    let r = c
        .post("/account/2fa/replace", &[("credential", &code(&old, 1))])
        .await;
    r.assert_status(401).assert_contains("Nothing was changed");
    assert!(r.select_text("#totp-secret").is_empty(), "{}", r.body);
    assert_eq!(active_secret(&pool, email).await.as_deref(), Some(&*old));
    assert!(audited(&pool, "user.2fa_replaced").await.is_empty());
}

/// The login's answer with the address and the CSRF token taken out.
async fn log_in_as(app: &TestApp, email: &str, password: &str) -> (u16, String) {
    let c = app.client();
    c.get("/login").await.assert_status(200);
    let r = c
        .post("/login", &[("email", email), ("password", password)])
        .await;
    (r.status, comparable(&r.body, email, c.csrf()))
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn login_does_not_tell_a_new_sign_up_from_an_existing_account(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.signed_up("Sara", "sara@example.org", None).await;
    // Someone signs up with Sara's address and with a new one, then logs in with the
    // password they chose: a new account (not confirmed yet) must answer as Sara's.
    let chosen = "a fresh long passphrase";
    sign_up(&app, "sara@example.org").await;
    sign_up(&app, "tove@example.org").await;
    let existing = log_in_as(&app, "sara@example.org", chosen).await;
    let new = log_in_as(&app, "tove@example.org", chosen).await;
    assert_eq!(existing.0, 401, "{}", existing.1);
    assert_eq!(new, existing, "the same answer for a new account");
    assert!(new.1.contains("not confirmed yet"), "{}", new.1);
    assert!(new.1.contains("/verify-email/resend"), "{}", new.1);
}

/// `Cache-Control` of `r`, which shows a secret: `no-store`.
#[track_caller]
fn not_cached(r: &herd_testkit::Resp, what: &str) {
    assert_eq!(
        r.cache_control.as_deref(),
        Some("no-store"),
        "{what} (status {})",
        r.status
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn pages_with_a_second_factor_secret_are_not_cached(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let c = app.signed_up("Ulla", "ulla@example.org", None).await;
    c.get("/account/2fa").await;
    let r = c.post("/account/2fa/start", &[]).await;
    not_cached(&r, "the new secret");
    let secret = r.select_text("#totp-secret").pop().unwrap();
    not_cached(&c.get("/account/2fa").await, "the pending secret again");
    let r = c
        .post(
            "/account/2fa/confirm",
            &[("code", "000000"), ("password", PASSWORD)],
        )
        .await;
    r.assert_status(422);
    not_cached(&r, "a wrong code at set-up");
    let r = c
        .post(
            "/account/2fa/confirm",
            &[
                ("code", &code(&secret, 0)),
                ("password", "wrong password here"),
            ],
        )
        .await;
    r.assert_status(401);
    not_cached(&r, "a wrong password at set-up");
    let r = c
        .post(
            "/account/2fa/confirm",
            &[("code", &code(&secret, 0)), ("password", PASSWORD)],
        )
        .await;
    r.assert_status(200);
    not_cached(&r, "the recovery codes");

    c.get("/account/2fa").await;
    let r = c
        .post("/account/2fa/replace", &[("credential", PASSWORD)])
        .await;
    r.assert_status(200);
    not_cached(&r, "the replacement secret");
    let new = r.select_text("#totp-secret").pop().unwrap();
    let r = c
        .post(
            "/account/2fa/replace/confirm",
            &[("secret", &new), ("code", "000000")],
        )
        .await;
    r.assert_status(422);
    not_cached(&r, "a wrong code for the replacement");
    let r = c
        .post(
            "/account/2fa/replace/confirm",
            &[("secret", &new), ("code", &code(&new, 0))],
        )
        .await;
    r.assert_status(200);
    not_cached(&r, "the new recovery codes");
}

/// Logs `email` in on a new client, with `second_factor` (a code or a recovery code).
async fn second_session(app: &TestApp, email: &str, second_factor: &str) -> Client {
    let d = app.client();
    d.get("/login").await;
    d.post("/login", &[("email", email), ("password", PASSWORD)])
        .await
        .assert_redirect("/login/2fa");
    d.get("/login/2fa").await;
    d.post("/login/2fa", &[("code", second_factor)])
        .await
        .assert_redirect("/orgs");
    d.get("/account").await.assert_status(200);
    d
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn changing_two_factor_ends_the_other_sessions(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let email = "vera@example.org";
    let c = app.signed_up("Vera", email, None).await;
    let old = enrol(&c).await;

    // Moving it to a new app: the session that did it goes on, the other one is over.
    let other = second_session(&app, email, &code(&old, 1)).await;
    c.get("/account/2fa").await;
    let r = c
        .post("/account/2fa/replace", &[("credential", PASSWORD)])
        .await;
    let new = r.select_text("#totp-secret").pop().unwrap();
    let r = c
        .post(
            "/account/2fa/replace/confirm",
            &[("secret", &new), ("code", &code(&new, 0))],
        )
        .await;
    r.assert_status(200);
    let recovery = r.select_text("#recovery-codes li").pop().unwrap();
    c.get("/account").await.assert_status(200);
    other.get("/account").await.assert_redirect("/login?next=");

    // Turning it off: the same (the other session logs in with a recovery code: the
    // codes of this half-minute are used).
    let other = second_session(&app, email, &recovery).await;
    c.get("/account/2fa/disable").await;
    c.post("/account/2fa/disable", &[("credential", PASSWORD)])
        .await
        .assert_redirect("/account");
    c.get("/account")
        .await
        .assert_status(200)
        .assert_contains("Two-factor authentication is off");
    other.get("/account").await.assert_redirect("/login?next=");
}
