//! Fulfilment only when paid (Checkout Sessions paid by a delayed method such as SEPA
//! Direct Debit complete unpaid, and settle or fail days later), and the payment problem
//! following the subscription's latest invoice. Events built from Stripe's fixtures and
//! signed as Stripe signs them.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common::{org_and_order, CUSTOMER, DAY, ORDER, ORG, SUB, T0};
use herd_billing::ingest;
use herd_store::billing;
use herd_testkit::stripe;
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const SECRET: &str = "whsec_fulfilment_test";

async fn deliver(pool: &PgPool, event: &Value) {
    deliver_with(pool, event, None).await;
}

/// Delivers `event`, then runs the jobs it leads to (with Stripe's API when given).
async fn deliver_with(
    pool: &PgPool,
    event: &Value,
    stripe: Option<&herd_billing::stripe_api::StripeApi>,
) {
    let body = event.to_string();
    let now = stripe::now();
    let header = stripe::signature(SECRET, now, body.as_bytes());
    ingest(
        pool,
        body.as_bytes(),
        Some(&header),
        &[SecretString::from(SECRET.to_owned())],
        now,
    )
    .await
    .unwrap();
    let mailer = herd_mail::Mailer::outbox(&outbox(pool), "Herd <billing@herd.test>").unwrap();
    match stripe {
        Some(api) => {
            herd_testkit::jobs::run_jobs_with_stripe(pool, &mailer, api).await;
        }
        None => {
            herd_testkit::jobs::run_jobs(pool, &mailer).await;
        }
    }
}

/// The test's own outbox in this run (named after the process and the test's database),
/// so that another test's emails, or an earlier run's, are not counted as its own.
fn outbox(pool: &PgPool) -> std::path::PathBuf {
    let database = pool.connect_options().get_database().unwrap().to_owned();
    std::env::temp_dir().join(format!("herd-fulfilment-{}-{database}", std::process::id()))
}

async fn order(pool: &PgPool) -> billing::Order {
    billing::order(pool, Uuid::parse_str(ORDER).unwrap())
        .await
        .unwrap()
        .unwrap()
}

