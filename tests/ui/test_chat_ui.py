"""The chat app end to end: real `chainlit run app.py`, real embedded model, headless Chromium.

The embedded model is tiny and its answers are not meant to be wise: these tests check the
plumbing a user sees (streaming, steps, citations, attachments, threads) and that the page never
contacts another host (`browser.outside == []`). Screenshots of every step land in
test-artifacts/ui/<test name>/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import Browser
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from testkit.app import ChatServer, prepare_home
from testkit.pdf import write_encrypted_pdf, write_pdf

pytestmark = pytest.mark.ui

ANSWER_TIMEOUT_MS = 120_000  # the first answer of a server may take ~20 s on 2 cores

GUIDE = [
    "Welcome to the lighthouse guide.\nThis page lists the opening hours of the museum.",
    "The lighthouse keeper is named Oswin Tarrant.\nHe feeds the gulls every Tuesday at noon.",
]
HARBOUR = [
    "Notes about ships, tides and the weather in the bay.\nNothing secret on this page.",
    "The secret harbour code is ZX-4417.\nIt opens the north gate of the harbour.",
]
HARBOUR_QUESTION = "What is the secret harbour code?"

ASSISTANT = '[data-step-type="assistant_message"]'
USER = '[data-step-type="user_message"]'

# Records every distinct text of the newest assistant message, from the DOM mutations themselves:
# a streamed answer shows up as several growing texts before the final one.
WATCH_ANSWER = """() => {
    window.__answerTexts = [];
    const seen = new Set();
    const record = () => {
        const messages = document.querySelectorAll('[data-step-type="assistant_message"]');
        const last = messages[messages.length - 1];
        if (!last) return;
        const text = last.textContent;
        if (!seen.has(text)) { seen.add(text); window.__answerTexts.push(text); }
    };
    new MutationObserver(record).observe(document.body,
        {subtree: true, childList: true, characterData: true});
}"""

ANSWERED = """([selector, expected]) =>
    document.querySelectorAll(selector).length >= expected
    && !document.querySelector('#stop-button')"""


class Chat:
    """The chat page as a user drives it: open, attach, ask, start a new chat."""

    def __init__(self, browser: Browser, server: ChatServer) -> None:
        self.browser = browser
        self.page: Any = browser.page
        self.server = server
        self.sessions = 0  # chat sessions the server has started or resumed for this page
        self.page.on("websocket", self._watch_socket)

    def _watch_socket(self, socket: Any) -> None:
        # Every on_chat_start / on_chat_resume of the app sends the chat settings: a chat
        # session is ready for messages and uploads once they arrive.
        def frame(payload: str | bytes) -> None:
            if isinstance(payload, str) and payload.startswith('42["chat_settings"'):
                self.sessions += 1

        socket.on("framereceived", frame)

    def wait_for_session(self, before: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sessions <= before:
            if time.monotonic() > deadline:
                raise TimeoutError("the chat session did not start (no chat settings received)")
            self.page.wait_for_timeout(100)

    def open(self, path: str = "/") -> None:
        before = self.sessions
        self.page.goto(self.server.url + path)
        self.page.locator("#chat-input").wait_for()
        self.wait_for_session(before)

    @property
    def assistant(self) -> Any:
        return self.page.locator(ASSISTANT)

    def attach(self, *files: Path) -> None:
        """Attach files with the paperclip's file input; each upload must reach the server."""
        for file in files:
            with self.page.expect_response(
                lambda r: r.request.method == "POST" and "/project/file" in r.url
            ) as upload:
                self.page.locator("#upload-button-input").set_input_files(str(file))
            assert upload.value.ok, f"upload of {file.name} failed: {upload.value.status}"

    def ask(self, question: str, new_messages: int = 1, watch: bool = False) -> Any:
        """Type a question, press Enter, wait until the run ends; the newest assistant message."""
        expected = self.assistant.count() + new_messages
        if watch:
            self.page.evaluate(WATCH_ANSWER)
        box = self.page.locator("#chat-input")
        # The composer re-renders as a run ends; what was typed must be all there before Enter.
        box.fill(question)
        expect(box).to_have_value(question)
        box.press("Enter")
        try:
            self.page.wait_for_function(
                ANSWERED, arg=[ASSISTANT, expected], timeout=ANSWER_TIMEOUT_MS, polling=100
            )
        except PlaywrightTimeoutError:
            self.shot("no-answer")
            raise AssertionError(
                f"no answer to {question!r} within {ANSWER_TIMEOUT_MS / 1000:.0f} s; the chat "
                f"shows:\n{self.transcript()}\nserver log: {self.server.log}"
            ) from None
        return self.assistant.last

    def transcript(self) -> str:
        steps = self.page.locator("[data-step-type]")
        return (
            "\n".join(
                f"  {step.get_attribute('data-step-type')}: {step.inner_text()[:200]!r}"
                for step in steps.all()
            )
            + f"\n  stop button shown: {self.page.locator('#stop-button').count() > 0}"
        )

    def shot(self, name: str) -> None:
        """A screenshot once panels and collapsibles have finished their animations."""
        self.page.wait_for_timeout(400)
        self.browser.shot(name)

    def new_chat(self) -> None:
        before = self.sessions
        self.page.locator("#new-chat-button").click()
        confirm = self.page.get_by_role("button", name="Confirm")
        confirm.wait_for()
        self.shot("new-chat-confirmation")
        confirm.click()
        self.wait_for_session(before)
        self.page.locator("#starters").wait_for()  # starters show only on an empty chat


