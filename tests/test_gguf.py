"""RAG_LLM=gguf: the shipped SmolLM2 GGUF run for real by ik_llama.cpp (no mocks), streaming."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from generation import no_generation_within
from llama_index.core.llms import ChatMessage, MessageRole

from rag import cli
from rag.config import Settings, load_settings
from rag.errors import BackendError, ConfigError
from rag.llm import build_llm, describe_llm
from rag.llm.ik_llama import (
    Q4_1_SAFE_UBATCH,
    Decoding,
    GGUFModel,
    _load_noise_dropped,
    limit_malloc_arenas,
)
from rag.llm.in_process import GGUFLLM, find_embedded_gguf

MESSAGES = [
    ChatMessage(role=MessageRole.SYSTEM, content="Answer briefly, using only the context."),
    ChatMessage(
        role=MessageRole.USER,
        content="Context: The Eiffel Tower is in Paris. It was finished in 1889.\n\n"
        "Question: When was the Eiffel Tower finished?",
    ),
]
# A raw prompt SmolLM2 continues greedily for all of 300 tokens (3-4 s on one busy core).
STORY = "Once upon a time"
RUSSIAN = "Москва — столица России. Санкт-Петербург — второй по величине город"


def gguf(**fields: object) -> GGUFLLM:
    # One thread: the tests run beside other work on two cores, where one is the faster.
    llm = build_llm(Settings(llm="gguf", gguf_threads=1, **fields))  # type: ignore[arg-type]
    assert isinstance(llm, GGUFLLM)
    return llm


@pytest.fixture(scope="module")
def llm() -> GGUFLLM:
    """The shipped SmolLM2 GGUF, greedy and short, loaded once."""
    model = gguf(temperature=0.0, max_new_tokens=20)
    model.warm_up()
    return model


@pytest.fixture(scope="module")
def long_llm(llm: GGUFLLM) -> GGUFLLM:
    return gguf(temperature=0.0, max_new_tokens=300)


GENERATION_THREAD = "gguf-llm-generate"


def test_gguf_defaults_to_the_shipped_smollm2_file_as_it_is(llm: GGUFLLM) -> None:
    assert llm.path == find_embedded_gguf()
    assert describe_llm(llm) == "gguf SmolLM2-135M-Instruct.Q4_1.gguf"
    meta = llm.metadata
    assert (meta.context_window, meta.num_output, meta.is_chat_model) == (2048, 20, True)
    assert meta.model_name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    # A Q4_1 file reads prompts in batches small enough to be computed right.
    assert llm.warm_up().n_ubatch == Q4_1_SAFE_UBATCH
    # Its KV cache starts at 1.25x the context window (English) and may grow to 2x.
    assert (llm.warm_up().ctx_size, llm.warm_up().n_ctx) == (2560, 4096)


def test_gguf_stream_chat_yields_several_deltas_that_answer(llm: GGUFLLM) -> None:
    responses = list(llm.stream_chat(MESSAGES))
    deltas = [r.delta for r in responses]
    assert len(deltas) >= 3 and all(deltas)
    text = "".join(deltas)  # type: ignore[arg-type]
    assert "1889" in text
    assert responses[-1].message.content == text
    assert responses[-1].message.role == MessageRole.ASSISTANT
    assert llm.chat(MESSAGES).message.content == text


def test_gguf_chat_is_rendered_with_the_models_own_template(llm: GGUFLLM) -> None:
    model = llm.warm_up()
    prompt = model.render(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = llm._chat_ids(MESSAGES)
    [im_start] = model.tokenize("<|im_start|>")  # one special token, not 7 pieces of text
    [im_end] = model.tokenize("<|im_end|>")
    assert ids[0] == im_start  # no BOS in front: the template writes its own
    assert ids.count(im_start) == 3 and ids.count(im_end) == 2  # system, user, assistant
    # chat() answers exactly what the raw templated prompt gets (greedy decoding).
    rendered = model.render([{"role": m.role.value, "content": m.content} for m in MESSAGES])
    assert model.tokenize(rendered) == ids
    assert llm.complete(rendered, formatted=True).text == llm.chat(MESSAGES).message.content


def test_gguf_complete_and_stream_complete_agree(llm: GGUFLLM) -> None:
    text = llm.complete("Name a colour.").text
    assert text.strip()
    streamed = list(llm.stream_complete("Name a colour."))
    assert streamed[-1].text == text == "".join(r.delta or "" for r in streamed)


def test_gguf_cyrillic_streams_whole_letters_never_a_replacement_character(
    llm: GGUFLLM,
) -> None:
    model = llm.warm_up()
    # The case that breaks per-token decoding: letters split over two tokens.
    halves = [t for t in model.tokenize(RUSSIAN) if not _decodes(model._piece(t))]
    assert halves
    deltas = [r.delta or "" for r in llm.stream_complete(RUSSIAN, formatted=True)]
    text = "".join(deltas)
    assert sum("а" <= c.lower() <= "я" for c in text) >= 5, text
    assert not any("\ufffd" in delta for delta in deltas), deltas


def _decodes(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_gguf_the_default_temperature_answers_the_same_every_time() -> None:
    llm = gguf(max_new_tokens=12)  # RAG_TEMPERATURE's default, 0.1: decoded greedily
    assert llm.temperature == Settings().temperature
    answers = {llm.chat(MESSAGES).message.content for _ in range(3)}
    assert len(answers) == 1


def test_gguf_concurrent_generations_do_not_mix(llm: GGUFLLM) -> None:
    other = [ChatMessage(role=MessageRole.USER, content="Name three colours.")]
    expected = [llm.chat(MESSAGES).message.content, llm.chat(other).message.content]
    results: dict[int, str] = {}

    def ask(i: int, messages: list[ChatMessage]) -> None:
        results[i] = "".join(r.delta or "" for r in llm.stream_chat(messages))

    threads = [
        threading.Thread(target=ask, args=(i, m)) for i, m in enumerate([MESSAGES, other] * 2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [results[i] for i in range(4)] == expected * 2


def test_gguf_closing_a_stream_stops_its_generation(long_llm: GGUFLLM) -> None:
    model = long_llm.warm_up()
    prompt = long_llm._prompt_ids(STORY, formatted=True)
    stream = long_llm.stream_complete(STORY, formatted=True)
    assert next(stream).delta
    stream.close()
    assert no_generation_within(GENERATION_THREAD, 4)
    assert model.cached_tokens < len(prompt) + 100  # stopped long before its 300 tokens
    assert long_llm.complete("Name a colour.").text  # the lock was released


def test_gguf_a_load_keeps_the_runtimes_device_noise_off_stderr(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # ik_llama.cpp writes two "Free memory 0 MiB on device 0" lines to fd 2 at every load: on the
    # embedded default, every `rag ask` would print them.
    model = GGUFModel(find_embedded_gguf(), n_ctx=512, n_threads=1)
    model.close()
    assert "Free memory" not in capfd.readouterr().err
    # What else reaches stderr meanwhile is written back, not lost.
    with _load_noise_dropped():
        os.write(2, b"Free memory 0 MiB on device 0 is less the 1024 MiB safety margin\n")
        os.write(2, b"a warning of someone else\n")
    assert capfd.readouterr().err == "a warning of someone else\n"


def test_gguf_a_load_logs_no_device_noise(caplog: pytest.LogCaptureFixture) -> None:
    # The same lines also come through the runtime's log callback, as warnings: the app's log
    # would show them at every load.
    with caplog.at_level(logging.DEBUG, logger="rag.llm.ik_llama"):
        GGUFModel(find_embedded_gguf(), n_ctx=512, n_threads=1).close()
    assert not [r for r in caplog.records if "Free memory" in r.getMessage()]


def test_gguf_a_context_that_starts_small_grows_for_a_long_prompt_and_answers_the_same() -> None:
    path = find_embedded_gguf()
    decoding = Decoding(
        max_new_tokens=8, repeat_penalty=1.15, loop_tokens=12, temperature=0.0, top_p=0.95
    )
    full = GGUFModel(path, n_ctx=1024, n_threads=1)
    small = GGUFModel(path, n_ctx=1024, n_threads=1, initial_ctx=256)
    try:
        prompt = full.tokenize("The Eiffel Tower is in Paris. " * 40)
        assert 256 < len(prompt) + decoding.max_new_tokens <= 1024
        assert (full.ctx_size, small.ctx_size) == (1024, 256)
        short = full.tokenize("Name a colour.")
        assert "".join(small.stream(short, decoding)) == "".join(full.stream(short, decoding))
        assert small.ctx_size == 256  # what fits does not grow it
        expected = "".join(full.stream(prompt, decoding))
        assert expected.strip()
        assert "".join(small.stream(prompt, decoding)) == expected
        assert small.ctx_size == 1024
    finally:
        full.close()
        small.close()


def test_gguf_malloc_arenas_are_capped_where_glibc_can() -> None:
    assert limit_malloc_arenas() is (sys.platform == "linux")  # glibc's mallopt


def test_gguf_a_prompt_longer_than_the_context_is_refused_in_one_line(llm: GGUFLLM) -> None:
    with pytest.raises(BackendError, match="lower top_k or chunk_size") as caught:
        llm.complete("word " * 5000, formatted=True)
    assert "\n" not in str(caught.value)


# --- a wrong RAG_GGUF_PATH stops the start, naming it ------------------------------------------


@pytest.fixture
def gguf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("RAG_LLM", "gguf")
    monkeypatch.setenv("RAG_STORAGE_DIR", str(tmp_path / "storage"))
    yield tmp_path


def test_gguf_a_missing_file_stops_the_build_naming_rag_gguf_path(
    gguf_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = gguf_env / "models" / "nope.gguf"
    monkeypatch.setenv("RAG_GGUF_PATH", str(missing))
    with pytest.raises(ConfigError) as caught:
        build_llm(load_settings())
    assert str(caught.value) == f"RAG_GGUF_PATH: no file at {missing}"
    assert cli.main(["ask", "when?"]) == cli.EXIT_USAGE
    assert "RAG_GGUF_PATH" in capsys.readouterr().err


def test_gguf_a_file_that_is_not_gguf_stops_the_build(
    gguf_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = gguf_env / "notes.gguf"
    text.write_text("not a model")
    monkeypatch.setenv("RAG_GGUF_PATH", str(text))
    with pytest.raises(ConfigError, match=r"^RAG_GGUF_PATH: .*notes\.gguf is not a GGUF model"):
        build_llm(load_settings())
    monkeypatch.setenv("RAG_GGUF_PATH", str(gguf_env))
    with pytest.raises(ConfigError, match="is not a file"):
        build_llm(load_settings())


def test_gguf_a_damaged_file_fails_its_first_answer_in_one_line(
    gguf_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truncated = gguf_env / "half.gguf"
    truncated.write_bytes(find_embedded_gguf().read_bytes()[:4_000_000])
    monkeypatch.setenv("RAG_GGUF_PATH", str(truncated))
    llm = build_llm(load_settings())
    with pytest.raises(BackendError) as caught:
        llm.complete("Hi")
    message = str(caught.value)
    assert "half.gguf" in message and "corrupted or incomplete" in message
    assert "\n" not in message


# --- no torch --------------------------------------------------------------------------------


def test_answering_with_gguf_imports_no_torch_and_loads_ik_llama_only_when_used(
    tmp_path: Path,
) -> None:
    script = """
import json, sys
from rag.config import Settings
from rag.llm import build_llm
seen = {}
llm = build_llm(Settings(llm="gguf", max_new_tokens=5, gguf_threads=1))
seen["built"] = "ik_llama_cpp" in sys.modules
seen["answer"] = llm.complete("Name a colour.").text
seen["used"] = "ik_llama_cpp" in sys.modules
seen["heavy"] = sorted(m for m in ("torch", "transformers") if m in sys.modules)
print(json.dumps(seen))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=tmp_path,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["answer"].strip()
    assert (seen["built"], seen["used"], seen["heavy"]) == (False, True, [])
