#!/usr/bin/env bash
# Set up, then start the chat in the browser at http://localhost:8000 (data/ is indexed on start).
# RAG_HOST / RAG_PORT (environment, else .env) say where; a bad setting stops here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --app  # the app alone: no torch, no test tools
# Read by the app's own settings loader, so .env is parsed (quotes, comments) and checked as the app
# does it, and the environment wins over .env; sourcing .env would run it as shell code.
address=$(.venv/bin/python - <<'EOF'
import sys

from rag.config import load_settings
from rag.errors import ConfigError

try:
    settings = load_settings()
except ConfigError as error:
    sys.exit(f"run.sh: {error}")
print(settings.host, settings.port)
EOF
)
read -r host port <<<"$address"
exec .venv/bin/chainlit run app.py --headless --host "$host" --port "$port"