def chips(message: Any) -> list[str]:
    """The element chips of a message: the names of its sources ("[1] file, page N")."""
    return [text.strip() for text in message.locator("a.element-link").all_text_contents()]


def assert_cites(message: Any, file: str, page: int) -> None:
    names = chips(message)
    assert "Sources:" in (message.text_content() or ""), message.text_content()
    assert any(re.fullmatch(rf"\[\d+\] {re.escape(file)}, page {page}", n) for n in names), names


@pytest.fixture(scope="module")
def docs_server(
    tmp_path_factory: pytest.TempPathFactory, models_cache: Path
) -> Iterator[ChatServer]:
    """One server for the tests that do not stop it: guide.pdf in its data folder, synced."""
    home = prepare_home(tmp_path_factory.mktemp("docs-server"), models_cache)
    write_pdf(home / "data" / "guide.pdf", GUIDE)
    server = ChatServer(home)
    server.start()
    try:
        server.wait_for_sync()
        yield server
    finally:
        server.stop()


@pytest.fixture
def chat(browser: Browser, docs_server: ChatServer) -> Chat:
    return Chat(browser, docs_server)


@pytest.fixture
def harbour_pdf(tmp_path: Path) -> Path:
    return write_pdf(tmp_path / "harbour.pdf", HARBOUR)


def test_question_gets_a_streamed_answer_citing_file_and_page(chat: Chat, browser: Browser) -> None:
    chat.open()
    chat.shot("empty-chat")
    assert chat.page.locator("#starters").is_visible()

    answer = chat.ask("Who is the lighthouse keeper and when does he feed the gulls?", watch=True)
    chat.shot("answered")

    assert "Who is the lighthouse keeper" in chat.page.locator(USER).last.inner_text()
    assert chat.page.locator('[data-step-type="retrieval"]').filter(has_text="Search").count() == 1
    assert_cites(answer, "guide.pdf", 2)

    # Streamed: the DOM showed the answer growing, text first, before the final message.
    texts: list[str] = chat.page.evaluate("window.__answerTexts")
    partial = [t for t in texts if t.strip() and "Sources:" not in t]
    assert len(partial) >= 2, f"the answer arrived in one piece: {texts}"
    assert max(len(t) for t in partial) < len(texts[-1])
    assert "Sources:" in texts[-1]

    # The answer quotes the line its facts come from.
    assert "“The lighthouse keeper is named Oswin Tarrant.”" in texts[-1]
    # A chip opens its source in the side panel: the cited page alone (a one-page excerpt, not
    # the whole PDF), with the quoted line highlighted (the panel also opens by itself).
    for chip in reversed(answer.locator("a.element-link").all()):
        name = (chip.text_content() or "").strip()
        page = int(name.rsplit(" ", 1)[1])
        chip.click()
        chat.page.locator("#side-view-title", has_text=name).wait_for()
        side = chat.page.locator("#side-view-content")
        side.locator('[data-page-number="1"]').get_by_text(
            GUIDE[page - 1].split("\n")[0]
        ).wait_for()
        assert side.locator("[data-page-number]").count() == 1
        side.locator(".highlightAnnotation").first.wait_for(state="attached")
        chat.shot(f"source-page-{page}")
    assert browser.outside == []
    assert browser.dialogs == []


