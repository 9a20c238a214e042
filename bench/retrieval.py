"""Retrieval quality and cost: LlamaIndex defaults vs our index, on the essay and on menus+jobs.

Run from the project folder: `.venv/bin/python bench/retrieval.py [--k 5]`. Everything runs in this
one process, offline, on the bundled MiniLM: (a) LlamaIndex's quick-start defaults
(SimpleDirectoryReader -> VectorStoreIndex in memory, similarity_top_k=k) and (b) ours
(`rag.index.Index` over a temporary storage folder, `index.search`). Both are scored with the rule of
`rag eval` (rag.evaluate). hit@1 is "the first chunk of the top-k list matches".

Then the bundled embedders side by side (MiniLM, USE-m, e5-small; `--embedders`, "none" skips it):
ours on each, hybrid (what the app runs) and vector-only (the embedder alone), on the essay,
menus+jobs+cv and the cross-language set (bench/qa/cross_language.jsonl: English questions about
Russian-only lines of the Bosfor menu, Russian and Norwegian ones about the English essay, over
the essay, the menus, the jobs and the CV). `--no-defaults` skips the LlamaIndex comparison.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rag.cli import offline_environment

offline_environment()

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
MENUS_JOBS_QA = ROOT / "bench" / "qa" / "menus_jobs.jsonl"
CROSS_LANGUAGE_QA = ROOT / "bench" / "qa" / "cross_language.jsonl"
sys.path.insert(0, str(ROOT / "bench"))

# Goals, on the essay: ours must rank the right chunk first almost always, and must not buy that by
# handing the LLM more text than the defaults do.
GOAL_HIT1 = 0.85
GOAL_MRR = 0.90


@dataclass(frozen=True)
class Chunk:
    """A retrieved chunk as rag.evaluate reads it."""

    text: str
    file: str | None
    page: int | None


@dataclass
class Measured:
    """One system on one question set."""

    name: str
    build_seconds: float
    chunks_in_index: int
    reachable: int  # questions whose reference matches at least one chunk in the index at all
    n: int = 0
    hit1: float = 0.0
    hitk: float = 0.0
    mrr: float = 0.0
    latencies: list[float] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)
    words: list[int] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


class System:
    """Something that can be built over folders and asked for top-k chunks."""

    name: str

    def chunk_texts(self) -> list[str]:
        raise NotImplementedError

    def retrieve(self, question: str, k: int) -> Sequence[Chunk]:
        raise NotImplementedError

    def close(self) -> None:
        return None


class LlamaIndexDefaults(System):
    name = "llamaindex-defaults"

    def __init__(self, folders: list[Path], embed_model: Any) -> None:
        from llama_index.core import SimpleDirectoryReader, VectorStoreIndex

        self.documents = [
            document
            for folder in folders
            for document in SimpleDirectoryReader(str(folder)).load_data()
        ]
        self.index = VectorStoreIndex.from_documents(self.documents, embed_model=embed_model)
        self.retriever_k: int | None = None
        self.embed_model = embed_model

    def chunk_texts(self) -> list[str]:
        from llama_index.core.schema import MetadataMode

        return [
            node.get_content(metadata_mode=MetadataMode.NONE)
            for node in self.index.docstore.docs.values()
        ]

    def retrieve(self, question: str, k: int) -> Sequence[Chunk]:
        from llama_index.core.schema import MetadataMode

        if self.retriever_k != k:
            self.retriever = self.index.as_retriever(
                similarity_top_k=k, embed_model=self.embed_model
            )
            self.retriever_k = k
        chunks = []
        for hit in self.retriever.retrieve(question):
            metadata = hit.node.metadata
            label = metadata.get("page_label")
            chunks.append(
                Chunk(
                    text=hit.node.get_content(metadata_mode=MetadataMode.NONE),
                    file=metadata.get("file_name"),
                    page=int(label) if isinstance(label, str) and label.isdigit() else None,
                )
            )
        return chunks


class Ours(System):
    name = "ours"

    def __init__(
        self, folders: list[Path], storage: Path, embedder: Any = None, **settings: Any
    ) -> None:
        from rag.config import Settings
        from rag.index import Index

        self.index = Index(Settings(storage_dir=storage, **settings), embedder=embedder)
        report = self.index.ingest(folders) if folders else None
        self.failed = [str(failure) for failure in report.failed] if report else []
        self.settings = self.index.settings

    def chunk_texts(self) -> list[str]:
        _, texts, _ = self.index.collection().all_chunks()
        return list(texts)

    def retrieve(self, question: str, k: int) -> Sequence[Chunk]:
        return self.index.search(question, k)

    def close(self) -> None:
        self.index.close()


def measure(build: Callable[[], System], questions: Path, k: int) -> tuple[Measured, System]:
    from rag.evaluate import Reference, evaluate, load_questions

    items = load_questions(questions)
    started = time.perf_counter()
    system = build()
    build_seconds = time.perf_counter() - started
    texts = system.chunk_texts()
    unreachable = [
        item.id or item.question
        for item in items
        if not any(Reference(item.reference).found_in(text) for text in texts)
    ]
    result = Measured(system.name, build_seconds, len(texts), len(items) - len(unreachable))
    result.unreachable = unreachable
    system.retrieve("warm-up: load the models and indexes before timing", k)

    def counted(question: str, top_k: int) -> Sequence[Chunk]:
        chunks = list(system.retrieve(question, top_k))[:top_k]
        result.chars.append(sum(len(chunk.text) for chunk in chunks))
        result.words.append(sum(len(chunk.text.split()) for chunk in chunks))
        return chunks

    evaluation = evaluate(items, counted, k)
    result.n = evaluation.n
    result.hitk = evaluation.hit_rate
    result.mrr = evaluation.mrr
    result.hit1 = sum(row.rank == 1 for row in evaluation.rows) / max(evaluation.n, 1)
    result.latencies = [row.seconds for row in evaluation.rows]
    result.misses = [row.id or row.question for row in evaluation.rows if row.rank is None]
    return result, system


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else float("nan")


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def table(title: str, k: int, defaults: Measured, ours: Measured, goals: bool) -> None:
    def goal(value: float, target: float) -> str:
        return f">= {target:.2f}  {'ok' if value >= target else 'MISSED'}" if goals else ""

    less_text = mean(ours.chars) <= mean(defaults.chars)
    rows = [
        ("questions", f"{defaults.n}", f"{ours.n}", ""),
        ("hit@1", f"{defaults.hit1:.4f}", f"{ours.hit1:.4f}", goal(ours.hit1, GOAL_HIT1)),
        (f"hit@{k}", f"{defaults.hitk:.4f}", f"{ours.hitk:.4f}", ""),
        (f"MRR@{k}", f"{defaults.mrr:.4f}", f"{ours.mrr:.4f}", goal(ours.mrr, GOAL_MRR)),
        (
            "reachable (ref in some chunk)",
            f"{defaults.reachable}/{defaults.n}",
            f"{ours.reachable}/{ours.n}",
            "",
        ),
        (
            "query p50 ms",
            f"{1000 * percentile(defaults.latencies, 0.50):.1f}",
            f"{1000 * percentile(ours.latencies, 0.50):.1f}",
            "",
        ),
        (
            "query p95 ms",
            f"{1000 * percentile(defaults.latencies, 0.95):.1f}",
            f"{1000 * percentile(ours.latencies, 0.95):.1f}",
            "",
        ),
        (
            f"chars retrieved/question @{k}",
            f"{mean(defaults.chars):.0f}",
            f"{mean(ours.chars):.0f}",
            (f"<= defaults  {'ok' if less_text else 'MISSED'}" if goals else ""),
        ),
        (
            f"words retrieved/question @{k}",
            f"{mean(defaults.words):.0f}",
            f"{mean(ours.words):.0f}",
            "",
        ),
        ("chunks in index", f"{defaults.chunks_in_index}", f"{ours.chunks_in_index}", ""),
        ("build s", f"{defaults.build_seconds:.1f}", f"{ours.build_seconds:.1f}", ""),
    ]
    print(f"\n== {title} (k={k})")
    print(f"{'':32} {defaults.name:>20} {ours.name:>10}   {'goal' if goals else ''}")
    for label, left, right, note in rows:
        print(f"{label:32} {left:>20} {right:>10}   {note}".rstrip())
    for measured in (defaults, ours):
        if measured.misses:
            print(f"  {measured.name} missed: {', '.join(measured.misses)}")
        if measured.unreachable:
            print(
                f"  {measured.name} has no chunk holding the reference of: "
                f"{', '.join(measured.unreachable)}"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5, help="chunks retrieved per question (5)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the shared corpus folder")
    parser.add_argument(
        "--embedders", default="minilm,use,e5", help="bundled embedders to compare, or none"
    )
    parser.add_argument("--no-defaults", action="store_true", help="skip LlamaIndex's defaults")
    args = parser.parse_args(argv)
    corpus: Path = args.corpus
    if args.k < 1:
        parser.error("--k must be at least 1")
    if not (corpus / "essays").is_dir():
        parser.error(f"the shared corpus is missing: expected it at {corpus}")

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    embedders = [name for name in args.embedders.split(",") if name and name != "none"]
    if not args.no_defaults:
        compare_defaults(corpus, args.k)
    if embedders:
        compare_embedders(corpus, args.k, embedders)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (latencies are wall-clock)")
    return 0


def compare_defaults(corpus: Path, k: int) -> None:
    """LlamaIndex's quick-start defaults against ours, both on the bundled MiniLM."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from rag.embeddings import bundled_model_dir

    started = time.perf_counter()
    embed_model = HuggingFaceEmbedding(model_name=str(bundled_model_dir("all-MiniLM-L6-v2")))
    print(f"LlamaIndex defaults' embedder loaded in {time.perf_counter() - started:.1f} s")

    runs = [
        ("essay", [corpus / "essays"], corpus / "qa" / "paul_graham.jsonl", True),
        (
            "menus + jobs + cv",
            [corpus / "menus", corpus / "jobs", corpus / "cv"],
            MENUS_JOBS_QA,
            False,
        ),
    ]
    for title, folders, questions, goals in runs:
        defaults, defaults_system = measure(
            lambda folders=folders: LlamaIndexDefaults(folders, embed_model), questions, k
        )
        if isinstance(defaults_system, LlamaIndexDefaults):
            describe_defaults_documents(defaults_system)
        with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as storage:
            ours, ours_system = measure(
                lambda folders=folders, storage=storage: Ours(folders, Path(storage)),
                questions,
                k,
            )
            if isinstance(ours_system, Ours):
                settings = ours_system.settings
                print(
                    f"ours: retrieval={settings.retrieval} chunk_size={settings.chunk_size} "
                    f"overlap={settings.chunk_overlap} embedder={settings.embed_model}"
                    + (f"; failed: {ours_system.failed}" if ours_system.failed else "")
                )
            ours_system.close()
        table(f"{title}: {questions.name}", k, defaults, ours, goals)


