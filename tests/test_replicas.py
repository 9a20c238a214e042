"""Replicas on one Postgres and one Chroma server: the shared manifest, its migrations and the writer lock, on a real PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from rag.config import Settings
from rag.database import PostgresDatabase, SqliteDatabase, connect, migrate, postgres_writer_lock
from rag.errors import ConfigError, StorageLocked
from rag.index import Index
from rag.manifest import Manifest

ROOT = Path(__file__).resolve().parents[1]


def test_migrations_are_applied_once(database_url: str) -> None:
    db = connect(database_url)
    try:
        assert migrate(db) == [1, 2]
        assert migrate(db) == []  # at every start: nothing left to do
    finally:
        db.close()


def test_replicas_starting_together_migrate_once(database_url: str) -> None:
    applied: list[int] = []

    def start() -> None:
        db = connect(database_url)
        try:
            applied.extend(migrate(db))
        finally:
            db.close()

    starts = [threading.Thread(target=start) for _ in range(4)]
    for thread in starts:
        thread.start()
    for thread in starts:
        thread.join()
    assert applied == [1, 2]


@pytest.fixture(params=["sqlite", "postgres"])
def manifest(request: pytest.FixtureRequest, tmp_path: Path) -> Manifest:
    if request.param == "sqlite":
        return Manifest(SqliteDatabase(tmp_path / "manifest.sqlite3"))
    return Manifest(PostgresDatabase(request.getfixturevalue("database_url")))


def test_the_manifest_keeps_a_files_version_and_records_on_either_database(
    manifest: Manifest,
) -> None:
    manifest.begin_write("docs", "a1", "menu.pdf", "/data/menu.pdf", "/data", "hash-1")
    assert manifest.get("docs", "a1").pending == "hash-1"  # type: ignore[union-attr]
    manifest.commit_write("docs", "a1", "hash-1", 12, 3400, ['{"name": "Duvel"}'])
    manifest.finish("docs", "a1")
    row = manifest.get("docs", "a1")
    assert row is not None and (row.content_hash, row.chunks, row.pending) == ("hash-1", 12, None)
    assert manifest.records("docs") == ['{"name": "Duvel"}']
    assert manifest.collections() == ["docs"]
    manifest.begin_delete("docs", "a1")
    manifest.commit_delete("docs", "a1")
    assert manifest.files("docs") == [] and manifest.records("docs") == []
    manifest.close()


def test_a_failed_transaction_leaves_the_manifest_as_it_was(manifest: Manifest) -> None:
    manifest.begin_write("docs", "a1", "menu.pdf", "/data/menu.pdf", "/data", "hash-1")
    with pytest.raises((sqlite3.Error, psycopg.Error)):  # a record no database can store
        manifest.commit_write("docs", "a1", "hash-1", 12, 3400, [object()])  # type: ignore[list-item]
    assert manifest.get("docs", "a1").content_hash is None  # type: ignore[union-attr]
    manifest.close()


def test_a_lost_database_connection_fails_one_call_clearly_then_reconnects(
    database_url: str,
) -> None:
    from rag.errors import StoreError

    manifest = Manifest(PostgresDatabase(database_url))
    try:
        admin = connect(database_url)
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        admin.close()
        with pytest.raises(StoreError, match="lost the connection to RAG_DATABASE_URL"):
            manifest.files("docs")
        assert manifest.files("docs") == []  # the next call has a new connection
    finally:
        manifest.close()


# --- the writer lock -------------------------------------------------------------------------------


def test_one_writer_at_a_time_and_the_next_is_told_who(database_url: str) -> None:
    said = rf"the index is being written by rag pid {os.getpid()}"
    with (
        postgres_writer_lock(database_url, "the index"),
        pytest.raises(StorageLocked, match=said),
        postgres_writer_lock(database_url, "the index"),
    ):
        pass
    with postgres_writer_lock(database_url, "the index"):  # free again once its holder lets go
        pass


HOLD_THE_LOCK = """
import sys, time
from rag.database import postgres_writer_lock
with postgres_writer_lock(sys.argv[1], "the index"):
    print("holding", flush=True)
    time.sleep(600)
"""


@contextmanager
def holding_the_lock(database_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """Another process that holds the writer lock until it is killed (here, or after)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, database_url],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"holding"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_holder_killed_by_sigkill_releases_the_lock(database_url: str) -> None:
    with holding_the_lock(database_url) as holder:
        with (
            pytest.raises(StorageLocked, match=rf"rag pid {holder.pid} on"),
            postgres_writer_lock(database_url, "the index"),
        ):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        # Its connection is gone, so Postgres let go of its lock: the next writer gets it.
        with postgres_writer_lock(database_url, "the index", wait_s=30):
            pass


