//! Herd's billing. Stripe webhooks are verified against the raw body ([`signature`]),
//! stored and queued in one transaction ([`ingest`]), and processed from the PostgreSQL job
//! queue ([`worker`], [`process`]): each subscription is recomputed from all its stored
//! events ([`subscription`]), so delivery order and duplicates do not matter. What billing
//! means for a tenant's server is `herd_domain::access`.

pub mod access;
pub mod event;
pub mod fulfil;
pub mod ingest;
pub mod invoicing;
pub mod jobs;
pub mod process;
pub mod signature;
pub mod stripe_api;
pub mod subscription;
pub mod worker;

pub use ingest::{ingest, ingest_in_mode, IngestError, Ingested};
