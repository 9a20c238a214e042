"""Retrieval quality and cost: LlamaIndex defaults vs our index, on the essay and on menus+jobs.

Run from the project folder: `.venv/bin/python bench/retrieval.py [--k 5]`. Everything runs in this
one process, offline, on the bundled MiniLM: (a) LlamaIndex's quick-start defaults
(SimpleDirectoryReader -> VectorStoreIndex in memory, similarity_top_k=k) and (b) ours
(`rag.index.Index` over a temporary storage folder, `index.search`). Both are scored with the rule of
`rag eval` (rag.evaluate). hit@1 is "the first chunk of the top-k list matches".
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
from pathlib import Path
from typing import Any

from rag.cli import offline_environment

offline_environment()

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
MENUS_JOBS_QA = ROOT / "bench" / "qa" / "menus_jobs.jsonl"

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

    def __init__(self, folders: list[Path], storage: Path) -> None:
        from rag.config import Settings
        from rag.index import Index

        self.index = Index(Settings(storage_dir=storage))
        report = self.index.ingest(folders)
        self.failed = [str(failure) for failure in report.failed]
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
    args = parser.parse_args(argv)
    corpus: Path = args.corpus
    if args.k < 1:
        parser.error("--k must be at least 1")
    if not (corpus / "essays").is_dir():
        parser.error(f"the shared corpus is missing: expected it at {corpus}")

    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from rag.embeddings import bundled_model_dir

    started = time.perf_counter()
    embed_model = HuggingFaceEmbedding(model_name=str(bundled_model_dir("all-MiniLM-L6-v2")))
    print(f"LlamaIndex defaults' embedder loaded in {time.perf_counter() - started:.1f} s")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")

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
            lambda folders=folders: LlamaIndexDefaults(folders, embed_model), questions, args.k
        )
        if isinstance(defaults_system, LlamaIndexDefaults):
            describe_defaults_documents(defaults_system)
        with tempfile.TemporaryDirectory(prefix="bench-retrieval-") as storage:
            ours, ours_system = measure(
                lambda folders=folders, storage=storage: Ours(folders, Path(storage)),
                questions,
                args.k,
            )
            if isinstance(ours_system, Ours):
                settings = ours_system.settings
                print(
                    f"ours: retrieval={settings.retrieval} chunk_size={settings.chunk_size} "
                    f"overlap={settings.chunk_overlap} embedder={settings.embed_model}"
                    + (f"; failed: {ours_system.failed}" if ours_system.failed else "")
                )
            ours_system.close()
        table(f"{title}: {questions.name}", args.k, defaults, ours, goals)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end (latencies are wall-clock)")
    return 0


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
