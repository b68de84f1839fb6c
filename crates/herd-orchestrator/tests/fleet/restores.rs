//! Restores and restore drills (issue 12) through the console, the apply job, the status
//! sync and the drill job, against fake clusters. The operator's side is played here by
//! writing `status.restore` on the fake cluster's Instance.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::{Desired, InstancePhase, OrgId};
use herd_k8s::crd::Instance;
use herd_store::fleet;
use herd_testkit::fake_cluster::FakeCluster;
use herd_testkit::TestApp;
use herd_testkit::{Client, Resp};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const OPS: &str = "ops@provider.example";

/// An organization with an owner, and a fulfilled order's server on it.
async fn server(pool: &PgPool, org_slug: &str, domain: &str) -> Uuid {
    let o = Uuid::now_v7();
    let u = Uuid::now_v7();
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, $2, $2)")
        .bind(o)
        .bind(org_slug)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO users (id, email, display_name, password_hash, email_verified_at) VALUES ($1, $2, 'Owner', 'x', now())")
        .bind(u)
        .bind(format!("owner@{org_slug}.example"))
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(o)
        .bind(u)
        .execute(pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let (order, _) = herd_store::billing::create_order(
        &mut conn,
        &herd_store::billing::NewOrder {
            org: OrgId(o),
            plan_code: "community",
            app: "mastodon",
            domain,
            created_by: None,
            invoice: None,
            domain_preverified: false,
            submission: None,
        },
    )
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(herd_billing::fulfil::fulfil_paid(
        &mut tx,
        order,
        OrgId(o),
        &format!("sub_{org_slug}")
    )
    .await
    .unwrap());
    tx.commit().await.unwrap();
    fleet::by_order(pool, order).await.unwrap().unwrap()
}

async fn row(pool: &PgPool, id: Uuid) -> fleet::Instance {
    fleet::instance(pool, id).await.unwrap().unwrap()
}

fn instances(c: &FakeCluster) -> Api<Instance> {
    Api::namespaced(c.client.clone(), "herd-system")
}

fn location(slug: &str, name: &str) -> String {
    format!("s3://herd-backups/herd/scheduled/keep-7d/{slug}/{name}/")
}

/// A verified dump that succeeded.
fn dump(slug: &str, name: &str) -> Value {
    json!({
        "name": name, "reason": "Scheduled", "method": "Dump", "outcome": "Succeeded",
        "startedAt": "2026-12-08T02:17:05Z", "finishedAt": "2026-12-08T02:19:35Z",
        "durationSeconds": 150, "sizeBytes": 1_048_576, "location": location(slug, name),
        "checksum": "ab".repeat(32),
    })
}

