"""Small helpers the benchmarks share: progress lines, result tables, a shared models folder."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    """A time-stamped progress line on stderr (the results go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def models_cache(requested: Path | None) -> Path | None:
    """A models folder to share between runs (the embedder's ONNX graph, built once; for an older
    tree, also its converted LLM): the flag, else ./storage/models when it exists."""
    if requested is not None:
        return requested.resolve()
    default = ROOT / "storage" / "models"
    return default.resolve() if default.is_dir() else None


def finish_with(work: Path, keep: bool) -> None:
    """A bench's temp folder: kept (and named) with --keep, else removed."""
    if keep:
        say(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def add_models_cache_flag(parser: argparse.ArgumentParser) -> None:
    """--models-cache DIR, read by `models_cache`."""
    parser.add_argument(
        "--models-cache",
        type=Path,
        default=None,
        help="models folder to share (the embedder's ONNX graph); default ./storage/models if it "
        "exists",
    )


def table(rows: list[tuple[str, ...]]) -> None:
    """Print rows as aligned columns: the first row is the header, the first column the labels."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def goals_table(rows: list[tuple[str, str, str, str]]) -> None:
    """Print measures beside their goals, between rules: (measure, result, goal, verdict) rows,
    the one report format of the benches that have goals."""
    header = ("measure", "result", "goal", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    rule = "  ".join("-" * width for width in widths)
    print(rule)
    for row in [header, None, *rows]:
        if row is None:
            print(rule)
            continue
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(rule)
