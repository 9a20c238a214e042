"""GGUF chat models run in-process on ik_llama.cpp: the chat template in the file, numpy decoding."""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import json
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import BackendError, ConfigError
from rag.runtime import MODEL_LOADING

logger = logging.getLogger(__name__)

# Only ik_llama_cpp's low-level ctypes API is used. Its high-level `IkLlama` always renders a
# Gemma chat template whatever the model, samples with a Python loop over the whole vocabulary
# per token, decodes each token alone with errors="replace" (breaking Cyrillic letters split over
# two tokens), and enables flash attention only with the optional py-cpuinfo.

# The package that runs GGUF files in-process (a prebuilt wheel; never compiled here).
GGUF_DIST = "ik-llama-cpp-python==0.1.5"
GGUF_MAGIC = b"GGUF"
# Prompts are fed in chunks of N_BATCH tokens.
N_BATCH = 512
# ik_llama.cpp 0.1.5 computes batches of 32 or more tokens through Q4_1 weights wrongly on this
# (AVX-512) CPU: logits correlate 0.62 with the reference and SmolLM2 answers <|im_end|> at once.
# Batches of 16 are right (0.999), ~7x slower to prefill. FTYPE_Q4_1 is general.file_type of a
# mostly-Q4_1 file (LLAMA_FTYPE_MOSTLY_Q4_1), which the shipped SmolLM2 GGUF is.
FTYPE_Q4_1 = "3"
Q4_1_SAFE_UBATCH = 16

# llama.cpp logs ~140 lines per load on stderr; only warnings and errors go on, to logging.
# ggml_log_level: 3 = warn, 4 = error, 5 = continuation of the previous line.
_LOG_WARN, _LOG_ERROR, _LOG_CONT = 3, 4, 5
_LOG_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_log_state: dict[str, Any] = {"level": 0, "error": "", "callback": None}
# Two lines ik_llama.cpp 0.1.5 prints straight to stderr (past its log callback) at every model
# load: the CPU reports "0 MiB free" as if it were a GPU. They mean nothing here.
_LOAD_NOISE = re.compile(rb"^Free memory \d+ MiB on device \d+ is less the [^\n]*\n?", re.M)
_bound = False
_SHARED: dict[tuple[Path, int, int], GGUFModel] = {}
# glibc's mallopt(M_ARENA_MAX, ...): see limit_malloc_arenas.
_M_ARENA_MAX = -8
MALLOC_ARENAS = 2


@dataclass(frozen=True)
class Decoding:
    """How one answer is decoded (rag/llm/in_process.py sets it from its settings and constants).

    repeat_penalty: transformers' repetition penalty, on the tokens the answer said only, not
        the prompt's: an answer should copy names and numbers from its passages. 1.0 is off.
    loop_tokens: stop when the last this many tokens were already said once; 0 is off.
    temperature: 0 is greedy; above, top-p sampling with `top_p`.
    """

    max_new_tokens: int
    repeat_penalty: float
    loop_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None


def check_gguf_file(path: Path) -> None:
    """Raise ConfigError, naming the file and why, unless `path` is a readable GGUF file."""
    if not path.exists():
        raise ConfigError(f"no file at {path}")
    if not path.is_file():
        raise ConfigError(f"{path} is not a file")
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror or exc})") from exc
    if magic != GGUF_MAGIC:
        raise ConfigError(f"{path} is not a GGUF model file (it does not start with 'GGUF')")


def cpu_threads() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the rest of this process (mallopt M_ARENA_MAX).

    glibc gives each thread that allocates its own arena, up to 8 per core: the embedder's,
    Chroma's, the model's and each answer's threads all keep freed memory apart, none of it
    reused by the others. With two arenas a serving process at 10k chunks peaks ~65 MB lower
    (~100 MB when capped before the embedder loads); answers and speed are unchanged. Arenas
    made before the call stay. False where it does not apply (not glibc)."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (AttributeError, OSError):
        return False


