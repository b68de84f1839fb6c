//! Delivery order and duplicates do not change what Herd makes of a subscription: every
//! random order of its history, with random redeliveries, reaches the state of in-order
//! delivery, and so does every prefix of it.
#![expect(clippy::unwrap_used, reason = "tests")]

use crate::common;

use common::{history, scrambled, DAY, ORDER, ORG, SUB, T0};
use herd_billing::event::Envelope;
use herd_billing::subscription::{recompute, View};
use time::OffsetDateTime;

fn parse(events: &[serde_json::Value]) -> Vec<Envelope> {
    events
        .iter()
        .map(|e| Envelope::parse(e.to_string().as_bytes()).unwrap())
        .collect()
}

fn at(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).unwrap()
}

fn in_order(n: usize) -> View {
    let h = history();
    let mut view = None;
    // Delivered one by one in order, recomputed after each, as the worker does.
    for i in 1..=n {
        view = recompute(SUB, &parse(&h[..i]));
    }
    view.unwrap()
}

#[test]
fn the_history_reads_as_expected_in_order() {
    let v = in_order(10);
    assert_eq!(v.status, "canceled");
    assert_eq!(v.status_since, at(T0 + 60 * DAY));
    assert!(v.cancel_at_period_end);
    assert_eq!(v.latest_invoice_id.as_deref(), Some("in_second"));
    assert_eq!(v.latest_invoice_status.as_deref(), Some("paid"));
    assert_eq!(v.payment_problem, None);
    assert_eq!(v.org_id.unwrap().to_string(), ORG);
    assert_eq!(v.order_id.unwrap().to_string(), ORDER);
    assert_eq!(v.price_id.as_deref(), Some(common::PRICE));
    assert!(v.checkout_completed);

    // In the middle: the renewal failed and the subscription is past due since then.
    let v = in_order(6);
    assert_eq!(v.status, "past_due");
    assert_eq!(v.status_since, at(T0 + 30 * DAY));
    assert_eq!(v.payment_problem.as_deref(), Some("payment_failed"));
    assert_eq!(v.current_period_end, Some(at(T0 + 60 * DAY)));
    // Before any subscription event, a completed checkout alone: incomplete, not running.
    let v = in_order(1);
    assert_eq!(v.status, "incomplete");
    assert!(v.checkout_completed);
}

#[test]
fn any_order_with_duplicates_reaches_the_in_order_state() {
    let h = history();
    for n in 1..=h.len() {
        let expected = in_order(n);
        for seed in 0..200u64 {
            let delivered = scrambled(&h[..n], seed * 31 + n as u64);
            // The worker recomputes after each delivery; only the last state counts, and
            // every intermediate one is a state of some prefix.
            let got = recompute(SUB, &parse(&delivered)).unwrap();
            assert_eq!(got, expected, "prefix {n}, seed {seed}");
        }
    }
}

#[test]
fn an_older_event_never_overwrites_newer_state() {
    let h = history();
    // The newest event first, then the first failure arrives late.
    let late = vec![h[9].clone(), h[4].clone(), h[5].clone()];
    let v = recompute(SUB, &parse(&late)).unwrap();
    assert_eq!(v.status, "canceled");
    // The failure's invoice was paid later, but that event is not here: the failure stands
    // for the invoice, the subscription stays canceled.
    assert_eq!(v.source_time, at(T0 + 60 * DAY));
}

#[test]
fn events_of_other_subscriptions_are_left_out() {
    let mut h = history();
    h[3]["data"]["object"]["id"] = serde_json::json!("sub_Other");
    let v = recompute(SUB, &parse(&h[..4])).unwrap();
    assert_eq!(
        v.status, "incomplete",
        "the other subscription's activation is not ours"
    );
    assert!(recompute("sub_Nothing", &parse(&h)).is_none());
}
