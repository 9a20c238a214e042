"""RAG_LLM=openai: any OpenAI-compatible chat server (LM Studio, vLLM, llama.cpp server...)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rag.config import Settings, redact_url
from rag.errors import BackendError, RagError
from rag.llm import Backend, timed_out, unreachable
from rag.llm.http import HEALTH_TIMEOUT_S, get_json

if TYPE_CHECKING:
    from llama_index.core.llms import LLM

logger = logging.getLogger(__name__)


def check_openai(
    base_url: str, model: str, api_key: str, timeout: float = HEALTH_TIMEOUT_S
) -> None:
    """Raise BackendError unless an OpenAI-compatible server answers `GET {base_url}/models`.

    A model missing from a non-empty list is only logged: several servers (llama.cpp, LM Studio
    with one model loaded) answer to any model name.
    """
    url = f"{base_url.rstrip('/')}/models"
    data = get_json(
        url,
        timeout,
        unreachable=lambda reason: (
            f"The OpenAI-compatible server is not reachable at {redact_url(base_url)}: {reason}. "
            "Start it (LM Studio, vLLM, llama.cpp server) or set RAG_OPENAI_BASE_URL."
        ),
        what="The OpenAI-compatible server",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise BackendError(
            f"{redact_url(url)} did not answer like an OpenAI-compatible server (no model list); "
            "check RAG_OPENAI_BASE_URL (it usually ends in /v1)"
        )
    ids = [str(entry.get("id")) for entry in models if isinstance(entry, dict) and entry.get("id")]
    if not ids:
        raise BackendError(
            f"the OpenAI-compatible server at {redact_url(base_url)} serves no model; load one"
        )
    if model not in ids:
        logger.warning(
            "%s does not list model %s (it lists %s)", redact_url(url), model, ", ".join(ids)
        )


def build_openai(settings: Settings) -> LLM:
    """An OpenAI-compatible chat API, after checking the server answers."""
    check_openai(
        settings.openai_base_url,
        settings.openai_model,
        settings.openai_api_key,
        timeout=min(HEALTH_TIMEOUT_S, settings.llm_timeout_s),
    )
    from llama_index.llms.openai_like import OpenAILike

    return OpenAILike(
        api_base=settings.openai_base_url.rstrip("/"),
        model=settings.openai_model,
        api_key=settings.openai_api_key,
        is_chat_model=True,
        context_window=settings.context_window,
        max_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        # The LLM request timeout is one setting for every backend.
        timeout=settings.llm_timeout_s,
        max_retries=1,
    )


def owns(llm: LLM) -> bool:
    return type(llm).__module__.startswith("llama_index.llms.openai")


def error(exc: BaseException, llm: LLM) -> RagError | None:
    import openai

    if isinstance(exc, openai.APITimeoutError):  # before its parent, APIConnectionError
        return timed_out(llm)
    if isinstance(exc, openai.APIConnectionError):
        return unreachable(llm, exc)
    return None


BACKEND = Backend(
    build=build_openai,
    owns=owns,
    limit_output=lambda llm, max_tokens: llm.model_copy(update={"max_tokens": max_tokens}),
    server=lambda llm: getattr(llm, "api_base", None),
    error=error,
)
