//! The role keeper of a database Herd runs itself ([`ROLES_SCRIPT`], the PostgreSQL
//! pod's second container) against real PostgreSQL: it makes the app's login a role
//! without superuser owning an older tenant's objects, and a restore replayed as that
//! login cannot run a program on the database's host, which the same dump does when
//! replayed as the superuser.

use super::import::{dump, restore_db};
use super::{fill, pg, stderr, Pg, Root};
use crate::common;
use herd_k8s::render::data::ROLES_SCRIPT;
use herd_k8s::render::restore_scripts::RestoreSummary;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A login role of the test server, dropped with the guard (declare it before the
/// databases it owns: those are dropped first).
struct Role<'a> {
    pg: &'a Pg,
    name: String,
}

impl<'a> Role<'a> {
    fn new(pg: &'a Pg, tag: &str) -> Role<'a> {
        let name = format!("herd_rs_{}_{tag}", std::process::id());
        pg.psql("postgres", &format!("DROP ROLE IF EXISTS {name}"));
        Role { pg, name }
    }

    /// The test server as this role.
    fn login(&self) -> Pg {
        Pg {
            host: self.pg.host.clone(),
            port: self.pg.port,
            user: self.name.clone(),
            password: PASSWORD.to_owned(),
        }
    }
}

impl Drop for Role<'_> {
    fn drop(&mut self) {
        let _ = self
            .pg
            .env(&mut Command::new("psql"), "postgres")
            .args([
                "-X",
                "-q",
                "-c",
                &format!("DROP ROLE IF EXISTS {}", self.name),
            ])
            .output();
    }
}

const PASSWORD: &str = "an0ther1ong4pp4ssw0rdofforty0characters0";

/// Runs the role keeper for database `db` and role `role` as the pod does (the server's
/// superuser, the app's password in the environment) until it says it is done, then
/// stops it.
fn keep_roles(pg: &Pg, db: &str, role: &str, root: &Root) {
    let done: PathBuf = root.0.join(format!("roles-done-{db}"));
    let _ = std::fs::remove_file(&done);
    let mut child = pg
        .env(&mut common::image_sh(), db)
        .args(["-c", ROLES_SCRIPT])
        .env("APP_ROLE", role)
        .env("APP_PASSWORD", PASSWORD)
        .env("DONE", &done)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !done.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("the role keeper ended ({status}): {}", stderr(&out));
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the role keeper did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // It idles once done, as the pod's container does, until the kubelet's TERM, which
    // ends it (and its idle `sleep`) at once and well.
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "it keeps running");
    let pid = child.id().to_string();
    // A positive pid: the shell only.
    assert!(child.id() > 1);
    Command::new("kill")
        .args(["-s", "TERM", pid.as_str()])
        .status()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "TERM ends it");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// Objects of `db`'s `public` schema (and the schema) not owned by `role`, and whether
/// the database is not the server superuser's or lacks `role`'s privileges on it.
fn not_owned_by(pg: &Pg, db: &str, role: &str) -> String {
    pg.psql(
        db,
        &format!(
            "SELECT string_agg(what, ', ' ORDER BY what) FROM (
               SELECT 'relation ' || relname AS what FROM pg_class
                WHERE relnamespace = 'public'::regnamespace AND relowner <> '{role}'::regrole
               UNION ALL SELECT 'function ' || proname FROM pg_proc
                WHERE pronamespace = 'public'::regnamespace AND proowner <> '{role}'::regrole
               UNION ALL SELECT 'type ' || typname FROM pg_type
                WHERE typnamespace = 'public'::regnamespace AND typowner <> '{role}'::regrole
               UNION ALL SELECT 'schema public' FROM pg_namespace
                WHERE nspname = 'public' AND nspowner <> '{role}'::regrole
               UNION ALL SELECT 'database owned by ' || pg_get_userbyid(datdba) FROM pg_database
                WHERE datname = current_database() AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = datdba)
               UNION ALL SELECT 'no CONNECT, CREATE, TEMPORARY on the database'
                WHERE NOT has_database_privilege('{role}', current_database(), 'CONNECT, CREATE, TEMPORARY')
               UNION ALL SELECT 'settings of the role' FROM pg_db_role_setting
                WHERE setrole = '{role}'::regrole) x"
        ),
    )
}

