//! Herd's database backup and restore, timed against the floor: `pg_dump -Fc | pg_restore`
//! run directly on the same data.
//!
//! A database of Mastodon's shape (accounts, statuses of about 320 bytes of hex text,
//! media attachments, their sequences, indexes and foreign keys) is filled up to
//! `HERD_BENCH_DB_MB` megabytes (`pg_database_size`; 1024 under `cargo bench`, 8 when
//! `cargo test --all-targets` runs this as a check that it works). Then:
//!
//! - **Herd's dump**: the backup Job's dump script (snapshot, row counts, `pg_dump
//!   --format=custom`) then its upload script (pieces of 4 GiB, each hashed, a manifest),
//!   to a local object store on the same disk (tests/k8s/restore_scripts/store.rs);
//! - **Herd's restore**: the restore Job's fetch script (manifest, pieces, every SHA-256
//!   checked, joined) then its database script (`pg_restore --clean --if-exists --no-owner
//!   --single-transaction`, rows counted) into an empty database;
//! - **the floor**: `pg_dump -Fc | pg_restore --no-owner` into another empty database.
//!
//! Media are not part of it (`MEDIA=none`). Every scratch database and file is removed at
//! the end. Needs `DATABASE_URL` (`make bench` starts a durable server) and `psql`,
//! `pg_dump`, `pg_restore`, `curl`, `sha256sum`, `bash`. Machines here are shared: compare
//! figures of one run. Results are in docs/BENCHMARKS.md.
#![expect(clippy::unwrap_used, reason = "benchmark")]

#[path = "../tests/k8s/restore_scripts/shape.rs"]
mod shape;
#[path = "../tests/k8s/restore_scripts/store.rs"]
#[allow(dead_code, reason = "shared with the tests, which use all of it")]
mod store;

use herd_k8s::render::backup::{DUMP_SCRIPT, MAX_PIECES, PIECE_MIB, UPLOAD_SCRIPT};
use herd_k8s::render::restore_scripts::{RestoreSummary, FETCH_SCRIPT, RESTORE_DB_SCRIPT};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Mastodon's schema in small, with its accounts.
fn schema() -> String {
    format!(
        "{}{}",
        shape::TABLES,
        "INSERT INTO accounts (username, domain)
  SELECT 'user' || i, CASE WHEN i % 3 = 0 THEN 'remote' || i || '.example' END
  FROM generate_series(1, 20000) i;"
    )
}

/// Statuses added per round until the database reaches its size.
const BATCH: i64 = 50_000;

struct Pg {
    host: String,
    port: u16,
    user: String,
    password: String,
}

impl Pg {
    fn from_env(raw: &str) -> Pg {
        let u = url::Url::parse(raw).unwrap();
        Pg {
            host: u.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: u.port().unwrap_or(5432),
            user: if u.username().is_empty() {
                "postgres".into()
            } else {
                u.username().into()
            },
            password: u.password().unwrap_or("").into(),
        }
    }

    fn cmd(&self, program: &str, db: &str) -> Command {
        let mut c = Command::new(program);
        c.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", db);
        c
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .cmd("psql", db)
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

    fn recreate(&self, db: &str) {
        self.drop(db);
        self.psql("postgres", &format!("CREATE DATABASE {db}"));
    }

    fn drop(&self, db: &str) {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        );
    }

    fn size(&self, db: &str) -> u64 {
        self.psql(db, "SELECT pg_database_size(current_database())")
            .parse()
            .unwrap()
    }
}

