//! The scripts of a restore Job's pod, and what it reports. Two containers share a
//! scratch volume (`SCRATCH`):
//!
//! 1. [`FETCH_SCRIPT`], in the curl image (Alpine: BusyBox `sh`, `tar`, `sha256sum`):
//!    downloads the backup's `manifest.txt` first (none: the backup did not finish, and
//!    nothing is restored), then only the objects it lists, each through its presigned
//!    `GET` URL (one file per object name in `URLS`). Every piece is checked against its
//!    SHA-256 in the manifest **before anything is used**: one damaged piece and nothing
//!    is restored. Then it joins the dump's pieces into `$SCRATCH/database.dump`, extracts
//!    the media archive into `MEDIA_DIR` (with `MEDIA=volume`, when the backup has one),
//!    and leaves the manifest's row counts and app version in `$SCRATCH/source.txt`.
//! 2. [`RESTORE_DB_SCRIPT`], in the PostgreSQL image, as the app's login: the dump's
//!    extensions that login may not create (untrusted ones) and comments on extensions
//!    left out of its table of contents (said in `skipped-extensions`), the dump turned
//!    into SQL by `pg_restore --no-owner --no-privileges` (an unreadable dump stops there, a plain
//!    SQL dump among them: nothing but a pg_dump archive is ever replayed), then replayed
//!    by `psql` in one transaction
//!    after `DROP SCHEMA public CASCADE; CREATE SCHEMA public` (tables a later migration
//!    added go too) and followed by a check that `accounts` and `statuses` exist (a dump
//!    of another database, as an import may bring, is refused); a restore that fails
//!    rolls back, leaving the database as it was. Then it counts the same tables as the
//!    backup did
//!    ([`super::backup::COUNTED_TABLES`], same statement) and writes both counts and the
//!    backup's version to its termination message, which [`RestoreSummary::parse`] reads.
//!
//! The media volume is **not emptied** before the archive is extracted over it: the
//! database is restored after the media (by the next container), and that restore may
//! fail and roll back; the old database must then still find every file it refers to.
//! Both apps write a stored file once under a new path and never rewrite it, so the
//! archive's files are the same as those of the same path on the volume, and the union
//! serves both the old and the restored database. Files added after the backup are left
//! as orphans, which `tootctl media remove-orphans` (Mastodon) or `gotosocial admin media
//! prune orphaned` removes. A restore into a new tenant starts from an empty volume anyway.
//!
//! Failures end with one line, the reason, in the container's termination message
//! (`TERMINATION_LOG`, `/dev/termination-log` by default) and on its standard error.

use super::backup::count_rows_sql;

use std::collections::BTreeMap;

/// What [`FETCH_SCRIPT`] leaves for [`RESTORE_DB_SCRIPT`] in `SCRATCH`: the manifest's
/// `source-rows` and `source-version` lines, when it has them.
pub const SOURCE_FILE: &str = "source.txt";

/// The fetch container's script (POSIX `sh`; BusyBox in the curl image, tests run it with
/// BusyBox's `sh` and applets too). Environment: `URLS` (a directory, one file per object name
/// holding its presigned `GET` URL), `SCRATCH`, `MEDIA_DIR`, `MEDIA` (`volume` to restore
/// the media archive into `MEDIA_DIR` when the manifest lists one, `none`),
/// `TERMINATION_LOG`, and optionally `MANIFEST_SHA256` (the manifest's SHA-256 as the
/// backup reported it: a manifest that differs is refused). URLs reach curl on its standard
/// input, never in its arguments.
pub const FETCH_SCRIPT: &str = r##"set -eu
scratch=$SCRATCH
log=${TERMINATION_LOG:-/dev/termination-log}
fail() {
  echo "$1" >&2
  printf '%s\n' "$1" > "$log"
  exit 1
}
# get NAME FILE: downloads object NAME into FILE; its HTTP status in $code.
get() {
  if [ ! -f "$URLS/$1" ]; then
    fail "no download URL for $1, which the backup's manifest lists; nothing was restored"
  fi
  code=$(printf 'url = "%s"\n' "$(cat "$URLS/$1")" | curl --config - --silent --show-error --retry 5 --output "$2" --write-out '%{http_code}') || fail "could not download $1 (curl failed, see the log); nothing was restored"
}
case "$MEDIA" in volume|none) ;; *) fail "MEDIA is $MEDIA, not volume or none" ;; esac
manifest="$scratch/manifest.txt"
get manifest.txt "$manifest"
case "$code" in
  200) ;;
  403|404) fail "the backup has no manifest.txt (HTTP $code): it did not finish (or its download URLs expired); nothing was restored" ;;
  *) fail "manifest.txt could not be downloaded (HTTP $code); nothing was restored" ;;