#[test]
fn the_role_keeper_makes_the_apps_login_and_gives_it_an_older_tenants_objects() {
    let pg = pg();
    let root = Root::new("roles-keeper");
    let role = Role::new(&pg, "keeper_app");
    let db = pg.database("keeper");
    // An older tenant: everything made by the superuser, as the app was.
    fill(&pg, &db.name, 10, 30);
    pg.psql(
        &db.name,
        "CREATE FUNCTION timestamp_id(text) RETURNS bigint LANGUAGE sql AS 'SELECT 1::bigint';
         CREATE VIEW local_accounts AS SELECT * FROM accounts WHERE domain IS NULL;
         CREATE MATERIALIZED VIEW account_summaries AS SELECT account_id, count(*) FROM statuses GROUP BY 1;
         CREATE SEQUENCE loose_seq;
         CREATE TYPE visibility AS ENUM ('public', 'unlisted');
         CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
         CREATE TYPE pair AS (a integer, b integer);",
    );
    // A role of that name made earlier with more than it should have.
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE {} SUPERUSER CREATEROLE NOLOGIN; GRANT pg_execute_server_program TO {0}",
            role.name
        ),
    );
    assert_ne!(not_owned_by(&pg, &db.name, &role.name), "");

    keep_roles(&pg, &db.name, &role.name, &root);
    assert_eq!(
        pg.psql(
            "postgres",
            &format!(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolcanlogin,
                        (SELECT count(*) FROM pg_auth_members WHERE member = r.oid)
                   FROM pg_roles r WHERE rolname = '{}'",
                role.name
            )
        ),
        "f|f|f|f|f|t|0",
        "a login without superuser, member of nothing"
    );
    assert_eq!(not_owned_by(&pg, &db.name, &role.name), "");
    // Again (every start of the pod): nothing to change, and it says done.
    keep_roles(&pg, &db.name, &role.name, &root);

    // The app, as its login: its migrations can change its tables and add new ones,
    // its rows read; a program on the database's host it cannot run.
    let app = role.login();
    app.psql(
        &db.name,
        "ALTER TABLE accounts ADD COLUMN herd_later text; CREATE TABLE later (id bigint); REFRESH MATERIALIZED VIEW account_summaries",
    );
    assert_eq!(app.count(&db.name, "statuses"), 30);
    let refused = |sql: &str, why: &str| {
        let out = app
            .env(&mut Command::new("psql"), &db.name)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sql}");
        assert!(stderr(&out).contains(why), "{sql}: {}", stderr(&out));
    };
    refused(
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "to COPY to or from an external program",
    );
    // The database itself is not the app's: nothing it sets there reaches the keeper.
    refused(
        &format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            db.name
        ),
        "must be owner of database",
    );
    // What it may set on its own login, the keeper undoes.
    app.psql(
        &db.name,
        &format!(
            "ALTER ROLE CURRENT_USER SET default_transaction_read_only = on; ALTER ROLE CURRENT_USER IN DATABASE {} SET statement_timeout = 1",
            db.name
        ),
    );
    assert_ne!(not_owned_by(&pg, &db.name, &role.name), "");
    keep_roles(&pg, &db.name, &role.name, &root);
    assert_eq!(not_owned_by(&pg, &db.name, &role.name), "");
    app.psql(&db.name, "CREATE TABLE after_keeper (id bigint)");
}

/// `db` with Mastodon's shape and a CHECK on `accounts` whose function, in any database
/// but `db`, writes `<marker>` by a program on the database's host: loading the dump's rows into
/// another database calls it.
fn hostile_source(pg: &Pg, db: &str, marker: &Path) {
    fill(pg, db, 20, 40);
    pg.psql(
        db,
        &format!(
            "CREATE FUNCTION public.looks_fine(bigint) RETURNS boolean LANGUAGE plpgsql AS $f$
             BEGIN
               IF current_database() <> '{db}' THEN
                 EXECUTE 'COPY (SELECT 1) TO PROGRAM ''cat > {}''';
               END IF;
               RETURN true;
             END $f$;
             ALTER TABLE accounts ADD CONSTRAINT fine CHECK (public.looks_fine(id));",
            marker.display()
        ),
    );
}

