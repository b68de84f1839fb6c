//! The pure renderer: from an `Instance` and its secrets to every Kubernetes object of the
//! tenant, in the namespace `herd-<slug>`. No cluster is needed; `herd render` prints the
//! result and snapshot tests pin it.

pub mod backup;
pub mod data;
pub mod export;
mod gotosocial;
pub mod mastodon;
mod network;
pub mod restore;
pub mod restore_scripts;
pub mod schedule;
pub mod tenancy;

pub use mastodon::upgrade_jobs;

use crate::crd::{App, Instance};
use crate::secrets::AppSecrets;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Settings of the cluster the tenant lands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The IngressClass to use.
    pub ingress_class: String,
    /// The namespace of the ingress controller (allowed to reach web and streaming).
    pub ingress_namespace: String,
    /// The cert-manager ClusterIssuer for TLS certificates.
    pub cluster_issuer: String,
    /// Whether the CloudNativePG `Cluster` CRD exists (for `database.mode: Auto`).
    pub has_cloudnative_pg: bool,
    /// A StorageClass whose volumes several nodes may mount read-write (NFS, CephFS, EFS,
    /// Azure Files…), for Mastodon media kept on a volume. Without one, media on a volume
    /// are ReadWriteOnce and every pod using them runs on one node; plans running several
    /// web pods then need media in object storage (S3).
    pub media_shared_storage_class: Option<String>,
    /// The namespace CloudNativePG's operator runs in (it must reach its instances).
    pub cnpg_namespace: String,
    /// The API server's addresses as pods reach them (the endpoints of the `kubernetes`
    /// Service): CloudNativePG's instance managers talk to it. Empty when unknown, and then
    /// no egress to it is allowed.
    pub api_server: Vec<std::net::SocketAddr>,
    /// Addresses of a node-local DNS cache pods may query besides the cluster DNS in
    /// `kube-system` (NodeLocal DNSCache listens on 169.254.20.10 on every node).
    pub node_local_dns: Vec<std::net::IpAddr>,
    /// Where tenants are backed up (scheduled backups, and CloudNativePG's object store);
    /// without one, no scheduled backup is rendered.
    pub backup: Option<backup::BackupTarget>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            ingress_class: "nginx".into(),
            ingress_namespace: "ingress-nginx".into(),
            cluster_issuer: "letsencrypt".into(),
            has_cloudnative_pg: false,
            media_shared_storage_class: None,
            cnpg_namespace: "cnpg-system".into(),
            api_server: Vec::new(),
            node_local_dns: vec![std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                169, 254, 20, 10,
            ))],
            backup: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the instance has no name")]
    Unnamed,
    #[error("the plan runs {web_replicas} web pods, which must share the media files: put media in object storage (spec.mediaS3), or give the operator a StorageClass that offers ReadWriteMany (HERD_MEDIA_SHARED_STORAGE_CLASS); see docs/INSTALL-CLUSTER.md")]
    SharedMediaNeeded { web_replicas: i32 },
    #[error("spec.export.secretsRecipient is set, but the app secrets were not sealed to it")]
    ExportUnsealed,
    #[error("could not build {what}: {source}")]
    Build {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// One object of a tenant.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a few dozen children per tenant, built once per render"
)]
pub enum Child {
    Namespace(Namespace),
    ResourceQuota(ResourceQuota),
    LimitRange(LimitRange),
    NetworkPolicy(NetworkPolicy),
    ServiceAccount(ServiceAccount),
    Secret(Secret),
    ConfigMap(ConfigMap),
    PersistentVolumeClaim(PersistentVolumeClaim),
    StatefulSet(StatefulSet),
    Service(Service),
    Deployment(Deployment),
    Ingress(Ingress),
    Job(Job),
    CronJob(CronJob),
    PodDisruptionBudget(PodDisruptionBudget),
    /// Custom resources of other operators (CloudNativePG's `Cluster`).
    Dynamic(DynamicObject),
}

