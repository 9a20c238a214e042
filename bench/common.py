"""Small helpers the benchmarks share: progress lines, result tables, a shared models folder."""

from __future__ import annotations

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


def table(rows: list[tuple[str, ...]]) -> None:
    """Print rows as aligned columns: the first row is the header, the first column the labels."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells).rstrip())
