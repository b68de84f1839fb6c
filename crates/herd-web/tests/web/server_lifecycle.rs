//! Managing a running server, through the router and the worker, with its cluster a
//! kube-fake-client: the provider offers releases; the organization upgrades (now, or in
//! its maintenance window, never skipping a Mastodon series), cancels a scheduled upgrade,
//! moves its window and deletes the server with a typed confirmation. Each action is
//! authorized by role, idempotent on a second click, audited, and reaches the cluster.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::version::MaintenanceWindow;
use herd_k8s::crd::Instance;
use herd_testkit::fake_cluster::FakeCluster;
use herd_testkit::{Client, TestApp};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn audited(pool: &PgPool, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = $1")
        .bind(action)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn version_of(pool: &PgPool, id: Uuid) -> (String, Option<String>) {
    sqlx::query_as("SELECT version, upgrade_to FROM instances WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The cluster's operator reports the server running `version`; the control plane syncs.
async fn report_running(app: &TestApp, api: &Api<Instance>, slug: &str, version: &str) {
    api.patch_status(
        slug,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "phase": "Running",
            "url": "https://lyon.social",
            "runningVersion": version,
            "conditions": [{ "type": "Web", "status": "True", "reason": "Ready", "message": "web is ready" }]
        }})),
    )
    .await
    .unwrap();
    app.sync_clusters().await;
}