def compare_embedders(corpus: Path, k: int, names: list[str]) -> None:
    """Ours on each bundled embedder, hybrid and vector-only, on the three sets: one table of
    hit@1, hit@k and MRR@k (bench/common.py's format), then the essay goals per embedder."""
    from common import goals_table, verdict
    from common import table as columns
    from embedders import CANDIDATES

    from rag.config import Settings
    from rag.embeddings import build_embedder

    sets = [
        ("essay", [corpus / "essays"], corpus / "qa" / "paul_graham.jsonl"),
        ("menus+jobs", [corpus / "menus", corpus / "jobs", corpus / "cv"], MENUS_JOBS_QA),
        (
            "cross-language",
            [corpus / "essays", corpus / "menus", corpus / "jobs", corpus / "cv"],
            CROSS_LANGUAGE_QA,
        ),
    ]
    results: dict[tuple[str, str, str], Measured] = {}
    for name in names:
        model = CANDIDATES[name][0]
        embedder = build_embedder(Settings(embed_model=model))
        for title, folders, questions in sets:
            with tempfile.TemporaryDirectory(prefix="bench-embedders-") as storage:
                for mode in ("hybrid", "vector"):
                    measured, system = measure(
                        partial(
                            Ours,
                            folders if mode == "hybrid" else [],  # vector: the same index, reread
                            Path(storage),
                            embedder,
                            embed_model=model,
                            retrieval=mode,
                        ),
                        questions,
                        k,
                    )
                    system.close()
                    results[(name, title, mode)] = measured
                    print(
                        f"{CANDIDATES[name][1]} {mode} on {title}: hit@1 {measured.hit1:.3f}, "
                        f"MRR {measured.mrr:.3f}, reachable {measured.reachable}/{measured.n}"
                        + (
                            f", built in {measured.build_seconds:.1f} s" if mode == "hybrid" else ""
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
    labels = [CANDIDATES[name][1] for name in names]
    for mode in ("hybrid", "vector"):
        print(
            f"\n== embedders, ours with retrieval={mode} (k={k})"
            + (" (what the app runs)" if mode == "hybrid" else " (the embedder alone)")
        )
        rows = [("", *labels)]
        for title, _, _ in sets:
            n = results[(names[0], title, mode)].n
            for metric, key in (("hit@1", "hit1"), (f"hit@{k}", "hitk"), (f"MRR@{k}", "mrr")):
                rows.append(
                    (
                        f"{title} ({n}) {metric}",
                        *(f"{getattr(results[(name, title, mode)], key):.3f}" for name in names),
                    )
                )
        for direction, ids in directions(CROSS_LANGUAGE_QA).items():
            rows.append(
                (
                    f"  cross-language {direction} ({len(ids)}) hit@{k}",
                    *(
                        f"{1 - len(ids & set(results[(name, 'cross-language', mode)].misses)) / len(ids):.3f}"
                        for name in names
                    ),
                )
            )
        rows.append(
            (
                "search p50 ms (cross-language)",
                *(
                    f"{1000 * percentile(results[(name, 'cross-language', mode)].latencies, 0.5):.1f}"
                    for name in names
                ),
            )
        )
        if mode == "hybrid":
            rows.append(
                (
                    "ingest s (cross-language corpus)",
                    *(
                        f"{results[(name, 'cross-language', mode)].build_seconds:.1f}"
                        for name in names
                    ),
                )
            )
        columns(rows)
    print("\n== essay goals, ours hybrid")
    goal_rows = []
    for name in names:
        essay = results[(name, "essay", "hybrid")]
        label = CANDIDATES[name][1]
        goal_rows.append(
            (
                f"{label} hit@1",
                f"{essay.hit1:.4f}",
                f">= {GOAL_HIT1}",
                verdict(essay.hit1 >= GOAL_HIT1),
            )
        )
        goal_rows.append(
            (
                f"{label} MRR@{k}",
                f"{essay.mrr:.4f}",
                f">= {GOAL_MRR}",
                verdict(essay.mrr >= GOAL_MRR),
            )
        )
    goals_table(goal_rows)
    for (name, title, mode), measured in results.items():
        if measured.misses and title == "cross-language":
            print(f"  {CANDIDATES[name][1]} {mode} missed on {title}: {', '.join(measured.misses)}")


def directions(questions: Path) -> dict[str, set[str]]:
    """Question ids by their "direction" field (question language -> document language)."""
    import json

    found: dict[str, set[str]] = {}
    for line in questions.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            found.setdefault(row.get("direction", "?"), set()).add(row["id"])
    return found


def describe_defaults_documents(system: LlamaIndexDefaults) -> None:
    """What SimpleDirectoryReader made of each file (PDFs without llama-index-readers-file)."""
    for document in system.documents:
        name = document.metadata.get("file_name", "?")
        text = document.get_content()
        letters = sum(character.isalpha() for character in text)
        words = text.split()
        readable = sum(1 for word in words if word.isalpha() and len(word) > 2)
        print(
            f"defaults read {name}: {len(text):,} chars, {letters / max(len(text), 1):.0%} letters, "
            f"{readable / max(len(words), 1):.0%} of words plain alphabetic; starts {text[:40]!r}"
        )


if __name__ == "__main__":
    sys.exit(main())
