"""The manifest: which file is indexed in which collection with which content hash (SQLite in storage/).

It doubles as a write-ahead log: a row's `pending` column is set before any chunk of that file is
written or deleted and cleared once the store matches, so a run killed half-way can be rolled back.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PENDING_DELETE = "delete"  # the file's chunks are being deleted
PENDING_PRUNE = "prune"  # the new version is complete; older versions' chunks are being deleted

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    collection   TEXT NOT NULL,
    doc_id       TEXT NOT NULL,
    file         TEXT NOT NULL,   -- name shown to users: path relative to the folder ingested
    source       TEXT NOT NULL,   -- absolute path it was read from
    root         TEXT NOT NULL,   -- absolute folder it was ingested from
    content_hash TEXT,            -- NULL until the first complete index of the file
    chunks       INTEGER NOT NULL DEFAULT 0,
    size         INTEGER NOT NULL DEFAULT 0,
    indexed_at   REAL,
    pending      TEXT,            -- hash being written, 'prune', 'delete', or NULL when consistent
    PRIMARY KEY (collection, doc_id)
);
-- What a file's indexed version lists (rag.records), replaced with the version it belongs to.
CREATE TABLE IF NOT EXISTS records (
    collection   TEXT NOT NULL,
    doc_id       TEXT NOT NULL,
    position     INTEGER NOT NULL,
    record       TEXT NOT NULL,   -- JSON (rag.records.dumps)
    PRIMARY KEY (collection, doc_id, position)
);
"""


@dataclass(frozen=True)
class FileRecord:
    collection: str
    doc_id: str
    file: str
    source: str
    root: str
    content_hash: str | None
    chunks: int
    size: int
    indexed_at: float | None
    pending: str | None


class Manifest:
    """Rows of `FileRecord`, one per indexed file and collection."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _rows(self, sql: str, *params: object) -> list[FileRecord]:
        cursor = self._db.execute(f"SELECT * FROM files {sql}", params)
        names = [column[0] for column in cursor.description]
        return [FileRecord(**dict(zip(names, row, strict=True))) for row in cursor.fetchall()]

    def get(self, collection: str, doc_id: str) -> FileRecord | None:
        rows = self._rows("WHERE collection = ? AND doc_id = ?", collection, doc_id)
        return rows[0] if rows else None

    def files(self, collection: str) -> list[FileRecord]:
        return self._rows("WHERE collection = ? ORDER BY file", collection)

    def under_root(self, collection: str, root: str) -> list[FileRecord]:
        return self._rows("WHERE collection = ? AND root = ?", collection, root)

    def pending(self) -> list[FileRecord]:
        return self._rows("WHERE pending IS NOT NULL")

    def collections(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT collection FROM files")]

    def begin_write(
        self, collection: str, doc_id: str, file: str, source: str, root: str, new_hash: str
    ) -> None:
        """Log the intent to write `new_hash`'s chunks for this file (creating the row if new)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO files (collection, doc_id, file, source, root, pending) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (collection, doc_id) DO UPDATE SET "
                "file = excluded.file, source = excluded.source, root = excluded.root, "
                "pending = excluded.pending",
                (collection, doc_id, file, source, root, new_hash),
            )

    def commit_write(
        self,
        collection: str,
        doc_id: str,
        content_hash: str,
        chunks: int,
        size: int,
        records: Sequence[str] = (),
    ) -> None:
        """The new version is completely written; its older versions are still to be pruned.
        Its records replace the older version's in the same transaction."""
        with self._transaction() as db:
            db.execute(
                "UPDATE files SET content_hash = ?, chunks = ?, size = ?, indexed_at = ?, "
                "pending = ? WHERE collection = ? AND doc_id = ?",
                (content_hash, chunks, size, time.time(), PENDING_PRUNE, collection, doc_id),
            )
            db.execute(
                "DELETE FROM records WHERE collection = ? AND doc_id = ?", (collection, doc_id)
            )
            db.executemany(
                "INSERT INTO records (collection, doc_id, position, record) VALUES (?, ?, ?, ?)",
                [(collection, doc_id, n, record) for n, record in enumerate(records)],
            )

    def records(self, collection: str) -> list[str]:
        """The records of a collection's files (JSON), file by file in the order they list them."""
        return [
            row[0]
            for row in self._db.execute(
                "SELECT r.record FROM records r JOIN files f "
                "ON f.collection = r.collection AND f.doc_id = r.doc_id "
                "WHERE r.collection = ? ORDER BY f.file, r.position",
                (collection,),
            )
        ]

    def finish(self, collection: str, doc_id: str) -> None:
        """Older versions are pruned: the row and the store agree again."""
        with self._transaction() as db:
            db.execute(
                "UPDATE files SET pending = NULL WHERE collection = ? AND doc_id = ?",
                (collection, doc_id),
            )

    def clear_pending(self, collection: str, doc_id: str) -> None:
        """The pending write was rolled back: drop the row if it never had a complete index."""
        with self._transaction() as db:
            db.execute(
                "DELETE FROM files WHERE collection = ? AND doc_id = ? AND content_hash IS NULL",
                (collection, doc_id),
            )
            db.execute(
                "UPDATE files SET pending = NULL WHERE collection = ? AND doc_id = ?",
                (collection, doc_id),
            )

    def begin_delete(self, collection: str, doc_id: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE files SET pending = ? WHERE collection = ? AND doc_id = ?",
                (PENDING_DELETE, collection, doc_id),
            )

    def commit_delete(self, collection: str, doc_id: str) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM files WHERE collection = ? AND doc_id = ?", (collection, doc_id)
            )
            db.execute(
                "DELETE FROM records WHERE collection = ? AND doc_id = ?", (collection, doc_id)
            )

    def forget_hashes(self, collection: str) -> None:
        """Mark every file of a collection as needing a fresh index (used by --rebuild)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE files SET content_hash = NULL, chunks = 0 WHERE collection = ?",
                (collection,),
            )
