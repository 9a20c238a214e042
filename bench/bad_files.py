"""Bad-file benchmark: time to a verdict for every malformed corpus PDF, ours against naive pypdf.

    .venv/bin/python bench/bad_files.py [--timeout 120] [--baseline-timeout 300] [--json]

For each PDF in ../shared/corpus/pdfs/bad:

  (a) ours: the parse worker (`rag.parsing.ParseWorker`, a child process with the product's time
      and memory limits) reading the file as `rag ingest` does: the verdict (indexed pages, or the
      refusal's reason) and the seconds to it, the worker restarted when a limit stopped it;
  (b) baseline: what a naive loader does, `PdfReader(file).pages[i].extract_text()` for every page,
      each file in a fresh Python process (so a hang or crash costs only that run), with no limit
      of ours; bounded only by --baseline-timeout, with its own peak RSS.

Reported side by side per file, then: files that got a verdict within the limit (goal: all),
crashes or hangs of the caller (goal: 0), pages of text kept (a naive loader loses a whole file at
its first broken page), total and worst seconds of each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
sys.path.insert(0, str(ROOT))

from common import say  # noqa: E402

from rag.cli import offline_environment  # noqa: E402

offline_environment()

# The naive loader, run in its own process: prints (outcome, pages with text, peak RSS in MB).
NAIVE = """
import json, resource, sys, warnings, logging
warnings.simplefilter("ignore")
logging.disable(logging.CRITICAL)
from pypdf import PdfReader
outcome, pages = "ok", 0
try:
    reader = PdfReader(sys.argv[1])
    for page in reader.pages:
        pages += bool((page.extract_text() or "").strip())
except Exception as error:
    outcome = f"raised {type(error).__name__}"
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps([outcome, pages, round(peak)]))
"""


@dataclass
class Row:
    file: str
    ours: str
    ours_s: float
    ours_pages: int
    naive: str
    naive_s: float
    naive_pages: int
    naive_peak_mb: int | None


def ours(path: Path, timeout_s: float) -> tuple[str, float, int]:
    from rag.errors import FileRefused
    from rag.parsing import ParseWorker

    with ParseWorker(timeout_s) as worker:
        started = time.perf_counter()
        try:
            loaded = worker.parse(path.read_bytes(), path.name)
        except FileRefused as refused:
            return f"refused: {refused.reason}", time.perf_counter() - started, 0
        verdict = f"indexed {len(loaded.pages)} pages" + (" (+warning)" * bool(loaded.warnings))
        return verdict, time.perf_counter() - started, len(loaded.pages)


def naive(path: Path, timeout_s: float) -> tuple[str, float, int, int | None]:
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", NAIVE, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"no answer in {timeout_s:g} s", time.perf_counter() - started, 0, None
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return f"crashed (exit {done.returncode})", seconds, 0, None
    outcome, pages, peak = json.loads(done.stdout.strip().splitlines()[-1])
    if outcome != "ok":  # a naive loader keeps nothing of a file that raised half-way
        return outcome, seconds, 0, peak
    return f"{pages} pages", seconds, pages, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=120.0, help="our parse limit (s)")
    parser.add_argument("--baseline-timeout", type=float, default=300.0, help="naive run cap (s)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()

    files = sorted((CORPUS / "pdfs" / "bad").glob("*.pdf"))
    rows: list[Row] = []
    for number, path in enumerate(files, 1):
        say(f"[{number}/{len(files)}] {path.name}")
        verdict, seconds, pages = ours(path, args.timeout)
        outcome, naive_s, naive_pages, peak = naive(path, args.baseline_timeout)
        rows.append(Row(path.name, verdict, seconds, pages, outcome, naive_s, naive_pages, peak))

    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=1))
        return 0
    width = max(len(row.file) for row in rows)
    print(
        f"{'file':<{width}}  {'ours: verdict':<58} {'s':>6}   {'naive pypdf':<30} {'s':>6} {'MB':>5}"
    )
    for row in rows:
        peak = f"{row.naive_peak_mb}" if row.naive_peak_mb is not None else "-"
        print(
            f"{row.file:<{width}}  {row.ours[:58]:<58} {row.ours_s:6.1f}   "
            f"{row.naive[:30]:<30} {row.naive_s:6.1f} {peak:>5}"
        )
    within = sum(row.ours_s <= args.timeout + 5 for row in rows)
    stuck = sum(row.naive.startswith(("no answer", "crashed")) for row in rows)
    print()
    print(f"{'measure':<40} {'ours':>12} {'naive':>12}   goal")
    print(
        f"{'files with a verdict within the limit':<40} {within:>9}/{len(rows)} "
        f"{len(rows) - stuck:>9}/{len(rows)}   all (ours)  {'PASS' if within == len(rows) else 'FAIL'}"
    )
    print(f"{'caller crashed or hung':<40} {0:>12} {stuck:>12}   0 (ours)    PASS")
    print(
        f"{'pages of text kept':<40} {sum(r.ours_pages for r in rows):>12} "
        f"{sum(r.naive_pages for r in rows):>12}   (damaged files keep their readable pages)"
    )
    print(
        f"{'total seconds':<40} {sum(r.ours_s for r in rows):>12.1f} "
        f"{sum(r.naive_s for r in rows):>12.1f}"
    )
    print(
        f"{'worst seconds':<40} {max(r.ours_s for r in rows):>12.1f} "
        f"{max(r.naive_s for r in rows):>12.1f}   <= {args.timeout:g} (ours)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
