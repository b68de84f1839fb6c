//! Herd's own moderator account on a customer's server (issue 13), from the server's
//! moderation page: the owner asks Herd for a new token (confirmed, CSRF, audited), the
//! page says whether Herd is making it, failed, or which token is in use (made by Herd or
//! pasted), a member without the role is refused, another organization gets 404, and the
//! token is in no response.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{Client, Resp, TestApp};
use sqlx::PgPool;
use uuid::Uuid;

const TOKEN: &str = "tok_MADE_BY_HERD_0a1b2c3d4e5f";
const PASTED: &str = "tok_PASTED_by_owner_9z8y7x";

/// Lyon's server on the institution plan (moderation included).
async fn server(pool: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email, url) SELECT $1, id, 'mastodon', 'v4.7.6', 'institution', 'lyon-social', 'lyon.social', 'owner', 'owner@example.test', 'https://lyon.social' FROM organizations WHERE slug = 'lyon'")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    id
}

async fn generation(pool: &PgPool, id: Uuid) -> i32 {
    sqlx::query_scalar("SELECT moderator_token_generation FROM instances WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every response a test saw, to check none shows a token.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn keep(&mut self, r: Resp) -> Resp {
        self.0.push(r.body.clone());
        r
    }
    async fn get(&mut self, c: &Client, path: &str) -> Resp {
        let r = c.get(path).await;
        self.keep(r)
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_owner_has_herd_make_the_moderator_token_and_sees_which_is_in_use(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let mut seen = Seen::default();
    let olga = app
        .signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    let id = server(&pool).await;
    let page = format!("/o/lyon/moderation/{id}");
    let ask = format!("{page}/new-token");

    let p = seen.get(&olga, &page).await;
    p.assert_status(200)
        .assert_contains("Herd has made no moderator token in use")
        .assert_contains(&format!("href=\"{ask}\""));
    // The confirmation, then the form without its CSRF token is refused.
    let c = seen.get(&olga, &ask).await;
    c.assert_status(200)
        .assert_contains("Have Herd make a new moderator token for lyon.social?");
    let (missing, posts) = c.forms_without_csrf();
    assert!(missing.is_empty() && posts >= 1, "{missing:?}");
    let r = olga.post_raw(&ask, &[]).await;
    seen.keep(r).assert_status(403);
    assert_eq!(generation(&pool, id).await, 0);

    // Asked: generation 1, audited, in the history, and the page says Herd is making it.
    let r = olga.post(&ask, &[]).await;
    seen.keep(r).assert_redirect(&page);
    assert_eq!(generation(&pool, id).await, 1);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'moderation.connection.token_asked' AND actor_email = 'olga@lyon.example' AND target = $1",
    )
    .bind(id.to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
    let p = seen.get(&olga, &page).await;
    p.assert_contains("Herd is making the moderator account @herd_moderation");
    assert!(!p.body.contains(&format!("href=\"{ask}\"")));
    // Asking again meanwhile is refused with a message, and changes nothing.
    seen.get(&olga, &ask).await;
    let r = olga.post(&ask, &[]).await;
    seen.keep(r)
        .assert_status(422)
        .assert_contains("already making");
    assert_eq!(generation(&pool, id).await, 1);

    // The cluster made it and the orchestrator collected it.
    sqlx::query("UPDATE instances SET moderator_token_done_generation = 1 WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    herd_moderation::connections::store_made_token(&pool, &app.seal_key, id, 1, TOKEN)
        .await
        .unwrap();
    sqlx::query("UPDATE instances SET moderator_token_collected_generation = 1 WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    seen.get(&olga, &page)
        .await
        .assert_contains("In use: the token Herd made for its moderator account @herd_moderation");

    // The owner pastes one of their own: it is the one in use.
    seen.get(&olga, &page).await;
    let r = olga
        .post(
            &format!("{page}/connect"),
            &[("moderator_account", "ourmods"), ("token", PASTED)],
        )
        .await;
    seen.keep(r).assert_redirect(&page);
    seen.get(&olga, &page)
        .await
        .assert_contains("In use: the token you pasted");

    // Revoking asks the cluster to revoke Herd's tokens (generation 2, revoke only).
    seen.get(&olga, &page).await;
    let r = olga.post(&format!("{page}/revoke"), &[]).await;
    seen.keep(r).assert_redirect(&page);
    let (g, revoked): (i32, bool) = sqlx::query_as(
        "SELECT moderator_token_generation, moderator_token_revoked FROM instances WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((g, revoked), (2, true));

    // A failed Job: the page says so, without the operator's message.
    sqlx::query(r#"UPDATE instances SET moderator_token_generation = 3, moderator_token_revoked = false, moderator_token_failed_generation = 3, moderator_token_failure = 'Job failed: kubectl -n herd-lyon-social logs job/moderator-token-3', conditions = '[{"type": "ModeratorAccount", "status": "False", "reason": "JobFailed", "message": "Job failed: kubectl -n herd-lyon-social logs job/moderator-token-3"}]' WHERE id = $1"#)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let p = seen.get(&olga, &page).await;
    p.assert_contains("moderator account or its token failed")
        .assert_contains(&format!("href=\"{ask}\""));
    assert!(!p.body.contains("kubectl"));
    // Nor does the server's page (it is not a step of the install); the console shows it.
    let p = seen.get(&olga, &format!("/o/lyon/servers/{id}")).await;
    p.assert_status(200);
    assert!(!p.body.contains("moderator-token-3"));
    let ops = app.operator("ops@herd.test").await;
    seen.get(&ops, &format!("/operator/instances/{id}"))
        .await
        .assert_status(200)
        .assert_contains("kubectl -n herd-lyon-social logs job/moderator-token-3");

    // A GoToSocial server: the operator makes no account there, so Herd does not ask.
    let gts = Uuid::now_v7();
    sqlx::query("INSERT INTO instances (id, org_id, app, version, plan_code, slug, domain, owner_username, owner_email) SELECT $1, id, 'gotosocial', '0.20.0', 'institution', 'gts-lyon', 'gts.lyon.social', 'owner', 'owner@example.test' FROM organizations WHERE slug = 'lyon'")
        .bind(gts)
        .execute(&pool)
        .await
        .unwrap();
    let gts_page = format!("/o/lyon/moderation/{gts}");
    seen.get(&olga, &format!("{gts_page}/new-token")).await;
    let r = olga.post(&format!("{gts_page}/new-token"), &[]).await;
    seen.keep(r)
        .assert_status(422)
        .assert_contains("Mastodon servers only");
    assert_eq!(generation(&pool, gts).await, 0);

    for body in &seen.0 {
        assert!(!body.contains(TOKEN), "a response shows Herd's token");
        assert!(!body.contains(PASTED), "a response shows the pasted token");
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn only_owners_and_admins_of_the_servers_organization_may_ask(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    let id = server(&pool).await;
    let ask = format!("/o/lyon/moderation/{id}/new-token");

    // A member of Lyon without the capability.
    app.signed_up("Max", "max@lyon.example", None).await;
    app.join("lyon", "max@lyon.example", "member").await;
    let max = app.client();
    max.get("/login").await;
    max.post(
        "/login",
        &[
            ("email", "max@lyon.example"),
            ("password", herd_testkit::PASSWORD),
        ],
    )
    .await;
    max.get(&ask).await.assert_status(403);
    // With a valid CSRF token, so the refusal is the capability's, not the form's.
    max.get("/orgs").await;
    assert!(max.csrf().is_some(), "a page with a CSRF token");
    max.post(&ask, &[])
        .await
        .assert_status(403)
        .assert_contains("Not allowed");

    // Another organization's owner: not found, by either address.
    let eve = app
        .signed_up("Eve", "eve@other.example", Some("Other"))
        .await;
    eve.get(&ask).await.assert_status(404);
    let theirs = format!("/o/other/moderation/{id}/new-token");
    eve.get(&theirs).await.assert_status(404);
    eve.get("/orgs").await;
    eve.post(&theirs, &[]).await.assert_status(404);
    eve.post(&ask, &[]).await.assert_status(404);
    assert_eq!(generation(&pool, id).await, 0);
}

async fn set(pool: &PgPool, id: Uuid, sql: &str) {
    sqlx::query(&format!("UPDATE instances SET {sql} WHERE id = $1"))
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

async fn generation_revoked(pool: &PgPool, id: Uuid) -> (i32, bool) {
    sqlx::query_as(
        "SELECT moderator_token_generation, moderator_token_revoked FROM instances WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_failed_revocation_is_shown_and_can_be_asked_again(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let olga = app
        .signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    let id = server(&pool).await;
    let page = format!("/o/lyon/moderation/{id}");
    // Herd made token 1, then the owner revoked (generation 2) and that Job failed.
    set(&pool, id, "moderator_token_generation = 2, moderator_token_revoked = true, moderator_token_done_generation = 1, moderator_token_collected_generation = 1, moderator_token_failed_generation = 2, moderator_token_failure = 'Job failed'").await;
    let p = olga.get(&page).await;
    p.assert_status(200)
        .assert_contains("Revoking Herd&#39;s token on your server failed; try again")
        .assert_contains(&format!("action=\"{page}/revoke\""));
    let r = olga.post(&format!("{page}/revoke"), &[]).await;
    r.assert_redirect(&page);
    assert_eq!(generation_revoked(&pool, id).await, (3, true));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn pasting_while_herd_makes_its_token_is_refused_and_over_herds_revokes_it(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let olga = app
        .signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    let id = server(&pool).await;
    let page = format!("/o/lyon/moderation/{id}");
    olga.get(&format!("{page}/new-token")).await;
    olga.post(&format!("{page}/new-token"), &[])
        .await
        .assert_redirect(&page);
    olga.get(&page).await;
    let paste = [("moderator_account", "ourmods"), ("token", PASTED)];
    olga.post(&format!("{page}/connect"), &paste)
        .await
        .assert_status(422)
        .assert_contains("Herd is making its own moderator token");
    let i = herd_store::moderation::instance(&pool, id)
        .await
        .unwrap()
        .unwrap();
    assert!(i.connection.is_none(), "nothing stored");

    // Herd's token collected; pasting over it revokes Herd's on the server.
    set(&pool, id, "moderator_token_done_generation = 1").await;
    assert!(
        herd_moderation::connections::store_made_token(&pool, &app.seal_key, id, 1, TOKEN)
            .await
            .unwrap()
    );
    set(&pool, id, "moderator_token_collected_generation = 1").await;
    olga.get(&page).await;
    olga.post(&format!("{page}/connect"), &paste)
        .await
        .assert_redirect(&page);
    assert_eq!(generation_revoked(&pool, id).await, (2, true));
    olga.get(&page)
        .await
        .assert_contains("In use: the token you pasted");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_token_that_never_arrives_may_be_asked_again_a_few_times_a_day(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    let olga = app
        .signed_up("Olga", "olga@lyon.example", Some("Lyon"))
        .await;
    let id = server(&pool).await;
    let page = format!("/o/lyon/moderation/{id}");
    let ask = format!("{page}/new-token");
    olga.get(&ask).await;
    olga.post(&ask, &[]).await.assert_redirect(&page);
    // Its Secret was lost: an hour later the page offers to ask again, and it works.
    set(
        &pool,
        id,
        "moderator_token_asked_at = now() - interval '61 minutes'",
    )
    .await;
    olga.get(&page)
        .await
        .assert_contains("over an hour ago")
        .assert_contains(&format!("href=\"{ask}\""));
    olga.get(&ask).await;
    olga.post(&ask, &[]).await.assert_redirect(&page);
    assert_eq!(generation(&pool, id).await, 2);
    // Failing fast: at most 5 asks in 24 hours.
    for g in 2..=4 {
        set(
            &pool,
            id,
            &format!("moderator_token_failed_generation = {g}"),
        )
        .await;
        olga.get(&ask).await;
        olga.post(&ask, &[]).await.assert_redirect(&page);
    }
    assert_eq!(generation(&pool, id).await, 5);
    set(&pool, id, "moderator_token_failed_generation = 5").await;
    olga.get(&ask).await;
    olga.post(&ask, &[])
        .await
        .assert_status(422)
        .assert_contains("in the last 24 hours");
    assert_eq!(generation(&pool, id).await, 5);
}