esac
if [ -n "${MANIFEST_SHA256:-}" ] && [ "$(sha256sum "$manifest" | cut -d' ' -f1)" != "$MANIFEST_SHA256" ]; then
  fail "manifest.txt is not the one the backup reported (its SHA-256 differs); nothing was restored"
fi
# The objects to fetch, in the manifest's order: the dump's pieces, and the media
# archive's when they are to be restored. Other objects (the sealed app secrets) stay.
: > "$scratch/wanted"
grep -E '^[0-9a-f]{64}  [A-Za-z0-9._-]+$' "$manifest" > "$scratch/listed" || true
while read -r sum name; do
  case "$name" in
    database.dump.[0-9][0-9][0-9]) echo "$sum $name" >> "$scratch/wanted" ;;
    media.tar.[0-9][0-9][0-9])
      if [ "$MEDIA" = volume ]; then echo "$sum $name" >> "$scratch/wanted"; fi ;;
  esac
done < "$scratch/listed"
# pieces ARTIFACT: how many pieces of it are wanted, after checking they are .000, .001, …
pieces() {
  n=$(grep -c " $1\.[0-9][0-9][0-9]\$" "$scratch/wanted" || true)
  i=0
  while [ "$i" -lt "$n" ]; do
    if ! grep -q " $1\.$(printf '%03d' "$i")\$" "$scratch/wanted"; then
      fail "the manifest lists $n pieces of $1 but not $1.$(printf '%03d' "$i"): it is damaged; nothing was restored"
    fi
    i=$((i + 1))
  done
  echo "$n"
}
dumps=$(pieces database.dump)
medias=$(pieces media.tar)
if [ "$dumps" -eq 0 ]; then
  fail "the backup's manifest lists no database dump (a scheduled backup of a CloudNativePG tenant has none: restore its database with CloudNativePG); nothing was restored"
fi
bytes=0
while read -r sum name; do
  get "$name" "$scratch/$name"
  if [ "$code" != 200 ]; then
    fail "$name, which the manifest lists, could not be downloaded (HTTP $code); nothing was restored"
  fi
  if [ "$(sha256sum "$scratch/$name" | cut -d' ' -f1)" != "$sum" ]; then
    fail "$name does not match its SHA-256 in the manifest: the backup is damaged; nothing was restored"
  fi
  bytes=$((bytes + $(stat -c %s "$scratch/$name")))
done < "$scratch/wanted"
# Every piece is intact: join the dump (each piece removed once appended).
rm -f "$scratch/database.dump"
i=0
while [ "$i" -lt "$dumps" ]; do
  piece="$scratch/database.dump.$(printf '%03d' "$i")"
  cat "$piece" >> "$scratch/database.dump"
  rm -f "$piece"
  i=$((i + 1))
done
media="none in the backup"
if [ "$medias" -gt 0 ]; then
  mkdir -p "$MEDIA_DIR"
  i=0
  while [ "$i" -lt "$medias" ]; do
    piece="$scratch/media.tar.$(printf '%03d' "$i")"
    cat "$piece"
    rm -f "$piece"
    i=$((i + 1))
  done | tar -xf - -C "$MEDIA_DIR" || fail "the media archive could not be extracted into $MEDIA_DIR (see the log); the database was not restored"
  media="extracted into $MEDIA_DIR"
elif [ "$MEDIA" = none ]; then
  media="not restored (MEDIA=none)"