def test_uploaded_pdf_is_indexed_and_cited(chat: Chat, browser: Browser, harbour_pdf: Path) -> None:
    chat.open()
    chat.ask("Who is the lighthouse keeper?")  # an upload mid-conversation, not on a fresh chat
    chat.shot("first-answer")

    chat.attach(harbour_pdf)
    chat.shot("attached")
    answer = chat.ask(HARBOUR_QUESTION)
    chat.shot("answered")

    user = chat.page.locator(USER).last
    assert "harbour.pdf" in user.inner_text()  # the upload arrives as an element of the message
    indexing = chat.page.locator('[data-step-type="tool"]').filter(has_text="Indexing harbour.pdf")
    assert indexing.count() == 1
    chat.page.locator('[id="step-Indexing harbour.pdf"]').click()  # the step's details
    indexing.get_by_text(re.compile(r"harbour\.pdf indexed: \d+ passages")).wait_for()
    chat.shot("indexing-step-open")
    chat.page.locator('[id="step-Search"]').last.click()  # what was searched, with scores
    chat.shot("search-step-open")
    assert_cites(answer, "harbour.pdf", 2)
    assert browser.outside == []
    assert browser.dialogs == []


def test_an_attached_spreadsheet_is_cited_by_sheet_and_row(
    chat: Chat, browser: Browser, tmp_path: Path
) -> None:
    from test_formats import xlsx_bytes

    sheet = tmp_path / "beers.xlsx"
    sheet.write_bytes(xlsx_bytes())
    chat.open()
    chat.attach(sheet)  # the page's file picker takes what rag reads, not only PDFs
    answer = chat.ask("What does a Westmalle Tripel cost?")
    chat.shot("spreadsheet-answered")
    assert "4.20" in (answer.text_content() or "")
    assert "[1] beers.xlsx, sheet “Beers”, row 3" in chips(answer), chips(answer)
    assert browser.outside == []


def test_attachment_is_not_retrieved_in_another_chat(
    chat: Chat, browser: Browser, harbour_pdf: Path
) -> None:
    chat.open()
    chat.attach(harbour_pdf)
    answer = chat.ask(HARBOUR_QUESTION)
    assert_cites(answer, "harbour.pdf", 2)
    chat.shot("first-chat")

    chat.new_chat()
    chat.shot("new-chat")
    assert chat.assistant.count() == 0

    answer = chat.ask(HARBOUR_QUESTION)
    chat.shot("second-chat-answered")
    assert "4417" not in (answer.text_content() or "")  # the code is only in the attachment
    names = chips(answer)
    assert names, "the shared guide.pdf should still be searched in the new chat"
    assert not [n for n in names if "harbour.pdf" in n], names
    assert all("guide.pdf" in n for n in names), names
    assert browser.outside == []
    assert browser.dialogs == []


def test_refused_file_shows_its_reason_and_the_chat_goes_on(
    chat: Chat, browser: Browser, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"this is not a PDF at all \x00\x01\x02\xff garbage")

    chat.open()
    chat.attach(broken)
    chat.shot("attached")
    chat.ask("What does this file say?", new_messages=2)  # the refusal, then the answer
    chat.shot("refused")
    texts = chat.assistant.all_inner_texts()
    assert texts[0].startswith("⚠️"), texts
    assert "broken.pdf" in texts[0] and "not a PDF" in texts[0], texts

    answer = chat.ask("Who is the lighthouse keeper?")
    chat.shot("next-answer")
    assert not answer.inner_text().startswith("⚠️")
    assert_cites(answer, "guide.pdf", 2)
    assert browser.outside == []
    assert browser.dialogs == []


