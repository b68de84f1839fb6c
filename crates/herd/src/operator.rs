//! `herd operator`: the Kubernetes operator, with /metrics and /healthz.

use crate::cli::OperatorArgs;
use anyhow::{bail, Context};
use axum::routing::get;
use herd_k8s::operator::{self, Settings};
use herd_k8s::render::backup::BackupTarget;
use herd_k8s::render::ClusterSettings;
use std::time::Duration;

/// The backup target from the arguments: both bucket and endpoint, or neither.
pub fn backup_target(args: &OperatorArgs) -> anyhow::Result<Option<BackupTarget>> {
    match (&args.backup_s3_bucket, &args.backup_s3_endpoint) {
        (None, None) => Ok(None),
        (Some(bucket), Some(endpoint)) => {
            let Some(recipient) = &args.backup_secrets_recipient else {
                bail!("set HERD_BACKUP_SECRETS_RECIPIENT (an age recipient, age1…) with the backup bucket: backups carry the tenants' app secrets sealed to it");
            };
            herd_k8s::seal::recipient(recipient)?;
            Ok(Some(BackupTarget {
                bucket: bucket.clone(),
                endpoint: endpoint.clone(),
                prefix: args.backup_s3_prefix.clone(),
                region: args.backup_s3_region.clone(),
                secrets_recipient: recipient.trim().to_owned(),
            }))
        }
        _ => bail!("set both HERD_BACKUP_S3_BUCKET and HERD_BACKUP_S3_ENDPOINT, or neither"),
    }
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let backup = backup_target(&args)?;
    if backup.is_none() {
        tracing::warn!(
            "no backup target: deleting an Instance will wait for one (see HERD_BACKUP_S3_BUCKET)"
        );
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster service account, or KUBECONFIG)")?;
    let has_cloudnative_pg = match operator::has_cloudnative_pg(&client).await {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for the CloudNativePG CRD; using StatefulSets for `Auto` databases");
            false
        }
    };
    // CloudNativePG's instances must reach the API server: without its addresses their
    // NetworkPolicy would go (pruned from every tenant), so the operator does not start.
    let api_server = match operator::api_server_endpoints(&client).await {
        Ok(found) if !found.is_empty() => found,
        Ok(_) if has_cloudnative_pg => bail!("the `kubernetes` Service in `default` has no endpoints, so CloudNativePG tenants could not be allowed to reach the API server; not starting"),
        Err(e) if has_cloudnative_pg => {
            return Err(anyhow::Error::new(e).context("reading the API server's endpoints (EndpointSlices of default/kubernetes; the Role herd-operator-api-endpoints allows it), which CloudNativePG tenants' NetworkPolicy needs; not starting"))
        }
        Ok(_) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the API server's endpoints; CloudNativePG is not installed, so no tenant needs them now");
            Vec::new()
        }
    };
    let settings = Settings {
        cluster: ClusterSettings {
            ingress_class: args.ingress_class.clone(),
            ingress_namespace: args.ingress_namespace.clone(),
            cluster_issuer: args.cluster_issuer.clone(),
            has_cloudnative_pg,
            media_shared_storage_class: args.media_shared_storage_class.clone(),
            cnpg_namespace: args.cnpg_namespace.clone(),
            node_local_dns: args.node_local_dns.clone(),
            api_server,
            backup: backup.clone(),
        },
        namespace: args.namespace.clone(),
        backup,
        backup_credentials_secret: args.backup_secret.clone(),
    };
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("herd-operator-{}", std::process::id()));

    let metrics = herd_web::metrics::handle();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { metrics.render() }));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "serving /metrics and /healthz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });

    operator::run(
        client,
        settings,
        &identity,
        Duration::from_secs(args.lease_seconds.max(5)),
    )
    .await?;
    Ok(())
}
