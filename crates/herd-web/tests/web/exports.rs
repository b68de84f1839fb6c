//! A customer's export (issue 12), through the router and the worker, the cluster a
//! kube-fake-client and the bucket a temporary directory the test writes as the operator
//! would: an owner asks (once at a time, only while the server runs), the apply carries
//! `spec.export`, the sync records `status.export` and emails the owners, and each file
//! downloads whole, checked against the manifest while it streams. A flipped byte fails
//! the download and withdraws the export; expired links are gone; other organizations
//! see nothing; members without the capability and forms without CSRF are refused.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_k8s::crd::Instance;
use herd_testkit::fake_cluster::FakeCluster;
use herd_testkit::{Client, TestApp, PASSWORD};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use uuid::Uuid;

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

async fn audited(pool: &PgPool, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = $1")
        .bind(action)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn outcome(pool: &PgPool, export: Uuid) -> String {
    sqlx::query_scalar("SELECT outcome FROM tenant_exports WHERE id = $1")
        .bind(export)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A test's world: the app reading exports from `dir`, organization "lyon" with server
/// `id` (`slug`) on cluster eu-1, its owner.
struct World {
    app: TestApp,
    owner: Client,
    cluster: FakeCluster,
    id: Uuid,
    slug: String,
    dir: PathBuf,
}

impl World {
    async fn new(pool: PgPool) -> Self {
        let dir = std::env::temp_dir().join(format!("herd-exports-{}", Uuid::now_v7()));
        let store = herd_fleet::exports::ExportStore::local(&dir).unwrap();
        let app = TestApp::spawn_with(pool, move |c| {
            c.auto_approve_invoice_orders = true;
            c.exports = store;
        })
        .await;
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
        World {
            app,
            owner,
            cluster,
            id,
            slug,
            dir,
        }
    }

    fn api(&self) -> Api<Instance> {
        Api::namespaced(self.cluster.client.clone(), "herd-system")
    }

    fn page(&self) -> String {
        format!("/o/lyon/servers/{}", self.id)
    }

    /// The operator reports `status` (merged); the control plane syncs.
    async fn report(&self, status: serde_json::Value) {
        self.api()
            .patch_status(
                &self.slug,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .unwrap();
        self.app.sync_clusters().await;
    }

    async fn running(&self) {
        self.report(
            json!({ "phase": "Running", "url": "https://lyon.social", "runningVersion": "v4.7.6" }),
        )
        .await;
    }

    /// The owner asks for an export; returns its id.
    async fn ask(&self) -> Uuid {
        self.owner.get(&self.page()).await.assert_status(200);
        self.owner
            .post(&format!("{}/exports", self.page()), &[])
            .await
            .assert_redirect(&self.page());
        sqlx::query_scalar("SELECT id FROM tenant_exports ORDER BY requested_at DESC LIMIT 1")
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }

    fn export_dir(&self, export: Uuid) -> PathBuf {
        self.dir
            .join("exports")
            .join(&self.slug)
            .join(export.to_string())
    }

    /// Writes export `export` as the operator does (pieces, then the manifest), reports
    /// it succeeded and syncs. Returns (manifest, database dump, media archive).
    async fn taken(&self, export: Uuid) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        self.taken_with(export, None, None).await
    }

    /// [`World::taken`], with the sealed app secrets when `sealed` is given, the cluster
    /// reporting them sealed to `sealed_to`.
    async fn taken_with(
        &self,
        export: Uuid,
        sealed: Option<&[u8]>,
        sealed_to: Option<&str>,
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let dir = self.export_dir(export);
        std::fs::create_dir_all(&dir).unwrap();
        let dump: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let media: Vec<u8> = (0..3_000u32).map(|i| (i * 13 % 256) as u8).collect();
        let mut pieces = vec![
            ("database.dump.000", &dump[..6_000]),
            ("database.dump.001", &dump[6_000..]),
            ("media.tar.000", &media[..]),
        ];
        if let Some(sealed) = sealed {
            pieces.push(("app-secrets.env.age", sealed));
        }
        let mut manifest = format!(
            "# Herd export, format 2\n# tenant: {} (lyon.social), mastodon v4.7.6\n# pieces: concatenate {{artifact}}.000, .001, … in order; check with `sha256sum -c manifest.txt`\n",
            self.slug
        );
        for (name, bytes) in &pieces {
            std::fs::write(dir.join(name), bytes).unwrap();
            manifest.push_str(&format!("# piece {name} {} bytes\n", bytes.len()));
        }
        for (name, bytes) in &pieces {
            manifest.push_str(&format!("{}  {name}\n", sha(bytes)));
        }
        std::fs::write(dir.join("manifest.txt"), &manifest).unwrap();
        let rfc = &time::format_description::well_known::Rfc3339;
        let now = time::OffsetDateTime::now_utc().format(rfc).unwrap();
        self.report(json!({ "export": {
            "id": export.to_string(), "outcome": "Succeeded",
            "location": format!("s3://herd-backups/herd/exports/{}/{export}/", self.slug),
            "startedAt": now, "finishedAt": now, "sizeBytes": 13_000,
            "checksum": sha(manifest.as_bytes()), "secretsSealedTo": sealed_to,
        }}))
        .await;
        (manifest.into_bytes(), dump, media)
    }

    /// `who` sends the export form with its key and password fields; returns the page
    /// it lands back on.
    async fn ask_sealed(&self, who: &Client, key: &str, password: &str) -> String {
        who.post(
            &format!("{}/exports", self.page()),
            &[("secrets_recipient", key), ("credential", password)],
        )
        .await
        .assert_redirect(&self.page());
        who.get(&self.page()).await.body.clone()
    }

    fn file(&self, export: Uuid, name: &str) -> String {
        format!("{}/exports/{export}/{name}", self.page())
    }
}

fn flip_a_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_owner_takes_an_export_and_downloads_each_file_whole(pool: PgPool) {
    let w = World::new(pool.clone()).await;

    // Not while the server is still being set up.
    w.owner
        .get(&w.page())
        .await
        .assert_contains("An export can be taken while the server is running or suspended");
    w.owner
        .post(&format!("{}/exports", w.page()), &[])
        .await
        .assert_redirect(&w.page());
    w.owner
        .get(&w.page())
        .await
        .assert_contains("An export can be taken only while the server is running or suspended");
    assert_eq!(count(&pool, "SELECT count(*) FROM tenant_exports").await, 0);

    // Running: asked for, with its apply job and audit entry, in one go.
    w.running().await;
    w.owner
        .get(&w.page())
        .await
        .assert_contains("Take an export");
    let applies =
        "SELECT count(*) FROM jobs WHERE kind = 'fleet.apply_instance' AND state = 'queued'";
    assert_eq!(count(&pool, applies).await, 0);
    let export = w.ask().await;
    assert_eq!(outcome(&pool, export).await, "requested");
    assert_eq!(count(&pool, applies).await, 1);
    assert_eq!(audited(&pool, "fleet.instance.export_requested").await, 1);
    w.app.run_jobs().await;
    let spec = w.api().get(&w.slug).await.unwrap().spec;
    assert_eq!(spec.export.map(|e| e.id), Some(export.to_string()));

    // A second ask says so and changes nothing.
    w.owner
        .post(&format!("{}/exports", w.page()), &[])
        .await
        .assert_redirect(&w.page());
    w.owner
        .get(&w.page())
        .await
        .assert_contains("An export of this server is already being taken");
    assert_eq!(count(&pool, "SELECT count(*) FROM tenant_exports").await, 1);
    assert_eq!(audited(&pool, "fleet.instance.export_requested").await, 1);

    // The cluster reports it taken: recorded, with a link for 7 days, and emailed.
    let (manifest, dump, media) = w.taken(export).await;
    assert_eq!(outcome(&pool, export).await, "succeeded");
    let (size, days): (Option<i64>, f64) = sqlx::query_as(
        "SELECT size_bytes, extract(epoch FROM expires_at - now())::float8 / 86400 FROM tenant_exports WHERE id = $1",
    )
    .bind(export)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(size, Some(13_000));
    assert!((6.9..7.01).contains(&days), "{days}");
    let mail = w.app.last_mail_to("lea@lyon.example").await;
    assert!(
        mail.subject.contains("export of lyon.social is ready"),
        "{}",
        mail.subject
    );
    assert!(
        mail.body
            .contains(&format!("{}/o/lyon/servers/{}", w.app.base, w.id)),
        "{}",
        mail.body
    );
    // The apply after it no longer asks for it.
    w.app.run_jobs().await;

    let page = w.owner.get(&w.page()).await;
    page.assert_contains("Ready")
        .assert_contains(&w.file(export, "manifest.txt"))
        .assert_contains(&w.file(export, "database.dump"))
        .assert_contains(&w.file(export, "media.tar"));

    for (name, want) in [
        ("manifest.txt", &manifest),
        ("database.dump", &dump),
        ("media.tar", &media),
    ] {
        let d = w.owner.download(&w.file(export, name)).await;
        assert_eq!(d.status, 200, "{name}");
        assert_eq!(d.body_error, None, "{name}");
        assert_eq!(&d.bytes, want, "{name}");
        assert_eq!(d.header("content-length"), want.len().to_string(), "{name}");
        assert!(
            d.header("content-disposition").starts_with("attachment;"),
            "{name}: {}",
            d.header("content-disposition")
        );
    }
    assert_eq!(audited(&pool, "fleet.instance.export_downloaded").await, 3);
    assert_eq!(
        count(&pool, "SELECT download_count::bigint FROM tenant_exports").await,
        3
    );
    // No such file.
    assert_eq!(
        w.owner
            .download(&w.file(export, "app-secrets.env.age"))
            .await
            .status,
        404
    );
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_flipped_byte_fails_the_download_and_withdraws_the_export(pool: PgPool) {
    let w = World::new(pool.clone()).await;
    w.running().await;
    let export = w.ask().await;
    w.app.run_jobs().await;
    let (_, dump, _) = w.taken(export).await;
    // The last piece: every byte but its last chunk would already be out.
    flip_a_byte(&w.export_dir(export).join("database.dump.001"), 3_999);

    // The server ends the response with an error: after its headers (status 200, the
    // whole length announced) or, when the bad piece comes first, before them.
    let d = w.owner.download(&w.file(export, "database.dump")).await;
    assert!(
        d.body_error.is_some(),
        "the client must see a failed download, got {} bytes",
        d.bytes.len()
    );
    if d.status != 0 {
        assert_eq!(d.status, 200);
        assert_eq!(d.header("content-length"), dump.len().to_string());
    }
    assert_eq!(outcome(&pool, export).await, "corrupt");
    let page = w.owner.get(&w.page()).await;
    page.assert_contains("Corrupt (failed its integrity check)")
        .assert_contains("An export failed its integrity check and is withdrawn");
    // Not served any more, and a new export may be asked for.
    let again = w.owner.download(&w.file(export, "manifest.txt")).await;
    assert_eq!(again.status, 409);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_manifest_that_does_not_match_its_checksum_is_refused(pool: PgPool) {
    let w = World::new(pool.clone()).await;
    w.running().await;
    let export = w.ask().await;
    w.app.run_jobs().await;
    w.taken(export).await;
    let manifest = w.export_dir(export).join("manifest.txt");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("# an extra line\n");
    std::fs::write(&manifest, text).unwrap();

    for name in ["manifest.txt", "media.tar"] {
        let d = w.owner.download(&w.file(export, name)).await;
        assert_eq!(d.status, 409, "{name}");
        assert!(String::from_utf8_lossy(&d.bytes).contains("failed its integrity check"));
    }
    assert_eq!(outcome(&pool, export).await, "corrupt");
    assert_eq!(audited(&pool, "fleet.instance.export_downloaded").await, 0);
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn expired_links_are_gone_and_only_the_organizations_managers_download(pool: PgPool) {
    let w = World::new(pool.clone()).await;
    w.running().await;

    // A member without the capability may neither ask nor download.
    let member = w.app.signed_up("Max", "max@lyon.example", None).await;
    w.app.join("lyon", "max@lyon.example", "member").await;
    member.get(&w.page()).await.assert_status(200);
    member
        .post(&format!("{}/exports", w.page()), &[])
        .await
        .assert_status(403);
    assert_eq!(count(&pool, "SELECT count(*) FROM tenant_exports").await, 0);

    // Without the form's token nothing is asked.
    let r = w
        .owner
        .post_raw(&format!("{}/exports", w.page()), &[])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(count(&pool, "SELECT count(*) FROM tenant_exports").await, 0);

    let export = w.ask().await;
    w.app.run_jobs().await;
    w.taken(export).await;
    let path = w.file(export, "manifest.txt");
    assert_eq!(w.owner.download(&path).await.status, 200);
    assert_eq!(member.download(&path).await.status, 403);

    // Another organization's owner: nothing there, under either organization's name.
    let other = w
        .app
        .signed_up("Nina", "nina@nice.example", Some("Nice"))
        .await;
    assert_eq!(other.download(&path).await.status, 404);
    let theirs = format!("/o/nice/servers/{}/exports/{export}/manifest.txt", w.id);
    assert_eq!(other.download(&theirs).await.status, 404);
    assert_eq!(audited(&pool, "fleet.instance.export_downloaded").await, 1);

    // Past its expiry: gone.
    sqlx::query("UPDATE tenant_exports SET expires_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    let d = w.owner.download(&path).await;
    assert_eq!(d.status, 410);
    assert!(String::from_utf8_lossy(&d.bytes).contains("link has expired"));
    w.owner
        .get(&w.page())
        .await
        .assert_contains("Expired")
        .assert_contains("expired on");
    assert_eq!(audited(&pool, "fleet.instance.export_downloaded").await, 1);
}

/// A suspended server (for non-payment too) still lets its organization take its data
/// away: its database keeps running. A server on its way to deletion does not.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_suspended_server_can_be_exported(pool: PgPool) {
    let w = World::new(pool.clone()).await;
    w.running().await;
    sqlx::query("UPDATE instances SET desired = 'suspended', billing_hold = true")
        .execute(&pool)
        .await
        .unwrap();
    w.report(json!({ "phase": "Suspended", "runningVersion": "v4.7.6" }))
        .await;
    w.owner
        .get(&w.page())
        .await
        .assert_contains("Take an export");
    let export = w.ask().await;
    assert_eq!(outcome(&pool, export).await, "requested");
    assert_eq!(audited(&pool, "fleet.instance.export_requested").await, 1);

    sqlx::query("UPDATE tenant_exports SET outcome = 'failed', finished_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE instances SET desired = 'deleted'")
        .execute(&pool)
        .await
        .unwrap();
    w.owner
        .post(&format!("{}/exports", w.page()), &[])
        .await
        .assert_redirect(&w.page());
    assert_eq!(count(&pool, "SELECT count(*) FROM tenant_exports").await, 1);
}

/// An owner may have an export carry the server's app secrets, sealed to an age public
/// key of their own: only a valid public key, only an owner, only with her password; a
/// private identity pasted by
/// mistake is refused and kept nowhere. The recipient reaches `spec.export`, the audit log
/// and the history; the sealed file is offered with the others. The next export without
/// a key carries none.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_owner_has_the_secrets_sealed_into_an_export_to_their_own_key(pool: PgPool) {
    let w = World::new(pool.clone()).await;
    w.running().await;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let exports = format!("{}/exports", w.page());
    let none = "SELECT count(*) FROM tenant_exports";
    w.owner
        .get(&w.page())
        .await
        .assert_contains("Your age public key, to include the server's secrets");

    // An admin manages servers but may not take the secrets away.
    let admin = w.app.signed_up("Ana", "ana@lyon.example", None).await;
    w.app.join("lyon", "ana@lyon.example", "admin").await;
    let page = admin.get(&w.page()).await;
    page.assert_contains("Take an export");
    assert!(
        !page.body.contains("secrets_recipient"),
        "no field for an admin"
    );
    let page = w.ask_sealed(&admin, &recipient, PASSWORD).await;
    assert!(
        page.contains("only an owner of the organization can have an export carry"),
        "{page}"
    );
    assert_eq!(count(&pool, none).await, 0);

    // A private identity is refused, and never kept or shown.
    use age::secrecy::ExposeSecret;
    let private = identity.to_string().expose_secret().to_owned();
    // (The key is checked before the password: none is asked for a refused key.)
    let page = w.ask_sealed(&w.owner, &private, "").await;
    assert!(page.contains("that is a private identity"), "{page}");
    assert!(!page.contains(&private));
    let kept: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM audit_log WHERE details::text ILIKE '%' || $1 || '%')
              + (SELECT count(*) FROM instance_events WHERE message ILIKE '%' || $1 || '%')",
    )
    .bind(&private)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(kept, 0);
    // Nor anything that is not a public key.
    for bad in [
        "age1nope",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    ] {
        let page = w.ask_sealed(&w.owner, bad, "").await;
        assert!(page.contains("not an age public key"), "{page}");
    }
    assert_eq!(count(&pool, none).await, 0);

    // A good key, but without the owner's password, or with a wrong one: refused, nothing
    // asked.
    for (credential, says) in [
        ("", "Enter your password."),
        ("not it", "That is not your password."),
    ] {
        let page = w.ask_sealed(&w.owner, &recipient, credential).await;
        assert!(page.contains(&format!("Your password: {says}")), "{page}");
    }
    assert_eq!(count(&pool, none).await, 0);

    // The owner's key, pasted with spaces around it, and her password.
    w.ask_sealed(&w.owner, &format!("  {recipient}\n"), PASSWORD)
        .await;
    let (export, kept): (Uuid, Option<String>) =
        sqlx::query_as("SELECT id, secrets_recipient FROM tenant_exports")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kept.as_deref(), Some(recipient.as_str()));
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'fleet.instance.export_requested'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(details["secrets_recipient"], recipient.as_str());
    w.app.run_jobs().await;
    let spec = w.api().get(&w.slug).await.unwrap().spec.export.unwrap();
    assert_eq!(spec.id, export.to_string());
    assert_eq!(spec.secrets_recipient.as_deref(), Some(recipient.as_str()));
    w.owner.get(&w.page()).await.assert_contains(&format!(
        "Export requested, with the app secrets sealed to {recipient}"
    ));

    // Taken: the sealed file is offered beside the others, and downloads whole.
    let sealed = age::encrypt(&identity.to_public(), b"SECRET_KEY_BASE=abc\n").unwrap();
    w.taken_with(export, Some(&sealed), Some(&recipient)).await;
    w.owner
        .get(&w.page())
        .await
        .assert_contains(&w.file(export, "app-secrets.env.age"))
        .assert_contains("With the server's secrets, sealed to");
    let d = w
        .owner
        .download(&w.file(export, "app-secrets.env.age"))
        .await;
    assert_eq!((d.status, d.body_error.as_deref()), (200, None));
    assert_eq!(d.bytes, sealed);
    assert_eq!(
        age::decrypt(&identity, &d.bytes).unwrap(),
        b"SECRET_KEY_BASE=abc\n"
    );

    // The email says so.
    w.app.run_jobs().await;
    let mail = w.app.last_mail_to("lea@lyon.example").await;
    assert!(
        mail.body.contains(&format!(
            "app-secrets.env.age, sealed to the age key {recipient}"
        )),
        "{}",
        mail.body
    );

    // A cluster that took an export asked with a key but sealed nothing (an operator
    // older than the control plane): failed, never offered as having the secrets.
    w.ask_sealed(&w.owner, &recipient, PASSWORD).await;
    let older: Uuid =
        sqlx::query_scalar("SELECT id FROM tenant_exports ORDER BY requested_at DESC LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_ne!(older, export);
    w.app.run_jobs().await;
    w.taken_with(older, None, None).await;
    assert_eq!(outcome(&pool, older).await, "failed");
    let why: String = sqlx::query_scalar("SELECT message FROM tenant_exports WHERE id = $1")
        .bind(older)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(why.contains("did not seal the server's secrets"), "{why}");
    let page = w.owner.get(&w.page()).await;
    assert!(!page.body.contains(&w.file(older, "database.dump")));

    // A GoToSocial server has none to carry: refused, and no field offered.
    sqlx::query("UPDATE instances SET app = 'gotosocial'")
        .execute(&pool)
        .await
        .unwrap();
    assert!(!w
        .owner
        .get(&w.page())
        .await
        .body
        .contains("secrets_recipient"));
    let page = w.ask_sealed(&w.owner, &recipient, PASSWORD).await;
    assert!(
        page.contains("only a Mastodon server has secrets to carry"),
        "{page}"
    );
    sqlx::query("UPDATE instances SET app = 'mastodon'")
        .execute(&pool)
        .await
        .unwrap();

    // The next export, without a key, asks the cluster for none.
    w.owner.post(&exports, &[]).await.assert_redirect(&w.page());
    w.app.run_jobs().await;
    let spec = w.api().get(&w.slug).await.unwrap().spec.export.unwrap();
    assert_ne!(spec.id, export.to_string());
    assert_eq!(spec.secrets_recipient, None);
}

/// An export with the secrets is announced to every owner when it is asked for, naming
/// who asked and the key; admins are not told, and an export without a key announces
/// nothing until it is ready.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn every_owner_is_told_when_an_export_with_the_secrets_is_asked_for(pool: PgPool) {
    let w = World::new(pool.clone()).await;
    w.running().await;
    w.app.signed_up("Paul", "paul@lyon.example", None).await;
    w.app.join("lyon", "paul@lyon.example", "owner").await;
    w.app.signed_up("Ana", "ana@lyon.example", None).await;
    w.app.join("lyon", "ana@lyon.example", "admin").await;
    let notices = |mails: &[herd_mail::OutboxMessage]| {
        mails
            .iter()
            .filter(|m| m.subject.contains("with its secrets was asked for"))
            .map(|m| m.to.clone())
            .collect::<Vec<_>>()
    };

    // Without a key: no notice.
    let exports = format!("{}/exports", w.page());
    w.owner.post(&exports, &[]).await.assert_redirect(&w.page());
    w.app.run_jobs().await;
    assert_eq!(notices(&w.app.mails().await), Vec::<String>::new());
    w.taken(
        sqlx::query_scalar("SELECT id FROM tenant_exports")
            .fetch_one(&pool)
            .await
            .unwrap(),
    )
    .await;

    // With one: both owners are told, the asker too, at once (before it is taken).
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    w.ask_sealed(&w.owner, &recipient, PASSWORD).await;
    w.app.run_jobs().await;
    let mut told = notices(&w.app.mails().await);
    told.sort();
    assert_eq!(told, ["lea@lyon.example", "paul@lyon.example"]);
    let mail = w.app.last_mail_to("paul@lyon.example").await;
    assert!(
        mail.body.contains("lea@lyon.example asked on")
            && mail.body.contains(&recipient)
            && mail.body.contains(&format!("{}#exports", w.page())),
        "{}",
        mail.body
    );
}

/// The owner check is made again inside the export's transaction, on the role as stored:
/// a member demoted after the request was let in (the role it carries still says owner)
/// is refused, and nothing is asked.
#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn a_demoted_owner_is_refused_the_secrets_whatever_the_request_carries(pool: PgPool) {
    let w = World::new(pool.clone()).await;
    w.running().await;
    w.app.signed_up("Paul", "paul@lyon.example", None).await;
    w.app.join("lyon", "paul@lyon.example", "owner").await;
    let (org, paul): (Uuid, Uuid) = sqlx::query_as(
        "SELECT o.id, u.id FROM organizations o, users u
         WHERE o.slug = 'lyon' AND u.email = 'paul@lyon.example'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // Paul asks for an export with the secrets, his request saying he is an owner.
    let ask = {
        let (pool, id) = (pool.clone(), w.id);
        let recipient = age::x25519::Identity::generate().to_public().to_string();
        move || {
            let (pool, recipient) = (pool.clone(), recipient.clone());
            async move {
                herd_fleet::exports::request(
                    &pool,
                    herd_domain::OrgId(org),
                    herd_fleet::clusters::Actor {
                        id: herd_domain::UserId(paul),
                        email: "paul@lyon.example",
                        ip: "192.0.2.7",
                    },
                    herd_domain::Role::Owner,
                    id,
                    herd_fleet::exports::Ask {
                        secrets_recipient: Some(&recipient),
                        link_days: 7,
                        base_url: "https://herd.example",
                    },
                )
                .await
                .map_err(|e| e.to_string())
            }
        }
    };
    // A demotion being written when the export is asked: the export waits for it, reads
    // the role it leaves, and is refused.
    let mut demotion = pool.begin().await.unwrap();
    sqlx::query("UPDATE memberships SET role = 'admin' WHERE user_id = $1")
        .bind(paul)
        .execute(&mut *demotion)
        .await
        .unwrap();
    let asking = tokio::spawn(ask());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !asking.is_finished(),
        "the export waits for the role being changed"
    );
    demotion.commit().await.unwrap();
    let refused = asking.await.unwrap().unwrap_err();
    assert!(
        refused.contains("only an owner of the organization"),
        "{refused}"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM tenant_exports").await, 0);

    // Demoted, while the request still says owner.
    let refused = ask().await.unwrap_err();
    assert!(
        refused.contains("only an owner of the organization"),
        "{refused}"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM tenant_exports").await, 0);
    // An owner by the stored role is let through.
    sqlx::query("UPDATE memberships SET role = 'owner' WHERE user_id = $1")
        .bind(paul)
        .execute(&pool)
        .await
        .unwrap();
    ask().await.unwrap();
    assert_eq!(count(&pool, "SELECT count(*) FROM tenant_exports").await, 1);
}
