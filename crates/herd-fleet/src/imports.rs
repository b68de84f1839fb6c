//! Importing a server (issue 12): an operator creates a tenant from an export prepared for
//! import (`herd import prepare`, from a Herd export or a standard Mastodon install's
//! `pg_dump` and `public/system` tree), uploaded under the backup bucket's
//! `imports/<id>/`. An import is a restore into a new tenant without a source tenant
//! ([`crate::restores`]): the new tenant, its restore (mode `import`), the apply job and
//! the audit entry are written in one transaction ([`import`]).
//!
//! Mastodon ties every account to its domain (`LOCAL_DOMAIN` never changes), so the new
//! server keeps the one the manifest names. The old install's app secrets
//! (`SECRET_KEY_BASE`, `OTP_SECRET`, and the VAPID and Active Record encryption keys when
//! it had them) are sealed with `HERD_ENCRYPTION_KEY` until the orchestrator writes them
//! into the new namespace's `app-secrets`, before the operator first reconciles it; they
//! are wiped from the database then.
//!
//! An import is not tied to an order: the server it makes is outside billing (not billed,
//! not suspended with its organization), like a restore into a new tenant.

use crate::clusters::Actor;
use crate::exports::ExportStore;
use crate::jobs::ApplyInstance;
use crate::seal::SealKey;
use crate::FleetError;
use herd_domain::export::{Manifest, MANIFEST};
use herd_domain::instance::owner_username;
use herd_domain::version::{check_upgrade, App};
use herd_domain::{DomainName, OrgId, Role, Slug};
use herd_store::audit::{self, NewEntry};
use herd_store::fleet::{self, EventKind, NewInstance};
use herd_store::imports::{self as store, NewImport};
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

/// The app secrets an import takes from the old install, by their names in the
/// tenant's `app-secrets` Secret (and in Mastodon's `.env.production`). The first two are
/// required; what is not supplied is generated as for a new server.
pub const SECRET_KEY_BASE: &str = "SECRET_KEY_BASE";
pub const OTP_SECRET: &str = "OTP_SECRET";
pub const VAPID_PRIVATE_KEY: &str = "VAPID_PRIVATE_KEY";
pub const VAPID_PUBLIC_KEY: &str = "VAPID_PUBLIC_KEY";
pub const AR_PRIMARY_KEY: &str = "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY";
pub const AR_DETERMINISTIC_KEY: &str = "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY";
pub const AR_KEY_DERIVATION_SALT: &str = "ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT";

/// Every secret an import may supply, the required ones first.
pub const SUPPLIED: [&str; 7] = herd_domain::export::PORTABLE_SECRETS;

/// The required ones.
pub const REQUIRED: [&str; 2] = [SECRET_KEY_BASE, OTP_SECRET];

/// The purpose an import's secrets are sealed for: the restore they belong to.
pub fn secrets_purpose(restore: Uuid) -> String {
    format!("herd:import-secrets:{restore}")
}

/// The old install's app secrets, by name; its `Debug` never shows the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("keys", &self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// The non-empty values among `pairs` whose names are [`SUPPLIED`] (trimmed; other
    /// names ignored).
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .filter(|(k, v)| SUPPLIED.contains(k) && !v.trim().is_empty())
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The names supplied (never the values).
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }

    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Refuses a value not in the format Mastodon makes it in (and the cluster's operator
    /// reads back, `herd_k8s::secrets`): `SECRET_KEY_BASE` and `OTP_SECRET` 128 hex
    /// digits, VAPID keys URL-safe base64 (a private key of 32 bytes, a public one of 65),
    /// the Active Record keys 32 letters and digits; a VAPID public key needs its private
    /// one. The message names the key, never the value.
    pub fn check(&self) -> Result<(), String> {
        use base64::engine::general_purpose::URL_SAFE;
        use base64::Engine;
        for (name, v) in &self.0 {
            let ok = match name.as_str() {
                SECRET_KEY_BASE | OTP_SECRET => {
                    v.len() == 128
                        && v.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                }
                VAPID_PRIVATE_KEY => {
                    v.len() == 44 && URL_SAFE.decode(v).is_ok_and(|b| b.len() == 32)
                }
                VAPID_PUBLIC_KEY => {
                    v.len() == 88
                        && URL_SAFE
                            .decode(v)
                            .is_ok_and(|b| b.len() == 65 && b[0] == 0x04)
                }
                _ => v.len() == 32 && v.bytes().all(|b| b.is_ascii_alphanumeric()),
            };
            if !ok {
                return Err(format!(
                    "{name}: not in the format Mastodon makes it in; paste it exactly as .env.production has it."
                ));
            }
        }
        if self.get(VAPID_PUBLIC_KEY).is_some() && self.get(VAPID_PRIVATE_KEY).is_none() {
            return Err(format!(
                "{VAPID_PUBLIC_KEY}: give its {VAPID_PRIVATE_KEY} too, or neither."
            ));
        }
        Ok(())
    }

    /// Reads what [`Secrets::seal`] sealed for `restore`.
    pub fn open(key: &SealKey, restore: Uuid, sealed: &[u8]) -> Result<Self, FleetError> {
        let plain = key.open(&secrets_purpose(restore), sealed)?;
        let map: BTreeMap<String, String> = serde_json::from_slice(&plain)
            .map_err(|_| FleetError::Invalid("the sealed import secrets are unreadable".into()))?;
        Ok(Self(map))
    }

    fn seal(&self, key: &SealKey, restore: Uuid) -> Result<Vec<u8>, FleetError> {
        let plain = serde_json::to_vec(&self.0)
            .map_err(|_| FleetError::Invalid("the import secrets cannot be sealed".into()))?;
        Ok(key.seal(&secrets_purpose(restore), &plain))
    }
}

