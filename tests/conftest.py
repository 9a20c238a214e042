"""Shared fixtures: isolated settings, one loaded embedder per run, corpus paths, chat servers, a browser."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from browser import ARTIFACTS, CHROMIUM, Browser

from rag.cli import offline_environment
from testkit.app import LOCAL_HOSTS, ChatServer, prepare_home

offline_environment()

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RAG_* setting or .env of the developer leaks into a test."""
    for key in list(os.environ):
        if key.startswith("RAG_") or key in {"OLLAMA_BASE_URL", "OPENAI_API_KEY"}:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"the shared corpus is missing: expected it at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):  # type: ignore[no-untyped-def]
    """The real bundled MiniLM, loaded once for the whole run."""
    from rag.config import Settings
    from rag.embeddings import build_embedder

    model = build_embedder(Settings(storage_dir=tmp_path_factory.mktemp("embedder")))
    model.load()
    return model


@pytest.fixture
def settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    from rag.config import Settings

    return Settings(storage_dir=tmp_path / "storage", data_dir=tmp_path / "data")


@pytest.fixture
def index(settings, embedder) -> Iterator:  # type: ignore[no-untyped-def]
    from rag.index import Index

    idx = Index(settings, embedder=embedder)
    yield idx
    idx.close()


@pytest.fixture
def data_dir(settings) -> Path:  # type: ignore[no-untyped-def]
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A real `chroma run` server on 127.0.0.1 for the whole run: yields (host, port)."""
    from testkit.chroma import run_chroma_server

    try:
        with run_chroma_server(tmp_path_factory.mktemp("chroma-server")) as server:
            yield server.host, server.port
    except RuntimeError as error:
        pytest.fail(f"could not start a Chroma server: {error}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL cluster on 127.0.0.1 for the whole run (Debian's `postgresql`)."""
    import tempfile

    from testkit.postgres import run_postgres

    # Not under tmp_path: pytest's folders are root's alone, and the server runs as `postgres`.
    directory = Path(tempfile.mkdtemp(prefix="rag-postgres-"))
    try:
        with run_postgres(directory) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server: Any, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database of the run's PostgreSQL server, for one test."""
    import re

    from testkit.postgres import create_database

    name = re.sub(r"\W", "_", request.node.name.lower())[:40] + f"_{id(request) % 10_000}"
    return create_database(postgres_server, name)


@pytest.fixture(scope="session")
def embedded_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage folder whose models/ the tests share (the embedder's ONNX graph is built there
    once); the embedded LLM itself needs nothing in storage."""
    storage = tmp_path_factory.mktemp("llm-storage")
    (storage / "models").mkdir()
    return storage


@pytest.fixture(scope="session")
def embedded_llm(embedded_storage: Path):  # type: ignore[no-untyped-def]
    """The real embedded model, greedy and short, loaded once."""
    from rag.config import Settings
    from rag.llm import build_llm
    from rag.llm.in_process import GGUFLLM

    llm = build_llm(
        Settings(storage_dir=embedded_storage, llm="embedded", temperature=0.0, max_new_tokens=20)
    )
    assert isinstance(llm, GGUFLLM) and llm.backend == "embedded"
    llm.warm_up()
    return llm


# --- a real chat server and a browser (UI and reliability tests) ---------------------------------


@pytest.fixture(scope="session")
def models_cache(embedded_storage: Path) -> Path:
    """One models/ folder shared by every server the tests start (each links its storage/models
    to it), so the embedder's ONNX graph is built once per run, not once per server."""
    return embedded_storage / "models"


@pytest.fixture
def server_home(tmp_path: Path, models_cache: Path) -> Path:
    return prepare_home(tmp_path, models_cache)


@pytest.fixture
def chat_server(server_home: Path) -> Iterator[ChatServer]:
    server = ChatServer(server_home)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def browser(request: pytest.FixtureRequest) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    # Screenshots go to test-artifacts/<suite>/<test>, e.g. test-artifacts/ui/test_...
    suite = Path(str(request.node.fspath)).parent.name
    shots = ARTIFACTS / suite / request.node.name
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    outside: list[str] = []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        context = chromium.new_context(viewport={"width": 1280, "height": 900})

        def guard(route, req) -> None:  # type: ignore[no-untyped-def]
            host = urlparse(req.url).hostname or ""
            if req.url.startswith(("data:", "blob:")) or host in LOCAL_HOSTS:
                route.continue_()
            else:
                outside.append(req.url)
                route.abort()

        context.route("**/*", guard)
        page = context.new_page()
        page.set_default_timeout(60_000)
        browser = Browser(page, outside, shots)

        def dialog(box) -> None:  # type: ignore[no-untyped-def]
            browser.dialogs.append(f"{box.type}: {box.message}")
            box.dismiss()

        page.on("dialog", dialog)
        yield browser
        context.close()
        chromium.close()
