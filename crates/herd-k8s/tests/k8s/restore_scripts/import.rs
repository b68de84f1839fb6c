//! Imports: what `herd import prepare` writes ([`herd_k8s::import::prepare`], which the
//! subcommand calls) from a standard Mastodon install (`pg_dump -Fc` or plain, and its
//! `public/system`) or a Herd export, fetched and restored by the restore Job's real
//! scripts into another database.

use super::store::Store;
use super::{back_up, files, fill, get_urls, media_volume, pg, restore, stderr, Pg, Root, PREFIX};
use herd_k8s::import::{self, Source};
use herd_k8s::render::restore_scripts::{RestoreSummary, RESTORE_DB_SCRIPT};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1024 * 1024;
/// Where an import is uploaded in the store.
const IMPORTS: &str = "herd-backups/final/imports/i1/";

/// `pg_dump` of `db` with `args` into `file`.
fn dump(pg: &Pg, db: &str, args: &[&str], file: &Path) {
    let out = pg
        .env(&mut Command::new("pg_dump"), db)
        .args(args)
        .arg(format!("--file={}", file.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dump: {}", stderr(&out));
}

/// Uploads every file of `dir` under `prefix` in the store, as `aws s3 cp --recursive`.
fn upload(store: &Store, dir: &Path, prefix: &str) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&p, store.file(&format!("/{prefix}{name}"))).unwrap();
    }
}

fn install(dump: PathBuf, media: Option<PathBuf>) -> Source {
    Source::Install {
        dump,
        media,
        domain: "Social.Example.org".into(),
        version: Some("4.3.2".into()),
    }
}

