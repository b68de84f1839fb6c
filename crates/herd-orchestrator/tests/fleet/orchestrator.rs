//! The fleet's jobs against fake clusters (kube-fake-client) and a real PostgreSQL:
//! placement, applying, errors written where people look, repair of a missing Instance,
//! health checks, and the owner's password collected only when it can be sealed.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::{ClusterHealth, InstancePhase, OrgId};
use herd_fleet::clusters::{self, Actor, Registration};
use herd_k8s::crd::Instance;
use herd_store::fleet;
use herd_testkit::fake_cluster::{self, FakeCluster};
use herd_testkit::TestApp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

async fn operator_id(pool: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, display_name, password_hash, email_verified_at, is_operator) VALUES ($1, 'ops@provider.example', 'Ops', 'x', now(), true)")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    id
}

async fn register(app: &TestApp, op: Uuid, name: &str, region: &str, capacity: u32) -> Uuid {
    clusters::register(
        &app.pool,
        Some(&app.seal_key),
        Some(Actor {
            id: herd_domain::UserId(op),
            email: "ops@provider.example",
            ip: "192.0.2.7",
        }),
        &Registration {
            name: name.into(),
            region: region.into(),
            kubeconfig: String::new(),
            operator_namespace: "herd-system".into(),
            capacity: capacity.to_string(),
        },
    )
    .await
    .unwrap()
}

/// An organization (with an owner) and a fulfilled order's server, queued.
async fn server(pool: &PgPool, org_slug: &str, domain: &str, region: Option<&str>) -> Uuid {
    let org = sqlx::query_scalar::<_, Uuid>("SELECT id FROM organizations WHERE slug = $1")
        .bind(org_slug)
        .fetch_optional(pool)
        .await
        .unwrap();
    let org = match org {
        Some(o) => o,
        None => {
            let o = Uuid::now_v7();
            let u = Uuid::now_v7();
            sqlx::query("INSERT INTO organizations (id, slug, name, preferred_region) VALUES ($1, $2, $2, $3)")
                .bind(o)
                .bind(org_slug)
                .bind(region)
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
            o
        }
    };
    let order = paid_order(pool, OrgId(org), domain, "sub_x", false).await;
    fleet::by_order(pool, order).await.unwrap().unwrap()
}

/// An order of `org` for `domain` (a name under the base domain, needing no proof, when
/// `preverified`), paid by subscription `sub` (fulfilled as the webhook fulfils it).
/// Returns the order.
async fn paid_order(pool: &PgPool, org: OrgId, domain: &str, sub: &str, preverified: bool) -> Uuid {
    let mut conn = pool.acquire().await.unwrap();
    let (order, _) = herd_store::billing::create_order(
        &mut conn,
        &herd_store::billing::NewOrder {
            org,
            plan_code: "community",
            app: "mastodon",
            domain,
            created_by: None,
            invoice: None,
            domain_preverified: preverified,
            submission: None,
        },
    )
    .await
    .unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(
        herd_billing::fulfil::fulfil_paid(&mut tx, order, org, sub)
            .await
            .unwrap(),
        "the payment is recorded"
    );
    tx.commit().await.unwrap();
    order
}

/// The owner of an organization made by `server()`.
async fn owner_id(pool: &PgPool, org: OrgId) -> Uuid {
    sqlx::query_scalar("SELECT user_id FROM memberships WHERE org_id = $1")
        .bind(org.0)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// That owner, asking for a lifecycle action from the portal.
fn as_owner(org: OrgId, uid: Uuid) -> herd_fleet::lifecycle::Requester<'static> {
    herd_fleet::lifecycle::Requester::Member {
        org,
        who: Actor {
            id: herd_domain::UserId(uid),
            email: "owner@lyon.example",
            ip: "192.0.2.8",
        },
    }
}

async fn row(pool: &PgPool, id: Uuid) -> fleet::Instance {
    fleet::instance(pool, id).await.unwrap().unwrap()
}

async fn cluster_with_crd() -> FakeCluster {
    fake_cluster::start_with(|b| b.with_resource::<Instance>()).await
}

