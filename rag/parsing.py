"""Runs the loaders in a child process, so a file that hangs, recurses or eats memory is stopped and reported."""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.connection import Connection
from typing import Any

from rag.errors import FileRefused
from rag.loaders import LoadedFile, load_bytes

MEMORY_LIMIT_MB = 3072


def _serve(conn: Connection, memory_limit_mb: int) -> None:
    """Child loop: receive (bytes, name), answer ("ok", LoadedFile) or ("refused", reason)."""
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
            data, name = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", load_bytes(data, name)))
        except FileRefused as refused:
            conn.send(("refused", refused.reason))
        except MemoryError:
            conn.send(("refused", f"parsing needed more than {memory_limit_mb} MB of memory"))
        except Exception as error:  # noqa: BLE001 - report any parser failure as this file's reason
            conn.send(("refused", f"could not be parsed ({type(error).__name__}: {error})"[:300]))


class ParseWorker:
    """One long-lived parser process; killed and restarted when a file runs past the time limit."""

    def __init__(self, timeout_s: float, memory_limit_mb: int = MEMORY_LIMIT_MB) -> None:
        self.timeout_s = timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._context = multiprocessing.get_context("spawn")  # no fork of a process holding torch
        self._process: Any = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> Connection:
        if self._process is None or not self._process.is_alive():
            parent, child = self._context.Pipe()
            self._process = self._context.Process(
                target=_serve, args=(child, self.memory_limit_mb), daemon=True, name="rag-parser"
            )
            self._process.start()
            child.close()
            self._conn = parent
        assert self._conn is not None
        return self._conn

    def parse(self, data: bytes, name: str) -> LoadedFile:
        """Parse in the child; raise FileRefused on a bad file, a timeout or a crashed parser."""
        with self._lock:
            conn = self._start()
            conn.send((data, name))
            if not conn.poll(self.timeout_s):
                self._kill()
                raise FileRefused(
                    name,
                    f"parsing took longer than {self.timeout_s:g} s and was stopped "
                    "(limit RAG_PARSE_TIMEOUT_S); the file may be damaged or very large",
                )
            try:
                status, payload = conn.recv()
            except (EOFError, OSError):
                self._kill()
                raise FileRefused(name, "the parser crashed on this file") from None
        if status == "ok":
            return payload
        raise FileRefused(name, payload)

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join(timeout=5)
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()  # the child sees EOF and exits
            if self._process is not None:
                self._process.join(timeout=2)
                if self._process.is_alive():
                    self._process.kill()
            self._process = self._conn = None
