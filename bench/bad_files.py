"""Bad-file benchmark: time to a verdict for every malformed corpus PDF, ours against naive pypdf.

    .venv/bin/python bench/bad_files.py [--timeout 120] [--baseline-timeout 300]
                                        [--caller-deadline S] [--only GLOB ...] [--json]

For each PDF in ../shared/corpus/pdfs/bad (or those whose name matches an --only pattern), two
calling processes, each started fresh so that a crash or a hang costs that run only:

  (a) ours: a caller that reads the file and hands it to the parse worker
      (`rag.parsing.ParseWorker`, a child process with the product's time and memory limits) as
      `rag ingest` does, and prints the verdict (indexed pages, or the refusal's reason) and the
      seconds to it;
  (b) baseline: what a naive loader does, `PdfReader(file).pages[i].extract_text()` for every page,
      in the caller itself, with no limit of ours; with its own peak RSS.

Each caller is watched from outside: it crashed if it died, exited non-zero or printed no verdict,
and it hung if it gave none by its deadline (ours: --caller-deadline, by default the parse limit
plus 30 s for start-up and a worker restart; baseline: --baseline-timeout), when it is killed with
everything it started.

Reported side by side per file, then: files that got a verdict within the limit (goal: all),
callers that crashed or hung (goal: 0 for ours), pages of text kept (a naive loader loses a whole
file at its first broken page), total and worst seconds of each. Exit 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
sys.path.insert(0, str(ROOT))

from common import say, verdict  # noqa: E402

from rag.cli import offline_environment  # noqa: E402

offline_environment()

# Python start-up and imports of a caller, and a worker killed at the limit and restarted: what a
# caller of ours may need beyond the parse limit before it counts as hung.
CALLER_GRACE_S = 30.0
# A verdict within the limit: the worker is killed at the limit, which takes a moment.
VERDICT_SLACK_S = 5.0

# Our caller, in its own process: prints [verdict, seconds to it, pages indexed].
OURS = """
import json, sys, time
from pathlib import Path
from rag.errors import FileRefused
from rag.parsing import ParseWorker
path, timeout_s = Path(sys.argv[1]), float(sys.argv[2])
with ParseWorker(timeout_s) as worker:
    started = time.perf_counter()
    try:
        loaded = worker.parse(path.read_bytes(), path.name)
        pages = len(loaded.pages)
        verdict = f"indexed {pages} pages" + " (+warning)" * bool(loaded.warnings)
    except FileRefused as refused:
        verdict, pages = f"refused: {refused.reason}", 0
    seconds = time.perf_counter() - started
print(json.dumps([verdict, seconds, pages]))
"""

# The naive loader, run in its own process: prints [outcome, pages with text, peak RSS in MB].
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
class Caller:
    """How one calling process ended, seen from outside it."""

    ended: str  # "ok", "crashed (exit N)" or "hung (killed after N s)"
    seconds: float  # wall time of the process
    printed: Any = None  # its last stdout line, parsed as JSON, when it ended "ok"

    @property
    def survived(self) -> bool:
        return self.ended == "ok"


def run_caller(script: str, args: list[str], deadline_s: float) -> Caller:
    """Run `python -c script *args` in its own process group, killed with all it started at the
    deadline; it survived if it exited 0 with a JSON last line."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: a hung caller's parse worker is killed with it
    )
    try:
        stdout, stderr = process.communicate(timeout=deadline_s)
        hung = False
    except subprocess.TimeoutExpired:
        hung = True
    kill_group(process.pid)  # either way: nothing a caller started (a parse worker) outlives it
    if hung:
        process.communicate()
        return Caller(f"hung (killed after {deadline_s:g} s)", time.perf_counter() - started)
    seconds = time.perf_counter() - started
    lines = stdout.strip().splitlines()
    try:
        printed = json.loads(lines[-1]) if process.returncode == 0 and lines else None
    except json.JSONDecodeError:
        printed = None
    if printed is None:
        last = (stderr.strip().splitlines() or [""])[-1][:80]
        return Caller(f"crashed (exit {process.returncode}{': ' + last if last else ''})", seconds)
    return Caller("ok", seconds, printed)


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pid, signal.SIGKILL)


