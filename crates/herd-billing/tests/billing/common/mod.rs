//! A subscription's life as Stripe would report it, built from Stripe's fixtures.
#![allow(dead_code, reason = "each test file uses part of it")]
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::stripe;
use serde_json::{json, Value};

pub const SUB: &str = "sub_HerdLyon0001";
pub const CUSTOMER: &str = "cus_HerdLyon0001";
pub const PRICE: &str = "price_HerdCommunity";
pub const ORG: &str = "0192f000-0000-7000-8000-000000000001";
pub const ORDER: &str = "0192f000-0000-7000-8000-0000000000aa";
pub const T0: i64 = 1_764_000_000;
pub const DAY: i64 = 86_400;

fn sub(status: &str, cancel_at_period_end: bool, period_end: i64) -> Value {
    let mut s = stripe::subscription(
        SUB,
        CUSTOMER,
        status,
        PRICE,
        period_end,
        json!({ "herd_org_id": ORG, "herd_order_id": ORDER }),
    );
    s["cancel_at_period_end"] = json!(cancel_at_period_end);
    s
}

/// Checkout, first payment, a failed renewal and its recovery, cancellation at period end,
/// and the end: ten events, some in the same second as Stripe sends them.
pub fn history() -> Vec<Value> {
    let e = stripe::event;
    vec![
        e(
            "evt_01checkout",
            "checkout.session.completed",
            T0,
            stripe::checkout_session("cs_test_herd1", CUSTOMER, SUB, ORDER, ORG),
        ),
        e(
            "evt_02created",
            "customer.subscription.created",
            T0,
            sub("incomplete", false, T0 + 30 * DAY),
        ),
        e(
            "evt_03paid",
            "invoice.paid",
            T0 + 1,
            stripe::invoice("in_first", CUSTOMER, SUB, "paid"),
        ),
        e(
            "evt_04active",
            "customer.subscription.updated",
            T0 + 1,
            sub("active", false, T0 + 30 * DAY),
        ),
        e(
            "evt_05failed",
            "invoice.payment_failed",
            T0 + 30 * DAY,
            stripe::invoice("in_second", CUSTOMER, SUB, "open"),
        ),
        e(
            "evt_06pastdue",
            "customer.subscription.updated",
            T0 + 30 * DAY,
            sub("past_due", false, T0 + 60 * DAY),
        ),
        e(
            "evt_07repaid",
            "invoice.paid",
            T0 + 32 * DAY,
            stripe::invoice("in_second", CUSTOMER, SUB, "paid"),
        ),
        e(
            "evt_08active",
            "customer.subscription.updated",
            T0 + 32 * DAY,
            sub("active", false, T0 + 60 * DAY),
        ),
        e(
            "evt_09cancel",
            "customer.subscription.updated",
            T0 + 40 * DAY,
            sub("active", true, T0 + 60 * DAY),
        ),
        e(
            "evt_10deleted",
            "customer.subscription.deleted",
            T0 + 60 * DAY,
            sub("canceled", true, T0 + 60 * DAY),
        ),
    ]
}

/// A deterministic shuffle with random duplicates (a small xorshift, so the test needs no
/// extra crate and every failure names its seed).
pub fn scrambled(events: &[Value], seed: u64) -> Vec<Value> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out: Vec<Value> = events.to_vec();
    let extra = (next() % 6) as usize;
    for _ in 0..extra {
        let i = (next() % events.len() as u64) as usize;
        out.push(events[i].clone());
    }
    for i in (1..out.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

/// The organization and pending order the history's metadata names.
pub async fn org_and_order(pool: &sqlx::PgPool) {
    let org = uuid::Uuid::parse_str(ORG).unwrap();
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, 'lyon', 'Ville de Lyon')")
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
    // The organization's owner becomes the owner of the server the order pays for.
    let owner = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, display_name, password_hash, email_verified_at) VALUES ($1, 'lea@lyon.example', 'Léa', 'x', now())")
        .bind(owner)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, 'owner')")
        .bind(org)
        .bind(owner)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO orders (id, org_id, plan_code, app, domain) VALUES ($1, $2, 'community', 'mastodon', 'lyon.social')")
        .bind(uuid::Uuid::parse_str(ORDER).unwrap())
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
}
