#!/usr/bin/env bash
# Set up what the demo needs (redis-server, .venv), then rehearse the whole migration on a
# throwaway local lab.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh demo
exec .venv/bin/ors-migrate demo "$@"
