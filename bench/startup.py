"""Start-up benchmark: cold-process times of the CLI and the app, this tree beside an older one.

    .venv/bin/python bench/startup.py [--before REF] [--runs N] [--models-cache DIR]

In one run, for this working tree ("after") and a git worktree of REF ("before", default: the
commit before the embedder moved to onnxruntime), each timed N times in a fresh process:

  rag --help       until the process exits
  rag status       until the process exits
  rag search       until the process exits (JSON, top 5, over the menus and job postings)
  rag ask          until the first byte of the answer on stdout (the embedded model: before,
                   transformers on the converted model; after, the shipped GGUF on ik_llama.cpp)
  app /healthz     from `chainlit run app.py` until /healthz answers 200

Both trees use one index (built once with this tree's `rag ingest`; the embedder's fingerprint is
the same) and one models folder (`--models-cache`, copied: the embedder's ONNX graph, and the older
tree's converted embedded model, which it otherwise makes in its first, unmeasured run; this tree
runs the shipped GGUF as it is). Prints the median and the fastest run of each, and whether the
process imported torch.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, add_models_cache_flag, models_cache, say, table

from testkit.app import free_port

CORPUS = ROOT.parent / "shared" / "corpus"
BEFORE = "338408b"  # the last commit with the sentence-transformers (torch) embedder
PYTHON = ROOT / ".venv" / "bin" / "python"
QUESTION = "What does a Chimay Bleue cost at the FOSDEM bar?"
TORCH_PROBE = (
    "import atexit, sys; atexit.register(lambda: sys.stderr.write("
    "'\\nTORCH=%s\\n' % ('torch' in sys.modules)))"
)


def cli(
    tree: Path, env: dict[str, str], *args: str, until_output: bool = False
) -> tuple[float, bool]:
    """Seconds until `rag ARGS` exits (or first prints), and whether it imported torch."""
    code = f"{TORCH_PROBE}; import runpy; sys.argv = ['rag', *{list(args)!r}]; runpy.run_module('rag', run_name='__main__')"
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(PYTHON), "-c", code], cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    first = process.stdout.read(1) if until_output else b""
    seconds = time.perf_counter() - started
    _, errors = process.communicate(timeout=600)
    if not until_output:
        seconds = time.perf_counter() - started
    if process.returncode not in (0, None) or (until_output and not first):
        raise SystemExit(f"rag {' '.join(args)} failed in {tree}: {errors.decode()[-800:]}")
    return seconds, b"TORCH=True" in errors


def app_ready(tree: Path, env: dict[str, str]) -> tuple[float, bool | None]:
    """Seconds from starting the app until /healthz answers 200."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "chainlit"),
            "run",
            "app.py",
            "--headless",
            "--port",
            str(port),
        ],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                    if reply.status == 200:
                        return time.perf_counter() - started, None  # not probed
            except OSError:
                pass
            if process.poll() is not None or time.perf_counter() - started > 300:
                raise SystemExit(f"the app in {tree} did not become ready")
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)


def environment(tree: Path, storage: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    # The tree's own `rag` package first: the editable install points at this working tree.
    env.update(
        PYTHONPATH=str(tree), RAG_STORAGE_DIR=str(storage), RAG_DATA_DIR=str(storage / "data")
    )
    env.update(RAG_LLM="embedded", HF_HUB_OFFLINE="1", CHAINLIT_APP_ROOT=str(tree))
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="git ref of the older tree")
    parser.add_argument("--runs", type=int, default=3)
    add_models_cache_flag(parser)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rag-startup-"))
    before_tree = work / "before"
    try:
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before_tree), args.before],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        storage = work / "storage"
        (storage / "data").mkdir(parents=True)
        for folder in ("menus", "jobs"):
            for path in (CORPUS / folder).iterdir():
                shutil.copy(path, storage / "data" / path.name)
        cache = models_cache(args.models_cache)
        if cache is not None:
            shutil.copytree(cache, storage / "models", dirs_exist_ok=True)
        say("indexing the menus and job postings with this tree")
        subprocess.run(
            [str(PYTHON), "-m", "rag", "ingest", "--json"],
            cwd=ROOT,
            check=True,
            env=environment(ROOT, storage),
            capture_output=True,
        )
        steps = {
            "rag --help": lambda tree, env: cli(tree, env, "--help"),
            "rag status": lambda tree, env: cli(tree, env, "status"),
            "rag search": lambda tree, env: cli(tree, env, "search", QUESTION, "--json"),
            "rag ask (first byte)": lambda tree, env: cli(
                tree, env, "ask", QUESTION, until_output=True
            ),
            "app until /healthz": app_ready,
        }
        rows = [
            (
                "step",
                "before median s",
                "before best s",
                "after median s",
                "after best s",
                "torch before/after",
            )
        ]
        for name, step in steps.items():
            cells: list[str] = []
            torch: list[str] = []
            for label, tree in (("before", before_tree), ("after", ROOT)):
                env = environment(tree, storage)
                step(tree, env)  # once unmeasured: the OS file cache is warm for both trees alike
                times: list[float] = []
                imported: bool | None = None
                for run in range(args.runs):
                    say(f"{name} ({label}) run {run + 1}/{args.runs}")
                    seconds, imported = step(tree, env)
                    times.append(seconds)
                cells += [f"{statistics.median(times):.2f}", f"{min(times):.2f}"]
                torch.append({True: "yes", False: "no", None: "-"}[imported])
            rows.append((name, *cells, "/".join(torch)))
        print(
            f"\n== cold start: {args.before} (before) vs this tree (after), {args.runs} runs each"
        )
        table(rows)
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(before_tree)],
            cwd=ROOT,
            capture_output=True,
        )
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
