//! The tenant the integration tests render and reconcile.

use herd_domain::plan::default_catalogue;
use herd_k8s::crd::{App, Instance, InstanceSpec, OwnerSpec};

/// Mastodon v4.7.6 for `lyon.social` on `plan`, in the operator namespace `herd-system`.
pub fn lyon(plan: &str) -> Instance {
    let Some(p) = default_catalogue().into_iter().find(|p| p.code == plan) else {
        panic!("no plan {plan}");
    };
    let owner = OwnerSpec {
        username: "lea".into(),
        email: "admin@lyon.example".into(),
        password_generation: 0,
    };
    let mut i = Instance::new(
        "lyon",
        InstanceSpec::new(
            App::Mastodon,
            "v4.7.6",
            "lyon",
            "lyon.social",
            plan,
            &p.limits,
            owner,
        ),
    );
    i.metadata.namespace = Some("herd-system".into());
    i
}

/// A StorageClass offering ReadWriteMany in the tests' clusters (see
/// `herd_testkit::fake_rules::SHARED_PROVISIONERS`).
pub const SHARED_CLASS: &str = "shared-nfs";

/// Settings of a cluster that can run `i`: with a ReadWriteMany StorageClass when its plan
/// runs several web pods with media on a volume (the default cluster refuses those).
pub fn cluster_for(i: &Instance) -> herd_k8s::render::ClusterSettings {
    let mut c = herd_k8s::render::ClusterSettings::default();
    if i.spec.media_s3.is_none() && i.spec.sizing.web_replicas > 1 {
        c.media_shared_storage_class = Some(SHARED_CLASS.to_owned());
    }
    c
}

/// The tests' backup identity (the platform's, in production never in a cluster) and its
/// recipient, which the operator seals app secrets to.
pub const BACKUP_IDENTITY: &str =
    "AGE-SECRET-KEY-1QDJK0HMQWXASQE06459U40CJFS7C8CSGQ002SW58TSJPKR63CXZQG4A0DJ";
pub const BACKUP_RECIPIENT: &str = "age1302c8smchfv42meeqncfqp9dg39kscy7a06xlx9s0frmwvc0zsnqrl9ujm";
