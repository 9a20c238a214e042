"""The LLM factory: the embedded model for real, Ollama and OpenAI-compatible servers over real HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import unused_port
from fakes.ollama_server import FakeOllama
from fakes.openai_server import FakeOpenAI
from llama_index.core.llms import ChatMessage, MessageRole

from rag.config import Settings
from rag.errors import BackendError, ConfigError
from rag.llm import Backend, as_backend_error, backend, backend_names, build_llm, describe_llm
from rag.llm.backends.ollama import ollama_model_matches
from rag.llm.ik_llama import cpu_threads
from rag.llm.in_process import EMBEDDED_GGUF, EMBEDDED_NAME, GGUFLLM, find_embedded_gguf

MESSAGES = [
    ChatMessage(role=MessageRole.SYSTEM, content="Answer briefly, using only the context."),
    ChatMessage(
        role=MessageRole.USER,
        content="Context: The Eiffel Tower is in Paris. It was finished in 1889.\n\n"
        "Question: When was the Eiffel Tower finished?",
    ),
]


def make_settings(tmp_path: Path, **fields: object) -> Settings:
    return Settings(storage_dir=tmp_path, **fields)


# ---------------------------------------------------------------------------------------------
# The embedded model, for real: the shipped GGUF on the in-process runtime (tests/test_gguf.py
# covers that runtime's streaming, cancelling and template in depth)


@pytest.mark.slow
def test_embedded_runs_the_shipped_gguf_as_it_is_and_writes_nothing(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    llm = build_llm(
        Settings(storage_dir=storage, llm="embedded", temperature=0.0, max_new_tokens=8)
    )
    assert isinstance(llm, GGUFLLM)
    assert llm.path == find_embedded_gguf()
    assert describe_llm(llm) == "embedded SmolLM2-135M-Instruct"
    assert llm.metadata.model_name == EMBEDDED_NAME
    assert llm.complete("Name a colour.").text.strip()
    # No conversion, no cache: the file in site-packages is read (mapped) as it is.
    assert not storage.exists()
    # RAG_LLM=gguf on that file is the same runtime; only the name it is shown by differs.
    same = build_llm(Settings(storage_dir=storage, llm="gguf"))
    assert isinstance(same, GGUFLLM) and same.path == llm.path
    assert describe_llm(same) == f"gguf {EMBEDDED_GGUF}"


def test_embedded_takes_threads_and_generation_settings(tmp_path: Path) -> None:
    llm = build_llm(
        Settings(
            storage_dir=tmp_path,
            llm="embedded",
            gguf_threads=1,
            temperature=0.7,
            max_new_tokens=33,
            context_window=1024,
        )
    )
    assert isinstance(llm, GGUFLLM)
    assert (llm.n_threads, llm.temperature, llm.max_new_tokens) == (1, 0.7, 33)
    assert (llm.metadata.context_window, llm.metadata.num_output) == (1024, 33)
    assert build_llm(Settings(storage_dir=tmp_path, llm="embedded")).n_threads == cpu_threads()


# ---------------------------------------------------------------------------------------------
# Ollama over real HTTP


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models=("llama3.2:latest", "nomic-embed-text:latest")) as server:
        yield server


def test_ollama_streams_tokens_through_the_real_client(ollama: FakeOllama, tmp_path: Path) -> None:
    llm = build_llm(
        make_settings(
            tmp_path,
            llm="ollama",
            ollama_base_url=ollama.url,
            ollama_model="llama3.2",
            max_new_tokens=77,
            temperature=0.2,
        )
    )
    assert describe_llm(llm) == "ollama llama3.2"
    responses = list(llm.stream_chat(MESSAGES))
    deltas = [r.delta for r in responses if r.delta]
    assert deltas == ollama.reply_pieces()
    assert responses[-1].message.content == ollama.reply
    request = ollama.chat_requests()[-1]
    assert request["stream"] is True
    assert request["model"] == "llama3.2"
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["options"]["num_predict"] == 77
    assert request["options"]["temperature"] == 0.2
    assert llm.chat(MESSAGES).message.content == ollama.reply
    assert llm.complete("Capital of France?").text == ollama.reply


def test_ollama_unreachable_names_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    with pytest.raises(BackendError) as caught:
        build_llm(make_settings(tmp_path, llm="ollama", ollama_base_url=url))
    message = str(caught.value)
    assert f"Ollama is not reachable at {url}: connection refused" in message
    assert "ollama serve" in message and "OLLAMA_BASE_URL" in message
    assert "\n" not in message


def test_ollama_model_not_pulled_says_how_to_pull(tmp_path: Path) -> None:
    server = FakeOllama(models=("mistral:latest",))
    with server, pytest.raises(BackendError) as caught:
        build_llm(
            make_settings(
                tmp_path, llm="ollama", ollama_base_url=server.url, ollama_model="llama3.2"
            )
        )
    assert "ollama pull llama3.2" in str(caught.value)
    assert "mistral:latest" in str(caught.value)


def test_a_server_that_is_not_ollama_is_reported(tmp_path: Path) -> None:
    with FakeOpenAI() as server, pytest.raises(BackendError, match="HTTP 404"):
        build_llm(make_settings(tmp_path, llm="ollama", ollama_base_url=server.url))


@pytest.mark.parametrize(
    ("wanted", "available", "matches"),
    [
        ("llama3.2", "llama3.2:latest", True),
        ("llama3.2:latest", "llama3.2:latest", True),
        ("llama3.2:3b", "llama3.2:latest", False),
        ("llama3.2", "llama3.2:1b", False),
        ("llama3", "llama3.2:latest", False),
        ("hf.co/org/model", "hf.co/org/model:latest", True),
    ],
)
def test_ollama_tag_names(wanted: str, available: str, matches: bool) -> None:
    assert ollama_model_matches(wanted, available) is matches


@pytest.mark.timeout(60)
def test_ollama_stalling_longer_than_the_timeout_fails_instead_of_hanging(tmp_path: Path) -> None:
    with FakeOllama(stall_s=30) as server:
        llm = build_llm(
            make_settings(tmp_path, llm="ollama", ollama_base_url=server.url, llm_timeout_s=1.0)
        )
        started = time.monotonic()
        with pytest.raises(Exception) as caught:
            list(llm.stream_chat(MESSAGES))
        assert time.monotonic() - started < 10
    error = as_backend_error(caught.value, llm)
    assert isinstance(error, BackendError)
    assert "did not answer in time" in str(error) and server.url in str(error)


def test_ollama_going_away_after_the_check_gives_a_clear_error(tmp_path: Path) -> None:
    with FakeOllama() as server:
        llm = build_llm(make_settings(tmp_path, llm="ollama", ollama_base_url=server.url))
    with pytest.raises(Exception) as caught:
        llm.chat(MESSAGES)
    error = as_backend_error(caught.value, llm)
    assert isinstance(error, BackendError)
    assert f"{server.url} is not reachable: connection refused" in str(error)


def test_auto_uses_ollama_when_it_has_the_model(ollama: FakeOllama, tmp_path: Path) -> None:
    llm = build_llm(make_settings(tmp_path, llm="auto", ollama_base_url=ollama.url))
    assert describe_llm(llm) == "ollama llama3.2"


def test_auto_falls_back_to_the_embedded_model(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    llm = build_llm(make_settings(tmp_path, llm="auto", ollama_base_url=url))
    assert isinstance(llm, GGUFLLM) and llm.backend == "embedded"
    assert llm._model is None  # nothing loaded until first used
    with FakeOllama(models=("mistral:latest",)) as server:
        llm = build_llm(make_settings(tmp_path, llm="auto", ollama_base_url=server.url))
    assert describe_llm(llm) == "embedded SmolLM2-135M-Instruct"


def test_each_backend_module_is_a_rag_llm_value_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert backend_names() == ["auto", "bedrock", "embedded", "gguf", "ollama", "openai"]
    for name in backend_names():
        assert isinstance(backend(name), Backend)
        assert f"| `{name}`" in readme, f"RAG_LLM={name} is not in README's table"


def test_an_unknown_backend_stops_the_start_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="use one of auto, bedrock, embedded, gguf"):
        make_settings(tmp_path, llm="llamafile")


def test_auto_names_the_backend_it_fell_back_to_in_a_fresh_process(tmp_path: Path) -> None:
    # In a process that has loaded no backend by name: the embedded module came in through auto.
    code = (
        "from rag.config import load_settings\n"
        "from rag.llm import build_llm, describe_llm\n"
        "print(describe_llm(build_llm(load_settings())))"
    )
    env = {
        **os.environ,
        "RAG_STORAGE_DIR": str(tmp_path),
        "RAG_LLM": "auto",
        "OLLAMA_BASE_URL": f"http://127.0.0.1:{unused_port()}",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "embedded SmolLM2-135M-Instruct", done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible servers over real HTTP


def test_openai_like_streams_through_sse(tmp_path: Path) -> None:
    with FakeOpenAI(models=("qwen2.5-7b-instruct",), api_key="sk-test") as server:
        llm = build_llm(
            make_settings(
                tmp_path,
                llm="openai",
                openai_base_url=server.base_url,
                openai_model="qwen2.5-7b-instruct",
                openai_api_key="sk-test",
                max_new_tokens=64,
            )
        )
        assert describe_llm(llm) == "openai qwen2.5-7b-instruct"
        responses = list(llm.stream_chat(MESSAGES))
        deltas = [r.delta for r in responses if r.delta]
        assert deltas == server.reply_pieces()
        assert responses[-1].message.content == server.reply
        request = server.chat_requests()[-1]
        assert request["stream"] is True
        assert request["model"] == "qwen2.5-7b-instruct"
        assert request["max_tokens"] == 64
        assert [m["role"] for m in request["messages"]] == ["system", "user"]
        assert llm.chat(MESSAGES).message.content == server.reply
        assert server.chat_requests()[-1].get("stream") in (None, False)


def test_openai_like_async_stream(tmp_path: Path) -> None:
    with FakeOpenAI() as server:
        llm = build_llm(make_settings(tmp_path, llm="openai", openai_base_url=server.base_url))

        async def collect() -> list[str]:
            stream = await llm.astream_chat(MESSAGES)
            return [r.delta async for r in stream if r.delta]

        assert asyncio.run(collect()) == server.reply_pieces()


def test_openai_unreachable_names_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{unused_port()}/v1"
    with pytest.raises(BackendError) as caught:
        build_llm(make_settings(tmp_path, llm="openai", openai_base_url=url))
    message = str(caught.value)
    assert f"not reachable at {url}: connection refused" in message
    assert "RAG_OPENAI_BASE_URL" in message


def test_openai_wrong_api_key_is_reported(tmp_path: Path) -> None:
    server = FakeOpenAI(api_key="sk-right")
    with server, pytest.raises(BackendError, match="refused the API key"):
        build_llm(
            make_settings(
                tmp_path, llm="openai", openai_base_url=server.base_url, openai_api_key="sk-wrong"
            )
        )


def test_openai_server_without_models_is_reported(tmp_path: Path) -> None:
    with FakeOpenAI(models=()) as server, pytest.raises(BackendError, match="serves no model"):
        build_llm(make_settings(tmp_path, llm="openai", openai_base_url=server.base_url))


# ---------------------------------------------------------------------------------------------
# Bedrock


def test_bedrock_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    try:
        import llama_index.llms.bedrock_converse  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("the bedrock extra is installed here")
    with pytest.raises(ConfigError, match=r"pip install \.\[bedrock\]"):
        build_llm(make_settings(tmp_path, llm="bedrock"))


# ---------------------------------------------------------------------------------------------
# Ollama embeddings over real HTTP


def test_ollama_embedder_indexes_and_searches(ollama: FakeOllama, tmp_path: Path) -> None:
    from rag.index import Index

    settings = make_settings(
        tmp_path, embed_model="ollama:nomic-embed-text", ollama_base_url=ollama.url
    )
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("zebras graze on the savanna")
    (data / "b.txt").write_text("submarines dive under the ocean")
    index = Index(settings)
    assert index.ingest([data]).ok
    assert index.search("zebras graze", 1)[0].file == "a.txt"
    assert index.collection().fingerprint.describe() == "ollama:nomic-embed-text (16 dims)"
    embed_calls = [body for _, path, body in ollama.requests if path == "/api/embed"]
    assert embed_calls and all(body["model"] == "nomic-embed-text" for body in embed_calls)
    index.close()


def test_ollama_embedder_missing_model_is_reported(ollama: FakeOllama, tmp_path: Path) -> None:
    from rag.errors import BackendError
    from rag.index import Index

    settings = make_settings(
        tmp_path, embed_model="ollama:mxbai-embed-large", ollama_base_url=ollama.url
    )
    (tmp_path / "doc.txt").write_text("anything")
    with pytest.raises(BackendError, match="ollama pull mxbai-embed-large"):
        Index(settings).ingest([tmp_path / "doc.txt"])
