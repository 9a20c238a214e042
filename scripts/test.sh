#!/usr/bin/env bash
# Set up, lint, and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .

# pytest exits 5 when it collected no tests. After a filter the caller gave (-k EXPR, -m MARKEXPR)
# that may be fine: nothing here matched it. Without one it means the suite went missing (a wrong
# path, a broken conftest, a collection that came up empty), and that is a failure.
filtered=false
for arg in "$@"; do
    case "$arg" in
        -k | -k?* | -m | -m?*) filtered=true ;;
    esac
done

set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    if [ "$filtered" = true ]; then
        echo "test.sh: no test matched the -k/-m filter given" >&2
        status=0
    else
        echo "test.sh: pytest collected no tests (exit 5): the suite must not be empty" >&2
    fi
fi
exit "$status"
