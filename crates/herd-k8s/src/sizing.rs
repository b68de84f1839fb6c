//! From a plan's compute size to replicas, requests, limits and volume sizes.

use crate::crd::{BackupSpec, Resources, Sizing};
use herd_domain::{ComputeSize, PlanLimits};

fn res(cpu_request: &str, memory_request: &str, cpu_limit: &str, memory_limit: &str) -> Resources {
    Resources {
        cpu_request: cpu_request.into(),
        memory_request: memory_request.into(),
        cpu_limit: cpu_limit.into(),
        memory_limit: memory_limit.into(),
    }
}

/// The sizing of a plan. Sidekiq always runs one replica: it serves the `scheduler`
/// queue, which must never run twice.
pub fn for_plan(limits: &PlanLimits) -> Sizing {
    let (web_replicas, streaming_replicas, concurrency, web, streaming, sidekiq, db) =
        match limits.compute {
            ComputeSize::Small => (
                1,
                1,
                10,
                res("250m", "768Mi", "1", "1280Mi"),
                res("100m", "128Mi", "500m", "512Mi"),
                res("250m", "512Mi", "1", "768Mi"),
                "10Gi",
            ),
            ComputeSize::Medium => (
                2,
                1,
                15,
                res("500m", "1Gi", "1500m", "1536Mi"),
                res("250m", "128Mi", "500m", "512Mi"),
                res("500m", "768Mi", "1500m", "1280Mi"),
                "50Gi",
            ),
            ComputeSize::Large => (
                3,
                2,
                25,
                res("1", "1536Mi", "2", "2Gi"),
                res("250m", "256Mi", "1", "768Mi"),
                res("1", "1Gi", "2", "2Gi"),
                "200Gi",
            ),
        };
    Sizing {
        web_replicas,
        streaming_replicas,
        sidekiq_concurrency: concurrency,
        web,
        streaming,
        sidekiq,
        database_storage: db.into(),
        media_storage: format!("{}Gi", limits.media_storage_gb),
    }
}

/// The backups of a plan: daily on every plan (every tenant has a backup less than a day
/// old), kept a week on the small plan, two weeks on the medium one, and on the large one
/// every six hours, kept thirty days.
pub fn backup_for_plan(limits: &PlanLimits) -> BackupSpec {
    let (interval_hours, retention_days) = match limits.compute {
        ComputeSize::Small => (24, 7),
        ComputeSize::Medium => (24, 14),
        ComputeSize::Large => (6, 30),
    };
    BackupSpec {
        interval_hours,
        retention_days,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_domain::plan::default_catalogue;

    #[test]
    fn bigger_plans_get_more() {
        let sizes: Vec<Sizing> = default_catalogue()
            .iter()
            .map(|p| for_plan(&p.limits))
            .collect();
        assert_eq!(sizes[0].web_replicas, 1);
        assert!(sizes
            .windows(2)
            .all(|w| w[0].web_replicas <= w[1].web_replicas));
        assert!(sizes
            .windows(2)
            .all(|w| w[0].sidekiq_concurrency < w[1].sidekiq_concurrency));
        assert_eq!(sizes[0].media_storage, "25Gi");
    }
}
