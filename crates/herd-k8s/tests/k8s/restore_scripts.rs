//! The backup and restore scripts against real PostgreSQL and the real tools (`psql`,
//! `pg_dump`, `pg_restore`, `curl`, `sha256sum`, `tar`), with a local object store in
//! place of the bucket: a database of Mastodon's shape is dumped and uploaded as the
//! backup Job does (its rendered dump script, then [`UPLOAD_SCRIPT`]), then fetched,
//! checked and restored into another database by the restore Job's scripts. The scripts
//! run as in the Alpine images, with BusyBox's `sh` and applets (`common::image_sh`).
//!
//! Needs the PostgreSQL server `DATABASE_URL` names; scratch databases
//! (`herd_rs_<pid>_…`) are created and dropped.
#![expect(clippy::unwrap_used, reason = "tests")]

pub mod import;
pub mod roles;
pub mod shape;
pub mod store;

use crate::common;
use herd_k8s::render::backup::{self, BackupKind, MAX_PIECES, UPLOAD_SCRIPT};
use herd_k8s::render::restore_scripts::{RestoreSummary, FETCH_SCRIPT, RESTORE_DB_SCRIPT};
use herd_k8s::render::Tenant;
use herd_k8s::secrets::AppSecrets;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use store::Store;

/// The server of `DATABASE_URL`.
struct Pg {
    host: String,
    port: u16,
    user: String,
    password: String,
}

fn pg() -> Pg {
    let raw = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL is not set: these tests need PostgreSQL"));
    let u = url::Url::parse(&raw).unwrap();
    Pg {
        host: u.host_str().unwrap_or("127.0.0.1").to_owned(),
        port: u.port().unwrap_or(5432),
        user: if u.username().is_empty() {
            "postgres".to_owned()
        } else {
            u.username().to_owned()
        },
        password: u.password().unwrap_or("").to_owned(),
    }
}

impl Pg {
    /// `cmd` with the libpq variables for database `db`.
    fn env<'c>(&self, cmd: &'c mut Command, db: &str) -> &'c mut Command {
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", db)
    }

    /// Runs `sql` in `db`; its output, unaligned, tuples only.
    fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .env(&mut Command::new("psql"), db)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn count(&self, db: &str, table: &str) -> i64 {
        self.psql(db, &format!("SELECT count(*) FROM {table}"))
            .parse()
            .unwrap()
    }

    /// A new empty database, dropped with the guard.
    fn database(&self, tag: &str) -> Db<'_> {
        let name = format!("herd_rs_{}_{tag}", std::process::id());
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        Db { pg: self, name }
    }
}

struct Db<'a> {
    pg: &'a Pg,
    name: String,
}

