//! "Import a server" in the console (issue 12): only operators with two-factor
//! authentication, behind CSRF; bad input comes back with a message and changes nothing;
//! a manifest of another domain is refused; a good import makes the tenant, its restore,
//! the apply job and an audit entry; the old server's secrets are in no response and no
//! record but their sealed copy.
#![expect(clippy::unwrap_used, reason = "tests")]

use herd_testkit::{Client, Resp, TestApp};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::path::Path;
use uuid::Uuid;

const OPS: &str = "ops@provider.example";

fn secret_key_base() -> String {
    "5ec7".repeat(32)
}

fn otp_secret() -> String {
    "07b0".repeat(32)
}

const AR_PRIMARY: &str = "PrimaryKeyOfTheOldServer00000001";

/// Writes an import prepared for `domain` under `imports/<id>/`; returns its manifest's
/// SHA-256.
fn prepared(dir: &Path, id: &str, domain: &str, version: Option<&str>) -> String {
    let at = dir.join("imports").join(id);
    std::fs::create_dir_all(&at).unwrap();
    let dump = b"PGDMP";
    std::fs::write(at.join("database.dump.000"), dump).unwrap();
    let manifest = format!(
        "# Herd import, format 2\n# app mastodon\n{}# domain {domain}\n# piece database.dump.000 {} bytes\n{}  database.dump.000\n",
        version.map(|v| format!("# version {v}\n")).unwrap_or_default(),
        dump.len(),
        hex::encode(Sha256::digest(dump))
    );
    std::fs::write(at.join("manifest.txt"), &manifest).unwrap();
    hex::encode(Sha256::digest(manifest.as_bytes()))
}

async fn counts(pool: &PgPool) -> (i64, i64, i64) {
    let q = |sql: &'static str| async move {
        sqlx::query_scalar::<_, i64>(sql)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    (
        q("SELECT count(*) FROM instances").await,
        q("SELECT count(*) FROM tenant_restores").await,
        q("SELECT count(*) FROM audit_log WHERE action LIKE 'fleet.instance.import%'").await,
    )
}

/// The form's fields, with `changes` over a good import of lyon.social.
fn fields<'a>(
    changes: &[(&'a str, &'a str)],
    keep: &'a (String, String),
) -> Vec<(&'a str, &'a str)> {
    let mut f: Vec<(&str, &str)> = vec![
        ("import_id", "lyon-2026"),
        ("app", "mastodon"),
        ("version", ""),
        ("org", "lyon"),
        ("plan", "community"),
        ("domain", "lyon.social"),
        ("slug", "lyon-social"),
        ("secret_key_base", &keep.0),
        ("otp_secret", &keep.1),
        ("vapid_private_key", ""),
        ("vapid_public_key", ""),
        ("ar_primary_key", AR_PRIMARY),
        ("ar_deterministic_key", ""),
        ("ar_key_derivation_salt", ""),
        ("confirm", "lyon.social"),
    ];
    for (k, v) in changes {
        f.retain(|(n, _)| n != k);
        f.push((k, v));
    }
    f
}

fn no_secret(r: &Resp) {
    for s in [secret_key_base(), otp_secret(), AR_PRIMARY.to_owned()] {
        assert!(!r.body.contains(&s), "a secret came back in a response");
    }
}

/// The tenant an accepted import made: where the answer sends the operator.
fn tenant_made(r: &Resp) -> Uuid {
    assert_eq!(r.status, 303, "{}", r.body);
    r.location
        .as_deref()
        .unwrap()
        .strip_prefix("/operator/instances/")
        .unwrap()
        .parse()
        .unwrap()
}

