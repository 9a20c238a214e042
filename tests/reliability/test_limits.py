"""Files that are huge, deeply nested, decompression bombs or slow to parse are stopped by the
limits with a clear reason, and the app keeps answering other chats while one file is parsed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import Browser
from rag_cli import CLI_TIMEOUT_S, cli_env, rag_command
from test_api import make_service, serve, upload
from ui.test_chat_ui import ANSWER_TIMEOUT_MS, ANSWERED, ASSISTANT, Chat, assert_cites

from rag.errors import FileRefused
from rag.loaders import MAX_JSON_DEPTH
from rag.parsing import ParseWorker
from testkit.app import ChatServer, prepare_home
from testkit.pdf import pdf_from_objects, write_pdf, write_slow_pdf

GUIDE = [
    "Welcome to the lighthouse guide.\nThis page lists the opening hours of the museum.",
    "The lighthouse keeper is named Oswin Tarrant.\nHe feeds the gulls every Tuesday at noon.",
]
SLOW_PDF = "slow.pdf"  # slow_pdf_for: SLOW_MARGIN times the parse limit on this machine
FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
TEXT = b"BT /F1 12 Tf 72 700 Td (A page of ordinary text for the reader) Tj ET"


def stream(data: bytes, flate: bool = False) -> bytes:
    head = b"<< /Length %d /Filter /FlateDecode >>" if flate else b"<< /Length %d >>"
    return head % len(data) + b"\nstream\n" + data + b"\nendstream"


def one_page_pdf(content: bytes, flate: bool = False, page_extra: bytes = b"") -> bytes:
    return pdf_from_objects(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R" + page_extra + b" >>",
            FONT,
            stream(content, flate),
        ]
    )


def deep_page_tree_pdf(depth: int) -> bytes:
    """Pages inside pages inside pages..., `depth` levels down to the one real page."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    objects += [
        b"<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % (number + 1)
        for number in range(2, depth + 2)
    ]
    page = depth + 2
    objects.append(
        b"<< /Type /Page /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R >> >> "
        b"/Contents %d 0 R >>" % (page + 1, page + 2)
    )
    return pdf_from_objects([*objects, FONT, stream(TEXT)])


