"""Durability: an ingest killed at any moment leaves an index that opens and heals on the next run.

The kill test drives the real CLI in a subprocess and SIGKILLs it at seeded random moments; the
crash-point tests stop an in-process ingest at exact steps of the write protocol; the lock test
checks that a second writer is refused with one clear line.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pdfgen import write_pdf
from rag_cli import cli_env, inspect_storage, kill_tree, rag_command, run_rag

ROOT = Path(__file__).resolve().parents[1]
PIECES = 6  # the essay is split into this many text files
KILLS = 5  # kills that must land while an ingest is running
MAX_ATTEMPTS = 8  # runs started in the kill loop (some finish before their kill time)
SEED = 20261125


# --- helpers ------------------------------------------------------------------------------------------


def essay_pieces(corpus: Path) -> list[str]:
    paragraphs = [
        p
        for p in (corpus / "essays" / "paul_graham_essay.txt").read_text().split("\n\n")
        if p.strip()
    ]
    size = -(-len(paragraphs) // PIECES)
    return ["\n\n".join(paragraphs[i * size : (i + 1) * size]) for i in range(PIECES)]


GENERATED_PDFS = {
    "orchard-report.pdf": [
        "Orchard report, spring season.\nThe pear trees flowered early this year.",
        "Harvest estimates.\nWe expect nine tonnes of quinces from the north slope.",
    ],
    "volcano-notes.pdf": [
        "Field notes on the volcano.\nThe crater lake turned green in March.",
        "Seismic log.\nTremors were recorded every night for a week.",
        "Evacuation plan.\nThe village hall is the assembly point.",
    ],
}


def build_folder(corpus: Path, folder: Path) -> None:
    """Six essay pieces, two generated PDFs and one real LaTeX PDF from the corpus."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, text in enumerate(essay_pieces(corpus)):
        (folder / f"essay_{number}.txt").write_text(text)
    for name, pages in GENERATED_PDFS.items():
        write_pdf(folder / name, pages)
    shutil.copyfile(corpus / "pdfs" / "good" / "pdflatex-4-pages.pdf", folder / "pdflatex.pdf")


def change_something(folder: Path, rng: random.Random, round_number: int) -> str:
    """Edit one essay piece (replace path), or drop / bring back a PDF (delete and add paths)."""
    if rng.random() < 0.25:
        gone = folder / "volcano-notes.pdf"
        if gone.exists():
            gone.unlink()
            return "removed volcano-notes.pdf"
        write_pdf(gone, GENERATED_PDFS["volcano-notes.pdf"])
        return "restored volcano-notes.pdf"
    target = folder / f"essay_{rng.randrange(PIECES)}.txt"
    paragraphs = target.read_text().split("\n\n")
    rng.shuffle(paragraphs)
    paragraphs.append(f"Revision {round_number}: this piece was edited while being indexed.")
    target.write_text("\n\n".join(paragraphs))
    return f"edited {target.name}"


def check_after_crash(state: dict[str, Any]) -> None:
    """What must hold at any instant: every chunk belongs to a manifest row, and every row with
    no pending write holds exactly its recorded chunks, all of its recorded version."""
    rows = {row["doc_id"]: row for row in state["rows"]}
    orphans = set(state["counts"]) - set(rows)
    assert not orphans, f"chunks of files the manifest does not know: {orphans}"
    for key, count in state["versions"].items():
        doc_id, digest = key.split("|")
        row = rows[doc_id]
        if row["pending"] is None:
            assert digest == row["hash"], f"{row['file']}: stale chunks of another version"
            assert count == row["chunks"], (
                f"{row['file']}: {count} chunks, manifest {row['chunks']}"
            )
    for doc_id, row in rows.items():
        if row["pending"] is None and row["hash"] is not None:
            assert state["counts"].get(doc_id, 0) == row["chunks"], f"{row['file']}: chunks lost"


