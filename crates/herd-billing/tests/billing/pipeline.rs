//! From delivery to subscription against a real PostgreSQL: stored once however often and
//! however concurrently it is delivered, processed from the queue exactly once in effect,
//! in any order, surviving a worker that dies mid-job.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use common::{history, scrambled, ORDER, ORG, SUB};
use herd_billing::jobs::StripeEvent;
use herd_billing::{ingest, Ingested};
use herd_domain::JobState;
use herd_domain::OrgId;
use herd_jobs::Job;
use herd_store::billing;
use herd_testkit::stripe;
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

const SECRET: &str = "whsec_pipeline_test";

/// A mailer writing to a scratch outbox.
pub(crate) fn mailer() -> herd_mail::Mailer {
    let dir = std::env::temp_dir().join(format!("herd-billing-outbox-{}", std::process::id()));
    herd_mail::Mailer::outbox(&dir, "Herd <billing@herd.test>").unwrap()
}

fn secrets() -> Vec<SecretString> {
    vec![SecretString::from(SECRET.to_owned())]
}

/// Delivers `event` as Stripe would (signed now) and returns the outcome.
pub(crate) async fn deliver(pool: &PgPool, event: &serde_json::Value) -> Ingested {
    let body = event.to_string();
    let now = stripe::now();
    let header = stripe::signature(SECRET, now, body.as_bytes());
    ingest(pool, body.as_bytes(), Some(&header), &secrets(), now)
        .await
        .unwrap()
}

async fn drain(pool: &PgPool) -> usize {
    herd_testkit::jobs::run_jobs(pool, &mailer())
        .await
        .claimed()
}

/// A runner of billing's jobs only (the server an order starts is another test's
/// business), with the fast test settings and `concurrency` slots.
pub(crate) fn runner(pool: &PgPool, concurrency: usize) -> herd_jobs::Runner {
    let mut registry = herd_jobs::Registry::new();
    herd_billing::worker::register(&mut registry, pool, &mailer());
    herd_jobs::Runner::new(
        pool.clone(),
        registry,
        herd_jobs::Settings {
            concurrency,
            ..herd_testkit::jobs::fast_settings()
        },
    )
}

/// Runs what is due with one runner; returns how many jobs it claimed.
async fn run_due(pool: &PgPool) -> usize {
    runner(pool, 10).drain().await.unwrap().claimed()
}