impl Child {
    /// The object as JSON, with apiVersion and kind.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Child::Namespace(o) => serde_json::to_value(o),
            Child::ResourceQuota(o) => serde_json::to_value(o),
            Child::LimitRange(o) => serde_json::to_value(o),
            Child::NetworkPolicy(o) => serde_json::to_value(o),
            Child::ServiceAccount(o) => serde_json::to_value(o),
            Child::Secret(o) => serde_json::to_value(o),
            Child::ConfigMap(o) => serde_json::to_value(o),
            Child::PersistentVolumeClaim(o) => serde_json::to_value(o),
            Child::StatefulSet(o) => serde_json::to_value(o),
            Child::Service(o) => serde_json::to_value(o),
            Child::Deployment(o) => serde_json::to_value(o),
            Child::Ingress(o) => serde_json::to_value(o),
            Child::Job(o) => serde_json::to_value(o),
            Child::CronJob(o) => serde_json::to_value(o),
            Child::PodDisruptionBudget(o) => serde_json::to_value(o),
            Child::Dynamic(o) => serde_json::to_value(o),
        }
    }

    /// `Kind/name`, for messages (without serializing the object).
    pub fn describe(&self) -> String {
        let (kind, meta) = match self {
            Child::Namespace(o) => ("Namespace", &o.metadata),
            Child::ResourceQuota(o) => ("ResourceQuota", &o.metadata),
            Child::LimitRange(o) => ("LimitRange", &o.metadata),
            Child::NetworkPolicy(o) => ("NetworkPolicy", &o.metadata),
            Child::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Child::Secret(o) => ("Secret", &o.metadata),
            Child::ConfigMap(o) => ("ConfigMap", &o.metadata),
            Child::PersistentVolumeClaim(o) => ("PersistentVolumeClaim", &o.metadata),
            Child::StatefulSet(o) => ("StatefulSet", &o.metadata),
            Child::Service(o) => ("Service", &o.metadata),
            Child::Deployment(o) => ("Deployment", &o.metadata),
            Child::Ingress(o) => ("Ingress", &o.metadata),
            Child::Job(o) => ("Job", &o.metadata),
            Child::CronJob(o) => ("CronJob", &o.metadata),
            Child::PodDisruptionBudget(o) => ("PodDisruptionBudget", &o.metadata),
            Child::Dynamic(o) => (
                o.types.as_ref().map_or("?", |t| t.kind.as_str()),
                &o.metadata,
            ),
        };
        format!("{kind}/{}", meta.name.as_deref().unwrap_or("?"))
    }
}

/// Everything about one tenant the renderer needs.
#[derive(Debug, Clone, Copy)]
pub struct Tenant<'a> {
    pub instance: &'a Instance,
    pub secrets: &'a AppSecrets,
    pub cluster: &'a ClusterSettings,
}

impl Tenant<'_> {
    pub fn namespace(&self) -> String {
        namespace_name(&self.instance.spec.slug)
    }

    pub fn name(&self) -> Result<String, RenderError> {
        self.instance
            .metadata
            .name
            .clone()
            .ok_or(RenderError::Unnamed)
    }

    /// The labels every child carries; `herd.dev/instance` ties it to its Instance.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let app = match self.instance.spec.app {
            App::Mastodon => "mastodon",
            App::Gotosocial => "gotosocial",
        };
        let mut l = BTreeMap::new();
        l.insert("app.kubernetes.io/name".into(), app.into());
        l.insert(
            "app.kubernetes.io/instance".into(),
            self.instance.spec.slug.clone(),
        );
        l.insert("app.kubernetes.io/managed-by".into(), "herd".into());
        l.insert("herd.dev/tenant".into(), self.instance.spec.slug.clone());
        l.insert(
            "herd.dev/instance".into(),
            self.instance.metadata.name.clone().unwrap_or_default(),
        );
        if !component.is_empty() {
            l.insert("app.kubernetes.io/component".into(), component.into());
        }
        l
    }

    /// Pod selector labels of a component.
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        let mut l = BTreeMap::new();
        l.insert(
            "app.kubernetes.io/instance".into(),
            self.instance.spec.slug.clone(),
        );
        l.insert("app.kubernetes.io/component".into(), component.into());
        l
    }

    /// The application's database and database user.
    pub fn database_name(&self) -> &'static str {
        match self.instance.spec.app {
            App::Mastodon => "mastodon",
            App::Gotosocial => "gotosocial",
        }
    }

    /// The login the app, the backups and the restores connect as, and the key of its
    /// password in the app Secret. Never a superuser: CloudNativePG's owner of the
    /// database (`bootstrap.initdb.owner`), or, where Herd runs PostgreSQL itself, the
    /// app's role (`<database>_app`) that [`data::ROLES_SCRIPT`] keeps, since the
    /// StatefulSet's `POSTGRES_USER` is the server's superuser. A restore replays what a
    /// dump holds as this login, so a crafted dump (an import's) cannot act beyond the
    /// database (docs/EXPORTS.md).
    pub fn database_login(&self) -> (&'static str, &'static str) {
        if self.uses_cloudnative_pg() {
            (self.database_name(), crate::secrets::DB_PASS)
        } else {
            (
                data::app_role(self.instance.spec.app),
                crate::secrets::DB_APP_PASS,
            )
        }
    }

    /// The domain the web interface is served at.
    pub fn web_domain(&self) -> &str {
        self.instance
            .spec
            .web_domain
            .as_deref()
            .unwrap_or(&self.instance.spec.local_domain)
    }

    pub fn uses_cloudnative_pg(&self) -> bool {
        use crate::crd::DatabaseMode;
        match self.instance.spec.database.mode {
            DatabaseMode::CloudNativePg => true,
            DatabaseMode::StatefulSet => false,
            DatabaseMode::Auto => match self.instance.annotation(crate::crd::DATABASE_ANNOTATION) {
                Some(decided) => decided == crate::crd::DATABASE_CLOUDNATIVE_PG,
                None => self.cluster.has_cloudnative_pg,
            },
        }
    }
}

