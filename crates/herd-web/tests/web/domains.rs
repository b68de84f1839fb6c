//! Domains: a name under the provider's base domain is ready at once; the customer's own
//! domain is proven by a DNS TXT record, looked up with a real resolver (over UDP, against
//! a local name server), before its server goes to a cluster.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_k8s::crd::Instance;
use herd_testkit::{Client, TestApp};
use kube::api::Api;
use sqlx::PgPool;
use uuid::Uuid;

/// Orders a server for `domain` by invoice, as a member of organization `org`.
async fn order_as(member: &Client, org: &str, domain: &str) -> herd_testkit::Resp {
    let form = format!("/o/{org}/order");
    member.get(&form).await.assert_status(200);
    member
        .post(
            &form,
            &[
                ("plan", "community"),
                ("app", "mastodon"),
                ("domain", domain),
                ("payment", "invoice"),
                ("billing_address", "Town hall\n69001 Lyon"),
                ("vat_id", ""),
                ("po_reference", ""),
            ],
        )
        .await
}

async fn order(owner: &Client, domain: &str) -> herd_testkit::Resp {
    order_as(owner, "lyon", domain).await
}

async fn server(pool: &PgPool, domain: &str) -> (Uuid, String) {
    sqlx::query_as("SELECT id, slug FROM instances WHERE domain = $1")
        .bind(domain)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn own_domains_wait_for_their_dns_record_names_under_the_base_do_not(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.auto_approve_invoice_orders = true;
        c.base_domain = Some(herd_domain::DomainName::parse("herd.test").unwrap());
    })
    .await;
    app.dns.manual();
    let op = app.operator("ops@provider.example").await;
    let cluster = app.connect_cluster(&op, "eu-1").await;
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), "herd-system");
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;

    // The form says how domains work; names under the base are one level deep.
    owner
        .get("/o/lyon/order")
        .await
        .assert_contains("A name under herd.test (such as lyon.herd.test) is ready at once");
    for (bad, why) in [
        ("a.b.herd.test", "use a single name"),
        ("herd.test", "the provider&#39;s own domain"),
    ] {
        order(&owner, bad)
            .await
            .assert_status(422)
            .assert_contains(why)
            .assert_contains("aria-invalid=\"true\"");
    }

    // Under the base: straight to the cluster, no record asked for.
    order(&owner, "lyon.herd.test")
        .await
        .assert_redirect("/o/lyon/orders/");
    app.run_jobs().await;
    let (_, slug) = server(&pool, "lyon.herd.test").await;
    assert!(api.get_opt(&slug).await.unwrap().is_some());

    // Its own domain (a second order: the operator approves it under the contract): the
    // page gives the record to add, and nothing is provisioned.
    let r = order(&owner, "social.lyon.fr").await;
    r.assert_redirect("/o/lyon/orders/");
    let order_id = r
        .location
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    op.get("/operator/orders").await;
    op.post(&format!("/operator/orders/{order_id}/approve"), &[])
        .await
        .assert_redirect("/operator/orders");
    app.run_jobs().await;
    let (id, slug) = server(&pool, "social.lyon.fr").await;
    assert!(api.get_opt(&slug).await.unwrap().is_none());
    let page = format!("/o/lyon/servers/{id}");
    let shown = owner.get(&page).await;
    shown
        .assert_contains("Prove that social.lyon.fr is yours")
        .assert_contains("_herd-challenge.social.lyon.fr")
        .assert_contains("waiting for the domain&#39;s DNS record");
    let value = shown.select_text("#challenge-value").pop().unwrap();
    assert!(value.starts_with("herd-verification="), "{value}");
    assert!(
        app.dns
            .queries()
            .iter()
            .any(|q| q == "_herd-challenge.social.lyon.fr"),
        "the worker asked the name server: {:?}",
        app.dns.queries()
    );

    // Checked now: nothing there, then a wrong value, each said plainly.
    owner
        .post(&format!("{page}/domain/check"), &[])
        .await
        .assert_redirect(&page);
    owner
        .get(&page)
        .await
        .assert_contains("No TXT record was found at _herd-challenge.social.lyon.fr");
    app.dns.set_txt(
        "_herd-challenge.social.lyon.fr",
        &["herd-verification=wrong"],
    );
    owner
        .post(&format!("{page}/domain/check"), &[])
        .await
        .assert_redirect(&page);
    owner
        .get(&page)
        .await
        .assert_contains("holds “herd-verification=wrong” but not the value asked for");
    app.run_jobs().await;
    assert!(api.get_opt(&slug).await.unwrap().is_none());

    // A plain member may not check; another organization cannot see the server.
    let member = app.signed_up("Max", "max@lyon.example", None).await;
    app.join("lyon", "max@lyon.example", "member").await;
    member.get(&page).await;
    member
        .post(&format!("{page}/domain/check"), &[])
        .await
        .assert_status(403);
    let eve = app.signed_up("Eve", "eve@else.example", Some("Else")).await;
    eve.get("/o/else/servers").await;
    eve.post(&format!("/o/else/servers/{id}/domain/check"), &[])
        .await
        .assert_status(404);

    // The right record: found by the minute's round, and the server goes to its cluster.
    app.dns.set_txt("_herd-challenge.social.lyon.fr", &[&value]);
    herd_orchestrator::tick(&pool).await.unwrap();
    app.run_jobs().await;
    assert!(api.get_opt(&slug).await.unwrap().is_some());
    let after = owner.get(&page).await;
    after.assert_contains("Domain social.lyon.fr proven by its DNS record");
    assert!(!after.body.contains("id=\"domain-proof\""));
    owner
        .post(&format!("{page}/domain/check"), &[])
        .await
        .assert_redirect(&page);
    owner
        .get(&page)
        .await
        .assert_contains("social.lyon.fr is proven already");
}

