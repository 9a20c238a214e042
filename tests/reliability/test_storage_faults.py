"""Storage faults: a full disk or a read-only storage/ gives one clear error and loses nothing stored.

Each test puts storage/ on its own real tmpfs (root with CAP_SYS_ADMIN, as on CI), seeded with a copy
of one index built once for the module. The disk is filled by a real file written until ENOSPC and
made read-only by a real remount; the real CLI runs in subprocesses, the chat service in-process.

Skipped only when a tmpfs cannot be mounted and CI is not set; under CI that fails the run (as a
missing podman fails the container tests), so CI never passes without these tests having run.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from rag_cli import CLI_TIMEOUT_S, cli_env, inspect_storage, rag_command, run_rag

from testkit.pdf import write_pdf

ROOT = Path(__file__).resolve().parents[2]
DISK_MB = 96  # the tmpfs under storage/: the seed index plus room for a few ingests


# --- a small real disk ----------------------------------------------------------------------------------


def run_mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def cannot_run_here(reason: str) -> NoReturn:
    """Skip on a developer's machine; fail under CI, which must run these tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the storage-fault tests (root with CAP_SYS_ADMIN)")
    pytest.skip(f"{reason}: storage-fault tests need root with CAP_SYS_ADMIN, as on CI")


@pytest.fixture(scope="module", autouse=True)
def tmpfs_mounts(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Mount and unmount a tiny tmpfs once, before the module's seed index is built for nothing."""
    if shutil.which("mount") is None:
        cannot_run_here("no `mount` command")
    probe = tmp_path_factory.mktemp("tmpfs-probe")
    mounted = run_mount("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe))
    if mounted.returncode != 0:
        cannot_run_here(f"cannot mount a tmpfs ({mounted.stderr.strip()})")
    run_mount("umount", str(probe))


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """An empty tmpfs of DISK_MB at tmp_path/storage, unmounted after the test."""
    mountpoint = tmp_path / "storage"
    mountpoint.mkdir()
    mounted = run_mount("mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mountpoint))
    assert mounted.returncode == 0, f"cannot mount a tmpfs: {mounted.stderr}"
    yield mountpoint
    # Lazy: an in-process Chroma may still hold files open; the mount goes once they close.
    run_mount("umount", "-l", str(mountpoint))


def set_read_only(mountpoint: Path, read_only: bool) -> None:
    mode = "ro" if read_only else "rw"
    result = run_mount("mount", "-o", f"remount,{mode}", str(mountpoint))
    assert result.returncode == 0, f"cannot remount {mode}: {result.stderr}"


def fill_disk(mountpoint: Path) -> Path:
    """Write a filler file until the disk says ENOSPC, in ever smaller blocks down to one page."""
    filler = mountpoint / "filler.bin"
    with open(filler, "wb", buffering=0) as handle:
        block = 1 << 20
        while block >= 4096:
            try:
                handle.write(b"\0" * block)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
                block //= 2
    return filler


# --- the seed index ----------------------------------------------------------------------------------


def essay_pieces(corpus: Path, count: int, tag: str = "") -> list[str]:
    paragraphs = [
        p
        for p in (corpus / "essays" / "paul_graham_essay.txt").read_text().split("\n\n")
        if p.strip()
    ]
    size = -(-len(paragraphs) // count)
    return [f"{tag}\n\n" + "\n\n".join(paragraphs[i * size : (i + 1) * size]) for i in range(count)]


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory, corpus: Path, embedder: Any) -> dict[str, Any]:
    """An index of four essay pieces and a PDF, built once; tests copy its storage/ onto their disk."""
    from rag.config import Settings
    from rag.index import Index

    home = tmp_path_factory.mktemp("seed")
    docs = home / "docs"
    docs.mkdir()
    for number, text in enumerate(essay_pieces(corpus, 4)):
        (docs / f"essay_{number}.txt").write_text(text)
    write_pdf(
        docs / "orchard.pdf",
        ["Orchard report.\nThe pear trees flowered early.", "Nine tonnes of quinces expected."],
    )
    storage = home / "storage"
    index = Index(Settings(storage_dir=storage), embedder=embedder)
    try:
        assert index.ingest([docs]).ok
    finally:
        index.close()
    snapshot = inspect_storage(storage, home)
    assert_consistent(snapshot)
    assert len(snapshot["rows"]) == 5
    return {"storage": storage, "snapshot": snapshot}


def seeded(disk: Path, seed: dict[str, Any]) -> Path:
    shutil.copytree(seed["storage"], disk, dirs_exist_ok=True)
    return disk


def more_docs(folder: Path, corpus: Path) -> Path:
    """Three job listings and a generated PDF: a small ingest after the seed."""
    folder.mkdir()
    for job in sorted((corpus / "jobs").glob("*.md")):
        shutil.copyfile(job, folder / job.name)
    write_pdf(folder / "volcano.pdf", ["Field notes.\nThe crater lake turned green in March."])
    return folder


# --- what must hold -------------------------------------------------------------------------------------


def assert_consistent(state: dict[str, Any]) -> None:
    """No pending write; the store holds exactly the manifest's chunks, of the recorded versions."""
    rows = state["rows"]
    assert [row["file"] for row in rows if row["pending"]] == []
    assert state["counts"] == {row["doc_id"]: row["chunks"] for row in rows}
    assert state["versions"] == {f"{row['doc_id']}|{row['hash']}": row["chunks"] for row in rows}


def assert_nothing_lost(state: dict[str, Any], snapshot: dict[str, Any]) -> None:
    """Every chunk and manifest row of the snapshot is still there, and no chunk lacks a row."""
    missing = set(snapshot["ids"]) - set(state["ids"])
    assert not missing, f"{len(missing)} chunks indexed before the fault are gone"
    rows = {row["doc_id"]: row for row in state["rows"]}
    for row in snapshot["rows"]:
        assert rows.get(row["doc_id"], {}).get("hash") == row["hash"], f"{row['file']} lost"
    orphans = set(state["counts"]) - set(rows)
    assert not orphans, f"chunks of files the manifest does not know: {orphans}"


def assert_one_error_line(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("rag: error:")]
    assert len(errors) == 1, result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


def assert_status_matches(storage: Path, cwd: Path, state: dict[str, Any]) -> None:
    status = run_rag("status", "--json", "--storage", storage, cwd=cwd)
    assert status.returncode == 0, status.stderr[-3000:]
    [collection] = json.loads(status.stdout)["collections"]
    assert collection["files"] == len(state["rows"])
    assert collection["chunks"] == state["count"]


def assert_search_finds_seed(storage: Path, cwd: Path) -> None:
    query = "the IBM 1401 in the basement of the junior high school"
    search = run_rag("search", query, "--json", "-k", "3", "--storage", storage, cwd=cwd)
    assert search.returncode == 0, search.stderr[-3000:]
    hits = json.loads(search.stdout)
    assert any("1401" in hit["text"] and hit["file"].startswith("essay_") for hit in hits), hits


# --- the CLI --------------------------------------------------------------------------------------------


def test_ingest_on_a_full_disk_fails_clearly_and_loses_nothing(
    disk: Path, seed: dict[str, Any], corpus: Path, tmp_path: Path
) -> None:
    storage = seeded(disk, seed)
    folder = more_docs(tmp_path / "more", corpus)
    filler = fill_disk(disk)

    result = run_rag("ingest", folder, "--storage", storage, cwd=tmp_path)
    assert_one_error_line(result, f"{storage} is full", "free some space", "nothing already")

    filler.unlink()
    assert_status_matches(storage, tmp_path, seed["snapshot"])
    assert_search_finds_seed(storage, tmp_path)

    again = run_rag("ingest", folder, "--storage", storage, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(json.loads(again.stdout)["indexed"]) == 4
    state = inspect_storage(storage, tmp_path)
    assert_consistent(state)
    assert_nothing_lost(state, seed["snapshot"])
    assert len(state["rows"]) == 5 + 4


def run_filling_the_disk_midway(
    folder: Path, storage: Path, cwd: Path, fill: Callable[[], Path], after_files: int
) -> tuple[subprocess.CompletedProcess[str], Path | None]:
    """Run `rag ingest folder` and fill the disk once it starts on file number `after_files + 1`."""
    process = subprocess.Popen(
        rag_command("ingest", folder, "--storage", storage),
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(CLI_TIMEOUT_S, process.kill)  # a hung store must fail the test
    watchdog.start()
    filler = None
    lines = []
    assert process.stderr is not None and process.stdout is not None
    for line in process.stderr:
        lines.append(line)
        if filler is None and line.startswith(f"[{after_files + 1}/"):
            filler = fill()
    stdout = process.stdout.read()
    process.wait()
    watchdog.cancel()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(lines)), (
        filler
    )


def test_disk_filling_up_during_a_large_ingest_fails_clearly_and_loses_nothing(
    disk: Path, seed: dict[str, Any], corpus: Path, tmp_path: Path
) -> None:
    storage = seeded(disk, seed)
    folder = tmp_path / "big"
    folder.mkdir()
    pieces = essay_pieces(corpus, 6, tag="Second copy of the essay.")
    for number, text in enumerate(pieces):
        (folder / f"copy_{number}.txt").write_text(text)

    result, filler = run_filling_the_disk_midway(
        folder, storage, tmp_path, lambda: fill_disk(disk), after_files=2
    )
    assert filler is not None, f"the ingest ended before the disk could be filled:\n{result.stderr}"
    assert_one_error_line(result, f"{storage} is full", "nothing already indexed was lost")

    filler.unlink()
    state = inspect_storage(storage, tmp_path)
    assert_nothing_lost(state, seed["snapshot"])
    finished = [
        row for row in state["rows"] if row["file"].startswith("copy_") and not row["pending"]
    ]
    assert len(finished) >= 2, "the disk was meant to fill part-way through, after two files"

    again = run_rag("ingest", folder, "--storage", storage, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    state = inspect_storage(storage, tmp_path)
    assert_consistent(state)
    assert_nothing_lost(state, seed["snapshot"])
    assert len(state["rows"]) == 5 + len(pieces)


def test_read_only_storage_fails_clearly_and_loses_nothing(
    disk: Path, seed: dict[str, Any], corpus: Path, tmp_path: Path
) -> None:
    storage = seeded(disk, seed)
    folder = more_docs(tmp_path / "more", corpus)
    set_read_only(disk, True)

    result = run_rag("ingest", folder, "--storage", storage, cwd=tmp_path)
    assert_one_error_line(result, f"{storage} is read-only", "nothing already indexed was lost")
    for command in (["status"], ["search", "pear trees"]):
        reading = run_rag(*command, "--storage", storage, cwd=tmp_path)
        if reading.returncode != 0:  # reading may need to write (SQLite, Chroma): then say why
            assert_one_error_line(reading, f"{storage} is read-only")

    set_read_only(disk, False)
    again = run_rag("ingest", folder, "--storage", storage, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    state = inspect_storage(storage, tmp_path)
    assert_consistent(state)
    assert_nothing_lost(state, seed["snapshot"])
    assert len(state["rows"]) == 5 + 4


# --- the chat -------------------------------------------------------------------------------------------


def test_an_attachment_on_a_full_disk_is_refused_and_the_chat_goes_on(
    disk: Path, embedder: Any, tmp_path: Path
) -> None:
    from fakes.ollama_server import FakeOllama

    from rag.chat import ChatService
    from rag.config import Settings

    data = tmp_path / "data"
    data.mkdir()
    write_pdf(data / "guide.pdf", ["Island guide", "The lighthouse opens at nine in the morning."])
    upload = write_pdf(tmp_path / "upload.tmp", ["The harbour code is ZX-4417."])
    with FakeOllama(reply="At nine in the morning.") as ollama:
        settings = Settings(
            storage_dir=disk,
            data_dir=data,
            profiles_dir=ROOT / "profiles",
            llm="ollama",
            ollama_base_url=ollama.url,
        )
        service = ChatService(settings)
        service.index.embedder = embedder  # share the session's loaded model
        try:
            service.start_sync()
            service.wait_for_sync(120)
            assert service.sync_status.state == "done", service.sync_status.message
            session = service.session("chat-a", "general")
            filler = fill_disk(disk)

            refused = session.attach(upload, "harbour.pdf")
            assert not refused.indexed
            assert refused.message.startswith(f"harbour.pdf: {disk} is full"), refused.message
            assert "free some space" in refused.message

            answer = session.ask("When does the lighthouse open?")
            assert "".join(answer.stream()).startswith("At nine in the morning.")
            assert [source.file for source in answer.sources][:1] == ["guide.pdf"]

            filler.unlink()
            accepted = session.attach(upload, "harbour.pdf")
            assert accepted.indexed, accepted.message
            hits = service.index.retriever().retrieve("harbour code ZX-4417", 3, session.where)
            assert "harbour.pdf" in {hit.node.metadata["file"] for hit in hits}
        finally:
            service.index.close()