/// The namespace of a tenant.
pub fn namespace_name(slug: &str) -> String {
    format!("herd-{slug}")
}

/// Builds a typed object from JSON, naming it in the error.
pub(crate) fn build<T: DeserializeOwned>(
    what: &'static str,
    v: serde_json::Value,
) -> Result<T, RenderError> {
    serde_json::from_value(v).map_err(|source| RenderError::Build { what, source })
}

/// A short, stable hash of configuration, for the pod-template annotation that makes pods
/// restart when their configuration or secrets change.
pub(crate) fn config_hash(parts: &[&serde_json::Value]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.to_string().as_bytes());
        h.update(b"\0");
    }
    hex::encode(&h.finalize()[..16])
}

/// Every object of the tenant, in an order that can be applied as it stands (namespace
/// first, workloads after what they use).
pub fn render(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    t.name()?;
    let mut out = tenancy::render(t)?;
    out.extend(network::render(t)?);
    out.extend(data::render(t)?);
    out.extend(match t.instance.spec.app {
        App::Mastodon => mastodon::render(t)?,
        App::Gotosocial => gotosocial::render(t)?,
    });
    out.extend(schedule::render(t)?);
    Ok(out)
}

/// The first-install Jobs of the tenant's app (Mastodon: prepare the database, create the
/// owner; GoToSocial, which migrates at start: create the owner).
pub fn install_jobs(t: &Tenant<'_>) -> Result<Vec<Child>, RenderError> {
    match t.instance.spec.app {
        App::Mastodon => mastodon::install_jobs(t),
        App::Gotosocial => gotosocial::install_jobs(t),
    }
}

/// The Job named `name` that sets the owner's password from the `owner-password` Secret
/// (a reset asked for by the control plane).
pub fn reset_owner_job(t: &Tenant<'_>, name: &str) -> Result<Child, RenderError> {
    match t.instance.spec.app {
        App::Mastodon => mastodon::reset_owner_job(t, name),
        App::Gotosocial => gotosocial::reset_owner_job(t, name),
    }
}

/// Whether the tenant was never installed (no running version in its status).
pub(crate) fn not_installed(t: &Tenant<'_>) -> bool {
    t.instance.installed_version().is_none()
}

/// The objects as one multi-document YAML stream.
pub fn to_yaml(children: &[Child]) -> Result<String, RenderError> {
    let mut out = String::new();
    for c in children {
        let v = c.to_value().map_err(|source| RenderError::Build {
            what: "yaml",
            source,
        })?;
        out.push_str("---\n");
        out.push_str(&crate::yaml::to_string(&v));
    }
    Ok(out)
}
