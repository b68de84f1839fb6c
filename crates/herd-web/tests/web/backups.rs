//! A tenant's backups in the console and on /metrics: the records the status sync copied,
//! the alert of a failed backup on the tenant's page, and each tenant's backup age.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_k8s::crd::Instance;
use herd_testkit::TestApp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn the_console_shows_a_tenants_backups_and_alert_and_metrics_their_age(pool: PgPool) {
    let app = TestApp::spawn_with(pool, |c| c.auto_approve_invoice_orders = true).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    owner.get("/o/lyon/order").await.assert_status(200);
    owner
        .post(
            "/o/lyon/order",
            &[
                ("plan", "community"),
                ("app", "mastodon"),
                ("domain", "lyon.social"),
                ("payment", "invoice"),
                ("billing_address", "Ville de Lyon\n69001 Lyon"),
                ("vat_id", ""),
                ("po_reference", ""),
            ],
        )
        .await
        .assert_redirect("/o/lyon/orders/");
    let op = app.operator("ops@provider.example").await;
    let cluster = app.connect_cluster(&op, "eu-1").await;
    let (id, slug): (Uuid, String) = sqlx::query_as("SELECT id, slug FROM instances")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let api: Api<Instance> = Api::namespaced(cluster.client.clone(), "herd-system");
    // Two hours ago, to the second.
    let rfc = &time::format_description::well_known::Rfc3339;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let finished = now - time::Duration::hours(2);
    let started = finished - time::Duration::seconds(150);
    let (started, finished_text) = (started.format(rfc).unwrap(), finished.format(rfc).unwrap());
    let record = |name: &str, outcome: &str, message: Option<&str>| {
        json!({
            "name": name, "reason": "Scheduled", "method": "Dump", "outcome": outcome,
            "startedAt": started, "finishedAt": finished_text,
            "durationSeconds": 150, "sizeBytes": 2_097_152,
            "location": format!("s3://herd-backups/herd/scheduled/keep-7d/{slug}/x/"),
            "checksum": "ef".repeat(32), "message": message,
        })
    };
    api.patch_status(
        &slug,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": {
            "phase": "Running", "runningVersion": "v4.7.6",
            "backups": [
                record("scheduled-backup-2", "Failed", Some("BackoffLimitExceeded: Job has reached the specified backoff limit")),
                record("scheduled-backup-1", "Succeeded", None),
            ],
        }})),
    )
    .await
    .unwrap();
    app.sync_clusters().await;

    let page = op.get(&format!("/operator/instances/{id}")).await;
    page.assert_status(200);
    page.assert_contains("id=\"backup-alert\"")
        .assert_contains("backup scheduled-backup-2 (dump) failed: BackoffLimitExceeded")
        .assert_contains(&format!(
            "Last successful backup: {:04}-{:02}-{:02} {:02}:{:02} UTC",
            finished.year(),
            u8::from(finished.month()),
            finished.day(),
            finished.hour(),
            finished.minute()
        ))
        .assert_contains("2.0 MiB")
        .assert_contains("2m 30s")
        .assert_contains("manifest sha256 efefefefefef");
    assert!(
        !page.body.contains("id=\"media-bucket\""),
        "media on a volume"
    );

    // Media in object storage: where, and the bucket's versioning as last read.
    api.patch(
        &slug,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "mediaS3": {
            "bucket": "lyon-media", "endpoint": "https://s3.fr-par.scw.cloud", "secretRef": "media-s3",
        }}})),
    )
    .await
    .unwrap();
    api.patch_status(
        &slug,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "mediaBucket": {
                "bucket": "lyon-media", "endpoint": "https://s3.fr-par.scw.cloud",
                "versioning": "Off", "checkedAt": finished_text,
        }}})),
    )
    .await
    .unwrap();
    app.sync_clusters().await;
    op.get(&format!("/operator/instances/{id}"))
        .await
        .assert_contains("id=\"media-bucket\"")
        .assert_contains("Media: in object storage, bucket lyon-media, not copied by the backups; its versioning is off");
    // Operators only (others are told there is nothing there).
    owner
        .get(&format!("/operator/instances/{id}"))
        .await
        .assert_status(404);

    let m = app.client().get("/metrics").await;
    m.assert_status(200);
    let line = m
        .body
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "herd_tenant_backup_age_seconds{{tenant=\"{slug}\"}}"
            ))
        })
        .unwrap_or_else(|| panic!("{}", m.body));
    let age: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((7200..7300).contains(&age), "{line}");
}
