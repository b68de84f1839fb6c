//! Renders and diffs 1,000 Instances against an in-memory cluster and reports the time per
//! instance and the API writes of a no-op reconcile (target: 0).
//!
//! `cargo bench -p herd-k8s --bench render_diff` (set `HERD_BENCH_INSTANCES` for another
//! count). Results and the machine they were taken on are in docs/BENCHMARKS.md.
#![expect(clippy::unwrap_used, reason = "benchmark")]

use herd_domain::plan::default_catalogue;
use herd_k8s::crd::{App, Instance, InstanceSpec, OwnerSpec};
use herd_k8s::diff;
use herd_k8s::reconcile::apply_children;
use herd_k8s::render::{self, ClusterSettings, Tenant};
use herd_k8s::secrets::AppSecrets;
use std::time::Instant;

fn instances(n: usize) -> Vec<Instance> {
    let catalogue = default_catalogue();
    (0..n)
        .map(|i| {
            let plan = &catalogue[i % catalogue.len()];
            Instance::new(
                &format!("t{i}"),
                InstanceSpec {
                    suspended: i % 10 == 0,
                    ..InstanceSpec::new(
                        App::Mastodon,
                        "v4.7.6",
                        &format!("t{i}"),
                        &format!("t{i}.example"),
                        plan.code,
                        &plan.limits,
                        OwnerSpec {
                            username: "admin".into(),
                            email: "admin@example.org".into(),
                            password_generation: 0,
                        },
                    )
                },
            )
        })
        .collect()
}

fn main() {
    // `cargo bench` passes --bench; under `cargo test --all-targets` this runs as a quick
    // smoke test on a few instances.
    let benching = std::env::args().any(|a| a == "--bench");
    let default = if benching { 1000 } else { 20 };
    let n: usize = std::env::var("HERD_BENCH_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let all = instances(n);
    // Plans with several web pods keep media on a shared volume (or in S3).
    let cluster_settings = ClusterSettings {
        media_shared_storage_class: Some("shared-nfs".into()),
        ..ClusterSettings::default()
    };
    let secrets = AppSecrets::generate();

    // Pure rendering and normalizing, no cluster.
    let start = Instant::now();
    let mut objects = 0;
    for inst in &all {
        let children = render::render(&Tenant {
            instance: inst,
            secrets: &secrets,
            cluster: &cluster_settings,
        })
        .unwrap();
        for c in &children {
            std::hint::black_box(diff::normalize(c.to_value().unwrap()));
        }
        objects += children.len();
    }
    let render_time = start.elapsed();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (first_time, first_writes, noop_time, noop_writes, noop_written) = rt.block_on(async {
        let cluster = herd_testkit::fake_cluster::start().await;
        cluster
            .add_storage_class("shared-nfs", "nfs.csi.k8s.io", true)
            .await;
        let start = Instant::now();
        for inst in &all {
            apply_children(&cluster.client, inst, &cluster_settings)
                .await
                .unwrap();
        }
        let first_time = start.elapsed();
        let first_writes = cluster.writes();
        let start = Instant::now();
        let mut written = 0;
        for inst in &all {
            written += apply_children(&cluster.client, inst, &cluster_settings)
                .await
                .unwrap()
                .written
                .len();
        }
        (
            first_time,
            first_writes,
            start.elapsed(),
            cluster.writes() - first_writes,
            written,
        )
    });

    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "instances: {n}, objects rendered: {objects} ({:.1} per instance)",
        objects as f64 / n as f64
    );
    println!(
        "render + normalize:              {:>10.1} µs per instance",
        per(render_time)
    );
    println!(
        "first reconcile (create all):    {:>10.1} µs per instance, {first_writes} API writes",
        per(first_time)
    );
    println!("no-op reconcile (render + diff): {:>10.1} µs per instance, {noop_writes} API writes, {noop_written} children written", per(noop_time));
    assert_eq!(noop_writes, 0, "a no-op reconcile must not write");
}
