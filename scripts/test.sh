#!/usr/bin/env bash
# Runs every test of Herd: starts the PostgreSQL the tests need (installing Debian's
# package if needed), installs Debian's Chromium and chromedriver for the browser test and
# BusyBox for the backup scripts' tests when they are missing, installs axe-core from npm for its accessibility checks, fetches
# Kubernetes' OpenAPI definitions (scripts/k8s-openapi.sh), then
# runs the whole workspace's tests.
#
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p herd-web).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
# PyYAML reads YAML 1.1 as kubectl does: the tests check Herd's YAML against it.
python3 -c "import yaml" >/dev/null 2>&1 || need_apt+=(python3-yaml)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# BusyBox: the backup and restore scripts run in Alpine images (BusyBox's sh and tools),
# and the tests run them with it.
[ -x /usr/bin/busybox ] || [ -x /bin/busybox ] || need_apt+=(busybox)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "test.sh: installing ${need_apt[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >&2
fi

# axe-core (from npm) for the browser test's accessibility checks.
axe=var/axe/node_modules/axe-core/axe.min.js
if [ ! -s "$axe" ]; then
  echo "test.sh: installing axe-core from npm" >&2
  mkdir -p var/axe
  npm install --prefix var/axe --no-audit --no-fund --silent axe-core@4.11.0 >&2
fi
HERD_AXE_JS=$(pwd)/$axe
export HERD_AXE_JS

# #[sqlx::test] creates a database per test on this server.
url=$(scripts/pg.sh start)
export DATABASE_URL=${url%/*}/postgres
# Kubernetes' OpenAPI definitions, for validating rendered manifests.
HERD_K8S_OPENAPI=$(scripts/k8s-openapi.sh)
export HERD_K8S_OPENAPI
# Queries are checked against the committed .sqlx data, not the live database.
export SQLX_OFFLINE=true

# With arguments (e.g. -p herd-web), only what they select; otherwise the whole workspace.
if [ $# -gt 0 ]; then
  exec cargo test --all-targets --no-fail-fast "$@"
fi
exec cargo test --workspace --all-targets --no-fail-fast