fi
{
  rows=$(sed -n 's/^# rows //p' "$manifest" | head -n 1)
  if [ -n "$rows" ]; then echo "source-rows $rows"; fi
  version=$(sed -n 's/^# version //p' "$manifest" | head -n 1)
  if [ -n "$version" ]; then echo "source-version $version"; fi
} > "$scratch/source.txt"
rm -f "$scratch/wanted" "$scratch/listed"
summary="fetched $((dumps + medias)) pieces ($bytes bytes), each checked against the manifest's SHA-256; media: $media"
echo "$summary"
printf '%s\n' "$summary" > "$log"
"##;

/// The database container's script (POSIX `sh`; BusyBox in the PostgreSQL image, tests
/// run it with BusyBox too). Environment: `SCRATCH`, the libpq variables (`PGHOST`, `PGPORT`,
/// `PGUSER`, `PGPASSWORD`, `PGDATABASE`), `APP` (`mastodon` or `gotosocial`),
/// `TERMINATION_LOG`. Its termination message: `source-rows accounts=N statuses=M` and
/// `source-version …` (from the manifest, when it has them), `restored-rows accounts=N
/// statuses=M`.
///
/// The SQL psql replays is always pg_restore's text of a pg_dump archive (custom or tar
/// format): there is no path for a plain SQL dump, whose psql meta-commands (`\!` runs a
/// shell) would run as they are. pg_restore since PostgreSQL 17.6, 16.10, 15.14, 14.19 and
/// 13.22 (CVE-2025-8714) writes `\restrict <random key>` at the top of that text, after
/// which psql refuses every meta-command but `\unrestrict <key>`; a crafted archive cannot
/// know the key, so nothing in its definitions or data can run a meta-command. The script
/// refuses an older pg_restore (the image `postgres:16-alpine` is 16.10 or later since
/// August 2025; a node's cached older image is refused, not used) and text without that
/// line. What the SQL itself can do is bounded by the login it runs as: the app's, never
/// a superuser ([`super::Tenant::database_login`]; docs/EXPORTS.md on imports).
pub const RESTORE_DB_SCRIPT: &str = concat!(
    r##"set -eu
scratch=$SCRATCH
log=${TERMINATION_LOG:-/dev/termination-log}
fail() {
  echo "$1" >&2
  printf '%s\n' "$1" > "$log"
  exit 1
}
case "$APP" in mastodon|gotosocial) ;; *) fail "APP is $APP, not mastodon or gotosocial" ;; esac
if [ ! -s "$scratch/database.dump" ]; then
  fail "no database dump in the scratch volume: the fetch step did not finish; the database was not touched"
fi
# pg_restore must write `\restrict <random key>` first (CVE-2025-8714), so that nothing
# in the archive can run a psql meta-command: 17.6, 16.10, 15.14, 14.19, 13.22 or later.
pgv=$(pg_restore --version 2> /dev/null | sed -n 's/^pg_restore (PostgreSQL) \([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
major=${pgv% *}
minor=${pgv#* }
case "$major$minor" in
  ''|*[!0-9]*) fail "could not read pg_restore's version ($(pg_restore --version 2>&1 | head -n 1)); the $APP database was not touched" ;;
esac
case "$major" in
  13) need=22 ;;
  14) need=19 ;;
  15) need=14 ;;
  16) need=10 ;;
  17) need=6 ;;
  *) if [ "$major" -ge 18 ]; then need=0; else need=1000; fi ;;
esac
if [ "$minor" -lt "$need" ]; then
  fail "pg_restore $major.$minor is too old to restore safely (it does not write \\restrict: CVE-2025-8714); use an image with 17.6, 16.10, 15.14 or later; the $APP database was not touched"
