"""Saved chat threads: the SQLite database behind the chat's thread list (schema of its data layer)."""

from __future__ import annotations

import json
import sqlite3

from rag.config import Settings

# The tables and camelCase columns that Chainlit's SQLAlchemy data layer reads and writes.
SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    "id"          TEXT PRIMARY KEY,          -- uuid4 string
    "identifier"  TEXT NOT NULL UNIQUE,
    "metadata"    TEXT NOT NULL,             -- JSON string
    "createdAt"   TEXT
);

CREATE TABLE IF NOT EXISTS threads (
    "id"             TEXT PRIMARY KEY,
    "createdAt"      TEXT,
    "name"           TEXT,
    "userId"         TEXT,
    "userIdentifier" TEXT,
    "tags"           TEXT,                   -- Postgres: TEXT[]; see gotcha on auto_tag_thread
    "metadata"       TEXT,                   -- JSON string
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
    "metadata"      TEXT,
    "tags"          TEXT,
    "input"         TEXT,
    "output"        TEXT,
    "createdAt"     TEXT,
    "command"       TEXT,
    "modes"         TEXT,
    "start"         TEXT,
    "end"           TEXT,
    "generation"    TEXT,
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
    "props"        TEXT,
    "autoPlay"     BOOLEAN,
    "playerConfig" TEXT,
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


def thread_database(settings: Settings) -> str:
    """Create the threads database under storage/ if needed; return its SQLAlchemy URL.

    The data layer binds Python lists and dicts (tags, modes) as parameters; SQLite cannot store
    those, so they are stored as JSON text.
    """
    sqlite3.register_adapter(list, json.dumps)
    sqlite3.register_adapter(dict, json.dumps)
    path = (settings.storage_dir / "threads.sqlite3").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
    return f"sqlite+aiosqlite:///{path}"
