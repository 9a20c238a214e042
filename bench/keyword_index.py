"""The first query after a write at 10k chunks: the keyword index rebuilt whole vs updated.

    .venv/bin/python bench/keyword_index.py [--chunks 10000] [--rounds 5]

Builds a collection of --chunks generated chunks (200-word windows of the corpus essay, job ads and
CV, 50 per file) in a temporary embedded Chroma, written through ChunkStore.upsert with cheap random
unit vectors: the keyword index reads only texts, and embedding 10k chunks would take minutes. Then,
--rounds times, attaches one real corpus file to a chat through Index.attach (real MiniLM) and times
that chat's first query (hybrid, top 5, the chat's scope) with two retrievers over the same store:

  full rebuild: the retriever before incremental updates, kept here as the baseline: any write
      rebuilds the whole BM25 index (every chunk read from Chroma and tokenized) under a lock that
      every query takes;
  incremental: rag.retrieve.Retriever, which reads and tokenizes only the chunks it lacks.

Afterwards it removes the attachments one by one and times the first query after each removal.
Both retrievers are warmed up first; which one queries first alternates between rounds. Every
query's hits (ids and scores) must be the same from both, or the bench fails.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
sys.path.insert(0, str(ROOT))

from common import say, table  # noqa: E402

from rag.cli import offline_environment  # noqa: E402

offline_environment()  # before anything imports transformers or chromadb

from rag.retrieve import KeywordIndex, Retriever  # noqa: E402

CHUNKS_PER_FILE = 50
WORDS_PER_CHUNK = 200  # about the splitter's 256 tokens
TEXT_SOURCES = [
    "essays/paul_graham_essay.txt",
    "jobs/pear-deck-junior-developer.md",
    "jobs/stitchfix-principal-full-stack-rails-engineer.md",
    "jobs/uiowa-phoenix-application-developer.md",
    "cv/jsonresume-sample.resume.json",
]
# A file attached to the chat, and the chat's first question about it.
ATTACHMENTS = [
    ("menus/fosdem-bar-menu.pdf", "How much is a Duvel at the FOSDEM bar?"),
    ("jobs/pear-deck-junior-developer.md", "What does the Pear Deck junior developer work on?"),
    ("jobs/uiowa-phoenix-application-developer.md", "What does the Phoenix developer earn?"),
    ("cv/jsonresume-sample.resume.json", "Where did Richard Hendriks work?"),
    ("menus/bosfor-restaurant-menu.pdf", "How much is the ribeye steak?"),
    ("jobs/stitchfix-principal-full-stack-rails-engineer.md", "Which skills does Stitch Fix ask?"),
]
CHAT = "bench-chat"
CHAT_SCOPE = {"chat_id": {"$in": ["", CHAT]}}


class FullRebuild(Retriever):
    """The baseline: the whole keyword index rebuilt after any write, under one lock for all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keywords: KeywordIndex | None = None
        self._keywords_revision: object = None
        self._lock = threading.Lock()

    def keyword_index(self) -> KeywordIndex:
        revision = self.store.revision()
        with self._lock:
            if self._keywords is None or revision != self._keywords_revision:
                self._keywords = KeywordIndex(*self.store.all_chunks())
                self._keywords_revision = revision
            return self._keywords


def generated_chunks(total: int, dimension: int) -> list[Any]:
    """`total` chunks of corpus text in files of CHUNKS_PER_FILE, with random unit vectors."""
    import numpy as np
    from llama_index.core.schema import TextNode

    words = " ".join((CORPUS / source).read_text() for source in TEXT_SOURCES).split()
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(total, dimension)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    nodes = []
    for number in range(total):
        file = number // CHUNKS_PER_FILE
        start = int(rng.integers(0, len(words) - WORDS_PER_CHUNK))
        nodes.append(
            TextNode(
                id_=f"bench-{number:06d}",
                text=" ".join(words[start : start + WORDS_PER_CHUNK]),
                embedding=vectors[number].tolist(),
                metadata={
                    "file": f"notes/{file:04d}.txt",
                    "chat_id": "",
                    "file_id": f"bench-{file:04d}",
                    "content_hash": "bench",
                    "chunk": number % CHUNKS_PER_FILE,
                    "start_char": 0,
                },
            )
        )
    return nodes


@dataclass(frozen=True)
class Timed:
    """One retriever's first query after a write."""

    refresh_ms: float  # bringing the keyword index up to date
    total_ms: float  # the whole query, refresh included
    hits: list[tuple[str, float]]


