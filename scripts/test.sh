#!/usr/bin/env bash
# Set up, lint, and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no tests (e.g. a -k filter that matched nothing): not a failure.
if [ "$status" -eq 5 ]; then status=0; fi
exit "$status"
