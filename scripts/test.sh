#!/usr/bin/env bash
# Set up what the tests need (system packages, .venv with the test extras), then run the suite.
# Extra arguments go to pytest, e.g. `./scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh test
# Three workers, one test file each at a time: lab tests mostly wait on servers, so 3 fit 2 cores.
exec .venv/bin/python -m pytest -q -n "${ORS_MIGRATE_TEST_WORKERS:-3}" --dist loadfile --durations=25 "$@"
