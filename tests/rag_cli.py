"""Run the real `rag` command in a subprocess and look inside a storage folder, for any test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI_TIMEOUT_S = 300
Completed = subprocess.CompletedProcess[str]


def cli_env() -> dict[str, str]:
    """The test's environment without any RAG_* setting, offline, with this checkout importable."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAG_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", ANONYMIZED_TELEMETRY="False")
    return env


def rag_command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "rag", *(str(arg) for arg in args)]


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> Completed:
    """Run a command as the tests run the CLI: offline env, output captured, time bounded."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def run_rag(*args: str | Path, cwd: Path) -> Completed:
    return run(rag_command(*args), cwd)


def run_script(script: str, *args: str | Path, cwd: Path) -> Completed:
    """`python -c SCRIPT ARGS...` with this checkout importable (to look inside a storage)."""
    return run([sys.executable, "-c", script, *(str(arg) for arg in args)], cwd)


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the ingest and its parser child at once (its own session), as a power cut would."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # before wait(): the group id is surely still ours
    process.wait(timeout=30)


# Prints the manifest rows and what Chroma holds per (doc_id, content_hash), and every chunk id;
# run in a subprocess so the test process never holds the embedded store open while another
# process (an ingest, the app) writes to it.
INSPECT = """
import json, sys
from pathlib import Path
from rag.config import Settings
from rag.index import Index
index = Index(Settings(storage_dir=Path(sys.argv[1])))
collection = sys.argv[2]
store = index.collection(collection, check=False)
versions = {}
result = store.collection.get(include=["metadatas"])
for metadata in result["metadatas"]:
    key = f"{metadata.get('doc_id')}|{metadata.get('content_hash')}"
    versions[key] = versions.get(key, 0) + 1
rows = [
    {"doc_id": r.doc_id, "file": r.file, "chunks": r.chunks, "hash": r.content_hash,
     "pending": r.pending}
    for r in index.manifest.files(collection)
]
print(json.dumps({"rows": rows, "versions": versions, "count": store.count(),
                  "counts": store.chunk_counts(), "ids": sorted(result["ids"])}))
index.close()
"""


def inspect_storage(storage: Path, cwd: Path, collection: str = "default") -> dict[str, Any]:
    """Manifest rows, chunk counts per file and version, and all chunk ids of one collection."""
    result = run_script(INSPECT, storage, collection, cwd=cwd)
    assert result.returncode == 0, f"cannot inspect the index:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)