fn sha256(file: &Path) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn a_standard_install_is_prepared_then_restored_with_its_rows_counted() {
    let pg = pg();
    let root = Root::new("import-fc");
    let store = Store::start(&root.dir("store"));
    let source = pg.database("impsrc");
    fill(&pg, &source.name, 1000, 10_000);
    let system = media_volume(&root);
    let file = root.0.join("mastodon.dump");
    dump(&pg, &source.name, &["-Fc"], &file);

    let out = root.0.join("prepared");
    let prepared =
        import::prepare(&install(file.clone(), Some(system.clone())), &out, MIB).unwrap();
    let manifest = std::fs::read_to_string(out.join("manifest.txt")).unwrap();
    assert_eq!(prepared.manifest_sha256, sha256(&out.join("manifest.txt")));
    for line in [
        "# Herd import, format 2",
        "# tenant: - (social.example.org), mastodon v4.3.2",
        "# app mastodon",
        "# domain social.example.org",
        "# version v4.3.2",
    ] {
        assert!(manifest.lines().any(|l| l == line), "{line}: {manifest}");
    }
    assert!(!manifest.contains("# rows "), "{manifest}");
    assert!(
        manifest.contains("  database.dump.001"),
        "in pieces: {manifest}"
    );
    // Every piece at most the piece size, listed with its size and SHA-256.
    let mut joined = Vec::new();
    for (name, size) in &prepared.objects {
        let bytes = std::fs::read(out.join(name)).unwrap();
        assert!(
            bytes.len() as u64 <= MIB && bytes.len() as u64 == *size,
            "{name}"
        );
        assert!(manifest.contains(&format!("# piece {name} {size} bytes")));
        assert!(manifest.contains(&format!("{}  {name}", sha256(&out.join(name)))));
        if name.starts_with("database.dump.") {
            joined.extend(bytes);
        }
    }
    assert_eq!(joined, std::fs::read(&file).unwrap(), "the dump, cut");
    let check = Command::new("sha256sum")
        .args(["-c", "manifest.txt"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(check.status.success(), "sha256sum -c: {}", stderr(&check));

    upload(&store, &out, IMPORTS);
    let urls = root.dir("get-urls");
    get_urls(&store, &urls, IMPORTS);
    let target = pg.database("impdst");
    let restored_media = root.dir("restored-media");
    let r = restore(&pg, &target.name, &root, &urls, &restored_media);
    assert!(r.fetch.status.success(), "fetch: {}", stderr(&r.fetch));
    assert!(
        r.restore.status.success(),
        "restore: {}",
        stderr(&r.restore)
    );
    let summary = RestoreSummary::parse(&r.restore_log);
    assert!(summary.source_rows.is_empty(), "{}", r.restore_log);
    assert_eq!(
        summary.restored_rows,
        [("accounts".into(), 1000), ("statuses".into(), 10_000)].into(),
        "{}",
        r.restore_log
    );
    assert_eq!(summary.mismatch(), None, "counted, not compared");
    assert_eq!(summary.source_version.as_deref(), Some("v4.3.2"));
    assert_eq!(pg.count(&target.name, "statuses"), 10_000);
    assert_eq!(
        pg.count(&target.name, "media_attachments"),
        pg.count(&source.name, "media_attachments")
    );
    assert_eq!(files(&restored_media), files(&system));

    // One damaged piece of the upload: refused, nothing restored.
    let piece = store.file(&format!("/{IMPORTS}database.dump.001"));
    let mut bad = std::fs::read(&piece).unwrap();
    bad[10] ^= 1;
    std::fs::write(&piece, &bad).unwrap();
    let other = pg.database("impdst2");
    let r = restore(&pg, &other.name, &root, &urls, &root.dir("m2"));
    assert!(!r.fetch.status.success());
    assert_eq!(
        r.fetch_log.trim(),
        "database.dump.001 does not match its SHA-256 in the manifest: the backup is damaged; nothing was restored"
    );
    assert!(!r.restore.status.success());
    assert_eq!(
        pg.psql(&other.name, "SELECT to_regclass('public.accounts') IS NULL"),
        "t"
    );
}

#[test]
fn a_plain_dump_with_owners_and_grants_of_roles_gone_is_normalised_and_restored() {
    let pg = pg();
    let root = Root::new("import-plain");
    let store = Store::start(&root.dir("store"));
    let role = format!("herd_rs_{}_owner", std::process::id());
    let file = root.0.join("mastodon.sql");
    {
        let source = pg.database("plainsrc");
        fill(&pg, &source.name, 300, 900);
        pg.psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
        pg.psql("postgres", &format!("CREATE ROLE {role}"));
        pg.psql(
            &source.name,
            &format!("ALTER TABLE accounts OWNER TO {role}; ALTER TABLE statuses OWNER TO {role}; GRANT SELECT ON accounts TO {role}; ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {role}"),
        );
        dump(&pg, &source.name, &["--clean", "--if-exists"], &file);
    }
    // The old install's roles do not exist where the import goes.
    pg.psql("postgres", &format!("DROP ROLE {role}"));
    let sql = std::fs::read_to_string(&file).unwrap();
    assert!(
        sql.contains(&format!("OWNER TO {role};")),
        "the dump has owners"
    );

    // As it is, the restore does not replay it: the database is not touched.
    let target = pg.database("plaindst");
    let scratch = root.dir("restore");
    std::fs::copy(&file, scratch.join("database.dump")).unwrap();
    let raw = pg
        .env(&mut Command::new("sh"), &target.name)
        .args(["-c", RESTORE_DB_SCRIPT])
        .env("SCRATCH", &scratch)
        .env("APP", "mastodon")
        .env("TERMINATION_LOG", root.0.join("raw-log"))
        .output()
        .unwrap();
    assert!(!raw.status.success());
    assert!(
        std::fs::read_to_string(root.0.join("raw-log"))
            .unwrap()
            .contains("pg_restore could not read the dump; the mastodon database was not touched"),
        "{}",
        stderr(&raw)
    );

    let out = root.0.join("prepared");
    import::prepare(&install(file.clone(), None), &out, MIB).unwrap();
    let manifest = std::fs::read_to_string(out.join("manifest.txt")).unwrap();
    assert!(manifest.contains("plain SQL"), "{manifest}");
    assert!(!manifest.contains("media.tar"), "no --media: {manifest}");
    upload(&store, &out, IMPORTS);
    let urls = root.dir("get-urls");
    get_urls(&store, &urls, IMPORTS);
    let r = restore(&pg, &target.name, &root, &urls, &root.dir("m"));
    assert!(r.fetch.status.success(), "fetch: {}", stderr(&r.fetch));
    assert!(
        r.restore.status.success(),
        "restore: {}",
        stderr(&r.restore)
    );
    let summary = RestoreSummary::parse(&r.restore_log);
    assert_eq!(
        summary.restored_rows,
        [("accounts".into(), 300), ("statuses".into(), 900)].into(),
        "{}",
        r.restore_log
    );
    assert_eq!(pg.count(&target.name, "media_attachments"), 300);
    // Owned by the restoring user, as a custom dump restored with --no-owner.
    assert_eq!(
        pg.psql(
            &target.name,
            "SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'accounts'"
        ),
        "t"
    );
}

#[test]
fn a_dump_of_another_database_is_rolled_back() {
    let pg = pg();
    let root = Root::new("import-other");
    let source = pg.database("othersrc");
    pg.psql(
        &source.name,
        "CREATE TABLE invoices (id int); INSERT INTO invoices VALUES (1)",
    );
    let file = root.0.join("other.dump");
    dump(&pg, &source.name, &["-Fc"], &file);
    // prepare refuses it…
    let why = import::prepare(&install(file.clone(), None), &root.0.join("o"), MIB)
        .unwrap_err()
        .to_string();
    assert!(
        why.contains("without Mastodon's accounts and statuses tables"),
        "{why}"
    );
    assert!(!root.0.join("o").exists());
    // …and the restore, given it anyway, leaves the database as it was.
    let target = pg.database("otherdst");
    fill(&pg, &target.name, 5, 7);
    let scratch = root.dir("restore");
    std::fs::copy(&file, scratch.join("database.dump")).unwrap();
    let log = root.0.join("log");
    let out = pg
        .env(&mut Command::new("sh"), &target.name)
        .args(["-c", RESTORE_DB_SCRIPT])
        .env("SCRATCH", &scratch)
        .env("APP", "mastodon")
        .env("TERMINATION_LOG", &log)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stderr(&out));
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        message.contains("rolled back")
            && message.contains(
                "the dump has no accounts and statuses tables: it is not a mastodon database"
            ),
        "{message}"
    );
    assert_eq!(pg.count(&target.name, "accounts"), 5);
    assert_eq!(
        pg.psql(
            &target.name,
            "SELECT to_regclass('public.invoices') IS NULL"
        ),
        "t"
    );
}

