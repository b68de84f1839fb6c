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