/// An order names a domain but does not hold it: an organization that orders someone
/// else's domain waits for a record it cannot get, and the domain's holder still orders it,
/// proves it, and gets the server; the squatter's server is stopped and says why.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_unproven_order_never_keeps_a_domain_from_its_holder(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c| {
        c.auto_approve_invoice_orders = true;
        c.base_domain = Some(herd_domain::DomainName::parse("herd.test").unwrap());
    })
    .await;
    app.dns.manual();
    let op = app.operator("ops@provider.example").await;
    let cluster = app.connect_cluster(&op, "eu-1").await;
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), "herd-system");

    // Eve orders Lyon's domain first.
    let eve = app.signed_up("Eve", "eve@else.example", Some("Else")).await;
    order_as(&eve, "else", "social.lyon.fr")
        .await
        .assert_redirect("/o/else/orders/");
    app.run_jobs().await;
    let (eves, eves_slug): (Uuid, String) = sqlx::query_as(
        "SELECT i.id, i.slug FROM instances i JOIN organizations o ON o.id = i.org_id
         WHERE o.slug = 'else'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    // Lyon orders it too: the form does not call it taken.
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    order(&owner, "social.lyon.fr")
        .await
        .assert_redirect("/o/lyon/orders/");
    app.run_jobs().await;
    let (lyons, lyons_slug): (Uuid, String) = sqlx::query_as(
        "SELECT i.id, i.slug FROM instances i JOIN organizations o ON o.id = i.org_id
         WHERE o.slug = 'lyon'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_ne!(eves_slug, lyons_slug);

    // Each is asked for its own value; Lyon publishes its own.
    let lyon_page = format!("/o/lyon/servers/{lyons}");
    let eve_page = format!("/o/else/servers/{eves}");
    let lyons_value = owner
        .get(&lyon_page)
        .await
        .select_text("#challenge-value")
        .pop()
        .unwrap();
    let eves_value = eve
        .get(&eve_page)
        .await
        .select_text("#challenge-value")
        .pop()
        .unwrap();
    assert_ne!(lyons_value, eves_value);
    app.dns
        .set_txt("_herd-challenge.social.lyon.fr", &[&lyons_value]);
    // Eve checks first: Lyon's record is not hers.
    eve.post(&format!("{eve_page}/domain/check"), &[])
        .await
        .assert_redirect(&eve_page);
    eve.get(&eve_page)
        .await
        .assert_contains("but not the value asked for");
    owner
        .post(&format!("{lyon_page}/domain/check"), &[])
        .await
        .assert_redirect(&lyon_page);
    owner
        .get(&lyon_page)
        .await
        .assert_contains("social.lyon.fr is proven: the server is being set up.");
    app.run_jobs().await;
    assert!(api.get_opt(&lyons_slug).await.unwrap().is_some());
    assert!(api.get_opt(&eves_slug).await.unwrap().is_none());

    // Eve's server is stopped, says why, and asks for no record any more.
    let stopped = eve.get(&eve_page).await;
    stopped
        .assert_contains("data-phase=\"failed\"")
        .assert_contains("Needs attention: the domain was proven by another server first");
    assert!(!stopped.body.contains("id=\"domain-proof\""));
    eve.post(&format!("{eve_page}/domain/check"), &[])
        .await
        .assert_redirect(&eve_page);
    eve.get(&eve_page)
        .await
        .assert_contains("social.lyon.fr was proven by another server first, so this server cannot be set up with it");
    let phase: String = sqlx::query_scalar("SELECT phase FROM instances WHERE id = $1")
        .bind(eves)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(phase, "failed");
    // The minute's round leaves it alone, and now the domain is taken for new orders.
    herd_orchestrator::tick(&pool).await.unwrap();
    app.run_jobs().await;
    assert!(api.get_opt(&eves_slug).await.unwrap().is_none());
    order(&owner, "social.lyon.fr")
        .await
        .assert_status(422)
        .assert_contains("A server with this domain exists already");

    // Unproven claims are few and do not last: three at a time per organization, and a
    // claim not proven within 14 days stops.
    for d in ["a.else.example", "b.else.example", "c.else.example"] {
        order_as(&eve, "else", d)
            .await
            .assert_redirect("/o/else/orders/");
    }
    // Under Else's running contract, an operator approves them.
    let waiting: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM orders WHERE state = 'pending' AND domain LIKE '%.else.example' ORDER BY domain",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(waiting.len(), 3);
    op.get("/operator/orders").await;
    for order in waiting {
        op.post(&format!("/operator/orders/{order}/approve"), &[])
            .await
            .assert_redirect("/operator/orders");
    }
    app.run_jobs().await;
    order_as(&eve, "else", "d.else.example")
        .await
        .assert_status(422)
        .assert_contains("3 of your servers are waiting for their domain&#39;s DNS record");
    sqlx::query(
        "UPDATE instances SET created_at = now() - interval '15 days' WHERE domain = 'a.else.example'",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The next minute's round (this minute's ran already).
    herd_jobs::enqueue(
        &pool,
        &herd_fleet::domains::VerifyDomains { bucket: i64::MAX },
    )
    .await
    .unwrap();
    app.run_jobs().await;
    let (phase, message): (String, String) = sqlx::query_as(
        "SELECT phase, phase_message FROM instances WHERE domain = 'a.else.example'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(phase, "failed");
    assert!(message.contains("not proven in time"), "{message}");
    order_as(&eve, "else", "d.else.example")
        .await
        .assert_redirect("/o/else/orders/");
}
