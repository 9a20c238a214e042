"""Answer benchmark: time to first token through ChatEngine against the same LLM called directly.

    .venv/bin/python bench/answer.py [--questions 5] [--chunks 10000] [--max-new-tokens 64]
                                     [--threads N] [--gguf FILE] [--models-cache DIR] [--keep]

With the embedded SmolLM2 (its shipped GGUF on ik_llama.cpp, CPU) and the bundled MiniLM (or,
with --gguf FILE, that GGUF file as RAG_LLM=gguf runs it, to compare models or quantisations on
the same questions):

  1. a child process builds a --chunks collection in a temp storage: the essay ingested for
     real, then noisy copies of its chunk vectors written straight to the ChunkStore (as
     bench/ingest.py does), so 10k chunks do not take 10k embeddings; the revision is bumped as
     after any write. Bench-only work: an app process opens a storage built before it;
  2. this process then serves as the app does: opens the storage, loads MiniLM then the LLM
     (the app's warm-up order), and times the BM25 build the first query pays (reported on its
     own line; the same full build a write's first query pays);
  3. warms up (one untimed question: models loaded, BM25 built, code paths hot);
  4. per question (qa/paul_graham.jsonl, the first --questions of them), in alternating order,
     each run with an empty KV cache (so it reads its whole prompt, as a first question does):
       engine: `ChatEngine(index, llm, profile).ask(q)` then the first token of `answer.stream()`;
       direct: `llm.stream_chat(messages)` to its first non-empty delta, where `messages` is the
               engine's own `messages(q, sources)` for the sources retrieval returns for q,
     both streamed to the end for tokens per second; overhead = engine TTFT - direct TTFT;
  5. breaks the engine's part down (condense, query embedding, vector query, BM25, fuse, prompt
     building with its token counting), and times one follow-up question, whose condense step
     runs the LLM first;
  6. reports the peak RSS (ru_maxrss) of this process, the serving one: MiniLM, the model,
     Chroma and BM25 over the collection, and every question; not the building, whose child
     process's own peak is reported on a line apart (it is not the app's).

The model is loaded as the app loads it: no conversion, nothing cached in storage. With
--models-cache DIR (default ./storage/models when it exists) the temp storage's models/ is that
folder, so the embedder's ONNX graph is built once for every run.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
ESSAY = CORPUS / "essays" / "paul_graham_essay.txt"
QA = CORPUS / "qa" / "paul_graham.jsonl"
sys.path.insert(0, str(ROOT))

from common import add_models_cache_flag, finish_with, goals_table, models_cache, say, verdict  # noqa: E402

from rag.cli import offline_environment  # noqa: E402

offline_environment()  # as the app starts: before any model library or chromadb is imported

GOAL_OVERHEAD_MS = 50.0
GOAL_PEAK_RSS_MB = 1024.0  # 1.0 GB, for the app with the embedded model at 10k chunks
FOLLOW_UP = "What did he do right after that?"


def quiet() -> None:
    logging.getLogger("chromadb").setLevel(logging.ERROR)
    logging.getLogger("rag.llm.ik_llama").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


def ms(seconds: float) -> float:
    return seconds * 1000.0


def rss_mb() -> tuple[float, float]:
    """(current RSS, high-water mark) of this process in MB, from /proc/self/status."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            values[key] = int(value.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


# --- the 10k-chunk collection ------------------------------------------------------------------


def build_collection(index: Any, total: int) -> tuple[int, float, float, int]:
    """Ingest the essay for real, then pad the collection with noisy copies of its vectors.

    Returns (real chunks, ingest seconds, padding seconds, chunks in the store).
    """
    import numpy as np
    from llama_index.core.schema import TextNode

    started = time.perf_counter()
    report = index.ingest([ESSAY])
    ingest_s = time.perf_counter() - started
    if report.failed or not report.chunks_written:
        raise SystemExit(f"ingesting the essay failed: {report}")
    store = index.collection()
    real = store.collection.get(include=["embeddings", "documents", "metadatas"])
    vectors = np.asarray(real["embeddings"], dtype=np.float32)
    count = len(vectors)

    rng = np.random.default_rng(7)
    started = time.perf_counter()
    batch: list[Any] = []
    for number in range(count, total):
        base = number % count
        noisy = vectors[base] + rng.normal(0.0, 0.03, vectors.shape[1]).astype(np.float32)
        group = f"{number // 50:04d}"
        batch.append(
            TextNode(
                id_=f"bench-{number:06d}",
                text=f"[variant {number}] {real['documents'][base]}",
                embedding=(noisy / np.linalg.norm(noisy)).tolist(),
                metadata={
                    "file": f"synthetic/{group}.txt",
                    "file_id": f"bench-{group}",
                    "content_hash": "bench",
                    "chunk": number % 50,
                },
            )
        )
        if len(batch) == 1000:
            store.upsert(batch)
            batch = []
    if batch:
        store.upsert(batch)
    store.bump_revision()  # what every real write does: caches such as BM25 must notice
    pad_s = time.perf_counter() - started
    return count, ingest_s, pad_s, store.count()


