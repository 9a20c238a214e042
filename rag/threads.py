"""Saved chat threads: the database behind the chat's thread list (SQLite under storage/, or the replicas' Postgres), and the data layer on it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.data.utils import queue_until_user_message

from rag.config import Settings
from rag.database import CHAT_TABLES

# Chainlit's tables (rag.database.CHAT_TABLES) on SQLite: its JSON and lists as text.
SCHEMA = CHAT_TABLES.format(json="TEXT", list="TEXT")


def thread_database(settings: Settings) -> str:
    """The SQLAlchemy URL of the chat threads' database: the Postgres one replicas share
    (RAG_DATABASE_URL; its tables are migrated by rag.database), else SQLite under storage/,
    created if needed.

    The data layer binds Python lists and dicts (tags, modes) as parameters; SQLite cannot store
    those, so they are stored as JSON text.
    """
    if settings.database_url:
        from rag.database import PostgresDatabase

        PostgresDatabase(settings.database_url).close()  # migrated on open: the tables exist
        rest = settings.database_url.partition("://")[2]
        return f"postgresql+asyncpg://{rest}"
    sqlite3.register_adapter(list, json.dumps)
    sqlite3.register_adapter(dict, json.dumps)
    path = (settings.storage_dir / "threads.sqlite3").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
    return f"sqlite+aiosqlite:///{path}"


class ThreadStore(SQLAlchemyDataLayer):
    """Chainlit's SQL data layer on SQLite, with its writes serialised.

    Chainlit saves a step's creation and its final output as separate background tasks; on
    SQLite they can race and the output is lost. One lock per kind of write keeps them in order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._step_lock = asyncio.Lock()
        self._thread_lock = asyncio.Lock()

    async def element_owner(self, object_key: str) -> str | None:
        """The user whose thread a stored element belongs to (element keys do not say reliably:
        an attachment is stored before its thread has a user)."""
        rows = await self.execute_sql(
            'SELECT t."userIdentifier" AS owner FROM elements e '
            'JOIN threads t ON t."id" = e."threadId" WHERE e."objectKey" = :key',
            {"key": object_key},
        )
        owners = {row["owner"] for row in rows} if isinstance(rows, list) else set()
        return owners.pop() if len(owners) == 1 else None

    async def update_thread(self, thread_id: str, *args: Any, **kwargs: Any) -> None:
        async with self._thread_lock:
            await super().update_thread(thread_id, *args, **kwargs)

    @queue_until_user_message()
    async def create_step(self, step_dict: Any) -> None:
        # Queued until the chat's first message, like the parent's; when it runs, that message
        # has been seen, so the parent's own queueing passes it straight through.
        async with self._step_lock:
            await super().create_step(step_dict)
