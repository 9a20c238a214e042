"""Answer benchmark: our grounded answers vs LlamaIndex's `condense_plus_context` chat engine.

    .venv/bin/python bench/answers.py [--sets dev,heldout,fresh] [--no-baseline] [--models-cache DIR]
                                      [--reports DIR] [--calibrate-only [--scales 0.7:0.95,...]]

In one process, offline, with the embedded SmolLM2 and the bundled MiniLM for both systems:

  1. indexes the shared corpus (menus, jobs, the essay, the CV and the good PDFs) into one
     collection of a temporary storage folder, as `rag ingest` does;
  2. calibration, on the sets the engine was tuned on (dev and heldout), without the model: for
     each answerability threshold, the share of unanswerable questions refused (refusal recall),
     of answerable ones refused (false refusals), and of answerable ones whose quoted evidence
     already holds the answer; the threshold in use is marked. The embedder's calibration is its
     own (rag/embeddings/: threshold and similarity scale); --scales tries other scales, with
     RAG_EMBED_MODEL=... on another embedder (--calibrate-only stops here, without the model);
  3. ours: `rag eval --answers` on each set (ChatEngine, general profile, one fresh conversation
     per question, its history asked first);
  4. LlamaIndex: `VectorStoreIndex.from_vector_store` over the same Chroma collection (same chunks,
     same embedder), `as_chat_engine(chat_mode="condense_plus_context", llm=the same SmolLM2,
     similarity_top_k=5)`, judged by the same rules (rag.evaluate.judge);
  5. prints the metrics side by side with the goals, and the questions each system got wrong;
  6. page-accurate citations: up to 6 lines from each multi-page good PDF that occur on no other
     page of the corpus (7-16 words, chosen by rule, not by hand) are asked as questions; the page
     of our top evidence span vs the page of LlamaIndex's top retrieved chunk.

Three sets: dev (bench/qa/answers.jsonl) tunes the engine; heldout (answers_heldout.jsonl) was
written apart from it, but its failures were studied while the engine improved, so it is tuned on
too; fresh (answers_fresh.jsonl) was written by someone who had read neither the engine nor the
other sets, and nothing is tuned on it: its numbers are the ones to trust.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
SETS = {"dev": ROOT / "bench" / "qa" / "answers.jsonl"}
SETS["heldout"] = ROOT / "bench" / "qa" / "answers_heldout.jsonl"
SETS["fresh"] = ROOT / "bench" / "qa" / "answers_fresh.jsonl"
TUNED_ON = ("dev", "heldout")
DOCUMENTS = ["menus", "jobs", "essays", "cv", "pdfs/good"]
sys.path.insert(0, str(ROOT))

from common import add_models_cache_flag, models_cache, say, table  # noqa: E402

from rag.cli import offline_environment  # noqa: E402

offline_environment()

GOALS = {
    "accuracy": ">= 0.85",
    "refusal_recall": ">= 0.90",
    "false_refusal_rate": "<= 0.10",
    "verified_fact_rate": "1.0 (none unverified)",
    "citation_accuracy": ">= 0.95",
    "first_token_p50_s": "<= 2 s",
}
THRESHOLDS = [0.30, 0.32, 0.34, 0.36, 0.38, 0.40, 0.42, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70]
BASELINE_TOP_K = 5


def build(storage: Path, cache: Path | None, with_llm: bool = True) -> tuple[Any, Any, Any]:
    """The index over the corpus, the embedded LLM (None without `with_llm`), and the general
    profile."""
    from rag.config import Settings
    from rag.index import Index
    from rag.llm import build_llm
    from rag.profiles import get_profile

    if cache is not None:
        storage.mkdir(parents=True, exist_ok=True)
        (storage / "models").symlink_to(cache, target_is_directory=True)
    settings = Settings(storage_dir=storage, llm="embedded", profiles_dir=ROOT / "profiles")
    index = Index(settings)
    started = time.perf_counter()
    report = index.ingest([CORPUS / folder for folder in DOCUMENTS])
    say(
        f"indexed {len(report.indexed)} files, {report.chunks_written} chunks in "
        f"{time.perf_counter() - started:.0f} s"
    )
    profile = get_profile(settings.profiles_dir, "general")
    if not with_llm:
        return index, None, profile
    llm = build_llm(settings)
    say("loading the embedded model")
    llm.warm_up()
    return index, llm, profile


# --- calibration (no model) ---------------------------------------------------------------------


def calibrate(
    index: Any, profile: Any, items: list[Any], scales: list[tuple[float, float]] | None = None
) -> None:
    """Refusal recall, false refusals and evidence accuracy for each answerability threshold, with
    the embedder's calibration (rag/embeddings/) or with each of `scales` (similarity floor and
    ceiling) instead; the embeddings are computed once and shared by all of them."""
    import dataclasses
    import re

    from rag.engine import ChatEngine, needs_context, shown_quotes

    declared = ChatEngine(index, None, profile).calibration  # type: ignore[arg-type]
    vectors: dict[tuple[bool, str], list[float]] = {}  # (a question?, text): the embedder is slow

    def cached(engine: Any) -> Callable[[list[str]], list[list[float]]]:
        def embed(texts: list[str]) -> list[list[float]]:  # the question first, as engine._embed
            keys = [(True, texts[0]), *((False, text) for text in texts[1:])]
            if any(key not in vectors for key in keys):
                vectors.update(zip(keys, ChatEngine._embed(engine, texts), strict=True))
            return [vectors[key] for key in keys]

        return embed

    own = (declared.similarity_floor, declared.similarity_ceiling)
    for floor, ceiling in scales or [own]:
        calibration = dataclasses.replace(
            declared, similarity_floor=floor, similarity_ceiling=ceiling
        )
        engine = ChatEngine(index, None, profile, calibration=calibration)  # type: ignore[arg-type]
        engine._embed = cached(engine)  # type: ignore[method-assign]
        rows = []
        for item in items:
            question = item.question
            if item.history and needs_context(question):
                question = engine.with_subject(question, item.history[-1])
            findings = engine.find_evidence(question)
            quotes = " ".join(e.quote for e in shown_quotes(findings.evidence))
            holds = bool(item.must) and all(re.search(p, quotes, re.I) for p in item.must)
            hard = bool(findings.reason) and findings.reason != "no passage found answers it"
            rows.append((item, findings.confidence, hard, holds))
        print(
            "\n== calibration of 'the documents don't say' (dev and heldout sets, no model; "
            f"embedder {index.settings.embed_model}, similarity {floor:.2f} -> 0, "
            f"{ceiling:.2f} -> 1)"
        )
        print(
            f"{'threshold':>10} {'refusal recall':>15} {'false refusals':>15} {'evidence holds':>15}"
        )
        answerable = [r for r in rows if not r[0].refuse]
        unanswerable = [r for r in rows if r[0].refuse]
        in_use = (floor, ceiling) == own
        for threshold in sorted({*THRESHOLDS, declared.min_confidence}):
            refused = [hard or confidence < threshold for _, confidence, hard, _ in rows]
            by_item = {id(r[0]): refuse for r, refuse in zip(rows, refused, strict=True)}
            recall = sum(by_item[id(r[0])] for r in unanswerable) / len(unanswerable)
            false = sum(by_item[id(r[0])] for r in answerable) / len(answerable)
            holds = sum(r[3] and not by_item[id(r[0])] for r in answerable) / len(answerable)
            mark = "  <- in use" if in_use and threshold == declared.min_confidence else ""
            print(f"{threshold:>10.2f} {recall:>15.3f} {false:>15.3f} {holds:>15.3f}{mark}")


# --- the two systems ------------------------------------------------------------------------------


def ours(index: Any, llm: Any, profile: Any) -> Callable[[Any], Any]:
    from rag.engine import ChatEngine
    from rag.evaluate import engine_replies

    return engine_replies(lambda chat_id: ChatEngine(index, llm, profile))


def llamaindex(index: Any, llm: Any) -> Callable[[Any], Any]:
    """LlamaIndex's chat engine over the same collection, embedder and model."""
    from llama_index.core import VectorStoreIndex

    from rag.evaluate import Reply

    store = index.collection().vector_store()
    vectors = VectorStoreIndex.from_vector_store(store, embed_model=index.embedder)

    def ask(item: Any) -> Reply:
        engine = vectors.as_chat_engine(
            chat_mode="condense_plus_context", llm=llm, similarity_top_k=BASELINE_TOP_K
        )
        for earlier in item.history:
            engine.chat(earlier)
        started = time.perf_counter()
        response = engine.stream_chat(item.question)
        first = None
        parts = []
        for token in response.response_gen:
            if first is None and token.strip():
                first = time.perf_counter() - started
            parts.append(token)
        nodes = response.source_nodes
        return Reply(
            text="".join(parts).strip(),
            first_token_s=first,
            sources=[(n.node.metadata.get("file"), n.node.metadata.get("page")) for n in nodes],
            context=[n.node.get_content() for n in nodes],
        )

    return ask


