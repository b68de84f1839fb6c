//! The real connector (not the tests' fake clusters): a cluster's sealed kubeconfig is
//! opened with HERD_ENCRYPTION_KEY, bound to the cluster's name, and the client it makes
//! talks to the address it names with its credentials — checked against a small HTTP
//! server standing in for the API server.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_domain::ClusterHealth;
use herd_fleet::seal::{kubeconfig_purpose, SealKey};
use herd_orchestrator::{Connector, KubeconfigConnector};
use herd_store::fleet::Cluster;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers every request with Kubernetes' `/version`; keeps the requests' heads.
async fn api_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let body = r#"{"major":"1","minor":"34","gitVersion":"v1.34.1","gitCommit":"x","gitTreeState":"clean","buildDate":"2026-01-01T00:00:00Z","goVersion":"go1.24","compiler":"gc","platform":"linux/amd64"}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

fn kubeconfig(port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: u\n  user:\n    token: s3cr3t-token\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    )
}

fn cluster(name: &str, sealed: Option<Vec<u8>>) -> Cluster {
    Cluster {
        id: uuid::Uuid::now_v7(),
        name: name.into(),
        region: "eu".into(),
        kubeconfig_sealed: sealed,
        operator_namespace: "herd-system".into(),
        capacity: 10,
        cordoned: false,
        health: ClusterHealth::Unknown,
        health_message: None,
        kubernetes_version: None,
        operator_version: None,
        checked_at: None,
        created_at: time::OffsetDateTime::now_utc(),
        instances: 0,
    }
}

#[tokio::test]
async fn a_sealed_kubeconfig_reaches_its_cluster_with_its_credentials_and_only_under_its_name() {
    // As `herd` does at start-up, before any TLS-capable client is made.
    herd_billing::stripe_api::install_crypto_provider();
    let (port, seen) = api_server().await;
    let key = SealKey::from_base64(&SealKey::generate_base64()).unwrap();
    let sealed = key.seal(&kubeconfig_purpose("eu-1"), kubeconfig(port).as_bytes());
    let connector = KubeconfigConnector::new(Some(key.clone()));

    let client = connector
        .client(&cluster("eu-1", Some(sealed.clone())))
        .await
        .unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.34.1");
    let requests = seen.lock().unwrap().clone();
    assert!(requests[0].starts_with("GET /version"), "{requests:?}");
    assert!(
        requests[0]
            .to_ascii_lowercase()
            .contains("authorization: bearer s3cr3t-token"),
        "{requests:?}"
    );

    // The same sealed bytes under another cluster's name do not open.
    let err = connector
        .client(&cluster("eu-2", Some(sealed.clone())))
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("opening the stored kubeconfig"),
        "{err:#}"
    );
    // Nor without the key.
    let err = KubeconfigConnector::new(None)
        .client(&cluster("eu-1", Some(sealed)))
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("HERD_ENCRYPTION_KEY"),
        "{err:#}"
    );
}
