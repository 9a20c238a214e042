#!/usr/bin/env bash
# Set up, index data/ and ask the index a first question.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/rag ingest "${RAG_DATA_DIR:-data}" || true   # exit 1 only means some files were refused
.venv/bin/rag search "${1:-What can I ask about my documents?}"