async fn servers(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM instances")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The Checkout Session of a delayed payment: complete, `payment_status` as given.
fn session(payment_status: &str) -> Value {
    let mut s = stripe::checkout_session("cs_test_sepa", CUSTOMER, SUB, ORDER, ORG);
    s["payment_status"] = json!(payment_status);
    s["payment_method_types"] = json!(["sepa_debit"]);
    s
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_completed_but_unpaid_checkout_waits_for_the_delayed_payment(pool: PgPool) {
    org_and_order(&pool).await;
    deliver(
        &pool,
        &stripe::event(
            "evt_sepa_1",
            "checkout.session.completed",
            T0,
            session("unpaid"),
        ),
    )
    .await;
    assert_eq!(order(&pool).await.state, "pending", "not paid yet");
    assert_eq!(servers(&pool).await, 0);
    deliver(
        &pool,
        &stripe::event(
            "evt_sepa_2",
            "checkout.session.async_payment_succeeded",
            T0 + 3 * DAY,
            session("paid"),
        ),
    )
    .await;
    let o = order(&pool).await;
    assert_eq!(o.state, "fulfilled");
    assert_eq!(o.stripe_subscription_id.as_deref(), Some(SUB));
    assert_eq!(servers(&pool).await, 1);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_failed_delayed_payment_makes_no_server_and_says_so(pool: PgPool) {
    org_and_order(&pool).await;
    // The subscription the Checkout made, as Stripe holds it.
    let fake = stripe::FakeStripe::start().await;
    fake.put(stripe::subscription(
        SUB,
        CUSTOMER,
        "incomplete",
        "price_x",
        T0 + 30 * DAY,
        json!({ "herd_org_id": ORG }),
    ));
    let api = stripe::api(&fake);
    deliver_with(
        &pool,
        &stripe::event(
            "evt_sepa_1",
            "checkout.session.completed",
            T0,
            session("unpaid"),
        ),
        Some(&api),
    )
    .await;
    deliver_with(
        &pool,
        &stripe::event(
            "evt_sepa_3",
            "checkout.session.async_payment_failed",
            T0 + 3 * DAY,
            session("unpaid"),
        ),
        Some(&api),
    )
    .await;
    // Stripe must not debit again or bill later for a server that was never made.
    assert_eq!(fake.object(SUB).unwrap()["status"], "canceled");
    let o = order(&pool).await;
    assert_eq!(o.state, "abandoned");
    assert!(o.problem.unwrap().contains("refused the payment"));
    assert_eq!(servers(&pool).await, 0);
    // Stripe delivers the failure again (the same event), and an operator has it
    // processed again: the owner is still told once.
    let failed = stripe::event(
        "evt_sepa_3",
        "checkout.session.async_payment_failed",
        T0 + 3 * DAY,
        session("unpaid"),
    );
    deliver_with(&pool, &failed, Some(&api)).await;
    assert!(herd_store::jobs::requeue_by_key(&pool, "evt_sepa_3")
        .await
        .unwrap());
    herd_testkit::jobs::run_jobs_with_stripe(
        &pool,
        &herd_mail::Mailer::outbox(&outbox(&pool), "Herd <billing@herd.test>").unwrap(),
        &api,
    )
    .await;
    let told: Vec<_> = herd_mail::read_outbox(&outbox(&pool))
        .unwrap()
        .into_iter()
        .filter(|m| m.subject == "The payment for lyon.social did not go through")
        .collect();
    assert_eq!(told.len(), 1, "the owner, once");
    assert!(
        told[0].body.contains("no server was made"),
        "{}",
        told[0].body
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_free_checkout_fulfils_at_once(pool: PgPool) {
    org_and_order(&pool).await;
    deliver(
        &pool,
        &stripe::event(
            "evt_trial_1",
            "checkout.session.completed",
            T0,
            session("no_payment_required"),
        ),
    )
    .await;
    assert_eq!(order(&pool).await.state, "fulfilled");
}

fn invoice(id: &str, status: &str, created: i64) -> Value {
    let mut i = stripe::invoice(id, CUSTOMER, SUB, status);
    i["created"] = json!(created);
    i
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_payment_problem_follows_the_latest_invoice(pool: PgPool) {
    org_and_order(&pool).await;
    let mut active = stripe::subscription(
        SUB,
        CUSTOMER,
        "active",
        "price_x",
        T0 + 60 * DAY,
        json!({ "herd_org_id": ORG }),
    );
    active["latest_invoice"] = json!("in_new");
    // The new invoice is paid; then Stripe's last retry of an older, voided invoice fails
    // (a later event, about an invoice that is no longer the latest).
    deliver(
        &pool,
        &stripe::event(
            "evt_li_1",
            "invoice.paid",
            T0 + 30 * DAY,
            invoice("in_new", "paid", T0 + 30 * DAY),
        ),
    )
    .await;
    deliver(
        &pool,
        &stripe::event(
            "evt_li_2",
            "customer.subscription.updated",
            T0 + 30 * DAY,
            active,
        ),
    )
    .await;
    deliver(
        &pool,
        &stripe::event(
            "evt_li_3",
            "invoice.payment_failed",
            T0 + 31 * DAY,
            invoice("in_old", "open", T0),
        ),
    )
    .await;
    let s = billing::subscription(&pool, SUB).await.unwrap().unwrap();
    assert_eq!(s.latest_invoice_id.as_deref(), Some("in_new"));
    assert_eq!(s.payment_problem, None, "the latest invoice is paid");
    // A failure of the latest invoice itself is a problem.
    deliver(
        &pool,
        &stripe::event(
            "evt_li_4",
            "invoice.payment_failed",
            T0 + 32 * DAY,
            invoice("in_new", "open", T0 + 30 * DAY),
        ),
    )
    .await;
    let s = billing::subscription(&pool, SUB).await.unwrap().unwrap();
    assert_eq!(s.payment_problem.as_deref(), Some("payment_failed"));
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn snapshots_of_one_second_are_ordered_by_the_subscriptions_own_period(pool: PgPool) {
    org_and_order(&pool).await;
    let snapshot = |status: &str, period_start: i64| {
        let mut s = stripe::subscription(
            SUB,
            CUSTOMER,
            status,
            "price_x",
            period_start + 30 * DAY,
            json!({ "herd_org_id": ORG }),
        );
        s["items"]["data"][0]["current_period_start"] = json!(period_start);
        s
    };
    // Within one second, the renewal's past-due snapshot of the old period and the paid
    // snapshot of the new period; their ids would put the old one last.
    let at = T0 + 30 * DAY;
    deliver(
        &pool,
        &stripe::event(
            "evt_ps_a",
            "customer.subscription.updated",
            at,
            snapshot("active", at),
        ),
    )
    .await;
    deliver(
        &pool,
        &stripe::event(
            "evt_ps_z",
            "customer.subscription.updated",
            at,
            snapshot("past_due", T0),
        ),
    )
    .await;
    let s = billing::subscription(&pool, SUB).await.unwrap().unwrap();
    assert_eq!(s.status, "active", "the newer period's snapshot wins");
}

/// A Checkout Session that expired unpaid ends its order (its page says why and that
/// ordering again is the way), instead of leaving it pending for ever; no server is made.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_expired_checkout_ends_the_order_and_says_so(pool: PgPool) {
    org_and_order(&pool).await;
    let mut expired = session("unpaid");
    expired["status"] = json!("expired");
    expired["subscription"] = Value::Null;
    deliver(
        &pool,
        &stripe::event(
            "evt_expired_1",
            "checkout.session.expired",
            T0 + DAY,
            expired,
        ),
    )
    .await;
    let o = order(&pool).await;
    assert_eq!(o.state, "abandoned");
    let problem = o.problem.unwrap();
    assert!(
        problem.contains("expired") && problem.contains("place the order again"),
        "{problem}"
    );
    assert_eq!(servers(&pool).await, 0);
    let state: String =
        sqlx::query_scalar("SELECT state FROM stripe_events WHERE id = 'evt_expired_1'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(state, "processed");
}

/// An expired session never ends an order that was paid meanwhile (another session of the
/// same order completed).
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_expired_session_leaves_a_paid_order_alone(pool: PgPool) {
    org_and_order(&pool).await;
    deliver(
        &pool,
        &stripe::event(
            "evt_paid_1",
            "checkout.session.completed",
            T0,
            session("paid"),
        ),
    )
    .await;
    let before = order(&pool).await.state;
    assert_ne!(before, "pending");
    let mut expired = session("unpaid");
    expired["status"] = json!("expired");
    deliver(
        &pool,
        &stripe::event(
            "evt_expired_2",
            "checkout.session.expired",
            T0 + DAY,
            expired,
        ),
    )
    .await;
    assert_eq!(order(&pool).await.state, before);
}
