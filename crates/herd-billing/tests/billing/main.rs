//! Integration tests of herd-billing against a real PostgreSQL and Stripe's fixtures, one
//! test binary.

mod access;
mod coalescing;
mod common;
mod concurrent;
mod fulfilment;
mod invoicing;
mod ordering;
mod pipeline;
mod stripe_api;
mod vat;
