"""The live data folder: while the app runs, what is added, changed or removed in data/ reaches the
index through the start-up sync's own code, one sync at a time, with the same refusals.

Real parts: the bundled embedder, embedded Chroma, files in tmp_path, the inotify watcher. Nothing
asserts on time: each test polls for an outcome, with a generous deadline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.chat import ChatService
from rag.config import load_settings
from rag.errors import ConfigError
from rag.ingest import find_sources, skipped
from rag.watch import FolderWatcher

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 120.0
# Short, so the tests are quick; what they check does not depend on it.
QUIET_S = 0.3


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"never happened: {what}")


class Syncs:
    """Index.ingest, counted: how many syncs ran, and the most that ever ran at once. `hold`
    makes sync number `hold_at` wait (before it writes anything) until it is set."""

    def __init__(self, ingest: Callable[..., Any]) -> None:
        self.ingest = ingest
        self.calls = 0
        self.running = 0
        self.most = 0
        self.hold_at = 0
        self.hold = threading.Event()
        self.held = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            held = self.calls == self.hold_at
        try:
            if held:
                self.held.set()
                self.hold.wait(DEADLINE_S)
            return self.ingest(*args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


def make_service(settings, embedder) -> tuple[ChatService, Syncs]:  # type: ignore[no-untyped-def]
    service = ChatService(
        settings.model_copy(update={"profiles_dir": ROOT / "profiles", "watch_quiet_s": QUIET_S})
    )
    service.index.embedder = embedder  # the session's loaded model
    syncs = Syncs(service.index.ingest)
    service.index.ingest = syncs  # type: ignore[method-assign]
    return service, syncs


@pytest.fixture
def live(settings, embedder, data_dir: Path) -> Iterator[tuple[ChatService, Syncs]]:  # type: ignore[no-untyped-def]
    """A service whose start-up sync has indexed data/ (one file), watching it from then on."""
    (data_dir / "handbook.txt").write_text("Every employee gets 25 days of paid holiday a year.")
    service, syncs = make_service(settings, embedder)
    service.start_sync()
    service.wait_for_sync(DEADLINE_S)
    assert service.sync_status.state == "done" and syncs.calls == 1
    assert service.watcher is not None and service.watcher.wait_ready(DEADLINE_S)
    yield service, syncs
    service.stop_sync()
    assert not service.watcher.running


def indexed(service: ChatService) -> dict[str, str | None]:
    """File name -> content hash of what the data folder's collection holds."""
    records = service.index.manifest.files(service.default_profile().collection)
    return {record.file: record.content_hash for record in records}


def found(service: ChatService, question: str) -> set[str]:
    session = service.session("chat", "general")
    hits = service.index.retriever(session.profile.collection).retrieve(question, 10, session.where)
    return {hit.node.metadata["file"] for hit in hits}


def settled(service: ChatService, syncs: Syncs) -> bool:
    return service.sync_status.state == "done" and syncs.running == 0


def failed(service: ChatService) -> list[str]:
    report = service.sync_status.report
    return [str(refused) for refused in report.failed] if report else []


# --- added, changed, removed --------------------------------------------------------------------


def test_an_added_file_becomes_searchable(live: tuple[ChatService, Syncs], data_dir: Path) -> None:
    service, syncs = live
    (data_dir / "ferry.md").write_text("# Ferry\n\nThe ferry to the island leaves at 07:40.\n")
    eventually(lambda: "ferry.md" in indexed(service) and settled(service, syncs), "ferry indexed")
    assert "ferry.md" in found(service, "When does the ferry to the island leave?")
    assert service.sync_status.note() is None and syncs.most == 1


def test_a_file_in_a_new_subfolder_is_picked_up(
    live: tuple[ChatService, Syncs], data_dir: Path
) -> None:
    service, syncs = live
    (data_dir / "menus" / "bar").mkdir(parents=True)
    (data_dir / "menus" / "bar" / "drinks.txt").write_text("Duvel costs 3.50 euros at the bar.")
    name = "menus/bar/drinks.txt"
    eventually(lambda: name in indexed(service) and settled(service, syncs), "drinks indexed")
    assert name in found(service, "How much is a Duvel?")


