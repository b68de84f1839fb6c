//! Managed moderation follows the plan and the customer (issue 13, review fixes): a move
//! to a plan without moderation wipes the connection, asks the cluster to revoke Herd's
//! tokens and stops fetching; a token collected after a revoke stores nothing; a plan
//! change never undoes the customer's revoke.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::{OrgId, UserId};
use herd_k8s::crd::Instance;
use herd_moderation::connections;
use herd_moderation::Who;
use herd_store::fleet;
use herd_store::moderation as store;
use sqlx::PgPool;
use uuid::Uuid;

use crate::moderator::{server, setup, Setup};

const TOKEN: &str = "tok_0123456789abcdefMODERATOR";

fn owner(s: &Setup) -> Who<'_> {
    Who {
        id: UserId(s.owner),
        name: "Owner",
        email: "owner@lyon.example",
        ip: "192.0.2.9",
    }
}

/// The cluster made token generation `g` and the orchestrator collects it.
async fn made(s: &Setup, id: Uuid, g: i32) -> bool {
    sqlx::query("UPDATE instances SET moderator_token_done_generation = $2 WHERE id = $1")
        .bind(id)
        .bind(g)
        .execute(&s.app.pool)
        .await
        .unwrap();
    connections::store_made_token(&s.app.pool, &s.app.seal_key, id, g, TOKEN)
        .await
        .unwrap()
}

async fn follow(pool: &PgPool, sub: &str, plan: &str) {
    let mut tx = pool.begin().await.unwrap();
    herd_fleet::lifecycle::follow_plan(&mut tx, &format!("stripe:{sub}"), None, plan)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn usable(pool: &PgPool, id: Uuid) -> bool {
    store::instance(pool, id)
        .await
        .unwrap()
        .unwrap()
        .connection
        .is_some_and(|c| c.usable())
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_move_to_a_plan_without_moderation_wipes_the_token_and_revokes_herds(pool: PgPool) {
    let s = setup(&pool, true).await;
    sqlx::query("INSERT INTO plan_moderation (plan_code, included, monthly_hours, response_target_hours) VALUES ('organization', false, 0, 24)")
        .execute(&pool).await.unwrap();
    let id = server(&s, "lyon.social", "sub_a").await;
    assert!(made(&s, id, 1).await);
    assert!(usable(&pool, id).await);
    assert_eq!(store::fetchable(&pool).await.unwrap(), vec![id]);

    follow(&pool, "sub_a", "organization").await;
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!(
        (t.generation, t.revoked),
        (2, true),
        "a revoke-only generation"
    );
    assert!(!usable(&pool, id).await, "the token is wiped");
    assert!(store::fetchable(&pool).await.unwrap().is_empty());
    let events = fleet::events(&pool, id, 20).await.unwrap();
    assert!(events
        .iter()
        .any(|e| e.message.contains("does not include managed moderation")));
    // The Instance carries the revocation whatever the plan.
    s.app.run_jobs().await;
    let m = s.cluster.client.clone();
    let spec = kube::Api::<Instance>::namespaced(m, "herd-system")
        .get("lyon-social")
        .await
        .unwrap()
        .spec
        .moderator
        .unwrap();
    assert_eq!((spec.token_generation, spec.revoked), (2, true));
}

/// An operator turning a plan's moderation off withdraws every server on it at once:
/// the connection wiped, Herd's tokens revoked on the server (through its Instance).
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn turning_a_plans_moderation_off_withdraws_its_servers(pool: PgPool) {
    let s = setup(&pool, true).await;
    let id = server(&s, "lyon.social", "sub_a").await;
    assert!(made(&s, id, 1).await);
    assert!(usable(&pool, id).await);
    let op = Who {
        id: UserId(s.owner),
        name: "Ops",
        email: "ops@provider.example",
        ip: "192.0.2.7",
    };
    // Hours and target changed, moderation still included: nothing withdrawn.
    connections::save_terms(&pool, op, "community", true, "6", "24")
        .await
        .unwrap();
    assert!(usable(&pool, id).await);
    assert_eq!(
        fleet::moderator_token(&pool, id)
            .await
            .unwrap()
            .unwrap()
            .generation,
        1
    );

    connections::save_terms(&pool, op, "community", false, "0", "24")
        .await
        .unwrap();
    assert!(!usable(&pool, id).await, "the token is wiped");
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!((t.generation, t.revoked), (2, true));
    s.app.run_jobs().await;
    let spec = kube::Api::<Instance>::namespaced(s.cluster.client.clone(), "herd-system")
        .get("lyon-social")
        .await
        .unwrap()
        .spec
        .moderator
        .unwrap();
    assert_eq!((spec.token_generation, spec.revoked), (2, true));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn reports_are_not_fetched_nor_actions_sent_once_the_plan_drops_moderation(pool: PgPool) {
    let s = setup(&pool, true).await;
    let id = server(&s, "lyon.social", "sub_a").await;
    assert!(made(&s, id, 1).await);
    assert_eq!(store::fetchable(&pool).await.unwrap(), vec![id]);
    // The operators change the plan's terms: the connection stays, nothing is called.
    sqlx::query("UPDATE plan_moderation SET included = false")
        .execute(&pool)
        .await
        .unwrap();
    assert!(store::fetchable(&pool).await.unwrap().is_empty());
    let i = store::instance(&pool, id).await.unwrap().unwrap();
    let api = connections::api(&reqwest::Client::new(), Some(&s.app.seal_key), &i).unwrap();
    assert!(
        api.is_none(),
        "no admin API for a server without moderation"
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_token_collected_after_a_revoke_stores_nothing(pool: PgPool) {
    let s = setup(&pool, true).await;
    let id = server(&s, "lyon.social", "sub_a").await;
    // Generation 1 is being made; the customer revokes before it is collected.
    connections::revoke(&pool, owner(&s), OrgId(s.org), id)
        .await
        .unwrap();
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!((t.generation, t.revoked), (2, true));
    assert!(!made(&s, id, 1).await, "not the current generation");
    assert!(!usable(&pool, id).await, "the revoke stays");
    assert!(store::fetchable(&pool).await.unwrap().is_empty());
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_plan_change_never_undoes_the_customers_revoke(pool: PgPool) {
    let s = setup(&pool, true).await;
    let id = server(&s, "lyon.social", "sub_a").await;
    assert!(made(&s, id, 1).await);
    connections::revoke(&pool, owner(&s), OrgId(s.org), id)
        .await
        .unwrap();
    // Revoked on the cluster (generation 2 done), then the plan changes to another one
    // with moderation: nothing is asked.
    sqlx::query("UPDATE instances SET moderator_token_done_generation = 2 WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    follow(&pool, "sub_a", "organization").await;
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!((t.generation, t.revoked), (2, true), "no new ask");
    // The customer asks again: a new token.
    let g = connections::ask_for_token(&pool, owner(&s), OrgId(s.org), id)
        .await
        .unwrap();
    assert_eq!(g, 3);
    // A move away and back to a moderated plan (not the customer's revoke) asks again.
    assert!(made(&s, id, 3).await);
    sqlx::query("UPDATE plan_moderation SET included = false WHERE plan_code = 'community'")
        .execute(&pool)
        .await
        .unwrap();
    follow(&pool, "sub_a", "community").await;
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!((t.generation, t.revoked), (4, true));
    follow(&pool, "sub_a", "organization").await;
    let t = fleet::moderator_token(&pool, id).await.unwrap().unwrap();
    assert_eq!((t.generation, t.revoked), (5, false));
}
