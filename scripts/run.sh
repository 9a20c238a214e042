#!/usr/bin/env bash
# Set up, then start the chat in the browser at http://localhost:8000 (data/ is indexed on start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/chainlit run app.py --headless --host "${RAG_HOST:-127.0.0.1}" --port "${RAG_PORT:-8000}"
