#!/usr/bin/env bash
# The static checks CI runs besides the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== herd-domain does no IO"
for forbidden in sqlx axum kube stripe async-stripe tokio reqwest; do
  if cargo tree -p herd-domain -e normal --prefix none | awk '{print $1}' | grep -qx "$forbidden"; then
    echo "herd-domain depends on $forbidden" >&2
    exit 1
  fi
done

echo "== .sqlx is fresh"
scripts/sqlx.sh check
