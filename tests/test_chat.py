"""Chat sessions without a browser: attachments stay in their chat, limits, names, health, privacy."""

from __future__ import annotations

from pathlib import Path

import pytest
from pdfgen import write_pdf

from rag.auth import UserStore
from rag.chat import ChatService, safe_name
from rag.web import strip_external


@pytest.fixture
def service(settings, embedder, tmp_path: Path) -> ChatService:  # type: ignore[no-untyped-def]
    root = Path(__file__).resolve().parents[1]
    chat = ChatService(settings.model_copy(update={"profiles_dir": root / "profiles"}))
    chat.index.embedder = embedder  # share the session's loaded model
    return chat


def files_found(session, question: str) -> set[str]:  # type: ignore[no-untyped-def]
    hits = session.service.index.retriever(session.profile.collection).retrieve(
        question, 10, session.where
    )
    return {hit.node.metadata["file"] for hit in hits}


def test_an_attachment_is_only_retrieved_in_its_own_chat(
    service: ChatService, tmp_path: Path
) -> None:
    upload = write_pdf(tmp_path / "upload.tmp", ["Cover page", "The harbour code is ZX-4417."])
    mine, other = service.session("chat-a", "general"), service.session("chat-b", "general")
    result = mine.attach(upload, "harbour.pdf")
    assert result.indexed, result.message
    assert "harbour.pdf" in files_found(mine, "harbour code ZX-4417")
    assert "harbour.pdf" not in files_found(other, "harbour code ZX-4417")


def test_reattaching_the_same_file_indexes_it_once(service: ChatService, tmp_path: Path) -> None:
    upload = tmp_path / "notes.tmp"
    upload.write_text("Meeting notes: the budget review is on Thursday.")
    session = service.session("chat-a", "general")
    assert session.attach(upload, "notes.txt").indexed
    before = service.index.collection().count()
    again = session.attach(upload, "notes.txt")
    assert again.indexed and "already indexed" in again.message
    assert service.index.collection().count() == before


def test_shared_documents_reach_every_chat(service: ChatService) -> None:
    data = service.settings.data_dir
    data.mkdir(parents=True)
    (data / "handbook.txt").write_text("Every employee gets 25 days of paid holiday.")
    service.start_sync()
    service.wait_for_sync(120)
    assert service.sync_status.state == "done" and service.sync_status.note() is None
    for chat in ("one", "two"):
        assert "handbook.txt" in files_found(service.session(chat, "general"), "paid holiday")


def test_a_refused_attachment_gives_the_reason(
    service: ChatService, tmp_path: Path, corpus: Path
) -> None:
    session = service.session("chat-a", "general")
    locked = corpus / "pdfs" / "bad" / "encrypted-open-password-acrobat.pdf"
    result = session.attach(locked, "locked.pdf")
    assert not result.indexed
    assert result.message.startswith("locked.pdf: ") and "password" in result.message
    unsupported = tmp_path / "x.tmp"
    unsupported.write_bytes(b"PK\x03\x04")
    assert "unsupported file type .docx" in session.attach(unsupported, "report.docx").message


def test_upload_size_limit(service: ChatService, tmp_path: Path) -> None:
    service.settings = service.settings.model_copy(update={"upload_max_mb": 0.001})
    big = tmp_path / "big.tmp"
    big.write_text("word " * 1000)
    result = service.session("c", "general").attach(big, "big.txt")
    assert not result.indexed and "RAG_UPLOAD_MAX_MB" in result.message


def test_upload_names_never_become_paths(service: ChatService, tmp_path: Path) -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..\\..\\boot.ini") == "boot.ini"
    assert safe_name(".hidden.txt") == "hidden.txt"
    upload = tmp_path / "u.tmp"
    upload.write_text("Traversal attempts must stay inside storage.")
    session = service.session("chat-a", "general")
    assert session.attach(upload, "../../../../tmp/evil.txt").indexed
    stored = list((service.settings.storage_dir / "uploads").rglob("*"))
    assert stored and all(service.settings.storage_dir in p.resolve().parents for p in stored)
    assert not any(p.name == "evil.txt" for p in stored)


def test_health_reports_backend_model_and_index(service: ChatService) -> None:
    service.settings = service.settings.model_copy(update={"llm": "embedded"})
    health = service.health()
    assert health["status"] == "ok" and health["backend"] == "embedded"
    assert health["model"].startswith("embedded ")
    assert {"sync", "collections"} <= set(health["index"])


def test_page_rewrite_drops_third_party_resources() -> None:
    page = (
        '<head><link rel="preconnect" href="https://fonts.googleapis.com" />'
        '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/katex.min.css">'
        '<meta property="og:image" content="https://example.com/x.png">'
        '<script type="module" src="/assets/index.js"></script></head>'
    )
    cleaned = strip_external(page)
    assert "https://" not in cleaned and '<script type="module" src="/assets/index.js">' in cleaned


def test_password_users() -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    users = UserStore({"alice": "wonderland", "bob": hashed})
    assert users.enabled
    assert users.check("alice", "wonderland") and not users.check("alice", "x")
    assert users.check("bob", "s3cret") and not users.check("bob", "wonderland")
    assert not users.check("mallory", "anything")


def test_tokens_stream_without_blocking_and_stop_early() -> None:
    import asyncio
    import threading
    import time

    from rag.chat import stream_tokens
    from rag.engine import Answer

    closed = threading.Event()

    def slow_tokens():  # type: ignore[no-untyped-def]
        try:
            for word in ["one ", "two ", "three ", "four "] * 50:
                time.sleep(0.01)  # a blocking model
                yield word
        finally:
            closed.set()

    async def consume(limit: int) -> tuple[list[str], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        beat = asyncio.create_task(ticker())
        answer = Answer("q", "q", [], "test", slow_tokens())
        received = []
        async for token in stream_tokens(answer):
            received.append(token)
            if len(received) == limit:
                break
        beat.cancel()
        return received, ticks

    received, ticks = asyncio.run(consume(limit=3))
    assert received == ["one ", "two ", "three "]
    assert ticks >= 3  # the event loop kept running while tokens were produced
    assert closed.wait(5)  # stopping the consumer stopped generation