def bench_settings(storage: Path, gguf: Path | None, threads: int, max_new_tokens: int) -> Any:
    from rag.config import Settings

    return Settings(
        storage_dir=storage,
        llm="gguf" if gguf else "embedded",
        gguf_path=gguf,
        gguf_threads=threads,
        max_new_tokens=max_new_tokens,
        profiles_dir=ROOT / "profiles",
    )


def build_in_child(storage: Path, total: int) -> tuple[int, float, float, int, float]:
    """build_collection in a process of its own (run by `spawn`): what it leaves behind in
    memory (Chroma's write buffers, the ingest's garbage) is not the serving process's.
    Returns build_collection's numbers and this process's peak RSS in MB."""
    quiet()
    from rag.index import Index

    index = Index(bench_settings(storage, None, 0, 64))
    try:
        built = build_collection(index, total)
    finally:
        index.close()
    return (*built, peak_rss_mb())


# --- one answer, two ways ------------------------------------------------------------------------


@dataclass
class Run:
    """One streamed answer: times are seconds from the start of the call."""

    first: float  # first token
    last: float  # last token
    text: str
    deltas: int
    setup: float = 0.0  # engine only: ask() returning (condense + retrieve + prompt)
    tokens: int = 0  # model tokenizer count of `text`

    def decode_tps(self) -> float | None:
        if self.tokens < 2 or self.last <= self.first:
            return None
        return (self.tokens - 1) / (self.last - self.first)

    def overall_tps(self) -> float:
        return self.tokens / self.last if self.last else 0.0


def run_engine(engine: Any, question: str) -> tuple[Run, Any]:
    started = time.perf_counter()
    answer = engine.ask(question)
    setup = time.perf_counter() - started
    first = last = 0.0
    deltas = 0
    for _token in answer.stream():
        last = time.perf_counter() - started
        if not deltas:
            first = last
        deltas += 1
    return Run(first=first, last=last, text=answer.text, deltas=deltas, setup=setup), answer


def run_direct(llm: Any, messages: list[Any]) -> Run:
    started = time.perf_counter()
    first = last = 0.0
    deltas = 0
    chunks: list[str] = []
    for response in llm.stream_chat(messages):
        if not response.delta:  # the engine skips empty deltas too
            continue
        last = time.perf_counter() - started
        if not deltas:
            first = last
        deltas += 1
        chunks.append(response.delta)
    return Run(first=first, last=last, text="".join(chunks).strip(), deltas=deltas)


def forget(model: Any) -> None:
    """Empty the model's KV cache: the run after it reads its whole prompt. Otherwise the second
    of a question's two runs (same prompt) would read only its last token."""
    with model.lock:
        model._reset()


@dataclass
class Breakdown:
    """Where the engine's own time goes, per question (ms)."""

    parts: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.parts.setdefault(name, []).append(ms(seconds))

    def medians(self) -> dict[str, float]:
        return {name: statistics.median(values) for name, values in self.parts.items()}