def test_password_protected_pdf_is_refused_with_its_reason(
    chat: Chat, browser: Browser, tmp_path: Path
) -> None:
    locked = write_encrypted_pdf(tmp_path / "locked.pdf", HARBOUR, user_password="s3cret")

    chat.open()
    chat.attach(locked)
    chat.ask("What does this file say?", new_messages=2)  # the refusal, then the answer
    chat.shot("refused")
    texts = chat.assistant.all_inner_texts()
    assert texts[0].startswith("⚠️"), texts
    assert "locked.pdf" in texts[0] and "needs a password" in texts[0], texts
    assert browser.outside == []

    # The chat's PDF preview must not trap the user in password prompts (public/ script).
    assert browser.dialogs == [], browser.dialogs[:3]
    answer = chat.ask("Who is the lighthouse keeper?")
    assert_cites(answer, "guide.pdf", 2)
    assert browser.dialogs == []


def test_thread_is_listed_and_resumed_after_a_restart(browser: Browser, server_home: Path) -> None:
    write_pdf(server_home / "data" / "guide.pdf", GUIDE)
    question = "Who keeps the lighthouse, and on which day are the gulls fed?"
    first = ChatServer(server_home)
    first.start()
    try:
        first.wait_for_sync()
        chat = Chat(browser, first)
        chat.open()
        answer = chat.ask(question)
        assert_cites(answer, "guide.pdf", 2)
        said = answer.locator('[role="article"]').first.inner_text()
        chat.page.locator("#thread-history").get_by_text(question).wait_for()
        chat.shot("before-restart")
    finally:
        first.stop()

    second = ChatServer(server_home, port=first.port)  # same storage, same address
    second.start()
    try:
        second.wait_for_sync()
        chat = Chat(browser, second)
        chat.open()
        entry = chat.page.locator("#thread-history").get_by_text(question)
        entry.wait_for()
        chat.shot("after-restart")

        before = chat.sessions
        entry.click()
        chat.wait_for_session(before)  # on_chat_resume ran
        chat.page.locator(USER, has_text=question).wait_for()
        resumed = chat.assistant.last
        resumed.locator("a.element-link").first.wait_for()
        chat.shot("resumed")
        assert re.search(r"/thread/[0-9a-f-]{36}$", chat.page.url), chat.page.url
        assert resumed.locator('[role="article"]').first.inner_text() == said
        assert_cites(resumed, "guide.pdf", 2)

        follow_up = chat.ask("And what are the opening hours?")
        chat.shot("follow-up")
        assert chat.page.locator(USER).count() == 2
        assert "Sources:" in (follow_up.text_content() or "")
    finally:
        second.stop()
    assert browser.outside == []
    assert browser.dialogs == []


def test_a_cv_attached_to_the_job_coach_ranks_the_postings(
    browser: Browser, server_home: Path, corpus: Path
) -> None:
    settings = {"RAG_PROFILE": "job-listings", "RAG_DATA_DIR": str(corpus / "jobs")}
    server = ChatServer(server_home, settings=settings)
    server.start()
    try:
        server.wait_for_sync()
        chat = Chat(browser, server)
        chat.open()
        chat.attach(corpus / "cv" / "jsonresume-sample.resume.json")
        answer = chat.ask("Here is my CV")
        chat.shot("ranked")
        text = answer.text_content() or ""
        assert "Web Developer at Microsoft" in text and "7 of 11" in text, text
        assert "Your CV does not show:" in text
        names = chips(answer)
        assert any("jsonresume-sample.job.json" in n for n in names), names
        assert any("jsonresume-sample.resume.json" in n for n in names), names
    finally:
        server.stop()
    assert browser.outside == []
    assert browser.dialogs == []


def test_healthz_reports_backend_model_and_index(docs_server: ChatServer) -> None:
    response = httpx.get(f"{docs_server.url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    health = response.json()
    assert health["status"] == "ok"
    assert health["backend"]["name"] == "embedded" and health["backend"]["ok"]
    assert "SmolLM2" in health["backend"]["model"]
    sync = health["index"]["sync"]
    assert sync["state"] == "done"
    assert (sync["files_total"], sync["files_done"], sync["failed"]) == (1, 1, [])
    default = health["index"]["collections"]["default"]
    assert default["files"] >= 1 and default["chunks"] >= 2


def test_chat_page_is_served_same_origin_only(docs_server: ChatServer) -> None:
    response = httpx.get(docs_server.url + "/", timeout=10)
    assert response.status_code == 200
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert not re.search(r"""(?:src|href)=["']https?://""", response.text)
