//! The support desk by email, through the router: an operator's answer is emailed with
//! the ticket's signed reply address; the customer's answer to that email (a raw RFC 822
//! message, as a mail server's pipe delivers it) comes back through
//! `POST /inbound/support-mail` as a reply, once, without what it quotes; an email to the
//! plain support address opens a ticket. A wrong secret, a forged reply address, or a
//! sender who may not see the ticket change nothing (the sender gets a bounce).
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{Client, TestApp};
use sqlx::PgPool;
use uuid::Uuid;

const SECRET: &str = "inbound-secret-for-tests";
const SUPPORT: &str = "support@support.herd.test";

async fn spawn(pool: &PgPool) -> TestApp {
    TestApp::spawn_with(pool.clone(), |c| {
        c.support_inbound_secret = Some(SECRET.to_owned().into());
    })
    .await
}

/// The receiving mail server's authserv-id, trusted by [`spawn_trusting`].
const AUTHSERV: &str = "mx.herd.test";

/// An app that trusts the `Authentication-Results` of [`AUTHSERV`].
async fn spawn_trusting(pool: &PgPool) -> TestApp {
    TestApp::spawn_with(pool.clone(), |c| {
        c.support_inbound_secret = Some(SECRET.to_owned().into());
        c.support_mail_authserv_id = Some(AUTHSERV.to_owned());
    })
    .await
}

/// `raw` as the trusted mail server hands it on after a DMARC pass for `domain`.
fn authenticated(domain: &str, raw: &str) -> String {
    format!("Authentication-Results: {AUTHSERV}; spf=pass smtp.mailfrom={domain};\r\n\tdkim=pass header.d={domain}; dmarc=pass (p=reject) header.from={domain}\r\n{raw}")
}

/// Posts a raw email to the inbound endpoint with `auth` as the Authorization header.
async fn deliver(app: &TestApp, auth: Option<&str>, raw: &str) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{}/inbound/support-mail", app.base))
        .header("content-type", "message/rfc822")
        .body(raw.to_owned());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

async fn post(app: &TestApp, raw: &str) -> (u16, serde_json::Value) {
    deliver(app, Some(&format!("Bearer {SECRET}")), raw).await
}

/// An email as a mail client writes it.
fn email(from: &str, to: &str, subject: &str, message_id: &str, extra: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{extra}Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
        body.replace('\n', "\r\n")
    )
}

/// Opens a ticket as `c` in Acme; returns its id.
async fn open(c: &Client, subject: &str) -> Uuid {
    c.get("/o/acme/support/new").await.assert_status(200);
    let r = c
        .post(
            "/o/acme/support",
            &[
                ("subject", subject),
                ("body", "Our server answers 502 since this morning."),
                ("category", "technical"),
                ("priority", "normal"),
                ("instance", ""),
            ],
        )
        .await;
    r.assert_redirect("/o/acme/support/");
    r.location
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn messages(pool: &PgPool, ticket: Uuid) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT body, from_email FROM ticket_messages WHERE ticket_id = $1 ORDER BY created_at, id",
    )
    .bind(ticket)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The ticket answered by an operator, and the email the customer got.
