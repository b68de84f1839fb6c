//! Managed moderation's moderator account (issue 13), control-plane side, against a fake
//! cluster standing in for the operator: the Instance asks for it only on a plan with
//! moderation; the token the cluster made is collected from its Secret, sealed into the
//! server's connection (usable, fetched at once, audited), and the Secret deleted; without
//! HERD_ENCRYPTION_KEY the Secret stays; a failed Job is an event; revoking asks the
//! cluster to revoke with a higher generation.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::{OrgId, UserId};
use herd_fleet::clusters::{self, Actor, Registration};
use herd_jobs::Job;
use herd_k8s::crd::{Instance, ModeratorSpec};
use herd_moderation::connections::{self, token_purpose, MODERATOR_USERNAME};
use herd_moderation::Who;
use herd_orchestrator::{Orchestrator, DEFAULT_MODERATOR_EMAIL};
use herd_store::fleet;
use herd_testkit::fake_cluster::{self, FakeCluster};
use herd_testkit::TestApp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const TOKEN: &str = "tok_0123456789abcdefMODERATOR";

struct Setup {
    app: TestApp,
    cluster: FakeCluster,
    cluster_id: Uuid,
    org: Uuid,
    owner: Uuid,
}

/// A cluster, an organization with an owner, and plan `community` with moderation
/// (`moderated`) or without.
async fn setup(pool: &PgPool, moderated: bool) -> Setup {
    let app = TestApp::spawn(pool.clone()).await;
    let op = Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, display_name, password_hash, email_verified_at, is_operator) VALUES ($1, 'ops@provider.example', 'Ops', 'x', now(), true)")
        .bind(op).execute(pool).await.unwrap();
    let cluster = fake_cluster::start_with(|b| b.with_resource::<Instance>()).await;
    app.clusters.plug("eu-1", cluster.client.clone());
    let cluster_id = clusters::register(
        pool,
        Some(&app.seal_key),
        Some(Actor {
            id: UserId(op),
            email: "ops@provider.example",
            ip: "192.0.2.7",
        }),
        &Registration {
            name: "eu-1".into(),
            region: "eu".into(),
            kubeconfig: String::new(),
            operator_namespace: "herd-system".into(),
            capacity: "10".into(),
        },
    )
    .await
    .unwrap();
    sqlx::query("INSERT INTO plan_moderation (plan_code, included, monthly_hours, response_target_hours) VALUES ('community', $1, 4, 24)")
        .bind(moderated).execute(pool).await.unwrap();
    let (org, owner) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, 'lyon', 'Lyon')")
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO users (id, email, display_name, password_hash, email_verified_at) VALUES ($1, 'owner@lyon.example', 'Owner', 'x', now())")
        .bind(owner).execute(pool).await.unwrap();
    sqlx::query("INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(org)
        .bind(owner)
        .execute(pool)
        .await
        .unwrap();
    Setup {
        app,
        cluster,
        cluster_id,
        org,
        owner,
    }
}