impl Drop for Db<'_> {
    fn drop(&mut self) {
        let _ = self
            .pg
            .env(&mut Command::new("psql"), "postgres")
            .args([
                "-X",
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// Mastodon's schema in small ([`shape::TABLES`]) and `schema_migrations`.
fn mastodon_shape() -> String {
    format!(
        "{}CREATE TABLE schema_migrations (version varchar PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('20250101000000'), ('20251120000000');",
        shape::TABLES
    )
}

/// Creates the shape in `db` with `accounts` accounts, `statuses` statuses (of about 320
/// bytes of incompressible text each) and a media attachment for every third status.
fn fill(pg: &Pg, db: &str, accounts: i64, statuses: i64) {
    pg.psql(db, &mastodon_shape());
    pg.psql(
        db,
        &format!(
            "INSERT INTO accounts (username, domain)
               SELECT 'user' || i, CASE WHEN i % 3 = 0 THEN 'remote' || i || '.example' END
               FROM generate_series(1, {accounts}) i;
             INSERT INTO statuses (account_id, text)
               SELECT 1 + i % {accounts},
                      (SELECT string_agg(md5(i::text || '-' || j), '') FROM generate_series(1, 10) j)
               FROM generate_series(1, {statuses}) i;
             INSERT INTO media_attachments (status_id, file_file_name, file_file_size)
               SELECT id, 'f' || id || '.png', 1000 + id FROM statuses WHERE id % 3 = 0;"
        ),
    );
}

/// A directory removed at the end.
struct Root(PathBuf);

impl Root {
    fn new(tag: &str) -> Root {
        let p = std::env::temp_dir().join(format!("herd-rs-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Root(p)
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.0.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The media volume's files: relative path → content.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, into);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                into.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

/// Where the backup goes in the store.
const PREFIX: &str = "herd-backups/final/lyon/final-x/";

/// Backs `db` and the media in `media` up as the final backup's Job does: the dump
/// script of the rendered Job, then the upload script, with pieces of 1 MiB. Returns the
/// manifest.
fn back_up(pg: &Pg, db: &str, media: &Path, root: &Root, store: &Store) -> String {
    let i = common::lyon("community");
    let secrets = AppSecrets::generate();
    let cluster = common::cluster_for(&i);
    let t = Tenant {
        instance: &i,
        secrets: &secrets,
        cluster: &cluster,
    };
    let job = backup::final_backup(
        &t,
        &backup::BackupTarget {
            bucket: "herd-backups".into(),
            endpoint: "https://s3.example.net".into(),
            prefix: "final/".into(),
            region: "us-east-1".into(),
            secrets_recipient: common::BACKUP_RECIPIENT.into(),
        },
        &Default::default(),
        "x",
    )
    .unwrap()
    .into_iter()
    .map(|c| c.to_value().unwrap())
    .find(|o| o["kind"] == "Job")
    .unwrap();
    let pod = &job["spec"]["template"]["spec"];
    let dump = &pod["initContainers"][0];
    assert_eq!(dump["command"][0], "/bin/sh");
    let dump_script = dump["command"][2].as_str().unwrap();
    let header = pod["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MANIFEST_HEADER")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let names = backup::upload_names(&t, BackupKind::Final).unwrap();

    let (scratch, urls, sealed) = (root.dir("backup"), root.dir("put-urls"), root.dir("sealed"));
    store.write_urls(&urls, PREFIX, &names);
    std::fs::write(
        sealed.join("app-secrets.env.age"),
        b"age-encryption.org/v1 sealed",
    )
    .unwrap();
    let out = pg
        .env(&mut common::image_sh(), db)
        .args(["-c", dump_script])
        .env("SCRATCH", &scratch)
        .output()
        .unwrap();
    assert!(out.status.success(), "dump: {}", stderr(&out));
    let out = common::image_sh()
        .args(["-c", UPLOAD_SCRIPT])
        .env("SCRATCH", &scratch)
        .env("URLS", &urls)
        .env("MEDIA_DIR", media)
        .env("SEALED", &sealed)
        .env("TERMINATION_LOG", root.0.join("backup-termination"))
        .env("PIECE_MIB", "1")
        .env("MAX_PIECES", MAX_PIECES.to_string())
        .env("DATABASE", "dump")
        .env("MEDIA", "volume")
        .env("MANIFEST_HEADER", &header)
        .output()
        .unwrap();
    assert!(out.status.success(), "upload: {}", stderr(&out));
    std::fs::read_to_string(store.file(&format!("/{PREFIX}manifest.txt"))).unwrap()
}

/// The restore Job's GET URLs for the backup at `prefix`: the manifest and every piece.
fn get_urls(store: &Store, dir: &Path, prefix: &str) {
    let mut names = vec!["manifest.txt".to_owned()];
    for a in ["database.dump", "media.tar"] {
        names.extend((0..MAX_PIECES).map(|i| format!("{a}.{i:03}")));
    }
    store.write_urls(dir, prefix, &names);
}

/// What a restore run left: each script's output and termination message.
struct Restore {
    fetch: Output,
    fetch_log: String,
    restore: Output,
    restore_log: String,
}

/// Runs the fetch script, then (whatever it did, to show what it refuses) the database
/// script into `db`, with fresh scratch and termination logs.
fn restore(pg: &Pg, db: &str, root: &Root, urls: &Path, media: &Path) -> Restore {
    let scratch = root.0.join("restore");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let (fetch_log, restore_log) = (root.0.join("fetch-log"), root.0.join("restore-log"));
    let _ = std::fs::remove_file(&fetch_log);
    let _ = std::fs::remove_file(&restore_log);
    let fetch = common::image_sh()
        .args(["-c", FETCH_SCRIPT])
        .env("URLS", urls)
        .env("SCRATCH", &scratch)
        .env("MEDIA_DIR", media)
        .env("MEDIA", "volume")
        .env("TERMINATION_LOG", &fetch_log)
        .output()
        .unwrap();
    let restore = pg
        .env(&mut common::image_sh(), db)
        .args(["-c", RESTORE_DB_SCRIPT])
        .env("SCRATCH", &scratch)
        .env("APP", "mastodon")
        .env("TERMINATION_LOG", &restore_log)
        .output()
        .unwrap();
    Restore {
        fetch,
        fetch_log: std::fs::read_to_string(&fetch_log).unwrap_or_default(),
        restore,
        restore_log: std::fs::read_to_string(&restore_log).unwrap_or_default(),
    }
}

/// A media volume with a few files, one with a long path as Mastodon's.
fn media_volume(root: &Root) -> PathBuf {
    let media = root.dir("media");
    let long = media.join("media_attachments/files/113/456/789/012/345/678/original");
    std::fs::create_dir_all(&long).unwrap();
    std::fs::write(long.join("0123456789abcdef.png"), vec![7u8; 300_000]).unwrap();
    std::fs::create_dir_all(media.join("accounts/avatars")).unwrap();
    std::fs::write(media.join("accounts/avatars/a.jpg"), b"jpeg").unwrap();
    media
}

/// The target: a live tenant's database, with rows of its own.
fn live_target<'a>(pg: &'a Pg, tag: &str) -> Db<'a> {
    let target = pg.database(tag);
    fill(pg, &target.name, 5, 7);
    target
}

#[test]
fn a_backup_restores_into_another_database_with_every_row_and_file() {
    let pg = pg();
    let root = Root::new("roundtrip");
    let store = Store::start(&root.dir("store"));
    let source = pg.database("src");
    fill(&pg, &source.name, 3000, 10_000);
    let media = media_volume(&root);

    // The app keeps writing statuses while the backup is taken: the manifest's counts
    // must be those of the dump's own snapshot, not of a moment before or after it.
    let mut writer = pg
        .env(&mut Command::new("psql"), &source.name)
        .args(["-X", "-q", "-c", "DO $$ BEGIN FOR i IN 1..4000 LOOP INSERT INTO statuses (account_id, text) VALUES (1 + i % 3000, 'during the dump'); COMMIT; PERFORM pg_sleep(0.001); END LOOP; END $$"])
        .spawn()
        .unwrap();
    while pg.count(&source.name, "statuses") < 10_050 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let manifest = back_up(&pg, &source.name, &media, &root, &store);
    writer.wait().unwrap();
    let written_after = pg.count(&source.name, "statuses");

    let rows_line = manifest
        .lines()
        .find_map(|l| l.strip_prefix("# rows "))
        .unwrap_or_else(|| panic!("no rows line in\n{manifest}"));
    let manifest_rows = backup::parse_rows(rows_line);
    assert_eq!(manifest_rows["accounts"], 3000, "{manifest}");
    assert!(
        manifest_rows["statuses"] > 10_000 && manifest_rows["statuses"] < written_after,
        "taken while the app wrote: {rows_line}, {written_after} after"
    );
    assert!(
        manifest.lines().any(|l| l == "# version v4.7.6"),
        "{manifest}"
    );
    // The Job's termination message carries the counts to the backup's record too.
    let reported = backup::Summary::parse(
        &std::fs::read_to_string(root.0.join("backup-termination")).unwrap(),
    );
    assert_eq!(reported.rows, manifest_rows);
    assert!(
        manifest.contains("  database.dump.001"),
        "the dump is in several pieces: {manifest}"
    );

    let target = live_target(&pg, "dst");
    // The live database is newer than the backup: a later migration added a table that
    // refers to accounts (pg_restore --clean alone could not drop accounts then).
    pg.psql(
        &target.name,
        "CREATE TABLE newer_feature (id bigserial PRIMARY KEY, account_id bigint REFERENCES accounts (id)); INSERT INTO newer_feature (account_id) SELECT id FROM accounts LIMIT 1",
    );
    let restored_media = root.dir("restored-media");
    std::fs::write(restored_media.join("newer-than-the-backup.png"), b"kept").unwrap();
    let urls = root.dir("get-urls");
    get_urls(&store, &urls, PREFIX);
    let r = restore(&pg, &target.name, &root, &urls, &restored_media);
    assert!(r.fetch.status.success(), "fetch: {}", stderr(&r.fetch));
    assert!(
        r.fetch_log.contains("each checked against the manifest"),
        "{}",
        r.fetch_log
    );
    let db = r.restore;
    assert!(db.status.success(), "restore: {}", stderr(&db));

    let summary = RestoreSummary::parse(&r.restore_log);
    assert_eq!(summary.source_rows, manifest_rows, "{}", r.restore_log);
    assert_eq!(summary.restored_rows, manifest_rows, "{}", r.restore_log);
    assert_eq!(summary.source_version.as_deref(), Some("v4.7.6"));
    assert_eq!(summary.mismatch(), None);
    // The newer table is gone with the rest of the old schema.
    assert_eq!(
        pg.psql(&target.name, "SELECT to_regclass('newer_feature') IS NULL"),
        "t"
    );
    // Counted independently: the target holds the backup's rows, not its own.
    assert_eq!(pg.count(&target.name, "accounts"), 3000);
    assert_eq!(
        pg.count(&target.name, "statuses"),
        manifest_rows["statuses"]
    );
    assert_eq!(
        pg.count(&target.name, "media_attachments"),
        pg.count(&source.name, "media_attachments")
    );
    // Sequences, indexes and foreign keys came back too.
    // (pg_dump reads a sequence as it is, not as of its snapshot: ahead of the rows.)
    assert_eq!(
        pg.psql(
            &target.name,
            "SELECT nextval('statuses_id_seq') > (SELECT max(id) FROM statuses)"
        ),
        "t"
    );
    assert_eq!(
        pg.psql(
            &target.name,
            "SELECT count(*) FROM pg_indexes WHERE indexname IN ('index_accounts_on_username_and_domain_lower', 'index_statuses_20190820', 'index_media_attachments_on_status_id')"
        ),
        "3"
    );
    assert_eq!(
        pg.psql(
            &target.name,
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        ),
        "2"
    );
    // The media are back, and what the volume held is kept (see restore_scripts.rs).
    let mut expected = files(&media);
    expected.insert("newer-than-the-backup.png".into(), b"kept".to_vec());
    assert_eq!(files(&restored_media), expected);
}

#[test]
fn a_damaged_piece_is_refused_before_anything_is_restored() {
    let pg = pg();
    let root = Root::new("damaged");
    let store = Store::start(&root.dir("store"));
    let source = pg.database("dmgsrc");
    fill(&pg, &source.name, 1000, 10_000);
    let media = media_volume(&root);
    back_up(&pg, &source.name, &media, &root, &store);
    let target = live_target(&pg, "dmgdst");
    let urls = root.dir("get-urls");
    get_urls(&store, &urls, PREFIX);

    // One byte of the dump's second piece, then of the media archive.
    for piece in ["database.dump.001", "media.tar.000"] {
        let file = store.file(&format!("/{PREFIX}{piece}"));
        let good = std::fs::read(&file).unwrap();
        let mut bad = good.clone();
        bad[1000] ^= 1;
        std::fs::write(&file, &bad).unwrap();

        let restored_media = root.dir(&format!("restored-media-{piece}"));
        let r = restore(&pg, &target.name, &root, &urls, &restored_media);
        assert!(
            !r.fetch.status.success(),
            "{piece} damaged, fetch succeeded"
        );
        assert_eq!(
            r.fetch_log.trim(),
            format!("{piece} does not match its SHA-256 in the manifest: the backup is damaged; nothing was restored")
        );
        assert!(
            files(&restored_media).is_empty(),
            "no media extracted from a damaged backup"
        );
        let db = r.restore;
        assert!(!db.status.success());
        assert!(
            r.restore_log.contains("the fetch step did not finish"),
            "{}",
            r.restore_log
        );
        assert_eq!(pg.count(&target.name, "accounts"), 5, "target untouched");
        assert_eq!(pg.count(&target.name, "statuses"), 7, "target untouched");
        std::fs::write(&file, &good).unwrap();
    }
}

#[test]
fn a_backup_without_a_manifest_is_refused() {
    let pg = pg();
    let root = Root::new("nomanifest");
    let store = Store::start(&root.dir("store"));
    // Pieces uploaded, manifest not: the Job stopped before the end.
    std::fs::write(
        store.file("/herd-backups/final/lyon/unfinished/database.dump.000"),
        b"PGDMP",
    )
    .unwrap();
    let target = live_target(&pg, "nomdst");
    let urls = root.dir("get-urls");
    get_urls(&store, &urls, "herd-backups/final/lyon/unfinished/");
    let r = restore(&pg, &target.name, &root, &urls, &root.dir("m"));
    assert!(!r.fetch.status.success());
    assert_eq!(
        r.fetch_log.trim(),
        "the backup has no manifest.txt (HTTP 404): it did not finish (or its download URLs expired); nothing was restored"
    );
    assert!(!r.restore.status.success());
    assert_eq!(pg.count(&target.name, "statuses"), 7, "target untouched");
}

#[test]
fn a_restore_that_fails_midway_leaves_the_database_as_it_was() {
    let pg = pg();
    let root = Root::new("midway");
    let source = pg.database("midsrc");
    fill(&pg, &source.name, 1000, 10_000);
    let target = live_target(&pg, "middst");
    // A dump cut short (as a full disk would leave it), past the drops and the tables.
    let scratch = root.dir("restore");
    let dump = scratch.join("database.dump");
    let out = pg
        .env(&mut Command::new("pg_dump"), &source.name)
        .args(["--format=custom", "--no-owner"])
        .arg(format!("--file={}", dump.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&dump).unwrap();
    std::fs::write(&dump, &bytes[..bytes.len() * 3 / 4]).unwrap();
    let log = root.0.join("restore-log");
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
        message.starts_with(
            "pg_restore could not read the dump; the mastodon database was not touched"
        ),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert_eq!(pg.count(&target.name, "accounts"), 5);
    assert_eq!(pg.count(&target.name, "statuses"), 7);
    assert_eq!(pg.count(&target.name, "media_attachments"), 2);
}

/// The manifest names the version the database is at: before an upgrade's backup, the one
/// running, not the spec's next one.
#[test]
fn the_manifest_names_the_version_the_database_is_at() {
    let mut i = common::lyon("community");
    i.spec.version = "v4.8.0".into();
    i.status = Some(herd_k8s::crd::InstanceStatus {
        running_version: Some("v4.7.6".into()),
        ..Default::default()
    });
    let secrets = AppSecrets::generate();
    let cluster = common::cluster_for(&i);
    let t = Tenant {
        instance: &i,
        secrets: &secrets,
        cluster: &cluster,
    };
    let target = backup::BackupTarget {
        bucket: "herd-backups".into(),
        endpoint: "https://s3.example.net".into(),
        prefix: "".into(),
        region: "us-east-1".into(),
        secrets_recipient: common::BACKUP_RECIPIENT.into(),
    };
    let job =
        backup::before_upgrade_backup(&t, &target, &Default::default(), "backup-before-v4-8-0")
            .unwrap()
            .into_iter()
            .map(|c| c.to_value().unwrap())
            .find(|o| o["kind"] == "Job")
            .unwrap();
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains("# version v4.7.6"), "{env}");
    assert!(!env.contains("v4.8.0"), "{env}");
}

/// The scripts above run as in the Alpine images: every tool they call but curl and
/// PostgreSQL's is BusyBox's (a GNU-only option would fail here as in the image), and
/// curl and PostgreSQL's are the real ones.
#[test]
fn the_scripts_run_with_busybox_as_in_the_images() {
    let which = |tool: &str| {
        let out = common::image_sh()
            .args([
                "-c",
                &format!("command -v {tool} && {tool} --help 2>&1 | head -n 1"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let shell = common::image_sh()
        .args(["-c", "readlink -f /proc/$$/exe"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shell.stdout).contains("busybox"),
        "{shell:?}"
    );
    // Every command the five scripts of the Alpine images call, builtins aside.
    for tool in [
        "awk",
        "cat",
        "cut",
        "date",
        "dd",
        "grep",
        "head",
        "mkdir",
        "mkfifo",
        "rm",
        "sed",
        "sha256sum",
        "sleep",
        "stat",
        "tar",
        "tr",
    ] {
        let found = which(tool);
        assert!(
            found.contains("busybox-applets/") && found.contains("BusyBox"),
            "{tool}: {found}"
        );
    }
    for tool in ["curl", "psql", "pg_dump", "pg_restore"] {
        let found = which(tool);
        assert!(
            !found.contains("BusyBox") && !found.is_empty(),
            "{tool}: {found}"
        );
    }
}
