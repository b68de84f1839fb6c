//! A Kubernetes client per registered cluster.

use anyhow::Context;
use futures::future::BoxFuture;
use herd_fleet::seal::{kubeconfig_purpose, SealKey};
use herd_store::fleet::Cluster;
use std::collections::HashMap;
use std::sync::Mutex;
use uuid::Uuid;

/// Gives a client for a registered cluster.
pub trait Connector: Send + Sync + 'static {
    fn client<'a>(&'a self, cluster: &'a Cluster) -> BoxFuture<'a, anyhow::Result<kube::Client>>;
}

/// Clients from each cluster's sealed kubeconfig, or from the worker's own credentials
/// (the in-cluster service account, or its `KUBECONFIG`) for a cluster registered
/// without one. Clients are kept per cluster.
pub struct KubeconfigConnector {
    key: Option<SealKey>,
    cache: Mutex<HashMap<Uuid, kube::Client>>,
}

impl std::fmt::Debug for KubeconfigConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeconfigConnector")
            .finish_non_exhaustive()
    }
}

impl KubeconfigConnector {
    pub fn new(key: Option<SealKey>) -> Self {
        Self {
            key,
            cache: Mutex::default(),
        }
    }

    async fn build(&self, cluster: &Cluster) -> anyhow::Result<kube::Client> {
        let config = match &cluster.kubeconfig_sealed {
            None => kube::Config::infer()
                .await
                .context("no credentials of the worker's own (in-cluster or KUBECONFIG)")?,
            Some(sealed) => {
                let key = self
                    .key
                    .as_ref()
                    .context("HERD_ENCRYPTION_KEY is not set: the kubeconfig cannot be opened")?;
                let yaml = key
                    .open(&kubeconfig_purpose(&cluster.name), sealed)
                    .context("opening the stored kubeconfig")?;
                let yaml = String::from_utf8(yaml).context("the kubeconfig is not text")?;
                let kc = kube::config::Kubeconfig::from_yaml(&yaml)
                    .context("reading the stored kubeconfig")?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .context("using the stored kubeconfig")?
            }
        };
        kube::Client::try_from(config).context("making a Kubernetes client")
    }
}

impl Connector for KubeconfigConnector {
    fn client<'a>(&'a self, cluster: &'a Cluster) -> BoxFuture<'a, anyhow::Result<kube::Client>> {
        Box::pin(async move {
            if let Some(c) = self
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&cluster.id)
            {
                return Ok(c.clone());
            }
            let client = self.build(cluster).await?;
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(cluster.id, client.clone());
            Ok(client)
        })
    }
}
