"""The bundled embedders side by side: load time, memory, query latency and passage throughput.

    .venv/bin/python bench/embedders.py [--texts FILE] [--queries 50] [--only minilm,use,e5]

Each embedder is measured in a fresh child process (so that memory is its own, not the sum of
those loaded before it), on the same texts: FILE holds one JSON string a line (bench/ingest.py
hands over its chunk texts); without it, the essay's paragraphs and the Bosfor menu's lines.
bench/ingest.py and bench/retrieval.py import CANDIDATES from here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
sys.path.insert(0, str(ROOT))

from common import table  # noqa: E402

# short name -> (RAG_EMBED_MODEL, label in reports)
CANDIDATES = {
    "minilm": ("bundled:all-MiniLM-L6-v2", "MiniLM"),
    "use": ("bundled:use-multilingual", "USE-m"),
    "e5": ("bundled:multilingual-e5-small", "e5-small"),
    "multilingual": ("bundled:multilingual", "USE-m+e5"),
}


def default_texts() -> list[str]:
    from rag.loaders import load_bytes

    texts = [
        p for p in (CORPUS / "essays" / "paul_graham_essay.txt").read_text().split("\n\n") if p
    ]
    menu = CORPUS / "menus" / "bosfor-restaurant-menu.pdf"
    for page in load_bytes(menu.read_bytes(), menu.name).pages:
        texts += [line for line in page.text.splitlines() if line.strip()]
    return texts


def queries(count: int) -> list[str]:
    rows = []
    for name in ("qa/paul_graham.jsonl",):
        rows += [json.loads(line)["question"] for line in (CORPUS / name).read_text().splitlines()]
    for path in (ROOT / "bench" / "qa" / "cross_language.jsonl",):
        rows += [json.loads(line)["question"] for line in path.read_text().splitlines()]
    return [rows[i % len(rows)] for i in range(count)]


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not carry the parent's over exec)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def profile(name: str, texts: list[str], count: int, threads: int) -> dict[str, Any]:
    """One embedder, measured in this process (run it in a fresh one)."""
    from rag.cli import offline_environment

    offline_environment()
    import numpy  # noqa: F401  # every embedder needs it: not counted as the model's memory

    from rag.config import Settings
    from rag.embeddings import build_embedder, embedder_dimension

    before = rss_mb()
    started = time.perf_counter()
    embedder = build_embedder(
        Settings(
            embed_model=CANDIDATES[name][0], embed_threads=threads, storage_dir=Path("storage")
        )
    )
    dimension = embedder_dimension(embedder)  # loads it
    load_s = time.perf_counter() - started
    loaded = rss_mb()
    started = time.perf_counter()
    embedder.get_query_embedding("What does the lamb shashlik cost?")
    first_ms = (time.perf_counter() - started) * 1000
    latencies = []
    for query in queries(count):
        started = time.perf_counter()
        embedder.get_query_embedding(query)
        latencies.append((time.perf_counter() - started) * 1000)
    embedder.get_text_embedding_batch(texts[:16])  # warm-up
    started = time.perf_counter()
    embedder.get_text_embedding_batch(texts)
    encode_s = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "name": name,
        "dimension": dimension,
        "load_s": load_s,
        "model_mb": loaded - before,
        "peak_mb": peak_rss_mb(),
        "base_mb": before,
        "first_query_ms": first_ms,
        "query_p50_ms": statistics.median(latencies),
        "query_p95_ms": ordered[max(0, int(0.95 * len(ordered)) - 1)],
        "texts": len(texts),
        "encode_s": encode_s,
        "texts_per_s": len(texts) / encode_s,
    }


def measure_all(
    names: list[str], texts_file: Path, count: int = 50, threads: int = 0
) -> list[dict[str, Any]]:
    """`profile` of each embedder, each in its own child process."""
    results = []
    for name in names:
        command = [sys.executable, __file__, "--child", name, "--texts", str(texts_file)]
        command += ["--queries", str(count), "--threads", str(threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{name}: {done.stderr.strip()[-2000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def print_results(results: list[dict[str, Any]]) -> None:
    rows = [("", *(CANDIDATES[r["name"]][1] for r in results))]

    def row(label: str, key: str, fmt: str) -> None:
        rows.append((label, *(format(r[key], fmt) for r in results)))

    row("dimensions", "dimension", "d")
    row("load s (hash check included)", "load_s", ".2f")
    row("memory of the loaded model MB", "model_mb", ".0f")
    row("peak RSS MB (after encoding)", "peak_mb", ".0f")
    rows.append(
        (
            "  of which the model's, at peak MB",
            *(f"{r['peak_mb'] - r.get('base_mb', 0):.0f}" for r in results),
        )
    )
    row("first query ms", "first_query_ms", ".1f")
    row("query embedding p50 ms", "query_p50_ms", ".1f")
    row("query embedding p95 ms", "query_p95_ms", ".1f")
    rows.append(("passages/s (chunks/s)", *(f"{r['texts_per_s']:.1f}" for r in results)))
    rows.append(("passages, seconds", *(f"{r['texts']} in {r['encode_s']:.1f} s" for r in results)))
    table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=Path, default=None, help="JSON strings, one a line")
    parser.add_argument("--queries", type=int, default=50, help="timed query embeddings (50)")
    parser.add_argument("--threads", type=int, default=0, help="RAG_EMBED_THREADS (0 = all)")
    parser.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated names")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        texts = [json.loads(line) for line in args.texts.read_text().splitlines() if line]
        print(json.dumps(profile(args.child, texts, args.queries, args.threads)))
        return 0
    names = [name for name in args.only.split(",") if name]
    unknown = [name for name in names if name not in CANDIDATES]
    if unknown:
        parser.error(f"unknown embedders {unknown}; known: {', '.join(CANDIDATES)}")
    texts_file = args.texts
    if texts_file is None:
        texts_file = Path(f"/tmp/bench-embedders-{os.getpid()}.jsonl")
        texts_file.write_text("".join(json.dumps(t) + "\n" for t in default_texts()))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    print_results(measure_all(names, texts_file, args.queries, args.threads))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.texts is None:
        texts_file.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