# --- SIGKILL ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_moments_never_breaks_the_index(corpus: Path, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    storage = tmp_path / "storage"
    build_folder(corpus, folder)

    # One whole ingest of the folder, timed: the startup (imports, model) and the indexing work.
    started = time.monotonic()
    calibration = run_rag(
        "ingest", folder, "--storage", tmp_path / "calibration", "--json", cwd=tmp_path
    )
    full_s = time.monotonic() - started
    assert calibration.returncode == 0, calibration.stderr[-3000:]
    work_s = float(json.loads(calibration.stdout)["seconds"])
    startup_s = max(full_s - work_s, 0.5)
    shutil.rmtree(tmp_path / "calibration")

    # Each kill lands at a random moment of the run it interrupts: the first one anywhere in a full
    # ingest, later ones within the startup plus the indexing work estimated to be left.
    rng = random.Random(SEED)
    log: list[str] = []
    kills = 0
    left_s = work_s
    finished = False
    for attempt in range(MAX_ATTEMPTS):
        if kills >= KILLS:
            break
        if attempt and (finished or rng.random() < 0.6):
            change = change_something(folder, rng, attempt)
            left_s += work_s / PIECES if change.startswith("edited") else 0.5
            log.append(change)
        delay = rng.uniform(0.5, max(startup_s + left_s, 1.0))
        with open(tmp_path / f"ingest-{attempt}.log", "wb") as out:
            process = subprocess.Popen(
                rag_command("ingest", folder, "--storage", storage),
                cwd=tmp_path,
                env=cli_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                kill_tree(process)
                kills += 1
                finished = False
                left_s = max(left_s - max(delay - startup_s, 0.0), 0.0)
                log.append(f"killed after {delay:.1f} s")
            else:
                output = (tmp_path / f"ingest-{attempt}.log").read_text()
                assert process.returncode == 0, f"ingest failed on its own:\n{output[-3000:]}"
                finished = True
                left_s = 0.0
                log.append(f"finished before {delay:.1f} s")

        status = run_rag("status", "--json", "--storage", storage, cwd=tmp_path)
        assert status.returncode == 0, f"index does not open after: {log}\n{status.stderr[-3000:]}"
        assert json.loads(status.stdout)["store"].startswith("chroma embedded")
        state = inspect_storage(storage, tmp_path)
        check_after_crash(state)
        pending = [row["file"] for row in state["rows"] if row["pending"]]
        log.append(f"  -> {state['count']} chunks, {len(state['rows'])} files, pending {pending}")

    print(f"kill rounds (full ingest {full_s:.1f} s, startup {startup_s:.1f} s):", *log, sep="\n  ")
    assert kills >= 3, f"too few kills landed during an ingest: {log}"

    final = run_rag("ingest", folder, "--storage", storage, "--json", cwd=tmp_path)
    assert final.returncode == 0, f"{log}\n{final.stderr[-3000:]}"
    assert json.loads(final.stdout)["failed"] == []

    state = inspect_storage(storage, tmp_path)
    rows = state["rows"]
    assert all(row["pending"] is None for row in rows), rows
    on_disk = {path.name for path in folder.iterdir()}
    assert {row["file"] for row in rows} == on_disk
    for row in rows:  # the manifest describes the files as they are now
        digest = hashlib.sha256((folder / row["file"]).read_bytes()).hexdigest()
        assert row["hash"] == digest, f"{row['file']} indexed at a stale version ({log})"
        assert row["chunks"] > 0
    assert state["counts"] == {row["doc_id"]: row["chunks"] for row in rows}, log
    assert state["versions"] == {f"{row['doc_id']}|{row['hash']}": row["chunks"] for row in rows}

    status = json.loads(run_rag("status", "--json", "--storage", storage, cwd=tmp_path).stdout)
    [collection] = status["collections"]
    assert collection["chunks"] == sum(row["chunks"] for row in rows) == state["count"]
    assert collection["files"] == len(rows)

    search = run_rag(
        "search",
        "the IBM 1401 in the basement of the junior high school",
        "--json",
        "-k",
        "3",
        "--storage",
        storage,
        cwd=tmp_path,
    )
    assert search.returncode == 0, search.stderr[-3000:]
    hits = json.loads(search.stdout)
    assert any("1401" in hit["text"] and hit["file"].startswith("essay_") for hit in hits), hits


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
    from rag.ingest import storage_lock

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
