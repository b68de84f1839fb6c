//! Every route of the route table is called by people who must be refused: anonymous
//! visitors, members of another organization, customers on the operator console. The
//! table is the router's own, so a new route cannot escape this test.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{Client, TestApp};
use herd_web::{route_table, Access};
use sqlx::PgPool;

async fn counts(pool: &PgPool) -> (i64, i64, i64, i64) {
    let q = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    (
        q("SELECT count(*) FROM memberships").await,
        q("SELECT count(*) FROM invitations WHERE revoked_at IS NULL").await,
        q("SELECT count(*) FROM organizations").await,
        q("SELECT count(*) FROM users WHERE totp_secret IS NOT NULL").await,
    )
}

async fn call(c: &Client, method: &str, path: &str) -> herd_testkit::Resp {
    if method == "GET" {
        c.get(path).await
    } else {
        // A real CSRF token, so that the refusal we see is the authorization check.
        c.get("/signup").await;
        c.post(
            path,
            &[
                ("role", "member"),
                ("email", "x@example.org"),
                ("name", "X"),
                ("code", "123456"),
            ],
        )
        .await
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn every_route_refuses_outsiders(pool: PgPool) {
    // Where the export's files are, for its download route.
    let exports = std::env::temp_dir().join(format!("herd-authz-{}", uuid::Uuid::now_v7()));
    let store = herd_fleet::exports::ExportStore::local(&exports).unwrap();
    let app = TestApp::spawn_with(pool.clone(), move |c| c.exports = store).await;
    let victim = app
        .signed_up("Victor", "victor@victim.example", Some("Victim"))
        .await;
    victim.get("/o/victim/members").await;
    victim
        .post(
            "/o/victim/invitations",
            &[("email", "pending@victim.example"), ("role", "admin")],
        )
        .await
        .assert_redirect("/o/victim/members");
    let outsider = app
        .signed_up("Olive", "olive@outsider.example", Some("Outsider"))
        .await;
    let anonymous = app.client();

    let victor_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'victor@victim.example'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let invitation_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM invitations")
        .fetch_one(&pool)
        .await
        .unwrap();
    // An order and a subscription of the victim's, for the billing routes.
    let victim_org: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM organizations WHERE slug = 'victim'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let order_id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO orders (id, org_id, plan_code, app, domain) VALUES ($1, $2, 'community', 'mastodon', 'victim.social')")
        .bind(order_id)
        .bind(victim_org)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, org_id, status, status_since, source_time) VALUES ('sub_Victim', 'cus_Victim', $1, 'active', now(), now())")
        .bind(victim_org)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO stripe_events (id, type, livemode, created, payload) VALUES ('evt_Victim', 'invoice.paid', false, now(), '{}')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO tenant_access (subject, org_id, channel, state) VALUES ('stripe:sub_Victim', $1, 'card', 'running')")
        .bind(victim_org)
        .execute(&pool)
        .await
        .unwrap();
    let contract_id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO contracts (id, org_id, plan_code, price_minor, currency, period, payment_terms_days, billing_address, starts_on, next_invoice_on) VALUES ($1, $2, 'institution', 100000, 'EUR', 'year', 30, 'Mairie', current_date, current_date + 365)")
        .bind(contract_id)
        .bind(victim_org)
        .execute(&pool)
        .await
        .unwrap();
    let invoice_id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO invoices (id, contract_id, org_id, number, year, seq, issued_on, due_on, period_start, period_end, description, amount_minor, currency, po_reference, billing_address, vat_id) VALUES ($1, $2, $3, 'HERD-2026-000001', 2026, 1, current_date, current_date + 30, current_date, current_date + 364, 'Hosting', 100000, 'EUR', '', 'Mairie', '')")
        .bind(invoice_id)
        .bind(contract_id)
        .bind(victim_org)
        .execute(&pool)
        .await
        .unwrap();
    // A server of the victim's, for the servers' routes.
    let server_id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO instances (id, org_id, order_id, app, version, plan_code, slug, domain, owner_username, owner_email) VALUES ($1, $2, $3, 'mastodon', 'v4.7.6', 'community', 'victim-social', 'victim.social', 'victor', 'victor@victim.example')")
        .bind(server_id)
        .bind(victim_org)
        .bind(order_id)
        .execute(&pool)
        .await
        .unwrap();
    // A deleted server of the victim's that had moderation, for its history's routes.
    let deleted_id = uuid::Uuid::now_v7();
    for sql in [
        "INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email, desired) SELECT $1, org_id, app, version, plan_code, 'victim-old', 'old.victim.social', owner_username, owner_email, 'deleted' FROM instances WHERE id = $2",
        "INSERT INTO moderation_reports (id, instance_id, remote_id, category, target_account_id, target_acct, reported_at, due_at) VALUES (gen_random_uuid(), $1, '1', 'spam', '', '', now(), now())",
    ] {
        sqlx::query(sql)
            .bind(deleted_id)
            .bind(server_id)
            .execute(&pool)
            .await
            .unwrap();
    }
    // An export of that server, ready, for its download route.
    let manifest = "# Herd export\n";
    let export_id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO tenant_exports (instance_id, outcome, checksum, link_days, expires_at, base_url)
         VALUES ($1, 'succeeded', $2, 7, now() + interval '7 days', 'http://herd.test') RETURNING id",
    )
    .bind(server_id)
    .bind(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(manifest)))
    .fetch_one(&pool)
    .await
    .unwrap();
    let dir = exports.join(format!("exports/victim-social/{export_id}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.txt"), manifest).unwrap();
    // A ticket of the victim's, for the support routes.
    let ticket_id = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tickets (id, org_id, opener_id, subject, category, priority) VALUES ($1, $2, $3, 'Help', 'technical', 'normal')")
        .bind(ticket_id)
        .bind(victim_org)
        .bind(victor_id)
        .execute(&pool)
        .await
        .unwrap();
    // A file on that ticket, for the files' routes.
    victim
        .get(&format!("/o/victim/support/{ticket_id}"))
        .await
        .assert_status(200);
    victim
        .post_multipart(
            &format!("/o/victim/support/{ticket_id}/reply"),
            &[("body", "The log.")],
            &[("attachments", "server.log", b"502 Bad Gateway\n")],
        )
        .await
        .assert_redirect(&format!("/o/victim/support/{ticket_id}"));
    let file_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM ticket_attachments")
        .fetch_one(&pool)
        .await
        .unwrap();
    let fill = |path: &str| {
        path.replace("{slug}", "victim")
            .replace("{ticket}", &ticket_id.to_string())
            .replace("{file}", &file_id.to_string())
            .replace("{code}", "community")
            .replace("{invoice}", &invoice_id.to_string())
            .replace("{subject}", "stripe:sub_Victim")
            .replace("{event}", "evt_Victim")
            .replace("{order}", &order_id.to_string())
            .replace("{sub}", "sub_Victim")
            .replace("{user_id}", &victor_id.to_string())
            .replace("{id}", &invitation_id.to_string())
            .replace("deleted/{server}", &format!("deleted/{deleted_id}"))
            .replace("{server}", &server_id.to_string())
            .replace("{instance}", &server_id.to_string())
            .replace("{cluster}", &uuid::Uuid::now_v7().to_string())
            .replace("{job}", &uuid::Uuid::now_v7().to_string())
            .replace("{token}", "some-token")
            .replace("{export}", &export_id.to_string())
            .replace("{name}", "manifest.txt")
    };

    let table = route_table();
    assert!(
        table.len() >= 30,
        "the table lists the whole portal ({} routes)",
        table.len()
    );
    let before = counts(&pool).await;
    let mut checked = 0;
    let mut forms = 0;
    for route in &table {
        // Every POST is refused without the session's CSRF token, or with a forged one,
        // whoever sends it (checked before anything else of the route runs).
        if route.method == "POST" && !route.path.starts_with("/webhooks/") {
            let path = fill(route.path);
            victim.get("/orgs").await;
            for form in [vec![], vec![("csrf_token", "forged")]] {
                let r = victim.post_raw(&path, &form).await;
                assert_eq!(r.status, 403, "POST {path} without the token: {}", r.status);
                let r = anonymous.post_raw(&path, &form).await;
                assert_eq!(r.status, 403, "anonymous POST {path} without the token");
            }
        }
        // Layout rules: where a route lives says who may call it.
        if route.path.starts_with("/o/") {
            assert!(
                matches!(route.access, Access::Org(_)),
                "{} {} must be Access::Org",
                route.method,
                route.path
            );
        }
        if route.path.starts_with("/operator") {
            assert_eq!(
                route.access,
                Access::Operator,
                "{} {} must be Access::Operator",
                route.method,
                route.path
            );
        }
        if route.path.starts_with("/account") {
            assert_eq!(
                route.access,
                Access::User,
                "{} {} must be Access::User",
                route.method,
                route.path
            );
        }
        if route.access == Access::Public {
            assert!(
                !route.path.contains("{slug}"),
                "{} is public but names an organization",
                route.path
            );
            continue;
        }
        let path = fill(route.path);
        let r = call(&anonymous, route.method, &path).await;
        assert_eq!(
            r.status, 303,
            "anonymous {} {path}: {}",
            route.method, r.status
        );
        assert!(
            r.location
                .as_deref()
                .unwrap_or_default()
                .starts_with("/login?next="),
            "anonymous {} {path} → {:?}",
            route.method,
            r.location
        );
        match route.access {
            Access::Org(_) => {
                let r = call(&outsider, route.method, &path).await;
                assert_eq!(
                    r.status, 404,
                    "outsider {} {path} got {}",
                    route.method, r.status
                );
                if route.method == "GET" {
                    // The owner does get the page: the 404 above is not a broken route.
                    let status = if path.ends_with("/events") {
                        victim.first_event(&path).await.0
                    } else {
                        let page = victim.get(&path).await;
                        // Every form that posts carries the token.
                        let (missing, posts) = page.forms_without_csrf();
                        assert!(
                            missing.is_empty(),
                            "GET {path}: forms without a CSRF token: {missing:?}"
                        );
                        forms += posts;
                        page.status
                    };
                    assert_eq!(status, 200, "owner GET {path}");
                }
            }
            Access::Operator => {
                let r = call(&outsider, route.method, &path).await;
                assert_eq!(
                    r.status, 404,
                    "customer {} {path} got {}",
                    route.method, r.status
                );
            }
            Access::User | Access::Public => {}
        }
        checked += 1;
    }
    assert!(checked >= 20, "checked {checked} protected routes");
    assert!(
        forms >= 10,
        "only {forms} forms seen on the organization's pages"
    );
    assert_eq!(counts(&pool).await, before, "refused calls changed nothing");
    // The outsider's own organization still works for them.
    outsider.get("/o/outsider").await.assert_status(200);
}
