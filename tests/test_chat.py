"""Chat sessions without a browser: attachments stay in their chat, limits, names, health, privacy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import unused_port

from rag.auth import UserStore
from rag.chat import ChatService
from rag.errors import BackendError
from rag.uploads import safe_name
from rag.web import strip_external
from testkit.pdf import write_pdf


@pytest.fixture
def service(settings, embedder, tmp_path: Path) -> Iterator[ChatService]:  # type: ignore[no-untyped-def]
    root = Path(__file__).resolve().parents[1]
    chat = ChatService(settings.model_copy(update={"profiles_dir": root / "profiles"}))
    chat.index.embedder = embedder  # share the session's loaded model
    yield chat
    chat.stop_sync()  # the sync thread and the data folder's watcher, if a test started them


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
    assert "unsupported file type .odt" in session.attach(unsupported, "report.odt").message


def test_an_attached_word_document_is_searchable_in_its_chat(
    service: ChatService, tmp_path: Path
) -> None:
    from test_formats import docx_bytes

    attached = tmp_path / "upload.bin"
    attached.write_bytes(docx_bytes())
    session = service.session("chat-docx", "general")
    assert session.attach(attached, "bar.docx").indexed
    assert "bar.docx" in files_found(session, "When is the bar closed?")


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
    assert service.health()["backend"] == {"name": "embedded", "ok": None}  # not built yet
    assert service.llm is not None
    health = service.health()
    assert health["status"] == "ok"
    assert health["backend"]["ok"] and health["backend"]["model"].startswith("embedded ")
    assert {"sync", "collections"} <= set(health["index"])


def test_health_never_probes_a_backend_and_reports_its_failure_as_data(
    service: ChatService,
) -> None:
    down = f"http://127.0.0.1:{unused_port()}"
    service.settings = service.settings.model_copy(
        update={"llm": "ollama", "ollama_base_url": down}
    )
    assert service.health()["backend"] == {"name": "ollama", "ok": None}  # no network call
    with pytest.raises(BackendError):
        service.llm  # noqa: B018 - building it is what fails
    backend = service.health()["backend"]
    assert backend["ok"] is False and down in backend["reason"]


def test_health_counts_the_indexed_files_without_opening_the_store(
    service: ChatService, tmp_path: Path
) -> None:
    (tmp_path / "note.txt").write_text("The ferry leaves the harbour at noon every day.")
    assert service.index.ingest([tmp_path / "note.txt"]).ok
    service.index.__dict__["client"] = None  # any use of the store would fail here
    collections = service.health()["index"]["collections"]
    assert collections["default"]["files"] == 1 and collections["default"]["chunks"] >= 1


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


def test_a_sync_that_fails_unexpectedly_says_so_and_is_tried_again(
    service: ChatService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.settings.data_dir.mkdir(parents=True, exist_ok=True)
    (service.settings.data_dir / "note.txt").write_text("The ferry leaves the harbour at noon.")
    real_ingest = service.index.ingest
    calls: list[int] = []

    def flaky_ingest(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the embedding server hung up")  # not a RagError
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr(service.index, "ingest", flaky_ingest)
    service.sync_retry_s = (2.0,)
    service.start_sync()
    service.wait_for_sync(60)
    status = service.sync_status
    assert status.state == "failed" and status.retry_in_s == 2.0
    assert "internal error: ConnectionError: the embedding server hung up" in status.message
    assert "trying again in 2 s" in (status.note() or "")
    for _ in range(600):
        if status.state == "done":
            break
        time.sleep(0.1)
    assert status.state == "done" and status.report is not None and status.report.ok
