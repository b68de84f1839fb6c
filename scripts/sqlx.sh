#!/usr/bin/env bash
# Keeps sqlx's offline query data (.sqlx/) in step with the queries and migrations.
#   scripts/sqlx.sh prepare   regenerate .sqlx/
#   scripts/sqlx.sh check     fail when .sqlx/ is stale
# Installs sqlx-cli (0.8, PostgreSQL only) with cargo when it is missing, and uses a
# scratch database on the local server so the development data stays untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-check}

if ! cargo sqlx --version >/dev/null 2>&1; then
  echo "sqlx.sh: installing sqlx-cli" >&2
  cargo install sqlx-cli --version '^0.8' --no-default-features --features postgres,rustls --locked >&2
fi

# One run at a time on this checkout: the scratch database is shared.
mkdir -p var
exec 9>var/sqlx.lock
flock 9

# The server of DATABASE_URL (or the local development cluster), with the scratch
# database herd_sqlx in place of the named one: the development data is never dropped.
base=$(scripts/pg.sh start)
query=""
case $base in *\?*) query="?${base#*\?}"; base=${base%%\?*} ;; esac
url="${base%/*}/herd_sqlx$query"
# A fresh scratch database with every migration applied.
export DATABASE_URL=$url
cargo sqlx database drop -y >/dev/null 2>&1 || true
cargo sqlx database create
cargo sqlx migrate run --source migrations >/dev/null
export SQLX_OFFLINE=false
case "$mode" in
  prepare) cargo sqlx prepare --workspace -- --all-targets ;;
  check) cargo sqlx prepare --workspace --check -- --all-targets ;;
  *) echo "usage: $0 prepare|check" >&2; exit 2 ;;
esac