def test_a_changed_file_is_indexed_again(live: tuple[ChatService, Syncs], data_dir: Path) -> None:
    service, syncs = live
    before = indexed(service)["handbook.txt"]
    (data_dir / "handbook.txt").write_text("The canteen serves lasagne on Wednesdays.")
    eventually(
        lambda: indexed(service)["handbook.txt"] != before and settled(service, syncs),
        "handbook re-indexed",
    )
    assert service.sync_status.report and service.sync_status.report.indexed == ["handbook.txt"]
    assert "handbook.txt" in found(service, "What does the canteen serve on Wednesdays?")
    store = service.index.collection()
    texts = store.collection.get(include=["documents"])["documents"]
    assert not any("paid holiday" in text for text in texts), "the old version was left behind"


def test_a_deleted_file_leaves_the_index(live: tuple[ChatService, Syncs], data_dir: Path) -> None:
    service, syncs = live
    (data_dir / "handbook.txt").unlink()
    eventually(lambda: not indexed(service) and settled(service, syncs), "handbook removed")
    assert service.sync_status.report and service.sync_status.report.removed == ["handbook.txt"]
    assert service.index.collection().count() == 0
    assert "handbook.txt" not in found(service, "How many days of paid holiday?")


def test_a_file_moved_in_whole_and_renamed_in_the_folder(
    live: tuple[ChatService, Syncs], data_dir: Path, tmp_path: Path
) -> None:
    # What a download or a careful copy does: the bytes are written elsewhere, then renamed in.
    service, syncs = live
    outside = tmp_path / "download.txt"
    outside.write_text("The museum is closed on Mondays.")
    outside.rename(data_dir / "museum.txt")
    eventually(lambda: "museum.txt" in indexed(service) and settled(service, syncs), "museum")
    (data_dir / "museum.txt").rename(data_dir / "museum-hours.txt")
    eventually(
        lambda: (
            set(indexed(service)) == {"handbook.txt", "museum-hours.txt"}
            and settled(service, syncs)
        ),
        "the rename synced",
    )


# --- one sync at a time -----------------------------------------------------------------------------


def test_a_burst_of_changes_makes_few_syncs_never_two_at_once(
    live: tuple[ChatService, Syncs], data_dir: Path
) -> None:
    service, syncs = live
    names = [f"note-{n:02d}.txt" for n in range(30)]
    for n, name in enumerate(names):
        with (data_dir / name).open("w") as file:  # written in pieces, as a copy is
            for part in range(5):
                file.write(f"Note {n}, part {part}: the code word for locker {n} is quartz{n}.\n")
                file.flush()
    eventually(
        lambda: set(names) <= set(indexed(service)) and settled(service, syncs), "notes indexed"
    )
    assert syncs.most == 1
    assert syncs.calls - 1 < len(names), "the burst was not taken as one"
    assert "note-17.txt" in found(service, "code word for locker 17 quartz17")


def test_changes_during_a_sync_make_exactly_one_more(
    live: tuple[ChatService, Syncs], data_dir: Path
) -> None:
    service, syncs = live
    watcher = service.watcher
    assert watcher is not None
    syncs.hold_at = 2  # the first sync the folder asks for waits, as a long one would
    (data_dir / "first.txt").write_text("The first change: the gate code is 1111.")
    assert syncs.held.wait(DEADLINE_S), "no sync for the first change"
    assert service.sync_status.state == "running"
    # Three more bursts while it runs, each one seen by the watcher.
    for n, change in enumerate(
        [
            lambda: (data_dir / "second.txt").write_text("The second change: the code is 2222."),
            lambda: (data_dir / "first.txt").write_text("The first file again: code 3333."),
            lambda: (data_dir / "handbook.txt").unlink(),
        ]
    ):
        seen = watcher.changes_seen
        change()
        eventually(lambda seen=seen: watcher.changes_seen > seen, f"burst {n} seen")
    assert syncs.calls == 2 and syncs.running == 1
    syncs.hold.set()
    eventually(lambda: syncs.calls == 3 and settled(service, syncs), "the one more sync")
    assert syncs.most == 1
    assert set(indexed(service)) == {"first.txt", "second.txt"}
    assert "first.txt" in found(service, "the first file again code 3333")
    # The sync after the held one found nothing left to do, and asked for no other.
    report = service.sync_status.report
    assert report and not report.indexed and not report.removed
    assert not service._sync_wanted.is_set()


