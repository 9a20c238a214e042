"""Where shared state is kept: SQLite under storage/ (the default) or Postgres (RAG_DATABASE_URL) for replicas, with the schema's migrations and the writer lock."""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from rag.config import Settings
from rag.errors import ConfigError, StorageLocked, StoreError

# The manifest's tables (rag.manifest): SQLite and Postgres read these types alike.
MANIFEST_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    collection   TEXT NOT NULL,
    doc_id       TEXT NOT NULL,
    file         TEXT NOT NULL,   -- name shown to users: path relative to the folder ingested
    source       TEXT NOT NULL,   -- absolute path it was read from
    root         TEXT NOT NULL,   -- absolute folder it was ingested from
    content_hash TEXT,            -- NULL until the first complete index of the file
    chunks       BIGINT NOT NULL DEFAULT 0,
    size         BIGINT NOT NULL DEFAULT 0,
    indexed_at   DOUBLE PRECISION,
    pending      TEXT,            -- hash being written, 'prune', 'delete', or NULL when consistent
    PRIMARY KEY (collection, doc_id)
);
-- What a file's indexed version lists (rag.records), replaced with the version it belongs to.
CREATE TABLE IF NOT EXISTS records (
    collection   TEXT NOT NULL,
    doc_id       TEXT NOT NULL,
    position     BIGINT NOT NULL,
    record       TEXT NOT NULL,   -- JSON (rag.records.dumps)
    PRIMARY KEY (collection, doc_id, position)
);
"""
# The tables and camelCase columns Chainlit's SQLAlchemy data layer reads and writes (the chat
# threads, rag.threads), with the types of its JSON and list columns left to each database: TEXT
# on SQLite, JSONB and TEXT[] on Postgres. Ids are TEXT: the data layer binds them as strings.
CHAT_TABLES = """
CREATE TABLE IF NOT EXISTS users (
    "id"          TEXT PRIMARY KEY,
    "identifier"  TEXT NOT NULL UNIQUE,
    "metadata"    {json} NOT NULL,
    "createdAt"   TEXT
);
CREATE TABLE IF NOT EXISTS threads (
    "id"             TEXT PRIMARY KEY,
    "createdAt"      TEXT,
    "name"           TEXT,
    "userId"         TEXT,
    "userIdentifier" TEXT,
    "tags"           {list},
    "metadata"       {json},
    FOREIGN KEY ("userId") REFERENCES users("id") ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS steps (
    "id"            TEXT PRIMARY KEY,
    "name"          TEXT NOT NULL,
    "type"          TEXT NOT NULL,
    "threadId"      TEXT NOT NULL,
    "parentId"      TEXT,
    "streaming"     BOOLEAN NOT NULL,
    "waitForAnswer" BOOLEAN,
    "isError"       BOOLEAN,
    "metadata"      {json},
    "tags"          {list},
    "input"         TEXT,
    "output"        TEXT,
    "createdAt"     TEXT,
    "command"       TEXT,
    "modes"         {json},
    "start"         TEXT,
    "end"           TEXT,
    "generation"    {json},
    "showInput"     TEXT,
    "language"      TEXT,
    "indent"        INTEGER,
    "defaultOpen"   BOOLEAN,
    "autoCollapse"  BOOLEAN,
    FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS elements (
    "id"           TEXT PRIMARY KEY,
    "threadId"     TEXT,
    "type"         TEXT,
    "url"          TEXT,
    "chainlitKey"  TEXT,
    "name"         TEXT NOT NULL,
    "display"      TEXT,
    "objectKey"    TEXT,
    "size"         TEXT,
    "page"         INTEGER,
    "language"     TEXT,
    "forId"        TEXT,
    "mime"         TEXT,
    "props"        {json},
    "autoPlay"     BOOLEAN,
    "playerConfig" {json},
    FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS feedbacks (
    "id"       TEXT PRIMARY KEY,
    "forId"    TEXT NOT NULL,
    "threadId" TEXT NOT NULL,
    "value"    INTEGER NOT NULL,
    "comment"  TEXT,
    FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
);
"""
# The schema of a Postgres database, version by version: a migration is never edited once
# released, a change is a new one. 2 holds the chat threads (rag.threads).
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, MANIFEST_SCHEMA),
    (2, CHAT_TABLES.format(json="JSONB", list="TEXT[]")),
)
# Advisory lock keys (Postgres): one for migrations, one per storage the writer lock guards.
MIGRATION_LOCK = 0x72616701
WRITER_LOCK = "the index"  # what the message names: "the index is being written by rag pid 42 ..."
LOCK_POLL_S = 0.1
KEEPALIVE = "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"


class Database(Protocol):
    """The little SQL the manifest needs, with "?" placeholders on either engine."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...

    def transaction(self) -> Any: ...  # a context manager: all of it, or none of it

    def close(self) -> None: ...


class SqliteDatabase:
    """One process's state in storage/manifest.sqlite3 (WAL, synced on every commit)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(MANIFEST_SCHEMA)  # CREATE ... IF NOT EXISTS: idempotent

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._db.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class PostgresDatabase:
    """State shared by replicas in one Postgres database; its schema migrated on open."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._db = connect(url)
        self._lock = threading.RLock()  # one statement or transaction at a time on it
        migrate(self._db)

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The connection, opened again if it was lost (a Postgres restart, a dropped link): the
        statement that met the loss fails as a StoreError, the next one reconnects."""
        import psycopg

        with self._lock:
            if self._db.closed:
                self._db = connect(self._url)
            try:
                yield self._db
            except psycopg.OperationalError as error:
                if not self._db.closed and not self._db.broken:
                    raise
                raise StoreError(
                    f"lost the connection to RAG_DATABASE_URL ({error}); retry"
                ) from None

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as db:
            cursor = db.execute(sql.replace("?", "%s"), tuple(params))
            return cursor.fetchall() if cursor.description else []

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self._connection() as db, db.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # The statements inside take the lock again: it is re-entrant, for this thread only.
        with self._connection() as db, db.transaction():
            yield

    def close(self) -> None:
        self._db.close()


def open_database(settings: Settings) -> Database:
    """The database the manifest lives in: Postgres when RAG_DATABASE_URL is set, else SQLite
    under RAG_STORAGE_DIR."""
    if settings.database_url:
        if not settings.chroma_host:
            raise ConfigError(
                "RAG_DATABASE_URL shares the manifest between replicas, so they must share the "
                "index too: set RAG_CHROMA_HOST (a Chroma server)"
            )
        return PostgresDatabase(settings.database_url)
    return SqliteDatabase(settings.manifest_path)


@contextmanager
def writer_lock(settings: Settings, wait_s: float = 0.0) -> Iterator[None]:
    """The single-writer lock of the index: on Postgres when the manifest is there (replicas on
    other machines), else a file lock on the storage folder."""
    if settings.database_url:
        with postgres_writer_lock(settings.database_url, WRITER_LOCK, wait_s):
            yield
    else:
        with storage_lock(settings.storage_dir, wait_s):
            yield


def connect(url: str) -> Any:
    """A Postgres connection in autocommit, named for pg_stat_activity ("rag pid 42 on host")."""
    import psycopg  # on first use: only replicas on Postgres need it

    try:
        return psycopg.connect(
            url,
            autocommit=True,
            application_name=holder_name(),
            connect_timeout=10,
            # The server probes an idle connection after 10 s, 3 times 5 s apart: a writer whose
            # machine vanished (no FIN) loses its lock within 25 s; one that was killed, at once.
            options=KEEPALIVE,
        )
    except psycopg.Error as error:
        raise StoreError(f"cannot reach the database at RAG_DATABASE_URL ({error})") from None


def holder_name() -> str:
    return f"rag pid {os.getpid()} on {socket.gethostname()}"


def migrate(db: Any) -> list[int]:
    """Apply the migrations a database lacks, under a lock (replicas start at once); returns the
    versions applied (none when it is up to date)."""
    applied = []
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        db.execute(
            "CREATE TABLE IF NOT EXISTS rag_migrations "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
        done = {row[0] for row in db.execute("SELECT version FROM rag_migrations").fetchall()}
        for version, sql in MIGRATIONS:
            if version not in done:
                db.execute(sql)
                db.execute(
                    "INSERT INTO rag_migrations (version, applied_at) VALUES (%s, %s)",
                    (version, time.time()),
                )
                applied.append(version)
    return applied


@contextmanager
def storage_lock(storage_dir: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the single-writer lock on a storage folder, waiting up to `wait_s` for it.

    Fails with who holds it; the CLI does not wait (a second writer is told at once), the app
    waits so that an attachment is indexed once the background sync lets go.
    """
    storage_dir.mkdir(parents=True, exist_ok=True)
    lock_path = storage_dir / ".write.lock"
    deadline = time.monotonic() + wait_s
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(descriptor, 200, 0).decode(errors="replace").strip()
                    raise StorageLocked(
                        f"{storage_dir} is being written by {holder or 'another process'}; "
                        "wait for it to finish and retry"
                    ) from None
                time.sleep(0.1)
        # Who holds the lock is only a courtesy for the next writer's message: a full disk must not
        # stop a run here (unbuffered, so nothing is left to fail when the file is closed).
        with suppress(OSError):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"pid {os.getpid()}".encode(), 0)
        try:
            yield
        finally:
            with suppress(OSError):
                os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


@contextmanager
def postgres_writer_lock(url: str, name: str, wait_s: float = 0.0) -> Iterator[None]:
    """The single-writer lock of one storage, as a Postgres advisory lock held by a connection of
    its own: a holder that dies (even by SIGKILL) closes its connection, and Postgres releases
    the lock at once. Fails with who holds it, as the file lock does."""
    key = zlib.crc32(name.encode())
    db = connect(url)
    try:
        deadline = time.monotonic() + wait_s
        while not db.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise StorageLocked(
                    f"{name} is being written by {_lock_holder(db, key)}; "
                    "wait for it to finish and retry"
                )
            time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            db.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        db.close()


def _lock_holder(db: Any, key: int) -> str:
    row = db.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s",
        (key & 0xFFFFFFFF,),
    ).fetchone()
    return row[0] if row and row[0] else "another process"
