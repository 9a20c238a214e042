"""The bundled embedder on onnxruntime: today's vectors without torch, wherever its cache can go;
other models need the optional `transformers` extra, and say so when it is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rag_cli import cli_env, run

from rag.config import Settings
from rag.embeddings import (
    TRANSFORMERS_INSTALL,
    OnnxEmbedding,
    SentenceTransformerEmbedding,
    build_embedder,
    onnx,
)
from rag.errors import ConfigError
from rag.loaders import load_bytes

SAME_VECTOR = 0.999
# The default install, as a user has it: the packages of the `transformers` extra are not there.
WITHOUT_THE_EXTRA = """
import sys
for name in ('torch', 'sentence_transformers', 'transformers'):
    sys.modules[name] = None  # `import torch` raises ModuleNotFoundError, find_spec says None
from rag.cli import main
sys.exit(main(sys.argv[1:]))
"""


def corpus_texts(corpus: Path) -> list[str]:
    """Paragraphs and lines of real documents: English prose (some longer than the model's 256
    tokens, so truncation is compared too), Russian and English menu pages, job postings."""
    texts = (corpus / "essays" / "paul_graham_essay.txt").read_text().split("\n\n")
    for path in sorted((corpus / "jobs").iterdir()) + sorted((corpus / "menus").iterdir()):
        for page in load_bytes(path.read_bytes(), path.name).pages:
            texts += [page.text[:1500], *page.text.splitlines()[:40]]
    return [text for text in texts if text.strip()]


def test_the_onnx_runtime_gives_the_vectors_of_sentence_transformers(
    embedder: OnnxEmbedding, corpus: Path
) -> None:
    texts = corpus_texts(corpus)
    assert len(texts) > 300
    reference = SentenceTransformerEmbedding(
        model_name="reference", model_path=embedder.model_path
    ).get_text_embedding_batch(texts)
    ours = embedder.get_text_embedding_batch(texts)
    cosines = np.sum(np.array(ours) * np.array(reference), axis=1)
    assert cosines.min() >= SAME_VECTOR, texts[int(cosines.argmin())][:80]


def test_the_bundled_embedder_runs_on_onnx_and_keeps_its_graph_under_storage(
    tmp_path: Path,
) -> None:
    embedder = build_embedder(Settings(storage_dir=tmp_path / "storage"))
    assert isinstance(embedder, OnnxEmbedding)
    assert len(embedder.get_query_embedding("what does a Chimay Bleue cost?")) == 384
    assert list((tmp_path / "storage" / "models" / "onnx").glob("*.onnx"))


def test_a_storage_folder_that_cannot_be_written_still_embeds(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    (storage / "models").write_text("not a folder")  # the cache cannot be made
    embedder = build_embedder(Settings(storage_dir=storage))
    assert len(embedder.get_query_embedding("opening hours")) == 384


def test_embedding_with_the_bundled_model_imports_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from rag.config import Settings\n"
        "from rag.embeddings import build_embedder\n"
        f"build_embedder(Settings(storage_dir={str(tmp_path)!r})).get_query_embedding('hi')\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_disk_without_room_for_the_graph_embeds_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More room asked for than any disk has: the graph is built for this process only.
    monkeypatch.setattr(onnx, "GRAPH_ROOM_MARGIN_MB", 2**40)
    embedder = build_embedder(Settings(storage_dir=tmp_path / "storage"))
    assert len(embedder.get_query_embedding("opening hours")) == 384
    assert not list((tmp_path / "storage").rglob("*.onnx"))


def test_another_model_without_the_extra_stops_with_one_line_naming_the_setting_and_the_install(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "menu.md").write_text("# Bar\n\nChimay Bleue (9°) 3.50 euro\n", encoding="utf-8")
    env = {**cli_env(), "RAG_EMBED_MODEL": "sentence-transformers/all-mpnet-base-v2"}
    command = [sys.executable, "-c", WITHOUT_THE_EXTRA, "ingest", str(data)]
    done = run([*command, "--storage", str(tmp_path / "storage")], cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr  # a setting is wrong: the usage exit code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    line = lines[0]
    assert line.startswith(
        "rag: error: RAG_EMBED_MODEL=sentence-transformers/all-mpnet-base-v2 "
        "is a sentence-transformers model, which needs torch"
    )
    assert TRANSFORMERS_INSTALL in line
    assert "indexed" not in done.stdout


def test_the_extra_missing_when_the_model_loads_is_the_same_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # find_spec found the packages at start, but they cannot be imported (removed, half installed).
    monkeypatch.setitem(sys.modules, "torch", None)
    model = SentenceTransformerEmbedding(model_name="my-model", model_path="my-model")
    with pytest.raises(ConfigError, match=r"^RAG_EMBED_MODEL=my-model .*needs torch") as raised:
        model.load()
    assert TRANSFORMERS_INSTALL in str(raised.value)


def test_another_model_with_the_extra_runs_on_sentence_transformers(
    embedder: OnnxEmbedding,
) -> None:
    model = build_embedder(Settings(embed_model=embedder.model_path))
    assert isinstance(model, SentenceTransformerEmbedding)
    assert model.model_path == embedder.model_path
