"""An embedding model served by Ollama (RAG_EMBED_MODEL=ollama:NAME)."""

from __future__ import annotations

from llama_index.core.base.embeddings.base import BaseEmbedding

from rag.config import Settings
from rag.errors import ConfigError


def build(settings: Settings, model: str) -> BaseEmbedding:
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
