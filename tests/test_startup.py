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
    'sentence_transformers', 'llama_index', 'chromadb', 'ik_llama_cpp'})
print(json.dumps({'code': code, 'heavy': heavy}))
"""


def probe(tmp_path: Path, *args: str) -> tuple[list[str], list[str]]:
    """What the command printed (lines) and the heavy packages it imported."""
    done = run_script(PROBE, *args, "--storage", str(tmp_path / "storage"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    result = json.loads(last)
    assert result["code"] == 0, done.stderr
    return printed, result["heavy"]


def imported(tmp_path: Path, *args: str) -> list[str]:
    return probe(tmp_path, *args)[1]


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


@pytest.mark.slow
def test_ask_with_the_embedded_model_imports_no_torch(indexed: Path) -> None:
    # RAG_LLM=embedded from the .env in the working folder, as a user would set it.
    (indexed / ".env").write_text("RAG_LLM=embedded\nRAG_MAX_NEW_TOKENS=16\n", encoding="utf-8")
    printed, heavy = probe(indexed, "ask", "How much is a Chimay Bleue?", "--json")
    answer = json.loads("\n".join(printed))
    assert answer["model"] == "embedded SmolLM2-135M-Instruct"
    assert not answer["refused"]  # so the model did answer
    assert "ik_llama_cpp" in heavy
    assert not {"torch", "transformers", "sentence_transformers"} & set(heavy)
