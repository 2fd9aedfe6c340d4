#!/usr/bin/env bash
# Set up what the tests need (system packages, .venv with the test extras), then run the suite.
# Extra arguments go to pytest, e.g. `./scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh test
exec .venv/bin/python -m pytest -q "$@"