def first_query(retriever: Retriever, question: str) -> Timed:
    started = time.perf_counter()
    retriever.keyword_index()
    refreshed = time.perf_counter()
    hits = retriever.retrieve(question, 5, CHAT_SCOPE)
    done = time.perf_counter()
    found = [(hit.node.node_id, round(hit.score or 0.0, 6)) for hit in hits]
    return Timed((refreshed - started) * 1000, (done - started) * 1000, found)


def compare(retrievers: dict[str, Retriever], question: str, turn: int) -> dict[str, Timed]:
    """Each retriever's first query, who goes first alternating by turn; their hits must agree."""
    order = list(retrievers) if turn % 2 == 0 else list(retrievers)[::-1]
    timed = {name: first_query(retrievers[name], question) for name in order}
    if len({str(t.hits) for t in timed.values()}) != 1:
        raise SystemExit(f"the retrievers disagree on {question!r}: {timed}")
    return timed


def median_ms(runs: list[dict[str, Timed]], name: str, refresh: bool) -> float:
    return statistics.median(r[name].refresh_ms if refresh else r[name].total_ms for r in runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5, choices=range(1, len(ATTACHMENTS) + 1))
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)

    from rag.config import Settings
    from rag.index import Index

    with tempfile.TemporaryDirectory(prefix="bench-keywords-") as work:
        index = Index(Settings(storage_dir=Path(work) / "storage"))
        store = index.collection()  # loads MiniLM and records its fingerprint
        say(f"writing {args.chunks} generated chunks")
        started = time.perf_counter()
        store.upsert(generated_chunks(args.chunks, index.dimension()))
        say(f"written in {time.perf_counter() - started:.1f} s; warming up both retrievers")
        retrievers: dict[str, Retriever] = {
            "full rebuild": FullRebuild(index.embedder, index.collection(), "hybrid"),
            "incremental": index.retriever(),
        }
        compare(retrievers, "What did the author work on?", 0)
        steady = compare(retrievers, "What did the author work on before college?", 1)

        attached: list[dict[str, Timed]] = []
        removed: list[dict[str, Timed]] = []
        tokenized: dict[str, list[int]] = {"attaching": [], "removing": []}
        doc_ids = []
        for turn, (source, question) in enumerate(ATTACHMENTS[: args.rounds]):
            path = CORPUS / source
            report = index.attach(path, path.name, CHAT)
            attached.append(compare(retrievers, question, turn))
            tokenized["attaching"].append(index.retriever().keyword_index().tokenized)
            records = index.manifest.files(store.name)
            doc_ids.append(next(r.doc_id for r in records if r.file == path.name))
            say(
                f"attached {path.name} ({report.chunks_written} chunks), first query: "
                + ", ".join(f"{n} {t.total_ms:.0f} ms" for n, t in attached[-1].items())
            )
        for turn, doc_id in enumerate(doc_ids):
            index.remove_document(doc_id)
            removed.append(compare(retrievers, ATTACHMENTS[0][1], turn))
            tokenized["removing"].append(index.retriever().keyword_index().tokenized)
        chunks = store.count()
        index.close()

    baseline, ours = retrievers
    rows = [("ms, median of rounds", baseline, ours, "speed-up")]
    for label, runs, refresh in [
        ("first query after attaching a file", attached, False),
        ("  of which bringing the keyword index up to date", attached, True),
        ("first query after removing a file", removed, False),
        ("  of which bringing the keyword index up to date", removed, True),
    ]:
        before, after = median_ms(runs, baseline, refresh), median_ms(runs, ours, refresh)
        rows.append((label, f"{before:.0f}", f"{after:.0f}", f"{before / max(after, 1e-3):.1f}x"))
    rows.append(
        ("query with no write since", *(f"{steady[n].total_ms:.0f}" for n in retrievers), "")
    )
    print(
        f"\nkeyword index after a write, {chunks} chunks at the end ({args.chunks} generated in "
        f"files of {CHUNKS_PER_FILE}, plus attachments); {args.rounds} rounds; hybrid top 5 in a "
        "chat's scope; both gave the same hits to every query\n"
    )
    table(rows)
    print(
        "\nchunks tokenized per update by the incremental index: "
        + "; ".join(f"{what} {counts}" for what, counts in tokenized.items())
        + f" (the full rebuild tokenizes all {chunks} or so each time)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
