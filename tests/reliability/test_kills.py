"""Kills: SIGKILL of a CLI ingest or of the running app, 20 times at seeded random moments.

Both write the same storage: `rag ingest data/` in a subprocess, and the real app
(`chainlit run app.py`) syncing data/ in the background on start, indexing an API upload
(`POST /v1/documents`) or a chat attachment (over Chainlit's socket.io). Each is killed with
SIGKILL, together with its parse worker (`python -m rag.parsing`), as a power cut would. After every
kill the index opens, `rag status --json` agrees with the manifest and every chunk belongs to a
manifest row; at the end a restarted app and a re-run ingest leave exactly one complete version of
every file (no duplicate, no orphan chunk) and search works.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from rag_cli import (
    INSPECT,
    cli_env,
    inspect_storage,
    kill_tree,
    rag_command,
    run_rag,
    run_script,
)
from test_durability import PIECES, essay_pieces

from testkit.app import ChatServer, prepare_home
from testkit.chainlit import ChatClient, login
from testkit.pdf import write_pdf

ROOT = Path(__file__).resolve().parents[2]

SEED = 20261126
KILLS = 20
# Of the 20, the app is killed 4 times (each round restarts it: ~25 s), the rest are CLI ingests
# (each ~10 s of start-up before it writes). Together about 6 minutes on 2 cores.
APP_KILLS = {"app-sync": 2, "app-upload": 1, "app-attach": 1}
MAX_CLI_RUNS = 24  # CLI runs started (some finish before their kill time)
EARLY = 0.2  # share of CLI kills at any moment of a run (start-up too); the rest while it writes
PROGRESS = re.compile(r"^\[\d+/\d+\] ", re.MULTILINE)  # the CLI's line per file (stderr, no tty)

# Shared documents uploaded over the API under one name: each new version replaces the last.
API_NAME = "api-report.pdf"
API_VERSIONS = ["pdfs/good/federal-register-2020-17221.pdf", "pdfs/good/ca-warn-report.pdf"]
CHAT_FILES = ["menus/bosfor-restaurant-menu.pdf", "menus/fosdem-bar-menu.pdf"]

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


# --- the documents ------------------------------------------------------------------------------


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


def give_work(
    folder: Path, rng: random.Random, number: int, est: Estimates, log: list[str]
) -> None:
    """Change the folder (maybe), until the next run has at least one essay piece to index."""
    first = rng.random() < 0.7
    while first or est.left < est.work / PIECES:
        first = False
        change = change_something(folder, rng, number)
        est.left += est.work / PIECES if change.startswith("edited") else 0.5
        log.append(change)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- what must hold after any kill ------------------------------------------------------------------


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


# `rag status --json` (the CLI's own main) and then a look inside, in one process: a round's check
# costs one interpreter start instead of two.
STATUS_AND_INSPECT = (
    """
