"""Durability: an ingest killed at any moment leaves an index that opens and heals on the next run.

The crash-point tests stop an in-process ingest at exact steps of the write protocol; the lock test
checks that a second writer is refused with one clear line. SIGKILLs of the real CLI and of the
running app at random moments are in tests/reliability/test_kills.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from rag_cli import run_rag

ROOT = Path(__file__).resolve().parents[1]
PIECES = 6  # the essay is split into this many text files


# --- helpers ------------------------------------------------------------------------------------------


def essay_pieces(corpus: Path) -> list[str]:
    paragraphs = [
        p
        for p in (corpus / "essays" / "paul_graham_essay.txt").read_text().split("\n\n")
        if p.strip()
    ]
    size = -(-len(paragraphs) // PIECES)
    return ["\n\n".join(paragraphs[i * size : (i + 1) * size]) for i in range(PIECES)]


# --- exact crash points ----------------------------------------------------------------------------------


class Crash(BaseException):
    """Stands in for a SIGKILL at one step: nothing after it runs, no handler catches it."""


CRASH_POINTS = {
    # after some of the new version's chunks are written, next to the old version's
    "after-first-upsert": ("store", "upsert"),
    # every new chunk written, old version still there, the manifest not yet told
    "before-commit": ("manifest", "commit_write"),
    # the manifest records the new version; the old version's chunks are still there
    "before-old-versions-deleted": ("store", "delete_other_versions"),
    # old version deleted, the manifest's pending mark not yet cleared
    "before-finish": ("manifest", "finish"),
}


def _crash_at(monkeypatch: pytest.MonkeyPatch, index: Any, point: str) -> None:
    owner_name, method = CRASH_POINTS[point]
    if owner_name == "manifest":

        def crash_manifest(*args: Any, **kwargs: Any) -> None:
            raise Crash(point)

        monkeypatch.setattr(index.manifest, method, crash_manifest)
        return
    from rag.store import ChunkStore

    original = getattr(ChunkStore, method)

    def crash_store(self: Any, *args: Any, **kwargs: Any) -> None:
        if point == "after-first-upsert":
            original(self, *args, **kwargs)
        raise Crash(point)

    monkeypatch.setattr(ChunkStore, method, crash_store)


def _consistent(index: Any) -> None:
    rows = index.manifest.files("default")
    assert all(row.pending is None for row in rows)
    counts = index.collection(check=False).chunk_counts()
    assert counts == {row.doc_id: row.chunks for row in rows}


@pytest.mark.parametrize("revert", [False, True], ids=["file-stays-changed", "file-reverted"])
@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_crash_during_replace_heals_on_next_ingest(
    monkeypatch: pytest.MonkeyPatch,
    index: Any,
    corpus: Path,
    tmp_path: Path,
    point: str,
    revert: bool,
) -> None:
    """Version A is indexed; writing version B crashes at `point`; the file then stays B or goes
    back to A; the next ingest must leave the store matching the manifest."""
    folder = tmp_path / "docs"
    folder.mkdir()
    target = folder / "essay.txt"
    version_a = essay_pieces(corpus)[0]
    version_b = version_a.replace("1401", "1402") + "\n\nA paragraph added in version B."
    target.write_text(version_a)
    assert index.ingest([folder]).indexed == ["essay.txt"]

    target.write_text(version_b)
    with monkeypatch.context() as patch:
        _crash_at(patch, index, point)
        with pytest.raises(Crash):
            index.ingest([folder])

    if revert:
        target.write_text(version_a)
    report = index.ingest([folder])
    assert report.ok
    _consistent(index)
    [row] = index.manifest.files("default")
    assert row.content_hash == hashlib.sha256(target.read_bytes()).hexdigest()
    hits = index.search("the IBM computer in the basement of the junior high school", 3)
    expected = "1401" if revert else "1402"
    assert any(expected in hit.text for hit in hits), hits


# --- the single-writer lock ------------------------------------------------------------------------------


def test_second_writer_is_refused_with_one_line(tmp_path: Path) -> None:
    from rag.database import storage_lock

    storage = tmp_path / "storage"
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "note.txt").write_text("A note about the lock on the storage folder.")
    with storage_lock(storage):
        result = run_rag("ingest", folder, "--storage", storage, cwd=tmp_path)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(storage) in lines[0]
    assert "being written" in lines[0]
    assert f"pid {os.getpid()}" in lines[0]
    assert "indexed" not in result.stdout  # no summary: nothing was attempted
    with storage_lock(storage):  # and the lock is free again once its holder lets go
        pass
