//! Imports: what `herd import prepare` writes ([`herd_k8s::import::prepare`], which the
//! subcommand calls) from a standard Mastodon install (`pg_dump -Fc`, and its
//! `public/system`) or a Herd export, fetched and restored by the restore Job's real
//! scripts into another database.

use super::store::Store;
use super::{back_up, files, fill, get_urls, media_volume, pg, restore, stderr, Pg, Root, PREFIX};
use crate::common;
use herd_k8s::import::{self, Source};
use herd_k8s::render::restore_scripts::{RestoreSummary, RESTORE_DB_SCRIPT};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1024 * 1024;
/// Where an import is uploaded in the store.
const IMPORTS: &str = "herd-backups/final/imports/i1/";

/// `pg_dump` of `db` with `args` into `file`.
pub(super) fn dump(pg: &Pg, db: &str, args: &[&str], file: &Path) {
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

/// Runs the restore Job's database script into `db` on the dump in `scratch`, with
/// `path` (when given) before `PATH`; its output and termination message.
pub(super) fn restore_db(
    pg: &Pg,
    db: &str,
    scratch: &Path,
    path: Option<&Path>,
) -> (Output, String) {
    let log = scratch.join("termination-log");
    let _ = std::fs::remove_file(&log);
    let mut cmd = common::image_sh();
    pg.env(&mut cmd, db)
        .args(["-c", RESTORE_DB_SCRIPT])
        .env("SCRATCH", scratch)
        .env("APP", "mastodon")
        .env("TERMINATION_LOG", &log);
    if let Some(dir) = path {
        cmd.env(
            "PATH",
            format!("{}:{}", dir.display(), common::image_path()),
        );
    }
    let out = cmd.output().unwrap();
    (out, std::fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn a_custom_dump_with_owners_and_grants_of_roles_gone_is_restored() {
    let pg = pg();
    let root = Root::new("import-owners");
    let store = Store::start(&root.dir("store"));
    let role = format!("herd_rs_{}_owner", std::process::id());
    let file = root.0.join("mastodon.dump");
    {
        let source = pg.database("ownsrc");
        fill(&pg, &source.name, 300, 900);
        pg.psql("postgres", &format!("DROP ROLE IF EXISTS {role}"));
        pg.psql("postgres", &format!("CREATE ROLE {role}"));
        pg.psql(
            &source.name,
            &format!("ALTER TABLE accounts OWNER TO {role}; ALTER TABLE statuses OWNER TO {role}; GRANT SELECT ON accounts TO {role}; ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {role}"),
        );
        dump(&pg, &source.name, &["-Fc"], &file);
    }
    // The old install's roles do not exist where the import goes.
    pg.psql("postgres", &format!("DROP ROLE {role}"));
    let target = pg.database("owndst");
    let out = root.0.join("prepared");
    import::prepare(&install(file.clone(), None), &out, MIB).unwrap();
    let manifest = std::fs::read_to_string(out.join("manifest.txt")).unwrap();
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
    // Owned by the restoring user.
    assert_eq!(
        pg.psql(
            &target.name,
            "SELECT tableowner = current_user FROM pg_tables WHERE tablename = 'accounts'"
        ),
        "t"
    );
}

/// A plain SQL dump of Mastodon's tables that runs `touch <marker>` through psql's `\!`
/// when replayed as it is: after a statement on the same line, and after a line that
/// looks like the start of a `COPY` but is inside a dollar-quoted string.
fn hostile_plain(marker: &Path) -> String {
    let m = marker.display();
    format!(
        "--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE public.accounts (\n    id bigint NOT NULL\n);\nCREATE TABLE public.statuses (\n    id bigint NOT NULL\n);\nSELECT 1; \\! touch {m}\nSELECT $x$\nCOPY public.accounts (id) FROM stdin;\n$x$;\n\\! touch {m}\n\\.\n"
    )
}

#[test]
fn a_plain_dump_is_refused_by_prepare_and_never_replayed_by_the_restore() {
    let pg = pg();
    let root = Root::new("import-plain");
    let marker = root.0.join("ran");
    let file = root.0.join("mastodon.sql");
    std::fs::write(&file, hostile_plain(&marker)).unwrap();
    // psql would run it.
    let probe = pg.database("plainprobe");
    let ran = pg
        .env(&mut Command::new("psql"), &probe.name)
        .args(["-X", "-q", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}", stderr(&ran));
    assert!(marker.exists(), "the dump is hostile to psql");
    std::fs::remove_file(&marker).unwrap();

    let why = import::prepare(&install(file.clone(), None), &root.0.join("o"), MIB)
        .unwrap_err()
        .to_string();
    assert!(
        why.contains("is a plain SQL dump") && why.contains("pg_dump -Fc"),
        "{why}"
    );
    assert!(!root.0.join("o").exists());

    // Given to the restore anyway, even starting with the line that once meant
    // "normalised by herd import prepare": refused before the database is touched.
    let target = pg.database("plaindst");
    fill(&pg, &target.name, 5, 7);
    let scratch = root.dir("restore");
    for head in [
        "",
        "-- Herd: plain SQL dump normalised by herd import prepare (no owners, privileges or psql commands)\n",
    ] {
        std::fs::write(
            scratch.join("database.dump"),
            format!("{head}{}", hostile_plain(&marker)),
        )
        .unwrap();
        let (out, log) = restore_db(&pg, &target.name, &scratch, None);
        assert!(!out.status.success(), "{head}: {}", stderr(&out));
        assert!(
            log.contains("pg_restore could not read the dump; the mastodon database was not touched"),
            "{log}"
        );
        assert!(!marker.exists(), "{head}: a psql command ran");
        assert_eq!(pg.count(&target.name, "accounts"), 5);
    }
}

#[test]
fn an_export_whose_dump_is_not_an_archive_is_refused() {
    let root = Root::new("import-export-plain");
    let marker = root.0.join("ran");
    let dir = root.dir("export");
    let dump = format!(
        "-- Herd: plain SQL dump normalised by herd import prepare (no owners, privileges or psql commands)\n{}",
        hostile_plain(&marker)
    );
    std::fs::write(dir.join("database.dump"), &dump).unwrap();
    let sha = sha256(&dir.join("database.dump"));
    std::fs::write(
        dir.join("manifest.txt"),
        format!(
            "# Herd export, format 2\n# tenant: lyon (lyon.social), mastodon v4.3.2\n# piece database.dump.000 {} bytes\n{sha}  database.dump.000\n",
            dump.len()
        ),
    )
    .unwrap();
    let out = root.0.join("prepared");
    let why = import::prepare(&Source::Export { dir }, &out, import::PIECE_BYTES)
        .unwrap_err()
        .to_string();
    assert!(why.contains("is not a pg_dump archive"), "{why}");
    assert!(!out.exists());
}

#[test]
fn the_restore_refuses_a_pg_restore_without_restrict() {
    let pg = pg();
    let root = Root::new("import-old-pg");
    let source = pg.database("oldsrc");
    fill(&pg, &source.name, 3, 4);
    let scratch = root.dir("restore");
    dump(&pg, &source.name, &["-Fc"], &scratch.join("database.dump"));
    let target = pg.database("olddst");
    fill(&pg, &target.name, 5, 7);
    // The real one writes `\restrict`.
    let sql = Command::new("pg_restore")
        .args(["-f", "-"])
        .arg(scratch.join("database.dump"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&sql.stdout)
            .lines()
            .take(20)
            .any(|l| l.starts_with("\\restrict ")),
        "the local pg_restore writes \\restrict"
    );
    // An older one (16.9), or one whose text lacks it, is refused.
    let bin = root.dir("bin");
    let real = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v pg_restore"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for (name, script) in [
        ("old", "#!/bin/sh\necho 'pg_restore (PostgreSQL) 16.9'\nexit 0\n".to_owned()),
        (
            "unrestricted",
            format!(
                "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_restore (PostgreSQL) 16.10'; exit 0; fi\n{} \"$@\" || exit 1\nf=\nfor a in \"$@\"; do case \"$a\" in --file=*) f=${{a#--file=}} ;; esac; done\nif [ -n \"$f\" ]; then sed -i '/^\\\\restrict /d' \"$f\"; fi\n",
                real.trim()
            ),
        ),
    ] {
        let fake = bin.join("pg_restore");
        std::fs::write(&fake, script).unwrap();
        Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
        let (out, log) = restore_db(&pg, &target.name, &scratch, Some(&bin));
        assert!(!out.status.success(), "{name}");
        assert!(
            log.contains("too old to restore safely") || log.contains("does not start with \\restrict"),
            "{name}: {log}"
        );
        assert_eq!(pg.count(&target.name, "accounts"), 5, "{name}");
    }
    // The real one restores.
    let (out, log) = restore_db(&pg, &target.name, &scratch, None);
    assert!(out.status.success(), "{}: {log}", stderr(&out));
    assert_eq!(pg.count(&target.name, "accounts"), 3);
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
        .env(&mut common::image_sh(), &target.name)
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
    // The sealed app secrets the manifest lists are not downloaded beside the rest (their
    // owner opens them and pastes them into the import form): not needed here.
    assert!(names.iter().any(|n| n == "app-secrets.env.age"));

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
    // The sealed secrets stay out of the import (they go in the console's form); the
    // rest is the export's own.
    assert!(prepared.sealed_secrets_left_out);
    assert!(!out.join("app-secrets.env.age").exists());
    for n in names.iter().filter(|n| *n != "app-secrets.env.age") {
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
