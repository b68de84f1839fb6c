//! Who may do what inside an organization: every organization route of the route table,
//! for GET and POST, called by an owner, an admin, a billing member and a member, against
//! the one table of who may do what (each route's [`Capability`], [`Capability::allows`]).
//! Allowed roles are let through, refused ones get the refusal, which names exactly the
//! roles the table allows, and change nothing; the pages a role sees link only to what it
//! may do; and docs/SECURITY.md prints that same table.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::Role;
use herd_testkit::stripe::FakeStripe;
use herd_testkit::{Client, Resp, TestApp};
use herd_web::routes::{roles_markdown, Capability};
use herd_web::{route_table, Access, RouteInfo};
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

/// The people of organization `lyon`: one per role, and Tom, a member others act on.
const PEOPLE: [(&str, &str, Role); 4] = [
    ("Olga", "olga@lyon.example", Role::Owner),
    ("Adam", "adam@lyon.example", Role::Admin),
    ("Bea", "bea@lyon.example", Role::Billing),
    ("Max", "max@lyon.example", Role::Member),
];
const TARGET: &str = "tom@lyon.example";

/// Every row of every table a request could change (not the login throttles, which only
/// the login pages write), to tell that a refused call changed nothing.
async fn snapshot(pool: &PgPool) -> Vec<(String, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
           AND table_name NOT IN ('_sqlx_migrations', 'login_attempts', 'second_factor_attempts')
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(tables.len() >= 20, "tables seen: {tables:?}");
    let mut out = Vec::new();
    for t in tables {
        let rows: String = sqlx::query_scalar(&format!(
            "SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM \"{t}\" t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push((t, rows));
    }
    out
}

/// The roles a sentence says may do something, most powerful first: the words naming who, from after "only "
/// (or the sentence's start) up to what they may do.
fn roles_named(sentence: &str) -> Vec<Role> {
    let s = sentence.to_lowercase();
    let s = s.split_once("only ").map_or(s.as_str(), |(_, rest)| rest);
    let end = [" may ", " manage", " see", " order", " can "]
        .iter()
        .filter_map(|verb| s.find(verb))
        .min()
        .unwrap_or(s.len());
    let who = &s[..end];
    let without_billing = who.replace("billing members", "");
    Role::ALL
        .into_iter()
        .filter(|r| match r {
            Role::Billing => who.contains("billing members"),
            Role::Member => without_billing.contains("member"),
            r => who.contains(r.plural()),
        })
        .collect()
}

/// Does the route pattern (`/o/{slug}/servers/{server}`) match this path?
fn matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<_>, Vec<_>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len()
        && p.iter()
            .zip(&q)
            .all(|(p, q)| (p.starts_with('{') && !q.is_empty()) || p == q)
}

/// The organization routes a page leads to: (method, path) of its links and forms.
fn targets(body: &str) -> Vec<(&'static str, String)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[at..].split('"').next()?.to_owned())
    };
    let mut out = Vec::new();
    for (open, method) in [("<a ", "GET"), ("<form ", "POST")] {
        for piece in body.split(open).skip(1) {
            let tag = format!(" {}", piece.split('>').next().unwrap_or_default());
            let target = if method == "GET" {
                attr(&tag, "href")
            } else {
                let post = attr(&tag, "method").is_some_and(|m| m.eq_ignore_ascii_case("post"));
                attr(&tag, "action").filter(|_| post)
            };
            if let Some(t) = target.filter(|t| t.starts_with("/o/")) {
                let path = t.split(['?', '#']).next().unwrap_or_default().to_owned();
                out.push((method, path));
            }
        }
    }
    out
}

/// Calls the route as `c` would; the answer's status and page (none for a live stream).
async fn call(c: &Client, method: &str, path: &str) -> (u16, Option<Resp>) {
    if method == "GET" {
        if path.ends_with("/events") {
            return (c.first_event(path).await.0, None);
        }
        let r = c.get(path).await;
        (r.status, Some(r))
    } else {
        // A real CSRF token, so that what we see is the role check. The fields fill every
        // form of the organization's pages, none validly enough to delete or order: an
        // allowed caller gets the form back with a message, or a redirect.
        c.get("/orgs").await;
        let r = c
            .post(
                path,
                &[
                    ("email", "x@lyon.example"),
                    ("role", "member"),
                    ("confirm", "not the domain"),
                    ("version", ""),
                    ("when", ""),
                    ("day", ""),
                    ("hour", ""),
                    ("plan", ""),
                    ("domain", ""),
                ],
            )
            .await;
        (r.status, Some(r))
    }
}