fn instances(c: &FakeCluster) -> Api<Instance> {
    Api::namespaced(c.client.clone(), "herd-system")
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn placement_follows_the_region_the_room_and_cordons(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = operator_id(&pool).await;
    let (west, central) = (cluster_with_crd().await, cluster_with_crd().await);
    app.clusters.plug("west-1", west.client.clone());
    app.clusters.plug("central-1", central.client.clone());
    let west_id = register(&app, op, "west-1", "eu-west", 1).await;
    let central_id = register(&app, op, "central-1", "eu-central", 5).await;
    app.run_jobs().await;

    // Lyon prefers eu-west: its first server goes there, the second (west is full) to
    // the roomiest other cluster.
    let a = server(&pool, "lyon", "a.lyon.example", Some("eu-west")).await;
    app.run_jobs().await;
    assert_eq!(row(&pool, a).await.cluster_id, Some(west_id));
    assert!(instances(&west)
        .get_opt("a-lyon-example")
        .await
        .unwrap()
        .is_some());
    let b = server(&pool, "lyon", "b.lyon.example", Some("eu-west")).await;
    app.run_jobs().await;
    assert_eq!(row(&pool, b).await.cluster_id, Some(central_id));
    assert!(instances(&central)
        .get_opt("b-lyon-example")
        .await
        .unwrap()
        .is_some());
    assert!(instances(&west)
        .get_opt("b-lyon-example")
        .await
        .unwrap()
        .is_none());

    // Cordoned: no new server goes there; with nowhere else to go it waits, and says so.
    clusters::set_cordoned(
        &pool,
        Actor {
            id: herd_domain::UserId(op),
            email: "ops@provider.example",
            ip: "192.0.2.7",
        },
        central_id,
        true,
    )
    .await
    .unwrap();
    let c = server(&pool, "nantes", "c.nantes.example", None).await;
    app.run_jobs().await;
    let waiting = row(&pool, c).await;
    assert_eq!(waiting.cluster_id, None);
    assert_eq!(waiting.phase, InstancePhase::Queued);
    assert_eq!(
        waiting.phase_message.as_deref(),
        Some("queued: every cluster is full")
    );
    // Uncordoned: the waiting server is placed at once (the uncordon queued a round).
    clusters::set_cordoned(
        &pool,
        Actor {
            id: herd_domain::UserId(op),
            email: "ops@provider.example",
            ip: "192.0.2.7",
        },
        central_id,
        false,
    )
    .await
    .unwrap();
    app.run_jobs().await;
    assert_eq!(row(&pool, c).await.cluster_id, Some(central_id));
    assert!(instances(&central)
        .get_opt("c-nantes-example")
        .await
        .unwrap()
        .is_some());
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action LIKE 'fleet.cluster.%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(audited, 4, "two registrations, a cordon, an uncordon");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_unreachable_cluster_is_shown_on_the_server_and_retried_until_it_answers(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = operator_id(&pool).await;
    // Registered while healthy, then it stops answering.
    let cluster = cluster_with_crd().await;
    app.clusters.plug("eu-1", cluster.client.clone());
    register(&app, op, "eu-1", "eu", 10).await;
    app.run_jobs().await;
    app.clusters.unplug("eu-1");
    let id = server(&pool, "lyon", "lyon.social", None).await;
    let stats = app.runner().drain().await.unwrap();
    assert_eq!(
        stats.retrying, 1,
        "the apply failed and waits for its retry"
    );
    let r = row(&pool, id).await;
    let err = r.last_error.unwrap();
    assert!(
        err.starts_with("The control plane could not update cluster eu-1")
            && err.contains("unreachable"),
        "{err}"
    );
    let failing = herd_jobs::admin::failing(&pool).await.unwrap();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].kind, "fleet.apply_instance");

    // It answers again: the retry applies it and the error goes away.
    app.clusters.plug("eu-1", cluster.client.clone());
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if app.runner().drain().await.unwrap().completed > 0 {
            break;
        }
    }
    let r = row(&pool, id).await;
    assert_eq!(r.last_error, None);
    assert_eq!(r.applied_generation, r.spec_generation);
    assert!(instances(&cluster)
        .get_opt("lyon-social")
        .await
        .unwrap()
        .is_some());
    assert!(herd_jobs::admin::failing(&pool).await.unwrap().is_empty());
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_status_sync_reports_failures_and_repairs_a_missing_instance(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = operator_id(&pool).await;
    let cluster = cluster_with_crd().await;
    app.clusters.plug("eu-1", cluster.client.clone());
    register(&app, op, "eu-1", "eu", 10).await;
    let id = server(&pool, "lyon", "lyon.social", None).await;
    app.run_jobs().await;
    let api = instances(&cluster);

    // The operator reports a failed migration.
    api.patch_status(
        "lyon-social",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "phase": "Failed",
            "lastError": "Job db-migrate failed: PG::UndefinedTable; see kubectl -n herd-lyon-social logs job/db-migrate",
            "conditions": [{ "type": "Migrations", "status": "False", "reason": "JobFailed", "message": "Job db-migrate failed" }]
        }})),
    )
    .await
    .unwrap();
    herd_orchestrator::tick(&pool).await.unwrap();
    app.run_jobs().await;
    let r = row(&pool, id).await;
    assert_eq!(r.phase, InstancePhase::Failed);
    assert!(r.last_error.unwrap().contains("db-migrate"));
    let steps = herd_fleet::instances::steps(&row(&pool, id).await);
    assert!(steps
        .iter()
        .any(|s| s.state == herd_fleet::instances::StepState::Failed));
    // The operators' list puts it first.
    let other = server(&pool, "nantes", "nantes.social", None).await;
    app.run_jobs().await;
    let listed = herd_fleet::instances::search(
        &pool,
        &fleet::Search::default(),
        herd_store::Page::new(None, None),
    )
    .await
    .unwrap();
    assert_eq!(listed.items[0].id, id);
    assert_eq!(listed.items[1].id, other);

    // Someone deletes the Instance by hand: the next sync applies it again.
    api.delete("lyon-social", &DeleteParams::default())
        .await
        .unwrap();
    herd_orchestrator::tick(&pool).await.unwrap();
    // (the same period's sync ran already; a new period's job does the repair)
    herd_jobs::enqueue(
        &pool,
        &herd_fleet::jobs::SyncCluster {
            cluster_id: row(&pool, id).await.cluster_id.unwrap(),
            bucket: -1,
        },
    )
    .await
    .unwrap();
    app.run_jobs().await;
    assert!(api.get_opt("lyon-social").await.unwrap().is_some());
    let history = fleet::events(&pool, id, 50).await.unwrap();
    assert!(history
        .iter()
        .any(|e| e.message.contains("missing on its cluster")));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn health_checks_tell_unreachable_from_a_missing_crd_and_read_the_operator_version(
    pool: PgPool,
) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = operator_id(&pool).await;
    let bare = fake_cluster::start().await;
    let full = cluster_with_crd().await;
    let deployments: Api<Deployment> = Api::namespaced(full.client.clone(), "herd-system");
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "herd-operator", "namespace": "herd-system" },
                "spec": {
                    "selector": { "matchLabels": { "app": "herd-operator" } },
                    "template": {
                        "metadata": { "labels": { "app": "herd-operator" } },
                        "spec": { "containers": [{ "name": "operator", "image": "registry.example/herd:0.1.0" }] }
                    }
                }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    app.clusters.plug("bare", bare.client.clone());
    app.clusters.plug("full", full.client.clone());
    let down = register(&app, op, "down", "eu", 10).await;
    let bare_id = register(&app, op, "bare", "eu", 10).await;
    let full_id = register(&app, op, "full", "eu", 10).await;
    app.run_jobs().await;
    let get = |id| {
        let pool = pool.clone();
        async move { fleet::cluster(&pool, id).await.unwrap().unwrap() }
    };
    assert_eq!(get(down).await.health, ClusterHealth::Unreachable);
    let bare = get(bare_id).await;
    assert_eq!(
        bare.health,
        ClusterHealth::CrdMissing,
        "{:?}",
        bare.health_message
    );
    assert!(bare
        .health_message
        .unwrap()
        .contains("kubectl apply -k deploy/"));
    let full = get(full_id).await;
    assert_eq!(full.health, ClusterHealth::Healthy);
    assert_eq!(full.kubernetes_version.as_deref(), Some("v1.34.1"));
    assert_eq!(full.operator_version.as_deref(), Some("0.1.0"));

    // Only the healthy cluster takes servers.
    let id = server(&pool, "lyon", "lyon.social", None).await;
    app.run_jobs().await;
    assert_eq!(row(&pool, id).await.cluster_id, Some(full_id));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn without_an_encryption_key_the_owner_password_stays_on_the_cluster(pool: PgPool) {
    use k8s_openapi::api::core::v1::Secret;
    let app = TestApp::spawn(pool.clone()).await;
    let op = operator_id(&pool).await;
    let cluster = cluster_with_crd().await;
    app.clusters.plug("eu-1", cluster.client.clone());
    let cluster_id = register(&app, op, "eu-1", "eu", 10).await;
    let id = server(&pool, "lyon", "lyon.social", None).await;
    app.run_jobs().await;
    instances(&cluster)
        .patch_status(
            "lyon-social",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "status": { "phase": "Running", "url": "https://lyon.social" } }),
            ),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "herd-lyon-social");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": "owner-password", "namespace": "herd-lyon-social" },
                "stringData": { "password": "0123456789abcdef0123456789abcdef" }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // A worker without HERD_ENCRYPTION_KEY syncs: the status arrives, the secret stays.
    let mut registry = herd_jobs::Registry::new();
    herd_orchestrator::register(
        &mut registry,
        &herd_orchestrator::Orchestrator {
            pool: pool.clone(),
            clusters: std::sync::Arc::new(app.clusters.clone()),
            key: None,
            moderator_email: Some("moderation@provider.example".to_owned()),
        },
    );
    herd_jobs::enqueue(
        &pool,
        &herd_fleet::jobs::SyncCluster {
            cluster_id,
            bucket: 1,
        },
    )
    .await
    .unwrap();
    let runner =
        herd_jobs::Runner::new(pool.clone(), registry, herd_testkit::jobs::fast_settings());
    herd_testkit::jobs::drain_checked(&runner, &pool).await;
    assert_eq!(row(&pool, id).await.phase, InstancePhase::Running);
    assert!(secrets.get_opt("owner-password").await.unwrap().is_some());
    let sealed: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT owner_password_sealed FROM instances WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(sealed.is_none());
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_paid_order_whose_domain_is_taken_keeps_its_payment_and_says_why(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    server(&pool, "lyon", "lyon.social", None).await;
    // Lyon proves its domain (the fake name server answers with its record).
    app.run_jobs().await;
    // Another organization's order for the same domain, paid (the order form refuses it,
    // but two orders can race), as a name needing no proof: its server would take the
    // domain at once, and cannot. (An order for a domain to be proven makes a server that
    // stops at its first check: see herd-web's domains tests.)
    let first = server(&pool, "nantes", "nantes.social", None).await;
    let org = row(&pool, first).await.org_id;
    let order = paid_order(&pool, OrgId(org), "lyon.social", "sub_y", true).await;
    let o = herd_store::billing::order(&pool, order)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.state, "fulfilled");
    assert!(o.problem.unwrap().contains("already used"));
    assert!(fleet::by_order(&pool, order).await.unwrap().is_none());
    let stuck = fleet::stuck_orders(&pool).await.unwrap();
    assert_eq!(stuck.len(), 1);
    assert_eq!(stuck[0].domain, "lyon.social");
}

