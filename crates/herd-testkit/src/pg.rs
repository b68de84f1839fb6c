//! A private PostgreSQL server in a temporary directory, for tests that stop and start the
//! database (readiness, recovery). Uses Debian's server binaries; runs them as the
//! `postgres` user when the tests run as root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TempPostgres {
    bindir: PathBuf,
    dir: PathBuf,
    pub port: u16,
}

fn bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("pg_ctl").exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop()
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(bin: &Path, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        bin.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TempPostgres {
    /// Creates a cluster on a free port and starts it.
    pub fn start_new() -> Self {
        let bindir = bindir();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let dir = std::env::temp_dir().join(format!("herd-test-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status()
                .map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "chown postgres {}", dir.display());
        }
        let d = dir.to_string_lossy().into_owned();
        run(
            &bindir.join("initdb"),
            &[
                "-D",
                &d,
                "-U",
                "herd",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        );
        let pg = Self { bindir, dir, port };
        pg.start();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://herd@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start(&self) {
        let d = self.dir.to_string_lossy().into_owned();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port, d
        );
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        run(
            &self.bindir.join("pg_ctl"),
            &["-D", &d, "-o", &opts, "-l", &log, "-w", "start"],
        );
    }

    pub fn stop(&self) {
        let d = self.dir.to_string_lossy().into_owned();
        run(
            &self.bindir.join("pg_ctl"),
            &["-D", &d, "-m", "immediate", "-w", "stop"],
        );
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let d = self.dir.to_string_lossy().into_owned();
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bindir.join("pg_ctl"));
            c
        } else {
            Command::new(self.bindir.join("pg_ctl"))
        };
        let _ = cmd
            .args(["-D", &d, "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh database `name` on the server `base` names (a maintenance database's URL, as
/// `make bench` passes it), dropped first if an earlier run left it, with every migration
/// applied: the benchmarks' scratch databases.
pub async fn scratch_database(base: &str, name: &str, max_connections: u32) -> sqlx::PgPool {
    let admin = admin(base).await;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&sql)
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    admin.close().await;
    let (server, _) = base.rsplit_once('/').unwrap_or((base, ""));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(max_connections)
        .connect(&format!("{server}/{name}"))
        .await
        .unwrap_or_else(|e| panic!("connecting to {name}: {e}"));
    herd_store::migrate(&pool)
        .await
        .unwrap_or_else(|e| panic!("migrating {name}: {e}"));
    pool
}

/// Drops a database [`scratch_database`] made.
pub async fn drop_database(base: &str, name: &str) {
    let admin = admin(base).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap_or_else(|e| panic!("dropping {name}: {e}"));
    admin.close().await;
}

async fn admin(base: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(base)
        .await
        .unwrap_or_else(|e| panic!("connecting to {base}: {e}"))
}

/// The conditions a benchmark ran under, as lines to print with its figures: the machine
/// (CPUs, model, memory, from /proc) and the settings of the PostgreSQL server `base`
/// names that decide what a commit costs (durability, memory, connections).
pub async fn conditions(base: &str) -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown model".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1_048_576.0))
        .unwrap_or_else(|| "unknown memory".into());
    let mut lines = vec![format!("machine: {cpus} CPUs ({model}), {memory}")];
    let admin = admin(base).await;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&admin)
        .await
        .unwrap_or_else(|e| panic!("reading the server's version: {e}"));
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, current_setting(name) FROM pg_settings
         WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers',
                        'max_connections', 'wal_level')
         ORDER BY name",
    )
    .fetch_all(&admin)
    .await
    .unwrap_or_else(|e| panic!("reading the server's settings: {e}"));
    admin.close().await;
    let durable = settings
        .iter()
        .filter(|(n, _)| {
            matches!(
                n.as_str(),
                "fsync" | "synchronous_commit" | "full_page_writes"
            )
        })
        .all(|(_, v)| v == "on");
    lines.push(format!(
        "PostgreSQL {version}, {}: {}",
        if durable {
            "durable (every commit flushed)"
        } else {
            "NOT DURABLE (commits not flushed: figures are optimistic)"
        },
        settings
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    lines
}

/// Prints [`conditions`], indented, as a benchmark's header.
pub async fn print_conditions(base: &str) {
    for line in conditions(base).await {
        println!("  {line}");
    }
}
