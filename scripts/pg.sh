#!/usr/bin/env bash
# Ensures a PostgreSQL server for Herd's development and tests, and prints its DATABASE_URL.
#
# - If DATABASE_URL is set, it is used as it is (and printed back).
# - Otherwise a private cluster is kept in $HERD_PG_DIR (default ./var/postgres), listening
#   on 127.0.0.1:$HERD_PG_PORT (default 54329). If something already answers there, it is used.
#   It is made for speed (fsync, synchronous_commit and full_page_writes off) unless
#   HERD_PG_DURABLE=1 when it is first created: `make bench` keeps such a durable cluster in
#   ./var/postgres-bench on port 54330, so figures are taken on settings a server would run.
# - Debian's PostgreSQL is installed with apt-get when no server binaries are found.
#
# Usage: scripts/pg.sh [start|stop|status|url]   (default: start)
set -euo pipefail

cmd=${1:-start}
root=$(cd "$(dirname "$0")/.." && pwd)
port=${HERD_PG_PORT:-54329}
dir=${HERD_PG_DIR:-$root/var/postgres}
db=${HERD_PG_DB:-herd}
url="postgres://herd@127.0.0.1:$port/$db"

log() { printf 'pg.sh: %s\n' "$*" >&2; }

if [ -n "${DATABASE_URL:-}" ] && [ "$cmd" != stop ]; then
  echo "$DATABASE_URL"
  exit 0
fi

find_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

bindir=$(find_bindir || true)
if [ -z "$bindir" ] && [ "$cmd" = start ]; then
  log "PostgreSQL is not installed; installing Debian's package (apt-get)."
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql >&2
  bindir=$(find_bindir) || { log "PostgreSQL install failed"; exit 1; }
fi

# PostgreSQL refuses to run as root: run it as the 'postgres' system user then.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ready() { "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" >/dev/null 2>&1; }

case "$cmd" in
  url) echo "$url" ;;
  status) if ready; then log "running on port $port ($dir)"; else log "not running"; exit 1; fi ;;
  stop)
    if [ -f "$dir/PG_VERSION" ]; then as_pg "$bindir/pg_ctl" -D "$dir" -m fast -w stop >&2 || true; fi ;;
  start)
    if ready; then echo "$url"; exit 0; fi
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -w "$(dirname "$dir")" 2>/dev/null; then
      mkdir -p "$dir"
      chown postgres:postgres "$dir"
      # The postgres user must be able to reach the directory.
      if ! runuser -u postgres -- test -w "$dir"; then
        dir=/tmp/herd-postgres-$port
        log "falling back to $dir (the work tree is not reachable by the postgres user)"
      fi
    fi
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$dir"
    chmod 700 "$dir"
    if [ ! -f "$dir/PG_VERSION" ]; then
      log "creating a cluster in $dir"
      as_pg "$bindir/initdb" -D "$dir" -U herd --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
      cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 128MB
CONF
      if [ "${HERD_PG_DURABLE:-0}" = 1 ]; then
        log "durable settings (every commit flushed to disk), for benchmarks"
      else
        # Development and tests only: a crash may lose the last commits.
        printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' >>"$dir/postgresql.conf"
      fi
    fi
    as_pg "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start >/dev/null
    ready || { log "PostgreSQL did not start; see $dir/server.log"; exit 1; }
    "$bindir/psql" -q -h 127.0.0.1 -p "$port" -U herd -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 ||
      "$bindir/createdb" -h 127.0.0.1 -p "$port" -U herd "$db"
    log "PostgreSQL is running on 127.0.0.1:$port (data in $dir)"
    echo "$url"
    ;;
  *) log "usage: $0 [start|stop|status|url]"; exit 2 ;;
esac
