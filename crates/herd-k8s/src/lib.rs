//! Herd on Kubernetes: the `Instance` custom resource (`instances.herd.dev/v1alpha1`) that
//! says what a tenant bought, and the generation of a tenant's app secrets in the formats
//! Mastodon expects, and the pure renderer from an Instance to the tenant's objects.

pub mod backups;
pub mod crd;
pub mod diff;
pub mod import;
pub mod lease;
pub mod lifecycle;
pub mod media_bucket;
pub mod observe;
pub mod operator;
pub mod presign;
pub mod reconcile;
pub mod render;
pub mod seal;
pub mod secrets;
pub mod sizing;
pub mod status;
pub mod yaml;

pub use crd::{App, Instance, InstanceSpec, InstanceStatus, Phase};
