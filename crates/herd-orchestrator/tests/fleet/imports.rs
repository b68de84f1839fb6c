//! Imports (issue 12) through the console and the apply job, against a fake cluster: the
//! old install's app secrets go into the new namespace's `app-secrets` (what was not
//! supplied made new) before the Instance is applied with `spec.restore` naming the
//! import, and are wiped from the database once written.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_k8s::crd::Instance;
use herd_k8s::secrets::{self, AppSecrets};
use herd_testkit::TestApp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use sqlx::PgPool;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Writes an import of lyon.social under `imports/lyon-2026/` (the web tests check the
/// manifest's checksum recorded; here, that the apply carries it).
fn prepared(dir: &std::path::Path) {
    let at = dir.join("imports/lyon-2026");
    std::fs::create_dir_all(&at).unwrap();
    let manifest = format!(
        "# Herd import, format 2\n# app mastodon\n# version v4.7.6\n# domain lyon.social\n# piece database.dump.000 5 bytes\n{}  database.dump.000\n",
        "ab".repeat(32)
    );
    std::fs::write(at.join("manifest.txt"), &manifest).unwrap();
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_import_writes_the_supplied_app_secrets_then_restores_and_forgets_them(pool: PgPool) {
    let dir = std::env::temp_dir().join(format!("herd-imports-{}", Uuid::now_v7()));
    let store = herd_fleet::exports::ExportStore::local(&dir).unwrap();
    prepared(&dir);
    let app = TestApp::spawn_with(pool.clone(), move |c| c.exports = store).await;
    app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let op = app.operator("ops@provider.example").await;
    let eu = app.connect_cluster(&op, "eu-1").await;

    // The old install's secrets, as Mastodon made them; its VAPID public key and two of
    // its Active Record keys are not given.
    let old = AppSecrets::generate();
    let given = |k: &str| old.get(k).unwrap().to_owned();
    op.get("/operator/imports/new").await.assert_status(200);
    let r = op
        .post(
            "/operator/imports",
            &[
                ("import_id", "lyon-2026"),
                ("app", "mastodon"),
                ("version", ""),
                ("org", "lyon"),
                ("plan", "community"),
                ("domain", "lyon.social"),
                ("slug", "lyon-social"),
                ("secret_key_base", &given(secrets::SECRET_KEY_BASE)),
                ("otp_secret", &given(secrets::OTP_SECRET)),
                ("vapid_private_key", &given(secrets::VAPID_PRIVATE_KEY)),
                ("ar_primary_key", &given(secrets::AR_PRIMARY_KEY)),
                ("confirm", "lyon.social"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let id: Uuid = r
        .location
        .as_deref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // The cluster does not answer: the import waits, its secrets kept sealed.
    app.clusters.unplug("eu-1");
    app.run_jobs().await;
    let waiting: Option<String> =
        sqlx::query_scalar("SELECT message FROM tenant_restores WHERE instance_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        waiting
            .as_deref()
            .unwrap_or_default()
            .contains("imported app secrets"),
        "{waiting:?}"
    );
    let still: bool = sqlx::query_scalar(
        "SELECT import_secrets IS NOT NULL FROM tenant_restores WHERE instance_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(still, "kept until written");
    // An earlier attempt wrote the Secret (and the database may have been made with its
    // passwords), then failed before it was recorded: the retry keeps what it generated.
    let earlier = AppSecrets::generate();
    {
        use k8s_openapi::api::core::v1::Namespace;
        use kube::api::{Patch, PatchParams};
        let params = PatchParams::apply("earlier-attempt");
        Api::<Namespace>::all(eu.client.clone())
            .patch(
                "herd-lyon-social",
                &params,
                &Patch::Apply(serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": { "name": "herd-lyon-social" },
                })),
            )
            .await
            .unwrap();
        Api::<Secret>::namespaced(eu.client.clone(), "herd-lyon-social")
            .patch(
                "app-secrets",
                &params,
                &Patch::Apply(Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some("app-secrets".into()),
                        namespace: Some("herd-lyon-social".into()),
                        ..Default::default()
                    },
                    type_: Some("Opaque".into()),
                    data: Some(
                        earlier
                            .data()
                            .iter()
                            .map(|(k, v)| {
                                (k.clone(), k8s_openapi::ByteString(v.clone().into_bytes()))
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
    }

    // It answers: the secrets are written, then the Instance applied.
    app.clusters.plug("eu-1", eu.client.clone());
    herd_fleet::restores::retry_waiting(&pool).await.unwrap();
    app.run_jobs().await;
    let written = Api::<Secret>::namespaced(eu.client.clone(), "herd-lyon-social")
        .get("app-secrets")
        .await
        .unwrap();
    let data: BTreeMap<String, String> = written
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect();
    for k in [
        secrets::SECRET_KEY_BASE,
        secrets::OTP_SECRET,
        secrets::VAPID_PRIVATE_KEY,
        secrets::AR_PRIMARY_KEY,
    ] {
        assert_eq!(
            data.get(k).map(String::as_str),
            old.get(k),
            "{k} as supplied"
        );
    }
    // The public VAPID key follows from the private one; the others are made new, or kept
    // as the earlier attempt made them (the database's and Redis's passwords among them).
    assert_eq!(
        data.get(secrets::VAPID_PUBLIC_KEY).map(String::as_str),
        old.get(secrets::VAPID_PUBLIC_KEY)
    );
    assert_ne!(
        data.get(secrets::AR_DETERMINISTIC_KEY).map(String::as_str),
        old.get(secrets::AR_DETERMINISTIC_KEY)
    );
    for k in [
        secrets::DB_PASS,
        secrets::REDIS_PASSWORD,
        secrets::AR_DETERMINISTIC_KEY,
    ] {
        assert_eq!(
            data.get(k).map(String::as_str),
            earlier.get(k),
            "{k} kept from the earlier attempt"
        );
    }
    // As the cluster's operator reads them back: complete and well formed.
    AppSecrets::from_data(&data).expect("a Secret the operator accepts");

    let applied = Api::<Instance>::namespaced(eu.client.clone(), "herd-system")
        .get("lyon-social")
        .await
        .unwrap();
    let asked = applied.spec.restore.expect("spec.restore");
    assert!(asked.import, "an import");
    assert!(
        asked.source.ends_with("/imports/lyon-2026/"),
        "{}",
        asked.source
    );
    let sum: Option<String> =
        sqlx::query_scalar("SELECT manifest_sha256 FROM tenant_restores WHERE instance_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(sum.as_ref().is_some_and(|s| s.len() == 64));
    assert_eq!(asked.manifest_sha256, sum);
    assert_eq!(asked.source_tenant, None);
    assert_eq!(applied.spec.local_domain, "lyon.social");

    // Written, then wiped from the database.
    let (sealed, written_at): (Option<Vec<u8>>, Option<time::OffsetDateTime>) = sqlx::query_as(
        "SELECT import_secrets, secrets_copied_at FROM tenant_restores WHERE instance_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(sealed.is_none(), "wiped once written");
    assert!(written_at.is_some());

    // The values are in no record the control plane keeps.
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM instance_events
         UNION ALL SELECT details::text FROM audit_log
         UNION ALL SELECT coalesce(message, '') FROM tenant_restores
         UNION ALL SELECT coalesce(last_error, '') FROM jobs
         UNION ALL SELECT coalesce(phase_message, '') || coalesce(last_error, '') FROM instances",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for k in [
        secrets::SECRET_KEY_BASE,
        secrets::OTP_SECRET,
        secrets::AR_PRIMARY_KEY,
    ] {
        let v = old.get(k).unwrap();
        assert!(texts.iter().all(|t| !t.contains(v)), "{k} in a record");
    }

    // A later apply leaves the Secret as it is.
    app.run_jobs().await;
    let again = Api::<Secret>::namespaced(eu.client.clone(), "herd-lyon-social")
        .get("app-secrets")
        .await
        .unwrap();
    assert_eq!(again.data, written.data);
}

/// Purging a tenant keeps the history of the restores made from its backups (the restore
/// into another tenant loses only its source); it used to delete them by cascade.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn purging_a_source_tenant_keeps_the_restores_made_from_it(pool: PgPool) {
    use herd_domain::restore::RestoreMode;
    use herd_store::fleet::{self, NewInstance};
    use herd_store::restores::{self, NewRestore};
    let org = Uuid::now_v7();
    sqlx::query("INSERT INTO organizations (id, slug, name) VALUES ($1, 'lyon', 'Lyon')")
        .bind(org)
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let tenant = |slug: &'static str, domain: &'static str| NewInstance {
        org: herd_domain::OrgId(org),
        order: None,
        app: "mastodon",
        version: "v4.7.6",
        plan_code: "community",
        slug,
        domain,
        owner_username: "owner",
        owner_email: "owner@lyon.example",
        domain_token: None,
    };
    let source = fleet::insert_instance(&mut tx, &tenant("lyon-social", "lyon.social"))
        .await
        .unwrap();
    let copy = fleet::insert_instance(&mut tx, &tenant("lyon-undo", "undo.lyon.social"))
        .await
        .unwrap();
    let restore = restores::insert(
        &mut tx,
        &NewRestore {
            instance: copy,
            source_instance: Some(source),
            source_backup: "scheduled-1",
            location: "s3://herd-backups/herd/scheduled/keep-7d/lyon/scheduled-1/",
            mode: RestoreMode::NewTenant,
            drill: false,
            requested_by: None,
            moves_order: false,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("DELETE FROM instances WHERE id = $1")
        .bind(source)
        .execute(&pool)
        .await
        .unwrap();
    let kept = restores::get(&pool, restore).await.unwrap().expect("kept");
    assert_eq!(kept.source_instance_id, None);
    assert_eq!(kept.instance_id, copy);
    assert_eq!(restores::recent(&pool, copy, 5).await.unwrap().len(), 1);
}

/// A restore into a new tenant keeps naming the source's backups (spec.restore.sourceTenant)
/// once the source is purged: its slug is kept on the restore when it is asked.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_restore_of_a_purged_tenants_backup_still_names_its_source(pool: PgPool) {
    use herd_domain::restore::RestoreMode;
    use herd_store::fleet::{self, NewInstance};
    use herd_store::restores::{self, NewRestore};
    let app = TestApp::spawn(pool.clone()).await;
    app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let op = app.operator("ops@provider.example").await;
    let eu = app.connect_cluster(&op, "eu-1").await;
    let org: Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = 'lyon'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let tenant = |slug: &'static str, domain: &'static str| NewInstance {
        org: herd_domain::OrgId(org),
        order: None,
        app: "mastodon",
        version: "v4.7.6",
        plan_code: "community",
        slug,
        domain,
        owner_username: "owner",
        owner_email: "owner@lyon.example",
        domain_token: None,
    };
    let source = fleet::insert_instance(&mut tx, &tenant("lyon-social", "lyon.social"))
        .await
        .unwrap();
    let copy = fleet::insert_instance(&mut tx, &tenant("lyon-undo", "undo.lyon.social"))
        .await
        .unwrap();
    let restore = restores::insert(
        &mut tx,
        &NewRestore {
            instance: copy,
            source_instance: Some(source),
            source_backup: "final-1",
            location: "s3://herd-backups/herd/lyon-social/final-1/",
            mode: RestoreMode::NewTenant,
            drill: false,
            requested_by: None,
            moves_order: false,
        },
    )
    .await
    .unwrap();
    restores::mark_secrets_copied(&mut *tx, restore)
        .await
        .unwrap();
    sqlx::query("UPDATE instances SET cluster_id = (SELECT id FROM clusters WHERE name = 'eu-1') WHERE id = $1")
        .bind(copy)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The source is purged before the new tenant is applied.
    sqlx::query("DELETE FROM instances WHERE id = $1")
        .bind(source)
        .execute(&pool)
        .await
        .unwrap();
    herd_jobs::enqueue(
        &pool,
        &herd_fleet::jobs::ApplyInstance { instance_id: copy },
    )
    .await
    .unwrap();
    app.run_jobs().await;
    let applied = Api::<Instance>::namespaced(eu.client.clone(), "herd-system")
        .get("lyon-undo")
        .await
        .unwrap();
    let asked = applied.spec.restore.expect("spec.restore");
    assert_eq!(asked.source, "s3://herd-backups/herd/lyon-social/final-1/");
    assert_eq!(
        asked.source_tenant.as_deref(),
        Some("lyon-social"),
        "the purged source's backups, not the new tenant's own"
    );
}
