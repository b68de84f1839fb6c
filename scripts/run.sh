#!/usr/bin/env bash
# Runs Herd for development: starts a local PostgreSQL when DATABASE_URL is not set
# (installing Debian's package if needed), then migrates, seeds and serves.
#
# Environment: every HERD_* variable of `herd serve --help` is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."

DATABASE_URL=$(scripts/pg.sh start)
export DATABASE_URL
export HERD_LISTEN=${HERD_LISTEN:-127.0.0.1:8080}
export HERD_PUBLIC_URL=${HERD_PUBLIC_URL:-http://${HERD_LISTEN/127.0.0.1/localhost}}
export HERD_MAIL_OUTBOX=${HERD_MAIL_OUTBOX:-var/mail}

cargo build -p herd
cat <<MSG

  Herd is starting on $HERD_PUBLIC_URL
  - sign up at $HERD_PUBLIC_URL/signup; confirmation emails land in $HERD_MAIL_OUTBOX/ as .eml files
  - create an operator: DATABASE_URL=$DATABASE_URL target/debug/herd admin create-operator --email you@example.org
  - stop with Ctrl-C; the database keeps running (scripts/pg.sh stop)

MSG
exec target/debug/herd serve "$@"
