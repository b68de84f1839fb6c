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
use herd_orchestrator::Orchestrator;
use herd_store::fleet;
use herd_testkit::fake_cluster::{self, FakeCluster};
use herd_testkit::TestApp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const TOKEN: &str = "tok_0123456789abcdefMODERATOR";

pub(crate) struct Setup {
    pub(crate) app: TestApp,
    pub(crate) cluster: FakeCluster,
    pub(crate) cluster_id: Uuid,
    pub(crate) org: Uuid,
    pub(crate) owner: Uuid,
}

/// A cluster, an organization with an owner, and plan `community` with moderation
/// (`moderated`) or without.
pub(crate) async fn setup(pool: &PgPool, moderated: bool) -> Setup {
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
pub(crate) async fn server(s: &Setup, domain: &str, sub: &str) -> Uuid {
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

/// The operator's Secret with the new token, made for token generation `generation`.
async fn token_secret(s: &Setup, slug: &str, generation: u32) -> Api<Secret> {
    let ns = format!("herd-{slug}");
    let secrets: Api<Secret> = Api::namespaced(s.cluster.client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": { "name": "moderator-token", "namespace": ns, "annotations": {
                    "herd.dev/token-generation": generation.to_string(),
                }},
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
        moderator_email: Some("moderation@provider.example".to_owned()),
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
            email: "moderation@provider.example".to_owned(),
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
    let pending = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!(
        herd_orchestrator::apply::moderator_spec(
            &pending,
            true,
            Some("moderation@provider.example")
        )
        .unwrap()
        .email,
        "moderation@provider.example"
    );
    // None usable configured: no account, no new token is asked of the cluster.
    assert_eq!(
        herd_orchestrator::apply::moderator_spec(&pending, true, None),
        None
    );
}

/// A new token that cannot be made is never left asked. Without a usable moderation
/// address it is recorded as failed at once, saying why, noted once in the history, and
/// (no token of Herd's in use) Herd's earlier ones are revoked, as its Job would have
/// done; on a plan whose moderation was turned off it becomes a revocation.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_new_token_that_cannot_be_made_fails_or_revokes_at_once(pool: PgPool) {
    let s = setup(&pool, true).await;
    let id = server(&s, "lyon.social", "sub_a").await;
    let mut o = orchestrator(&s, true);
    o.moderator_email = None;
    let asked = fleet::ask_moderator_token(&pool, id, false).await.unwrap();
    herd_orchestrator::apply::apply_instance(&o, id)
        .await
        .unwrap();
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!(t.failed_generation, asked);
    assert_eq!(
        t.failure.as_deref(),
        Some(herd_orchestrator::apply::NO_MODERATOR_EMAIL)
    );
    assert_eq!((t.generation, t.revoked), (asked + 1, true));
    let spec = spec_moderator(&s, "lyon-social").await.unwrap();
    assert_eq!(
        (spec.token_generation, spec.revoked, spec.email.as_str()),
        (u32::try_from(asked + 1).unwrap(), true, "")
    );
    let noted = |message: &'static str| {
        let pool = pool.clone();
        async move {
            fleet::events(&pool, id, 50)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.message == message)
                .count()
        }
    };
    let event = herd_orchestrator::apply::NO_MODERATOR_EMAIL_EVENT;
    assert_eq!(noted(event).await, 1);
    // Applied again: nothing more is recorded or asked.
    herd_orchestrator::apply::apply_instance(&o, id)
        .await
        .unwrap();
    assert_eq!(noted(event).await, 1);
    assert_eq!(
        fleet::moderator_token(&pool, id)
            .await
            .unwrap()
            .unwrap()
            .generation,
        asked + 1
    );

    // The plan's moderation turned off while a new token is asked: a revocation instead.
    sqlx::query("UPDATE plan_moderation SET included = false")
        .execute(&pool)
        .await
        .unwrap();
    let asked = fleet::ask_moderator_token(&pool, id, false).await.unwrap();
    herd_orchestrator::apply::apply_instance(&orchestrator(&s, true), id)
        .await
        .unwrap();
    let spec = spec_moderator(&s, "lyon-social").await.unwrap();
    assert_eq!(
        (spec.token_generation, spec.revoked),
        (u32::try_from(asked + 1).unwrap(), true)
    );
    assert_eq!(
        noted("The plan does not include managed moderation: the new moderator token asked is not made, and Herd's tokens on the server are to be revoked").await,
        1
    );
}

