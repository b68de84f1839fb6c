//! Clusters as operators manage them: registered with a kubeconfig (sealed at rest) or
//! the in-cluster credentials, cordoned and uncordoned; each action audited.

use crate::jobs::{CheckCluster, PlaceQueued};
use crate::seal::{kubeconfig_purpose, SealKey};
use crate::FleetError;
use herd_domain::UserId;
use herd_store::audit::{self, NewEntry};
use herd_store::fleet::{self, Cluster, NewCluster};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Who acts, for the audit entry.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub id: UserId,
    pub email: &'a str,
    pub ip: &'a str,
}

/// A cluster to register, as typed in the console or given to `herd admin`.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    pub name: String,
    pub region: String,
    /// The kubeconfig's YAML; empty for in-cluster credentials.
    pub kubeconfig: String,
    pub operator_namespace: String,
    pub capacity: String,
}

/// Per field, what is wrong with a registration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<(&'static str, String)>);

impl Problems {
    fn add(&mut self, field: &'static str, msg: impl Into<String>) {
        self.0.push((field, msg.into()));
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(kubeconfig: &str) -> Registration {
        Registration {
            name: "eu-1".into(),
            region: "eu-west".into(),
            kubeconfig: kubeconfig.into(),
            operator_namespace: "herd-system".into(),
            capacity: "10".into(),
        }
    }

    const INLINE: &str = "clusters:\n- name: c\n  cluster:\n    server: https://k8s.example:6443\n    certificate-authority-data: AAAA\nusers:\n- name: u\n  user:\n    token: abc\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n";

    #[test]
    fn kubeconfigs_that_run_programs_or_read_local_files_are_refused() {
        let key = SealKey::from_base64(&SealKey::generate_base64()).ok();
        assert_eq!(validate(&reg(INLINE), key.as_ref()), Ok(10));
        for (from, to) in [
            ("token: abc", "exec: {command: /bin/sh, args: [-c, id]}"),
            (
                "token: abc",
                "tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
            ),
            ("token: abc", "auth-provider: {name: oidc}"),
            (
                "certificate-authority-data: AAAA",
                "certificate-authority: /etc/ssl/ca.pem",
            ),
        ] {
            let bad = INLINE.replace(from, to);
            let problems = validate(&reg(&bad), key.as_ref()).expect_err(to);
            assert!(
                problems
                    .0
                    .iter()
                    .any(|(f, m)| *f == "kubeconfig" && m.contains("inline")),
                "{to}: {problems:?}"
            );
        }
        // Without a key no kubeconfig is stored at all.
        assert!(validate(&reg(INLINE), None).is_err());
        // Bad names, regions and capacities are each reported.
        let mut r = reg("");
        r.name = "-Bad".into();
        r.region = String::new();
        r.capacity = "lots".into();
        let fields: Vec<_> = validate(&r, None)
            .expect_err("bad")
            .0
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["name", "region", "capacity"]);
    }
}

fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 40
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Fields of a kubeconfig that would make the worker run a command or read a file of its
/// own (its service-account token, say) and send it to the cluster's address: refused.
/// Credentials must be inline (`token`, `client-certificate-data`, `client-key-data`,
/// `certificate-authority-data`).
const UNSAFE_FIELDS: [&str; 7] = [
    "exec",
    "auth-provider",
    "tokenFile",
    "client-certificate",
    "client-key",
    "certificate-authority",
    "proxy-url",
];

fn unsafe_kubeconfig(v: &serde_yaml::Value) -> Option<String> {
    for (list, inner) in [("users", "user"), ("clusters", "cluster")] {
        for entry in v
            .get(list)
            .and_then(|l| l.as_sequence())
            .into_iter()
            .flatten()
        {
            let Some(map) = entry.get(inner).and_then(|m| m.as_mapping()) else {
                continue;
            };
            for field in UNSAFE_FIELDS {
                if map.contains_key(field) {
                    return Some(format!(
                        "This kubeconfig uses `{field}`, which would make Herd run a program or read a file on its own machine. Use inline credentials (a token or client-certificate-data and client-key-data)."
                    ));
                }
            }
        }
    }
    None
}