#[test]
fn a_herd_export_is_checked_and_kept_as_it_is() {
    let pg = pg();
    let root = Root::new("import-export");
    let store = Store::start(&root.dir("store"));
    let source = pg.database("expsrc");
    fill(&pg, &source.name, 1000, 10_000);
    let media = media_volume(&root);
    let manifest = back_up(&pg, &source.name, &media, &root, &store);
    // Downloaded from the portal: the manifest, the pieces joined.
    let downloaded = root.dir("downloaded");
    std::fs::write(downloaded.join("manifest.txt"), &manifest).unwrap();
    let names: Vec<String> = manifest
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, n)| n.to_owned()))
        .collect();
    for artifact in ["database.dump", "media.tar"] {
        let mut joined = Vec::new();
        for n in names
            .iter()
            .filter(|n| n.starts_with(&format!("{artifact}.")))
        {
            joined.extend(std::fs::read(store.file(&format!("/{PREFIX}{n}"))).unwrap());
        }
        std::fs::write(downloaded.join(artifact), joined).unwrap();
    }
    std::fs::copy(
        store.file(&format!("/{PREFIX}app-secrets.env.age")),
        downloaded.join("app-secrets.env.age"),
    )
    .unwrap();

    let out = root.0.join("prepared");
    let prepared = import::prepare(
        &Source::Export {
            dir: downloaded.clone(),
        },
        &out,
        import::PIECE_BYTES,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.txt")).unwrap(),
        manifest
    );
    assert_eq!(prepared.manifest_sha256, sha256(&out.join("manifest.txt")));
    assert!(prepared.header.rows);
    for n in &names {
        assert_eq!(
            std::fs::read(out.join(n)).unwrap(),
            std::fs::read(store.file(&format!("/{PREFIX}{n}"))).unwrap(),
            "{n}: the export's own piece"
        );
    }
    upload(&store, &out, IMPORTS);
    let urls = root.dir("get-urls");
    get_urls(&store, &urls, IMPORTS);
    let target = pg.database("expdst");
    let r = restore(&pg, &target.name, &root, &urls, &root.dir("m"));
    assert!(
        r.restore.status.success(),
        "restore: {}",
        stderr(&r.restore)
    );
    let summary = RestoreSummary::parse(&r.restore_log);
    assert_eq!(summary.source_rows["accounts"], 1000, "compared");
    assert_eq!(summary.mismatch(), None);

    // A damaged download is refused, and nothing is written.
    let dump = downloaded.join("database.dump");
    let mut bad = std::fs::read(&dump).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&dump, &bad).unwrap();
    let again = root.0.join("again");
    let why = import::prepare(
        &Source::Export { dir: downloaded },
        &again,
        import::PIECE_BYTES,
    )
    .unwrap_err()
    .to_string();
    assert!(
        why.contains("(in database.dump) does not match its SHA-256 in the manifest"),
        "{why}"
    );
    assert!(!again.exists());
    assert!(
        std::fs::read_dir(&root.0).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial")),
        "no partial directory left"
    );
}