# --- refusals, hidden and temporary files -------------------------------------------------------------


def test_a_refused_file_says_what_the_start_says_and_loses_nothing(
    settings,  # type: ignore[no-untyped-def]
    embedder,
    data_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="rag.chat")
    (data_dir / "handbook.txt").write_text("Every employee gets 25 days of paid holiday a year.")
    (data_dir / "ferry.txt").write_text("The ferry to the island leaves at 07:40.")
    (data_dir / "scan.pdf").write_bytes(b"")
    (data_dir / "blob.txt").write_bytes(b"\x00\x01binary\x00" * 100)
    service, syncs = make_service(settings, embedder)
    service.start_sync()
    try:
        service.wait_for_sync(DEADLINE_S)
        at_start = failed(service)
        assert at_start == [
            "blob.txt: the file is binary, not text",
            "scan.pdf: the file is empty (0 bytes)",
        ]
        assert service.watcher is not None and service.watcher.wait_ready(DEADLINE_S)
        chunks = service.index.collection().count()

        # Live: the same refusals for new files, and an indexed file turned bad keeps its passages.
        (data_dir / "scan-2.pdf").write_bytes(b"")
        (data_dir / "handbook.txt").write_bytes(b"\x00\x01binary\x00" * 100)
        eventually(lambda: len(failed(service)) == 4 and settled(service, syncs), "refusals")
        assert failed(service) == [
            "blob.txt: the file is binary, not text",
            "handbook.txt: the file is binary, not text",
            "scan-2.pdf: the file is empty (0 bytes)",
            "scan.pdf: the file is empty (0 bytes)",
        ]
        assert service.sync_status.state == "done" and service.sync_status.note() is None
        assert set(indexed(service)) == {"handbook.txt", "ferry.txt"}
        assert service.index.collection().count() == chunks
        assert "handbook.txt" in found(service, "How many days of paid holiday?")
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        for line in at_start:  # the same log line at start and live
            assert warned.count(f"data folder: {line}") == 2, line
        assert "data folder: handbook.txt: the file is binary, not text" in warned
    finally:
        service.stop_sync()


def test_hidden_and_temporary_files_are_left_alone(
    live: tuple[ChatService, Syncs], data_dir: Path
) -> None:
    service, syncs = live
    temporary = [
        ".notes.txt",  # a dot file
        ".git/HEAD",  # in a dot folder
        ".handbook.txt.swp",  # vim
        "handbook.txt~",  # emacs, gedit
        "#handbook.txt#",  # emacs autosave
        "~$report.docx",  # an office lock file
        "report.pdf.partial",  # firefox
        "report.pdf.crdownload",  # chromium
        "report.pdf.part",
        "copy.tmp",
    ]
    for name in temporary:
        (data_dir / name).parent.mkdir(exist_ok=True)
        (data_dir / name).write_text("not a document")
    (data_dir / "ferry.txt").write_text("The ferry to the island leaves at 07:40.")
    eventually(lambda: "ferry.txt" in indexed(service) and settled(service, syncs), "ferry")
    assert set(indexed(service)) == {"handbook.txt", "ferry.txt"}
    assert failed(service) == []  # skipped, not refused
    watcher = service.watcher
    assert watcher is not None
    for name in temporary:
        assert skipped(Path(name)), name
        assert not watcher.wanted(None, str(data_dir.resolve() / name)), name
    assert watcher.wanted(None, str(data_dir.resolve() / "menus" / "bar.pdf"))
    assert watcher.wanted(None, str(data_dir.resolve() / "menus"))  # a folder moved in
    sources, _ = find_sources([data_dir])
    assert sorted(source.name for source in sources) == ["ferry.txt", "handbook.txt"]


