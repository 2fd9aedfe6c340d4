#!/usr/bin/env bash
# Install (if needed) and rehearse the whole migration on a throwaway local lab.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is needed: apt-get install -y redis-server redis-tools" >&2
  exit 2
fi
./scripts/install.sh
exec .venv/bin/ors-migrate demo "$@"