async fn post(op: &Client, f: &[(&str, &str)]) -> Resp {
    op.get("/operator/imports/new").await.assert_status(200);
    let r = op.post("/operator/imports", f).await;
    no_secret(&r);
    r
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_operator_imports_a_server_and_its_secrets_never_come_back(pool: PgPool) {
    let dir = std::env::temp_dir().join(format!("herd-imports-{}", Uuid::now_v7()));
    let store = herd_fleet::exports::ExportStore::local(&dir).unwrap();
    let sum = prepared(&dir, "lyon-2026", "lyon.social", Some("v4.7.6"));
    prepared(&dir, "paris-2026", "paris.social", Some("v4.7.6"));
    prepared(&dir, "unnamed", "lyon.social", None);
    let app = TestApp::spawn_with(pool.clone(), move |c| c.exports = store).await;
    let owner = app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    let keep = (secret_key_base(), otp_secret());
    let good = fields(&[], &keep);

    // A customer: the console does not exist.
    owner.get("/operator/imports/new").await.assert_status(404);
    owner.get("/o/lyon/members").await;
    owner
        .post("/operator/imports", &good)
        .await
        .assert_status(404);
    // An operator without two-factor authentication: refused.
    let half = app.signed_up("Half", "half@provider.example", None).await;
    sqlx::query("UPDATE users SET is_operator = true WHERE email = 'half@provider.example'")
        .execute(&pool)
        .await
        .unwrap();
    half.get("/operator/imports/new").await.assert_status(403);
    half.get("/account").await;
    half.post("/operator/imports", &good)
        .await
        .assert_status(403);
    assert_eq!(counts(&pool).await, (0, 0, 0));

    let op = app.operator(OPS).await;
    // The form: labelled fields, the way in from the tenants' list, no secret value.
    op.get("/operator/instances")
        .await
        .assert_contains("href=\"/operator/imports/new\"");
    let form = op.get("/operator/imports/new").await;
    form.assert_status(200)
        .assert_contains("<label for=\"secret_key_base\">")
        .assert_contains("<label for=\"confirm\">")
        .assert_contains("None: outside billing");
    // Without the form's token: refused.
    op.post_raw("/operator/imports", &good)
        .await
        .assert_status(403);
    assert_eq!(counts(&pool).await, (0, 0, 0));

    // Bad input comes back with a message, the secrets cleared, and changes nothing.
    let refused = [
        (
            vec![("confirm", "lyon.socia")],
            "To confirm, type the domain",
        ),
        (
            vec![("import_id", "paris-2026")],
            "the import is of paris.social",
        ),
        (vec![("import_id", "nowhere")], "no manifest.txt"),
        (
            vec![("import_id", "unnamed")],
            "does not name its version; give the one the old server ran",
        ),
        (vec![("import_id", "../lyon-2026")], "Import:"),
        (vec![("secret_key_base", "")], "SECRET_KEY_BASE: paste"),
        (
            vec![("otp_secret", "0123")],
            "OTP_SECRET: not in the format",
        ),
        (
            vec![("org", "nobody")],
            "no organization has that short name",
        ),
        (vec![("app", "gotosocial")], "only Mastodon"),
        (
            vec![("version", "v4.6.0")],
            "not a Mastodon release the provider lists",
        ),
        (vec![("slug", "Lyon Social!")], "Short name:"),
    ];
    for (changes, message) in refused {
        let r = post(&op, &fields(&changes, &keep)).await;
        assert_eq!(r.status, 422, "{changes:?}: {}", r.body);
        r.assert_contains(message);
        // The fields come back, the secrets do not.
        if !changes.iter().any(|(k, _)| *k == "org") {
            assert_eq!(r.field_value("org").as_deref(), Some("lyon"));
        }
        assert!(r
            .field_value("secret_key_base")
            .unwrap_or_default()
            .is_empty());
        assert!(r.field_value("confirm").unwrap_or_default().is_empty());
        r.assert_contains("paste them again");
        assert_eq!(
            counts(&pool).await,
            (0, 0, 0),
            "{changes:?} changed something"
        );
    }

    // A good import: the tenant, its restore, its apply job, an audit entry.
    let r = post(&op, &good).await;
    let id = tenant_made(&r);
    let (org, order, plan, domain, phase, slug): (
        String,
        Option<Uuid>,
        String,
        String,
        String,
        String,
    ) = sqlx::query_as(
        "SELECT o.slug, i.order_id, i.plan_code, i.domain, i.phase, i.slug
             FROM instances i JOIN organizations o ON o.id = i.org_id WHERE i.id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (
            org.as_str(),
            order,
            plan.as_str(),
            domain.as_str(),
            phase.as_str(),
            slug.as_str()
        ),
        (
            "lyon",
            None,
            "community",
            "lyon.social",
            "queued",
            "lyon-social"
        )
    );
    let (mode, source, location, manifest, sealed): (
        String,
        Option<Uuid>,
        String,
        Option<String>,
        Option<Vec<u8>>,
    ) = sqlx::query_as(
        "SELECT mode, source_instance_id, location, manifest_sha256, import_secrets
             FROM tenant_restores WHERE instance_id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(mode, "import");
    assert_eq!(source, None);
    assert!(location.ends_with("/imports/lyon-2026/"), "{location}");
    assert_eq!(manifest.as_deref(), Some(sum.as_str()));
    let sealed = sealed.expect("the secrets, sealed");
    assert!(!sealed
        .windows(secret_key_base().len())
        .any(|w| w == secret_key_base().as_bytes()));
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'fleet.apply_instance' AND payload->>'instance_id' = $1::text",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(jobs, 1);
    let audit: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT target, details FROM audit_log WHERE action = 'fleet.instance.import_requested'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].0, "lyon.social");
    assert_eq!(audit[0].1["import"], "lyon-2026");
    assert_eq!(
        audit[0].1["secrets_supplied"],
        serde_json::json!([
            "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY",
            "OTP_SECRET",
            "SECRET_KEY_BASE"
        ])
    );
    // The secrets are in no record but their sealed copy.
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT details::text FROM audit_log
         UNION ALL SELECT message FROM instance_events
         UNION ALL SELECT payload::text FROM jobs
         UNION ALL SELECT row_to_json(r)::text FROM (SELECT id, location, source_backup, message, manifest_sha256 FROM tenant_restores) r",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for s in [secret_key_base(), otp_secret(), AR_PRIMARY.to_owned()] {
        assert!(
            texts.iter().all(|t| !t.contains(&s)),
            "a secret in a record"
        );
    }

    // Its page follows the import as a restore.
    let page = op.get(&format!("/operator/instances/{id}")).await;
    page.assert_status(200).assert_contains("imports/lyon-2026");
    no_secret(&page);

    // The domain is now taken: a second import of it is refused, and changes nothing.
    let again = post(&op, &fields(&[("slug", "lyon-two")], &keep)).await;
    assert_eq!(again.status, 422, "{}", again.body);
    again.assert_contains("used by another server");
    assert_eq!(counts(&pool).await, (1, 1, 1));
}