def shared_model(
    path: Path, n_ctx: int, n_threads: int, initial_ctx: int | None = None
) -> GGUFModel:
    """One loaded copy per process of a file, context size and thread count; `initial_ctx`
    applies to the first load only (see GGUFModel)."""
    key = (path.resolve(), n_ctx, n_threads)
    # Loads go one at a time, as every model load in this process does (see rag.runtime).
    with MODEL_LOADING:
        model = _SHARED.get(key)
        if model is None:
            model = _SHARED[key] = GGUFModel(
                path, n_ctx=n_ctx, n_threads=n_threads, initial_ctx=initial_ctx
            )
        return model


def _forward_log(level: int, text: bytes | None, _user: Any) -> None:
    if level != _LOG_CONT:
        _log_state["level"] = level
    level = _log_state["level"]
    message = text.decode("utf-8", errors="replace").strip() if text else ""
    if _LOAD_NOISE.match(message.encode()):
        return  # the same "0 MiB free" noise, when it comes through the log callback
    if level >= _LOG_WARN and message:
        if level >= _LOG_ERROR and not _log_state["error"]:
            # The first error says why a load failed (the later ones only that it did).
            _log_state["error"] = message.split("error loading model: ")[-1]
        (logger.error if level >= _LOG_ERROR else logger.warning)("%s", message)


def _bind() -> Any:
    """ik_llama_cpp's ctypes API (imported only now: it loads a 29 MB library), with the C
    functions its bindings lack declared, logging routed, and the backend initialised, once."""
    global _bound
    from ik_llama_cpp import _ctypes_api as C

    if _bound:  # callers hold MODEL_LOADING
        return C
    lib = C._lib
    ptr, i32, text = ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p
    for name, args, result in (
        ("llama_model_meta_val_str", [ptr, text, text, ctypes.c_size_t], i32),
        ("llama_kv_cache_seq_rm", [ptr, i32, i32, i32], ctypes.c_bool),
        ("llama_n_ctx", [ptr], ctypes.c_uint32),
        ("llama_n_ctx_train", [ptr], i32),
        ("llama_token_bos", [ptr], i32),
        ("llama_token_eos", [ptr], i32),
        ("llama_log_set", [_LOG_CALLBACK, ptr], None),
    ):
        function = getattr(lib, name)
        function.argtypes, function.restype = args, result
    # Kept referenced: a ctypes callback freed while C still holds it crashes the process.
    _log_state["callback"] = _LOG_CALLBACK(_forward_log)
    lib.llama_log_set(_log_state["callback"], None)
    C.llama_backend_init()
    _bound = True
    return C


@contextlib.contextmanager
def _load_noise_dropped() -> Iterator[None]:
    """Capture stderr (fd 2) while a model loads, then write back all of it but _LOAD_NOISE.
    What another thread writes meanwhile comes out a moment later, not lost."""
    with contextlib.ExitStack() as stack:
        capture: Any = None
        try:
            capture = stack.enter_context(tempfile.TemporaryFile())
            saved = os.dup(2)
        except OSError:  # no temp space, or no stderr at all: the noise is shown
            capture = None
        if capture is None:
            yield
            return
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = _LOAD_NOISE.sub(b"", capture.read())
            if kept:
                os.write(2, kept)