/// An organization "lyon" with a running Mastodon v4.7.6 at lyon.social, ordered by invoice
/// (approved at once) and applied to cluster eu-1. Returns (owner, operator, cluster,
/// server id, slug).
async fn running_server(app: &TestApp) -> (Client, Client, FakeCluster, Uuid, String) {
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    owner.get("/o/lyon/order").await.assert_status(200);
    owner
        .post(
            "/o/lyon/order",
            &[
                ("plan", "community"),
                ("app", "mastodon"),
                ("domain", "lyon.social"),
                ("payment", "invoice"),
                ("billing_address", "Ville de Lyon\n69001 Lyon"),
                ("vat_id", ""),
                ("po_reference", ""),
            ],
        )
        .await
        .assert_redirect("/o/lyon/orders/");
    let op = app.operator("ops@provider.example").await;
    let cluster = app.connect_cluster(&op, "eu-1").await;
    let (id, slug): (Uuid, String) = sqlx::query_as("SELECT id, slug FROM instances")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), "herd-system");
    assert_eq!(api.get(&slug).await.unwrap().spec.version, "v4.7.6");
    report_running(app, &api, &slug, "v4.7.6").await;
    (owner, op, cluster, id, slug)
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn releases_upgrades_and_the_maintenance_window(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c| c.auto_approve_invoice_orders = true).await;
    let (owner, op, cluster, id, slug) = running_server(&app).await;
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), "herd-system");
    let page = format!("/o/lyon/servers/{id}");
    owner
        .get(&page)
        .await
        .assert_contains("Up to date: no newer release is offered");

    // The provider lists releases: bad tags and a second listing are refused, re-rendered.
    op.get("/operator/releases")
        .await
        .assert_status(200)
        .assert_contains("v4.7.6");
    for (tag, why) in [
        ("4.8.1", "not a Mastodon release tag"),
        ("v4.8.1; rm -rf", "not a Mastodon release tag"),
        ("v4.7.6", "listed already"),
    ] {
        op.post(
            "/operator/releases",
            &[("app", "mastodon"), ("version", tag), ("note", "")],
        )
        .await
        .assert_status(422)
        .assert_contains(why);
    }
    for tag in ["v4.9.0", "v4.8.1", "v4.7.7"] {
        op.post(
            "/operator/releases",
            &[
                ("app", "mastodon"),
                ("version", tag),
                ("note", "tested on staging"),
            ],
        )
        .await
        .assert_redirect("/operator/releases");
    }
    assert_eq!(audited(&pool, "release.added").await, 3);

    // The next step is offered, never the release that skips 4.8.
    let shown = owner.get(&page).await;
    // The next step is offered with the newest patch of its own series, never the
    // release that skips 4.8.
    shown
        .assert_contains("v4.7.7 and v4.8.1 are available")
        .assert_contains("value=\"v4.8.1\" checked")
        .assert_contains("In the maintenance window (Sunday 03:00 UTC)");
    assert!(!shown.body.contains("v4.9.0 is available"));
    // A forged form asking for the skip is refused, and nothing moves.
    owner
        .post(
            &format!("{page}/upgrade"),
            &[("version", "v4.9.0"), ("when", "now")],
        )
        .await
        .assert_redirect(&page);
    owner
        .get(&page)
        .await
        .assert_contains("skips a minor series");
    assert_eq!(version_of(&pool, id).await, ("v4.7.6".into(), None));

    // A plain member may not upgrade; another organization cannot see the server.
    let member = app.signed_up("Max", "max@lyon.example", None).await;
    app.join("lyon", "max@lyon.example", "member").await;
    member.get(&page).await.assert_status(200);
    member
        .post(
            &format!("{page}/upgrade"),
            &[("version", "v4.8.1"), ("when", "now")],
        )
        .await
        .assert_status(403)
        .assert_contains("only owners and admins");
    member
        .post("/o/lyon/maintenance-window", &[("day", "1"), ("hour", "1")])
        .await
        .assert_status(403)
        .assert_contains("only owners and admins");
    let eve = app.signed_up("Eve", "eve@else.example", Some("Else")).await;
    eve.get("/o/else/servers").await.assert_status(200);
    eve.post(
        &format!("/o/else/servers/{id}/upgrade"),
        &[("version", "v4.8.1"), ("when", "now")],
    )
    .await
    .assert_status(404);
    assert_eq!(version_of(&pool, id).await, ("v4.7.6".into(), None));

    // Scheduled into the window: recorded with its time, twice is once, cancellable.
    owner.get(&page).await;
    for _ in 0..2 {
        owner
            .post(
                &format!("{page}/upgrade"),
                &[("version", "v4.8.1"), ("when", "window")],
            )
            .await
            .assert_redirect(&page);
    }
    let at: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT upgrade_at FROM instances WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let expected = MaintenanceWindow::new(7, 3)
        .unwrap()
        .next_start(time::OffsetDateTime::now_utc());
    assert!(
        (at.unwrap() - expected).whole_minutes().abs() <= 1,
        "{at:?} vs {expected}"
    );
    assert_eq!(audited(&pool, "instance.upgrade.scheduled").await, 1);
    owner
        .get(&page)
        .await
        .assert_contains("id=\"upgrade-scheduled\"");
    // Nothing reaches the cluster before the window.
    herd_orchestrator::tick(&pool).await.unwrap();
    app.run_jobs().await;
    assert_eq!(api.get(&slug).await.unwrap().spec.version, "v4.7.6");
    // The window moves (audited) and the scheduled upgrade with it; a bad day changes
    // nothing.
    owner.get("/o/lyon/servers").await;
    owner
        .post("/o/lyon/maintenance-window", &[("day", "9"), ("hour", "3")])
        .await
        .assert_redirect("/o/lyon/servers");
    owner
        .get("/o/lyon/servers")
        .await
        .assert_contains("Choose a day of the week")
        .assert_contains("Sunday 03:00 UTC");
    owner
        .post(
            "/o/lyon/maintenance-window",
            &[("day", "1"), ("hour", "22")],
        )
        .await
        .assert_redirect("/o/lyon/servers");
    owner
        .get("/o/lyon/servers")
        .await
        .assert_contains("Monday 22:00 UTC");
    assert_eq!(audited(&pool, "org.maintenance_window.changed").await, 1);
    let moved: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT upgrade_at FROM instances WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    let monday = MaintenanceWindow::new(1, 22)
        .unwrap()
        .next_start(time::OffsetDateTime::now_utc());
    assert!(
        (moved.unwrap() - monday).whole_minutes().abs() <= 1,
        "{moved:?} vs {monday}"
    );

    // An operator cancels it from the console (the organization can too), audited.
    op.get(&format!("/operator/instances/{id}"))
        .await
        .assert_contains("id=\"upgrade-scheduled\"");
    op.post(&format!("/operator/instances/{id}/upgrade/cancel"), &[])
        .await
        .assert_redirect(&format!("/operator/instances/{id}"));
    assert_eq!(version_of(&pool, id).await, ("v4.7.6".into(), None));
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action = 'instance.upgrade.cancelled' AND actor_email = 'ops@provider.example'"
        )
        .await,
        1
    );
    owner.get(&page).await;
    owner
        .post(&format!("{page}/upgrade/cancel"), &[])
        .await
        .assert_redirect(&page);
    owner
        .get(&page)
        .await
        .assert_contains("Nothing to do: it was already so.");

    // Scheduled again; when the window comes, the worker starts it and the cluster follows.
    owner.get(&page).await;
    owner
        .post(
            &format!("{page}/upgrade"),
            &[("version", "v4.8.1"), ("when", "window")],
        )
        .await
        .assert_redirect(&page);
    sqlx::query("UPDATE instances SET upgrade_at = now() - interval '1 minute' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    herd_orchestrator::tick(&pool).await.unwrap();
    app.run_jobs().await;
    assert_eq!(version_of(&pool, id).await, ("v4.8.1".into(), None));
    assert_eq!(api.get(&slug).await.unwrap().spec.version, "v4.8.1");
    owner
        .get(&page)
        .await
        .assert_contains("started in the maintenance window")
        .assert_contains("the upgrade is under way");
    // Audited as the window's doing, with no person as its actor.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action = 'instance.upgrade.started' AND actor_id IS NULL AND details->>'by' = 'maintenance window'"
        )
        .await,
        1
    );

    // While the cluster has not finished it, no further upgrade starts.
    owner
        .post(
            &format!("{page}/upgrade"),
            &[("version", "v4.9.0"), ("when", "now")],
        )
        .await
        .assert_redirect(&page);
    owner
        .get(&page)
        .await
        .assert_contains("is not running v4.8.1 yet");
    assert_eq!(version_of(&pool, id).await.0, "v4.8.1");

    // Once it runs v4.8.1, the next series is offered; "now" starts it at once, and a
    // double click starts it once.
    report_running(&app, &api, &slug, "v4.8.1").await;
    owner
        .get(&page)
        .await
        .assert_contains("v4.9.0 is available");
    for _ in 0..2 {
        owner
            .post(
                &format!("{page}/upgrade"),
                &[("version", "v4.9.0"), ("when", "now")],
            )
            .await
            .assert_redirect(&page);
    }
    app.run_jobs().await;
    assert_eq!(api.get(&slug).await.unwrap().spec.version, "v4.9.0");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action = 'instance.upgrade.started' AND actor_email = 'lea@lyon.example'"
        )
        .await,
        1,
        "the double click started one upgrade"
    );

    // Operators upgrade from the console too (here to a release candidate they listed),
    // named in the audit log.
    report_running(&app, &api, &slug, "v4.9.0").await;
    op.get("/operator/releases").await;
    op.post(
        "/operator/releases",
        &[
            ("app", "mastodon"),
            ("version", "v4.10.0-rc.1"),
            ("note", ""),
        ],
    )
    .await
    .assert_redirect("/operator/releases");
    op.get(&format!("/operator/instances/{id}"))
        .await
        .assert_contains("v4.10.0-rc.1 is offered");
    op.post(
        &format!("/operator/instances/{id}/upgrade"),
        &[("version", "v4.10.0-rc.1")],
    )
    .await
    .assert_redirect(&format!("/operator/instances/{id}"));
    app.run_jobs().await;
    assert_eq!(api.get(&slug).await.unwrap().spec.version, "v4.10.0-rc.1");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action = 'instance.upgrade.started' AND actor_email = 'ops@provider.example'"
        )
        .await,
        1
    );

    // A new server starts on the newest stable release offered.
    let newest: String = {
        let mut conn = pool.acquire().await.unwrap();
        herd_fleet::orders::newest_release(&mut conn, "mastodon")
            .await
            .unwrap()
    };
    assert_eq!(newest, "v4.9.0", "a release candidate is not a default");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn deleting_a_server_takes_the_typed_address_and_removes_it_from_its_cluster(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c| c.auto_approve_invoice_orders = true).await;
    let (owner, op, cluster, id, slug) = running_server(&app).await;
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), "herd-system");
    let page = format!("/o/lyon/servers/{id}");

    // A member may not even see the confirmation.
    let member = app.signed_up("Max", "max@lyon.example", None).await;
    app.join("lyon", "max@lyon.example", "member").await;
    member
        .get(&format!("{page}/delete"))
        .await
        .assert_status(403);
    member.get(&page).await;
    member
        .post(&format!("{page}/delete"), &[("confirm", "lyon.social")])
        .await
        .assert_status(403)
        .assert_contains("only owners and admins");
    // Another organization's owner cannot see it exists.
    let eve = app.signed_up("Eve", "eve@else.example", Some("Else")).await;
    eve.get(&format!("/o/else/servers/{id}/delete"))
        .await
        .assert_status(404);
    eve.get("/o/else/servers").await.assert_status(200);
    for action in ["delete", "upgrade/cancel"] {
        eve.post(
            &format!("/o/else/servers/{id}/{action}"),
            &[("confirm", "lyon.social")],
        )
        .await
        .assert_status(404);
    }
    // An operator's confirmation is the same typed one.
    op.get(&format!("/operator/instances/{id}/delete"))
        .await
        .assert_contains("Delete lyon.social?");
    op.post(
        &format!("/operator/instances/{id}/delete"),
        &[("confirm", "lyon")],
    )
    .await
    .assert_status(422)
    .assert_contains("address: lyon.social");

    let confirm = owner.get(&format!("{page}/delete")).await;
    confirm
        .assert_status(200)
        .assert_contains("Delete lyon.social?")
        .assert_contains("It cannot be undone")
        .assert_contains("does not end its subscription");
    // A wrong or empty confirmation re-renders with the reason, and nothing changes.
    for typed in ["", "lyon", "lyon.social.evil"] {
        owner
            .post(&format!("{page}/delete"), &[("confirm", typed)])
            .await
            .assert_status(422)
            .assert_contains("address: lyon.social")
            .assert_contains("aria-invalid=\"true\"");
    }
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM instances WHERE desired = 'deleted'"
        )
        .await,
        0
    );
    app.run_jobs().await;
    assert!(api.get_opt(&slug).await.unwrap().is_some());

    // Typed right (twice: the second click changes nothing): gone from the cluster.
    for _ in 0..2 {
        owner
            .post(&format!("{page}/delete"), &[("confirm", "Lyon.Social ")])
            .await
            .assert_redirect(&page);
    }
    assert_eq!(audited(&pool, "instance.deleted").await, 1);
    app.run_jobs().await;
    assert!(api.get_opt(&slug).await.unwrap().is_none());
    let shown = owner.get(&page).await;
    shown
        .assert_contains("data-phase=\"deleting\"")
        .assert_contains("Deletion requested");
    assert!(!shown.body.contains("/delete\""), "no second delete button");
    assert!(
        !shown.body.contains("/upgrade\""),
        "no upgrade of a deleted server"
    );
    // The next sync sees it gone for good.
    herd_orchestrator::tick(&pool).await.unwrap();
    app.run_jobs().await;
    owner
        .get(&page)
        .await
        .assert_contains("data-phase=\"deleted\"");
    // Nothing more can be asked of it.
    owner
        .post(&format!("{page}/suspend"), &[])
        .await
        .assert_redirect(&page);
    owner.get(&page).await.assert_contains("being deleted");
}

