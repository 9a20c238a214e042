"""Runs the loaders in a child process, so a file that hangs, recurses or eats memory is stopped and reported.

The child is a plain `python -m rag.parsing` subprocess speaking pickle over its stdin/stdout; unlike
multiprocessing's spawn, it never re-imports the caller's main script (a Chainlit app, a benchmark).
How it reads scans (rag.ocr.Ocr, resolved from the settings by the caller) is passed on its command
line; the tesseract processes it starts for OCR are in its process group, so they stop with it, and
their temporary files are in a folder of its own, removed with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

from rag.errors import FileRefused
from rag.loaders import LoadedFile, load_bytes
from rag.ocr import Ocr

MEMORY_LIMIT_MB = 3072


def serve(
    reader: IO[bytes], writer: IO[bytes], memory_limit_mb: int, ocr: Ocr | None = None
) -> None:
    """Child loop: read (bytes, name), answer ("ok", LoadedFile) or ("refused", reason)."""
    import logging
    import resource
    import warnings

    # pypdf narrates every repair it makes; the user gets one line per file from us instead.
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    limit = memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        try:
            data, name = pickle.load(reader)
        except EOFError:
            return
        answer: tuple[str, Any]
        try:
            answer = ("ok", load_bytes(data, name, ocr))
        except FileRefused as refused:
            answer = ("refused", refused.reason)
        except MemoryError:
            answer = (
                "refused",
                f"parsing needed more than {memory_limit_mb} MB of memory and was stopped; "
                "the file is damaged, hostile or too large",
            )
        except Exception as error:  # noqa: BLE001 - report any parser failure as this file's reason
            answer = ("refused", f"could not be parsed ({type(error).__name__}: {error})"[:300])
        pickle.dump(answer, writer)
        writer.flush()


class ParseWorker:
    """One long-lived parser process; killed and restarted when a file runs past the time limit."""

    def __init__(
        self, timeout_s: float, memory_limit_mb: int = MEMORY_LIMIT_MB, ocr: Ocr | None = None
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.ocr = ocr  # None: the child sets OCR up itself, with rag.ocr.setup()'s defaults
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: str | None = None
        self._lock = threading.Lock()
        # The file the child is parsing and when its time is up (None: the child died taking it).
        self._pending: tuple[str, float | None] | None = None

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            command = [sys.executable, "-m", "rag.parsing", str(self.memory_limit_mb)]
            if self.ocr is not None:
                command.append(json.dumps([self.ocr.languages, self.ocr.off]))
            self._tmp = self._tmp or tempfile.mkdtemp(prefix="rag-parse-")
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                # tesseract: one thread (rag.ocr), its files in our folder, and in our group.
                env={**os.environ, "OMP_THREAD_LIMIT": "1", "TMPDIR": self._tmp},
                process_group=0,
            )
        return self._process

    def parse(self, data: bytes, name: str) -> LoadedFile:
        """Parse in the child; raise FileRefused on a bad file, a timeout or a crashed parser."""
        self.submit(data, name)
        return self.result()

    def submit(self, data: bytes, name: str) -> None:
        """Hand a file to the child, which parses it while the caller goes on (an indexer embeds
        the previous file meanwhile); `result` collects it. One file at a time."""
        with self._lock:
            if self._pending is not None:
                raise RuntimeError(f"{self._pending[0]} is still being parsed")
            process = self._start()
            assert process.stdin is not None
            try:
                pickle.dump((data, name), process.stdin)
                process.stdin.flush()
            except OSError:  # the child died (its memory limit): reported by result()
                self._kill()
                self._pending = (name, None)
                return
            self._pending = (name, time.monotonic() + self.timeout_s)

    def result(self) -> LoadedFile:
        """The submitted file, parsed; FileRefused if it is bad, timed out or crashed the parser.
        The time limit counts from `submit`."""
        with self._lock:
            if self._pending is None:
                raise RuntimeError("no file was submitted")
            (name, deadline), self._pending = self._pending, None
            try:
                if deadline is None or self._process is None or self._process.stdout is None:
                    raise EOFError
                # poll, not select: select() cannot watch a descriptor numbered 1024 or more,
                # which a busy app process (sockets, stores, models) reaches.
                watch = select.poll()
                watch.register(self._process.stdout, select.POLLIN)
                if not watch.poll(max(0.0, deadline - time.monotonic()) * 1000):
                    self._kill()
                    raise FileRefused(
                        name,
                        f"parsing took longer than {self.timeout_s:g} s and was stopped "
                        "(limit RAG_PARSE_TIMEOUT_S); the file may be damaged or very large",
                    )
                status, payload = pickle.load(self._process.stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                self._kill()
                raise FileRefused(
                    name,
                    "the parser crashed on this file (it is damaged, or built to exhaust "
                    f"the reader's memory of {self.memory_limit_mb} MB)",
                ) from None
        if status == "ok":
            return payload
        raise FileRefused(name, payload)

    def _kill(self) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):  # the child and any tesseract it runs
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=10)
            self._close_pipes(self._process)
        self._process = None
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @staticmethod
    def _close_pipes(process: subprocess.Popen[bytes]) -> None:
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()

    def close(self) -> None:
        with self._lock:
            if self._pending is not None:  # nobody will collect it: stop the child now
                self._pending = None
                self._kill()
            process, self._process = self._process, None
            if process is None:
                return
            if process.stdin is not None:
                process.stdin.close()  # the child reads EOF and exits
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            self._close_pipes(process)
            self._remove_tmp()


if __name__ == "__main__":
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() in a parser must not corrupt the answers
    serve(
        sys.stdin.buffer,
        answers,
        int(sys.argv[1]) if len(sys.argv) > 1 else MEMORY_LIMIT_MB,
        Ocr(*json.loads(sys.argv[2])) if len(sys.argv) > 2 else None,
    )