/// What the operator asks for.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The organization's short name.
    pub org: &'a str,
    pub plan: &'a str,
    pub app: &'a str,
    /// The version the new server runs: empty for the manifest's, or a later one the
    /// upgrade rule allows from it (the restore migrates the database to it).
    pub version: &'a str,
    /// Must be the manifest's domain.
    pub domain: &'a str,
    /// The new tenant's short name.
    pub slug: &'a str,
    /// The import's directory under the bucket's `imports/`.
    pub import_id: &'a str,
    /// The domain, typed again to confirm.
    pub confirm: &'a str,
    pub secrets: &'a Secrets,
    /// The order the server is billed under (its id), or empty: outside billing. An order
    /// of the organization for this domain, plan and app without a live server: paid or
    /// approved (its server could not be made, or was deleted), or paid by invoice and
    /// awaiting approval (its approval then fulfils it with this server).
    pub order: &'a str,
}

/// What an import made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub instance: Uuid,
    pub restore: Uuid,
}

/// The header of a manifest prepared for import: `# app <app>`, `# version <version>`,
/// `# domain <domain>` lines (a Herd export's `# tenant: <slug> (<domain>), <app>
/// <version>` line is read too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub app: Option<String>,
    pub version: Option<String>,
    pub domain: Option<String>,
}

impl Header {
    pub fn parse(text: &str) -> Self {
        let mut h = Header::default();
        let mut tenant: Option<(String, String, String)> = None;
        for line in text.lines() {
            let Some(comment) = line.trim_end_matches('\r').strip_prefix('#') else {
                continue;
            };
            let comment = comment.trim();
            let (word, rest) = comment
                .split_once(char::is_whitespace)
                .unwrap_or((comment, ""));
            let rest = rest.trim();
            let value = || Some(rest.to_owned()).filter(|v| !v.is_empty() && !v.contains(' '));
            match word.trim_end_matches(':') {
                "app" if h.app.is_none() => h.app = value().map(|v| v.to_ascii_lowercase()),
                "version" if h.version.is_none() => h.version = value(),
                "domain" if h.domain.is_none() => h.domain = value(),
                "tenant" if tenant.is_none() => {
                    // `lyon-social (lyon.social), mastodon v4.3.2`
                    let parsed = rest.split_once('(').and_then(|(_, r)| {
                        let (domain, r) = r.split_once(')')?;
                        let mut words = r.trim_start_matches(',').split_whitespace();
                        Some((
                            domain.trim().to_owned(),
                            words.next()?.to_ascii_lowercase(),
                            words.next()?.to_owned(),
                        ))
                    });
                    tenant = parsed;
                }
                _ => {}
            }
        }
        if let Some((domain, app, version)) = tenant {
            h.domain.get_or_insert(domain);
            h.app.get_or_insert(app);
            h.version.get_or_insert(version);
        }
        h
    }
}