import contextlib, io, json, sys
from rag.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["status", "--json", "--storage", sys.argv[1]])
print(json.dumps({"code": code, "stdout": out.getvalue()}))
"""
    + INSPECT
)


def status_and_state(storage: Path, cwd: Path) -> tuple[int, str, str, dict[str, Any]]:
    """(exit code, stdout, stderr) of `rag status --json`, and what `inspect_storage` reports."""
    result = run_script(STATUS_AND_INSPECT, storage, "default", cwd=cwd)
    lines = result.stdout.splitlines()
    if len(lines) < 2:  # status failed hard: the index does not open
        return result.returncode or 1, result.stdout, result.stderr, {}
    status = json.loads(lines[0])
    return status["code"], status["stdout"], result.stderr, json.loads(lines[1])


def check_storage(storage: Path, cwd: Path, log: list[str], *, cli: bool = False) -> dict[str, Any]:
    """The index opens, `rag status --json` agrees with the manifest, no chunk is an orphan.

    With `cli` the status comes from the `rag` command in its own process, else from the same
    code (its main) in the process that inspects.
    """
    if cli:
        with ThreadPoolExecutor(1) as pool:  # both only read: run side by side
            status_run = pool.submit(run_rag, "status", "--json", "--storage", storage, cwd=cwd)
            state = inspect_storage(storage, cwd)
            done = status_run.result()
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    else:
        code, stdout, stderr, state = status_and_state(storage, cwd)
    assert code == 0, f"index does not open after: {log}\n{stderr[-3000:]}"
    report = json.loads(stdout)
    assert report["store"].startswith("chroma embedded")
    collections = {c["name"]: c for c in report["collections"]}
    default = collections.pop("default")
    assert default["files"] == len(state["rows"]), (log, default, state["rows"])
    assert default["chunks"] == state["count"], (log, default)
    assert all(c["chunks"] == 0 for c in collections.values()), collections
    check_after_crash(state)
    pending = [row["file"] for row in state["rows"] if row["pending"]]
    log.append(f"  -> {state['count']} chunks, {len(state['rows'])} files, pending {pending}")
    return state


# --- killing ------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the app's parse worker), from the parent ids in /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def kill_app(server: ChatServer) -> int:
    """SIGKILL the app and everything it started at once; returns how many children died with it.

    The server shares the test's process group, so the group cannot be killed: the tree is.
    """
    process = server.process
    assert process is not None and process.poll() is None, "the app died on its own"
    doomed = [process.pid, *descendants(process.pid)]
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)
    return len(doomed) - 1


@dataclass
class Estimates:
    """Seconds, measured on this machine as the test goes, that bound each random kill moment."""

    startup: float  # CLI: spawn to its first progress line
    work: float  # CLI: a whole ingest of the folder, after start-up
    left: float = 0.0  # CLI work the next run has to do
    upload: float = 10.0  # app: an API upload of one PDF, until answered
    attach: float = 10.0  # app: a chat attachment, sending to the answer's end
    uploads: dict[str, set[str]] = field(default_factory=dict)  # name -> hashes ever sent


def wait_for_progress(log_path: Path, process: subprocess.Popen[bytes], timeout: float) -> float:
    """When the CLI's first progress line appeared (its writing starts), or now if it ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if PROGRESS.search(log_path.read_text(errors="replace")):
            break
        time.sleep(0.05)
    return time.monotonic()


