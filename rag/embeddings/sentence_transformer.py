"""Any sentence-transformers model on torch (the optional `transformers` extra): a local folder or one in the Hugging Face cache."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from pydantic import PrivateAttr

from rag.config import Settings
from rag.embeddings.base import InProcessEmbedding
from rag.errors import ConfigError
from rag.runtime import MODEL_LOADING

# The optional extra `transformers` (pyproject.toml), left out of the default install because the
# bundled models do not need it.
TRANSFORMERS_MODULES = ("torch", "sentence_transformers", "transformers")
TRANSFORMERS_INSTALL = "pip install -c requirements-dev.lock -e '.[transformers]'"


def build(settings: Settings, name: str) -> SentenceTransformerEmbedding:
    # A local folder, or a model already in the Hugging Face cache (read offline). Said at start,
    # before anything is indexed: find_spec looks for the packages without importing them.
    if not all(importlib.util.find_spec(module) for module in TRANSFORMERS_MODULES):
        raise transformers_missing(name)
    return SentenceTransformerEmbedding(
        model_name=name,
        model_path=name,
        encode_batch_size=settings.embed_batch_size,
        threads=settings.embed_threads,
    )


class SentenceTransformerEmbedding(InProcessEmbedding):
    """A sentence-transformers model run in-process on CPU (torch), loaded on first use, vectors
    normalised."""

    model_path: str
    encode_batch_size: int = 32
    threads: int = 0
    _model: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "SentenceTransformerEmbedding"

    def load(self) -> Any:
        if self._model is None:
            with MODEL_LOADING:  # one model load at a time in this process: see rag.runtime
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    try:
                        import torch
                        from sentence_transformers import SentenceTransformer
                    except ModuleNotFoundError as error:
                        if (error.name or "").split(".")[0] not in TRANSFORMERS_MODULES:
                            raise
                        raise transformers_missing(self.model_name) from error

                    if self.threads:
                        torch.set_num_threads(self.threads)
                    self._model = SentenceTransformer(self.model_path, device="cpu")
        return self._model

    @property
    def dimension(self) -> int:
        return int(self.load().get_embedding_dimension())

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self.load().encode(
            texts,
            batch_size=self.encode_batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()


def transformers_missing(name: str) -> ConfigError:
    """The one line for a sentence-transformers model when the optional extra is not installed."""
    return ConfigError(
        f"RAG_EMBED_MODEL={name} is a sentence-transformers model, which needs torch and "
        "sentence-transformers (not in the default install): run "
        f"`{TRANSFORMERS_INSTALL}` in the project folder, or use bundled:all-MiniLM-L6-v2 "
        f"or ollama:MODEL"
    )