async fn answered(app: &TestApp, pool: &PgPool) -> (Client, Uuid, herd_mail::OutboxMessage) {
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let op = app.operator("ops@herd.test").await;
    let ticket = open(&carla, "Server down").await;
    op.get(&format!("/operator/support/{ticket}")).await;
    op.post(
        &format!("/operator/support/{ticket}/reply"),
        &[("body", "Please restart the web pod."), ("then", "wait")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{ticket}"));
    app.run_jobs().await;
    let mail = app.last_mail_to("carla@acme.example").await;
    let status: String = sqlx::query_scalar("SELECT status FROM tickets WHERE id = $1")
        .bind(ticket)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(status, "waiting_on_customer");
    (carla, ticket, mail)
}

/// The customer's answer to `mail`, quoting it, as a mail client writes it.
fn answer_to(mail: &herd_mail::OutboxMessage, from: &str, message_id: &str, text: &str) -> String {
    let quoted: String = mail.body.lines().map(|l| format!("> {l}\n")).collect();
    email(
        from,
        mail.reply_to.as_deref().unwrap(),
        &format!("Re: {}", mail.subject),
        message_id,
        &format!(
            "In-Reply-To: {0}\r\nReferences: {0}\r\n",
            mail.message_id.as_deref().unwrap()
        ),
        &format!(
            "{text}\n\nOn Mon, 7 Dec 2026 at 10:00, Herd <noreply@herd.test> wrote:\n{quoted}"
        ),
    )
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_answer_by_email_is_added_once_without_what_it_quotes(pool: PgPool) {
    let app = spawn(&pool).await;
    let (carla, ticket, mail) = answered(&app, &pool).await;

    // The email carries the ticket's signed reply address and says it can be answered.
    let reply_to = mail.reply_to.clone().expect("a Reply-To");
    assert!(
        reply_to.starts_with(&format!("support+{}.", ticket.simple()))
            && reply_to.ends_with("@support.herd.test"),
        "{reply_to}"
    );
    assert!(mail.body.contains("Reply to this email"), "{mail:?}");

    // The customer answers it, quoting it.
    let raw = answer_to(
        &mail,
        "Carla <carla@acme.example>",
        "<answer-1@acme.example>",
        "Restarted, still 502.",
    );
    let (status, json) = post(&app, &raw).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["outcome"], "added", "{json}");
    assert_eq!(json["ticket"], ticket.to_string());
    let after = messages(&pool, ticket).await;
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(after[2], ("Restarted, still 502.".to_owned(), true));
    // An answer reopens a ticket waiting on the customer, as in the portal.
    let status: String = sqlx::query_scalar("SELECT status FROM tickets WHERE id = $1")
        .bind(ticket)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "open");
    let page = carla.get(&format!("/o/acme/support/{ticket}")).await;
    page.assert_contains("Restarted, still 502.")
        .assert_contains("by email");
    assert!(!page.body.contains("wrote:"), "the attribution was kept");

    // Delivered again (a mail server retrying): added once.
    let (status, json) = post(&app, &raw).await;
    assert_eq!((status, json["outcome"].as_str()), (200, Some("duplicate")));
    assert_eq!(messages(&pool, ticket).await.len(), 3);

    // The reply is audited as Carla's, from the mail server's address.
    let actor: String = sqlx::query_scalar(
        "SELECT actor_email FROM audit_log WHERE action = 'support.ticket.replied' AND target = $1",
    )
    .bind(ticket.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(actor, "carla@acme.example");

    // An answer with a file: the file goes through the portal's checks and is attached.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let raw = format!(
        "From: carla@acme.example\r\nTo: {reply_to}\r\nSubject: Re: {}\r\nMessage-ID: <answer-2@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nThe screenshot.\r\n--b1\r\nContent-Type: image/png; name=\"shot.png\"\r\nContent-Disposition: attachment; filename=\"shot.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        mail.subject,
        base64_of(png)
    );
    let (status, json) = post(&app, &raw).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (200, Some("added")),
        "{json}"
    );
    let page = carla.get(&format!("/o/acme/support/{ticket}")).await;
    page.assert_contains("shot.png");
    let href = page
        .body
        .split("href=\"")
        .filter_map(|r| r.split('"').next())
        .find(|h| h.contains("/files/"))
        .unwrap()
        .to_owned();
    let d = carla.download(&href).await;
    assert_eq!((d.status, d.bytes.as_slice()), (200, &png[..]));

    // A bad file refuses the whole email: nothing added. Its sender is not authenticated
    // (no trusted mail server here), so the mail server rejects it; Herd sends nothing.
    let raw = format!(
        "From: carla@acme.example\r\nTo: {reply_to}\r\nSubject: Re: tool\r\nMessage-ID: <answer-3@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nThe tool.\r\n--b1\r\nContent-Type: image/png; name=\"tool.png\"\r\nContent-Disposition: attachment; filename=\"tool.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        base64_of(b"MZ\x90\0\x03\0\0\0\x04\0\0\0")
    );
    let (status, json) = post(&app, &raw).await;
    assert_eq!(status, 422, "{json}");
    assert!(
        json["detail"]
            .as_str()
            .unwrap()
            .contains("“tool.png” is not a file type"),
        "{json}"
    );
    assert_eq!(messages(&pool, ticket).await.len(), 4);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE kind = 'support.bounce_email'"
        )
        .await,
        0
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn forged_unauthenticated_or_foreign_mail_changes_nothing(pool: PgPool) {
    let app = spawn(&pool).await;
    let (_carla, ticket, mail) = answered(&app, &pool).await;
    let olive = app
        .signed_up("Olive", "olive@other.example", Some("Other"))
        .await;
    drop(olive);
    app.signed_up("Max", "max@acme.example", None).await;
    app.join("acme", "max@acme.example", "member").await;
    let state = || async {
        (
            count(&pool, "SELECT count(*) FROM ticket_messages").await,
            count(&pool, "SELECT count(*) FROM tickets").await,
            count(
                &pool,
                "SELECT count(*) FROM audit_log WHERE action LIKE 'support.%'",
            )
            .await,
        )
    };
    let jobs = || {
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE kind = 'support.bounce_email'",
        )
    };
    let before = state().await;

    // A forged or altered reply address: refused, nothing changes, nobody is emailed.
    let reply_to = mail.reply_to.clone().unwrap();
    let mac_end = reply_to.find('@').unwrap();
    let last = &reply_to[mac_end - 1..mac_end];
    let altered = format!(
        "{}{}{}",
        &reply_to[..mac_end - 1],
        if last == "0" { "1" } else { "0" },
        &reply_to[mac_end..]
    );
    let other_ticket = format!(
        "support+{}{}",
        Uuid::now_v7().simple(),
        &reply_to[reply_to.find('.').unwrap()..]
    );
    let no_mac = format!("support+{}@support.herd.test", ticket.simple());
    for (i, to) in [altered, other_ticket, no_mac].iter().enumerate() {
        let raw = email(
            "carla@acme.example",
            to,
            "Re: Server down",
            &format!("<forged-{i}@acme.example>"),
            "",
            "Forged.",
        );
        let (status, json) = post(&app, &raw).await;
        assert_eq!(status, 422, "{to}: {json}");
    }
    assert_eq!(state().await, before, "a forged address changed something");
    assert_eq!(jobs().await, 0);

    // Not an email, or not for support: refused.
    assert_eq!(post(&app, "just some text").await.0, 422);
    let elsewhere = email(
        "carla@acme.example",
        "sales@support.herd.test",
        "Hi",
        "<e-1@acme.example>",
        "",
        "Hi",
    );
    assert_eq!(post(&app, &elsewhere).await.0, 422);

    // Senders who may not see the ticket: another organization's member, a member it is
    // not shared with, a stranger. Not authenticated (no trusted mail server is
    // configured): refused (the mail server rejects them), nothing added, nobody emailed.
    for (i, from) in [
        "olive@other.example",
        "max@acme.example",
        "stranger@nowhere.example",
    ]
    .iter()
    .enumerate()
    {
        let raw = answer_to(
            &mail,
            from,
            &format!("<foreign-{i}@x.example>"),
            "I want in.",
        );
        let (status, json) = post(&app, &raw).await;
        assert_eq!(status, 422, "{from}: {json}");
    }
    assert_eq!(state().await, before, "a foreign sender changed something");
    assert_eq!(jobs().await, 0, "an unauthenticated sender was bounced");

    // Automatic mail (an out-of-office answer) is neither added nor answered.
    let ooo = email(
        "carla@acme.example",
        &reply_to,
        "Out of office",
        "<ooo-1@acme.example>",
        "Auto-Submitted: auto-replied\r\n",
        "I am away until Monday.",
    );
    let (status, json) = post(&app, &ooo).await;
    assert_eq!((status, json["outcome"].as_str()), (200, Some("ignored")));
    // Other automatic mail: answers, delivery reports, a null return path.
    for (i, extra) in [
        "Precedence: auto_reply\r\n",
        "X-Autoreply: yes\r\n",
        "X-Autorespond: yes\r\n",
        "X-Auto-Response-Suppress: All\r\n",
        "Return-Path: <>\r\n",
    ]
    .iter()
    .enumerate()
    {
        let raw = email(
            "carla@acme.example",
            &reply_to,
            "Re: Server down",
            &format!("<auto-{i}@acme.example>"),
            extra,
            "Automatic.",
        );
        let (status, json) = post(&app, &raw).await;
        assert_eq!(
            (status, json["outcome"].as_str()),
            (200, Some("ignored")),
            "{extra}: {json}"
        );
    }
    let report = format!(
        "From: carla@acme.example\r\nTo: {reply_to}\r\nSubject: Delivered\r\nMessage-ID: <report-1@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n--r\r\nContent-Type: text/plain\r\n\r\nDelivered.\r\n--r--\r\n"
    );
    let (status, json) = post(&app, &report).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (200, Some("ignored")),
        "{json}"
    );
    assert_eq!(state().await, before);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn mail_without_the_secret_is_refused(pool: PgPool) {
    let app = spawn(&pool).await;
    let (_carla, ticket, mail) = answered(&app, &pool).await;
    let before = messages(&pool, ticket).await.len();
    let raw = answer_to(
        &mail,
        "carla@acme.example",
        "<secret-1@acme.example>",
        "Let me in.",
    );

    // No secret, a wrong one, the right one not as a bearer token or a password: 401.
    for auth in [
        None,
        Some("Bearer wrong"),
        Some(SECRET),
        Some("Basic Y2FybGE6d3Jvbmc="),
    ] {
        let (status, _) = deliver(&app, auth, &raw).await;
        assert_eq!(status, 401, "{auth:?}");
    }
    assert_eq!(messages(&pool, ticket).await.len(), before);
    // The secret as a basic-authentication password is taken (as providers send it).
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("herd:{SECRET}"));
    let (status, json) = deliver(&app, Some(&format!("Basic {basic}")), &raw).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (200, Some("added")),
        "{json}"
    );
    assert_eq!(messages(&pool, ticket).await.len(), before + 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_endpoint_is_off_without_a_secret(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let raw = email(
        "carla@acme.example",
        SUPPORT,
        "Hello",
        "<x@acme.example>",
        "",
        "Hi",
    );
    let (status, _) = post(&app, &raw).await;
    assert_eq!(status, 404);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_email_to_support_opens_a_ticket_for_a_member_of_one_organization(pool: PgPool) {
    let app = spawn_trusting(&pool).await;
    let carla = app
        .signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let dave = app
        .signed_up("Dave", "dave@both.example", Some("Both"))
        .await;
    app.join("acme", "dave@both.example", "member").await;
    drop(dave);

    let raw = authenticated(
        "acme.example",
        &email(
            "Carla <Carla@Acme.example>",
            SUPPORT,
            "Mail delivery broken",
            "<new-1@acme.example>",
            "",
            "Our users get no confirmation emails.\n\n-- \nCarla\n",
        ),
    );
    let (status, json) = post(&app, &raw).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (200, Some("opened")),
        "{json}"
    );
    let ticket: Uuid = json["ticket"].as_str().unwrap().parse().unwrap();
    let (subject, category, org): (String, String, String) = sqlx::query_as(
        "SELECT t.subject, t.category, o.slug FROM tickets t JOIN organizations o ON o.id = t.org_id WHERE t.id = $1",
    )
    .bind(ticket)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (subject.as_str(), category.as_str(), org.as_str()),
        ("Mail delivery broken", "other", "acme")
    );
    assert_eq!(
        messages(&pool, ticket).await,
        [("Our users get no confirmation emails.".to_owned(), true)]
    );
    carla
        .get(&format!("/o/acme/support/{ticket}"))
        .await
        .assert_status(200)
        .assert_contains("Mail delivery broken");
    let opened: i64 = count(
        &pool,
        "SELECT count(*) FROM audit_log WHERE action = 'support.ticket.opened'",
    )
    .await;
    assert_eq!(opened, 1);
    // Audited as received by email, with its Message-ID and how its sender was proven.
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'support.ticket.email_received' AND target = $1",
    )
    .bind(ticket.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        details,
        serde_json::json!({ "via": "email", "message_id": "<new-1@acme.example>", "authentication": "dmarc=pass" })
    );
    // Delivered twice: one ticket.
    let (_, json) = post(&app, &raw).await;
    assert_eq!(json["outcome"], "duplicate");
    assert_eq!(count(&pool, "SELECT count(*) FROM tickets").await, 1);

    // A member of two organizations: bounced with the reason, without the subject, at
    // most once an hour; no ticket.
    let bounces = || {
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE kind = 'support.bounce_email'",
        )
    };
    for i in 0..2 {
        let raw = authenticated(
            "both.example",
            &email(
                "dave@both.example",
                SUPPORT,
                "Help SECRET-SUBJECT",
                &format!("<dave-{i}@both.example>"),
                "",
                "Help us.",
            ),
        );
        let (status, json) = post(&app, &raw).await;
        assert_eq!(
            (status, json["outcome"].as_str()),
            (200, Some("bounced")),
            "{json}"
        );
    }
    assert_eq!(bounces().await, 1, "bounced more than once within the hour");
    app.run_jobs().await;
    let bounce = app.last_mail_to("dave@both.example").await;
    assert!(
        bounce.body.contains("several organizations (Acme, Both)"),
        "{bounce:?}"
    );
    assert!(
        !bounce.subject.contains("SECRET-SUBJECT") && !bounce.body.contains("SECRET-SUBJECT"),
        "{bounce:?}"
    );
    // An address that is no account, even authenticated: refused, never answered.
    let raw = authenticated(
        "nowhere.example",
        &email(
            "nobody@nowhere.example",
            SUPPORT,
            "Help",
            "<n-1@nowhere.example>",
            "",
            "Help us.",
        ),
    );
    assert_eq!(post(&app, &raw).await.0, 422);
    assert_eq!(bounces().await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM tickets").await, 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_forged_from_acts_as_nobody(pool: PgPool) {
    // Without a trusted mail server, an email to the plain support address opens nothing,
    // whatever its From says.
    let app = spawn(&pool).await;
    app.signed_up("Carla", "carla@acme.example", Some("Acme"))
        .await;
    let forged = |id: &str, extra: &str| {
        email(
            "carla@acme.example",
            SUPPORT,
            "Give me access",
            id,
            extra,
            "Add me as owner.",
        )
    };
    let (status, json) = post(&app, &forged("<f-0@evil.example>", "")).await;
    assert_eq!(status, 422, "{json}");
    drop(app);

    let app = spawn_trusting(&pool).await;
    for (i, raw) in [
        // No verdict, another server's, a pass below the trusted server's own fail, a
        // signature of another domain.
        forged("<f-1@evil.example>", ""),
        format!("Authentication-Results: evil.example; dmarc=pass header.from=acme.example\r\n{}", forged("<f-2@evil.example>", "")),
        format!("Authentication-Results: {AUTHSERV}; dmarc=fail header.from=acme.example\r\nAuthentication-Results: {AUTHSERV}; dmarc=pass header.from=acme.example\r\n{}", forged("<f-3@evil.example>", "")),
        format!("Authentication-Results: {AUTHSERV}; dkim=pass header.d=evil.example; dmarc=fail\r\n{}", forged("<f-4@evil.example>", "")),
    ]
    .iter()
    .enumerate()
    {
        let (status, json) = post(&app, raw).await;
        assert_eq!(status, 422, "{i}: {json}");
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM tickets").await, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE kind = 'support.bounce_email'"
        )
        .await,
        0
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_webhook_form_field_is_read_as_bytes(pool: PgPool) {
    let app = spawn(&pool).await;
    let (_carla, ticket, mail) = answered(&app, &pool).await;
    // A Latin-1 email (not UTF-8) in a provider's `body-mime` form field.
    let mut raw = format!(
        "From: carla@acme.example\r\nTo: {}\r\nSubject: Re: x\r\nMessage-ID: <latin-1@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        mail.reply_to.as_deref().unwrap()
    )
    .into_bytes();
    raw.extend_from_slice(b"Caf\xe9 ferm\xe9.\r\n");
    let mut form = b"--XyZ\r\nContent-Disposition: form-data; name=\"body-mime\"\r\n\r\n".to_vec();
    form.extend_from_slice(&raw);
    form.extend_from_slice(b"\r\n--XyZ--\r\n");
    let resp = reqwest::Client::new()
        .post(format!("{}/inbound/support-mail", app.base))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .header("authorization", format!("Bearer {SECRET}"))
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    let after = messages(&pool, ticket).await;
    assert_eq!(after.last().unwrap().0, "Café fermé.", "{after:?}");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_answer_to_a_merged_ticket_continues_on_the_ticket_kept(pool: PgPool) {
    let app = spawn(&pool).await;
    let (carla, dup, mail) = answered(&app, &pool).await;
    let op = app.operator("lead@herd.test").await;
    // Carla opened the same question twice; the operator merges the answered one into
    // the other after the email went out.
    let kept = open(&carla, "Server down (again)").await;
    op.post(
        &format!("/operator/support/{dup}/merge"),
        &[("into", &kept.to_string())],
    )
    .await
    .assert_redirect(&format!("/operator/support/{kept}"));
    let before_dup = messages(&pool, dup).await.len();
    // Carla is told where the conversation went.
    app.run_jobs().await;
    let told = app.last_mail_to("carla@acme.example").await;
    assert!(told.subject.contains("merged"), "{told:?}");
    assert!(
        told.body.contains(&format!("/o/acme/support/{kept}")),
        "{told:?}"
    );

    let raw = answer_to(
        &mail,
        "carla@acme.example",
        "<after-merge@acme.example>",
        "Still 502 after the restart.",
    );
    let (status, json) = post(&app, &raw).await;
    assert_eq!(
        (status, json["outcome"].as_str()),
        (200, Some("added")),
        "{json}"
    );
    assert_eq!(json["ticket"], kept.to_string(), "added to the ticket kept");
    assert_eq!(
        messages(&pool, dup).await.len(),
        before_dup,
        "the duplicate stays closed"
    );
    assert!(
        messages(&pool, kept)
            .await
            .iter()
            .any(|(b, _)| b == "Still 502 after the restart."),
        "the answer is on the ticket kept"
    );

    // Carla's private duplicate merged into a ticket shared with all of Acme: what she
    // wrote for the private one is not moved where every member reads it.
    let private = open(&carla, "Private question").await;
    op.get(&format!("/operator/support/{private}")).await;
    op.post(
        &format!("/operator/support/{private}/reply"),
        &[("body", "Which account?"), ("then", "wait")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{private}"));
    app.run_jobs().await;
    let private_mail = app.last_mail_to("carla@acme.example").await;
    carla.get("/o/acme/support/new").await.assert_status(200);
    let r = carla
        .post(
            "/o/acme/support",
            &[
                ("subject", "Shared question"),
                ("body", "For everyone at Acme."),
                ("category", "technical"),
                ("priority", "normal"),
                ("instance", ""),
                ("shared", "on"),
            ],
        )
        .await;
    let shared: Uuid = r
        .location
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    op.post(
        &format!("/operator/support/{private}/merge"),
        &[("into", &shared.to_string())],
    )
    .await
    .assert_redirect(&format!("/operator/support/{shared}"));
    let on_shared = messages(&pool, shared).await.len();
    let raw = answer_to(
        &private_mail,
        "carla@acme.example",
        "<private-after-merge@acme.example>",
        "The account is carla-private, password hint: cats.",
    );
    let (status, json) = post(&app, &raw).await;
    assert_eq!(status, 422, "{json}");
    assert!(
        json["detail"]
            .as_str()
            .unwrap_or("")
            .contains("readers are not the same"),
        "{json}"
    );
    assert_eq!(
        messages(&pool, shared).await.len(),
        on_shared,
        "nothing moved to the shared ticket"
    );

    // Max's private ticket merged into Carla's private one: Max may not see it, so his
    // answer by email is refused with the merge's reason and adds nothing anywhere.
    let max = app.signed_up("Max", "max@acme.example", None).await;
    app.join("acme", "max@acme.example", "member").await;
    let maxs = open(&max, "Also down").await;
    op.get(&format!("/operator/support/{maxs}")).await;
    op.post(
        &format!("/operator/support/{maxs}/reply"),
        &[("body", "Looking into it."), ("then", "wait")],
    )
    .await
    .assert_redirect(&format!("/operator/support/{maxs}"));
    app.run_jobs().await;
    let max_mail = app.last_mail_to("max@acme.example").await;
    op.post(
        &format!("/operator/support/{maxs}/merge"),
        &[("into", &kept.to_string())],
    )
    .await
    .assert_redirect(&format!("/operator/support/{kept}"));
    let on_kept = messages(&pool, kept).await.len();
    // Max is told, without a link to a ticket he may not open.
    app.run_jobs().await;
    let told = app.last_mail_to("max@acme.example").await;
    assert!(told.subject.contains("merged"), "{told:?}");
    assert!(
        !told.body.contains(&kept.to_string()) && told.body.contains("/o/acme/support/new"),
        "{told:?}"
    );
    let raw = answer_to(
        &max_mail,
        "max@acme.example",
        "<max-after-merge@acme.example>",
        "Mine too.",
    );
    let (status, json) = post(&app, &raw).await;
    assert_eq!(status, 422, "{json}");
    assert!(
        json["detail"].as_str().unwrap_or("").contains("merged"),
        "{json}"
    );
    assert_eq!(messages(&pool, kept).await.len(), on_kept);
}