pub(crate) async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn in_order_delivery_fulfils_the_order_and_tracks_the_subscription(pool: PgPool) {
    common::org_and_order(&pool).await;
    for (i, e) in history().iter().enumerate() {
        assert_eq!(deliver(&pool, e).await, Ingested::Stored);
        drain(&pool).await;
        if i == 3 {
            let s = billing::subscription(&pool, SUB).await.unwrap().unwrap();
            assert_eq!(s.status, "active");
            assert_eq!(s.org_id.map(|o| o.to_string()).as_deref(), Some(ORG));
            let o = billing::order(&pool, Uuid::parse_str(ORDER).unwrap())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(o.state, "fulfilled");
            assert_eq!(o.stripe_subscription_id.as_deref(), Some(SUB));
        }
    }
    let s = billing::subscription(&pool, SUB).await.unwrap().unwrap();
    assert_eq!(s.status, "canceled");
    assert_eq!(
        billing::customer_of(&pool, OrgId(Uuid::parse_str(ORG).unwrap()))
            .await
            .unwrap()
            .as_deref(),
        Some(common::CUSTOMER),
        "the customer is linked to the organization"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM stripe_events WHERE state = 'processed'"
        )
        .await,
        10
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE kind = 'stripe.event' AND state = 'done'"
        )
        .await,
        10
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn random_order_and_redeliveries_reach_the_same_row(pool: PgPool) {
    common::org_and_order(&pool).await;
    for e in history() {
        deliver(&pool, &e).await;
    }
    drain(&pool).await;
    let expected = billing::subscription(&pool, SUB).await.unwrap().unwrap();

    for seed in [3u64, 17, 2026] {
        sqlx::query("TRUNCATE stripe_events, jobs, subscriptions, billing_customers, stripe_invoices, tenant_access CASCADE")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE orders SET state = 'pending', fulfilled_at = NULL, stripe_subscription_id = NULL")
            .execute(&pool)
            .await
            .unwrap();
        let delivered = scrambled(&history(), seed);
        let mut duplicates = 0;
        for (i, e) in delivered.iter().enumerate() {
            if deliver(&pool, e).await == Ingested::Duplicate {
                duplicates += 1;
            }
            // The worker runs now and then, between deliveries.
            if i % 3 == 0 {
                drain(&pool).await;
            }
        }
        drain(&pool).await;
        assert_eq!(duplicates, delivered.len() - 10, "seed {seed}");
        let got = billing::subscription(&pool, SUB).await.unwrap().unwrap();
        assert_eq!(got, expected, "seed {seed}");
        assert_eq!(count(&pool, "SELECT count(*) FROM subscriptions").await, 1);
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM jobs WHERE kind = 'stripe.event'"
            )
            .await,
            10,
            "one job per event"
        );
        let o = billing::order(&pool, Uuid::parse_str(ORDER).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.state, "fulfilled", "seed {seed}");
        let (status, number): (String, String) = sqlx::query_as(
            "SELECT status, number FROM stripe_invoices WHERE stripe_invoice_id = 'in_second'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (status.as_str(), number.as_str()),
            ("paid", "INV-in_second"),
            "seed {seed}"
        );
    }
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_same_event_on_many_connections_at_once_is_stored_and_processed_once(pool: PgPool) {
    common::org_and_order(&pool).await;
    let event = history()[0].clone();
    let body = event.to_string();
    let now = stripe::now();
    let header = stripe::signature(SECRET, now, body.as_bytes());
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (pool, body, header) = (pool.clone(), body.clone(), header.clone());
        tasks.push(tokio::spawn(async move {
            ingest(&pool, body.as_bytes(), Some(&header), &secrets(), now).await
        }));
    }
    let mut stored = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == Ingested::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM stripe_events").await, 1);
    assert_eq!(
        count(&pool, "SELECT deliveries::bigint FROM stripe_events").await,
        32
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE kind = 'stripe.event'"
        )
        .await,
        1
    );

    // Four workers at once: the job is claimed once.
    let mut workers = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        workers.push(tokio::spawn(async move { run_due(&pool).await }));
    }
    let mut claimed = 0;
    for w in workers {
        claimed += w.await.unwrap();
    }
    assert_eq!(claimed, 1);
    assert_eq!(
        count(
            &pool,
            "SELECT attempts::bigint FROM jobs WHERE kind = 'stripe.event'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM orders WHERE state = 'fulfilled'"
        )
        .await,
        1
    );
    // One server for the order, with its first job (lyon.social is the customer's own
    // domain: proving it comes first), in the same transaction.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM instances WHERE domain = 'lyon.social'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM jobs WHERE kind = 'fleet.verify_domain'"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_worker_that_dies_mid_job_leaves_it_to_the_next(pool: PgPool) {
    common::org_and_order(&pool).await;
    deliver(&pool, &history()[0]).await;
    // A worker claims the job with a short lease, then dies without a word.
    let claimed = herd_store::jobs::claim(
        &pool,
        &[StripeEvent::KIND],
        10,
        time::Duration::milliseconds(200),
    )
    .await
    .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(run_due(&pool).await, 0, "still leased");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The expired lease counts as a failed attempt, retried after its (short) backoff.
    let mut taken = 0;
    for _ in 0..100 {
        taken += run_due(&pool).await;
        if taken > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(taken, 1, "taken over");
    assert_eq!(run_due(&pool).await, 0, "and done");
    assert_eq!(
        count(
            &pool,
            "SELECT attempts::bigint FROM jobs WHERE kind = 'stripe.event'"
        )
        .await,
        2,
        "the dead worker's run counted"
    );
    let e = billing::event(&pool, "evt_01checkout")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.state, "processed");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM orders WHERE state = 'fulfilled'"
        )
        .await,
        1
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_failing_event_is_retried_then_marked_failed_and_can_be_reprocessed(pool: PgPool) {
    // An event stored with an unreadable payload (as if the schema had changed under it).
    let mut conn = pool.acquire().await.unwrap();
    billing::insert_event(
        &mut conn,
        &billing::NewEvent {
            id: "evt_broken",
            type_: "invoice.paid",
            livemode: false,
            created: time::OffsetDateTime::now_utc(),
            payload: "{\"not\": \"an event\"}",
            subscription_id: Some("sub_x"),
            customer_id: None,
        },
    )
    .await
    .unwrap();
    herd_store::jobs::enqueue(
        &mut *conn,
        herd_store::jobs::NewJob {
            kind: StripeEvent::KIND,
            payload: serde_json::json!({ "event_id": "evt_broken" }),
            dedupe_key: Some("evt_broken"),
            group_key: None,
            max_attempts: 2,
            run_at: None,
        },
    )
    .await
    .unwrap();
    let production = herd_testkit::jobs::runner(&pool, &mailer());
    assert_eq!(production.drain().await.unwrap().retrying, 1);
    let e = billing::event(&pool, "evt_broken").await.unwrap().unwrap();
    assert_eq!(e.state, "failed");
    assert!(e.last_error.unwrap().contains("cannot be read"));
    let job = herd_store::jobs::by_key(&pool, "evt_broken")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Queued, "retried later");
    assert!(job.run_at > time::OffsetDateTime::now_utc());
    // Second attempt (made due now): out of attempts, failed for good.
    sqlx::query("UPDATE jobs SET run_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(production.drain().await.unwrap().dead, 1);
    let job = herd_store::jobs::by_key(&pool, "evt_broken")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, JobState::Dead);
    assert!(job.last_error.unwrap().contains("cannot be read"));
    // An operator's reprocess puts it back.
    assert!(herd_store::jobs::requeue_by_key(&pool, "evt_broken")
        .await
        .unwrap());
    assert_eq!(production.drain().await.unwrap().claimed(), 1);
}
