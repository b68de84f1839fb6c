//! The tenant's namespace and what bounds it: quota, default limits, service account, and
//! the app's Secret and ConfigMap.

use super::{build, Child, RenderError, Tenant};
use crate::secrets::{DB_PASS, REDIS_PASSWORD};
use serde_json::json;
use std::collections::BTreeMap;

pub const APP_SECRET: &str = "app-secrets";
pub const APP_CONFIG: &str = "app-env";
pub const SERVICE_ACCOUNT: &str = "app";

pub fn render(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    let ns = t.namespace();
    let mut ns_labels = t.labels("");
    for mode in ["enforce", "audit", "warn"] {
        ns_labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            "restricted".into(),
        );
        ns_labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".into(),
        );
    }
    let s = &t.instance.spec.sizing;
    let (cpu_m, mem_mi) = quota_limits(t);
    let quota = json!({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": { "name": "tenant-quota", "namespace": ns, "labels": t.labels("") },
        "spec": { "hard": {
            "limits.cpu": format!("{cpu_m}m"),
            "limits.memory": format!("{mem_mi}Mi"),
            "requests.storage": format!("{}Gi", storage_gi(&s.database_storage) * 2 + storage_gi(&s.media_storage) + storage_gi(&t.instance.spec.redis.storage) + 3),
            "persistentvolumeclaims": "6",
            "pods": "40",
            "services.loadbalancers": "0",
            "services.nodeports": "0",
        }}
    });
    let limits = json!({
        "apiVersion": "v1", "kind": "LimitRange",
        "metadata": { "name": "tenant-limits", "namespace": ns, "labels": t.labels("") },
        "spec": { "limits": [{
            "type": "Container",
            "default": { "cpu": "500m", "memory": "512Mi" },
            "defaultRequest": { "cpu": "100m", "memory": "128Mi" },
            "max": { "cpu": "4", "memory": "8Gi" },
        }]}
    });
    let sa = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": SERVICE_ACCOUNT, "namespace": ns, "labels": t.labels("") },
        "automountServiceAccountToken": false,
    });
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": APP_SECRET, "namespace": ns, "labels": t.labels("") },
        "type": "Opaque",
        "stringData": t.secrets.data(),
    });
    Ok(vec![
        Child::Namespace(build(
            "Namespace",
            json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": ns, "labels": ns_labels },
            }),
        )?),
        Child::ResourceQuota(build("ResourceQuota", quota)?),
        Child::LimitRange(build("LimitRange", limits)?),
        Child::ServiceAccount(build("ServiceAccount", sa)?),
        Child::Secret(build("Secret", secret)?),
        Child::ConfigMap(build(
            "ConfigMap",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": { "name": APP_CONFIG, "namespace": ns, "labels": t.labels("") },
                "data": env(t),
            }),
        )?),
    ])
}

/// Non-secret settings of the app's processes.
pub fn env(t: &Tenant<'_>) -> BTreeMap<String, String> {
    match t.instance.spec.app {
        crate::crd::App::Mastodon => mastodon_env(t),
        crate::crd::App::Gotosocial => super::gotosocial::env(t),
    }
}

fn mastodon_env(t: &Tenant<'_>) -> BTreeMap<String, String> {
    let spec = &t.instance.spec;
    let mut e = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        e.insert(k.to_owned(), v.to_owned());
    };
    set("LOCAL_DOMAIN", &spec.local_domain);
    set("WEB_DOMAIN", t.web_domain());
    set("RAILS_ENV", "production");
    set("NODE_ENV", "production");
    set("MALLOC_ARENA_MAX", "2");
    set("RAILS_SERVE_STATIC_FILES", "true");
    set("RAILS_LOG_TO_STDOUT", "enabled");
    set("DB_HOST", &super::data::database_host(t));
    set("DB_PORT", "5432");
    set("DB_NAME", t.database_name());
    set("DB_USER", t.database_login().0);
    set("REDIS_HOST", "redis");
    set("REDIS_PORT", "6379");
    set("STREAMING_CLUSTER_NUM", "1");
    match &spec.media_s3 {
        Some(s3) => {
            set("S3_ENABLED", "true");
            set("S3_BUCKET", &s3.bucket);
            set("S3_ENDPOINT", &s3.endpoint);
            if let Some(r) = &s3.region {
                set("S3_REGION", r);
            }
            if let Some(h) = &s3.alias_host {
                set("S3_ALIAS_HOST", h);
            }
            // Without these Mastodon writes media URLs for Amazon's own hosts
            // (`s3-<region>.amazonaws.com`), wrong for every other provider.
            let (protocol, host) = s3
                .endpoint
                .split_once("://")
                .unwrap_or(("https", s3.endpoint.as_str()));
            set("S3_PROTOCOL", protocol);
            set("S3_HOSTNAME", host.trim_end_matches('/'));
            if let Some(p) = &s3.permission {
                set("S3_PERMISSION", p);
            }
        }
        None => set("S3_ENABLED", "false"),
    }
    if spec.smtp_secret_ref.is_none() {
        set("SMTP_DELIVERY_METHOD", "file");
    }
    with_extra_env(t, e)
}

