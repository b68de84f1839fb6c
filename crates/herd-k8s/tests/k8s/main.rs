//! Integration tests of herd-k8s: the renderer, the reconcile and the operator against an
//! in-memory Kubernetes API, the deploy manifests against the schema, and the real-cluster
//! suite (ignored by default); one test binary.

mod backup;
mod common;
mod deploy;
mod media_bucket;
mod moderator;
mod network;
mod operator;
mod real_cluster;
mod reconcile;
mod render;
mod restore;
mod restore_scripts;
mod schedule;
mod validation;