def run(name: str, ask: Callable[[Any], Any], items: list[Any]) -> Any:
    from rag.evaluate import evaluate_answers

    started = time.perf_counter()

    def progress(number: int, row: Any) -> None:
        if number % 10 == 0 or number == len(items):
            say(f"{name}: {number}/{len(items)} ({time.perf_counter() - started:.0f} s)")

    return evaluate_answers(items, ask, progress)


def show(set_name: str, results: dict[str, Any], reports: Path | None) -> None:
    from rag.evaluate import write_rows

    metrics = {name: result.to_json() for name, result in results.items()}
    names = list(results)
    first = metrics[names[0]]
    print(
        f"\n== answers on the {set_name} set ({first['answerable']} answerable, "
        f"{first['unanswerable']} unanswerable)"
    )
    rows = [("metric", *names, "goal")]
    for key, goal in GOALS.items():
        values = [metrics[name][key] for name in names]
        rows.append((key, *("-" if v is None else f"{v:.3f}" for v in values), goal))
    table(rows)
    for name, result in results.items():
        wrong = [row.item.id for row in result.rows if not row.correct]
        print(f"  {name} wrong ({len(wrong)}): {', '.join(wrong) or 'none'}")
        if reports is not None:
            reports.mkdir(parents=True, exist_ok=True)
            path = reports / f"answers-{set_name}-{name}.jsonl"
            write_rows([row.to_json() for row in result.rows], path)