def break_down(engine: Any, index: Any, question: str, out: Breakdown) -> None:
    """The steps of `ask()` one by one, on an engine with no history (as in the timed runs)."""
    from rag.engine import by_page
    from rag.retrieve import CANDIDATES, MIN_CANDIDATES, fuse

    retriever = index.retriever(engine.profile.collection)
    t = time.perf_counter()
    standalone = engine.condense(question)
    out.add("condense", time.perf_counter() - t)
    t = time.perf_counter()
    vector = index.embedder.get_query_embedding(standalone)
    out.add("query embedding", time.perf_counter() - t)
    pool = max(engine.top_k * CANDIDATES, MIN_CANDIDATES)
    t = time.perf_counter()
    vector_hits = retriever.store.query(vector, pool, engine.where)
    out.add("chroma vector query", time.perf_counter() - t)
    t = time.perf_counter()
    keywords = retriever.keyword_index()  # checks the store's revision: a Chroma round trip
    out.add("BM25 revision check", time.perf_counter() - t)
    t = time.perf_counter()
    keyword_hits = keywords.search(standalone, pool, engine.where)
    out.add("BM25 search", time.perf_counter() - t)
    t = time.perf_counter()
    fuse([vector_hits, keyword_hits], engine.top_k)
    out.add("fuse", time.perf_counter() - t)
    t = time.perf_counter()
    findings = engine.find_evidence(standalone)
    out.add("evidence (retrieve, units, embedding them, verdict)", time.perf_counter() - t)
    t = time.perf_counter()
    engine.messages(question, by_page(findings.evidence))
    out.add("prompt (messages + token counting)", time.perf_counter() - t)
    t = time.perf_counter()
    retriever.retrieve(standalone, engine.top_k, engine.where)
    out.add("retrieve() as a whole", time.perf_counter() - t)