/// Runs `cmd`, panicking with its standard error if it fails; its time.
fn timed(what: &str, cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let d = t.elapsed();
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    d
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn dir(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Drops the scratch databases and removes the files, also when a step fails.
struct Cleanup<'a> {
    pg: &'a Pg,
    dbs: Vec<String>,
    root: PathBuf,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for db in &self.dbs {
            let _ = self
                .pg
                .cmd("psql", "postgres")
                .args(["-X", "-q", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn main() {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL is not set: run `make bench`"));
    let under_bench = std::env::args().any(|a| a == "--bench");
    let target_mb: u64 = std::env::var("HERD_BENCH_DB_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if under_bench { 1024 } else { 8 });
    let pg = Pg::from_env(&base);
    let id = std::process::id();
    let (src, herd_db, floor_db) = (
        format!("herd_bench_dump_{id}"),
        format!("herd_bench_restore_{id}"),
        format!("herd_bench_floor_{id}"),
    );
    let root = std::env::temp_dir().join(format!("herd-bench-dump-restore-{id}"));
    let _ = std::fs::remove_dir_all(&root);
    let _cleanup = Cleanup {
        pg: &pg,
        dbs: vec![src.clone(), herd_db.clone(), floor_db.clone()],
        root: root.clone(),
    };

    println!("dump and restore: a database of Mastodon's shape of {target_mb} MB, against pg_dump | pg_restore");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(herd_testkit::print_conditions(&base));
    println!(
        "  pg_dump: {}",
        String::from_utf8_lossy(
            &Command::new("pg_dump")
                .arg("--version")
                .output()
                .unwrap()
                .stdout
        )
        .trim()
    );
    println!("  load average at the start: {}", load());

    // The data.
    let t = Instant::now();
    pg.recreate(&src);
    pg.psql(&src, &schema());
    // At least one round; smaller rounds for a small database.
    let batch = if target_mb < 100 { BATCH / 10 } else { BATCH };
    let mut statuses = 0;
    while statuses == 0 || pg.size(&src) < target_mb * 1_000_000 {
        pg.psql(
            &src,
            &format!(
                "INSERT INTO statuses (account_id, text)
                   SELECT 1 + i % 20000,
                          (SELECT string_agg(md5(i::text || '-' || j), '') FROM generate_series(1, 10) j)
                   FROM generate_series({}, {}) i;
                 INSERT INTO media_attachments (status_id, file_file_name, file_file_size)
                   SELECT id, 'f' || id || '.png', 1000 + id FROM statuses
                   WHERE id > {statuses} AND id % 3 = 0;",
                statuses + 1,
                statuses + batch
            ),
        );
        statuses += batch;
    }
    pg.psql(&src, "VACUUM ANALYZE");
    pg.psql("postgres", "CHECKPOINT");
    let db_size = pg.size(&src);
    println!(
        "  data: {} ({statuses} statuses, 20000 accounts), made in {}",
        mb(db_size),
        secs(t.elapsed())
    );

    let store = store::Store::start(&dir(&root, "store"));
    let prefix = "herd-backups/bench/";
    let mut names = vec!["manifest.txt".to_owned(), "app-secrets.env.age".to_owned()];
    for a in ["database.dump", "media.tar"] {
        names.extend((0..MAX_PIECES).map(|i| format!("{a}.{i:03}")));
    }
    let (scratch, urls, sealed, media) = (
        dir(&root, "backup"),
        dir(&root, "urls"),
        dir(&root, "sealed"),
        dir(&root, "media"),
    );
    store.write_urls(&urls, prefix, &names);
    std::fs::write(sealed.join("app-secrets.env.age"), b"sealed").unwrap();

    // Herd's dump: the Job's two containers.
    let dump = timed(
        "dump script",
        pg.cmd("sh", &src)
            .args(["-c", DUMP_SCRIPT])
            .env("SCRATCH", &scratch),
    );
    let dump_bytes = std::fs::metadata(scratch.join("database.dump"))
        .unwrap()
        .len();
    let upload = timed(
        "upload script",
        Command::new("bash")
            .args(["-c", UPLOAD_SCRIPT])
            .env("SCRATCH", &scratch)
            .env("URLS", &urls)
            .env("SEALED", &sealed)
            .env("MEDIA_DIR", &media)
            .env("TERMINATION_LOG", root.join("backup-log"))
            .env("PIECE_MIB", PIECE_MIB.to_string())
            .env("MAX_PIECES", MAX_PIECES.to_string())
            .env("DATABASE", "dump")
            .env("MEDIA", "none")
            .env(
                "MANIFEST_HEADER",
                "# Herd benchmark backup\n# version v4.7.6",
            ),
    );
    std::fs::remove_dir_all(&scratch).unwrap();

    // Herd's restore: the restore Job's two containers, into an empty database.
    pg.recreate(&herd_db);
    let rscratch = dir(&root, "restore");
    let log = root.join("restore-log");
    let fetch = timed(
        "fetch script",
        Command::new("sh")
            .args(["-c", FETCH_SCRIPT])
            .env("URLS", &urls)
            .env("SCRATCH", &rscratch)
            .env("MEDIA_DIR", &media)
            .env("MEDIA", "none")
            .env("TERMINATION_LOG", root.join("fetch-log")),
    );
    let restore = timed(
        "restore script",
        pg.cmd("sh", &herd_db)
            .args(["-c", RESTORE_DB_SCRIPT])
            .env("SCRATCH", &rscratch)
            .env("APP", "mastodon")
            .env("TERMINATION_LOG", &log),
    );
    let summary = RestoreSummary::parse(&std::fs::read_to_string(&log).unwrap());
    assert!(!summary.source_rows.is_empty(), "{summary:?}");
    assert_eq!(summary.mismatch(), None, "{summary:?}");
    let restored_size = pg.size(&herd_db);
    pg.drop(&herd_db);
    std::fs::remove_dir_all(&root).unwrap();

    // The floor: pg_dump straight into pg_restore.
    pg.recreate(&floor_db);
    let floor = timed(
        "pg_dump | pg_restore",
        pg.cmd("bash", &src).args([
            "-c",
            &format!("set -eo pipefail; pg_dump --format=custom --no-owner | pg_restore --no-owner --dbname={floor_db}"),
        ]),
    );
    let floor_rows = pg.psql(&floor_db, "SELECT count(*) FROM statuses");
    assert_eq!(floor_rows, summary.restored_rows["statuses"].to_string());
    pg.drop(&floor_db);
    pg.drop(&src);

    let herd = dump + upload + fetch + restore;
    println!(
        "  dump: {} (database {}, restored {})",
        mb(dump_bytes),
        mb(db_size),
        mb(restored_size)
    );
    println!(
        "  Herd's dump: {} (dump with row counts {}, pieces + SHA-256 + upload {})",
        secs(dump + upload),
        secs(dump),
        secs(upload)
    );
    println!(
        "  Herd's restore: {} (fetch + SHA-256 + join {}, replay in one transaction + counts {})",
        secs(fetch + restore),
        secs(fetch),
        secs(restore)
    );
    println!(
        "  Herd's dump and restore: {}; pg_dump | pg_restore: {}; ratio {:.2}×",
        secs(herd),
        secs(floor),
        herd.as_secs_f64() / floor.as_secs_f64()
    );
    println!("  rows: {:?}", summary.restored_rows);
    println!("  load average at the end: {}", load());
}