@dataclass
class Row:
    file: str
    ours: str
    ours_s: float
    ours_pages: int
    ours_caller: str
    naive: str
    naive_s: float
    naive_pages: int
    naive_peak_mb: int | None
    naive_caller: str


def ours(path: Path, timeout_s: float, deadline_s: float) -> tuple[str, float, int, Caller]:
    caller = run_caller(OURS, [str(path), f"{timeout_s:g}"], deadline_s)
    if not caller.survived:
        return f"caller {caller.ended}", caller.seconds, 0, caller
    verdict, seconds, pages = caller.printed
    return verdict, seconds, pages, caller


def naive(path: Path, timeout_s: float) -> tuple[str, float, int, int | None, Caller]:
    caller = run_caller(NAIVE, [str(path)], timeout_s)
    if not caller.survived:
        return caller.ended, caller.seconds, 0, None, caller
    outcome, pages, peak = caller.printed
    if outcome != "ok":  # a naive loader keeps nothing of a file that raised half-way
        return outcome, caller.seconds, 0, peak, caller
    return f"{pages} pages", caller.seconds, pages, peak, caller


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=120.0, help="our parse limit (s)")
    parser.add_argument("--baseline-timeout", type=float, default=300.0, help="naive run cap (s)")
    parser.add_argument(
        "--caller-deadline",
        type=float,
        default=None,
        help=f"seconds our caller may take per file before it counts as hung "
        f"(default: --timeout + {CALLER_GRACE_S:g})",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="GLOB",
        help="only the bad PDFs whose name matches (repeatable), e.g. --only 'broken-*'",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    deadline_s = args.caller_deadline
    if deadline_s is None:
        deadline_s = args.timeout + CALLER_GRACE_S

    files = sorted((CORPUS / "pdfs" / "bad").glob("*.pdf"))
    if args.only:
        files = [f for f in files if any(fnmatch.fnmatch(f.name, p) for p in args.only)]
    if not files:
        parser.error(f"no bad PDFs to read in {CORPUS / 'pdfs' / 'bad'} (check --only)")
    rows: list[Row] = []
    for number, path in enumerate(files, 1):
        say(f"[{number}/{len(files)}] {path.name}")
        verdict_, seconds, pages, our_caller = ours(path, args.timeout, deadline_s)
        outcome, naive_s, naive_pages, peak, naive_caller = naive(path, args.baseline_timeout)
        rows.append(
            Row(
                path.name,
                verdict_,
                seconds,
                pages,
                our_caller.ended,
                outcome,
                naive_s,
                naive_pages,
                peak,
                naive_caller.ended,
            )
        )

    within = sum(r.ours_caller == "ok" and r.ours_s <= args.timeout + VERDICT_SLACK_S for r in rows)
    stuck = sum(row.ours_caller != "ok" for row in rows)
    naive_stuck = sum(row.naive_caller != "ok" for row in rows)
    ok = within == len(rows) and stuck == 0
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=1))
        return 0 if ok else 1
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
    print()
    print(f"{'measure':<40} {'ours':>12} {'naive':>12}   goal")
    print(
        f"{'files with a verdict within the limit':<40} {within:>9}/{len(rows)} "
        f"{len(rows) - naive_stuck:>9}/{len(rows)}   all (ours)  {verdict(within == len(rows))}"
    )
    print(
        f"{'caller crashed or hung':<40} {stuck:>12} {naive_stuck:>12}   0 (ours)    "
        f"{verdict(stuck == 0)}"
    )
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
    for row in rows:  # a dead caller's whole story, which the table cuts
        for who, ended in (("ours", row.ours_caller), ("naive", row.naive_caller)):
            if ended != "ok":
                print(f"  {row.file}: {who}: caller {ended}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
