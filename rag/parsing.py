"""Runs the loaders in a child process, so a file that hangs, recurses or eats memory is stopped and reported.

The child is a plain `python -m rag.parsing` subprocess speaking pickle over its stdin/stdout; unlike
multiprocessing's spawn, it never re-imports the caller's main script (a Chainlit app, a benchmark).
"""

from __future__ import annotations

import pickle
import select
import subprocess
import sys
import threading
from typing import IO, Any

from rag.errors import FileRefused
from rag.loaders import LoadedFile, load_bytes

MEMORY_LIMIT_MB = 3072


def serve(reader: IO[bytes], writer: IO[bytes], memory_limit_mb: int) -> None:
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
            answer = ("ok", load_bytes(data, name))
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

    def __init__(self, timeout_s: float, memory_limit_mb: int = MEMORY_LIMIT_MB) -> None:
        self.timeout_s = timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "rag.parsing", str(self.memory_limit_mb)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self._process

    def parse(self, data: bytes, name: str) -> LoadedFile:
        """Parse in the child; raise FileRefused on a bad file, a timeout or a crashed parser."""
        with self._lock:
            process = self._start()
            assert process.stdin is not None and process.stdout is not None
            try:
                pickle.dump((data, name), process.stdin)
                process.stdin.flush()
                # poll, not select: select() cannot watch a descriptor numbered 1024 or more,
                # which a busy app process (sockets, stores, models) reaches.
                watch = select.poll()
                watch.register(process.stdout, select.POLLIN)
                if not watch.poll(self.timeout_s * 1000):
                    self._kill()
                    raise FileRefused(
                        name,
                        f"parsing took longer than {self.timeout_s:g} s and was stopped "
                        "(limit RAG_PARSE_TIMEOUT_S); the file may be damaged or very large",
                    )
                status, payload = pickle.load(process.stdout)
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
            self._process.kill()
            self._process.wait(timeout=10)
            self._close_pipes(self._process)
        self._process = None

    @staticmethod
    def _close_pipes(process: subprocess.Popen[bytes]) -> None:
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()

    def close(self) -> None:
        with self._lock:
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


if __name__ == "__main__":
    answers = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print() in a parser must not corrupt the answers
    serve(sys.stdin.buffer, answers, int(sys.argv[1]) if len(sys.argv) > 1 else MEMORY_LIMIT_MB)