def cli_round(
    folder: Path, storage: Path, cwd: Path, rng: random.Random, est: Estimates, number: int
) -> bool:
    """Run `rag ingest` and SIGKILL it at a random moment; True if the kill landed."""
    log_path = cwd / f"ingest-{number}.log"
    with open(log_path, "wb") as out:
        spawned = time.monotonic()
        process = subprocess.Popen(
            rag_command("ingest", folder, "--storage", storage),
            cwd=cwd,
            env=cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        early = rng.random() < EARLY
        if early:
            begun, kill_at = spawned, spawned + rng.uniform(0.3, est.startup + est.left)
        else:
            begun = wait_for_progress(log_path, process, timeout=300)
            est.startup = (est.startup + begun - spawned) / 2  # follow the machine's load
            kill_at = begun + rng.uniform(0.0, max(est.left, 1.0))
        try:
            process.wait(timeout=max(kill_at - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            kill_tree(process)
            est.left = max(est.left - max(kill_at - max(begun, spawned + est.startup), 0.0), 0.0)
            return True
    output = log_path.read_text(errors="replace")
    assert process.returncode == 0, f"ingest failed on its own:\n{output[-3000:]}"
    if not early and est.left > 0:  # its work took less (or more) than estimated: rescale
        ratio = (time.monotonic() - begun) / est.left
        est.work *= min(max(ratio, 0.5), 2.0)
    est.left = 0.0
    return False


# --- the app's writes ---------------------------------------------------------------------------


def upload_in_background(url: str, name: str, data: bytes) -> tuple[threading.Thread, list[Any]]:
    """POST /v1/documents from a thread; its outcome (response or error) lands in the list."""
    outcome: list[Any] = []

    def post() -> None:
        try:
            outcome.append(
                httpx.post(f"{url}/v1/documents", files={"file": (name, data)}, timeout=300)
            )
        except httpx.HTTPError as error:  # the kill cuts the connection
            outcome.append(error)

    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread, outcome


def attach_in_background(
    url: str, name: str, data: bytes
) -> tuple[threading.Thread, threading.Event, list[str]]:
    """A chat that attaches a file and asks about it (as the paper clip does), from a thread.

    The event is set once the message is sent; the list gets any failure before that.
    """
    sent = threading.Event()
    failures: list[str] = []

    async def chat() -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            cookie = await login(http, url)
        client = ChatClient(url, cookie)
        await client.connect()
        reference = await client.upload(name, data)
        await client.send("What is on this menu?", [reference])
        sent.set()
        await client.answered(timeout=300)  # the answer, or the kill closing the socket
        await client.close()

    def run() -> None:
        try:
            asyncio.run(chat())
        except Exception as error:  # noqa: BLE001 - reported to the test thread
            if not sent.is_set():
                failures.append(f"{type(error).__name__}: {error}")
        finally:
            sent.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, sent, failures


def app_round(
    kind: str,
    server: ChatServer,
    corpus: Path,
    rng: random.Random,
    est: Estimates,
    number: int,
) -> str:
    """Start the app, let it write (sync, upload or attachment), SIGKILL it at a random moment."""
    started = time.monotonic()
    server.start()
    up = time.monotonic() - started
    phase = ""
    if kind == "app-sync":
        # The sync started with the app: once it walks the files (the embedder is loaded), the
        # kill lands within the indexing work estimated to be left.
        kill_at, give_up = None, time.monotonic() + 600
        while kill_at is None or time.monotonic() < kill_at:
            assert time.monotonic() < give_up, f"the sync never got going: {phase}"
            try:
                sync = server.health()["index"]["sync"]
            except httpx.HTTPError:  # a busy app answers late: ask again
                continue
            phase = f"sync {sync['state']} {sync['files_done']}/{sync['files_total']} files"
            if kill_at is None and (sync["files_total"] or sync["state"] in ("done", "failed")):
                kill_at = time.monotonic() + rng.uniform(0.0, max(est.left, 1.0))
            time.sleep(0.1)
    elif kind == "app-upload":
        server.wait_for_sync(timeout=600)
        data = (corpus / API_VERSIONS[number % len(API_VERSIONS)]).read_bytes()
        est.uploads.setdefault(API_NAME, set()).add(sha256(data))
        sent = time.monotonic()
        thread, outcome = upload_in_background(server.url, API_NAME, data)
        thread.join(timeout=rng.uniform(0.0, est.upload))
        if outcome and isinstance(outcome[0], httpx.Response):
            assert outcome[0].status_code == 200, outcome[0].text
            est.upload = max(est.upload, time.monotonic() - sent)
            phase = "upload answered"
        else:
            phase = f"upload in flight after {time.monotonic() - sent:.1f} s"
    else:
        server.wait_for_sync(timeout=600)
        source = corpus / CHAT_FILES[number % len(CHAT_FILES)]
        name = f"chat-menu-{number}.pdf"
        data = source.read_bytes()
        est.uploads.setdefault(name, set()).add(sha256(data))
        thread, sent, failures = attach_in_background(server.url, name, data)
        assert sent.wait(timeout=300), "the chat did not get to send its attachment"
        assert not failures, failures
        since = time.monotonic()
        thread.join(timeout=rng.uniform(0.0, est.attach))
        if thread.is_alive():
            phase = f"attachment in flight after {time.monotonic() - since:.1f} s"
        else:
            est.attach = max(est.attach, time.monotonic() - since)
            phase = "answer done"
    children = kill_app(server)
    return f"{kind}: app up in {up:.1f} s, killed ({phase}; {children} child processes)"


# --- the test -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_sigkill_of_cli_and_app_at_random_moments_never_breaks_the_index(
    corpus: Path, tmp_path: Path, models_cache: Path
) -> None:
    home = prepare_home(tmp_path / "home", models_cache)
    folder, storage = home / "data", home / "storage"
    build_folder(corpus, folder)
    server = ChatServer(home)

    # One whole ingest of the folder, timed: its start-up (imports, model) and its indexing work.
    log_path = tmp_path / "ingest-first.log"
    with open(log_path, "wb") as out:
        spawned = time.monotonic()
        process = subprocess.Popen(
            rag_command("ingest", folder, "--storage", storage),
            cwd=tmp_path,
            env=cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        begun = wait_for_progress(log_path, process, timeout=300)
        assert process.wait(timeout=600) == 0, log_path.read_text()[-3000:]
        est = Estimates(startup=begun - spawned, work=time.monotonic() - begun)
    log = [f"first ingest: start-up {est.startup:.1f} s, work {est.work:.1f} s"]
    check_storage(storage, tmp_path, log, cli=True)

    rng = random.Random(SEED)
    plan = [kind for kind, count in APP_KILLS.items() for _ in range(count)]
    plan += ["cli"] * (KILLS - len(plan))
    rng.shuffle(plan)
    kills = cli_runs = 0
    try:
        for number, kind in enumerate(plan, 1):
            if kind in ("cli", "app-sync"):
                give_work(folder, rng, number, est, log)
            if kind != "cli":
                log.append(app_round(kind, server, corpus, rng, est, number))
                kills += 1
                if kind != "app-sync":  # it waited for the sync of data/ to finish
                    est.left = 0.0
            else:
                while cli_runs < MAX_CLI_RUNS:
                    cli_runs += 1
                    if cli_round(folder, storage, tmp_path, rng, est, cli_runs):
                        kills += 1
                        log.append(f"cli: killed (about {est.left:.1f} s of work left)")
                        break
                    log.append("cli: finished before its kill time")
                    check_storage(storage, tmp_path, log)
                    give_work(folder, rng, number, est, log)
            check_storage(storage, tmp_path, log)

        print("kill rounds:", *log, sep="\n  ")
        assert kills == KILLS, f"only {kills} kills landed in {cli_runs} CLI runs: {log}"

        # The app comes back, finishes what was left and syncs data/; then a CLI re-run has
        # nothing to add, and the store holds exactly what the manifest says.
        server.start()
        server.wait_for_sync(timeout=300)
        sync = server.health()["index"]["sync"]
        assert sync["state"] == "done" and sync["failed"] == [], sync
    finally:
        server.stop()
    final = run_rag("ingest", folder, "--storage", storage, "--json", cwd=tmp_path)
    assert final.returncode == 0, f"{log}\n{final.stderr[-3000:]}"
    assert json.loads(final.stdout)["failed"] == []

    state = check_storage(storage, tmp_path, log, cli=True)
    rows = state["rows"]
    assert all(row["pending"] is None for row in rows), rows
    uploaded = {row["file"]: row for row in rows if row["file"] in est.uploads}
    shared = [row for row in rows if row["file"] not in est.uploads]
    assert {row["file"] for row in shared} == {path.name for path in folder.iterdir()}
    for row in shared:  # the manifest describes the data folder as it is now
        digest = sha256((folder / row["file"]).read_bytes())
        assert row["hash"] == digest, f"{row['file']} indexed at a stale version ({log})"
    for name, row in uploaded.items():  # an upload is indexed at a version that was sent
        assert row["hash"] in est.uploads[name], f"{name} indexed at a version never sent"
    assert all(row["chunks"] > 0 for row in rows), rows
    # One complete version per file: no duplicate, no orphan, nothing missing.
    assert state["counts"] == {row["doc_id"]: row["chunks"] for row in rows}, log
    assert state["versions"] == {f"{row['doc_id']}|{row['hash']}": row["chunks"] for row in rows}
    assert len(state["ids"]) == len(set(state["ids"])) == state["count"]

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
