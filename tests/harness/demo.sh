#!/usr/bin/env bash
# `make demo`: throwaway PostgreSQL + sample CRM + pgveil in front (see demo.py).
# Owns nothing persistent; everything it starts is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PGVEIL_BIN="${PGVEIL_BIN:-$PWD/bin/pgveil}"
if [ ! -x "$PGVEIL_BIN" ]; then
  echo "demo: $PGVEIL_BIN not built; run 'make' first" >&2
  exit 1
fi
exec /usr/bin/python3 tests/harness/demo.py "$@"