#[test]
fn a_dump_that_runs_a_program_when_replayed_cannot_as_the_apps_login() {
    let pg = pg();
    let root = Root::new("roles-hostile");
    let role = Role::new(&pg, "hostile_app");
    // Writable by the server's own user, which runs the program.
    let host = root.dir("host");
    std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let marker = host.join("ran");
    let (clean, hostile) = (root.0.join("clean.dump"), root.0.join("hostile.dump"));
    {
        let source = pg.database("hsrc");
        fill(&pg, &source.name, 20, 40);
        dump(&pg, &source.name, &["-Fc"], &clean);
    }
    {
        let source = pg.database("hsrc2");
        hostile_source(&pg, &source.name, &marker);
        dump(&pg, &source.name, &["-Fc"], &hostile);
    }
    let scratch = root.dir("scratch");
    let put = |file: &Path| {
        std::fs::copy(file, scratch.join("database.dump")).unwrap();
    };

    // Replayed as the superuser, the dump runs its program.
    let exposed = pg.database("hsuper");
    put(&hostile);
    let (out, _) = restore_db(&pg, &exposed.name, &scratch, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists(), "the dump is hostile to a superuser");
    std::fs::remove_file(&marker).unwrap();

    // A tenant's database with its role keeper's login: a good dump restores as it.
    let target = pg.database("happ");
    fill(&pg, &target.name, 5, 7);
    keep_roles(&pg, &target.name, &role.name, &root);
    let app = role.login();
    put(&clean);
    let (out, log) = restore_db(&app, &target.name, &scratch, None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        RestoreSummary::parse(&log).restored_rows,
        [("accounts".into(), 20), ("statuses".into(), 40)].into(),
        "{log}"
    );
    assert_eq!(not_owned_by(&pg, &target.name, &role.name), "");

    // The hostile one is refused, rolled back, and runs nothing.
    put(&hostile);
    let (out, log) = restore_db(&app, &target.name, &scratch, None);
    assert!(!out.status.success());
    assert!(
        log.contains("rolled back") && log.contains("external program"),
        "{log}"
    );
    assert!(!marker.exists(), "nothing ran on the host");
    assert_eq!(app.count(&target.name, "accounts"), 20);
    assert_eq!(
        pg.psql(
            &target.name,
            "SELECT count(*) FROM pg_proc WHERE proname = 'looks_fine'"
        ),
        "0"
    );
}

#[test]
fn a_dumps_trusted_extensions_are_restored_and_the_others_left_out_as_the_apps_login() {
    let pg = pg();
    let root = Root::new("roles-extensions");
    let role = Role::new(&pg, "ext_app");
    let file = root.0.join("extensions.dump");
    {
        let source = pg.database("extsrc");
        fill(&pg, &source.name, 12, 30);
        // PgHero's, which only a superuser may create, and a trusted one an index uses.
        pg.psql(
            &source.name,
            "CREATE EXTENSION pg_stat_statements; CREATE EXTENSION pg_trgm;
             CREATE INDEX accounts_username_trgm ON accounts USING gin (username gin_trgm_ops);",
        );
        dump(&pg, &source.name, &["-Fc"], &file);
    }
    let target = pg.database("extdst");
    fill(&pg, &target.name, 1, 1);
    keep_roles(&pg, &target.name, &role.name, &root);
    let app = role.login();
    let scratch = root.dir("scratch");
    // Twice: the second replaces what the first made, the trusted extension among it.
    for round in 1..=2 {
        std::fs::copy(&file, scratch.join("database.dump")).unwrap();
        let (out, log) = restore_db(&app, &target.name, &scratch, None);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert!(
            log.contains("skipped-extensions pg_stat_statements"),
            "round {round}: {log}"
        );
        assert!(stderr(&out).contains("left out the dump's extensions pg_stat_statements"));
        assert_eq!(
            RestoreSummary::parse(&log).restored_rows,
            [("accounts".into(), 12), ("statuses".into(), 30)].into()
        );
        assert_eq!(
            pg.psql(
                &target.name,
                "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension"
            ),
            "pg_trgm,plpgsql",
            "round {round}"
        );
        assert_eq!(
            pg.psql(
                &target.name,
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'accounts_username_trgm'"
            ),
            "1"
        );
    }

    // A dump whose objects need a left-out extension: refused, rolled back, naming it.
    let needs = root.0.join("needs.dump");
    {
        let source = pg.database("extneeds");
        fill(&pg, &source.name, 3, 3);
        pg.psql(
            &source.name,
            "CREATE EXTENSION pg_stat_statements;
             CREATE VIEW slow_queries AS SELECT query FROM pg_stat_statements;",
        );
        dump(&pg, &source.name, &["-Fc"], &needs);
    }
    std::fs::copy(&needs, scratch.join("database.dump")).unwrap();
    let (out, log) = restore_db(&app, &target.name, &scratch, None);
    assert!(!out.status.success());
    assert!(
        log.contains("rolled back")
            && log.contains("the dump's extensions pg_stat_statements were left out"),
        "{log}"
    );
    assert_eq!(app.count(&target.name, "accounts"), 12, "as it was");
}