# --- two processes' indexes on one Postgres and one Chroma server ------------------------------


def replica(
    tmp_path: Path, name: str, database_url: str, chroma: tuple[str, int], embedder: Any
) -> Index:
    host, port = chroma
    settings = Settings(
        storage_dir=tmp_path / name,
        data_dir=tmp_path / "data",
        database_url=database_url,
        chroma_host=host,
        chroma_port=port,
        collection=f"replicas-{abs(hash(database_url)) % 10_000}",
    )
    return Index(settings, embedder=embedder)


def test_replicas_share_the_manifest_and_index_once(
    tmp_path: Path, database_url: str, chroma_server: tuple[str, int], embedder: Any
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "harbour.txt").write_text("The secret harbour code is ZX-4417.")
    first = replica(tmp_path, "first", database_url, chroma_server, embedder)
    second = replica(tmp_path, "second", database_url, chroma_server, embedder)
    try:
        # The other replica has searched before the write: what it keeps must not go stale.
        assert second.retriever(second.default_collection).retrieve("harbour code", 3) == []
        assert first.ingest([data]).indexed == ["harbour.txt"]
        # The other replica knows the file is indexed, at this version: nothing to do.
        again = second.ingest([data])
        assert (again.indexed, again.unchanged) == ([], ["harbour.txt"])
        assert [r.file for r in second.manifest.files(second.default_collection)] == ["harbour.txt"]
        hits = second.retriever(second.default_collection).retrieve("harbour code", 3)
        assert [hit.node.metadata["file"] for hit in hits] == ["harbour.txt"]
        assert second.collection().count() == first.collection().count()  # no duplicate chunk
    finally:
        first.close()
        second.close()


PROGRESS = re.compile(r"^\[\d+/\d+\] ", re.MULTILINE)  # the CLI's line per file (stderr)