/// Checks a registration without saving anything.
pub fn validate(r: &Registration, key: Option<&SealKey>) -> Result<i32, Problems> {
    let mut p = Problems::default();
    if !dns_label(r.name.trim()) {
        p.add(
            "name",
            "Use 1 to 40 lowercase letters, digits and hyphens, not starting or ending with a hyphen.",
        );
    }
    if !dns_label(r.region.trim()) {
        p.add(
            "region",
            "Use 1 to 40 lowercase letters, digits and hyphens (e.g. eu-west).",
        );
    }
    if !dns_label(r.operator_namespace.trim()) {
        p.add("operator_namespace", "Enter a Kubernetes namespace name.");
    }
    let capacity = match r.capacity.trim().parse::<i32>() {
        Ok(n) if (0..=100_000).contains(&n) => n,
        _ => {
            p.add("capacity", "Enter a whole number of servers, 0 to 100000.");
            0
        }
    };
    let kc = r.kubeconfig.trim();
    if !kc.is_empty() {
        match serde_yaml::from_str::<serde_yaml::Value>(kc) {
            Ok(v) if v.get("clusters").is_some() && v.get("users").is_some() => {
                if let Some(why) = unsafe_kubeconfig(&v) {
                    p.add("kubeconfig", why);
                }
            }
            _ => p.add(
                "kubeconfig",
                "This is not a kubeconfig (YAML with clusters, users and contexts).",
            ),
        }
        if key.is_none() {
            p.add(
                "kubeconfig",
                "Herd cannot store a kubeconfig without HERD_ENCRYPTION_KEY; set it, or leave this empty to use the in-cluster credentials.",
            );
        }
    }
    if p.is_empty() {
        Ok(capacity)
    } else {
        Err(p)
    }
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the registration has problems")]
    Invalid(Problems),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// Registers a cluster, audited (`who` is `None` from the command line); its health
/// check and the placement of waiting instances are queued in the same transaction.
pub async fn register(
    pool: &PgPool,
    key: Option<&SealKey>,
    who: Option<Actor<'_>>,
    r: &Registration,
) -> Result<Uuid, RegisterError> {
    let capacity = validate(r, key).map_err(RegisterError::Invalid)?;
    let name = r.name.trim();
    // `validate` refused a kubeconfig without a key.
    let kc = r.kubeconfig.trim();
    let sealed = key
        .filter(|_| !kc.is_empty())
        .map(|k| k.seal(&kubeconfig_purpose(name), kc.as_bytes()));
    let mut tx = pool.begin().await.map_err(FleetError::from)?;
    let id = match fleet::insert_cluster(
        &mut tx,
        &NewCluster {
            name,
            region: r.region.trim(),
            kubeconfig_sealed: sealed.as_deref(),
            operator_namespace: r.operator_namespace.trim(),
            capacity,
        },
    )
    .await
    {
        Ok(id) => id,
        Err(e) if e.is_conflict_on("clusters_name_key") => {
            let mut p = Problems::default();
            p.add("name", "A cluster with this name is registered already.");
            return Err(RegisterError::Invalid(p));
        }
        Err(e) => return Err(FleetError::from(e).into()),
    };
    audit_cluster(
        &mut tx,
        who,
        "fleet.cluster.registered",
        id,
        serde_json::json!({
            "name": name, "region": r.region.trim(), "capacity": capacity,
            "credentials": if sealed.is_some() { "kubeconfig" } else { "in-cluster" },
        }),
    )
    .await?;
    follow_up(&mut tx, id).await?;
    tx.commit().await.map_err(FleetError::from)?;
    Ok(id)
}

/// Queues a health check of the cluster and a placement round for waiting instances.
async fn follow_up(conn: &mut PgConnection, cluster: Uuid) -> Result<(), FleetError> {
    let now = time::OffsetDateTime::now_utc();
    herd_jobs::enqueue(
        &mut *conn,
        &CheckCluster {
            cluster_id: cluster,
            bucket: now.unix_timestamp_nanos() as i64,
        },
    )
    .await?;
    herd_jobs::enqueue(
        &mut *conn,
        &PlaceQueued {
            bucket: now.unix_timestamp_nanos() as i64,
        },
    )
    .await?;
    Ok(())
}

async fn audit_cluster(
    conn: &mut PgConnection,
    who: Option<Actor<'_>>,
    action: &str,
    id: Uuid,
    details: serde_json::Value,
) -> Result<(), FleetError> {
    audit::record(
        conn,
        NewEntry {
            actor: who.map(|w| (w.id, w.email)),
            org: None,
            action,
            target: id.to_string(),
            source_ip: who.map(|w| w.ip),
            details,
        },
    )
    .await?;
    Ok(())
}

/// Cordons (no new tenants placed there) or uncordons a cluster, audited; uncordoning
/// queues a placement round.
pub async fn set_cordoned(
    pool: &PgPool,
    who: Actor<'_>,
    id: Uuid,
    cordoned: bool,
) -> Result<(), FleetError> {
    let mut tx = pool.begin().await?;
    let c = fleet::cluster(&mut *tx, id)
        .await?
        .ok_or(FleetError::NotFound)?;
    if c.cordoned == cordoned {
        return Ok(());
    }
    fleet::set_cordoned(&mut *tx, id, cordoned).await?;
    audit_cluster(
        &mut tx,
        Some(who),
        if cordoned {
            "fleet.cluster.cordoned"
        } else {
            "fleet.cluster.uncordoned"
        },
        id,
        serde_json::json!({ "name": c.name }),
    )
    .await?;
    if !cordoned {
        follow_up(&mut tx, id).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn list(pool: &PgPool) -> Result<Vec<Cluster>, FleetError> {
    Ok(fleet::clusters(pool).await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Cluster, FleetError> {
    fleet::cluster(pool, id).await?.ok_or(FleetError::NotFound)
}