def _has_avx_vnni() -> bool:
    """ik_llama.cpp's CPU flash attention is reported to assert without AVX-VNNI; where the
    flag is there it reads prompts ~20% faster. Read from /proc/cpuinfo (Linux; else off)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return any(
        line.startswith("flags") and "avx_vnni" in line.split() for line in text.splitlines()
    )


class GGUFModel:
    """A loaded GGUF chat model streaming text deltas. One generation at a time (the KV cache is
    shared state); others wait for the lock. Tokenizing and rendering need no lock.

    It reads prompts of up to `n_ctx` tokens with their answers. Its KV cache is allocated (and
    resident) whole when the context is made: `initial_ctx` makes it that much smaller to start
    with, and the first prompt that does not fit makes it `n_ctx` for good (an empty cache, tens
    of milliseconds). Answers are the same whatever its size."""

    def __init__(
        self, path: Path, *, n_ctx: int, n_threads: int, initial_ctx: int | None = None
    ) -> None:
        check_gguf_file(path)
        self.path = path
        try:
            with MODEL_LOADING:
                self.C = C = _bind()
                _log_state["error"] = ""
                params = C.llama_model_default_params()
                params.use_mmap = True  # the weights stay page cache, shared between processes
                params.n_gpu_layers = 0
                with _load_noise_dropped():
                    self.model = C.llama_model_load_from_file(str(path).encode("utf-8"), params)
        except ImportError as exc:
            raise ConfigError(
                f"running GGUF models needs {GGUF_DIST}: pip install --no-deps {GGUF_DIST} ({exc})"
            ) from exc
        if not self.model:
            reason = _log_state["error"] or "see the log"
            raise BackendError(f"ik_llama.cpp could not load {path}: {reason}")
        self.ctx: int | None = None
        try:
            self._init_context(n_ctx, n_threads, initial_ctx)
        except BaseException:
            self.close()
            raise

    def _init_context(self, n_ctx: int, n_threads: int, initial_ctx: int | None) -> None:
        C, path = self.C, self.path
        self.n_vocab = int(C.llama_vocab_n_tokens(C.llama_model_get_vocab(self.model)))
        self._piece_buffer = ctypes.create_string_buffer(256)
        self.bos_token = self._token_text(int(C._lib.llama_token_bos(self.model)))
        self.eos_token = self._token_text(int(C._lib.llama_token_eos(self.model)))
        template = self.meta("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{path} has no chat template (tokenizer.chat_template metadata)")
        try:
            self._template = _compile_template(template)
        except Exception as exc:  # a jinja2 syntax error
            raise BackendError(f"the chat template of {path} does not compile: {exc}") from exc
        trained = int(C._lib.llama_n_ctx_train(self.model))
        # More than the model was trained for reads garbage; less costs nothing.
        self.n_ctx = min(n_ctx, trained) if trained > 0 else n_ctx  # what stream() accepts
        params = C.llama_context_default_params()
        params.n_batch = N_BATCH
        params.n_ubatch = (
            Q4_1_SAFE_UBATCH if self.meta("general.file_type") == FTYPE_Q4_1 else N_BATCH
        )
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = n_threads
        params.flash_attn = _has_avx_vnni()
        # K and V stay f16: a q8_0 cache is half the size but changes greedy answers.
        self._params = params
        # Token ids whose keys and values are in the KV cache, in order: the next prompt re-reads
        # only what follows their common prefix (the same system prompt, a follow-up question).
        self._cached: list[int] = []
        self._open_context(min(initial_ctx or self.n_ctx, self.n_ctx))
        self.n_ubatch = int(C.llama_n_ubatch(self.ctx))
        # One batch for the life of the model: llama_batch_init mallocs.
        self._batch = C.llama_batch_init(N_BATCH, 0, 1)
        # End-of-generation ids (<|im_end|>, <|endoftext|>...) as a table: one lookup per token.
        self._is_eog = np.fromiter(
            (bool(C.llama_token_is_eog(self.model, t)) for t in range(self.n_vocab)),
            dtype=bool,
            count=self.n_vocab,
        )
        self.lock = threading.Lock()

    def _open_context(self, size: int) -> None:
        """(Re)make the context with room for `size` tokens, its KV cache empty. The old one is
        freed first, so the two caches are never resident together; if the new one cannot be
        made, the old size is made again (the model keeps answering shorter prompts)."""
        C = self.C
        previous = self.ctx_size if self.ctx else 0
        if self.ctx:
            C.llama_free(self.ctx)
            self.ctx = None
        self._cached.clear()
        _log_state["error"] = ""
        made = 0
        with MODEL_LOADING:
            for attempt in (size, previous):
                if attempt:
                    self._params.n_ctx = attempt
                    self.ctx = C.llama_init_from_model(self.model, self._params)
                if self.ctx:
                    made = attempt
                    break
        if self.ctx:
            self.ctx_size = int(C._lib.llama_n_ctx(self.ctx))  # rounded up by the runtime
        if made != size:
            reason = _log_state["error"] or f"n_ctx {size} too large?"
            raise BackendError(f"ik_llama.cpp could not make a context for {self.path}: {reason}")

    def close(self) -> None:
        if hasattr(self, "_batch"):
            self.C.llama_batch_free(self._batch)
            del self._batch
        if self.ctx:
            self.C.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            self.C.llama_free_model(self.model)
            self.model = None

    @property
    def cached_tokens(self) -> int:
        """How many tokens the KV cache holds: the last prompt and what was decoded after it."""
        return len(self._cached)

    # -- metadata and text ------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text (None when the file lacks the key)."""
        size = 1 << 14
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = self.C._lib.llama_model_meta_val_str(self.model, key.encode(), buffer, size)
            if n < 0:
                return None
            if n < size:
                return buffer.raw[:n].decode("utf-8", errors="replace")
            size = n + 1  # truncated: n is the full length

    def render(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The chat as the model was trained to read it: its own template, as transformers'
        apply_chat_template renders it, ending with the assistant's turn opened."""
        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=True,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except Exception as exc:  # jinja2 errors and the template's own raise_exception
            raise BackendError(f"the chat template of {self.path.name} failed: {exc}") from exc

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids with special tokens (<|im_start|>) parsed. A rendered chat gets no extra
        BOS (add_special False): its template writes every special token the model expects."""
        C = self.C
        data = text.encode("utf-8")
        n = C.llama_tokenize(self.model, data, len(data), None, 0, add_special, True)
        buffer = (C.llama_token * max(abs(n), 1))()
        n = C.llama_tokenize(self.model, data, len(data), buffer, abs(n), add_special, True)
        if n < 0:
            raise BackendError(f"{self.path.name} could not tokenize the prompt")
        return list(buffer[:n])

    def _piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token: possibly half a UTF-8 character, so never decoded alone."""
        n = self.C.llama_token_to_piece(self.model, token, self._piece_buffer, 256, 0, special)
        if n < 0:  # longer than the buffer: -n is the size needed
            big = ctypes.create_string_buffer(-n)
            n = self.C.llama_token_to_piece(self.model, token, big, -n, 0, special)
            return big.raw[:n]
        return self._piece_buffer.raw[:n]

    def _token_text(self, token: int) -> str:
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    # -- generation -------------------------------------------------------------------------

    def stream(
        self,
        prompt: Sequence[int],
        decoding: Decoding,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        """Text deltas of the answer to token ids `prompt`; setting `stop` ends it after the
        current token. Checked here, at the call: a prompt too long fails before any thread."""
        prompt = list(prompt)
        if not prompt:
            raise BackendError("empty prompt")
        if len(prompt) + decoding.max_new_tokens > self.n_ctx:
            raise BackendError(
                f"the prompt has {len(prompt)} tokens, more than {self.path.name} reads here "
                f"({self.n_ctx} with the answer); ask with less context (lower top_k or "
                "chunk_size) or raise RAG_CONTEXT_WINDOW"
            )
        return self._deltas(prompt, decoding, stop or threading.Event())

    def _deltas(
        self, prompt: list[int], decoding: Decoding, stop: threading.Event
    ) -> Iterator[str]:
        # Tokens are bytes, and BPE splits a Cyrillic letter (2 bytes) over two tokens: the
        # incremental decoder holds back an incomplete tail until the next token completes it.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with self.lock:
            if stop.is_set():
                return
            if not self.ctx or len(prompt) + decoding.max_new_tokens > self.ctx_size:
                # stream() checked it fits in n_ctx (no context: a growth that failed)
                self._open_context(self.n_ctx)
            for token in self._tokens(prompt, decoding, stop):
                text = decoder.decode(self._piece(token))
                if text:
                    yield text
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def _tokens(
        self, prompt: list[int], decoding: Decoding, stop: threading.Event
    ) -> Iterator[int]:
        """Answer token ids (end-of-generation excluded); the caller holds the lock."""
        penalty, loop = float(decoding.repeat_penalty), int(decoding.loop_tokens)
        rng = np.random.default_rng(decoding.seed) if decoding.temperature > 0 else None
        said: list[int] = []
        said_ids = np.empty(0, dtype=np.int64)  # distinct ids said, for the penalty
        said_before: set[tuple[int, ...]] = set()  # loop-length runs that end before the tail

        logits = self._prefill(prompt)
        while not stop.is_set():
            if penalty != 1.0 and said_ids.size:
                picked = logits[said_ids]
                logits[said_ids] = np.where(picked < 0, picked * penalty, picked / penalty)
            token = _pick(logits, decoding, rng)
            if self._is_eog[token]:
                return
            yield token
            said.append(token)
            if penalty != 1.0 and token not in said_ids:
                said_ids = np.append(said_ids, token)
            if loop > 0 and len(said) >= 2 * loop:
                start = len(said) - 2 * loop
                said_before.add(tuple(said[start : start + loop]))
                if tuple(said[-loop:]) in said_before:
                    return  # the model is looping
            if len(said) >= decoding.max_new_tokens:
                return  # no decode for a token nobody reads
            logits = self._feed([token], len(self._cached))

    def _prefill(self, prompt: list[int]) -> np.ndarray:
        """Logits after `prompt`, reading only what the KV cache does not already hold."""
        common = 0
        for cached, token in zip(self._cached, prompt, strict=False):
            if cached != token:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # the last token is read again: its logits
        if common < len(self._cached):
            if not self.C._lib.llama_kv_cache_seq_rm(self.ctx, 0, common, -1):
                self._reset()
                common = 0
            del self._cached[common:]
        return self._feed(prompt[common:], common)

    def _feed(self, tokens: Sequence[int], start: int) -> np.ndarray:
        """Decode `tokens` at positions start.. into the KV cache; logits after the last."""
        C, batch = self.C, self._batch
        for offset in range(0, len(tokens), N_BATCH):
            chunk = tokens[offset : offset + N_BATCH]
            batch.n_tokens = len(chunk)
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = start + offset + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 0
            if offset + len(chunk) == len(tokens):
                batch.logits[len(chunk) - 1] = 1  # logits of the very last position only
            status = C.llama_decode(self.ctx, batch)
            if status != 0:
                self._reset()  # the cache holds an unknown part of the chunk
                raise BackendError(f"{self.path.name}: llama_decode failed ({status})")
            self._cached.extend(chunk)
        pointer = C.llama_get_logits_ith(self.ctx, -1)
        # A copy: the context overwrites its buffer at the next decode.
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _reset(self) -> None:
        self.C.llama_kv_cache_clear(self.ctx)
        self._cached.clear()


def _pick(logits: np.ndarray, decoding: Decoding, rng: np.random.Generator | None) -> int:
    if rng is None:
        return int(np.argmax(logits))
    scaled = logits / decoding.temperature
    # Top-p among the 256 best: sorting all ~50k ids for every token is wasted time.
    top = np.argpartition(scaled, -256)[-256:] if scaled.size > 256 else np.arange(scaled.size)
    top = top[np.argsort(scaled[top])[::-1]]
    probs = np.exp(scaled[top] - scaled[top[0]])
    probs /= probs.sum()
    keep = int(np.searchsorted(np.cumsum(probs), decoding.top_p)) + 1
    return int(top[rng.choice(keep, p=probs[:keep] / probs[:keep].sum())])


def _compile_template(source: str) -> Any:
    """A chat template compiled as transformers does: sandboxed, trim/lstrip blocks, loop
    controls, its raise_exception, strftime_now and a tojson that keeps non-ASCII as it is."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kw)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)
