"""Ingest and search benchmark: our pipeline against the raw model limit and LlamaIndex's default.

    .venv/bin/python bench/ingest.py [--quick] [--searches 50] [--search-chunks 10000] [--keep]

All runs embed the same chunks: the chunk texts our splitter makes from the essay and a few corpus
PDFs (the list is printed). Measures, in one process, with one loaded copy of the bundled MiniLM:

  (a) the embedder runtime's own encode of those chunk texts, each under its file's title as (b)
      embeds them (onnxruntime; texts/s): the limit;
  (a') the same through sentence-transformers on torch, the runtime it replaced;
  (b) `Index.ingest` of the files into a temp storage, end to end (parse in the worker process,
      split, embed, write to embedded Chroma, manifest), chunks/s;
  (c) LlamaIndex's default path: `VectorStoreIndex.from_documents` with `HuggingFaceEmbedding` of
      the same model folder into a fresh Chroma collection (ChromaVectorStore + StorageContext),
      given the already parsed pages and the same splitter sizes, chunks/s (parsing not timed);
  (d) an unchanged re-ingest of (b), as % of the first ingest;
  (e) `Index.search` latency (query embedding included) over a collection of --search-chunks
      chunks: the real chunks of (b) plus variants of them (same texts with a variant tag, vectors
      = the real vectors plus Gaussian noise, renormalised) written straight to the store, so
      building 10k chunks does not take 10k embeddings;
  (f) each bundled embedder (--embedders: MiniLM, USE-m, e5-small) on the same chunk texts, each in
      a child process (bench/embedders.py): chunks/s, load time, memory, query embedding latency;
  (g) OCR: --ocr-pages dense corpus menu pages (Russian and English) rendered at 300 DPI into
      image-only PDFs, parsed one by one in the parse worker (rag.ocr, the settings' default
      languages): pages/s, seconds per dense page, and the share of the text layer's words read
      (--only-ocr runs this alone).
Runs under ~10 minutes on 2 cores; --quick uses fewer files and searches.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
sys.path.insert(0, str(ROOT))

from common import finish_with, goals_table, say, verdict  # noqa: E402
from embedders import measure_all, print_results  # noqa: E402

from rag.cli import offline_environment  # noqa: E402

offline_environment()  # before anything imports transformers or chromadb

FULL_FILES = [
    "essays/paul_graham_essay.txt",
    "pdfs/good/federal-register-2020-17221.pdf",
    "pdfs/good/ca-warn-report.pdf",
    "menus/bosfor-restaurant-menu.pdf",
    "pdfs/good/pdflatex-4-pages.pdf",
    "pdfs/good/multicolumn.pdf",
]
QUICK_FILES = [
    "essays/paul_graham_essay.txt",
    "pdfs/good/pdflatex-4-pages.pdf",
    "pdfs/good/multicolumn.pdf",
]

GOAL_VS_RAW = 0.9
GOAL_VS_LLAMAINDEX = 1.5
GOAL_REINGEST_PCT = 2.0
GOAL_SEARCH_P50_MS = 30.0
GOAL_OCR_S_PER_PAGE = 3.0
# (g): dense pages (1,000-1,800 characters of text layer each), Russian/English then English.
OCR_PAGES = [("menus/bosfor-restaurant-menu.pdf", n) for n in (1, 2, 4, 6, 8, 10)] + [
    ("menus/fosdem-bar-menu.pdf", 1)
]


@dataclass
class Results:
    files: list[str]
    chunks: int
    raw_tps: float = 0.0
    raw_s: float = 0.0
    torch_tps: float = 0.0
    torch_s: float = 0.0
    ours_cps: float = 0.0
    ours_s: float = 0.0
    llama_cps: float = 0.0
    llama_s: float = 0.0
    llama_chunks: int = 0
    reingest_s: float = 0.0
    search_chunks: int = 0
    search_n: int = 0
    search_p50_ms: float = 0.0
    search_p95_ms: float = 0.0
    query_embed_p50_ms: float = 0.0
    search_mode: str = "?"
    build_s: float = 0.0
    ocr_seconds: list[float] = field(default_factory=list)
    ocr_recall: float = 0.0
    ocr_languages: str = ""


def quiet() -> None:
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)
    logging.getLogger("chromadb").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


# --- the chunks ------------------------------------------------------------------------------------


def load_pages(files: list[Path]) -> dict[str, Any]:
    """name -> LoadedFile, parsed in this process (the same loaders the worker runs)."""
    from rag.loaders import load_bytes

    return {path.name: load_bytes(path.read_bytes(), path.name) for path in files}


def our_chunk_texts(
    settings: Any, embedder: Any, files: list[Path], loaded: dict[str, Any]
) -> list[str]:
    """Exactly the chunk texts `Index.ingest` embeds for these files."""
    from rag.ingest import Indexer, SourceFile, embed_text
    from rag.loaders import content_hash

    # only its splitter and chunk() are used: no store, no manifest
    indexer = Indexer(settings, embedder, _NoStore(), None)  # type: ignore[arg-type]
    texts: list[str] = []
    for path in files:
        source = SourceFile(path.resolve(), path.resolve().parent, path.name)
        digest = content_hash(path.read_bytes())
        nodes = indexer.chunk(loaded[path.name], source, digest)
        texts.extend(embed_text(node) for node in nodes)  # each under its file's title
    return texts


class _NoStore:
    name = "bench"


# --- (a) raw ---------------------------------------------------------------------------------------


def bench_raw(embedder: Any, texts: list[str], batch_size: int) -> tuple[float, float]:
    """Texts/s of the embedder's own runtime with nothing around it (onnxruntime for the bundled
    model, sentence-transformers otherwise)."""
    from rag.embeddings import OnnxEmbedding

    runtime = embedder.load()

    def encode(batch: list[str]) -> Any:
        if isinstance(embedder, OnnxEmbedding):
            return runtime.encode(batch, batch_size)
        return runtime.encode(batch, batch_size=batch_size, show_progress_bar=False)

    encode(texts[:16])  # warm-up
    started = time.perf_counter()
    encode(texts)
    seconds = time.perf_counter() - started
    return len(texts) / seconds, seconds


def bench_raw_torch(embedder: Any, texts: list[str]) -> tuple[float, float]:
    """The same model through sentence-transformers on torch: the runtime the bundled model had
    before onnxruntime (batch 32, its old default)."""
    from rag.embeddings import SentenceTransformerEmbedding

    torch_embedder = SentenceTransformerEmbedding(
        model_name="torch", model_path=embedder.model_path, encode_batch_size=32
    )
    return bench_raw(torch_embedder, texts, 32)


# --- (b) + (d) ours --------------------------------------------------------------------------------


def bench_ours(storage: Path, embedder: Any, files: list[Path]) -> tuple[int, float, float]:
    from rag.config import Settings
    from rag.index import Index

    index = Index(Settings(storage_dir=storage), embedder=embedder)
    try:
        started = time.perf_counter()
        report = index.ingest(files)
        first_s = time.perf_counter() - started
        if report.failed:
            raise SystemExit(f"ingest failed: {[str(f) for f in report.failed]}")
        started = time.perf_counter()
        again = index.ingest(files)
        again_s = time.perf_counter() - started
        if again.chunks_written or len(again.unchanged) != len(files):
            raise SystemExit(f"the re-ingest was not a no-op: {again}")
        return report.chunks_written, first_s, again_s
    finally:
        index.close()


# --- (c) LlamaIndex's default ----------------------------------------------------------------------


def bench_llamaindex(directory: Path, settings: Any, loaded: dict[str, Any]) -> tuple[int, float]:
    import chromadb
    from chromadb.config import Settings as ChromaSettings
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from rag.embeddings import bundled_model_dir

    embed_model = HuggingFaceEmbedding(
        model_name=str(bundled_model_dir("all-MiniLM-L6-v2")), device="cpu"
    )
    embed_model.get_text_embedding("warm-up")
    documents = []
    for name, file in loaded.items():
        for page in file.pages:
            metadata = {"file_name": name}
            if page.page is not None:
                metadata["page_label"] = str(page.page)
            # metadata kept out of the embedded text and of the splitter's budget, so the chunks
            # are the same texts as ours
            documents.append(
                Document(
                    text=page.text,
                    metadata=metadata,
                    excluded_embed_metadata_keys=list(metadata),
                    excluded_llm_metadata_keys=list(metadata),
                )
            )
    client = chromadb.PersistentClient(
        path=str(directory), settings=ChromaSettings(anonymized_telemetry=False)
    )
    collection = client.get_or_create_collection("llamaindex-default")
    storage_context = StorageContext.from_defaults(
        vector_store=ChromaVectorStore(chroma_collection=collection)
    )
    splitter = SentenceSplitter(
        chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap
    )
    started = time.perf_counter()
    VectorStoreIndex.from_documents(
        documents,
        storage_context=storage_context,
        embed_model=embed_model,
        transformations=[splitter],
        show_progress=False,
    )
    seconds = time.perf_counter() - started
    return int(collection.count()), seconds


# --- (e) search --------------------------------------------------------------------------------------


def bench_search(
    source_storage: Path,
    storage: Path,
    embedder: Any,
    total_chunks: int,
    searches: int,
) -> tuple[int, float, list[float], list[float]]:
    import numpy as np
    from llama_index.core.schema import TextNode

    from rag.config import Settings
    from rag.index import Index

    source = Index(Settings(storage_dir=source_storage), embedder=embedder)
    real = source.collection(check=False).collection.get(
        include=["embeddings", "documents", "metadatas"]
    )
    source.close()
    vectors = np.asarray(real["embeddings"], dtype=np.float32)

    index = Index(Settings(storage_dir=storage), embedder=embedder)
    store = index.collection()  # records the embedder fingerprint
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    batch: list[Any] = []
    for number in range(total_chunks):
        base = number % len(vectors)
        if number < len(vectors):
            vector, text = vectors[base], real["documents"][base]
        else:
            noisy = vectors[base] + rng.normal(0.0, 0.03, vectors.shape[1]).astype(np.float32)
            vector = noisy / np.linalg.norm(noisy)
            text = f"[variant {number}] {real['documents'][base]}"
        metadata = dict(real["metadatas"][base])
        file = f"synthetic/{number // 50:04d}.txt" if number >= len(vectors) else metadata["file"]
        node = TextNode(
            id_=f"bench-{number:06d}",
            text=text,
            embedding=vector.tolist(),
            metadata={
                "file": file,
                "doc_id": f"bench-{number // 50:04d}",
                "content_hash": "bench",
                "chunk": number % 50,
                **({"page": metadata["page"]} if "page" in metadata else {}),
            },
        )
        batch.append(node)
        if len(batch) == 1000:
            store.upsert(batch)
            batch = []
    if batch:
        store.upsert(batch)
    build_s = time.perf_counter() - started
    count = store.count()

    questions = [
        json.loads(line)["question"]
        for line in (CORPUS / "qa" / "paul_graham.jsonl").read_text().splitlines()
        if line.strip()
    ]
    queries = [questions[i % len(questions)] for i in range(searches)]
    for query in queries[:3]:  # warm-up: first query compiles paths, loads the HNSW index
        index.search(query, 5)
    total, embed = [], []
    for query in queries:
        started = time.perf_counter()
        hits = index.search(query, 5)
        total.append((time.perf_counter() - started) * 1000)
        if len(hits) != 5:
            raise SystemExit(f"search returned {len(hits)} hits")
        started = time.perf_counter()  # the query embedding alone, for the breakdown
        embedder.get_query_embedding(query)
        embed.append((time.perf_counter() - started) * 1000)
    index.close()
    return count, build_s, total, embed


# --- (g) OCR ----------------------------------------------------------------------------------------


def bench_ocr(pages: list[tuple[str, int]]) -> tuple[list[float], float, str]:
    """Each (corpus file, 1-based page) rendered at rag.ocr.DPI into an image-only PDF and parsed
    by the parse worker: seconds per page, the share of the text layer's words the OCR read, and
    the languages used."""
    import io
    import re

    import pypdfium2 as pdfium
    from pypdf import PdfReader

    from rag import ocr
    from rag.parsing import ParseWorker

    setup = ocr.setup()
    if setup.languages is None:
        raise SystemExit(f"(g) OCR cannot run: {setup.off}")
    seconds, read, total = [], 0, 0
    with ParseWorker(timeout_s=300, ocr=setup) as worker:
        worker.parse(b"warm-up", "warm-up.txt")  # the worker's start is not OCR time
        for name, number in pages:
            data = (CORPUS / name).read_bytes()
            document = pdfium.PdfDocument(data)
            image = document[number - 1].render(scale=ocr.DPI / 72, grayscale=True).to_pil()
            document.close()
            scan = io.BytesIO()
            image.save(scan, "PDF", resolution=ocr.DPI)
            started = time.perf_counter()
            [page] = worker.parse(scan.getvalue(), "scan.pdf").pages
            seconds.append(time.perf_counter() - started)
            layer = PdfReader(io.BytesIO(data)).pages[number - 1].extract_text() or ""
            words = set(re.findall(r"\w{3,}", layer.lower()))
            read += len(words & set(re.findall(r"\w{3,}", page.text.lower())))
            total += len(words)
    return seconds, read / max(1, total), setup.languages


def ocr_rows(r: Results) -> list[tuple[str, str, str, str]]:
    if not r.ocr_seconds:
        return []
    per_page = statistics.median(r.ocr_seconds)
    return [
        (
            f"(g) OCR of {len(r.ocr_seconds)} rendered scan pages",
            f"{len(r.ocr_seconds) / sum(r.ocr_seconds):.2f} pages/s; {per_page:.2f} s per dense "
            f"page (median, max {max(r.ocr_seconds):.2f}; {r.ocr_languages}); "
            f"{100 * r.ocr_recall:.0f}% of the text layer's words read",
            f"<= {GOAL_OCR_S_PER_PAGE:g} s/page",
            verdict(per_page <= GOAL_OCR_S_PER_PAGE),
        )
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- report --------------------------------------------------------------------------------------


def print_table(r: Results) -> None:
    vs_raw = r.ours_cps / r.raw_tps if r.raw_tps else 0.0
    vs_llama = r.ours_cps / r.llama_cps if r.llama_cps else 0.0
    reingest_pct = 100.0 * r.reingest_s / r.ours_s if r.ours_s else 0.0
    rows = [
        (
            "(a) raw onnxruntime encode (the limit)",
            f"{r.raw_tps:.1f} texts/s ({r.chunks} in {r.raw_s:.1f} s)",
            "-",
            "",
        ),
        (
            "(a') raw torch encode (old runtime)",
            f"{r.torch_tps:.1f} texts/s ({r.chunks} in {r.torch_s:.1f} s)",
            "-",
            "",
        ),
        (
            "(b) ours: Index.ingest",
            f"{r.ours_cps:.1f} chunks/s ({r.chunks} in {r.ours_s:.1f} s) = {vs_raw:.2f}x raw",
            f">= {GOAL_VS_RAW}x raw",
            verdict(vs_raw >= GOAL_VS_RAW),
        ),
        (
            "(c) LlamaIndex default",
            f"{r.llama_cps:.1f} chunks/s ({r.llama_chunks} in {r.llama_s:.1f} s); "
            f"ours = {vs_llama:.2f}x",
            f"ours >= {GOAL_VS_LLAMAINDEX}x",
            verdict(vs_llama >= GOAL_VS_LLAMAINDEX),
        ),
        (
            "(d) unchanged re-ingest",
            f"{r.reingest_s * 1000:.0f} ms = {reingest_pct:.2f}% of first",
            f"<= {GOAL_REINGEST_PCT:g}%",
            verdict(reingest_pct <= GOAL_REINGEST_PCT),
        ),
        (
            f"(e) search @ {r.search_chunks} chunks",
            f"p50 {r.search_p50_ms:.1f} ms, p95 {r.search_p95_ms:.1f} ms (n={r.search_n}, "
            f"{r.search_mode}; of which query embedding p50 {r.query_embed_p50_ms:.1f} ms)",
            f"p50 <= {GOAL_SEARCH_P50_MS:g} ms",
            verdict(r.search_p50_ms <= GOAL_SEARCH_P50_MS),
        ),
        *ocr_rows(r),
    ]
    goals_table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 small files, 20 searches")
    parser.add_argument("--searches", type=int, default=None, help="timed searches (50)")
    parser.add_argument("--search-chunks", type=int, default=10_000, help="chunks in the (e) store")
    parser.add_argument("--keep", action="store_true", help="keep the temp storage folders")
    parser.add_argument(
        "--embedders", default="minilm,use,e5", help="(f) bundled embedders to compare, or none"
    )
    parser.add_argument(
        "--ocr-pages", type=int, default=None, help=f"(g) pages to OCR ({len(OCR_PAGES)}; 0: none)"
    )
    parser.add_argument("--only-ocr", action="store_true", help="run (g) alone")
    args = parser.parse_args(argv)
    quiet()
    ocr_pages = OCR_PAGES[: 2 if args.quick else len(OCR_PAGES)]
    ocr_pages = ocr_pages if args.ocr_pages is None else OCR_PAGES[: args.ocr_pages]
    if args.only_ocr:
        r = Results(files=[], chunks=0)
        say(f"(g) OCR of {len(ocr_pages)} rendered pages in the parse worker")
        r.ocr_seconds, r.ocr_recall, r.ocr_languages = bench_ocr(ocr_pages)
        print(f"rag ingest bench (--only-ocr): {os.cpu_count()} cores")
        goals_table(ocr_rows(r))
        return 0

    from rag.config import Settings
    from rag.embeddings import build_embedder

    names = QUICK_FILES if args.quick else FULL_FILES
    searches = args.searches or (20 if args.quick else 50)
    files = [CORPUS / name for name in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"corpus files missing: {missing}")

    settings = Settings()
    work = Path(tempfile.mkdtemp(prefix="rag-bench-"))
    load_before = os.getloadavg()
    bench_started = time.perf_counter()
    try:
        say("loading the bundled MiniLM")
        embedder = build_embedder(settings)
        embedder.load()
        loaded = load_pages(files)
        texts = our_chunk_texts(settings, embedder, files, loaded)
        results = Results(files=names, chunks=len(texts))

        say(f"(a) raw encode of {len(texts)} chunk texts")
        results.raw_tps, results.raw_s = bench_raw(embedder, texts, settings.embed_batch_size)
        say(f"(a') raw sentence-transformers (torch) encode of {len(texts)} chunk texts")
        results.torch_tps, results.torch_s = bench_raw_torch(embedder, texts)

        say("(b) ours: Index.ingest, then (d) an unchanged re-ingest")
        chunks, results.ours_s, results.reingest_s = bench_ours(work / "ours", embedder, files)
        if chunks != len(texts):
            raise SystemExit(f"ingest wrote {chunks} chunks, the splitter made {len(texts)}")
        results.ours_cps = chunks / results.ours_s

        say("(c) LlamaIndex default: VectorStoreIndex.from_documents + HuggingFaceEmbedding")
        results.llama_chunks, results.llama_s = bench_llamaindex(
            work / "llamaindex", settings, loaded
        )
        results.llama_cps = results.llama_chunks / results.llama_s

        say(f"(e) search: building {args.search_chunks} chunks, then {searches} searches")
        count, results.build_s, total, embed = bench_search(
            work / "ours", work / "search", embedder, args.search_chunks, searches
        )
        results.search_chunks = count
        results.search_n = len(total)
        results.search_p50_ms = statistics.median(total)
        results.search_p95_ms = percentile(total, 0.95)
        results.query_embed_p50_ms = statistics.median(embed)
        results.search_mode = str(getattr(settings, "retrieval", "vector"))

        embedders = [name for name in args.embedders.split(",") if name and name != "none"]
        compared = []
        if embedders:
            say(f"(f) embedders {', '.join(embedders)} on the {len(texts)} chunk texts")
            texts_file = work / "chunk-texts.jsonl"
            texts_file.write_text("".join(json.dumps(text) + "\n" for text in texts))
            compared = measure_all(embedders, texts_file, searches, settings.embed_threads)
        if ocr_pages:
            say(f"(g) OCR of {len(ocr_pages)} rendered pages in the parse worker")
            results.ocr_seconds, results.ocr_recall, results.ocr_languages = bench_ocr(ocr_pages)
    finally:
        finish_with(work, args.keep)

    words = [len(t.split()) for t in texts]
    print(
        f"rag ingest bench{' (--quick)' if args.quick else ''}: {os.cpu_count()} cores, "
        f"embedder threads {settings.embed_threads or 'all'}, "
        f"load average {load_before[0]:.2f} at start / {os.getloadavg()[0]:.2f} at end"
    )
    print(
        f"chunks: {results.chunks} chunk texts from our splitter (chunk_size "
        f"{settings.chunk_size}, overlap {settings.chunk_overlap}; {statistics.mean(words):.0f} "
        f"words mean, {max(words)} max) of: {', '.join(Path(n).name for n in names)}"
    )
    print(
        "embedder: bundled all-MiniLM-L6-v2 on onnxruntime, encode batch "
        f"{settings.embed_batch_size}; LlamaIndex run: HuggingFaceEmbedding defaults "
        "(embed_batch_size 10), same splitter sizes, parsing not timed; ours: parsing timed"
    )
    print(
        f"search store: {results.search_chunks} chunks ({results.chunks} real, the rest noisy "
        f"variants of their vectors), built in {results.build_s:.1f} s; top_k 5; "
        "questions from qa/paul_graham.jsonl"
    )
    print_table(results)
    if compared:
        print(
            f"\n(f) bundled embedders on the same {len(texts)} chunk texts, each in its own process"
        )
        print_results(compared)
    print(f"total bench time {time.perf_counter() - bench_started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