fi
# Settings the app's login may have given itself cannot stop the restore.
export PGOPTIONS="-c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
# The archive's table of contents: a dump's extensions are created only when PostgreSQL
# lets a login without superuser create them (trusted: pg_trgm, hstore, …, or not
# needing superuser at all); the others (pg_stat_statements, which PgHero asks for, …)
# and those this server does not have are left out, and said so. Comments on
# extensions are left out too (only an extension's owner may set them).
if ! pg_restore --list "$scratch/database.dump" > "$scratch/toc" 2> "$scratch/restore.err"; then
  cat "$scratch/restore.err" >&2
  fail "pg_restore could not read the dump; the $APP database was not touched: $(grep -m 1 -i 'error' "$scratch/restore.err" | cut -c 1-300)"
fi
trusted=$(psql -X -q -A -t -v ON_ERROR_STOP=1 -c "SELECT string_agg(DISTINCT name, ' ') FROM pg_catalog.pg_available_extension_versions WHERE trusted OR NOT superuser" 2> "$scratch/restore.err") || fail "the database did not answer ($(head -c 300 "$scratch/restore.err")); the $APP database was not touched"
: > "$scratch/skipped"
awk -v trusted=" $trusted " -v skipped="$scratch/skipped" '
  $4 == "EXTENSION" && $5 == "-" { if (index(trusted, " " $6 " ")) print; else print $6 > skipped; next }
  $4 == "COMMENT" && $5 == "-" && $6 == "EXTENSION" { next }
  { print }' "$scratch/toc" > "$scratch/toc.kept"
skipped=$(tr '\n' ' ' < "$scratch/skipped" | sed 's/ *$//')
if [ -n "$skipped" ]; then
  echo "left out the dump's extensions $skipped: only a superuser may create them, or this server does not have them" >&2
fi
# The dump as SQL first, always through pg_restore (a plain SQL dump is not an archive
# and is refused here): one it cannot read fails here, before the database is touched.
# (A file rather than a pipe: psql -1 would commit the part of a stream cut short.)
if ! pg_restore --no-owner --no-privileges --exit-on-error --use-list="$scratch/toc.kept" --file="$scratch/restore.sql" "$scratch/database.dump" 2> "$scratch/restore.err"; then
  cat "$scratch/restore.err" >&2
  fail "pg_restore could not read the dump; the $APP database was not touched: $(grep -m 1 -i 'error' "$scratch/restore.err" | cut -c 1-300)"
fi
if ! head -n 20 "$scratch/restore.sql" | grep -q '^\\restrict [A-Za-z0-9]'; then
  fail "pg_restore's text of the dump does not start with \\restrict (it would let the dump run psql commands); the $APP database was not touched"
fi
# Then, in ONE transaction, the schema emptied (tables a later migration added would
# otherwise stay, and block the restore or the migrations after it), the dump replayed
# and the app's main tables checked for (a dump of another database, as an import may
# bring, is not restored): a failure anywhere rolls everything back.
if ! psql -X -q -1 -v ON_ERROR_STOP=1 --dbname="$PGDATABASE" -c "DROP SCHEMA IF EXISTS public CASCADE" -c "CREATE SCHEMA public" --file="$scratch/restore.sql" -c "DO \$\$ BEGIN IF to_regclass('public.accounts') IS NULL OR to_regclass('public.statuses') IS NULL THEN RAISE EXCEPTION 'the dump has no accounts and statuses tables: it is not a $APP database'; END IF; END \$\$" > /dev/null 2> "$scratch/restore.err"; then
  cat "$scratch/restore.err" >&2
  without=""
  if [ -n "$skipped" ]; then
    without=" (the dump's extensions $skipped were left out: only a superuser may create them, or this server does not have them)"
  fi
  fail "the restore failed and rolled back, the $APP database is as it was$without: $(grep -m 1 -i 'error' "$scratch/restore.err" | cut -c 1-300)"
fi
rm -f "$scratch/restore.sql"
cat "$scratch/restore.err" >&2
psql -X -q -A -t -v ON_ERROR_STOP=1 -c ""##,
    count_rows_sql!(),
    r##"" > "$scratch/count.out" || fail "the database was restored but its rows could not be counted"
restored=$(sed -n 's/^rows //p' "$scratch/count.out")
{
  cat "$scratch/source.txt" 2> /dev/null || true
  echo "restored-rows $restored"
  if [ -n "$skipped" ]; then echo "skipped-extensions $skipped"; fi
} > "$scratch/restored.txt"
cat "$scratch/restored.txt"
cat "$scratch/restored.txt" > "$log"
"##
);