/// Is `id` a name for an import's directory: letters, digits, `-`, `_`, `.`, at most
/// 100, not starting with a dot?
fn valid_import_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where the operator reads import `id`: `<store's base>imports/<id>/` (for the backup
/// bucket, `s3://bucket/<prefix>imports/<id>/`).
pub fn location(exports: &ExportStore, id: &str) -> String {
    let base = exports.place();
    if base.ends_with('/') {
        format!("{base}imports/{id}/")
    } else {
        format!("{base}/imports/{id}/")
    }
}

fn invalid(m: impl Into<String>) -> FleetError {
    FleetError::Invalid(m.into())
}

/// Checks that order `id` may bill the imported server, under its row lock and
/// fulfilment's: the organization's, for its domain, plan and Mastodon, without a live
/// server, and either paid or approved already, or paid by invoice and awaiting approval
/// (a card order not paid yet may expire, leaving the server under an abandoned order). A
/// deleted server still naming it gives it up.
async fn billed_under(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    org: Uuid,
    plan: &str,
    domain: &str,
) -> Result<(), FleetError> {
    let o = herd_store::billing::lock_order(&mut *conn, id)
        .await?
        .filter(|o| o.org_id == org)
        .ok_or_else(|| {
            invalid("Order: the organization has no such order; choose one of its orders listed, or none.")
        })?;
    if o.app != App::Mastodon.as_str() {
        return Err(invalid(format!(
            "Order: it is for {}, not Mastodon.",
            o.app
        )));
    }
    herd_store::lock_key(&mut *conn, &format!("fulfil:{id}")).await?;
    match (o.state.as_str(), o.payment.as_str()) {
        ("fulfilled", _) | ("pending", "invoice") => {}
        ("pending", _) => {
            return Err(invalid(
                "Order: it is not paid yet, and its card payment may still fail or expire; import under it once paid (delete the new server its payment made first), or choose another.",
            ))
        }
        _ => return Err(invalid("Order: it was abandoned; choose another, or none.")),
    }
    if !o.domain.eq_ignore_ascii_case(domain) {
        return Err(invalid(format!(
            "Order: it is for {}, and the import is of {domain}.",
            o.domain
        )));
    }
    if o.plan_code != plan {
        return Err(invalid(format!(
            "Plan: the order is for plan {}; choose it.",
            o.plan_code
        )));
    }
    if fleet::live_by_order(&mut *conn, id).await?.is_some() {
        return Err(invalid(
            "Order: it has a server already; delete that server first, or choose another.",
        ));
    }
    fleet::release_order_of_deleted(&mut *conn, id).await?;
    Ok(())
}

/// Creates a tenant of organization `req.org` from import `req.import_id`: checks the
/// request, reads the import's manifest from the bucket (its SHA-256 goes into
/// `spec.restore.manifestSha256`; refused when missing, of another domain or app, or of a
/// version the requested one cannot migrate from), seals the supplied secrets, and writes
/// the new instance (queued, billed under `req.order` when given, else outside billing), its restore, the apply job and an audit
/// entry (`fleet.instance.import_requested`, naming the secrets supplied, never their
/// values) in one transaction.
pub async fn import(
    pool: &PgPool,
    exports: &ExportStore,
    key: Option<&SealKey>,
    by: Actor<'_>,
    req: &Request<'_>,
) -> Result<Imported, FleetError> {
    let org = herd_store::orgs::by_slug(pool, req.org.trim())
        .await?
        .ok_or_else(|| invalid("Organization: no organization has that short name."))?;
    let plan = herd_store::plans::by_code(pool, req.plan.trim())
        .await?
        .ok_or_else(|| invalid("Plan: choose one of the plans listed."))?;
    if App::parse(req.app.trim()) != Some(App::Mastodon) {
        return Err(invalid("App: only Mastodon servers are imported."));
    }
    let slug = Slug::parse(req.slug.trim()).map_err(|e| invalid(format!("Short name: {e}")))?;
    let domain =
        DomainName::parse(req.domain.trim()).map_err(|e| invalid(format!("Domain: {e}")))?;
    let chosen = Some(req.version.trim()).filter(|v| !v.is_empty());
    if chosen.is_some_and(|v| herd_domain::version::Version::parse(v).is_none()) {
        return Err(invalid(
            "Version: use a version like v4.7.6, or leave it empty.",
        ));
    }
    let import_id = req.import_id.trim();
    if !valid_import_id(import_id) {
        return Err(invalid(
            "Import: the name of its directory under imports/ (letters, digits, '-', '_', '.').",
        ));
    }
    for name in REQUIRED {
        if req.secrets.get(name).is_none() {
            return Err(invalid(format!(
                "{name}: paste the old server's value (from its .env.production)."
            )));
        }
    }
    req.secrets.check().map_err(invalid)?;
    if req.confirm.trim().to_ascii_lowercase() != domain.as_str() {
        return Err(invalid(format!(
            "To confirm, type the domain: {}",
            domain.as_str()
        )));
    }
    let order = match req.order.trim() {
        "" => None,
        o => Some(
            Uuid::parse_str(o)
                .map_err(|_| invalid("Order: choose one of the orders listed, or none."))?,
        ),
    };
    let key = key.ok_or_else(|| {
        invalid("Herd cannot keep the app secrets without HERD_ENCRYPTION_KEY; set it first.")
    })?;
    let owner = herd_store::orgs::members(pool, org.id())
        .await?
        .into_iter()
        .find(|m| m.role == Role::Owner)
        .ok_or_else(|| {
            invalid("Organization: it has no owner to become the server's owner; invite one first.")
        })?;

    // The manifest, as the operator will read it.
    let manifest_key = ObjectPath::from(format!("imports/{import_id}/{MANIFEST}"));
    let text = match exports.read_small(&manifest_key).await {
        Ok(t) => t,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(invalid(format!(
                "Import: no {MANIFEST} in {}; upload what `herd import prepare` made there first.",
                location(exports, import_id)
            )))
        }
        Err(e) => {
            tracing::warn!(import = import_id, error = %e, "import manifest unreadable");
            return Err(invalid(
                "Import: its manifest cannot be read from the bucket just now; try again.",
            ));
        }
    };
    let manifest_sha256 = hex::encode(Sha256::digest(&text));
    let text = String::from_utf8_lossy(&text);
    let manifest = Manifest::parse(&text)
        .map_err(|e| invalid(format!("Import: its manifest is unreadable ({e}).")))?;
    if manifest.artifact("database.dump").is_none() {
        return Err(invalid("Import: its manifest lists no database.dump."));
    }
    let header = Header::parse(&text);
    match header.app.as_deref() {
        Some("mastodon") => {}
        Some(other) => {
            return Err(invalid(format!(
                "Import: it is of {other}, not Mastodon; only Mastodon servers are imported."
            )))
        }
        None => return Err(invalid("Import: its manifest does not name its app.")),
    }
    let Some(their_domain) = header.domain.as_deref() else {
        return Err(invalid("Import: its manifest does not name its domain."));
    };
    if !their_domain.eq_ignore_ascii_case(domain.as_str()) {
        return Err(invalid(format!(
            "Domain: the import is of {their_domain}, not {}; a Mastodon server keeps its domain (LOCAL_DOMAIN) for life.",
            domain.as_str()
        )));
    }
    // The version its database is at; a manifest may not name it (`herd import prepare`
    // without `--version`): then the operator says which to run, and the restore's
    // migrations take the database there from wherever it is.
    let (version, their_version) = match (header.version.as_deref(), chosen) {
        (Some(theirs), chosen) => (chosen.unwrap_or(theirs), theirs),
        (None, Some(chosen)) => (chosen, "an unnamed version"),
        (None, None) => {
            return Err(invalid(
                "Version: the import's manifest does not name its version; give the one the old server ran (or a later one).",
            ))
        }
    };
    let releases = fleet::release_versions(pool, App::Mastodon.as_str()).await?;
    if !releases.is_empty() && !releases.iter().any(|r| r == version) {
        return Err(invalid(format!(
            "Version: {version} is not a Mastodon release the provider lists ({}); choose one the import ({their_version}) can migrate to.",
            releases.join(", ")
        )));
    }
    if let Some(theirs) = header.version.as_deref() {
        check_upgrade(App::Mastodon, theirs, version)
            .map_err(|e| invalid(format!("Version: the import is of {theirs}: {e}")))?;
    }

    let restore = Uuid::now_v7();
    let sealed = req.secrets.seal(key, restore)?;
    let where_ = location(exports, import_id);
    let name = format!("imports/{import_id}");

    let mut tx = pool.begin().await?;
    if let Some(id) = order {
        // The order's row, then fulfilment's lock, in the order an approval or a payment
        // takes them: either runs after the import and finds its server, or before it
        // and the import sees the order has one.
        billed_under(&mut tx, id, org.id, &plan.code, domain.as_str()).await?;
    }
    if fleet::slug_taken(&mut *tx, slug.as_str()).await? {
        return Err(invalid(format!("Short name: {} is taken", slug.as_str())));
    }
    if fleet::domain_in_use(&mut *tx, domain.as_str()).await? {
        return Err(invalid(format!(
            "Domain: {} is used by another server",
            domain.as_str()
        )));
    }
    let instance = match fleet::insert_instance(
        &mut tx,
        &NewInstance {
            org: OrgId(org.id),
            order,
            app: App::Mastodon.as_str(),
            version,
            plan_code: &plan.code,
            slug: slug.as_str(),
            domain: domain.as_str(),
            owner_username: &owner_username(&owner.email),
            owner_email: &owner.email,
            // The operator vouches for the domain: it was the old server's.
            domain_token: None,
        },
    )
    .await
    {
        Ok(id) => id,
        Err(e) if e.is_conflict_on("instances_slug_key") => {
            return Err(invalid(format!("Short name: {} is taken", slug.as_str())))
        }
        Err(e) if e.is_conflict_on("instances_domain_key") => {
            return Err(invalid(format!(
                "Domain: {} is used by another server",
                domain.as_str()
            )))
        }
        Err(e) if e.is_conflict_on("instances_order_id_key") => {
            return Err(invalid(
                "Order: it has a server now; choose another, or none.",
            ))
        }
        Err(e) => return Err(e.into()),
    };
    store::insert(
        &mut tx,
        &NewImport {
            id: restore,
            instance,
            name: &name,
            location: &where_,
            manifest_sha256: &manifest_sha256,
            sealed_secrets: &sealed,
            requested_by: by.id.0,
        },
    )
    .await?;
    fleet::add_event(
        &mut tx,
        instance,
        EventKind::Action,
        &match order {
            Some(o) => format!("Imported from {where_} ({their_version}); billed under order {o}"),
            None => format!("Imported from {where_} ({their_version}); outside billing: no order"),
        },
        Some(by.id.0),
    )
    .await?;
    audit::record(
        &mut tx,
        NewEntry {
            actor: Some((by.id, by.email)),
            org: Some(OrgId(org.id)),
            action: "fleet.instance.import_requested",
            target: domain.as_str().to_owned(),
            source_ip: Some(by.ip),
            details: serde_json::json!({
                "instance": instance,
                "restore": restore,
                "import": import_id,
                "location": where_,
                "manifest_sha256": manifest_sha256,
                "from_version": header.version,
                "version": version,
                "plan": plan.code,
                "order": order,
                "secrets_supplied": req.secrets.names(),
            }),
        },
    )
    .await?;
    herd_jobs::enqueue(
        &mut *tx,
        &ApplyInstance {
            instance_id: instance,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%instance, %restore, import = import_id, "import requested");
    Ok(Imported { instance, restore })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifests_header_names_app_version_and_domain() {
        let h = Header::parse(
            "# Herd import, format 2\n# app mastodon\n# version v4.3.2\n# domain lyon.social\n# piece database.dump.000 5 bytes\n",
        );
        assert_eq!(h.app.as_deref(), Some("mastodon"));
        assert_eq!(h.version.as_deref(), Some("v4.3.2"));
        assert_eq!(h.domain.as_deref(), Some("lyon.social"));
        // A Herd export's tenant line.
        let h = Header::parse(
            "# Herd export, format 2\n# tenant: lyon-social (lyon.social), mastodon v4.7.6\n# version v4.7.6\n",
        );
        assert_eq!(h.domain.as_deref(), Some("lyon.social"));
        assert_eq!(h.app.as_deref(), Some("mastodon"));
        assert_eq!(h.version.as_deref(), Some("v4.7.6"));
        // People's comments name nothing.
        let h = Header::parse("# app secrets: not in an export\n");
        assert_eq!(h.app, None);
    }

    #[test]
    fn secrets_keep_only_the_names_an_import_takes_and_never_show_values() {
        let s = Secrets::new([
            (SECRET_KEY_BASE, " abc "),
            (OTP_SECRET, ""),
            ("DB_PASS", "nope"),
        ]);
        assert_eq!(s.names(), vec![SECRET_KEY_BASE]);
        assert_eq!(s.get(SECRET_KEY_BASE), Some("abc"));
        assert!(!format!("{s:?}").contains("abc"));
        let why = s.check().expect_err("not 128 hex digits");
        assert!(
            why.starts_with(SECRET_KEY_BASE) && !why.contains("abc"),
            "{why}"
        );
        let hex = "0123456789abcdef".repeat(8);
        assert_eq!(
            Secrets::new([(SECRET_KEY_BASE, hex.as_str()), (OTP_SECRET, hex.as_str())]).check(),
            Ok(())
        );
        let key = SealKey::from_base64(&SealKey::generate_base64()).expect("a key");
        let id = Uuid::now_v7();
        let sealed = s.seal(&key, id).expect("sealed");
        assert_eq!(Secrets::open(&key, id, &sealed).expect("opened"), s);
        assert!(Secrets::open(&key, Uuid::now_v7(), &sealed).is_err());
    }

    #[test]
    fn import_ids_are_plain_names() {
        assert!(valid_import_id("lyon-2026.12_07"));
        for bad in ["", "../x", ".hidden", "a/b", "a b", &"x".repeat(101)] {
            assert!(!valid_import_id(bad), "{bad}");
        }
    }
}
