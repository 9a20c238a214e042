"""RAG_LLM=ollama: Ollama's chat API, after checking the server is up and has the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rag.config import Settings, redact_url
from rag.errors import BackendError, RagError
from rag.llm import Backend
from rag.llm.http import HEALTH_TIMEOUT_S, get_json

if TYPE_CHECKING:
    from llama_index.core.llms import LLM


def ollama_model_matches(wanted: str, available: str) -> bool:
    """Whether an Ollama tag names the wanted model ("llama3.2" is "llama3.2:latest")."""
    return _with_tag(wanted) == _with_tag(available)


def _with_tag(name: str) -> str:
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def ollama_models(base_url: str, timeout: float = HEALTH_TIMEOUT_S) -> list[str]:
    """The models pulled into the Ollama server at `base_url`; BackendError if it does not answer."""
    url = f"{base_url.rstrip('/')}/api/tags"
    data = get_json(
        url,
        timeout,
        unreachable=lambda reason: (
            f"Ollama is not reachable at {redact_url(base_url)}: {reason}. "
            "Start it with `ollama serve` or set OLLAMA_BASE_URL."
        ),
        what="Ollama",
    )
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise BackendError(
            f"{redact_url(url)} did not answer like Ollama (no model list); check OLLAMA_BASE_URL"
        )
    return [
        str(entry.get(key))
        for entry in models
        if isinstance(entry, dict)
        for key in ("name", "model")
        if entry.get(key)
    ]


def check_ollama_model(base_url: str, model: str, pulled: list[str]) -> None:
    """Raise BackendError, saying how to pull it, unless `model` is among `pulled`."""
    if not any(ollama_model_matches(model, name) for name in pulled):
        names = ", ".join(sorted(set(pulled))) or "none"
        raise BackendError(
            f"Ollama at {redact_url(base_url)} has no model {model} (pulled: {names}); "
            f"run `ollama pull {model}` or set RAG_OLLAMA_MODEL."
        )


def check_ollama(base_url: str, model: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Raise BackendError unless an Ollama server answers at `base_url` and has `model` pulled."""
    check_ollama_model(base_url, model, ollama_models(base_url, timeout))


def build_ollama(settings: Settings) -> LLM:
    """Ollama's chat API, after checking the server is up and the model pulled."""
    check_ollama(
        settings.ollama_base_url,
        settings.ollama_model,
        timeout=min(HEALTH_TIMEOUT_S, settings.llm_timeout_s),
    )
    return ollama_llm(settings)


def ollama_llm(settings: Settings) -> LLM:
    from llama_index.llms.ollama import Ollama

    return Ollama(
        model=settings.ollama_model,
        base_url=settings.ollama_base_url.rstrip("/"),
        request_timeout=settings.llm_timeout_s,
        temperature=settings.temperature,
        # Given, so the client does not ask /api/show for it on every metadata read.
        context_window=settings.context_window,
        additional_kwargs={"num_predict": settings.max_new_tokens},
    )


def owns(llm: LLM) -> bool:
    return type(llm).__module__.startswith("llama_index.llms.ollama")


def limit_output(llm: LLM, max_tokens: int) -> LLM:
    extra = getattr(llm, "additional_kwargs", {})
    return llm.model_copy(update={"additional_kwargs": {**extra, "num_predict": max_tokens}})


def error(exc: BaseException, llm: LLM) -> RagError | None:
    if getattr(exc, "status_code", None) == 404:
        model = getattr(llm, "model", "?")
        return BackendError(
            f"Ollama at {redact_url(getattr(llm, 'base_url', ''))} has no model {model}; "
            f"run `ollama pull {model}`"
        )
    return None


BACKEND = Backend(
    build=build_ollama,
    owns=owns,
    limit_output=limit_output,
    server=lambda llm: getattr(llm, "base_url", None),
    error=error,
)