/// What a restore Job's database container reported in its termination message (see
/// [`RESTORE_DB_SCRIPT`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Rows of the counted tables when the backup was taken (table → rows), from its
    /// manifest; empty for a backup made before manifests had them.
    pub source_rows: BTreeMap<String, i64>,
    /// The same tables counted after the restore.
    pub restored_rows: BTreeMap<String, i64>,
    /// The app version the backup was taken at, from its manifest.
    pub source_version: Option<String>,
}

impl RestoreSummary {
    /// Reads a termination message; unknown lines are ignored.
    pub fn parse(message: &str) -> RestoreSummary {
        let mut s = RestoreSummary::default();
        for line in message.lines() {
            let (key, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
            match key {
                "source-rows" => s.source_rows = super::backup::parse_rows(rest),
                "restored-rows" => s.restored_rows = super::backup::parse_rows(rest),
                "source-version" if !rest.trim().is_empty() => {
                    s.source_version = Some(rest.trim().to_owned());
                }
                _ => {}
            }
        }
        s
    }

    /// Why the restored rows are not the backup's, or `None` when every table the backup
    /// counted has as many rows restored (and when the backup counted none: older
    /// manifests have no counts, nothing to compare).
    pub fn mismatch(&self) -> Option<String> {
        let differ: Vec<String> = self
            .source_rows
            .iter()
            .filter(|(t, n)| self.restored_rows.get(*t) != Some(n))
            .map(|(t, n)| match self.restored_rows.get(t) {
                Some(r) => format!("{t}: {n} in the backup, {r} restored"),
                None => format!("{t}: {n} in the backup, not counted after the restore"),
            })
            .collect();
        (!differ.is_empty()).then(|| differ.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::backup::{COUNTED_TABLES, COUNT_ROWS_SQL, DUMP_SCRIPT};

    #[test]
    fn a_termination_message_is_read_back() {
        let s = RestoreSummary::parse(
            "source-rows accounts=123 statuses=4567\nsource-version v4.3.2\nrestored-rows accounts=123 statuses=4567\n",
        );
        assert_eq!(
            s.source_rows,
            BTreeMap::from([("accounts".into(), 123), ("statuses".into(), 4567)])
        );
        assert_eq!(s.restored_rows, s.source_rows);
        assert_eq!(s.source_version.as_deref(), Some("v4.3.2"));
        assert_eq!(s.mismatch(), None);
    }

    #[test]
    fn differences_and_garbage_are_told_apart() {
        let s = RestoreSummary::parse(
            "noise\nsource-rows accounts=10 statuses=20 bogus=x\nrestored-rows accounts=10 statuses=19\nsource-version \n",
        );
        assert_eq!(s.source_rows.len(), 2, "bogus=x is not a count");
        assert_eq!(s.source_version, None);
        assert_eq!(
            s.mismatch().as_deref(),
            Some("statuses: 20 in the backup, 19 restored")
        );
        let s = RestoreSummary::parse("source-rows accounts=10\nrestored-rows\n");
        assert_eq!(
            s.mismatch().as_deref(),
            Some("accounts: 10 in the backup, not counted after the restore")
        );
        // A backup without counts: nothing to compare.
        let s = RestoreSummary::parse("restored-rows accounts=1 statuses=2\n");
        assert_eq!(s.mismatch(), None);
        assert_eq!(s.restored_rows["statuses"], 2);
        assert_eq!(RestoreSummary::parse(""), RestoreSummary::default());
    }

    #[test]
    fn the_dump_and_the_restore_count_the_same_tables_the_same_way() {
        for table in COUNTED_TABLES {
            assert!(COUNT_ROWS_SQL.contains(&format!("'{table}'")), "{table}");
        }
        assert!(DUMP_SCRIPT.contains(COUNT_ROWS_SQL));
        assert!(RESTORE_DB_SCRIPT.contains(COUNT_ROWS_SQL));
    }
}
