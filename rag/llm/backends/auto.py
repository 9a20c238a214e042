"""RAG_LLM=auto (the default): Ollama when it answers and has the model, else the embedded one."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rag.config import Settings
from rag.errors import BackendError
from rag.llm import Backend
from rag.llm.backends import embedded, ollama

if TYPE_CHECKING:
    from llama_index.core.llms import LLM

logger = logging.getLogger(__name__)

# How long looking for Ollama may take before the embedded model is used.
AUTO_HEALTH_TIMEOUT_S = 2.0


def build_auto(settings: Settings) -> LLM:
    base = settings.ollama_base_url
    try:
        pulled = ollama.ollama_models(base, min(AUTO_HEALTH_TIMEOUT_S, settings.llm_timeout_s))
    except BackendError as exc:
        logger.info("auto LLM: no Ollama, using the embedded model (%s)", exc)
        return embedded.build_embedded(settings)
    try:
        ollama.check_ollama_model(base, settings.ollama_model, pulled)
    except BackendError as exc:
        logger.warning("auto LLM: using the embedded model: %s", exc)
        return embedded.build_embedded(settings)
    return ollama.ollama_llm(settings)


# It builds the others' LLMs and owns none of them: they are described as what they are.
BACKEND = Backend(
    build=build_auto,
    owns=lambda llm: False,
    limit_output=lambda llm, max_tokens: llm,
)