def test_a_storage_folder_inside_the_data_folder_is_not_a_change(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "storage").mkdir(parents=True)
    watcher = FolderWatcher(data, lambda: None, exclude=(data / "storage",))
    assert not watcher.wanted(None, str((data / "storage" / "chroma.sqlite3").resolve()))
    assert not watcher.wanted(None, str((data / "storage").resolve()))
    assert watcher.wanted(None, str((data / "storage.txt").resolve()))


# --- the folder itself, the setting, stopping -----------------------------------------------------


def test_a_data_folder_made_after_the_start_is_synced(settings, embedder) -> None:  # type: ignore[no-untyped-def]
    service, syncs = make_service(settings, embedder)
    service.start_sync()
    try:
        service.wait_for_sync(DEADLINE_S)
        assert service.sync_status.message.startswith("no data folder at")
        settings.data_dir.mkdir()
        (settings.data_dir / "ferry.txt").write_text("The ferry to the island leaves at 07:40.")
        eventually(lambda: "ferry.txt" in indexed(service) and settled(service, syncs), "ferry")
        assert service.sync_status.message == "" and syncs.most == 1
    finally:
        service.stop_sync()


def test_watching_can_be_turned_off(
    settings, embedder, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RAG_WATCH_DATA", "false")
    assert load_settings().watch_data is False
    service, syncs = make_service(settings.model_copy(update={"watch_data": False}), embedder)
    (data_dir / "ferry.txt").write_text("The ferry to the island leaves at 07:40.")
    service.start_sync()
    service.wait_for_sync(DEADLINE_S)
    assert service.watcher is None
    assert service._sync_thread is not None
    service._sync_thread.join(DEADLINE_S)  # one sync, as before: the thread ends after it
    assert not service._sync_thread.is_alive() and syncs.calls == 1
    assert "ferry.txt" in indexed(service)


@pytest.mark.parametrize(
    ("name", "value"), [("RAG_WATCH_DATA", "maybe"), ("RAG_WATCH_QUIET_S", "-1")]
)
def test_a_watch_setting_that_does_not_parse_stops_the_start(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_stopping_ends_the_watcher_and_the_sync_thread(
    live: tuple[ChatService, Syncs], data_dir: Path
) -> None:
    service, syncs = live
    watcher, thread = service.watcher, service._sync_thread
    assert watcher is not None and thread is not None
    assert watcher.running and thread.is_alive()
    service.stop_sync()
    assert not watcher.running and not thread.is_alive()
    calls = syncs.calls
    (data_dir / "late.txt").write_text("Written after the stop.")
    # Nothing runs any more to sync it: the threads are gone (checked above), so no wait is needed.
    assert syncs.calls == calls and "late.txt" not in indexed(service)


# --- the real app -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_running_app_follows_its_data_folder(chat_server, server_home: Path) -> None:  # type: ignore[no-untyped-def]
    def files() -> int:
        index = chat_server.health()["index"]
        settled = index["sync"]["state"] == "done"
        return index.get("collections", {}).get("default", {}).get("files", 0) if settled else -1

    chat_server.wait_for_sync()
    assert files() == 0
    (server_home / "data" / "ferry.txt").write_text("The ferry to the island leaves at 07:40.")
    eventually(lambda: files() == 1, "the app indexed ferry.txt")
    (server_home / "data" / "empty.pdf").write_bytes(b"")
    eventually(
        lambda: (
            chat_server.health()["index"]["sync"]["failed"]
            == ["empty.pdf: the file is empty (0 bytes)"]
        ),
        "the app refused empty.pdf",
    )
    (server_home / "data" / "ferry.txt").unlink()
    eventually(lambda: files() == 0, "the app dropped ferry.txt")
    chat_server.stop()  # stops the watcher too: the app exits on its own
    assert chat_server.process is not None and chat_server.process.returncode is not None