def test_a_cli_killed_mid_ingest_leaves_the_other_replica_a_whole_sync(
    tmp_path: Path, database_url: str, chroma_server: tuple[str, int], embedder: Any
) -> None:
    from rag_cli import cli_env, kill_tree, rag_command

    data = tmp_path / "data"
    data.mkdir()
    for number in range(12):
        paragraphs = [
            f"Harbour log {number}, entry {line}: the tide rose at {line} o'clock."
            for line in range(60)
        ]
        (data / f"log-{number:02d}.txt").write_text("\n\n".join(paragraphs))
    other = replica(tmp_path, "app", database_url, chroma_server, embedder)
    env = {
        **cli_env(),
        "RAG_STORAGE_DIR": str(tmp_path / "cli"),
        "RAG_DATABASE_URL": database_url,
        "RAG_CHROMA_HOST": chroma_server[0],
        "RAG_CHROMA_PORT": str(chroma_server[1]),
        "RAG_COLLECTION": other.default_collection,
    }
    log = tmp_path / "cli.log"
    with open(log, "wb") as output:
        cli = subprocess.Popen(
            rag_command("ingest", data),
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while not PROGRESS.search(log.read_text(errors="replace")) and cli.poll() is None:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        kill_tree(cli)  # the writer dies holding the lock, a file half written
        report = other.ingest([data], wait_s=30)  # its lock was let go with its connection
        assert not report.failed
        manifest = other.manifest.files(other.default_collection)
        assert sorted(row.file for row in manifest) == sorted(p.name for p in data.iterdir())
        assert all(row.pending is None and row.content_hash for row in manifest)
        # Every chunk belongs to a file's one indexed version: none duplicated, none orphaned.
        store = other.collection()
        assert store.chunk_counts() == {row.doc_id: row.chunks for row in manifest}
        assert store.count() == sum(row.chunks for row in manifest)
    finally:
        if cli.poll() is None:
            kill_tree(cli)
        other.close()


def test_a_database_without_a_shared_index_stops_the_start(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path, database_url="postgresql://rag@127.0.0.1:1/rag")
    with pytest.raises(ConfigError, match="set RAG_CHROMA_HOST"):
        _ = Index(settings).manifest


def test_a_database_url_that_is_not_postgres_stops_the_start() -> None:
    with pytest.raises(ValueError, match="must be a postgresql:// URL"):
        Settings(database_url="mysql://rag@db/rag")


# --- chat threads -------------------------------------------------------------------------------


def test_a_thread_saved_through_one_replica_is_listed_and_read_by_the_other(
    tmp_path: Path, database_url: str
) -> None:
    import asyncio

    from chainlit.types import Pagination, ThreadFilter
    from chainlit.user import User

    from rag.threads import ThreadStore, thread_database

    settings = Settings(storage_dir=tmp_path, database_url=database_url, chroma_host="127.0.0.1")
    url = thread_database(settings)
    assert url.startswith("postgresql+asyncpg://")

    async def scenario() -> tuple[list[str], Any]:
        one, two = ThreadStore(conninfo=url), ThreadStore(conninfo=url)
        try:
            alice = await one.create_user(User(identifier="alice"))
            assert alice is not None
            await one.update_thread(
                "thread-1",
                name="Harbour codes",
                user_id=alice.id,
                metadata={"chat_profile": "general"},
            )
            listed = await two.list_threads(Pagination(first=10), ThreadFilter(userId=alice.id))
            return [t["name"] for t in listed.data], await two.get_thread("thread-1")
        finally:
            await one.engine.dispose()
            await two.engine.dispose()

    names, thread = asyncio.run(scenario())
    assert names == ["Harbour codes"]
    assert thread is not None and thread["userIdentifier"] == "alice"
    assert thread["metadata"]["chat_profile"] == "general"


# --- two real app processes ---------------------------------------------------------------------

HARBOUR = b"Notes of the harbour office.\n\nThe secret harbour code is ZX-4417."


def threads_of(server: Any, cookie: str) -> list[str]:
    listed = httpx.post(
        f"{server.url}/project/threads",
        json={"pagination": {"first": 50}, "filter": {}},
        headers={"Cookie": cookie},
        timeout=30,
    )
    listed.raise_for_status()
    return [thread["id"] for thread in listed.json()["data"]]


def test_two_app_replicas_answer_from_one_index_and_share_the_threads(
    tmp_path: Path, database_url: str, chroma_server: tuple[str, int], models_cache: Path
) -> None:
    import asyncio

    import openai

    from testkit.app import ChatServer, prepare_home
    from testkit.chainlit import ChatClient, login

    shared = {
        "RAG_DATABASE_URL": database_url,
        "RAG_CHROMA_HOST": chroma_server[0],
        "RAG_CHROMA_PORT": str(chroma_server[1]),
        "RAG_COLLECTION": f"two-apps-{abs(hash(database_url)) % 10_000}",
        "CHAINLIT_AUTH_SECRET": "one-secret-for-every-replica-of-this-test",
        "RAG_LOCK_WAIT_S": "2",  # a replica waits this long for another writer, then says who
    }
    one = ChatServer(prepare_home(tmp_path / "one", models_cache), settings=shared)
    two = ChatServer(prepare_home(tmp_path / "two", models_cache), settings=shared)
    one.start()
    two.start()
    try:
        one.wait_for_sync()  # each syncs its (empty) data folder at start, in turn
        two.wait_for_sync()
        # While a CLI writes, a replica's upload waits its turn, then says who is writing.
        with holding_the_lock(database_url) as cli:
            refused = httpx.post(
                f"{one.url}/v1/documents", files={"file": ("harbour.txt", HARBOUR)}, timeout=120
            )
            assert refused.status_code == 503, refused.text
            assert f"being written by rag pid {cli.pid} on" in refused.json()["error"]["message"]
        # A document uploaded through one replica is answered from by the other.
        upload = httpx.post(
            f"{one.url}/v1/documents", files={"file": ("harbour.txt", HARBOUR)}, timeout=120
        )
        assert upload.status_code == 200, upload.text
        api = openai.OpenAI(base_url=f"{two.url}/v1", api_key="-", max_retries=0, timeout=300)
        completion = api.chat.completions.create(
            model="general", messages=[{"role": "user", "content": "What is the harbour code?"}]
        )
        files = {source["file"] for source in (completion.model_extra or {})["sources"]}
        assert "harbour.txt" in files, completion

        async def chats() -> tuple[str, str, list[str]]:
            async with httpx.AsyncClient(timeout=60) as http:
                cookie = await login(http, one.url)
            # A thread started on one replica, with an attachment of its own ...
            first = ChatClient(one.url, cookie)
            await first.connect()
            await first.ask(
                "What does the tide note say?", ("tides.txt", b"The tide turns at 14:05.")
            )
            await first.close()
            assert first.thread_id
            # ... is resumed on the other, which answers from that attachment.
            second = ChatClient(two.url, cookie, thread_id=first.thread_id)
            await second.connect()
            await second.ask("When does the tide turn?")
            await second.close()
            return cookie, first.thread_id, second.texts

        cookie, thread_id, said = asyncio.run(chats())
        assert any("tides.txt" in text for text in said), said
        assert thread_id in threads_of(one, cookie)
        assert threads_of(one, cookie) == threads_of(two, cookie)
    finally:
        one.stop()
        two.stop()