/// A paid order's server on `community`, applied to the cluster. Returns its id.
async fn server(s: &Setup, domain: &str, sub: &str) -> Uuid {
    let pool = &s.app.pool;
    let mut conn = pool.acquire().await.unwrap();
    let (order, _) = herd_store::billing::create_order(
        &mut conn,
        &herd_store::billing::NewOrder {
            org: OrgId(s.org),
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
    drop(conn);
    let mut tx = pool.begin().await.unwrap();
    assert!(
        herd_billing::fulfil::fulfil_paid(&mut tx, order, OrgId(s.org), sub)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    s.app.run_jobs().await;
    fleet::by_order(pool, order).await.unwrap().unwrap()
}

fn instances(c: &FakeCluster) -> Api<Instance> {
    Api::namespaced(c.client.clone(), "herd-system")
}

async fn spec_moderator(s: &Setup, slug: &str) -> Option<ModeratorSpec> {
    instances(&s.cluster)
        .get(slug)
        .await
        .unwrap()
        .spec
        .moderator
}

/// What the operator reports: running, and moderator-token generation `done` made.
async fn report(s: &Setup, slug: &str, status: serde_json::Value) {
    instances(&s.cluster)
        .patch_status(
            slug,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

/// The operator's Secret with the new token.
async fn token_secret(s: &Setup, slug: &str) -> Api<Secret> {
    let ns = format!("herd-{slug}");
    let secrets: Api<Secret> = Api::namespaced(s.cluster.client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": "moderator-token", "namespace": ns },
                "stringData": { "token": TOKEN }
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    secrets
}

fn orchestrator(s: &Setup, key: bool) -> Orchestrator {
    Orchestrator {
        pool: s.app.pool.clone(),
        clusters: std::sync::Arc::new(s.app.clusters.clone()),
        key: key.then(|| s.app.seal_key.clone()),
        moderator_email: "moderation@provider.example".to_owned(),
    }
}

async fn count(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_instance_asks_for_the_moderator_account_only_on_a_plan_with_moderation(pool: PgPool) {
    let s = setup(&pool, false).await;
    server(&s, "lyon.social", "sub_a").await;
    assert_eq!(spec_moderator(&s, "lyon-social").await, None);

    // The plan now includes moderation: a new server asks for it, generation 1.
    sqlx::query("UPDATE plan_moderation SET included = true")
        .execute(&pool)
        .await
        .unwrap();
    let id = server(&s, "nantes.social", "sub_b").await;
    assert_eq!(
        spec_moderator(&s, "nantes-social").await,
        Some(ModeratorSpec {
            username: MODERATOR_USERNAME.to_owned(),
            email: DEFAULT_MODERATOR_EMAIL.to_owned(),
            token_generation: 1,
            revoked: false,
        })
    );
    let events = fleet::events(&pool, id, 20).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.message.contains("moderator account")));
    // The first server gets it when it moves to a plan with moderation (organization:
    // moderation hours, no terms of its own).
    let mut tx = pool.begin().await.unwrap();
    herd_fleet::lifecycle::follow_plan(&mut tx, "stripe:sub_a", None, "organization")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    s.app.run_jobs().await;
    assert_eq!(
        spec_moderator(&s, "lyon-social")
            .await
            .map(|m| m.token_generation),
        Some(1)
    );
    // The email is the one configured.
    assert_eq!(
        herd_orchestrator::apply::moderator_spec(
            &fleet::moderator_token(&pool, id).await.unwrap().unwrap(),
            true,
            "moderation@provider.example"
        )
        .unwrap()
        .email,
        "moderation@provider.example"
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_token_made_on_the_cluster_is_sealed_into_the_connection_and_its_secret_deleted(
    pool: PgPool,
) {
    let s = setup(&pool, true).await;
    let id = server(&s, "lyon.social", "sub_a").await;
    report(
        &s,
        "lyon-social",
        json!({ "phase": "Running", "url": "https://lyon.social", "moderatorTokenGeneration": 1 }),
    )
    .await;
    let secrets = token_secret(&s, "lyon-social").await;

    // A worker without HERD_ENCRYPTION_KEY: the Secret stays, nothing is stored.
    herd_orchestrator::sync::sync_cluster(&orchestrator(&s, false), s.cluster_id)
        .await
        .unwrap();
    assert!(secrets.get_opt("moderator-token").await.unwrap().is_some());
    let i = herd_store::moderation::instance(&pool, id)
        .await
        .unwrap()
        .unwrap();
    assert!(i.connection.is_none());

    // With the key: stored sealed for this server, usable, fetched at once, audited as the
    // system; the Secret is gone.
    herd_orchestrator::sync::sync_cluster(&orchestrator(&s, true), s.cluster_id)
        .await
        .unwrap();
    assert!(secrets.get_opt("moderator-token").await.unwrap().is_none());
    let i = herd_store::moderation::instance(&pool, id)
        .await
        .unwrap()
        .unwrap();
    let c = i.connection.clone().unwrap();
    assert!(c.usable());
    assert_eq!(c.moderator_account, MODERATOR_USERNAME);
    assert!(!String::from_utf8_lossy(&c.token_sealed).contains(TOKEN));
    let opened = s
        .app
        .seal_key
        .open(&token_purpose(id), &c.token_sealed)
        .unwrap();
    assert_eq!(opened, TOKEN.as_bytes());
    assert!(
        connections::api(&reqwest::Client::new(), Some(&s.app.seal_key), &i)
            .unwrap()
            .is_some()
    );
    let fetches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = $1 AND payload->>'instance' = $2",
    )
    .bind(herd_moderation::jobs::FetchReports::KIND)
    .bind(id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(fetches, 1);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action = 'moderation.connection.made' AND target = $1 AND actor_id IS NULL",
            id
        )
        .await,
        1
    );
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!(t.connection_generation, Some(1));
    assert!(!t.making());
    // The token is in no audit entry and no history entry.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM audit_log WHERE details::text LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM instance_events WHERE message LIKE '%' || $1 || '%')",
    )
    .bind(TOKEN)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0);

    // A later sync collects nothing more (the Secret is gone and nothing is asked).
    herd_orchestrator::sync::sync_cluster(&orchestrator(&s, true), s.cluster_id)
        .await
        .unwrap();
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM audit_log WHERE action = 'moderation.connection.made' AND target = $1",
            id
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_failed_moderator_job_is_an_event_and_revoking_asks_the_cluster_to_revoke(pool: PgPool) {
    let s = setup(&pool, true).await;
    let id = server(&s, "lyon.social", "sub_a").await;
    let generation = instances(&s.cluster)
        .get("lyon-social")
        .await
        .unwrap()
        .metadata
        .generation;
    report(
        &s,
        "lyon-social",
        json!({
            "phase": "Running", "observedGeneration": generation,
            "conditions": [{
                "type": "ModeratorAccount", "status": "False", "reason": "JobFailed",
                "message": "Job moderator-token-1 failed: see kubectl -n herd-lyon-social logs job/moderator-token-1"
            }]
        }),
    )
    .await;
    herd_orchestrator::sync::sync_cluster(&orchestrator(&s, true), s.cluster_id)
        .await
        .unwrap();
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert!(t.failed().unwrap().contains("kubectl"));
    let events = fleet::events(&pool, id, 20).await.unwrap();
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.message.contains("moderator account or its token failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    // The history (the customer reads it) does not carry the operator's message.
    assert!(events.iter().all(|e| !e.message.contains("kubectl")));
    // Applied again, the Instance no longer asks for the failed generation.
    s.app.run_jobs().await;
    assert_eq!(spec_moderator(&s, "lyon-social").await, None);

    // The owner asks again (generation 2), it is made and collected; then revokes.
    let who = Who {
        id: UserId(s.owner),
        name: "Owner",
        email: "owner@lyon.example",
        ip: "192.0.2.8",
    };
    assert_eq!(
        connections::ask_for_token(&pool, who, OrgId(s.org), id)
            .await
            .unwrap(),
        2
    );
    s.app.run_jobs().await;
    assert_eq!(
        spec_moderator(&s, "lyon-social")
            .await
            .map(|m| m.token_generation),
        Some(2)
    );
    report(
        &s,
        "lyon-social",
        json!({ "moderatorTokenGeneration": 2, "conditions": [] }),
    )
    .await;
    token_secret(&s, "lyon-social").await;
    herd_orchestrator::sync::sync_cluster(&orchestrator(&s, true), s.cluster_id)
        .await
        .unwrap();
    assert!(herd_store::moderation::instance(&pool, id)
        .await
        .unwrap()
        .unwrap()
        .connection
        .is_some_and(|c| c.usable()));
    connections::revoke(&pool, who, OrgId(s.org), id)
        .await
        .unwrap();
    s.app.run_jobs().await;
    let m = spec_moderator(&s, "lyon-social").await.unwrap();
    assert_eq!((m.token_generation, m.revoked), (3, true));
    let i = herd_store::moderation::instance(&pool, id)
        .await
        .unwrap()
        .unwrap();
    assert!(!i.connection.unwrap().usable());
    // Done on the cluster: an event, and nothing to collect.
    report(&s, "lyon-social", json!({ "moderatorTokenGeneration": 3 })).await;
    herd_orchestrator::sync::sync_cluster(&orchestrator(&s, true), s.cluster_id)
        .await
        .unwrap();
    let events = fleet::events(&pool, id, 30).await.unwrap();
    assert!(events.iter().any(|e| e.message.contains("are revoked")));
    assert!(fleet::awaiting_moderator_token(&pool, s.cluster_id)
        .await
        .unwrap()
        .is_empty());
}
