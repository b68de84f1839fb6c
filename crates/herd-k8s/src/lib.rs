//! Herd on Kubernetes: the `Instance` custom resource (`instances.herd.dev/v1alpha1`) that
//! says what a tenant bought, and the generation of a tenant's app secrets in the formats
//! Mastodon expects.

pub mod crd;
pub mod secrets;

pub use crd::{App, Instance, InstanceSpec, InstanceStatus, Phase};
