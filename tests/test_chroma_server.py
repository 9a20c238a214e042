"""The index on a real Chroma server (`chroma run` on 127.0.0.1) instead of embedded Chroma."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testkit.pdf import write_pdf

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]

REPORT_PAGES = [
    "Quarterly report of the lighthouse keepers.\nAll lamps were cleaned in January.",
    "Incidents.\nA cormorant nested on the foghorn and had to be moved by the harbour master.",
    "Budget.\nThe lens polishing fund was doubled.",
]


def server_settings(tmp_path: Path, server: tuple[str, int], collection: str) -> Any:
    from rag.config import Settings

    host, port = server
    return Settings(
        storage_dir=tmp_path / "storage",
        chroma_host=host,
        chroma_port=port,
        collection=collection,
    )


def make_folder(corpus: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    shutil.copyfile(corpus / "essays" / "paul_graham_essay.txt", folder / "essay.txt")
    write_pdf(folder / "lighthouse.pdf", REPORT_PAGES)
    return folder


@pytest.mark.slow
def test_ingest_search_and_skip_on_a_chroma_server(
    chroma_server: tuple[str, int], embedder: Any, corpus: Path, tmp_path: Path
) -> None:
    import chromadb

    from rag.index import Index

    settings = server_settings(tmp_path, chroma_server, "server-docs")
    folder = make_folder(corpus, tmp_path / "docs")
    index = Index(settings, embedder=embedder)
    try:
        assert settings.store_location == "chroma server http://{}:{}".format(*chroma_server)
        first = index.ingest([folder])
        assert first.ok, first.failed
        assert sorted(first.indexed) == ["essay.txt", "lighthouse.pdf"]
        assert first.chunks_written > 20

        hits = index.search("a cormorant nested on the foghorn", 3)
        assert hits[0].file == "lighthouse.pdf"
        assert hits[0].page == 2
        assert "cormorant" in hits[0].text
        pdf_pages = {hit.page for hit in index.search("lighthouse lens polishing budget", 5)}
        assert 3 in pdf_pages

        essay_hits = index.search("the IBM 1401 in the basement of the junior high school", 3)
        assert any(h.file == "essay.txt" and h.page is None for h in essay_hits), essay_hits

        again = index.ingest([folder])
        assert again.indexed == []
        assert sorted(again.unchanged) == ["essay.txt", "lighthouse.pdf"]
        assert again.chunks_written == 0

        rows = index.manifest.files("server-docs")
        assert {row.file for row in rows} == {"essay.txt", "lighthouse.pdf"}
        assert all(row.pending is None for row in rows)
        total = sum(row.chunks for row in rows)
        assert total == first.chunks_written
        assert index.collection().chunk_counts() == {row.doc_id: row.chunks for row in rows}
    finally:
        index.close()

    # The vectors live in the server, not under storage/: a separate client sees them there.
    host, port = chroma_server
    client = chromadb.HttpClient(host=host, port=port)
    collection = client.get_collection("server-docs")
    assert collection.count() == total
    assert collection.metadata["embedder"] == settings.embed_model
    assert collection.metadata["dimension"] == 384
    assert not (tmp_path / "storage" / "chroma").exists()


def test_cli_reads_the_server_from_env(
    chroma_server: tuple[str, int], embedder: Any, corpus: Path, tmp_path: Path
) -> None:
    """RAG_CHROMA_HOST / RAG_CHROMA_PORT point the CLI at the server, where the index is."""
    from rag.index import Index

    settings = server_settings(tmp_path, chroma_server, "server-cli")
    folder = tmp_path / "docs"
    folder.mkdir()
    write_pdf(folder / "lighthouse.pdf", REPORT_PAGES)
    index = Index(settings, embedder=embedder)
    try:
        chunks = index.ingest([folder]).chunks_written
    finally:
        index.close()

    host, port = chroma_server
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAG_")}
    env.update(RAG_CHROMA_HOST=host, RAG_CHROMA_PORT=str(port), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rag",
            "status",
            "--json",
            "--storage",
            str(tmp_path / "storage"),
            "--collection",
            "server-cli",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["store"] == f"chroma server http://{host}:{port}"
    by_name = {c["name"]: c for c in status["collections"]}
    assert by_name["server-cli"]["chunks"] == chunks
    assert by_name["server-cli"]["files"] == 1


def test_unreachable_server_is_a_clear_store_error(tmp_path: Path) -> None:
    from rag.config import Settings
    from rag.errors import StoreError
    from rag.index import Index
    from testkit.app import free_port

    port = free_port()  # nothing listens there
    index = Index(
        Settings(storage_dir=tmp_path / "storage", chroma_host="127.0.0.1", chroma_port=port)
    )
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}"):
        index.status()
    index.close()