/// Puts an owner-password Secret where the operator would, in the server's namespace.
async fn owner_secret(cluster: &FakeCluster, password: &str) {
    use k8s_openapi::api::core::v1::Secret;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "herd-lyon-social");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "owner-password", "namespace": "herd-lyon-social" },
        "stringData": { "password": password, "username": "lea" }
    }))
    .unwrap();
    secrets
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_new_owner_password_is_set_on_the_cluster_and_shown_once(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c| c.auto_approve_invoice_orders = true).await;
    let (owner, op, cluster, id, slug) = running_server(&app).await;
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), "herd-system");
    let page = format!("/o/lyon/servers/{id}");
    owner_secret(&cluster, "first0first0first0first0first0ff").await;
    app.sync_clusters().await;
    owner.get(&page).await;
    owner
        .post(&format!("{page}/owner-password"), &[])
        .await
        .assert_contains("first0first0first0first0first0ff");

    // A plain member may not ask for one.
    let member = app.signed_up("Max", "max@lyon.example", None).await;
    app.join("lyon", "max@lyon.example", "member").await;
    member.get(&page).await;
    member
        .post(&format!("{page}/owner-password/reset"), &[])
        .await
        .assert_status(403)
        .assert_contains("only owners and admins");

    // Confirmed, asked once however often it is clicked, audited, sent to the cluster.
    owner
        .get(&format!("{page}/owner-password/reset"))
        .await
        .assert_contains("Set a new password for @lea?")
        .assert_contains("the current one stops working");
    for _ in 0..2 {
        owner
            .post(&format!("{page}/owner-password/reset"), &[])
            .await
            .assert_redirect(&page);
    }
    assert_eq!(audited(&pool, "instance.owner_password.reset").await, 1);
    app.run_jobs().await;
    assert_eq!(
        api.get(&slug).await.unwrap().spec.owner.password_generation,
        1
    );
    owner
        .get(&page)
        .await
        .assert_contains("id=\"owner-password-pending\"");
    // Until the cluster reports it set, a Secret lying there is not taken for it.
    owner_secret(&cluster, "second0second0second0second0sec0").await;
    app.sync_clusters().await;
    owner
        .post(&format!("{page}/owner-password"), &[])
        .await
        .assert_contains("not ready yet");

    // The operator reports it set: collected, then shown once.
    api.patch_status(
        &slug,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "ownerPasswordGeneration": 1 } })),
    )
    .await
    .unwrap();
    app.sync_clusters().await;
    owner
        .get(&page)
        .await
        .assert_contains("The owner&#39;s new password is set");
    let shown = owner.post(&format!("{page}/owner-password"), &[]).await;
    shown.assert_contains("second0second0second0second0sec0");
    assert_eq!(shown.cache_control.as_deref(), Some("no-store"));
    owner
        .post(&format!("{page}/owner-password"), &[])
        .await
        .assert_contains("was shown on");

    // Operators ask for one from the console (and never see it).
    op.get(&format!("/operator/instances/{id}/owner-password/reset"))
        .await
        .assert_contains("not here");
    op.post(
        &format!("/operator/instances/{id}/owner-password/reset"),
        &[],
    )
    .await
    .assert_redirect(&format!("/operator/instances/{id}"));
    app.run_jobs().await;
    assert_eq!(
        api.get(&slug).await.unwrap().spec.owner.password_generation,
        2
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action = 'instance.owner_password.reset' AND actor_email = 'ops@provider.example'"
        )
        .await,
        1
    );

    // That reset's Job fails: the server runs on, the owner is told and may ask again;
    // operators read why in the history.
    let generation = api.get(&slug).await.unwrap().metadata.generation;
    api.patch_status(
        &slug,
        &PatchParams::default(),
        &Patch::Merge(
            json!({ "status": { "observedGeneration": generation, "conditions": [{
                "type": "OwnerPassword", "status": "False", "reason": "JobFailed",
                "message": "Job reset-owner-password-2 failed: BackoffLimitExceeded",
            }]}}),
        ),
    )
    .await
    .unwrap();
    app.sync_clusters().await;
    let failed = owner.get(&page).await;
    failed
        .assert_contains("id=\"owner-password-failed\"")
        .assert_contains("data-phase=\"running\"")
        .assert_contains("/owner-password/reset\"");
    assert!(
        !failed.body.contains("BackoffLimitExceeded"),
        "details are for operators"
    );
    failed.assert_contains("Setting the owner&#39;s new password failed; the server runs on");
    op.get(&format!("/operator/instances/{id}"))
        .await
        .assert_contains("Setting the owner's new password failed: Job reset-owner-password-2 failed: BackoffLimitExceeded");
    app.sync_clusters().await;
    assert_eq!(
        count(
            &pool,
            &format!("SELECT count(*) FROM instance_events WHERE instance_id = '{id}' AND message LIKE 'Setting the owner%failed%'")
        )
        .await,
        1,
        "told once"
    );
    // The failed reset is not asked of the cluster again (its Job may expire): the
    // Instance is applied again without it.
    app.run_jobs().await;
    assert_eq!(
        api.get(&slug).await.unwrap().spec.owner.password_generation,
        0
    );
    owner
        .post(&format!("{page}/owner-password/reset"), &[])
        .await
        .assert_redirect(&page);
    app.run_jobs().await;
    assert_eq!(
        api.get(&slug).await.unwrap().spec.owner.password_generation,
        3
    );
    // The status still speaks of the earlier reset (the operator has not seen the new
    // spec yet): the new one is not taken for failed.
    app.sync_clusters().await;
    owner
        .get(&page)
        .await
        .assert_contains("id=\"owner-password-pending\"");
}

