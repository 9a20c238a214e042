"""The manifest: which file is indexed in which collection with which content hash (rag.database: SQLite in storage/, or Postgres).

It doubles as a write-ahead log: a row's `pending` column is set before any chunk of that file is
written or deleted and cleared once the store matches, so a run killed half-way can be rolled back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rag.database import Database

PENDING_DELETE = "delete"  # the file's chunks are being deleted
PENDING_PRUNE = "prune"  # the new version is complete; older versions' chunks are being deleted


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


FILE_COLUMNS = (
    "collection, doc_id, file, source, root, content_hash, chunks, size, indexed_at, pending"
)


class Manifest:
    """Rows of `FileRecord`, one per indexed file and collection, in a Database (rag.database:
    SQLite under storage/, or Postgres shared by replicas)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def close(self) -> None:
        self._db.close()

    def _rows(self, sql: str, *params: object) -> list[FileRecord]:
        rows = self._db.execute(f"SELECT {FILE_COLUMNS} FROM files {sql}", params)
        return [FileRecord(*row) for row in rows]

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
        with self._db.transaction():
            self._db.execute(
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
        with self._db.transaction():
            self._db.execute(
                "UPDATE files SET content_hash = ?, chunks = ?, size = ?, indexed_at = ?, "
                "pending = ? WHERE collection = ? AND doc_id = ?",
                (content_hash, chunks, size, time.time(), PENDING_PRUNE, collection, doc_id),
            )
            self._db.execute(
                "DELETE FROM records WHERE collection = ? AND doc_id = ?", (collection, doc_id)
            )
            self._db.executemany(
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
        with self._db.transaction():
            self._db.execute(
                "UPDATE files SET pending = NULL WHERE collection = ? AND doc_id = ?",
                (collection, doc_id),
            )

    def clear_pending(self, collection: str, doc_id: str) -> None:
        """The pending write was rolled back: drop the row if it never had a complete index."""
        with self._db.transaction():
            self._db.execute(
                "DELETE FROM files WHERE collection = ? AND doc_id = ? AND content_hash IS NULL",
                (collection, doc_id),
            )
            self._db.execute(
                "UPDATE files SET pending = NULL WHERE collection = ? AND doc_id = ?",
                (collection, doc_id),
            )

    def begin_delete(self, collection: str, doc_id: str) -> None:
        with self._db.transaction():
            self._db.execute(
                "UPDATE files SET pending = ? WHERE collection = ? AND doc_id = ?",
                (PENDING_DELETE, collection, doc_id),
            )

    def commit_delete(self, collection: str, doc_id: str) -> None:
        with self._db.transaction():
            self._db.execute(
                "DELETE FROM files WHERE collection = ? AND doc_id = ?", (collection, doc_id)
            )
            self._db.execute(
                "DELETE FROM records WHERE collection = ? AND doc_id = ?", (collection, doc_id)
            )

    def forget_hashes(self, collection: str) -> None:
        """Mark every file of a collection as needing a fresh index (used by --rebuild)."""
        with self._db.transaction():
            self._db.execute(
                "UPDATE files SET content_hash = NULL, chunks = 0 WHERE collection = ?",
                (collection,),
            )