/// Adds the plan's extra environment; it cannot override identity or wiring.
pub fn with_extra_env(t: &Tenant<'_>, mut e: BTreeMap<String, String>) -> BTreeMap<String, String> {
    for (k, v) in &t.instance.spec.extra_env {
        if !e.contains_key(k) && k != DB_PASS && k != REDIS_PASSWORD {
            e.insert(k.clone(), v.clone());
        }
    }
    e
}

/// The CPU (millicores) and memory (MiB) limits the tenant may use at most: every pod at
/// its limits, one extra web and streaming pod during a rolling update, the database and
/// Redis, two one-off jobs at once, and the suspended page.
pub fn quota_limits(t: &Tenant<'_>) -> (i64, i64) {
    let s = &t.instance.spec.sizing;
    let pod = |r: &crate::crd::Resources, n: i64| {
        (cpu_millis(&r.cpu_limit) * n, memory_mi(&r.memory_limit) * n)
    };
    let database_instances = if t.uses_cloudnative_pg() && s.web_replicas > 2 {
        2
    } else {
        1
    };
    let parts = [
        pod(&s.web, i64::from(s.web_replicas) + 1),
        pod(&s.streaming, i64::from(s.streaming_replicas) + 1),
        pod(&s.sidekiq, 1),
        pod(&s.sidekiq, 2),
        (
            super::data::DATABASE_LIMITS.0 * database_instances,
            super::data::DATABASE_LIMITS.1 * database_instances,
        ),
        if t.uses_cloudnative_pg() {
            (0, 0)
        } else {
            super::data::ROLES_LIMITS
        },
        (500, memory_mi(&t.instance.spec.redis.memory_limit)),
        (100, 64),
    ];
    parts
        .iter()
        .fold((0, 0), |(c, m), (pc, pm)| (c + pc, m + pm))
}

/// `250m` → 250, `1` → 1000, `1.5` → 1500.
pub fn cpu_millis(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => q
            .parse::<f64>()
            .map(|c| (c * 1000.0).round() as i64)
            .unwrap_or(0),
    }
}

/// `768Mi` → 768, `2Gi` → 2048.
pub fn memory_mi(q: &str) -> i64 {
    if let Some(g) = q.strip_suffix("Gi") {
        g.parse::<i64>().map(|g| g * 1024).unwrap_or(0)
    } else {
        q.strip_suffix("Mi")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
}

/// `20Gi` → 20; other units are rounded up to whole GiB.
pub fn storage_gi(q: &str) -> i64 {
    let (num, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: i64 = num.parse().unwrap_or(0);
    match unit {
        "Ti" => n * 1024,
        "Mi" => (n + 1023) / 1024,
        _ => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_millis("250m"), 250);
        assert_eq!(cpu_millis("1"), 1000);
        assert_eq!(cpu_millis("1.5"), 1500);
        assert_eq!(memory_mi("768Mi"), 768);
        assert_eq!(memory_mi("2Gi"), 2048);
        assert_eq!(storage_gi("20Gi"), 20);
        assert_eq!(storage_gi("1Ti"), 1024);
        assert_eq!(storage_gi("500Mi"), 1);
    }
}