/// Under an invoice contract, the operator changes the contract's plan: the servers it
/// bills move to that plan (the Instance's plan and sizing follow), once, with a line in
/// their history and the move in the audit entry; saving the same plan again moves nothing.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_contract_moved_to_another_plan_moves_its_servers(pool: PgPool) {
    let app = TestApp::spawn_with(pool.clone(), |c| c.auto_approve_invoice_orders = true).await;
    let (owner, op, cluster, id, slug) = running_server(&app).await;
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), "herd-system");
    let before = api.get(&slug).await.unwrap().spec;
    assert_eq!(before.plan, "community");
    // A second server, ordered on another plan under the same contract.
    owner.get("/o/lyon/order").await.assert_status(200);
    owner
        .post(
            "/o/lyon/order",
            &[
                ("plan", "organization"),
                ("app", "mastodon"),
                ("domain", "second.lyon.social"),
                ("payment", "invoice"),
                ("billing_address", "Ville de Lyon\n69001 Lyon"),
                ("vat_id", ""),
                ("po_reference", ""),
            ],
        )
        .await
        .assert_redirect("/o/lyon/orders/");
    // Under a running contract an operator approves it (its plan is not the contract's).
    let order: Uuid =
        sqlx::query_scalar("SELECT id FROM orders WHERE domain = 'second.lyon.social'")
            .fetch_one(&pool)
            .await
            .unwrap();
    op.get("/operator/orders").await;
    op.post(&format!("/operator/orders/{order}/approve"), &[])
        .await
        .assert_redirect("/operator/orders");
    app.run_jobs().await;
    let other_slug: String =
        sqlx::query_scalar("SELECT slug FROM instances WHERE domain = 'second.lyon.social'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        api.get(&other_slug).await.unwrap().spec.plan,
        "organization"
    );

    op.get("/operator/orgs/lyon/contract")
        .await
        .assert_status(200);
    let terms = |plan: &'static str| {
        [
            ("plan", plan),
            ("price", "4800.00"),
            ("currency", "EUR"),
            ("period", "year"),
            ("terms_days", "30"),
            ("po_reference", ""),
            ("billing_address", "Ville de Lyon\n69001 Lyon"),
            ("vat_id", ""),
            ("starts_on", "2026-01-01"),
            ("ends_on", ""),
        ]
    };
    op.post("/operator/orgs/lyon/contract", &terms("institution"))
        .await
        .assert_redirect("/operator/orgs/lyon/contract");
    op.get("/operator/orgs/lyon/contract")
        .await
        .assert_contains("1 server(s) move to the institution plan");
    app.run_jobs().await;
    let after = api.get(&slug).await.unwrap().spec;
    assert_eq!(after.plan, "institution");
    assert_ne!(after.sizing, before.sizing, "resources follow the plan");
    assert_eq!(
        api.get(&other_slug).await.unwrap().spec.plan,
        "organization",
        "a server ordered on its own plan stays on it"
    );
    let moved: serde_json::Value = sqlx::query_scalar(
        "SELECT details->'servers_moved' FROM audit_log WHERE action = 'billing.contract.saved'
         ORDER BY at DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(moved, json!([id]));
    owner
        .get(&format!("/o/lyon/servers/{id}"))
        .await
        .assert_contains("Moved to the institution plan");

    // The same plan again (another term changed): nothing moves.
    op.post("/operator/orgs/lyon/contract", &terms("institution"))
        .await
        .assert_redirect("/operator/orgs/lyon/contract");
    app.run_jobs().await;
    assert_eq!(
        count(
            &pool,
            &format!("SELECT count(*) FROM instance_events WHERE instance_id = '{id}' AND message LIKE 'Moved to%'")
        )
        .await,
        1
    );
}
