"""Small helpers the benchmarks share: progress lines and where the converted embedded model lives."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    """A time-stamped progress line on stderr (the results go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def models_cache(requested: Path | None) -> Path | None:
    """Where a converted embedded model can be reused from: the flag, else ./storage/models."""
    if requested is not None:
        return requested.resolve()
    default = ROOT / "storage" / "models"
    return default.resolve() if default.is_dir() else None