/// An order of organization `org` (by short name) for `domain`, paid by invoice.
async fn order(pool: &PgPool, org: &str, domain: &str, plan: &str, state: &str) -> Uuid {
    order_paid_by(pool, org, domain, plan, state, true).await
}

async fn order_paid_by(
    pool: &PgPool,
    org: &str,
    domain: &str,
    plan: &str,
    state: &str,
    invoice: bool,
) -> Uuid {
    let org_id: Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE slug = $1")
        .bind(org)
        .fetch_one(pool)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let (id, _) = herd_store::billing::create_order(
        &mut conn,
        &herd_store::billing::NewOrder {
            org: herd_domain::OrgId(org_id),
            plan_code: plan,
            app: "mastodon",
            domain,
            created_by: None,
            invoice: invoice.then_some(herd_store::billing::InvoiceDetails {
                billing_address: "1 place de la Comédie, Lyon",
                vat_id: "",
                po_reference: "",
            }),
            domain_preverified: false,
            submission: None,
        },
    )
    .await
    .unwrap();
    sqlx::query("UPDATE orders SET state = $2 WHERE id = $1")
        .bind(id)
        .bind(state)
        .execute(pool)
        .await
        .unwrap();
    id
}

#[sqlx::test(migrator = "herd_store::MIGRATOR")]
async fn an_import_is_billed_under_the_organizations_order(pool: PgPool) {
    let dir = std::env::temp_dir().join(format!("herd-imports-{}", Uuid::now_v7()));
    let store = herd_fleet::exports::ExportStore::local(&dir).unwrap();
    prepared(&dir, "lyon-2026", "lyon.social", Some("v4.7.6"));
    let app = TestApp::spawn_with(pool.clone(), move |c| c.exports = store).await;
    app.signed_up("Léa", "lea@lyon.example", Some("Lyon")).await;
    app.signed_up("Paul", "paul@paris.example", Some("Paris"))
        .await;
    let pending = order(&pool, "lyon", "lyon.social", "community", "pending").await;
    let theirs = order(&pool, "paris", "lyon.social", "community", "pending").await;
    let other_domain = order(&pool, "lyon", "other.social", "community", "pending").await;
    let abandoned = order(&pool, "lyon", "lyon.social", "community", "abandoned").await;
    // A card order not paid yet: its Checkout may still expire.
    let unpaid = order_paid_by(&pool, "lyon", "lyon.social", "community", "pending", false).await;
    let op = app.operator(OPS).await;
    let keep = (secret_key_base(), otp_secret());

    // The form offers the orders without a server, not an abandoned one.
    let form = op.get("/operator/imports/new").await;
    form.assert_status(200)
        .assert_contains("<label for=\"order\">")
        .assert_contains(&format!("value=\"{pending}\""))
        .assert_contains(&format!("value=\"{theirs}\""))
        .assert_contains("invoice order awaiting approval")
        .assert_contains("None: outside billing");
    assert!(!form.body.contains(&abandoned.to_string()));
    assert!(!form.body.contains(&unpaid.to_string()));

    let (pending_s, theirs_s, other_s, abandoned_s, unpaid_s) = (
        pending.to_string(),
        theirs.to_string(),
        other_domain.to_string(),
        abandoned.to_string(),
        unpaid.to_string(),
    );
    let refused = [
        (
            vec![("order", theirs_s.as_str())],
            "the organization has no such order",
        ),
        (
            vec![("order", other_s.as_str())],
            "it is for other.social, and the import is of lyon.social",
        ),
        (vec![("order", abandoned_s.as_str())], "it was abandoned"),
        (vec![("order", unpaid_s.as_str())], "it is not paid yet"),
        (
            vec![("order", pending_s.as_str()), ("plan", "organization")],
            "Plan: the order is for plan community",
        ),
        (vec![("order", "not-an-order")], "Order: choose one"),
    ];
    for (changes, message) in refused {
        let r = post(&op, &fields(&changes, &keep)).await;
        assert_eq!(r.status, 422, "{changes:?}: {}", r.body);
        r.assert_contains(message);
        assert_eq!(
            r.field_value("confirm").unwrap_or_default(),
            "",
            "{changes:?}"
        );
        // The order chosen stays chosen, offered or not: never silently "none".
        let chosen = changes.iter().find(|(k, _)| *k == "order").unwrap().1;
        assert!(
            r.body
                .contains(&format!("<option value=\"{chosen}\" selected>")),
            "{changes:?}"
        );
        assert_eq!(
            counts(&pool).await,
            (0, 0, 0),
            "{changes:?} changed something"
        );
    }

    // Under its own pending order: the server is that order's.
    let r = post(&op, &fields(&[("order", pending_s.as_str())], &keep)).await;
    let id = tenant_made(&r);
    let billed: Option<Uuid> = sqlx::query_scalar("SELECT order_id FROM instances WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(billed, Some(pending));
    let details: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE action = 'fleet.instance.import_requested'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(details["order"], pending_s.as_str());
    // No longer offered.
    let form = op.get("/operator/imports/new").await;
    assert!(!form.body.contains(&pending_s));

    // Declined, the server would run outside billing: refused, nothing changed.
    let op_id: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(OPS)
        .fetch_one(&pool)
        .await
        .unwrap();
    let declined = herd_billing::fulfil::decline_invoice_order(
        &pool,
        herd_billing::fulfil::Approver {
            id: herd_domain::UserId(op_id),
            email: OPS,
            ip: "192.0.2.1",
        },
        pending,
        "no",
    )
    .await;
    assert!(
        matches!(
            declined,
            Err(herd_billing::fulfil::ApprovalError::HasServer)
        ),
        "{declined:?}"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM orders WHERE id = $1")
        .bind(pending)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "pending");

    // Approving the order fulfils it with the imported server, not a new one; its
    // contract's access policy now covers the server.
    let approved = herd_billing::fulfil::approve_invoice_order(&pool, None, pending)
        .await
        .unwrap();
    let servers: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM instances")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(servers, [id], "no second server");
    let subject = herd_billing::invoicing::contract_subject(approved.contract);
    assert_eq!(
        herd_store::fleet::instances_of_subject(&pool, &subject)
            .await
            .unwrap(),
        [id]
    );
}