/// An in-place restore brings back the database of the backup, with its tokens: once it
/// succeeds, a new generation is asked (once), so the Job revokes the revived tokens and
/// stores a new one.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_restore_that_replaced_the_database_asks_for_a_new_token_once(pool: PgPool) {
    let s = setup(&pool, true).await;
    let id = server(&s, "lyon.social", "sub_a").await;
    report(
        &s,
        "lyon-social",
        json!({ "phase": "Running", "url": "https://lyon.social", "moderatorTokenGeneration": 1 }),
    )
    .await;
    token_secret(&s, "lyon-social", 1).await;
    herd_orchestrator::sync::sync_cluster(&orchestrator(&s, true), s.cluster_id)
        .await
        .unwrap();
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!((t.generation, t.connection_generation), (1, Some(1)));

    let restore = Uuid::now_v7();
    sqlx::query("INSERT INTO tenant_restores (id, instance_id, source_instance_id, source_backup, location, mode, step) VALUES ($1, $2, $2, 'scheduled-1', 's3://backups/lyon-social/scheduled-1', 'in_place', 'restoring')")
        .bind(restore)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    report(
        &s,
        "lyon-social",
        json!({ "restore": {
            "id": restore.to_string(), "step": "Succeeded",
            "source": "s3://backups/lyon-social/scheduled-1",
            "startedAt": "2026-12-08T10:00:00Z", "finishedAt": "2026-12-08T10:04:00Z",
            "sourceRows": { "accounts": 12 }, "restoredRows": { "accounts": 12 } } }),
    )
    .await;
    for _ in 0..2 {
        herd_orchestrator::sync::sync_cluster(&orchestrator(&s, true), s.cluster_id)
            .await
            .unwrap();
    }
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!(
        (t.generation, t.revoked),
        (2, false),
        "asked once, a new token"
    );
    // The report fetch queued by the first connection has no server to reach here.
    sqlx::query("DELETE FROM jobs WHERE kind = $1")
        .bind(herd_moderation::jobs::FetchReports::KIND)
        .execute(&pool)
        .await
        .unwrap();
    s.app.run_jobs().await;
    let m = spec_moderator(&s, "lyon-social").await.unwrap();
    assert_eq!((m.token_generation, m.revoked), (2, false));
    let events = fleet::events(&pool, id, 30).await.unwrap();
    assert!(events.iter().any(|e| e
        .message
        .contains("The restore brought back the moderator tokens")));
}

/// HERD_MODERATION_EMAIL's value, else one derived from the support inbox or the From
/// address; never an address Mastodon refuses to create (its domain must receive mail).
#[test]
fn the_moderator_email_is_one_mastodon_can_create() {
    use herd_orchestrator::moderator_email;
    assert_eq!(
        moderator_email(
            Some("mods@provider.example"),
            None,
            Some("Herd <noreply@localhost>")
        ),
        Some("mods@provider.example".to_owned())
    );
    assert_eq!(
        moderator_email(
            None,
            Some("support@help.provider.example"),
            Some("Herd <noreply@localhost>")
        ),
        Some("moderation@help.provider.example".to_owned())
    );
    assert_eq!(
        moderator_email(None, None, Some("Herd <noreply@mail.provider.example>")),
        Some("moderation@mail.provider.example".to_owned())
    );
    // The old default, and the defaults of the other settings: nothing usable.
    for unusable in [
        "moderation@localhost",
        "a@box.local",
        "a@nodot",
        "a@x.localhost",
        "a@x.invalid",
        "nobody",
    ] {
        assert_eq!(
            moderator_email(Some(unusable), None, None),
            None,
            "{unusable}"
        );
    }
    assert_eq!(
        moderator_email(None, None, Some("Herd <noreply@localhost>")),
        None
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
    let secrets = token_secret(&s, "lyon-social", 1).await;

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

/// The Secret read is of a later generation than the one being collected (asked between
/// the query and the read): it is that generation's token, for its Job. It is neither
/// stored as the earlier generation's nor deleted.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn only_the_secret_of_the_generation_being_collected_is_taken(pool: PgPool) {
    let s = setup(&pool, true).await;
    let id = server(&s, "lyon.social", "sub_a").await;
    report(
        &s,
        "lyon-social",
        json!({ "phase": "Running", "url": "https://lyon.social", "moderatorTokenGeneration": 1 }),
    )
    .await;
    let secrets = token_secret(&s, "lyon-social", 2).await;
    herd_orchestrator::sync::sync_cluster(&orchestrator(&s, true), s.cluster_id)
        .await
        .unwrap();
    assert!(
        secrets.get_opt("moderator-token").await.unwrap().is_some(),
        "generation 2's Secret is left for its Job"
    );
    let i = herd_store::moderation::instance(&pool, id)
        .await
        .unwrap()
        .unwrap();
    assert!(i.connection.is_none(), "not stored as generation 1's");
    assert!(fleet::moderator_token(&pool, id)
        .await
        .unwrap()
        .unwrap()
        .connection_generation
        .is_none());
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
    token_secret(&s, "lyon-social", 2).await;
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