/// Puts back what allowed calls took away (a member who left or was removed, a revoked
/// invitation), so that every call finds the same organization.
async fn restore(pool: &PgPool, invitation: Uuid) {
    for (email, role) in PEOPLE
        .iter()
        .map(|(_, e, r)| (*e, r.as_str()))
        .chain([(TARGET, "member")])
    {
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role)
             SELECT o.id, u.id, $2 FROM organizations o, users u
             WHERE o.slug = 'lyon' AND u.email = $1
             ON CONFLICT (org_id, user_id) DO UPDATE SET role = EXCLUDED.role",
        )
        .bind(email)
        .bind(role)
        .execute(pool)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE invitations SET revoked_at = NULL WHERE id = $1")
        .bind(invitation)
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn every_role_may_do_what_the_table_says_and_nothing_else(pool: PgPool) {
    let fake = FakeStripe::start().await;
    let base = fake.base.clone();
    // Where the export's files are, for its download route.
    let exports = std::env::temp_dir().join(format!("herd-roles-{}", Uuid::now_v7()));
    let store = herd_fleet::exports::ExportStore::local(&exports).unwrap();
    let app = TestApp::spawn_with(pool.clone(), move |c| {
        c.stripe_secret_key = Some(SecretString::from("sk_test_herd".to_owned()));
        c.stripe_api_base = base;
        c.exports = store;
    })
    .await;
    sqlx::query("UPDATE plans SET provider_price_id = 'price_' || code")
        .execute(&pool)
        .await
        .unwrap();
    let mut clients = Vec::new();
    for (name, email, role) in PEOPLE {
        let org = (role == Role::Owner).then_some("Lyon");
        let c = app.signed_up(name, email, org).await;
        if role != Role::Owner {
            app.join("lyon", email, role.as_str()).await;
        }
        clients.push((role, c));
    }
    app.signed_up("Tom", TARGET, None).await;
    app.join("lyon", TARGET, "member").await;
    let owner = &clients[0].1;
    owner.get("/o/lyon/members").await;
    owner
        .post(
            "/o/lyon/invitations",
            &[("email", "pending@lyon.example"), ("role", "member")],
        )
        .await
        .assert_redirect("/o/lyon/members");

    let one = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let org = one("SELECT id FROM organizations WHERE slug = 'lyon'").await;
    let tom = one("SELECT id FROM users WHERE email = 'tom@lyon.example'").await;
    let invitation = one("SELECT id FROM invitations").await;
    // What the billing and servers' routes act on: a customer, an order, a subscription,
    // a contract with an invoice, and a server.
    let order = Uuid::now_v7();
    let contract = Uuid::now_v7();
    let invoice = Uuid::now_v7();
    let server = Uuid::now_v7();
    let deleted = Uuid::now_v7();
    let ticket = Uuid::now_v7();
    for (sql, ids) in [
        ("INSERT INTO billing_customers (org_id, stripe_customer_id) VALUES ($1, 'cus_Lyon')", vec![org]),
        ("INSERT INTO orders (id, org_id, plan_code, app, domain) VALUES ($2, $1, 'community', 'mastodon', 'lyon.social')", vec![org, order]),
        ("INSERT INTO subscriptions (stripe_subscription_id, stripe_customer_id, org_id, status, status_since, source_time, plan_code) VALUES ('sub_Lyon', 'cus_Lyon', $1, 'active', now(), now(), 'community')", vec![org]),
        ("INSERT INTO tenant_access (subject, org_id, channel, state) VALUES ('stripe:sub_Lyon', $1, 'card', 'running')", vec![org]),
        ("INSERT INTO contracts (id, org_id, plan_code, price_minor, currency, period, payment_terms_days, billing_address, starts_on, next_invoice_on) VALUES ($2, $1, 'institution', 100000, 'EUR', 'year', 30, 'Mairie', current_date, current_date + 365)", vec![org, contract]),
        ("INSERT INTO invoices (id, contract_id, org_id, number, year, seq, issued_on, due_on, period_start, period_end, description, amount_minor, currency, po_reference, billing_address, vat_id) VALUES ($3, $2, $1, 'HERD-2026-000001', 2026, 1, current_date, current_date + 30, current_date, current_date + 364, 'Hosting', 100000, 'EUR', '', 'Mairie', '')", vec![org, contract, invoice]),
        ("INSERT INTO instances (id, org_id, order_id, app, version, plan_code, slug, domain, owner_username, owner_email) VALUES ($3, $1, $2, 'mastodon', 'v4.7.6', 'community', 'lyon-social', 'lyon.social', 'olga', 'olga@lyon.example')", vec![org, order, server]),
        // A deleted server that had moderation, for its history's routes.
        ("INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email, desired) VALUES ($2, $1, 'mastodon', 'v4.7.6', 'community', 'lyon-old', 'old.lyon.social', 'olga', 'olga@lyon.example', 'deleted')", vec![org, deleted]),
        ("INSERT INTO moderation_reports (id, instance_id, remote_id, category, target_account_id, target_acct, reported_at, due_at) VALUES (gen_random_uuid(), $1, '1', 'spam', '', '', now(), now())", vec![deleted]),
        // A ticket shared with the organization: every member may see and answer it.
        ("INSERT INTO tickets (id, org_id, subject, category, priority, shared_with_org) VALUES ($2, $1, 'Help', 'technical', 'normal', true)", vec![org, ticket]),
    ] {
        let mut q = sqlx::query(sql);
        for id in ids {
            q = q.bind(id);
        }
        q.execute(&pool).await.unwrap();
    }
    // An export of that server, ready, for its download route.
    let manifest = "# Herd export\n";
    let export: Uuid = sqlx::query_scalar(
        "INSERT INTO tenant_exports (instance_id, outcome, checksum, link_days, expires_at, base_url)
         VALUES ($1, 'succeeded', $2, 7, now() + interval '7 days', 'http://herd.test') RETURNING id",
    )
    .bind(server)
    .bind(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(manifest)))
    .fetch_one(&pool)
    .await
    .unwrap();
    let dir = exports.join(format!("exports/lyon-social/{export}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("manifest.txt"), manifest).unwrap();
    // A file on that ticket, for the files' route.
    owner.get(&format!("/o/lyon/support/{ticket}")).await;
    owner
        .post_multipart(
            &format!("/o/lyon/support/{ticket}/reply"),
            &[("body", "The log.")],
            &[("attachments", "server.log", b"502 Bad Gateway\n")],
        )
        .await
        .assert_redirect(&format!("/o/lyon/support/{ticket}"));
    let file = one("SELECT id FROM ticket_attachments").await;
    let fill = |path: &str| {
        path.replace("{slug}", "lyon")
            .replace("{order}", &order.to_string())
            .replace("{sub}", "sub_Lyon")
            .replace("{invoice}", &invoice.to_string())
            .replace("{user_id}", &tom.to_string())
            .replace("{id}", &invitation.to_string())
            .replace("deleted/{server}", &format!("deleted/{deleted}"))
            .replace("{server}", &server.to_string())
            .replace("{ticket}", &ticket.to_string())
            .replace("{file}", &file.to_string())
            .replace("{export}", &export.to_string())
            .replace("{name}", "manifest.txt")
    };

    let table = route_table();
    let org_routes: Vec<(&RouteInfo, Capability)> = table
        .iter()
        .filter_map(|r| match r.access {
            Access::Org(c) => Some((r, c)),
            _ => None,
        })
        .collect();
    assert!(
        org_routes.len() >= 30,
        "the organization's routes ({})",
        org_routes.len()
    );
    let allowed_for = |method: &str, path: &str, role: Role| -> bool {
        let (_, capability) = org_routes
            .iter()
            .find(|(r, _)| r.method == method && matches(&r.path.replace("{slug}", "lyon"), path))
            .unwrap_or_else(|| panic!("{method} {path} is not a route of the table"));
        role.can(*capability)
    };

    let (mut allowed, mut refused, mut links) = (0, 0, 0);
    for (route, capability) in &org_routes {
        let path = fill(route.path);
        for (role, client) in &clients {
            restore(&pool, invitation).await;
            let before = snapshot(&pool).await;
            let (status, page) = call(client, route.method, &path).await;
            let said = page
                .as_ref()
                .map(|p| p.select_text("body > p").join(" "))
                .unwrap_or_default();
            let who = format!("{} {} {path}", role.label(), route.method);
            if role.can(*capability) {
                allowed += 1;
                assert!(
                    !matches!(status, 403 | 404) && status < 500,
                    "{who} may ({}) but got {status}: {said}",
                    capability.as_str(),
                );
                if route.method == "GET" {
                    assert_eq!(status, 200, "{who}");
                    // The page leads only where this role may go.
                    let body = page.map(|p| p.body).unwrap_or_default();
                    for (method, target) in targets(&body) {
                        assert!(
                            allowed_for(method, &target, *role),
                            "{who} shows {method} {target}, which a {} may not use",
                            role.label()
                        );
                        links += 1;
                    }
                }
            } else {
                refused += 1;
                assert_eq!(status, 403, "{who} must be refused: {said}");
                let message = page
                    .and_then(|p| p.select_text("body > p").into_iter().next())
                    .unwrap_or_default();
                assert_eq!(
                    roles_named(&message),
                    capability.roles(),
                    "{who}: the refusal must name exactly who may ({}): {message:?}",
                    capability.as_str()
                );
                assert!(
                    snapshot(&pool).await == before,
                    "{who} was refused but changed something"
                );
            }
        }
    }
    assert!(
        allowed >= 60 && refused >= 40,
        "{allowed} allowed, {refused} refused calls"
    );
    assert!(links >= 40, "only {links} links and forms seen");

    // Those without billing are told who has it, and only those.
    for (role, client) in &clients {
        let page = client.get("/o/lyon").await;
        let rule: Vec<String> = page
            .select_text("p")
            .into_iter()
            .filter(|p| p.contains("manage billing"))
            .collect();
        if role.can(Capability::ManageBilling) {
            assert!(rule.is_empty(), "{}: {rule:?}", role.label());
        } else {
            assert_eq!(rule.len(), 1, "{}: {rule:?}", role.label());
            assert_eq!(
                roles_named(&rule[0]),
                Capability::ManageBilling.roles(),
                "the dashboard of a {} says {:?}",
                role.label(),
                rule[0]
            );
        }
    }
}

/// The section of docs/SECURITY.md between the markers is the table the router enforces.
#[test]
fn security_md_prints_the_route_table() {
    let doc = include_str!("../../../../docs/SECURITY.md");
    let (begin, end) = ("<!-- roles:begin -->\n", "<!-- roles:end -->");
    let section = doc
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(section, _)| section.trim())
        .expect("docs/SECURITY.md has the roles section between its markers");
    let expected = roles_markdown(&route_table());
    assert!(
        section == expected.trim(),
        "docs/SECURITY.md's table of who may do what is not the route table's; put this \
         between the markers:\n\n{expected}"
    );
}

#[test]
fn sentences_name_their_roles() {
    use Role::*;
    let set = |r: &[Role]| r.to_vec();
    assert_eq!(
        roles_named("only owners, admins and billing members manage billing"),
        set(&[Owner, Admin, Billing])
    );
    assert_eq!(
        roles_named("Owners and billing members may order servers and manage billing."),
        set(&[Owner, Billing])
    );
    assert_eq!(
        roles_named("Your role does not allow this: only owners and admins may manage members."),
        set(&[Owner, Admin])
    );
    assert!(matches("/o/{slug}/servers/{server}", "/o/lyon/servers/1"));
    assert!(!matches("/o/{slug}/servers/{server}", "/o/lyon/servers"));
    assert_eq!(
        targets(
            r#"<a href="/o/lyon/billing?x=1">B</a><form class="inline" method="post" action="/o/lyon/leave"><a href="/pricing">"#
        ),
        vec![
            ("GET", "/o/lyon/billing".to_owned()),
            ("POST", "/o/lyon/leave".to_owned())
        ]
    );
}
