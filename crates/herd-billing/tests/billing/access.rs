//! The access policy applied to a subscription over time, against a real PostgreSQL and a
//! local Stripe API serving Stripe's fixtures: every transition recorded once and emailed
//! once to owners and billing members, operators' grace extension and paused clock,
//! recovery, suspensions and deletions confirmed with Stripe first, and deletion final.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_billing::access::{self, card_subject};
use herd_billing::ingest;
use herd_billing::stripe_api::StripeApi;
use herd_mail::{read_outbox, Mailer};
use herd_store::access as store;
use herd_testkit::stripe::{self, FakeStripe};
use secrecy::SecretString;
use serde_json::json;
use sqlx::PgPool;
use std::path::PathBuf;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const SECRET: &str = "whsec_access_test";
const SUB: &str = "sub_Access1";

struct World {
    pool: PgPool,
    outbox: PathBuf,
    mailer: Mailer,
    /// Stripe's API, which the policy asks before a suspension or deletion.
    fake: FakeStripe,
    api: StripeApi,
}

impl World {
    async fn new(pool: PgPool) -> World {
        let outbox = std::env::temp_dir().join(format!("herd-access-{}", Uuid::now_v7()));
        let mailer = Mailer::outbox(&outbox, "Herd <billing@herd.test>").unwrap();
        let org = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO organizations (id, slug, name) VALUES ($1, 'nantes', 'Ville de Nantes')",
        )
        .bind(org)
        .execute(&pool)
        .await
        .unwrap();
        for (email, role) in [
            ("owner@nantes.example", "owner"),
            ("compta@nantes.example", "billing"),
            ("agent@nantes.example", "member"),
        ] {
            let user = Uuid::now_v7();
            sqlx::query("INSERT INTO users (id, email, display_name, password_hash) VALUES ($1, $2, $2, 'x')")
                .bind(user)
                .bind(email)
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, $3)")
                .bind(org)
                .bind(user)
                .bind(role)
                .execute(&pool)
                .await
                .unwrap();
        }
        let fake = FakeStripe::start().await;
        let api = stripe::api(&fake);
        let w = World {
            pool,
            outbox,
            mailer,
            fake,
            api,
        };
        // The subscription started three weeks ago.
        w.status("active", 21 * 86_400, org).await;
        w
    }

    /// Stripe's API says the subscription is in `status`, its latest invoice in
    /// `invoice_status` (whether or not a webhook said so).
    fn stripe_says(&self, status: &str, invoice_status: &str, org: Uuid) {
        self.fake.set_subscription(
            stripe::subscription(
                SUB,
                "cus_Access1",
                status,
                "price_x",
                stripe::now() + 30 * 86_400,
                json!({ "herd_org_id": org.to_string() }),
            ),
            Some(stripe::invoice(
                "in_Access1",
                "cus_Access1",
                SUB,
                invoice_status,
            )),
        );
    }

    /// Stripe reports the subscription in `status`, `ago` seconds ago (by webhook, and
    /// from then on in its API).
    async fn status(&self, status: &str, ago: i64, org: Uuid) {
        let paid = matches!(status, "active" | "trialing" | "canceled");
        self.stripe_says(status, if paid { "paid" } else { "open" }, org);
        self.webhook(status, ago, org).await;
    }

    /// Only the webhook: Stripe reports `status`, `ago` seconds ago.
    async fn webhook(&self, status: &str, ago: i64, org: Uuid) {
        let created = stripe::now() - ago;
        let id = format!("evt_access_{status}_{created}");
        let body = stripe::event(
            &id,
            "customer.subscription.updated",
            created,
            stripe::subscription(
                SUB,
                "cus_Access1",
                status,
                "price_x",
                created + 30 * 86_400,
                json!({ "herd_org_id": org.to_string() }),
            ),
        )
        .to_string();
        let now = stripe::now();
        let header = stripe::signature(SECRET, now, body.as_bytes());
        ingest(
            &self.pool,
            body.as_bytes(),
            Some(&header),
            &[SecretString::from(SECRET.to_owned())],
            now,
        )
        .await
        .unwrap();
        self.work().await;
    }

    /// Stripe delivers stored event `id` again (the same event, signed anew), and the
    /// worker runs.
    async fn redeliver(&self, id: &str) {
        let body: String = sqlx::query_scalar("SELECT payload FROM stripe_events WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        let now = stripe::now();
        let header = stripe::signature(SECRET, now, body.as_bytes());
        let outcome = ingest(
            &self.pool,
            body.as_bytes(),
            Some(&header),
            &[SecretString::from(SECRET.to_owned())],
            now,
        )
        .await
        .unwrap();
        assert_eq!(outcome, herd_billing::Ingested::Duplicate);
        self.work().await;
    }

    async fn org(&self) -> Uuid {
        sqlx::query_scalar("SELECT id FROM organizations WHERE slug = 'nantes'")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn work(&self) {
        herd_testkit::jobs::run_jobs_with_stripe(&self.pool, &self.mailer, &self.api).await;
    }

    /// The policy's view `days` from now (as the periodic sweep would see it then).
    async fn at(&self, days: i64) {
        let now = OffsetDateTime::now_utc() + Duration::days(days) + Duration::minutes(1);
        access::sweep(&self.pool, now, Some(&self.api))
            .await
            .unwrap();
        self.work().await;
    }

    /// Stripe's API calls to read the subscription so far.
    fn reads(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == format!("/v1/subscriptions/{SUB}"))
            .count()
    }

    async fn state(&self) -> String {
        store::get(&self.pool, &card_subject(SUB))
            .await
            .unwrap()
            .unwrap()
            .state
    }

    fn mails(&self) -> Vec<herd_mail::OutboxMessage> {
        read_outbox(&self.outbox).unwrap_or_default()
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_failed_renewal_goes_through_every_step_with_an_email_each(pool: PgPool) {
    let w = World::new(pool).await;
    assert_eq!(w.state().await, "running");
    let org = w.org().await;

    w.status("past_due", 0, org).await;
    assert_eq!(w.state().await, "grace");
    let a = store::get(&w.pool, &card_subject(SUB))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.next_state.as_deref(), Some("suspended"));
    let in_a_week = OffsetDateTime::now_utc() + Duration::days(7);
    assert!((a.next_at.unwrap() - in_a_week).abs() < Duration::minutes(5));

    w.at(6).await;
    assert_eq!(w.state().await, "grace", "not before the grace period ends");
    w.at(7).await;
    assert_eq!(w.state().await, "suspended");
    w.at(30).await;
    assert_eq!(w.state().await, "scheduled_for_deletion");
    w.at(37).await;
    assert_eq!(w.state().await, "deleted");
    w.at(40).await; // nothing more happens

    let path: Vec<(String, String)> = store::transitions_of(&w.pool, &card_subject(SUB))
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.from_state, t.to_state))
        .collect();
    let step = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        path,
        [
            step("not_provisioned", "running"),
            step("running", "grace"),
            step("grace", "suspended"),
            step("suspended", "scheduled_for_deletion"),
            step("scheduled_for_deletion", "deleted"),
        ]
    );
    // Each step emailed once to the owner and the billing member, never to the member.
    let mails = w.mails();
    assert_eq!(
        mails.len(),
        5 * 2,
        "{:#?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    assert!(mails.iter().all(|m| m.to != "agent@nantes.example"));
    let subjects: Vec<&str> = mails
        .iter()
        .filter(|m| m.to == "owner@nantes.example")
        .map(|m| m.subject.as_str())
        .collect();
    assert!(
        subjects.contains(&"Payment problem for Ville de Nantes"),
        "{subjects:?}"
    );
    assert!(
        subjects.contains(&"Ville de Nantes's server is suspended"),
        "{subjects:?}"
    );
    let suspended = mails
        .iter()
        .find(|m| m.subject.ends_with("is suspended"))
        .unwrap();
    assert!(suspended.body.contains("export"), "{}", suspended.body);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn paying_again_restores_the_server(pool: PgPool) {
    let w = World::new(pool).await;
    let org = w.org().await;
    w.status("past_due", 8 * 86_400, org).await;
    assert_eq!(
        w.state().await,
        "suspended",
        "the renewal failed 8 days ago"
    );
    w.status("active", 0, org).await;
    assert_eq!(w.state().await, "running");
    assert!(w
        .mails()
        .iter()
        .any(|m| m.subject.contains("runs normally again")));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn operators_extend_grace_and_pause_the_clock(pool: PgPool) {
    let w = World::new(pool).await;
    let org = w.org().await;
    w.status("past_due", 0, org).await;
    let subject = card_subject(SUB);

    // Grace extended to 20 days.
    let mut conn = w.pool.acquire().await.unwrap();
    store::set_grace_until(
        &mut conn,
        &subject,
        OffsetDateTime::now_utc() + Duration::days(20),
    )
    .await
    .unwrap();
    w.at(10).await;
    assert_eq!(w.state().await, "grace");
    w.at(20).await;
    let a = store::get(&w.pool, &subject).await.unwrap().unwrap();
    assert_eq!(w.state().await, "suspended", "{a:?}");

    // Paused while suspended (on day 20 of this simulated time): no deletion, however long.
    store::set_paused(&mut conn, &subject, true).await.unwrap();
    sqlx::query("UPDATE tenant_access SET paused_since = now() + interval '20 days'")
        .execute(&w.pool)
        .await
        .unwrap();
    w.at(200).await;
    assert_eq!(w.state().await, "suspended");
    store::set_paused(&mut conn, &subject, false).await.unwrap();
    let a = store::get(&w.pool, &subject).await.unwrap().unwrap();
    assert!(a.paused_since.is_none());
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_end_of_a_trial_is_announced(pool: PgPool) {
    let w = World::new(pool).await;
    let org = w.org().await;
    let ends = stripe::now() + 3 * 86_400;
    let mut sub = stripe::subscription(
        SUB,
        "cus_Access1",
        "trialing",
        "price_x",
        ends,
        json!({ "herd_org_id": org.to_string() }),
    );
    sub["trial_end"] = json!(ends);
    let body = stripe::event(
        "evt_access_trial",
        "customer.subscription.trial_will_end",
        stripe::now(),
        sub,
    )
    .to_string();
    let trial_mails = || {
        w.mails()
            .into_iter()
            .filter(|m| m.subject.contains("trial ends on"))
            .collect::<Vec<_>>()
    };
    // Delivered, processed; then Stripe delivers the same event again (the same id, as
    // when our answer did not reach it), and an operator has it processed again.
    for delivery in 0..2 {
        let now = stripe::now();
        let stored = ingest(
            &w.pool,
            body.as_bytes(),
            Some(&stripe::signature(SECRET, now, body.as_bytes())),
            &[SecretString::from(SECRET.to_owned())],
            now,
        )
        .await
        .unwrap();
        assert_eq!(stored == herd_billing::Ingested::Stored, delivery == 0);
        w.work().await;
        assert_eq!(trial_mails().len(), 2, "delivery {delivery}");
    }
    assert!(
        herd_store::jobs::requeue_by_key(&w.pool, "evt_access_trial")
            .await
            .unwrap()
    );
    w.work().await;
    let trial = trial_mails();
    assert_eq!(trial.len(), 2, "owner and billing member, once");
    assert_eq!(
        trial
            .iter()
            .filter(|m| m.to == "owner@nantes.example")
            .count(),
        1
    );
    assert!(trial[0].body.contains("payment method"));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_lost_active_webhook_never_suspends_or_deletes_a_paying_customer(pool: PgPool) {
    let w = World::new(pool).await;
    let org = w.org().await;
    w.status("past_due", 0, org).await;
    assert_eq!(w.state().await, "grace");
    // The customer pays; Stripe's `active` webhook never arrives.
    w.stripe_says("active", "paid", org);
    w.at(8).await;
    assert_eq!(w.state().await, "running", "Stripe says it is paid");
    assert_eq!(w.reads(), 1, "Stripe was asked before the suspension");
    let s = herd_store::billing::subscription(&w.pool, SUB)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.status, "active", "what Stripe said is kept");
    assert_eq!(s.payment_problem, None);
    w.at(40).await;
    assert_eq!(w.state().await, "running", "and never deleted");
    let to: Vec<String> = store::transitions_of(&w.pool, &card_subject(SUB))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.to_state)
        .collect();
    assert!(
        !to.iter()
            .any(|s| s == "suspended" || s == "deleted" || s == "scheduled_for_deletion"),
        "{to:?}"
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_suspension_waits_while_stripe_cannot_confirm_it(pool: PgPool) {
    let w = World::new(pool).await;
    let org = w.org().await;
    w.status("past_due", 0, org).await;
    // Without Stripe's API nothing confirms the suspension: held back.
    let now = OffsetDateTime::now_utc() + Duration::days(8);
    access::sweep(&w.pool, now, None).await.unwrap();
    assert_eq!(w.state().await, "grace");
    // Stripe's API fails (an unknown subscription there): held back too.
    let gone = w.fake.object(SUB).unwrap();
    w.fake.put(json!({ "id": SUB, "object": "deleted" }));
    access::sweep(&w.pool, now, Some(&w.api)).await.unwrap();
    assert_eq!(w.state().await, "grace");
    // Stripe confirms: suspended.
    w.fake.put(gone);
    w.at(8).await;
    assert_eq!(w.state().await, "suspended");
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn deletion_is_final_and_a_later_payment_is_told_to_order_again(pool: PgPool) {
    let w = World::new(pool).await;
    let org = w.org().await;
    w.status("past_due", 0, org).await;
    w.at(36).await;
    assert!(
        w.fake.requests().iter().all(|r| r.method != "DELETE"),
        "nothing cancelled before the deletion"
    );
    w.at(37).await;
    assert_eq!(w.state().await, "deleted");
    // Stripe stops billing what was deleted: the subscription is cancelled, once.
    let sub = w.fake.object(SUB).unwrap();
    assert_eq!(sub["status"], "canceled", "{sub}");
    let cancels: Vec<_> = w
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(cancels.len(), 1, "{cancels:?}");
    assert!(cancels[0].path.ends_with(SUB));
    // The customer pays the open invoice after the deletion; Stripe delivers that event
    // twice (the same id), and an operator has it processed again.
    w.status("active", 0, org).await;
    let paid: String = sqlx::query_scalar(
        "SELECT id FROM stripe_events WHERE payload::jsonb #>> '{data,object,status}' = 'active'
         ORDER BY received_at DESC LIMIT 1",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    w.redeliver(&paid).await;
    assert!(herd_store::jobs::requeue_by_key(&w.pool, &paid)
        .await
        .unwrap());
    w.work().await;
    w.at(38).await;
    assert_eq!(
        w.state().await,
        "deleted",
        "nothing brings a deleted tenant back"
    );
    let a = store::get(&w.pool, &card_subject(SUB))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.next_state, None);
    let told: Vec<_> = w
        .mails()
        .into_iter()
        .filter(|m| m.subject.contains("deleted before the payment arrived"))
        .collect();
    assert_eq!(told.len(), 2, "owner and billing member, once");
    assert!(told[0].body.contains("new order"), "{}", told[0].body);
    assert!(!w
        .mails()
        .iter()
        .any(|m| m.subject.contains("runs normally again")));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_canceled_subscription_is_never_told_that_paying_brings_it_back(pool: PgPool) {
    let w = World::new(pool).await;
    let org = w.org().await;
    w.status("canceled", 0, org).await;
    w.at(1).await;
    assert_eq!(w.state().await, "suspended");
    w.at(24).await;
    assert_eq!(w.state().await, "scheduled_for_deletion");
    let notices: Vec<_> = w
        .mails()
        .into_iter()
        .filter(|m| m.subject.contains("suspended") || m.subject.contains("will be deleted"))
        .collect();
    assert_eq!(notices.len(), 4, "two notices, to two people");
    for m in &notices {
        assert!(!m.body.contains("brings it back"), "{}", m.body);
        assert!(m.body.contains("new order"), "{}", m.body);
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn operators_overrides_end_with_the_episode_they_were_granted_for(pool: PgPool) {
    let w = World::new(pool).await;
    let org = w.org().await;
    let subject = card_subject(SUB);
    // Granted while all is well (a late purchase order announced): kept for the episode.
    w.status("active", 4, org).await;
    let mut conn = w.pool.acquire().await.unwrap();
    store::set_grace_until(
        &mut conn,
        &subject,
        OffsetDateTime::now_utc() + Duration::days(20),
    )
    .await
    .unwrap();
    drop(conn);
    w.status("active", 3, org).await;
    let a = store::get(&w.pool, &subject).await.unwrap().unwrap();
    assert!(a.grace_until.is_some(), "not wiped while nothing was wrong");
    w.status("past_due", 2, org).await;
    let mut conn = w.pool.acquire().await.unwrap();
    store::set_grace_until(
        &mut conn,
        &subject,
        OffsetDateTime::now_utc() + Duration::days(20),
    )
    .await
    .unwrap();
    store::set_paused(&mut conn, &subject, true).await.unwrap();
    // Paid: the episode is over, and so are its overrides.
    w.status("active", 1, org).await;
    assert_eq!(w.state().await, "running");
    let a = store::get(&w.pool, &subject).await.unwrap().unwrap();
    assert_eq!(
        (a.grace_until, a.paused_since, a.paused_before_s),
        (None, None, 0)
    );
    // The next failed renewal gets the policy's own seven days.
    w.status("past_due", 0, org).await;
    w.at(8).await;
    assert_eq!(w.state().await, "suspended");
}
