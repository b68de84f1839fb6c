//! One recompute covers a subscription's other events: their queued jobs are done with it,
//! except those with work of their own (an invoice to keep, a trial's end to email) and
//! those that failed (they run again to record their own outcome).
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common::{self, history, SUB};
use herd_billing::jobs::StripeEvent;
use herd_billing::process::process_event;
use herd_billing::{ingest, Ingested};
use herd_jobs::Job;
use herd_store::billing;
use herd_testkit::stripe;
use secrecy::SecretString;
use sqlx::PgPool;

const SECRET: &str = "whsec_coalescing_test";

async fn deliver(pool: &PgPool, event: &serde_json::Value) {
    let body = event.to_string();
    let now = stripe::now();
    let header = stripe::signature(SECRET, now, body.as_bytes());
    let secrets = [SecretString::from(SECRET.to_owned())];
    let got = ingest(pool, body.as_bytes(), Some(&header), &secrets, now)
        .await
        .unwrap();
    assert_eq!(got, Ingested::Stored);
}

async fn job_state(pool: &PgPool, event: &str) -> String {
    sqlx::query_scalar("SELECT state FROM jobs WHERE kind = $1 AND dedupe_key = $2")
        .bind(StripeEvent::KIND)
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn event_state(pool: &PgPool, event: &str) -> String {
    billing::event(pool, event).await.unwrap().unwrap().state
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_recompute_completes_the_queued_jobs_of_the_events_it_covers(pool: PgPool) {
    common::org_and_order(&pool).await;
    let mut events = history();
    let trial = stripe::event(
        "evt_11trial",
        "customer.subscription.trial_will_end",
        common::T0 + 2,
        events[3]["data"]["object"].clone(),
    );
    events.push(trial);
    for e in &events {
        deliver(&pool, e).await;
    }
    // An event whose earlier run failed: its job is queued again for a retry.
    billing::mark_event(
        &pool,
        "evt_08active",
        "failed",
        Some("the database went away"),
    )
    .await
    .unwrap();

    // The last event's job runs (here called directly; its own job stays queued).
    process_event(&pool, "evt_10deleted", None).await.unwrap();

    for covered in [
        "evt_01checkout",
        "evt_02created",
        "evt_04active",
        "evt_06pastdue",
        "evt_09cancel",
    ] {
        assert_eq!(job_state(&pool, covered).await, "done", "{covered}");
        assert_eq!(event_state(&pool, covered).await, "processed", "{covered}");
    }
    // Work of their own: the invoices are kept by their jobs, the trial's end is emailed.
    for own in ["evt_03paid", "evt_05failed", "evt_07repaid", "evt_11trial"] {
        assert_eq!(job_state(&pool, own).await, "queued", "{own}");
    }
    assert_eq!(job_state(&pool, "evt_08active").await, "queued");
    assert_eq!(event_state(&pool, "evt_08active").await, "failed");
    let invoices: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_invoices")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(invoices, 0, "no invoice kept before its own job runs");

    // The rest run: the invoices are kept, the trial's email is queued, the failed event
    // is processed, and nothing is left.
    let mailer = herd_mail::Mailer::outbox(
        &std::env::temp_dir().join(format!("herd-coalescing-{}", std::process::id())),
        "Herd <billing@herd.test>",
    )
    .unwrap();
    herd_testkit::jobs::run_jobs(&pool, &mailer).await;
    let invoices: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_invoices")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(invoices, 2, "in_first and in_second");
    assert_eq!(event_state(&pool, "evt_08active").await, "processed");
    let trial_jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'billing.trial_ending'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(trial_jobs, 1);
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'stripe.event' AND state <> 'done'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(open, 0);
    let s = billing::subscription(&pool, SUB).await.unwrap().unwrap();
    assert_eq!(s.status, "canceled");
}