# --- page-accurate citations ---------------------------------------------------------------------


def page_phrases(per_file: int = 6) -> list[tuple[str, str, int]]:
    """(line, file, page): lines of the multi-page good PDFs whose words are printed on no other
    page anywhere (a blind text repeated with other line breaks is printed on every page)."""
    from rag.loaders import load_bytes

    pages: dict[str, list[tuple[int | None, str]]] = {}
    for folder in DOCUMENTS:
        for path in sorted((CORPUS / folder).iterdir()):
            loaded = load_bytes(path.read_bytes(), path.name)
            pages[path.name] = [(page.page, page.text) for page in loaded.pages]
    printed = [" ".join(text.split()).casefold() for texts in pages.values() for _, text in texts]
    phrases = []
    for path in sorted((CORPUS / "pdfs" / "good").glob("*.pdf")):
        texts = pages[path.name]
        if len(texts) < 2:
            continue
        chosen = []
        for page, text in texts:
            for line in text.splitlines():
                words = line.split()
                letters = sum(ch.isalpha() for ch in line) / max(1, len(line))
                key = " ".join(words).casefold()
                if not (7 <= len(words) <= 16 and letters >= 0.7):
                    continue
                if sum(key in page_text for page_text in printed) == 1:
                    chosen.append((" ".join(words), path.name, int(page or 0)))
                    break
        step = max(1, len(chosen) // per_file)  # spread over the file's pages
        phrases += chosen[::step][:per_file]
    return phrases


def page_citations(index: Any, profile: Any, baseline: bool) -> None:
    from llama_index.core import VectorStoreIndex

    from rag.engine import ChatEngine

    phrases = page_phrases()
    engine = ChatEngine(index, None, profile)  # type: ignore[arg-type]  # evidence only
    ours_right = 0
    for phrase, file, page in phrases:
        findings = engine.find_evidence(phrase)
        top = (findings.evidence or findings.closest)[:1]
        ours_right += bool(top) and (top[0].file, top[0].page) == (file, page)
    rows = [("metric", "ours", *(["llamaindex"] if baseline else []), "goal")]
    cells = [f"{ours_right / len(phrases):.3f} ({ours_right}/{len(phrases)})"]
    if baseline:
        store = index.collection().vector_store()
        vectors = VectorStoreIndex.from_vector_store(store, embed_model=index.embedder)
        retriever = vectors.as_retriever(similarity_top_k=1)
        theirs = 0
        for phrase, file, page in phrases:
            hits = retriever.retrieve(phrase)
            meta = hits[0].node.metadata if hits else {}
            theirs += (meta.get("file"), meta.get("page")) == (file, page)
        cells.append(f"{theirs / len(phrases):.3f} ({theirs}/{len(phrases)})")
    rows.append(("page of the top citation", *cells, ">= 0.95"))
    print(f"\n== page-accurate citations ({len(phrases)} page-specific lines of the good PDFs)")
    table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sets", default="dev,heldout,fresh", help="comma-separated: dev, heldout, fresh"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip LlamaIndex's engine")
    add_models_cache_flag(parser)
    parser.add_argument("--reports", type=Path, default=None, help="write per-question JSONL here")
    parser.add_argument(
        "--scales",
        default="",
        help="calibrate with these instead of the embedder's own similarity scale "
        "(rag/embeddings/): comma-separated FLOOR or FLOOR:CEILING, one table each",
    )
    parser.add_argument(
        "--calibrate-only",
        action="store_true",
        help="stop after the calibration (no model answers); with RAG_EMBED_MODEL=... it "
        "calibrates that embedder",
    )
    args = parser.parse_args()

    import logging
    import warnings

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    from rag.evaluate import load_answer_questions

    sets = {name: load_answer_questions(SETS[name]) for name in args.sets.split(",")}
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as temp:
        index, llm, profile = build(
            Path(temp) / "storage", models_cache(args.models_cache), not args.calibrate_only
        )
        page_citations(index, profile, not args.no_baseline)
        tuned = [item for name in TUNED_ON for item in sets.get(name, [])]
        if tuned:
            scales = [
                (float(f), float(c or 1.0))
                for f, _, c in (s.partition(":") for s in args.scales.split(",") if s.strip())
            ]
            calibrate(index, profile, tuned, scales)
        if args.calibrate_only:
            index.close()
            return
        for set_name, items in sets.items():
            results = {"ours": run(f"ours/{set_name}", ours(index, llm, profile), items)}
            if not args.no_baseline:
                results["llamaindex"] = run(f"llamaindex/{set_name}", llamaindex(index, llm), items)
            show(set_name, results, args.reports)
        index.close()


if __name__ == "__main__":
    main()
