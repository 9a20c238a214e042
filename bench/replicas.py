"""Replicas: questions per second with one app replica and with two, on one Postgres and one Chroma server; and how long the writer lock takes to pass on when its holder is killed.

    python bench/replicas.py [--questions 58] [--concurrency 4] [--handovers 5] [--models-cache DIR]

Starts a real PostgreSQL cluster and `chroma run` on loopback, then the real app (`chainlit run
app.py`, embedded model) once and twice with RAG_DATABASE_URL and RAG_CHROMA_HOST, their data
folders on the shared corpus' menus and job postings. The questions are bench/qa/records.jsonl's
(those without attachments, asked in turn), sent over the OpenAI-compatible API by `concurrency`
clients, to one replica or alternately to both: they are answered from the records without the
model, so the figures are the app's own path (HTTP, engine, Postgres, Chroma), not the model's.
On 2 cores a second replica gains little; the point of replicas is that either can answer.

The hand-over: a process takes the writer lock and is SIGKILLed; the time until the next writer
holds it, beside the file lock's (the single-machine default) as the baseline. Goal: <= 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from common import ROOT, add_models_cache_flag, finish_with, goals_table, models_cache, say, table

from testkit.app import ChatServer, prepare_home
from testkit.chroma import run_chroma_server
from testkit.postgres import create_database, run_postgres

CORPUS = ROOT.parent / "shared" / "corpus"
QUESTIONS = ROOT / "bench" / "qa" / "records.jsonl"
HANDOVER_GOAL_S = 30.0
HOLD = """
import sys, time
from rag.database import {lock}
with {call}:
    print("holding", flush=True)
    time.sleep(600)
"""


def questions(count: int) -> list[str]:
    rows = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    asked = [row["question"] for row in rows if not row.get("attach")]
    return [asked[n % len(asked)] for n in range(count)]


def ask_all(urls: list[str], asked: list[str], concurrency: int) -> tuple[float, list[float]]:
    """Every question once, `concurrency` at a time, to the replicas in turn: (seconds, latencies)."""

    def ask(number: int) -> float:
        started = time.perf_counter()
        response = httpx.post(
            f"{urls[number % len(urls)]}/v1/chat/completions",
            json={"model": "general", "messages": [{"role": "user", "content": asked[number]}]},
            timeout=600,
        )
        response.raise_for_status()
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(ask, range(len(asked))))
    return time.perf_counter() - started, latencies


def handover(code: str, ready: str, take: str, env: dict[str, str]) -> float:
    """SIGKILL a process holding a lock; seconds until this process holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT, env=env
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == ready.encode()
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.perf_counter()
        subprocess.run([sys.executable, "-c", take], cwd=ROOT, env=env, check=True)
        return time.perf_counter() - killed
    finally:
        holder.kill()
        holder.wait(timeout=30)


def handovers(url: str, storage: Path, times: int) -> tuple[list[float], list[float]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    postgres = f"postgres_writer_lock({url!r}, 'the index', wait_s=60)"
    files = f"storage_lock(__import__('pathlib').Path({str(storage)!r}), wait_s=60)"
    take = "from rag.database import {lock}\nwith {call}:\n    pass"

    # The take runs in a fresh interpreter: its start-up is measured in both, alike.
    def measured(lock: str, call: str) -> list[float]:
        hold, take_it = HOLD.format(lock=lock, call=call), take.format(lock=lock, call=call)
        return [handover(hold, "holding", take_it, env) for _ in range(times)]

    on_postgres = measured("postgres_writer_lock", postgres)
    on_files = measured("storage_lock", files)
    return on_postgres, on_files


def start(home: Path, cache: Path, settings: dict[str, str], data: Path) -> ChatServer:
    prepare_home(home, cache)
    server = ChatServer(home, settings={**settings, "RAG_DATA_DIR": str(data)})
    server.start()
    server.wait_for_sync(timeout=600)
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=58, help="questions per run")
    parser.add_argument("--concurrency", type=int, default=4, help="clients asking at once")
    parser.add_argument("--handovers", type=int, default=5, help="lock hand-overs measured")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    add_models_cache_flag(parser)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rag-replicas-"))
    cache = models_cache(args.models_cache) or work / "models"
    cache.mkdir(exist_ok=True)
    data = work / "data"  # the corpus' files by path (links), never copies
    data.mkdir()
    for folder in ("menus", "jobs"):
        for file in sorted((CORPUS / folder).iterdir()):
            (data / file.name).symlink_to(file)
    asked = questions(args.questions)
    try:
        with (
            run_postgres(Path(tempfile.mkdtemp(prefix="rag-postgres-"))) as postgres,
            run_chroma_server(work) as chroma,
        ):
            url = create_database(postgres, "replicas")
            settings = {
                "RAG_DATABASE_URL": url,
                "RAG_CHROMA_HOST": chroma.host,
                "RAG_CHROMA_PORT": str(chroma.port),
                "CHAINLIT_AUTH_SECRET": "bench-replicas",
            }
            say("starting replica 1 (it indexes the menus and job postings)")
            one = start(work / "one", cache, settings, data)
            try:
                ask_all([one.url], asked[:4], 1)  # warm: first answers load what they use
                say(f"{len(asked)} questions to 1 replica, {args.concurrency} at a time")
                single = ask_all([one.url], asked, args.concurrency)
                say("starting replica 2 (the index is there: its sync finds nothing to do)")
                two = start(work / "two", cache, settings, data)
                try:
                    ask_all([two.url], asked[:4], 1)
                    say(f"{len(asked)} questions to 2 replicas in turn")
                    double = ask_all([one.url, two.url], asked, args.concurrency)
                finally:
                    two.stop()
            finally:
                one.stop()
            say(f"{args.handovers} lock hand-overs after SIGKILL, on Postgres and on a file lock")
            on_postgres, on_files = handovers(url, work / "file-lock", args.handovers)
    finally:
        finish_with(work, args.keep)

    rows = [("replicas", "questions/s", "p50 s", "p95 s")]
    for label, (seconds, latencies) in (("1", single), ("2", double)):
        ordered = sorted(latencies)
        rows.append(
            (
                label,
                f"{len(latencies) / seconds:.2f}",
                f"{statistics.median(ordered):.3f}",
                f"{ordered[int(0.95 * (len(ordered) - 1))]:.3f}",
            )
        )
    table(rows)
    print()
    table(
        [
            ("lock hand-over after SIGKILL", "median s", "max s"),
            (
                "Postgres advisory lock (replicas)",
                f"{statistics.median(on_postgres):.2f}",
                f"{max(on_postgres):.2f}",
            ),
            (
                "file lock (baseline: one machine)",
                f"{statistics.median(on_files):.2f}",
                f"{max(on_files):.2f}",
            ),
        ]
    )
    print()
    worst = max(on_postgres)
    goals_table(
        [
            (
                "lock hand-over after a killed holder",
                f"{worst:.2f} s",
                f"<= {HANDOVER_GOAL_S:g} s",
                "PASS" if worst <= HANDOVER_GOAL_S else "FAIL",
            ),
            (
                "2 replicas vs 1, questions/s",
                f"{(len(asked) / double[0]) / (len(asked) / single[0]):.2f}x",
                "(none: 2 cores)",
                "",
            ),
        ]
    )
    return 0 if worst <= HANDOVER_GOAL_S else 1


if __name__ == "__main__":
    sys.exit(main())