def deflate_bomb(size: int, pattern: bytes = b"\0") -> bytes:
    """A valid zlib stream that inflates to about `size` bytes of `pattern`, made in a second.

    Deflating after a full flush forgets all history, so one compressed 16 MB block repeats as is;
    the stream ends with an empty final block and the adler32 of everything it inflates to.
    """
    block = pattern * (16 * 2**20 // len(pattern))
    blocks = max(1, size // len(block))
    compressor = zlib.compressobj(9)
    head = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    body = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(blocks):
        checksum = zlib.adler32(block, checksum)
    return head + body * (blocks - 1) + b"\x03\x00" + checksum.to_bytes(4, "big")


@pytest.fixture(scope="module")
def worker() -> Iterator[ParseWorker]:
    """The real parse worker with the product's memory limit and a generous time limit."""
    with ParseWorker(timeout_s=60) as parse_worker:
        yield parse_worker


def parses_again(worker: ParseWorker) -> None:
    """A limit stopped one file, not the worker: the next file parses."""
    assert "ordinary text" in worker.parse(one_page_pdf(TEXT), "next.pdf").pages[0].text


# --- size limits -----------------------------------------------------------------------------------


def test_cli_refuses_a_file_over_rag_max_file_mb(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "huge.txt").write_bytes(b"lighthouse words " * (2 * 2**20 // 17 + 1))  # 2 MB
    (docs / "small.txt").write_text("The lighthouse keeper is named Oswin Tarrant.")
    result = subprocess.run(
        rag_command("ingest", docs, "--storage", tmp_path / "storage"),
        cwd=tmp_path,
        env={**cli_env(), "RAG_MAX_FILE_MB": "1"},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed: ")]
    assert failed == [
        "failed: huge.txt: the file is 2.0 MB, over the limit of 1 MB (RAG_MAX_FILE_MB)"
    ], result.stderr
    assert "1 indexed" in result.stdout + result.stderr


def test_chat_and_api_refuse_an_upload_over_rag_upload_max_mb(  # type: ignore[no-untyped-def]
    settings, embedder, tmp_path: Path
) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"lighthouse words " * (2 * 2**20 // 17 + 1))  # 2 MB
    service = make_service(settings, embedder, upload_max_mb=1)
    try:
        attached = service.session("chat-1").attach(big, "big.txt")
        assert not attached.indexed
        assert attached.message.startswith("big.txt: the file is 2.0 MB, over the upload limit")
        assert "RAG_UPLOAD_MAX_MB" in attached.message
        with serve(service) as url:
            response = upload(url, "big.txt", big.read_bytes())
        assert response.status_code == 413
        assert "RAG_UPLOAD_MAX_MB" in response.json()["error"]["message"]
        assert service.index.manifest.files("general") == []
        assert service.index.manifest.files("default") == []
    finally:
        service.index.close()


@pytest.mark.parametrize("how_big", ["just over", "far over"])
def test_a_file_that_expands_past_rag_max_file_chunks_is_refused_whole(  # type: ignore[no-untyped-def]
    settings, embedder, tmp_path: Path, how_big: str
) -> None:
    """A few kB can expand into more passages than anyone could wait to embed (a JSON of
    numbers): over the limit, the file is refused before anything is written."""
    from rag.index import Index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "keeper.txt").write_text("The lighthouse keeper is named Oswin Tarrant.")
    # The limit is 3 passages of 64 tokens. Just over: counted after chunking. Far over: the
    # text alone shows it, and it is refused without being split.
    numbers = 40 if how_big == "just over" else 400_000
    (docs / "numbers.json").write_text(json.dumps({"readings": list(range(numbers))}))
    limits = {"max_file_chunks": 3, "chunk_size": 64, "chunk_overlap": 0}
    index = Index(settings.model_copy(update=limits), embedder)
    try:
        report = index.ingest([docs])
        assert report.indexed == ["keeper.txt"]
        [refused] = report.failed
        assert refused.file == "numbers.json"
        assert "passages, over the limit of 3 per file (RAG_MAX_FILE_CHUNKS)" in refused.reason
        assert ("has about" in refused.reason) == (how_big == "far over"), refused.reason
        assert [row.file for row in index.manifest.files("default")] == ["keeper.txt"]
        assert index.collection().count() == 1
    finally:
        index.close()


# --- nesting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("brackets.json", b"[" * 100_000 + b"]" * 100_000, f"nested deeper than {MAX_JSON_DEPTH}"),
        (
            "objects.json",
            b'{"a": ' * 500 + b"1" + b"}" * 500,
            f"nested deeper than {MAX_JSON_DEPTH}",
        ),
        ("tree.pdf", deep_page_tree_pdf(5000), "the PDF is damaged or hostile"),
        (
            "arrays.pdf",
            one_page_pdf(TEXT, page_extra=b" /X " + b"[" * 100_000 + b"]" * 100_000),
            "the PDF is damaged",
        ),
        (
            "operands.pdf",
            one_page_pdf(TEXT + b" " + b"[" * 100_000 + b"]" * 100_000),
            "the PDF is damaged",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and "." in value else "",
)
def test_deeply_nested_files_are_refused_not_crashed(
    worker: ParseWorker, name: str, data: bytes, reason: str
) -> None:
    with pytest.raises(FileRefused) as refused:
        worker.parse(data, name)
    assert refused.value.file == name and reason in refused.value.reason, refused.value.reason
    parses_again(worker)


def test_hostile_front_matter_stays_text(worker: ParseWorker) -> None:
    # "Billion laughs": nine aliases of nine aliases... would write out 9**9 strings as metadata.
    laughs = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    laughs += [
        f"{b}: &{b} [{', '.join(['*' + a] * 9)}]"
        for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    deep = "nested: " + "[" * 50_000 + "]" * 50_000
    for front in ("\n".join(laughs), deep):
        note = f"---\n{front}\n---\nThe lighthouse keeper is named Oswin Tarrant.\n".encode()
        loaded = worker.parse(note, "note.md")
        assert "Oswin Tarrant" in loaded.pages[0].text
        assert len(loaded.pages[0].text) < 2 * len(note)  # nothing was expanded
        assert all(len(str(value)) < 1000 for value in loaded.metadata.values())


# --- bombs, memory and time ------------------------------------------------------------------------


def test_the_bomb_generator_makes_a_stream_that_really_inflates() -> None:
    bomb = deflate_bomb(64 * 2**20)
    inflater = zlib.decompressobj()
    size = sum(len(inflater.decompress(bomb[i : i + 65536])) for i in range(0, len(bomb), 65536))
    assert size == 64 * 2**20 and inflater.eof and len(bomb) < 2**20


def test_a_pdf_decompression_bomb_is_refused(worker: ParseWorker) -> None:
    bomb = one_page_pdf(deflate_bomb(4 * 2**30), flate=True)  # 4 GB from 4 MB
    with pytest.raises(FileRefused) as refused:
        worker.parse(bomb, "bomb.pdf")
    assert refused.value.reason.startswith(
        "the PDF is damaged or hostile: it trips a safety limit of the PDF reader"
    ), refused.value.reason
    parses_again(worker)


def test_a_file_under_the_readers_own_limits_but_slow_to_read_is_stopped_by_the_time_limit(
    tmp_path: Path,
) -> None:
    # pypdf reads at most 2 million tokens of one content stream (a 64 MB stream of text operators
    # trips that after 5 s here), so a file slow to read within its limits spreads the work over
    # pages: write_slow_pdf's 60 pages take about 1.4 s each here, 84 s in all, 40x the limit.
    slow = write_slow_pdf(tmp_path / "slow.pdf")
    with ParseWorker(timeout_s=2) as worker:
        with pytest.raises(FileRefused, match=r"slow\.pdf: parsing took longer than 2 s"):
            worker.parse(slow.read_bytes(), slow.name)
        parses_again(worker)


def test_the_memory_limit_stops_a_file_that_needs_too_much() -> None:
    numbers = b"[" + b"0," * 5_000_000 + b"0]"  # 10 MB of JSON, about 1 GB once parsed
    with ParseWorker(timeout_s=120, memory_limit_mb=400) as worker:
        with pytest.raises(FileRefused) as refused:
            worker.parse(numbers, "numbers.json")
        assert refused.value.reason.startswith("parsing needed more than 400 MB of memory")
        parses_again(worker)


# --- the app while a slow file is parsed -----------------------------------------------------------

# Chat B's whole answer must come while chat A's file is still being parsed, and A's file must then
# be stopped by this limit: a warmed-up answer takes a few seconds (a server's first, with the
# model loading, ~20 s on 2 cores), and the slow file is made to take SLOW_MARGIN times the limit
# on this machine, measured by the test. The limit is also how long A waits for its refusal.
SLOW_TIMEOUT_S = 60
SLOW_MARGIN = 5


def slow_pdf_for(path: Path, seconds: float) -> Path:
    """A write_slow_pdf file with enough pages to take `seconds` to parse here, timed now (its
    pages share one content stream, so the time grows with the page count and the file stays
    small)."""
    sample = write_slow_pdf(path.with_name(f"sample-{path.name}"), pages=2)
    with ParseWorker(timeout_s=120) as worker:
        parses_again(worker)  # the worker process is started before the timing
        started = time.perf_counter()
        worker.parse(sample.read_bytes(), sample.name)
        per_page = (time.perf_counter() - started) / 2
    return write_slow_pdf(path, pages=math.ceil(seconds / per_page))


@pytest.fixture(scope="module")
def limits_server(
    tmp_path_factory: pytest.TempPathFactory, models_cache: Path
) -> Iterator[ChatServer]:
    home = prepare_home(tmp_path_factory.mktemp("limits-server"), models_cache)
    write_pdf(home / "data" / "guide.pdf", GUIDE)
    server = ChatServer(
        home,
        settings={
            "RAG_PARSE_TIMEOUT_S": str(SLOW_TIMEOUT_S),
            "RAG_UPLOAD_MAX_MB": "2",
        },  # the 413 test below sends 3.3 MB
    )
    server.start()
    try:
        server.wait_for_sync()
        yield server
    finally:
        server.stop()


def test_the_chat_upload_route_refuses_a_file_over_the_limit(limits_server: ChatServer) -> None:
    response = httpx.post(
        f"{limits_server.url}/project/file",
        files={"file": ("big.txt", b"lighthouse " * 300_000)},  # 3.3 MB
        timeout=60,
    )
    assert response.status_code == 413
    assert "RAG_UPLOAD_MAX_MB" in response.json()["detail"]


def test_a_slow_file_is_stopped_while_another_chat_keeps_answering(
    browser: Browser, limits_server: ChatServer, tmp_path: Path
) -> None:
    chat_b = Chat(browser, limits_server)
    chat_b.open()
    chat_b.ask("Who is the lighthouse keeper?")  # the server's first answer: loads the model

    second = browser.page.context.new_page()  # type: ignore[attr-defined]
    second.set_default_timeout(60_000)
    chat_a = Chat(Browser(second, browser.outside, browser.shots), limits_server)
    chat_a.open()
    chat_a.attach(slow_pdf_for(tmp_path / SLOW_PDF, SLOW_MARGIN * SLOW_TIMEOUT_S))
    box = second.locator("#chat-input")
    box.fill("What does this file say?")
    box.press("Enter")
    second.get_by_text(f"Indexing {SLOW_PDF}").first.wait_for()  # chat A is parsing

    answer = chat_b.ask("On which day does he feed the gulls?", watch=True)

    # Chat B got its whole streamed answer while chat A's file was still being parsed.
    streamed = chat_b.page.evaluate("window.__answerTexts")
    assert len(streamed) > 1, streamed
    assert_cites(answer, "guide.pdf", 2)
    assert not [text for text in chat_a.assistant.all_inner_texts() if "⚠️" in text]
    assert second.locator("#stop-button").count() == 1  # A's message is still being handled
    chat_a.shot("a-still-parsing")

    # Then A's file is stopped by the time limit, with its reason, and A's question is answered.
    second.wait_for_function(
        ANSWERED, arg=[ASSISTANT, 2], timeout=SLOW_TIMEOUT_S * 1000 + ANSWER_TIMEOUT_MS, polling=200
    )
    chat_a.shot("a-refused")
    refusal = chat_a.assistant.all_inner_texts()[0]
    assert refusal.startswith(f"⚠️ {SLOW_PDF}: parsing took longer than {SLOW_TIMEOUT_S} s")
    assert "RAG_PARSE_TIMEOUT_S" in refusal
    assert browser.outside == []


def test_the_chat_refuses_an_empty_upload_with_its_reason(
    browser: Browser, limits_server: ChatServer, tmp_path: Path
) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    chat = Chat(browser, limits_server)
    chat.open()
    with chat.page.expect_response(
        lambda r: r.request.method == "POST" and "/project/file" in r.url
    ) as upload_response:
        chat.page.locator("#upload-button-input").set_input_files(str(empty))
    response = upload_response.value
    assert response.status in (400, 422), response.status
    assert "empty" in response.json()["detail"]


def test_a_process_with_over_1024_open_descriptors_still_parses() -> None:
    # A busy app holds sockets, stores and models open; select() breaks past descriptor 1023.
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with ParseWorker(timeout_s=60) as parse_worker:
            loaded = parse_worker.parse(b"Chimay Bleue 3.50e", "menu.txt")
        assert "Chimay" in loaded.pages[0].text
    finally:
        for descriptor in held:
            os.close(descriptor)
