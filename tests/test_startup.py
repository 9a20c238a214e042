"""Cold CLI starts: each command imports only what it uses (bench/startup.py times them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rag_cli import run_script

# Runs the real CLI in this process, then prints which heavy packages it imported.
PROBE = """
import json, sys
from rag.cli import main
code = main(sys.argv[1:])
heavy = sorted({name.split('.')[0] for name in sys.modules} & {'torch', 'transformers',
    'sentence_transformers', 'llama_index', 'chromadb'})
print(json.dumps({'code': code, 'heavy': heavy}))
"""


def imported(tmp_path: Path, *args: str) -> list[str]:
    done = run_script(PROBE, *args, "--storage", str(tmp_path / "storage"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["heavy"]


@pytest.fixture
def indexed(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "menu.md").write_text("# Bar\n\nChimay Bleue (9°) 3.50 euro\n", encoding="utf-8")
    done = run_script(
        PROBE, "ingest", str(data), "--storage", str(tmp_path / "storage"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    return tmp_path


def test_status_opens_only_the_store(indexed: Path) -> None:
    assert imported(indexed, "status") == ["chromadb"]


def test_remove_opens_only_the_store(indexed: Path) -> None:
    assert imported(indexed, "remove", "menu.md") == ["chromadb"]


def test_search_with_the_bundled_embedder_imports_no_torch(indexed: Path) -> None:
    heavy = imported(indexed, "search", "Chimay Bleue", "--json")
    assert not {"torch", "transformers", "sentence_transformers"} & set(heavy)
