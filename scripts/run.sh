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
# Servers named <name>.herd.localhost need no DNS proof on a developer machine; any other
# domain waits for its TXT record, as in production.
export HERD_BASE_DOMAIN=${HERD_BASE_DOMAIN:-herd.localhost}

# The key sealing kubeconfigs and owners' one-time passwords in the database: made once
# and kept in var/ (production sets HERD_ENCRYPTION_KEY from a secret).
if [ -z "${HERD_ENCRYPTION_KEY:-}" ]; then
  mkdir -p var
  if [ ! -s var/encryption.key ]; then
    (umask 077; head -c 32 /dev/urandom | base64 > var/encryption.key)
  fi
  HERD_ENCRYPTION_KEY=$(cat var/encryption.key)
  export HERD_ENCRYPTION_KEY
fi

# The same build as `make test` (the whole workspace, every target, queries checked
# against the committed .sqlx data): nothing is rebuilt when switching between the two.
SQLX_OFFLINE=true cargo build --workspace --all-targets

# The cluster of the current kubeconfig (a kind or k3d cluster), when one answers.
kubeconfig=${KUBECONFIG:-$HOME/.kube/config}
kubeconfig=${kubeconfig%%:*}
if [ -f "$kubeconfig" ]; then
  target/debug/herd admin register-cluster --name local --region local \
    --kubeconfig "$kubeconfig" --if-reachable || true
else
  echo "No kubeconfig ($kubeconfig): ordered servers wait as \"queued: no cluster connected\";"
  echo "connect a cluster in the console (Clusters) or with 'herd admin register-cluster'."
fi
cat <<MSG

  Herd is starting on $HERD_PUBLIC_URL
  - sign up at $HERD_PUBLIC_URL/signup; confirmation emails land in $HERD_MAIL_OUTBOX/ as .eml files
  - order a server named <name>.$HERD_BASE_DOMAIN: it needs no DNS proof (other domains wait for a TXT record)
  - create an operator: DATABASE_URL=$DATABASE_URL target/debug/herd admin create-operator --email you@example.org
  - stop with Ctrl-C; the database keeps running (scripts/pg.sh stop)

MSG
exec target/debug/herd serve "$@"