/// Stripe's webhook says subscription sub_x (of `org`) entered `status` at `at` (stored and
/// processed as a delivery would be), and Stripe's API says it is in `stripe_status` with
/// its latest invoice `invoice_status`.
async fn subscription_is(
    pool: &PgPool,
    fake: &herd_testkit::stripe::FakeStripe,
    org: OrgId,
    status: &str,
    at: time::OffsetDateTime,
    (stripe_status, invoice_status): (&str, &str),
) {
    use herd_testkit::stripe;
    let id = format!("evt_x_{status}_{}", at.unix_timestamp());
    let metadata = json!({ "herd_org_id": org.0.to_string() });
    let sub = stripe::subscription("sub_x", "cus_x", status, "price_x", 0, metadata.clone());
    let event = stripe::event(
        &id,
        "customer.subscription.updated",
        at.unix_timestamp(),
        sub,
    )
    .to_string();
    let mut tx = pool.begin().await.unwrap();
    herd_store::billing::insert_event(
        &mut tx,
        &herd_store::billing::NewEvent {
            id: &id,
            type_: "customer.subscription.updated",
            livemode: false,
            created: at,
            payload: &event,
            subscription_id: Some("sub_x"),
            customer_id: Some("cus_x"),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    herd_billing::process::recompute_subscription(pool, "sub_x", None)
        .await
        .unwrap();
    fake.set_subscription(
        stripe::subscription("sub_x", "cus_x", stripe_status, "price_x", 0, metadata),
        Some(stripe::invoice("in_x", "cus_x", "sub_x", invoice_status)),
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_billing_policy_suspends_an_unpaid_server_and_resumes_it_once_paid(pool: PgPool) {
    use time::{Duration, OffsetDateTime};
    let app = TestApp::spawn(pool.clone()).await;
    let op = operator_id(&pool).await;
    let cluster = cluster_with_crd().await;
    app.clusters.plug("eu-1", cluster.client.clone());
    register(&app, op, "eu-1", "eu", 10).await;
    // The server `server()` makes is paid by subscription sub_x.
    let id = server(&pool, "lyon", "lyon.social", None).await;
    app.run_jobs().await;
    let org = OrgId(row(&pool, id).await.org_id);
    let now = OffsetDateTime::now_utc();
    let fake = herd_testkit::stripe::FakeStripe::start().await;
    let api = herd_testkit::stripe::api(&fake);
    let refresh = |at| {
        let (pool, api) = (pool.clone(), api.clone());
        async move {
            herd_billing::access::refresh_subscription(&pool, "sub_x", at, Some(&api))
                .await
                .unwrap()
        }
    };
    let month_ago = now - Duration::days(30);
    subscription_is(&pool, &fake, org, "active", month_ago, ("active", "paid")).await;
    refresh(now).await;
    // Overdue past the grace period: suspended, by the policy, on the cluster too.
    let since = now - Duration::days(8);
    subscription_is(&pool, &fake, org, "past_due", since, ("past_due", "open")).await;
    refresh(now).await;
    let r = row(&pool, id).await;
    assert_eq!(r.desired, herd_domain::Desired::Suspended);
    app.run_jobs().await;
    assert!(
        instances(&cluster)
            .get("lyon-social")
            .await
            .unwrap()
            .spec
            .suspended
    );
    assert!(fleet::events(&pool, id, 50)
        .await
        .unwrap()
        .iter()
        .any(|e| e.message.contains("billing policy")));
    // The organization cannot resume it while it is unpaid…
    let uid = owner_id(&pool, org).await;
    let member = as_owner(org, uid);
    let refused =
        herd_fleet::lifecycle::request(&pool, member, id, herd_fleet::lifecycle::Action::Resume)
            .await
            .unwrap_err();
    assert!(
        refused.to_string().contains("payment is overdue"),
        "{refused}"
    );
    // …and the payment brings it back.
    subscription_is(&pool, &fake, org, "active", now, ("active", "paid")).await;
    refresh(now + Duration::minutes(1)).await;
    assert_eq!(row(&pool, id).await.desired, herd_domain::Desired::Running);
    app.run_jobs().await;
    assert!(
        !instances(&cluster)
            .get("lyon-social")
            .await
            .unwrap()
            .spec
            .suspended
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_billing_policy_never_resumes_a_server_its_organization_suspended(pool: PgPool) {
    use time::{Duration, OffsetDateTime};
    let _app = TestApp::spawn(pool.clone()).await;
    let id = server(&pool, "lyon", "lyon.social", None).await;
    let org = OrgId(row(&pool, id).await.org_id);
    let uid = owner_id(&pool, org).await;
    let member = as_owner(org, uid);
    herd_fleet::lifecycle::request(&pool, member, id, herd_fleet::lifecycle::Action::Suspend)
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let fake = herd_testkit::stripe::FakeStripe::start().await;
    let api = herd_testkit::stripe::api(&fake);
    let since = now - Duration::days(1);
    subscription_is(&pool, &fake, org, "past_due", since, ("past_due", "open")).await;
    herd_billing::access::refresh_subscription(&pool, "sub_x", now, Some(&api))
        .await
        .unwrap();
    subscription_is(&pool, &fake, org, "active", now, ("active", "paid")).await;
    herd_billing::access::refresh_subscription(&pool, "sub_x", now, Some(&api))
        .await
        .unwrap();
    assert_eq!(
        row(&pool, id).await.desired,
        herd_domain::Desired::Suspended
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_billing_policy_deletes_servers_only_once_stripe_confirms_and_for_good(pool: PgPool) {
    use time::{Duration, OffsetDateTime};
    let mut app = TestApp::spawn(pool.clone()).await;
    let op = operator_id(&pool).await;
    let cluster = cluster_with_crd().await;
    app.clusters.plug("eu-1", cluster.client.clone());
    register(&app, op, "eu-1", "eu", 10).await;
    let id = server(&pool, "lyon", "lyon.social", None).await;
    app.run_jobs().await;
    assert!(instances(&cluster).get("lyon-social").await.is_ok());
    let org = OrgId(row(&pool, id).await.org_id);
    let now = OffsetDateTime::now_utc();
    let fake = herd_testkit::stripe::FakeStripe::start().await;
    let api = herd_testkit::stripe::api(&fake);
    let refresh = |at| {
        let (pool, api) = (pool.clone(), api.clone());
        async move {
            herd_billing::access::refresh_subscription(&pool, "sub_x", at, Some(&api))
                .await
                .unwrap()
        }
    };
    let state = || {
        let pool = pool.clone();
        async move {
            herd_store::access::get(&pool, "stripe:sub_x")
                .await
                .unwrap()
                .map(|a| a.state)
        }
    };
    subscription_is(
        &pool,
        &fake,
        org,
        "active",
        now - Duration::days(70),
        ("active", "paid"),
    )
    .await;
    refresh(now).await;
    assert_eq!(state().await.as_deref(), Some("running"));
    // The renewal failed 40 days ago, but Stripe's latest invoice is paid by now (the
    // subscription's own update is on its way): nothing is taken away.
    let since = now - Duration::days(40);
    subscription_is(&pool, &fake, org, "past_due", since, ("past_due", "paid")).await;
    refresh(now).await;
    assert_eq!(state().await.as_deref(), Some("running"));
    assert_eq!(row(&pool, id).await.desired, herd_domain::Desired::Running);

    // Really unpaid for 40 days: Stripe agrees, and the server is deleted, by the same
    // path as the portal's deletion (history, audit, apply job).
    fake.set_subscription(
        herd_testkit::stripe::subscription("sub_x", "cus_x", "past_due", "price_x", 0, json!({})),
        Some(herd_testkit::stripe::invoice(
            "in_x", "cus_x", "sub_x", "open",
        )),
    );
    refresh(now).await;
    assert_eq!(state().await.as_deref(), Some("deleted"));
    assert_eq!(row(&pool, id).await.desired, herd_domain::Desired::Deleted);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'instance.deleted' AND details->>'by' = 'billing policy'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    assert!(fleet::events(&pool, id, 50)
        .await
        .unwrap()
        .iter()
        .any(|e| e.message.contains("Deleted by the billing policy")));
    // The worker has Stripe's key: the subscription of the deleted server is cancelled.
    app.stripe = Some(api.clone());
    app.run_jobs().await;
    assert_eq!(fake.object("sub_x").unwrap()["status"], "canceled");
    let on_cluster = instances(&cluster).get("lyon-social").await;
    assert!(
        on_cluster.map_or(true, |i| i.metadata.deletion_timestamp.is_some()),
        "the cluster is told to delete it"
    );

    // A payment afterwards brings nothing back.
    subscription_is(&pool, &fake, org, "active", now, ("active", "paid")).await;
    refresh(now + Duration::minutes(1)).await;
    assert_eq!(state().await.as_deref(), Some("deleted"));
    assert_eq!(row(&pool, id).await.desired, herd_domain::Desired::Deleted);
}

/// Waits (up to 10 s) until `check` holds of the server's row.
async fn eventually(pool: &PgPool, id: Uuid, what: &str, check: impl Fn(&fleet::Instance) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = row(pool, id).await;
        if check(&r) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not seen within 10 s (phase {:?})",
            r.phase
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The watch: a status the operator writes reaches the server's row without a resync, each
/// cluster is watched by one worker (a second one's round starts nothing), and when the
/// watching worker dies another takes the cluster over.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_watch_per_cluster_records_each_status_as_it_changes(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let op = operator_id(&pool).await;
    let eu = cluster_with_crd().await;
    app.clusters.plug("eu-1", eu.client.clone());
    register(&app, op, "eu-1", "eu", 10).await;
    let id = server(&pool, "lyon", "social.lyon.example", None).await;
    app.run_jobs().await;
    let slug = row(&pool, id).await.slug;
    assert!(instances(&eu).get_opt(&slug).await.unwrap().is_some());
    assert_ne!(row(&pool, id).await.phase, InstancePhase::Running);

    let o = herd_orchestrator::Orchestrator {
        pool: pool.clone(),
        clusters: std::sync::Arc::new(app.clusters.clone()),
        key: Some(app.seal_key.clone()),
        moderator_email: Some("moderation@provider.example".to_owned()),
    };
    let mut first = std::collections::HashMap::new();
    herd_orchestrator::watch::round(&o, &mut first)
        .await
        .unwrap();
    assert_eq!(first.len(), 1, "this worker watches the cluster");
    let mut second = std::collections::HashMap::new();
    herd_orchestrator::watch::round(&o, &mut second)
        .await
        .unwrap();
    assert!(second.is_empty(), "the cluster is watched once");

    // The operator reports the server running: the row follows, with no resync.
    let report = |phase: &'static str, url: &'static str| json!({ "status": { "phase": phase, "url": url, "runningVersion": "v4.7.6", "conditions": [] } });
    instances(&eu)
        .patch_status(
            &slug,
            &PatchParams::default(),
            &Patch::Merge(report("Running", "https://social.lyon.example")),
        )
        .await
        .unwrap();
    eventually(&pool, id, "Running by the watch", |r| {
        r.phase == InstancePhase::Running && r.url.as_deref() == Some("https://social.lyon.example")
    })
    .await;

    // The watching worker dies: the next round of another one takes the cluster over, and
    // the next change arrives through it.
    for (_, task) in first.drain() {
        task.abort();
        let _ = task.await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while second.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no worker took the cluster over"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        herd_orchestrator::watch::round(&o, &mut second)
            .await
            .unwrap();
    }
    instances(&eu)
        .patch_status(
            &slug,
            &PatchParams::default(),
            &Patch::Merge(report("Suspended", "https://social.lyon.example")),
        )
        .await
        .unwrap();
    eventually(&pool, id, "Suspended by the new watch", |r| {
        r.phase == InstancePhase::Suspended
    })
    .await;
    for (_, task) in second.drain() {
        task.abort();
    }
}

/// An Instance status reporting `backups` (newest first) on a running v4.7.6.
async fn report_backups(api: &Api<Instance>, backups: serde_json::Value) {
    api.patch_status(
        "lyon-social",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "phase": "Running", "runningVersion": "v4.7.6", "backups": backups,
        }})),
    )
    .await
    .unwrap();
}

fn backup(name: &str, outcome: &str, finished: &str) -> serde_json::Value {
    json!({
        "name": name, "reason": "Scheduled", "method": "Dump", "outcome": outcome,
        "startedAt": "2026-12-08T02:17:05Z", "finishedAt": finished, "durationSeconds": 150,
        "sizeBytes": 1_048_576_000, "location": format!("s3://herd-backups/herd/scheduled/keep-7d/lyon-social/{name}/"),
        "checksum": "ab".repeat(32),
        "message": if outcome == "Failed" { json!("BackoffLimitExceeded: Job has reached the specified backoff limit") } else { json!(null) },
    })
}

fn at(s: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(herd_k8s::backups::epoch_nanos(s).unwrap())
        .unwrap()
}

/// A running lyon.social on cluster eu-1, whose status the tests write and sync at the
/// times they choose.
struct Backups {
    app: TestApp,
    api: Api<Instance>,
    o: herd_orchestrator::Orchestrator,
    id: Uuid,
    _cluster: FakeCluster,
}

impl Backups {
    async fn new(pool: &PgPool) -> Backups {
        let app = TestApp::spawn(pool.clone()).await;
        let op = operator_id(pool).await;
        let cluster = cluster_with_crd().await;
        app.clusters.plug("eu-1", cluster.client.clone());
        register(&app, op, "eu-1", "eu", 10).await;
        let id = server(pool, "lyon", "lyon.social", None).await;
        app.run_jobs().await;
        let o = herd_orchestrator::Orchestrator {
            pool: pool.clone(),
            clusters: std::sync::Arc::new(app.clusters.clone()),
            key: None,
            moderator_email: Some("moderation@provider.example".to_owned()),
        };
        Backups {
            api: instances(&cluster),
            app,
            o,
            id,
            _cluster: cluster,
        }
    }

    /// The status sync of the Instance as it is, at `now`.
    async fn sync(&self, now: &str) {
        let i = self.api.get("lyon-social").await.unwrap();
        herd_orchestrator::sync::record_at(&self.o, self.id, &i, at(now))
            .await
            .unwrap();
    }

    /// Every alert of the tenant, oldest first: (kind, message, closed at).
    async fn alerts(&self) -> Vec<(String, String, Option<time::OffsetDateTime>)> {
        sqlx::query_as(
            "SELECT kind, message, closed_at FROM tenant_backup_alerts WHERE instance_id = $1 ORDER BY opened_at",
        )
        .bind(self.id)
        .fetch_all(&self.app.pool)
        .await
        .unwrap()
    }

    /// Merges `spec` into the Instance's spec, as an operator editing it by hand would.
    async fn spec(&self, spec: serde_json::Value) {
        self.api
            .patch(
                "lyon-social",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Merges `status` into the Instance's status, as its operator would report it.
    async fn status(&self, status: serde_json::Value) {
        self.api
            .patch_status(
                "lyon-social",
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap();
    }

    /// The alerts still open: (kind, message).
    async fn open(&self) -> Vec<(String, String)> {
        self.alerts()
            .await
            .into_iter()
            .filter(|a| a.2.is_none())
            .map(|a| (a.0, a.1))
            .collect()
    }

    /// The backup emails sent.
    async fn emails(&self) -> Vec<herd_mail::OutboxMessage> {
        herd_mail::read_outbox(&self.app.outbox)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.subject.contains("Backup"))
            .collect()
    }
}

/// The status sync copies each backup into `tenant_backups`; a missed or failed backup
/// opens one alert (on the console page, in the history) and emails the operators once
/// per incident; a success closes it; the metric gives each tenant's backup age.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn backups_are_recorded_and_a_missed_or_failed_one_alerts_once(pool: PgPool) {
    let w = Backups::new(&pool).await;
    let id = w.id;

    // A backup that succeeded: recorded with what the cluster reported.
    report_backups(
        &w.api,
        json!([backup(
            "scheduled-backup-1",
            "Succeeded",
            "2026-12-08T02:19:35Z"
        )]),
    )
    .await;
    w.sync("2026-12-08T03:00:00Z").await;
    let rows = herd_store::backups::recent(&pool, id, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    let b = &rows[0];
    assert_eq!(b.name, "scheduled-backup-1");
    assert_eq!(b.outcome, herd_domain::backup::BackupOutcome::Succeeded);
    assert_eq!(b.size_bytes, Some(1_048_576_000));
    assert_eq!(b.duration_seconds, Some(150));
    assert_eq!(b.finished_at, Some(at("2026-12-08T02:19:35Z")));
    assert_eq!(b.checksum.as_deref(), Some("ab".repeat(32).as_str()));
    assert!(b
        .location
        .as_deref()
        .unwrap()
        .starts_with("s3://herd-backups/"));
    assert!(w.alerts().await.is_empty());
    // The metric: the age of that backup.
    let text = herd_fleet::backups::metrics_text(&pool, at("2026-12-08T03:19:35Z"))
        .await
        .unwrap();
    assert!(
        text.contains("herd_tenant_backup_age_seconds{tenant=\"lyon-social\"} 3600\n"),
        "{text}"
    );

    // A day and the grace later, no new success: missed, one alert, one email per
    // operator, however many syncs follow.
    w.sync("2026-12-09T04:00:00Z").await;
    assert!(w.alerts().await.is_empty(), "not yet: within the grace");
    w.sync("2026-12-09T05:30:00Z").await;
    w.app.run_jobs().await;
    let open = w.alerts().await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].0, "missed");
    assert!(
        open[0].1.contains("no backup succeeded for 27 hours"),
        "{}",
        open[0].1
    );
    for later in [
        "2026-12-09T05:30:15Z",
        "2026-12-09T08:00:00Z",
        "2026-12-10T08:00:00Z",
    ] {
        w.sync(later).await;
        w.app.run_jobs().await;
    }
    assert_eq!(w.alerts().await.len(), 1, "one incident");
    let sent = w.emails().await;
    assert_eq!(sent.len(), 1, "once per incident: {sent:?}");
    assert_eq!(sent[0].to, "ops@provider.example");
    assert!(
        sent[0].subject.contains("Backup missed: lyon.social"),
        "{}",
        sent[0].subject
    );
    assert!(sent[0].body.contains(&format!("/operator/instances/{id}")));
    let text = herd_fleet::backups::metrics_text(&pool, at("2026-12-10T08:00:00Z"))
        .await
        .unwrap();
    assert!(
        text.contains("herd_tenant_backup_age_seconds{tenant=\"lyon-social\"} 193225\n"),
        "{text}"
    );
    let console = herd_fleet::backups::for_console(&pool, id).await.unwrap();
    assert_eq!(console.alerts.len(), 1);
    assert_eq!(console.recent.len(), 1);

    // A success closes it.
    report_backups(
        &w.api,
        json!([
            backup("scheduled-backup-3", "Succeeded", "2026-12-10T08:30:00Z"),
            backup("scheduled-backup-1", "Succeeded", "2026-12-08T02:19:35Z"),
        ]),
    )
    .await;
    w.sync("2026-12-10T09:00:00Z").await;
    let all = w.alerts().await;
    assert!(all[0].2.is_some(), "closed");
    let history = fleet::events(&pool, id, 50).await.unwrap();
    assert!(history
        .iter()
        .any(|e| e.message.contains("Backups are healthy again")));

    // A failed backup alerts at once, in its own incident, with the cluster's reason.
    report_backups(
        &w.api,
        json!([
            backup("scheduled-backup-4", "Failed", "2026-12-11T02:20:00Z"),
            backup("scheduled-backup-3", "Succeeded", "2026-12-10T08:30:00Z"),
        ]),
    )
    .await;
    w.sync("2026-12-11T02:30:00Z").await;
    w.sync("2026-12-11T02:30:15Z").await;
    w.app.run_jobs().await;
    let all = w.alerts().await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].0, "failed");
    assert!(all[1].1.contains("BackoffLimitExceeded"), "{}", all[1].1);
    let sent = w.emails().await;
    assert_eq!(sent.len(), 2);
    assert!(
        sent[1].subject.contains("Backup failed"),
        "{}",
        sent[1].subject
    );
    let rows = herd_store::backups::recent(&pool, id, 10).await.unwrap();
    assert_eq!(rows.len(), 3, "each backup once");
}

/// Media in object storage are not copied by the backups: their bucket (`spec.mediaS3`)
/// and its versioning as the cluster reads it (`status.mediaBucket`) are recorded, and
/// anything but on, read lately, is the tenant's media alert: its own incident beside the
/// database's (a failed backup is still emailed), not opened by a short spell of
/// unreadable readings, closed once on.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn media_in_a_bucket_without_versioning_are_an_alert_until_it_is_on(pool: PgPool) {
    let w = Backups::new(&pool).await;
    let reading = |versioning: &str, message: Option<&str>, checked: &str| {
        w.status(json!({ "mediaBucket": {
            "bucket": "lyon-media", "endpoint": "https://s3.fr-par.scw.cloud",
            "versioning": versioning, "checkedAt": checked, "message": message,
        }}))
    };
    let metric = |now: &'static str| {
        let pool = pool.clone();
        async move {
            let text = herd_fleet::backups::metrics_text(&pool, at(now))
                .await
                .unwrap();
            text.lines()
                .find(|l| l.starts_with("herd_tenant_media_versioning_enabled{"))
                .map(str::to_owned)
        }
    };
    report_backups(
        &w.api,
        json!([backup(
            "scheduled-backup-1",
            "Succeeded",
            "2026-12-08T02:19:35Z"
        )]),
    )
    .await;
    w.spec(json!({ "mediaS3": {
        "bucket": "lyon-media", "endpoint": "https://s3.fr-par.scw.cloud",
        "secretRef": "media-s3",
    }}))
    .await;

    // Named but not read yet: pending, then an alert once the operator stays silent.
    w.sync("2026-12-08T02:30:00Z").await;
    assert!(w.alerts().await.is_empty());
    let console = herd_fleet::backups::for_console(&pool, w.id).await.unwrap();
    let m = console.media_bucket.unwrap();
    assert_eq!((m.bucket.as_str(), m.reading), ("lyon-media", None));
    w.sync("2026-12-08T06:31:00Z").await;
    let alerts = w.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert!(
        alerts[0].1.contains("never read by the cluster's operator"),
        "{}",
        alerts[0].1
    );

    // Read, on: closed.
    reading("Enabled", None, "2026-12-08T06:40:00Z").await;
    w.sync("2026-12-08T06:40:05Z").await;
    assert!(w.alerts().await[0].2.is_some(), "closed");
    let m = herd_fleet::backups::for_console(&pool, w.id)
        .await
        .unwrap()
        .media_bucket
        .unwrap();
    let r = m.reading.unwrap();
    assert_eq!(
        (r.versioning, r.checked_at),
        (
            herd_domain::backup::BucketVersioning::Enabled,
            at("2026-12-08T06:40:00Z")
        )
    );
    assert_eq!(
        metric("2026-12-08T06:40:05Z").await.as_deref(),
        Some("herd_tenant_media_versioning_enabled{tenant=\"lyon-social\"} 1")
    );

    // Suspended at the provider: an alert naming the bucket, emailed once.
    reading("Suspended", None, "2026-12-08T07:40:00Z").await;
    w.sync("2026-12-08T07:40:05Z").await;
    w.sync("2026-12-08T07:50:00Z").await;
    w.app.run_jobs().await;
    let open = w.open().await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].0, "media_unprotected");
    assert!(
        open[0]
            .1
            .contains("media in bucket lyon-media are not backed up: versioning is suspended"),
        "{}",
        open[0].1
    );
    let sent = w.emails().await;
    assert!(
        sent.last()
            .unwrap()
            .subject
            .contains("media not protected: lyon.social"),
        "{sent:?}"
    );
    assert!(sent.last().unwrap().body.contains("versioning as on"));
    let before = sent.len();
    assert_eq!(
        metric("2026-12-08T07:50:00Z").await.as_deref(),
        Some("herd_tenant_media_versioning_enabled{tenant=\"lyon-social\"} 0")
    );

    // Unreadable for a moment: the open alert stays as it says; an hour of it, it says why.
    reading(
        "Unreadable",
        Some("HTTP 503 SlowDown"),
        "2026-12-08T08:40:00Z",
    )
    .await;
    w.sync("2026-12-08T08:40:05Z").await;
    let open = w.open().await;
    assert_eq!(open.len(), 1);
    assert!(
        open[0].1.contains("versioning is suspended"),
        "{}",
        open[0].1
    );
    reading(
        "Unreadable",
        Some("HTTP 403 AccessDenied"),
        "2026-12-08T09:45:00Z",
    )
    .await;
    w.sync("2026-12-08T09:45:05Z").await;
    let open = w.open().await;
    assert!(
        open[0]
            .1
            .contains("could not be read since 2026-12-08 08:40 UTC (HTTP 403 AccessDenied)"),
        "{}",
        open[0].1
    );

    // A failed database backup meanwhile: its own alert, emailed too.
    report_backups(
        &w.api,
        json!([
            backup("scheduled-backup-2", "Failed", "2026-12-09T02:20:00Z"),
            backup("scheduled-backup-1", "Succeeded", "2026-12-08T02:19:35Z"),
        ]),
    )
    .await;
    w.sync("2026-12-09T02:30:00Z").await;
    w.app.run_jobs().await;
    let mut open: Vec<_> = w.open().await.into_iter().map(|a| a.0).collect();
    open.sort();
    assert_eq!(open, ["failed", "media_unprotected"]);
    let sent = w.emails().await;
    assert_eq!(sent.len(), before + 1);
    assert!(sent.last().unwrap().subject.contains("Backup failed"));
    assert_eq!(
        herd_fleet::backups::for_console(&pool, w.id)
            .await
            .unwrap()
            .alerts
            .len(),
        2
    );

    // Versioning back on closes the media alert only.
    reading("Enabled", None, "2026-12-09T02:40:00Z").await;
    w.sync("2026-12-09T02:40:05Z").await;
    let open = w.open().await;
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].0, "failed");
    let history = fleet::events(&pool, w.id, 50).await.unwrap();
    assert!(history.iter().any(|e| e
        .message
        .contains("The media in object storage are backed up again")));

    // Another endpoint: its reading is not the old one's, and its bucket counts as named now
    // (not "never read" since it was first named); back at the first, its reading counts.
    let endpoint = |endpoint: &'static str| w.spec(json!({ "mediaS3": { "endpoint": endpoint } }));
    endpoint("https://s3.nl-ams.scw.cloud").await;
    w.sync("2026-12-09T07:00:00Z").await;
    assert_eq!(
        w.open().await.len(),
        1,
        "only the database's: {:?}",
        w.open().await
    );
    let m = herd_fleet::backups::for_console(&pool, w.id)
        .await
        .unwrap()
        .media_bucket
        .unwrap();
    assert_eq!((m.reading, m.since), (None, at("2026-12-09T07:00:00Z")));
    endpoint("https://s3.fr-par.scw.cloud").await;

    // A long restore holds the operator's readings: not stale meanwhile; stale after.
    let phase = |phase: &'static str| w.status(json!({ "phase": phase }));
    phase("Restoring").await;
    w.sync("2026-12-09T08:00:00Z").await;
    assert_eq!(w.open().await.len(), 1, "only the database's");
    phase("Running").await;
    w.sync("2026-12-09T08:00:05Z").await;
    let open = w.open().await;
    assert_eq!(open.len(), 2);
    assert!(
        open.iter()
            .any(|a| a.1.contains("last read 2026-12-09 02:40 UTC and not since")),
        "{open:?}"
    );

    // Media moved back onto a volume: nothing recorded, nothing alerted about them.
    w.spec(json!({ "mediaS3": null })).await;
    w.sync("2026-12-09T09:00:00Z").await;
    let console = herd_fleet::backups::for_console(&pool, w.id).await.unwrap();
    assert!(console.media_bucket.is_none());
    assert_eq!(w.open().await.len(), 1, "the database's only");
    let history = fleet::events(&pool, w.id, 50).await.unwrap();
    assert!(history.iter().any(|e| e
        .message
        .contains("The media are no longer in object storage")));
    assert_eq!(metric("2026-12-09T09:00:00Z").await, None);
}
