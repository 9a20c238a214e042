"""The `rag` command: ingest, status, search, remove, ask and eval over the index."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rag.errors import ConfigError, RagError
from rag.logs import internal_error_line, log_to_file

logger = logging.getLogger("rag.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # what a tool killed by SIGPIPE reports


def offline_environment() -> None:
    """Nothing may reach a model hub or phone home.

    Set before any model library is imported (the CLI, the app and the tests call it first).
    OpenMP's wait policy is left to the runtime: ik_llama.cpp's threads spin briefly between the
    many small steps of a token, then sleep. PASSIVE (sleep at once) made it decode at a quarter
    of the speed (52 vs 206 tokens/s, bench/answer.py); ACTIVE keeps a core busy while idle.
    """
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }.items():
        os.environ.setdefault(key, value)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--storage", type=Path, help="storage folder (RAG_STORAGE_DIR, ./storage)")
    common.add_argument("--data", type=Path, help="documents folder (RAG_DATA_DIR, ./data)")
    common.add_argument(
        "--collection", help="collection (default: RAG_COLLECTION, else the profile's)"
    )

    parser = argparse.ArgumentParser(
        prog="rag", description="Private chat with your documents: index and search from the shell."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser(
        "ingest", parents=[common], help="index files and folders (default: the data folder)"
    )
    ingest.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    ingest.add_argument(
        "--rebuild",
        action="store_true",
        help="re-embed the whole collection (after an embedder change)",
    )
    ingest.add_argument("--json", action="store_true", help="print the report as JSON")

    status = commands.add_parser("status", parents=[common], help="collections, files, chunks")
    status.add_argument("--json", action="store_true")

    search = commands.add_parser(
        "search", parents=[common], help="print the chunks nearest a query"
    )
    search.add_argument("query")
    search.add_argument(
        "-k", type=int, default=None, help="how many chunks (RAG_TOP_K, else the profile's)"
    )
    search.add_argument("--json", action="store_true")

    ask = commands.add_parser("ask", parents=[common], help="answer a question from the documents")
    ask.add_argument("question")
    ask.add_argument("--profile", help="profile from the profiles folder (RAG_PROFILE, general)")
    ask.add_argument(
        "-k", type=int, default=None, help="chunks to retrieve (RAG_TOP_K, else the profile's)"
    )
    ask.add_argument("--json", action="store_true", help='print {"answer", "sources", "model"}')

    evaluate = commands.add_parser(
        "eval",
        parents=[common],
        help="measure retrieval (hit rate, MRR) or, with --answers, whole answers",
    )
    evaluate.add_argument("qa", type=Path, nargs="?", metavar="QA.jsonl")
    evaluate.add_argument(
        "--answers",
        type=Path,
        metavar="QA.jsonl",
        help="score answers: accuracy, refusal recall, false refusals, verified facts, first token",
    )
    evaluate.add_argument("--profile", help="profile for --answers (RAG_PROFILE, general)")
    evaluate.add_argument("-k", type=int, default=None, help="rank cut-off (default 5)")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one object")
    evaluate.add_argument("--report", type=Path, help="write per-question results (JSONL) here")

    records = commands.add_parser(
        "records",
        parents=[common],
        help="list what the documents list: menu items, job postings, CVs",
    )
    records.add_argument("--json", action="store_true", help="print one JSON object a record")

    remove = commands.add_parser("remove", parents=[common], help="drop one file from the index")
    remove.add_argument("file", help="the name shown by search/status, or the file's path")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    offline_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        from rag.index import Index

        log_to_file(settings.storage_dir)
        index = Index(settings)
        try:
            return COMMANDS[args.command](index, args)
        finally:
            index.close()
    except ConfigError as error:
        print(f"rag: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RagError as error:
        print(f"rag: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("rag: interrupted; the next run completes what was left", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader has gone (`rag search ... | head`): stop quietly, as any Unix tool does.
        # Output still buffered would fail again at exit, so stdout now goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:  # one line for the person, the traceback for the log file
        logger.exception("rag %s failed", args.command)
        print(f"rag: {internal_error_line(error)}", file=sys.stderr)
        return EXIT_FAILED


def _settings(args: argparse.Namespace) -> Any:
    from rag.config import load_settings

    # A bad value raises ConfigError (exit 2); --collection counts as RAG_COLLECTION.
    return load_settings(storage_dir=args.storage, data_dir=args.data, collection=args.collection)


# --- commands -----------------------------------------------------------------------------------------


def cmd_ingest(index: Any, args: argparse.Namespace) -> int:
    paths = args.paths or [index.settings.data_dir]
    with progress_display(quiet=args.json) as progress:
        if args.rebuild:
            report = index.rebuild(paths, progress=progress)
        else:
            report = index.ingest(paths, progress=progress)
    if args.json:
        print(
            json.dumps(
                {
                    "indexed": report.indexed,
                    "unchanged": report.unchanged,
                    "removed": report.removed,
                    "failed": [{"file": f.file, "reason": f.reason} for f in report.failed],
                    "warnings": report.warnings,
                    "chunks": report.chunks_written,
                    "seconds": round(report.seconds, 2),
                }
            )
        )
    else:
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        for failure in report.failed:
            print(f"failed: {failure}", file=sys.stderr)
        rate = report.chunks_written / report.seconds if report.seconds else 0.0
        print(
            f"{len(report.indexed)} indexed, {len(report.unchanged)} unchanged, "
            f"{len(report.removed)} removed, {len(report.failed)} failed; "
            f"{report.chunks_written} chunks in {report.seconds:.1f} s ({rate:.1f} chunks/s) "
            f"into collection {index.default_collection!r}"
        )
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_status(index: Any, args: argparse.Namespace) -> int:
    statuses = index.status()
    settings = index.settings
    if args.json:
        print(
            json.dumps(
                {
                    "store": settings.store_location,
                    "embedder": settings.embed_model,
                    "collections": [
                        {
                            "name": s.name,
                            "files": s.files,
                            "chunks": s.chunks,
                            "embedder": s.embedder,
                        }
                        for s in statuses
                    ],
                }
            )
        )
        return EXIT_OK
    print(f"store:    {settings.store_location}")
    print(f"embedder: {settings.embed_model}")
    if not statuses:
        print("no collections yet: run `rag ingest data/`")
        return EXIT_OK
    width = max(len("collection"), *(len(s.name) for s in statuses))
    print(f"{'collection':<{width}}  {'files':>6}  {'chunks':>7}  built with")
    for s in statuses:
        print(f"{s.name:<{width}}  {s.files:>6}  {s.chunks:>7}  {s.embedder or '-'}")
    return EXIT_OK


def cmd_search(index: Any, args: argparse.Namespace) -> int:
    from rag.profiles import active_profile

    # The depth `rag ask` would use: -k, else RAG_TOP_K, else the default profile's top_k.
    top_k = args.k if args.k is not None else active_profile(index.settings).top_k
    if top_k < 1:
        raise ConfigError("-k must be at least 1")
    sources = index.search(args.query, top_k)
    if args.json:
        print(json.dumps([source.to_json() for source in sources], ensure_ascii=False))
        return EXIT_OK
    if not sources:
        print("no results: is anything indexed? (`rag status`)")
    for rank, source in enumerate(sources, 1):
        snippet = " ".join(source.text.split())
        print(f"{rank}. [{source.score:.3f}] {source.citation()}")
        print(f"   {snippet[:300]}{'...' if len(snippet) > 300 else ''}")
    return EXIT_OK


def cmd_ask(index: Any, args: argparse.Namespace) -> int:
    from rag.engine import ChatEngine

    profile, llm = _profile_and_llm(index, args)
    engine = ChatEngine(index, llm, profile, top_k=args.k)
    answer = engine.ask(args.question)
    if args.json:
        for _ in answer.stream():
            pass
        print(json.dumps(answer.to_json(), ensure_ascii=False))
        return EXIT_OK
    print(f"[{answer.model}]", file=sys.stderr)
    if answer.standalone_question != args.question:
        print(f"[searched for: {answer.standalone_question}]", file=sys.stderr)
    for token in answer.stream():
        print(token, end="", flush=True)
    print()
    if answer.sources:
        print("\nClosest passages:" if answer.refused else "\nSources:")
        for number, source in enumerate(answer.sources, 1):
            print(f"  [{number}] {source.citation()} (score {source.score:.3f})")
    else:
        print("\nSources: none found in collection " + repr(profile.collection))
    return EXIT_OK


def cmd_eval(index: Any, args: argparse.Namespace) -> int:
    from rag.evaluate import evaluate, load_questions, write_report

    if (args.qa is None) == (args.answers is None):
        raise ConfigError("give a retrieval set (rag eval QA.jsonl) or --answers QA.jsonl")
    if args.answers is not None:
        return eval_answers(index, args)
    questions = load_questions(args.qa)
    retriever = index.retriever()
    result = evaluate(questions, retriever.search, args.k or 5)
    if args.report:
        write_report(result, args.report)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"hit_rate@{result.k} {result.hit_rate:.4f}")
        print(f"mrr@{result.k} {result.mrr:.4f}")
        print(f"({result.n} questions, collection {index.default_collection!r})")
    return EXIT_OK


def eval_answers(index: Any, args: argparse.Namespace) -> int:
    from rag.engine import ChatEngine
    from rag.evaluate import engine_replies, evaluate_answers, load_answer_questions, write_rows

    items = load_answer_questions(args.answers)
    profile, llm = _profile_and_llm(index, args)

    def progress(number: int, row: Any) -> None:
        verdict = "ok " if row.correct else "BAD"
        print(f"[{number}/{len(items)}] {verdict} {row.item.id}", file=sys.stderr, flush=True)

    def new_engine(chat_id: str) -> ChatEngine:
        where = {"chat_id": {"$in": ["", chat_id]}}  # never another item's attachments
        return ChatEngine(index, llm, profile, top_k=args.k, where=where)

    def attach(path: Path, chat_id: str) -> None:
        report = index.attach(path, path.name, chat_id=chat_id, collection=profile.collection)
        if report.failed:
            raise ConfigError(str(report.failed[0]))

    result = evaluate_answers(
        items, engine_replies(new_engine, attach), progress=None if args.json else progress
    )
    if args.report:
        write_rows([row.to_json() for row in result.rows], args.report)
    print(json.dumps(result.to_json()) if args.json else result.summary())
    return EXIT_OK


def _profile_and_llm(index: Any, args: argparse.Namespace) -> tuple[Any, Any]:
    """The profile a command answers with (an explicit --collection wins) and the built LLM."""
    from rag.llm import build_llm
    from rag.profiles import active_profile

    settings = index.settings
    profile = active_profile(settings, args.profile)
    if args.collection:
        profile = profile.model_copy(update={"collection": args.collection})
    return profile, build_llm(settings)


def cmd_records(index: Any, args: argparse.Namespace) -> int:
    from rag.records import price_text

    records = index.records()
    if args.json:
        for record in records:
            print(json.dumps(record.to_json(), ensure_ascii=False))
        return EXIT_OK
    if not records:
        print(
            f"no records in collection {index.default_collection!r}: records are the items of "
            "menus and price lists, and of tables with a price; files indexed by an older version "
            "get theirs with `rag ingest --rebuild`"
        )
        return EXIT_OK
    for record in records:
        fields = record.fields
        if fields.get("kind") == "posting":
            said = [fields.get(key, "") for key in ("company", "place", "work_mode", "type")]
            asks = len(fields.get("asks", []))
            said.append(f"{asks} requirement{'s' if asks != 1 else ''}, skills or duties")
            print(" | ".join([record.name, *(str(value) for value in said if value)]))
            print(f"   {record.citation()}")
            continue
        if fields.get("kind") == "cv":
            print(f"CV of {record.name or record.file} | {len(fields.get('lines', []))} lines")
            print(f"   {record.citation()}")
            continue
        price = price_text(fields)
        details = [
            f"{fields['strength']:g}%" if "strength" in fields else "",
            str(fields.get("size", "")),
            ", ".join(fields.get("dietary", [])),
        ]
        extra = "; ".join(detail for detail in details if detail)
        print(f"{record.name} | {price}" + (f" | {extra}" if extra else ""))
        print(f"   {record.citation()}")
    print(f"{len(records)} records in collection {index.default_collection!r}")
    return EXIT_OK


def cmd_remove(index: Any, args: argparse.Namespace) -> int:
    for name in index.remove(args.file):
        print(f"removed {name} from collection {index.default_collection!r}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "ingest": cmd_ingest,
    "status": cmd_status,
    "search": cmd_search,
    "remove": cmd_remove,
    "records": cmd_records,
    "ask": cmd_ask,
    "eval": cmd_eval,
}


# --- progress -----------------------------------------------------------------------------------------


@contextmanager
def progress_display(quiet: bool = False) -> Iterator[Callable[[Any], None] | None]:
    """A progress bar on a terminal; one line per file otherwise (logs, CI); nothing when quiet."""
    if quiet:
        yield None
        return
    if not sys.stderr.isatty():
        last_file = None

        def log_line(state: Any) -> None:
            nonlocal last_file
            # Called before and after each file (and per batch of chunks): one line per file start.
            if state.current != last_file and state.files_done < state.files_total:
                last_file = state.current
                elapsed = time.monotonic() - state.started
                print(
                    f"[{state.files_done + 1}/{state.files_total}] {state.current} "
                    f"({state.chunks_done} chunks so far, {elapsed:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )

        yield log_line
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]indexing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files · {task.fields[chunks]} chunks · {task.fields[rate]} chunks/s"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[current]}"),
        transient=True,
    ) as bar:
        task = bar.add_task("ingest", total=None, chunks=0, rate="0.0", current="")

        def update(state: Any) -> None:
            elapsed = max(time.monotonic() - state.started, 1e-6)
            bar.update(
                task,
                total=state.files_total,
                completed=state.files_done,
                chunks=state.chunks_done,
                rate=f"{state.chunks_done / elapsed:.1f}",
                current=state.current[-40:],
            )

        yield update