# --- report --------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=5, help="timed questions (5)")
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks in the index (10000)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="answer length cap (64)")
    parser.add_argument(
        "--threads", type=int, default=0, help="RAG_GGUF_THREADS (0: every core, the default)"
    )
    add_models_cache_flag(parser)
    parser.add_argument(
        "--gguf", type=Path, default=None, help="bench RAG_LLM=gguf on this file instead"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp storage")
    args = parser.parse_args(argv)
    quiet()

    load_start = os.getloadavg()
    bench_started = time.perf_counter()
    say(f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")

    from rag.engine import ChatEngine, by_page
    from rag.index import Index
    from rag.llm import build_llm, describe_llm
    from rag.profiles import get_profile

    questions = [json.loads(line)["question"] for line in QA.read_text().splitlines() if line]
    if len(questions) < args.questions + 1:
        raise SystemExit(f"{QA} has {len(questions)} questions; need {args.questions + 1}")
    timed, warm_up_question = questions[: args.questions], questions[args.questions]

    work = Path(tempfile.mkdtemp(prefix="rag-answer-bench-"))
    storage = work / "storage"
    memory: list[tuple[str, float, float]] = []

    def checkpoint(stage: str) -> None:
        memory.append((stage, *rss_mb()))

    index = None
    try:
        cache = models_cache(args.models_cache)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            storage.mkdir(parents=True)
            (storage / "models").symlink_to(cache, target_is_directory=True)
        settings = bench_settings(storage, args.gguf, args.threads, args.max_new_tokens)
        profile = get_profile(settings.profiles_dir, settings.profile)
        checkpoint("start (imports)")

        say(
            f"building a {args.chunks}-chunk collection (the essay for real, the rest "
            "synthetic) in a child process"
        )
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter, not a fork of this
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            built = pool.submit(build_in_child, storage, args.chunks).result()
        real_chunks, ingest_s, pad_s, stored, build_peak = built

        say("serving: opening the storage, loading MiniLM")
        index = Index(settings)
        index.embedder.get_query_embedding("warm-up")
        checkpoint("MiniLM loaded")

        say(f"loading the {settings.llm} model")
        llm = build_llm(settings)
        started = time.perf_counter()
        model = llm.warm_up()
        llm_load_s = time.perf_counter() - started
        checkpoint("LLM loaded")
        weights_mb = model.path.stat().st_size / 2**20

        def count_tokens(text: str) -> int:
            return len(model.tokenize(text))

        say("first query: BM25 build")
        retriever = index.retriever(profile.collection)
        started = time.perf_counter()
        retriever.keyword_index()
        bm25_s = time.perf_counter() - started
        started = time.perf_counter()
        retriever.store.all_chunks()
        read_all_s = time.perf_counter() - started
        checkpoint("collection opened, BM25 built")

        say("warm-up question (untimed)")
        warm_engine = ChatEngine(index, llm, profile)
        warm_run, _ = run_engine(warm_engine, warm_up_question)
        warm_evidence = by_page(warm_engine.find_evidence(warm_up_question).evidence)
        warm_messages, _ = ChatEngine(index, llm, profile).messages(warm_up_question, warm_evidence)
        run_direct(llm, warm_messages)
        checkpoint("after warm-up")

        engine_runs: list[Run] = []
        direct_runs: list[Run] = []
        prompt_tokens: list[int] = []
        same_prompt = 0
        construct: list[float] = []
        breakdown = Breakdown()
        last_engine = None
        for number, question in enumerate(timed):
            say(f"question {number + 1}/{len(timed)}")
            started = time.perf_counter()
            engine = ChatEngine(index, llm, profile)
            construct.append(ms(time.perf_counter() - started))
            probe = ChatEngine(index, llm, profile)  # a fresh one, so no history in the prompt
            evidence = by_page(probe.find_evidence(question).evidence)
            messages, documents = probe.messages(question, evidence)
            sources = [source for source, _ in documents]
            prompt_tokens.append(len(llm._chat_ids(messages)))
            if number % 2 == 0:
                forget(model)
                engine_run, answer = run_engine(engine, question)
                forget(model)
                direct_run = run_direct(llm, messages)
            else:
                forget(model)
                direct_run = run_direct(llm, messages)
                forget(model)
                engine_run, answer = run_engine(engine, question)
            cited = {(s.file, s.page) for s in answer.sources}
            prompted = {(s.file, s.page) for s in sources}
            same_prompt += cited <= prompted and answer.standalone_question == question
            for run in (engine_run, direct_run):
                run.tokens = count_tokens(run.text)
            engine_runs.append(engine_run)
            direct_runs.append(direct_run)
            break_down(ChatEngine(index, llm, profile), index, question, breakdown)
            last_engine = engine
        checkpoint("after timed questions")

        say("follow-up question (condense runs the LLM first)")
        assert last_engine is not None
        started = time.perf_counter()
        standalone = last_engine.condense(FOLLOW_UP)
        condense_s = time.perf_counter() - started
        follow_run, follow_answer = run_engine(last_engine, FOLLOW_UP)
        checkpoint("after follow-up")
    finally:
        if index is not None:
            index.close()
        finish_with(work, args.keep)

    load_end = os.getloadavg()
    peak = peak_rss_mb()
    engine_ttft = [ms(r.first) for r in engine_runs]
    direct_ttft = [ms(r.first) for r in direct_runs]
    paired = [e - d for e, d in zip(engine_ttft, direct_ttft, strict=True)]
    setup = [ms(r.setup) for r in engine_runs]
    overhead = median(engine_ttft) - median(direct_ttft)
    # The model's speed from the direct runs only: an engine answer also streams passages it
    # quotes (several lines in one delta, after the model's last token), which no model decoded.
    decode = [tps for r in direct_runs if (tps := r.decode_tps()) is not None]
    overall = [r.overall_tps() for r in direct_runs]
    tokens = [r.tokens for r in direct_runs]
    deltas = [r.deltas for r in direct_runs]
    parts = breakdown.medians()

    print(
        f"rag answer bench: {os.cpu_count()} cores, ik_llama.cpp with {llm.n_threads} threads "
        f"(prompt batches of {model.n_ubatch} tokens), "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (the runtime default)')}"
    )
    print(
        f"load average at start {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} "
        f"/ at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} (1, 5, 15 min)"
    )
    print(
        f"index: {stored} chunks = {real_chunks} real (essay ingested in {ingest_s:.1f} s) + "
        f"{stored - real_chunks} noisy copies written to the ChunkStore in {pad_s:.1f} s; "
        f"retrieval {settings.retrieval}, top_k {profile.top_k}, profile {profile.name!r}"
    )
    print(
        f"LLM: {describe_llm(llm)} ({model.path}), max_new_tokens {settings.max_new_tokens}, "
        f"temperature {settings.temperature}, context_window {settings.context_window}; "
        f"loaded in {llm_load_s:.1f} s; weights {weights_mb:.0f} MB; KV cache for "
        f"{model.ctx_size} tokens (grows to {model.n_ctx} for a prompt that needs it)"
    )
    print(
        f"questions: {len(timed)} from {QA.name} (warm-up: question {args.questions + 1}); "
        f"prompt {min(prompt_tokens)}-{max(prompt_tokens)} tokens (median "
        f"{median(prompt_tokens):.0f}); engine and direct runs alternate which goes first; "
        f"identical prompt (same fitted sources, no condense) in {same_prompt}/{len(timed)}"
    )
    print()
    rows = [
        (
            f"TTFT engine: ask() + first token @ {stored} chunks",
            f"median {median(engine_ttft):.0f} ms ({', '.join(f'{v:.0f}' for v in engine_ttft)})",
            "",
            "",
        ),
        (
            "TTFT direct: llm.stream_chat(same messages)",
            f"median {median(direct_ttft):.0f} ms ({', '.join(f'{v:.0f}' for v in direct_ttft)})",
            "",
            "",
        ),
        (
            "our overhead = engine - direct TTFT",
            f"{overhead:.0f} ms (difference of medians); paired median {median(paired):.0f} ms "
            f"({', '.join(f'{v:+.0f}' for v in paired)})",
            f"<= {GOAL_OVERHEAD_MS:g} ms",
            # a difference smaller than the run-to-run spread of the LLM alone says nothing
            verdict(overhead <= GOAL_OVERHEAD_MS)
            if max(direct_ttft) - min(direct_ttft) <= 2 * GOAL_OVERHEAD_MS
            else "NOISY",
        ),
        (
            "  engine's own part: ask() until it returns",
            f"median {median(setup):.0f} ms ({', '.join(f'{v:.0f}' for v in setup)}) "
            "(condense + retrieve + prompt; measured directly, no LLM noise)",
            f"<= {GOAL_OVERHEAD_MS:g} ms",
            verdict(median(setup) <= GOAL_OVERHEAD_MS),
        ),
        (
            f"BM25 rebuild at {stored} chunks",
            f"{ms(bm25_s):.0f} ms (a process's first query, as after a write; of which reading "
            f"all chunks from Chroma ~{ms(read_all_s):.0f} ms); not in the TTFTs above",
            "",
            "",
        ),
        (
            "tokens/s, the model (decode)",
            f"median {median(decode):.1f} tok/s, first to last token, over {len(decode)} direct "
            f"answers; {median(overall):.1f} tok/s incl. prompt processing",
            "",
            "",
        ),
        (
            "  how tokens were counted",
            f"the model's tokenizer on each answer's text: median {median(tokens):.0f} tokens "
            f"({median(deltas):.0f} streamed deltas)",
            "",
            "",
        ),
        (
            "peak RSS (ru_maxrss, the serving process)",
            f"{peak:.0f} MB (MiniLM + the GGUF model + Chroma + BM25 over {stored} chunks, "
            "every question)",
            f"<= {GOAL_PEAK_RSS_MB:g} MB",
            verdict(peak <= GOAL_PEAK_RSS_MB),
        ),
        (
            "  building the collection (bench only)",
            f"{build_peak:.0f} MB peak RSS of the child process that built it; not the app's",
            "",
            "",
        ),
    ]
    goals_table(rows)
    spread = max(direct_ttft) - min(direct_ttft)
    print(
        f"note: the direct TTFT alone spans {min(direct_ttft):.0f}-{max(direct_ttft):.0f} ms "
        f"({spread:.0f} ms) over questions whose prompts differ by "
        f"{max(prompt_tokens) - min(prompt_tokens)} tokens: prompt processing on a shared CPU. "
        f"A difference of TTFTs resolves {GOAL_OVERHEAD_MS:g} ms only when that spread is far "
        "smaller; ask() until it returns is the engine's part measured without the LLM in it."
    )
    print()
    print("engine's own part, step by step (medians over the questions, fresh engine, ms):")
    for name, value in parts.items():
        print(f"  {name:<38} {value:8.1f}")
    print(f"  {'(ChatEngine() constructor, not in ask)':<38} {median(construct):8.1f}")
    print(
        f"follow-up question on the last conversation ({FOLLOW_UP!r}): TTFT "
        f"{ms(follow_run.first):.0f} ms, of which ask() {ms(follow_run.setup):.0f} ms; "
        f"condense alone (an LLM completion) {ms(condense_s):.0f} ms -> "
        f"{follow_answer.standalone_question[:100]!r}"
        + ("" if standalone == follow_answer.standalone_question else " (sampled differently)")
    )
    print(
        f"warm-up question (untimed, BM25 already built): TTFT {ms(warm_run.first):.0f} ms, "
        f"of which ask() {ms(warm_run.setup):.0f} ms"
    )
    print("memory by stage, the serving process (RSS / high-water mark, MB):")
    for stage, current, high in memory:
        print(f"  {stage:<30} {current:7.0f} / {high:7.0f}")
    sample = " ".join(engine_runs[0].text.split())
    print(f"sample answer (question 1, engine): {sample[:200]!r}")
    print(f"total bench time {time.perf_counter() - bench_started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