/// Reports `status` (merged) on the Instance `slug`.
async fn report(c: &FakeCluster, slug: &str, status: Value) {
    instances(c)
        .patch_status(
            slug,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

/// The usual start: an operator, cluster eu-1, and lyon.social running there with one
/// scheduled backup (`scheduled-1`).
async fn lyon_with_a_backup(pool: &PgPool) -> (TestApp, Client, FakeCluster, Uuid) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = app.operator(OPS).await;
    let eu = app.connect_cluster(&op, "eu-1").await;
    let id = running(
        &app,
        &eu,
        "lyon",
        "lyon.social",
        json!([dump("lyon-social", "scheduled-1")]),
    )
    .await;
    (app, op, eu, id)
}

/// A tenant of a new organization `org`, on the cluster, running v4.7.6 and reporting
/// `backups`.
async fn running(app: &TestApp, c: &FakeCluster, org: &str, domain: &str, backups: Value) -> Uuid {
    let id = server(&app.pool, org, domain).await;
    app.run_jobs().await;
    let slug = row(&app.pool, id).await.slug;
    // The app's secrets, as the operator makes them.
    let ns = format!("herd-{slug}");
    let secrets = Secret {
        metadata: ObjectMeta {
            name: Some("app-secrets".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        data: Some(
            [
                (
                    "SECRET_KEY_BASE".to_owned(),
                    ByteString(secret_key_base(&slug).into()),
                ),
                (
                    "OTP_SECRET".to_owned(),
                    ByteString(b"otp-0123456789".to_vec()),
                ),
            ]
            .into(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(c.client.clone(), &ns)
        .create(&PostParams::default(), &secrets)
        .await
        .unwrap();
    report(
        c,
        &slug,
        json!({ "phase": "Running", "runningVersion": "v4.7.6", "backups": backups }),
    )
    .await;
    app.sync_clusters().await;
    assert_eq!(row(&app.pool, id).await.phase, InstancePhase::Running);
    id
}

fn secret_key_base(slug: &str) -> String {
    format!("key-base-of-{slug}-0123456789abcdef")
}

async fn count(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn restores_of(pool: &PgPool, id: Uuid) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM tenant_restores WHERE source_instance_id = $1",
        id,
    )
    .await
}

async fn apply_jobs(pool: &PgPool, id: Uuid) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM jobs WHERE kind = 'fleet.apply_instance' AND payload->>'instance_id' = $1::text",
        id,
    )
    .await
}

async fn audits(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'fleet.instance.restore_requested' ORDER BY at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Posts the console's restore form of tenant `id` (after loading it, for its token).
async fn post_restore(op: &Client, id: Uuid, fields: &[(&str, &str)]) -> Resp {
    op.get(&format!("/operator/instances/{id}/restore"))
        .await
        .assert_status(200);
    op.post(&format!("/operator/instances/{id}/restore"), fields)
        .await
}

/// In place from the console: the chosen backup's location goes into spec.restore,
/// audited; a wrong confirmation or a second restore while one runs changes nothing; a
/// customer cannot; the operator's steps are recorded, in the history and on the page.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_operator_restores_a_tenant_in_place_and_follows_its_steps(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = app.operator(OPS).await;
    let eu = app.connect_cluster(&op, "eu-1").await;
    let id = running(
        &app,
        &eu,
        "lyon",
        "lyon.social",
        json!([dump("lyon-social", "scheduled-2"), dump("lyon-social", "scheduled-1"),
               { "name": "scheduled-0", "reason": "Scheduled", "method": "Dump", "outcome": "Failed",
                 "startedAt": "2026-12-07T02:17:05Z", "finishedAt": "2026-12-07T02:19:35Z",
                 "message": "BackoffLimitExceeded" }]),
    )
    .await;
    let slug = row(&pool, id).await.slug;

    // The form lists the restorable backups only.
    let page = op.get(&format!("/operator/instances/{id}/restore")).await;
    page.assert_status(200)
        .assert_contains("scheduled-2")
        .assert_contains("scheduled-1");
    assert!(
        !page.body.contains("scheduled-0"),
        "a failed backup is not offered"
    );
    assert_eq!(page.forms_without_csrf().0, Vec::<String>::new());

    // A customer (owner of the organization) has no console.
    let owner = app
        .signed_up("Owner", "owner2@lyon.example", Some("Other org"))
        .await;
    app.join("lyon", "owner2@lyon.example", "owner").await;
    let r = owner
        .get(&format!("/operator/instances/{id}/restore"))
        .await;
    assert!(matches!(r.status, 403 | 404), "{}", r.status);
    let r = owner
        .post(
            &format!("/operator/instances/{id}/restore"),
            &[
                ("backup", "scheduled-1"),
                ("mode", "in_place"),
                ("confirm", &slug),
            ],
        )
        .await;
    assert!(matches!(r.status, 403 | 404), "{}", r.status);

    // A wrong confirmation re-renders with a message and changes nothing.
    let jobs_before = apply_jobs(&pool, id).await;
    let r = post_restore(
        &op,
        id,
        &[
            ("backup", "scheduled-1"),
            ("mode", "in_place"),
            ("confirm", "lyon"),
        ],
    )
    .await;
    r.assert_status(422)
        .assert_contains("To confirm, type the tenant");
    assert_eq!(restores_of(&pool, id).await, 0);
    assert_eq!(apply_jobs(&pool, id).await, jobs_before);
    assert!(audits(&pool).await.is_empty());

    // The right one: requested, audited, applied with the chosen backup.
    let r = post_restore(
        &op,
        id,
        &[
            ("backup", "scheduled-1"),
            ("mode", "in_place"),
            ("confirm", &slug),
        ],
    )
    .await;
    r.assert_redirect(&format!("/operator/instances/{id}"));
    let audit = audits(&pool).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["backup"], "scheduled-1");
    assert_eq!(audit[0]["mode"], "in_place");
    app.run_jobs().await;
    let applied = instances(&eu).get(&slug).await.unwrap();
    let asked = applied.spec.restore.clone().expect("spec.restore");
    assert_eq!(asked.source, location("lyon-social", "scheduled-1"));
    assert_eq!(asked.source_tenant, None, "its own backup");
    assert!(!applied.spec.drill);
    let restore_id: Uuid = asked.id.parse().unwrap();

    // Another restore while this one runs is refused, and changes nothing.
    let r = post_restore(
        &op,
        id,
        &[
            ("backup", "scheduled-2"),
            ("mode", "in_place"),
            ("confirm", &slug),
        ],
    )
    .await;
    r.assert_status(422).assert_contains("not finished");
    assert_eq!(restores_of(&pool, id).await, 1);
    assert_eq!(audits(&pool).await.len(), 1);

    // The operator's steps: recorded, in the history, on the page.
    report(
        &eu,
        &slug,
        json!({ "phase": "Restoring", "restore": {
            "id": asked.id, "step": "Restoring", "source": asked.source,
            "startedAt": "2026-12-08T10:00:00Z" } }),
    )
    .await;
    app.sync_clusters().await;
    let step: String = sqlx::query_scalar("SELECT step FROM tenant_restores WHERE id = $1")
        .bind(restore_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(step, "restoring");
    let page = op.get(&format!("/operator/instances/{id}")).await;
    page.assert_status(200);
    assert_eq!(
        page.select_text("#server-phase strong"),
        vec!["restoring the backup"]
    );
    assert_eq!(page.select_text("#last-proven"), vec!["never"]);
    // Followed live (the shape /assets/server.js applies); operators only.
    let (status, kind, event) = op
        .first_event(&format!("/operator/instances/{id}/restore/events"))
        .await;
    assert_eq!((status, kind.as_str()), (200, "text/event-stream"));
    assert!(
        event.contains("event: status") && event.contains("\"phase\":\"restoring\""),
        "{event}"
    );
    let (status, _, _) = owner
        .first_event(&format!("/operator/instances/{id}/restore/events"))
        .await;
    assert!(matches!(status, 403 | 404), "{status}");

    report(
        &eu,
        &slug,
        json!({ "phase": "Running", "restore": {
            "id": asked.id, "step": "Succeeded", "source": asked.source,
            "startedAt": "2026-12-08T10:00:00Z", "finishedAt": "2026-12-08T10:04:00Z",
            "sourceRows": { "accounts": 12, "statuses": 345 },
            "restoredRows": { "accounts": 12, "statuses": 345 } } }),
    )
    .await;
    app.sync_clusters().await;
    let history = fleet::events(&pool, id, 50).await.unwrap();
    for text in ["Restore: restoring the backup", "Restore: succeeded"] {
        assert!(
            history.iter().any(|e| e.message == text),
            "{text} in {:?}",
            history.iter().map(|e| &e.message).collect::<Vec<_>>()
        );
    }
    let page = op.get(&format!("/operator/instances/{id}")).await;
    assert!(
        page.select_text("#server-phase").is_empty(),
        "no longer moving"
    );
    assert_ne!(page.select_text("#last-proven"), vec!["never"]);
    page.assert_contains("statuses 345 of 345");
    // Finished: the next apply no longer asks for it.
    app.run_jobs().await;
}

/// Into a new tenant: the source's app-secrets are copied (same values) into the new
/// namespace before its Instance is applied; while the source's cluster is unreachable the
/// restore waits and says why; the values appear in no record.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_restore_into_a_new_tenant_copies_the_app_secrets_first(pool: PgPool) {
    let (app, op, eu1, id) = lyon_with_a_backup(&pool).await;
    let eu2 = app.connect_cluster(&op, "eu-2").await;
    let eu2_id: Uuid = sqlx::query_scalar("SELECT id FROM clusters WHERE name = 'eu-2'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(eu1.client.clone(), "herd-lyon-social")
        .get("app-secrets")
        .await
        .unwrap();
    let secret_key_base = secret_key_base("lyon-social");

    // The source's cluster does not answer: the new tenant waits, and says why.
    app.clusters.unplug("eu-1");
    let r = post_restore(
        &op,
        id,
        &[
            ("backup", "scheduled-1"),
            ("mode", "new_tenant"),
            ("slug", "lyon-undo"),
            ("domain", "undo.lyon.social"),
            ("cluster", &eu2_id.to_string()),
            ("confirm", "lyon-social"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let new_id: Uuid = r
        .location
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(new_id, id);
    app.run_jobs().await;
    let new = row(&pool, new_id).await;
    assert_eq!(new.org_id, row(&pool, id).await.org_id);
    assert_eq!(new.cluster_name.as_deref(), Some("eu-2"));
    assert!(
        instances(&eu2)
            .get_opt("lyon-undo")
            .await
            .unwrap()
            .is_none(),
        "not applied without the secrets"
    );
    let waiting = new.phase_message.clone().unwrap_or_default();
    assert!(
        waiting.contains("app secrets") && waiting.contains("eu-1 is unreachable"),
        "{waiting}"
    );
    op.get(&format!("/operator/instances/{new_id}"))
        .await
        .assert_contains("eu-1 is unreachable");

    // It answers again: the next round copies the secrets, then applies.
    app.clusters.plug("eu-1", eu1.client.clone());
    herd_fleet::drills::run(&pool, 0, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    app.run_jobs().await;
    let copied = Api::<Secret>::namespaced(eu2.client.clone(), "herd-lyon-undo")
        .get("app-secrets")
        .await
        .unwrap();
    assert_eq!(copied.data, secrets.data, "the same values");
    assert!(eu2.namespaces().contains_key("herd-lyon-undo"));
    let applied = instances(&eu2).get("lyon-undo").await.unwrap();
    let asked = applied.spec.restore.expect("spec.restore");
    assert_eq!(asked.source, location("lyon-social", "scheduled-1"));
    assert_eq!(
        asked.source_tenant.as_deref(),
        Some("lyon-social"),
        "the operator reads only the source tenant's backups"
    );
    assert_eq!(applied.spec.local_domain, "undo.lyon.social");

    // The values are in no record the control plane keeps.
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM instance_events
         UNION ALL SELECT details::text FROM audit_log
         UNION ALL SELECT coalesce(message, '') FROM tenant_restores
         UNION ALL SELECT coalesce(phase_message, '') || coalesce(last_error, '') FROM instances",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(texts.iter().all(|t| !t.contains(&secret_key_base)));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_restore_into_a_new_tenant_is_a_copy_outside_billing_or_a_move_with_the_order(
    pool: PgPool,
) {
    let (app, op, eu1, id) = lyon_with_a_backup(&pool).await;
    let order = row(&pool, id).await.order_id.expect("the server's order");
    let into = |slug: &'static str, domain: &'static str, billing: &'static str| {
        vec![
            ("backup", "scheduled-1"),
            ("mode", "new_tenant"),
            ("slug", slug),
            ("domain", domain),
            ("billing", billing),
            ("confirm", "lyon-social"),
        ]
    };
    let made = |r: &Resp| -> Uuid {
        assert_eq!(r.status, 303, "{}", r.body);
        r.location
            .as_deref()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let subject = "stripe:sub_lyon";

    // The form offers the move: the tenant has an order.
    op.get(&format!("/operator/instances/{id}/restore"))
        .await
        .assert_contains("name=\"billing\" value=\"take\"");

    // A copy: outside billing, the source keeps its order.
    let copy = made(&post_restore(&op, id, &into("lyon-copy", "copy.lyon.social", "none")).await);
    assert_eq!(row(&pool, copy).await.order_id, None);
    assert_eq!(row(&pool, id).await.order_id, Some(order));
    assert_eq!(
        fleet::instances_of_subject(&pool, subject).await.unwrap(),
        [id]
    );

    // Suspended for non-payment, the source keeps its order: refused, nothing made.
    sqlx::query("UPDATE instances SET billing_hold = true WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let r = post_restore(&op, id, &into("lyon-moved", "moved.lyon.social", "take")).await;
    assert_eq!(r.status, 422, "{}", r.body);
    r.assert_contains("suspended for non-payment");
    assert_eq!(row(&pool, id).await.order_id, Some(order));
    sqlx::query("UPDATE instances SET billing_hold = false WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();

    // What pays for the order suspended by the access policy (the server itself not held,
    // e.g. suspended by its owner before): refused as well.
    sqlx::query(
        "INSERT INTO tenant_access (subject, org_id, channel, state)
         VALUES ($1, (SELECT org_id FROM instances WHERE id = $2), 'card', 'suspended')
         ON CONFLICT (subject) DO UPDATE SET state = 'suspended'",
    )
    .bind(subject)
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let r = post_restore(&op, id, &into("lyon-moved", "moved.lyon.social", "take")).await;
    assert_eq!(r.status, 422, "{}", r.body);
    r.assert_contains("what pays for its order is suspended");
    sqlx::query("UPDATE tenant_access SET state = 'running' WHERE subject = $1")
        .bind(subject)
        .execute(&pool)
        .await
        .unwrap();

    // A move that fails: the order never leaves the source.
    let failed = made(
        &post_restore(
            &op,
            id,
            &into("lyon-moved-a", "moved-a.lyon.social", "take"),
        )
        .await,
    );
    assert_eq!(
        row(&pool, id).await.order_id,
        Some(order),
        "not before it runs"
    );
    assert_eq!(row(&pool, failed).await.order_id, None);
    restore_ends(&app, &eu1, "lyon-moved-a", "Failed").await;
    assert_eq!(row(&pool, id).await.order_id, Some(order));
    assert_eq!(row(&pool, failed).await.order_id, None);

    // A move that succeeds: the new tenant takes the order, billed and suspended with it;
    // the source is outside billing, and both say so.
    let moved =
        made(&post_restore(&op, id, &into("lyon-moved", "moved.lyon.social", "take")).await);
    let moved_audit = audits(&pool)
        .await
        .into_iter()
        .filter(|a| a["into"] == moved.to_string())
        .collect::<Vec<_>>();
    assert_eq!(moved_audit.len(), 1, "{moved_audit:?}");
    assert_eq!(moved_audit[0]["order_moved"], true);
    assert_eq!(row(&pool, id).await.order_id, Some(order));
    restore_ends(&app, &eu1, "lyon-moved", "Succeeded").await;
    assert_eq!(row(&pool, moved).await.order_id, Some(order));
    assert_eq!(row(&pool, id).await.order_id, None);
    assert_eq!(
        fleet::instances_of_subject(&pool, subject).await.unwrap(),
        [moved]
    );
    let moves: Vec<Value> = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'fleet.instance.order_moved'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(moves[0]["order"], order.to_string());
    assert_eq!(moves[0]["to"], moved.to_string());
    op.get(&format!("/operator/instances/{id}"))
        .await
        .assert_contains("now outside billing");

    // The source has no order left to give: the move is not offered, and refused.
    let form = op.get(&format!("/operator/instances/{id}/restore")).await;
    assert!(!form.body.contains("value=\"take\""), "{}", form.body);
    let r = post_restore(&op, id, &into("lyon-again", "again.lyon.social", "take")).await;
    assert_eq!(r.status, 422, "{}", r.body);
    r.assert_contains("belongs to no order");
    assert_eq!(row(&pool, moved).await.order_id, Some(order));
}

/// Plays the operator for the restore into new tenant `slug`: once its app secrets are
/// copied and its Instance applied, it reports the restore ended at `step` (with equal
/// rows), and the control plane syncs.
async fn restore_ends(app: &TestApp, c: &FakeCluster, slug: &str, step: &str) {
    herd_fleet::drills::run(&app.pool, 0, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    app.run_jobs().await;
    let asked = instances(c)
        .get(slug)
        .await
        .unwrap()
        .spec
        .restore
        .expect("spec.restore");
    report(
        c,
        slug,
        json!({ "phase": if step == "Succeeded" { "Running" } else { "Failed" }, "restore": {
            "id": asked.id, "step": step, "source": asked.source,
            "startedAt": "2026-12-08T10:00:00Z", "finishedAt": "2026-12-08T10:04:00Z",
            "sourceRows": { "accounts": 12, "statuses": 345 },
            "restoredRows": { "accounts": 12, "statuses": 345 } } }),
    )
    .await;
    app.sync_clusters().await;
}

/// The drill of `source` the round started: its restore id and scratch tenant.
async fn drill_of(pool: &PgPool, restore: Uuid) -> (Uuid, Uuid) {
    sqlx::query_as(
        "SELECT source_instance_id, instance_id FROM tenant_restores WHERE id = $1 AND drill",
    )
    .bind(restore)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn drill_row(pool: &PgPool, restore: Uuid) -> (Option<String>, Option<String>, Option<i64>) {
    sqlx::query_as(
        "SELECT outcome, outcome_reason, time_to_restore_seconds FROM tenant_restores WHERE id = $1",
    )
    .bind(restore)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Starts one drill now and returns it; checks its scratch tenant as applied.
async fn start_drill(app: &TestApp, c: &FakeCluster, per_day: u32) -> (Uuid, Uuid, String) {
    let round = herd_fleet::drills::run(&app.pool, per_day, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(round.started.len(), 1, "{round:?}");
    let restore = round.started[0];
    app.run_jobs().await;
    let (source, scratch) = drill_of(&app.pool, restore).await;
    let s = row(&app.pool, scratch).await;
    let applied = instances(c).get(&s.slug).await.unwrap();
    assert!(applied.spec.drill, "a scratch tenant");
    let asked = applied.spec.restore.expect("spec.restore");
    assert_eq!(asked.id, restore.to_string());
    assert_eq!(asked.source_tenant, Some(row(&app.pool, source).await.slug));
    (restore, scratch, s.slug)
}

async fn scratch_deleted(app: &TestApp, c: &FakeCluster, scratch: Uuid, slug: &str) {
    app.run_jobs().await;
    assert_eq!(row(&app.pool, scratch).await.desired, Desired::Deleted);
    assert!(
        instances(c).get_opt(slug).await.unwrap().is_none(),
        "the scratch Instance is deleted"
    );
}

/// Drills: only tenants with a verified dump are picked, never-proven first; a drill
/// passes on equal rows and fails on unequal rows and on a timeout; the scratch tenant is
/// deleted each time; the console shows the outcomes.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn restore_drills_pass_on_equal_rows_and_fail_otherwise(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = app.operator(OPS).await;
    let eu = app.connect_cluster(&op, "eu-1").await;
    // Without a verified dump (a CloudNativePG backup, and a dump with no checksum).
    let unverified = running(
        &app,
        &eu,
        "nantes",
        "nantes.social",
        json!([
            { "name": "cnpg-1", "reason": "Scheduled", "method": "Barman", "outcome": "Succeeded",
              "startedAt": "2026-12-08T02:17:05Z", "finishedAt": "2026-12-08T02:19:35Z",
              "location": "s3://herd-backups/herd/cnpg/nantes-social/" },
            { "name": "scheduled-1", "reason": "Scheduled", "method": "Dump", "outcome": "Running",
              "startedAt": "2026-12-08T02:17:05Z",
              "location": location("nantes-social", "scheduled-1") },
        ]),
    )
    .await;
    let round = herd_fleet::drills::run(&pool, 5, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(round.started.is_empty(), "nothing to drill: {round:?}");

    let id = running(
        &app,
        &eu,
        "lyon",
        "lyon.social",
        json!([
            dump("lyon-social", "scheduled-2"),
            dump("lyon-social", "scheduled-1")
        ]),
    )
    .await;
    let ok_rows = json!({ "accounts": 12, "statuses": 345 });

    // Equal rows, scratch Running: passed, with its time to restore.
    let (restore, scratch, slug) = start_drill(&app, &eu, 1).await;
    assert_eq!(drill_of(&pool, restore).await.0, id);
    assert_ne!(drill_of(&pool, restore).await.0, unverified);
    let asked_source = instances(&eu)
        .get(&slug)
        .await
        .unwrap()
        .spec
        .restore
        .unwrap()
        .source;
    assert_eq!(
        asked_source,
        location("lyon-social", "scheduled-2"),
        "the latest"
    );
    assert!(
        herd_fleet::drills::run(&pool, 1, time::OffsetDateTime::now_utc())
            .await
            .unwrap()
            .started
            .is_empty(),
        "one a day"
    );
    let finished = (time::OffsetDateTime::now_utc() + time::Duration::minutes(7))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    report(
        &eu,
        &slug,
        json!({ "phase": "Running", "runningVersion": "v4.7.6", "restore": {
            "id": restore.to_string(), "step": "Succeeded", "source": asked_source,
            "finishedAt": finished, "sourceRows": ok_rows, "restoredRows": ok_rows } }),
    )
    .await;
    app.sync_clusters().await;
    // Running but taking no backups, the scratch copy is neither alerted nor measured.
    let metrics = herd_fleet::backups::metrics_text(&pool, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(metrics.contains("lyon-social"), "{metrics}");
    assert!(!metrics.contains(&format!("\"{slug}\"")), "{metrics}");
    let mut conn = pool.acquire().await.unwrap();
    herd_fleet::backups::check(
        &mut conn,
        scratch,
        time::OffsetDateTime::now_utc() + time::Duration::days(3),
    )
    .await
    .unwrap();
    drop(conn);
    let alerts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_backup_alerts WHERE instance_id = $1")
            .bind(scratch)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(alerts, 0, "no backup alert for a scratch copy");
    let round = herd_fleet::drills::run(&pool, 1, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(round.concluded.len(), 1);
    let (outcome, _, ttr) = drill_row(&pool, restore).await;
    assert_eq!(outcome.as_deref(), Some("passed"));
    assert!(ttr.is_some_and(|s| (400..=440).contains(&s)), "{ttr:?}");
    scratch_deleted(&app, &eu, scratch, &slug).await;
    let page = op.get(&format!("/operator/instances/{id}")).await;
    assert_ne!(page.select_text("#last-proven"), vec!["never"]);
    let scratch_org: String = sqlx::query_scalar(
        "SELECT o.slug FROM instances i JOIN organizations o ON o.id = i.org_id WHERE i.id = $1",
    )
    .bind(scratch)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        scratch_org,
        herd_store::restores::DRILL_ORG,
        "no customer sees it"
    );

    // Unequal rows: failed, saying which.
    let (restore, scratch, slug) = start_drill(&app, &eu, 2).await;
    report(
        &eu,
        &slug,
        json!({ "phase": "Running", "runningVersion": "v4.7.6", "restore": {
            "id": restore.to_string(), "step": "Succeeded", "source": asked_source,
            "finishedAt": finished, "sourceRows": ok_rows,
            "restoredRows": { "accounts": 12, "statuses": 300 } } }),
    )
    .await;
    app.sync_clusters().await;
    herd_fleet::drills::run(&pool, 2, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    let (outcome, reason, ttr) = drill_row(&pool, restore).await;
    assert_eq!(outcome.as_deref(), Some("failed"));
    assert!(
        reason
            .as_deref()
            .unwrap()
            .contains("statuses: 345 in the backup, 300 restored"),
        "{reason:?}"
    );
    assert_eq!(ttr, None);
    scratch_deleted(&app, &eu, scratch, &slug).await;

    // Nothing reported for two hours: failed, torn down.
    let (restore, scratch, slug) = start_drill(&app, &eu, 3).await;
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(121);
    let round = herd_fleet::drills::run(&pool, 3, later).await.unwrap();
    assert_eq!(round.concluded.len(), 1);
    assert!(round.started.is_empty());
    let (outcome, reason, _) = drill_row(&pool, restore).await;
    assert_eq!(outcome.as_deref(), Some("failed"));
    assert!(reason.unwrap().contains("not finished within 2 hours"));
    scratch_deleted(&app, &eu, scratch, &slug).await;

    // The console's list of drills.
    let page = op.get("/operator/backups/drills").await;
    page.assert_status(200);
    assert_eq!(
        page.select_text("#drills tbody td:nth-child(4)"),
        vec!["failed", "failed", "passed"]
    );
    page.assert_contains("not finished within 2 hours");

    // The customer's history of its server says nothing of the provider's drills.
    let history = fleet::events(&pool, id, 100).await.unwrap();
    assert!(
        !history
            .iter()
            .any(|e| e.message.to_lowercase().contains("drill")),
        "{:?}",
        history.iter().map(|e| &e.message).collect::<Vec<_>>()
    );

    // A customer cannot own the scratch copies: the short name is reserved, and an
    // organization of drills that has members (taken before the migration) starts none.
    app.signed_up("Mallory", "mallory@evil.example", None).await;
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role)
         SELECT $1, id, 'owner' FROM users WHERE email = 'mallory@evil.example'",
    )
    .bind(herd_store::restores::DRILL_ORG_ID)
    .execute(&pool)
    .await
    .unwrap();
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM instances")
        .fetch_one(&pool)
        .await
        .unwrap();
    let refused = herd_fleet::drills::run(
        &pool,
        10,
        time::OffsetDateTime::now_utc() + time::Duration::days(2),
    )
    .await
    .expect_err("no drill into an organization with members");
    assert!(refused.to_string().contains("has members"), "{refused}");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM instances")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(after, before, "no scratch tenant made");
}

/// A failed restore holds the tenant stopped: the next applies keep naming it in
/// spec.restore (the operator keeps the app down: its database may be half restored),
/// a new restore in place is allowed, and an operator may start it on its database as it
/// is, after typing its name; audited.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_failed_restore_holds_the_tenant_until_an_operator_decides(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = app.operator(OPS).await;
    let eu = app.connect_cluster(&op, "eu-1").await;
    let id = running(
        &app,
        &eu,
        "lyon",
        "lyon.social",
        json!([
            dump("lyon-social", "scheduled-2"),
            dump("lyon-social", "scheduled-1")
        ]),
    )
    .await;
    let slug = row(&pool, id).await.slug;
    post_restore(
        &op,
        id,
        &[
            ("backup", "scheduled-1"),
            ("mode", "in_place"),
            ("confirm", &slug),
        ],
    )
    .await
    .assert_redirect(&format!("/operator/instances/{id}"));
    app.run_jobs().await;
    let asked = instances(&eu)
        .get(&slug)
        .await
        .unwrap()
        .spec
        .restore
        .expect("spec.restore");
    report(
        &eu,
        &slug,
        json!({ "phase": "Failed", "lastError": "restore failed: checksum mismatch",
                "restore": { "id": asked.id, "step": "Failed", "source": asked.source,
                "message": "database.dump.000 does not match the manifest" } }),
    )
    .await;
    app.sync_clusters().await;
    let apply = herd_fleet::jobs::ApplyInstance { instance_id: id };
    herd_jobs::enqueue(&pool, &apply).await.unwrap();
    app.run_jobs().await;
    assert_eq!(
        instances(&eu).get(&slug).await.unwrap().spec.restore,
        Some(asked.clone()),
        "the failed restore still holds the tenant"
    );
    let page = op.get(&format!("/operator/instances/{id}")).await;
    page.assert_status(200)
        .assert_contains("does not match the manifest");
    assert_eq!(page.forms_without_csrf().0, Vec::<String>::new());

    // A wrong name changes nothing.
    let release = format!("/operator/instances/{id}/restore/release");
    op.post(&release, &[("confirm", "lyon")])
        .await
        .assert_redirect(&format!("/operator/instances/{id}#tenant-restores"));
    herd_jobs::enqueue(&pool, &apply).await.unwrap();
    app.run_jobs().await;
    assert!(instances(&eu)
        .get(&slug)
        .await
        .unwrap()
        .spec
        .restore
        .is_some());
    let released =
        "SELECT count(*) FROM audit_log WHERE action = 'fleet.instance.restore_released'";
    let n: i64 = sqlx::query_scalar(released).fetch_one(&pool).await.unwrap();
    assert_eq!(n, 0);

    // Started as it is: spec.restore goes, audited.
    op.get(&format!("/operator/instances/{id}")).await;
    op.post(&release, &[("confirm", &slug)])
        .await
        .assert_redirect(&format!("/operator/instances/{id}#tenant-restores"));
    app.run_jobs().await;
    assert_eq!(instances(&eu).get(&slug).await.unwrap().spec.restore, None);
    let n: i64 = sqlx::query_scalar(released).fetch_one(&pool).await.unwrap();
    assert_eq!(n, 1);
    // Nothing holds it any more: releasing again says so and changes nothing.
    op.get(&format!("/operator/instances/{id}")).await;
    op.post(&release, &[("confirm", &slug)]).await;
    let n: i64 = sqlx::query_scalar(released).fetch_one(&pool).await.unwrap();
    assert_eq!(n, 1);
}

async fn cancel_audits(pool: &PgPool) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'fleet.instance.restore_cancel_requested' ORDER BY at",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A restore in place asked from the console, applied, and reported at `step` by the
/// operator: its spec.restore.
async fn restore_at(
    app: &TestApp,
    op: &Client,
    eu: &FakeCluster,
    id: Uuid,
    step: &str,
) -> herd_k8s::crd::RestoreSpec {
    let slug = row(&app.pool, id).await.slug;
    post_restore(
        op,
        id,
        &[
            ("backup", "scheduled-1"),
            ("mode", "in_place"),
            ("confirm", &slug),
        ],
    )
    .await
    .assert_redirect(&format!("/operator/instances/{id}"));
    app.run_jobs().await;
    let asked = instances(eu)
        .get(&slug)
        .await
        .unwrap()
        .spec
        .restore
        .expect("spec.restore");
    report(
        eu,
        &slug,
        json!({ "phase": "Restoring", "restore": {
            "id": asked.id, "step": step, "source": asked.source,
            "startedAt": "2026-12-08T10:00:00Z" } }),
    )
    .await;
    app.sync_clusters().await;
    asked
}

/// Cancelling from the console, before the migrations: operators only, behind the typed
/// short name (a wrong one changes nothing), audited, carried to the operator as
/// spec.restore.cancel until it reports the restore cancelled; then it is finished, and
/// the apply no longer names it.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_operator_cancels_a_restore_before_its_migrations(pool: PgPool) {
    let (app, op, eu, id) = lyon_with_a_backup(&pool).await;
    let slug = row(&pool, id).await.slug;
    let asked = restore_at(&app, &op, &eu, id, "StoppingApp").await;
    assert!(!asked.cancel);
    assert_eq!(asked.size_bytes, Some(1_048_576), "the backup's size");
    let restore_id: Uuid = asked.id.parse().unwrap();
    let page = op.get(&format!("/operator/instances/{id}")).await;
    page.assert_status(200)
        .assert_contains("Cancel this restore");
    assert_eq!(page.forms_without_csrf().0, Vec::<String>::new());
    let cancel = format!("/operator/instances/{id}/restore/cancel");
    let requested = || async {
        let at: Option<time::OffsetDateTime> =
            sqlx::query_scalar("SELECT cancel_requested_at FROM tenant_restores WHERE id = $1")
                .bind(restore_id)
                .fetch_one(&pool)
                .await
                .unwrap();
        at
    };

    // A customer cannot.
    let owner = app
        .signed_up("Owner", "owner2@lyon.example", Some("Other org"))
        .await;
    app.join("lyon", "owner2@lyon.example", "owner").await;
    let r = owner.post(&cancel, &[("confirm", &slug)]).await;
    assert!(matches!(r.status, 403 | 404), "{}", r.status);

    // A wrong short name: said, and nothing changes.
    op.post(&cancel, &[("confirm", "lyon")])
        .await
        .assert_redirect(&format!("/operator/instances/{id}#tenant-restores"));
    op.get(&format!("/operator/instances/{id}"))
        .await
        .assert_contains("To confirm, type the tenant");
    assert_eq!(requested().await, None);
    assert!(cancel_audits(&pool).await.is_empty());
    app.run_jobs().await;
    assert!(
        !instances(&eu)
            .get(&slug)
            .await
            .unwrap()
            .spec
            .restore
            .unwrap()
            .cancel
    );

    // The right one: audited, carried to the operator.
    op.get(&format!("/operator/instances/{id}")).await;
    op.post(&cancel, &[("confirm", &slug)])
        .await
        .assert_redirect(&format!("/operator/instances/{id}#tenant-restores"));
    assert!(requested().await.is_some());
    let audit = cancel_audits(&pool).await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["restore"], restore_id.to_string());
    assert_eq!(audit[0]["step"], "stopping_app");
    app.run_jobs().await;
    let carried = instances(&eu)
        .get(&slug)
        .await
        .unwrap()
        .spec
        .restore
        .unwrap();
    assert_eq!(
        (carried.id.as_str(), carried.cancel),
        (asked.id.as_str(), true)
    );
    let page = op.get(&format!("/operator/instances/{id}")).await;
    assert_eq!(page.select_text("#restore-cancel-requested").len(), 1);
    assert!(
        page.select_text("#restore-cancel label").is_empty(),
        "asked once"
    );
    // Twice: said, nothing more.
    op.post(&cancel, &[("confirm", &slug)]).await;
    assert_eq!(cancel_audits(&pool).await.len(), 1);

    // The operator cancelled it: finished, in the history and on the page, no longer asked.
    report(
        &eu,
        &slug,
        json!({ "phase": "Running", "restore": {
            "id": asked.id, "step": "Cancelled", "source": asked.source,
            "startedAt": "2026-12-08T10:00:00Z", "finishedAt": "2026-12-08T10:01:00Z",
            "message": "cancelled before the database was touched" } }),
    )
    .await;
    app.sync_clusters().await;
    let step: String = sqlx::query_scalar("SELECT step FROM tenant_restores WHERE id = $1")
        .bind(restore_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(step, "cancelled");
    let history = fleet::events(&pool, id, 50).await.unwrap();
    assert!(history
        .iter()
        .any(|e| e.message == "Restore cancelled: cancelled before the database was touched"));
    let page = op.get(&format!("/operator/instances/{id}")).await;
    assert!(page.select_text("#server-phase").is_empty(), "not moving");
    assert!(page.select_text("#restore-cancel label").is_empty());
    page.assert_contains("data-step=\"cancelled\"");
    let apply = herd_fleet::jobs::ApplyInstance { instance_id: id };
    herd_jobs::enqueue(&pool, &apply).await.unwrap();
    app.run_jobs().await;
    assert_eq!(instances(&eu).get(&slug).await.unwrap().spec.restore, None);
    // Another restore may be asked for.
    restore_at(&app, &op, &eu, id, "StoppingApp").await;
    assert_eq!(restores_of(&pool, id).await, 2);
}

/// Once migrating, too late: no button, and a cancel posted anyway is refused and changes
/// nothing.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_migrating_restore_cannot_be_cancelled(pool: PgPool) {
    let (app, op, eu, id) = lyon_with_a_backup(&pool).await;
    let slug = row(&pool, id).await.slug;
    restore_at(&app, &op, &eu, id, "Migrating").await;
    let page = op.get(&format!("/operator/instances/{id}")).await;
    page.assert_status(200);
    assert!(
        page.select_text("#restore-cancel label").is_empty(),
        "no cancel offered"
    );
    op.post(
        &format!("/operator/instances/{id}/restore/cancel"),
        &[("confirm", &slug)],
    )
    .await
    .assert_redirect(&format!("/operator/instances/{id}#tenant-restores"));
    op.get(&format!("/operator/instances/{id}"))
        .await
        .assert_contains("Too late to cancel");
    assert!(cancel_audits(&pool).await.is_empty());
    let n = count(
        &pool,
        "SELECT count(*) FROM tenant_restores WHERE instance_id = $1 AND cancel_requested_at IS NOT NULL",
        id,
    )
    .await;
    assert_eq!(n, 0);
    app.run_jobs().await;
    assert!(
        !instances(&eu)
            .get(&slug)
            .await
            .unwrap()
            .spec
            .restore
            .unwrap()
            .cancel
    );
}

/// A restore into a new tenant cancelled while it waits for the source's app secrets:
/// nothing is copied, the Instance is applied with the cancel (the operator cancels at
/// once), and once cancelled the tenant keeps naming that restore, so the operator never
/// installs it fresh.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_restore_into_a_new_tenant_cancelled_while_waiting_keeps_it_held(pool: PgPool) {
    let (app, op, _eu1, id) = lyon_with_a_backup(&pool).await;
    let eu2 = app.connect_cluster(&op, "eu-2").await;
    let eu2_id: Uuid = sqlx::query_scalar("SELECT id FROM clusters WHERE name = 'eu-2'")
        .fetch_one(&pool)
        .await
        .unwrap();
    app.clusters.unplug("eu-1");
    let r = post_restore(
        &op,
        id,
        &[
            ("backup", "scheduled-1"),
            ("mode", "new_tenant"),
            ("slug", "lyon-undo"),
            ("domain", "undo.lyon.social"),
            ("cluster", &eu2_id.to_string()),
            ("confirm", "lyon-social"),
        ],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let new_id: Uuid = r
        .location
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    app.run_jobs().await;
    assert!(
        instances(&eu2)
            .get_opt("lyon-undo")
            .await
            .unwrap()
            .is_none(),
        "waits for the secrets"
    );
    op.get(&format!("/operator/instances/{new_id}"))
        .await
        .assert_contains("Cancel this restore");
    op.post(
        &format!("/operator/instances/{new_id}/restore/cancel"),
        &[("confirm", "lyon-undo")],
    )
    .await
    .assert_redirect(&format!("/operator/instances/{new_id}#tenant-restores"));
    app.run_jobs().await;
    let asked = instances(&eu2)
        .get("lyon-undo")
        .await
        .unwrap()
        .spec
        .restore
        .expect("applied with the cancel");
    assert!(asked.cancel);
    let secrets = Api::<Secret>::namespaced(eu2.client.clone(), "herd-lyon-undo")
        .get_opt("app-secrets")
        .await
        .unwrap();
    assert!(secrets.is_none(), "nothing copied");

    report(
        &eu2,
        "lyon-undo",
        json!({ "phase": "Failed", "restore": {
            "id": asked.id, "step": "Cancelled", "source": asked.source,
            "message": "cancelled before anything was restored" } }),
    )
    .await;
    app.sync_clusters().await;
    let apply = herd_fleet::jobs::ApplyInstance {
        instance_id: new_id,
    };
    herd_jobs::enqueue(&pool, &apply).await.unwrap();
    app.run_jobs().await;
    let held = instances(&eu2)
        .get("lyon-undo")
        .await
        .unwrap()
        .spec
        .restore
        .expect("still named: never installed fresh");
    assert_eq!((held.id, held.cancel), (asked.id, true));
}

/// A restore asked while a failed one held the tenant stopped cannot be cancelled: the
/// cancel would start the server on the database the failed one left, without the typed
/// release it needs.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_restore_asked_while_a_failed_one_held_the_tenant_cannot_be_cancelled(pool: PgPool) {
    let (app, op, eu, id) = lyon_with_a_backup(&pool).await;
    let slug = row(&pool, id).await.slug;
    let failed = restore_at(&app, &op, &eu, id, "Restoring").await;
    report(
        &eu,
        &slug,
        json!({ "phase": "Failed", "lastError": "restore failed",
                "restore": { "id": failed.id, "step": "Failed", "source": failed.source,
                "message": "database.dump.000 does not match the manifest" } }),
    )
    .await;
    app.sync_clusters().await;
    // Held: a second restore may be asked for, and runs.
    let second = restore_at(&app, &op, &eu, id, "StoppingApp").await;
    assert_ne!(second.id, failed.id);
    op.get(&format!("/operator/instances/{id}")).await;
    op.post(
        &format!("/operator/instances/{id}/restore/cancel"),
        &[("confirm", &slug)],
    )
    .await
    .assert_redirect(&format!("/operator/instances/{id}#tenant-restores"));
    op.get(&format!("/operator/instances/{id}"))
        .await
        .assert_contains("asked while a failed restore held the tenant stopped");
    assert!(cancel_audits(&pool).await.is_empty());
    app.run_jobs().await;
    let spec = instances(&eu)
        .get(&slug)
        .await
        .unwrap()
        .spec
        .restore
        .unwrap();
    assert_eq!((spec.id.as_str(), spec.cancel), (second.id.as_str(), false));
}
