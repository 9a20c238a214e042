"""The LLM factory: RAG_LLM names a module of rag.llm.backends, whose Backend builds its LLMs."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from rag.errors import BackendError, ConfigError, RagError

if TYPE_CHECKING:  # LlamaIndex loads with the first backend: `rag status` never needs it
    from llama_index.core.llms import LLM

    from rag.config import Settings

__all__ = [
    "Backend",
    "as_backend_error",
    "backend",
    "backend_names",
    "build_llm",
    "describe_llm",
    "limit_output",
]

BACKENDS_PACKAGE = "rag.llm.backends"


def _no_error(exc: BaseException, llm: LLM) -> RagError | None:
    return None


def _no_server(llm: LLM) -> str | None:
    return None


def _model_field(llm: LLM) -> str:
    return str(getattr(llm, "model", None) or getattr(llm, "model_name", None) or "?")


@dataclass(frozen=True)
class Backend:
    """One way to reach an LLM. A module in rag/llm/backends/ defines one as `BACKEND`; the
    module's name is the RAG_LLM value that picks it, so a new backend is one new module."""

    # The LLM, checked to be reachable (a server) or ready to load (in-process): BackendError
    # when a server is down or lacks the model, ConfigError when a package is missing.
    build: Callable[[Settings], LLM]
    # Whether an LLM is one this backend built.
    owns: Callable[[LLM], bool]
    # The same LLM answering at most N tokens.
    limit_output: Callable[[LLM, int], LLM]
    # Its model's name (LlamaIndex's LLMs call the field `model`).
    model: Callable[[LLM], str] = _model_field
    # Where it answers, for messages (a server's URL), if anywhere.
    server: Callable[[LLM], str | None] = _no_server
    # What its client raises, as one of our errors (`timed_out`, `unreachable`...); None: the
    # generic reading of `as_backend_error` applies.
    error: Callable[[BaseException, LLM], RagError | None] = _no_error


@cache
def backend_names() -> list[str]:
    """The RAG_LLM values: the modules of rag.llm.backends (listed, not imported)."""
    package = importlib.import_module(BACKENDS_PACKAGE)
    return sorted(
        module.name
        for module in pkgutil.iter_modules(package.__path__)
        if not module.name.startswith("_")
    )


def backend(name: str) -> Backend:
    """The backend RAG_LLM=`name` picks."""
    if name not in backend_names():
        raise ConfigError(f"unknown LLM backend {name!r}; use {', '.join(backend_names())}")
    return importlib.import_module(f"{BACKENDS_PACKAGE}.{name}").BACKEND


def _imported() -> list[tuple[str, Backend]]:
    """The backends whose modules are imported: only those can have built an LLM (however it
    was reached: `auto` builds with the `ollama` and `embedded` modules)."""
    found = []
    for name in backend_names():
        module = sys.modules.get(f"{BACKENDS_PACKAGE}.{name}")
        if module is not None and isinstance(getattr(module, "BACKEND", None), Backend):
            found.append((name, module.BACKEND))
    return found


def build_llm(settings: Settings) -> LLM:
    """The LLM `settings.llm` names (see Backend.build). An in-process model loads lazily, on
    first use or `warm_up()`."""
    return backend(settings.llm).build(settings)


def _owner(llm: LLM) -> tuple[str, Backend] | None:
    return next(((n, b) for n, b in _imported() if b.owns(llm)), None)


def describe_llm(llm: LLM) -> str:
    """Backend and model of an LLM in a few words, e.g. "ollama llama3.2"."""
    owner = _owner(llm)
    if owner is None:
        return f"{type(llm).__name__} {_model_field(llm)}"
    name, found = owner
    return f"{name} {found.model(llm)}"


def limit_output(llm: LLM, max_tokens: int) -> LLM:
    """The same LLM answering at most `max_tokens` tokens, whichever backend it is."""
    owner = _owner(llm)
    return owner[1].limit_output(llm, max_tokens) if owner else llm


def _named(llm: LLM) -> str:
    """The LLM as messages about it name it: "ollama llama3.2 at http://host:11434"."""
    from rag.config import redact_url

    owner = _owner(llm)
    url = owner[1].server(llm) if owner else None
    return f"{describe_llm(llm)} at {redact_url(url)}" if url else describe_llm(llm)


def timed_out(llm: LLM) -> BackendError:
    return BackendError(
        f"{_named(llm)} did not answer in time; try again or raise RAG_LLM_TIMEOUT_S"
    )


def unreachable(llm: LLM, exc: BaseException) -> BackendError:
    from rag.llm.http import reason

    return BackendError(f"{_named(llm)} is not reachable: {reason(exc)}")


def as_backend_error(exc: BaseException, llm: LLM) -> RagError:
    """One actionable error for something an LLM raised mid-request (timeouts, lost servers).

    For the engine: `except Exception as exc: raise as_backend_error(exc, llm) from exc`.
    """
    import httpx

    from rag.llm.http import one_line

    if isinstance(exc, RagError):
        return exc
    owner = _owner(llm)
    specific = owner[1].error(exc, llm) if owner else None
    if specific is not None:
        return specific
    if isinstance(exc, httpx.TimeoutException):
        return timed_out(llm)
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return unreachable(llm, exc)
    what = _named(llm)
    status = getattr(exc, "status_code", None)
    if status in (401, 403):
        return BackendError(f"{what} refused the API key (HTTP {status})")
    detail = getattr(exc, "error", None) or str(exc) or type(exc).__name__
    return BackendError(f"{what} failed: {one_line(str(detail))}")
