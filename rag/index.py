"""The index as one object: settings -> embedder, Chroma, manifest, wired once and shared by CLI and UI."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import Settings, validate_collection_name
from rag.database import open_database, writer_lock
from rag.errors import ConfigError, RagError, StorageLocked
from rag.ingest import (
    Indexer,
    IngestReport,
    ProgressCallback,
    SourceFile,
    document_id,
    find_sources,
    remove_file,
)
from rag.manifest import Manifest
from rag.profiles import active_profile
from rag.store import (
    THIS_PROCESS,
    ChunkStore,
    chroma_client,
    delete_collection,
    ensure_room,
    list_collections,
    storage_faults,
)

# Retrieval and the embedder (LlamaIndex, the model runtime) are imported where they are used:
# `rag status`, `rag remove` and `rag --help` never need them.
if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from rag.records import Record
    from rag.retrieve import Retriever, Source

logger = logging.getLogger(__name__)


class _Readers:
    """Counts the searches running in this process, so the store is reopened only between them."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._changed:
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1

    @contextmanager
    def alone(self) -> Iterator[bool]:
        """Whether no search is running; while True, new searches wait until this ends."""
        with self._changed:
            yield self._count == 0


@dataclass(frozen=True)
class CollectionStatus:
    name: str
    files: int
    chunks: int
    embedder: str | None


class Index:
    """Entry point for everything that reads or writes the index. Heavy parts load on first use."""

    def __init__(self, settings: Settings, embedder: BaseEmbedding | None = None) -> None:
        """`embedder` lets several indexes share one loaded model (tests, the app's chats)."""
        self.settings = settings
        self._retrievers: dict[str, Retriever] = {}
        # What this process last saw of each collection (id, revision, writer): a change by
        # another process (the CLI beside the app) means the embedded store must be reopened.
        self._seen: dict[str, tuple[str, object, object]] = {}
        self._readers = _Readers()
        if embedder is not None:
            self.embedder = embedder

    @cached_property
    def default_collection(self) -> str:
        """The collection used when none is given: RAG_COLLECTION, else the default profile's."""
        return self.settings.collection or active_profile(self.settings).collection

    @cached_property
    def embedder(self) -> BaseEmbedding:
        from rag.embeddings import build_embedder

        return build_embedder(self.settings)

    def dimension(self) -> int:
        """Vector size of the configured embedder (loads the model: only when really needed)."""
        from rag.embeddings import embedder_dimension

        return embedder_dimension(self.embedder)

    @cached_property
    def client(self) -> Any:
        with self.storage_faults():
            return chroma_client(self.settings)

    @cached_property
    def manifest(self) -> Manifest:
        with self.storage_faults():
            return Manifest(open_database(self.settings))

    def storage_faults(self) -> AbstractContextManager[None]:
        """A full or read-only storage folder surfaces as one StorageFull / StorageReadOnly error."""
        return storage_faults(self.settings.storage_dir)

    def collection(self, name: str | None = None, *, check: bool = True) -> ChunkStore:
        """Open a collection; with `check`, refuse one built by another embedder."""
        name = name or self.default_collection
        try:
            validate_collection_name(name)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        embedder = self.settings.embed_model if check else None
        return ChunkStore.open(self.client, name, embedder, self.dimension)

    def retriever(self, collection: str | None = None) -> Retriever:
        """One retriever per collection, kept so its keyword index is built once. For searches
        that must see what other processes wrote, use `reading`."""
        from rag.retrieve import Retriever

        name = collection or self.default_collection
        if name not in self._retrievers:
            store = self.collection(name)  # before the model loads: a store that fails, fails fast
            self._retrievers[name] = Retriever(self.embedder, store, self.settings.retrieval)
            self._seen.setdefault(name, store.state())
        return self._retrievers[name]

    @contextmanager
    def reading(self, collection: str | None = None) -> Iterator[Retriever]:
        """The collection's retriever for one search, current with what any process wrote.

        An embedded Chroma keeps each collection's vector index in memory and never sees another
        process's writes (a known Chroma limit), nor a collection another process deleted and
        built anew (`rag ingest --rebuild` beside the app). When the collection changed under
        another writer, the store is reopened first: when no search is running and no write is
        under way here; otherwise the next search does it.
        """
        name = collection or self.default_collection
        self._follow_other_writers(name)
        with self._readers.reading():
            yield self.retriever(name)

    def _follow_other_writers(self, name: str) -> None:
        seen = self._seen.get(name)
        if seen is None or self.settings.chroma_host:  # a server sees every client's writes
            return
        with self.storage_faults():
            state = self._state(name)
        if state == seen:
            return
        if state[0] == seen[0] and state[2] == THIS_PROCESS:  # our own write
            self._seen[name] = state
            return
        try:
            with writer_lock(self.settings), self._readers.alone() as alone:
                if alone:
                    logger.info("collection %r changed in another process: reopening", name)
                    self._reopen()
                    self._seen[name] = self._state(name)
        except StorageLocked:
            return  # a write is under way; the next search looks again

    def _state(self, name: str) -> tuple[str, object, object]:
        retriever = self._retrievers.get(name)
        store = retriever.store if retriever else self.collection(name, check=False)
        return store.state()

    def _reopen(self) -> None:
        """Close the store client and open it afresh. Each retriever moves to the new store and
        keeps its keyword index, which its next search brings up to date by what changed."""
        client = self.__dict__.pop("client", None)
        close = getattr(client, "close", None)
        if callable(close):
            close()
        try:
            for name, retriever in self._retrievers.items():
                retriever.store = self.collection(name)
        except BaseException:
            self._retrievers.clear()  # none may keep a store of the closed client
            raise

    # --- writing ------------------------------------------------------------------------------------

    @contextmanager
    def writer(
        self, collection: str | None = None, *, fresh: bool = False, wait_s: float = 0.0
    ) -> Iterator[Indexer]:
        """An Indexer for one collection, holding the storage lock, after crash recovery.

        `fresh` empties the collection first (its files stay in the manifest, marked unindexed).
        """
        name = collection or self.default_collection
        with self.storage_faults(), writer_lock(self.settings, wait_s=wait_s):
            if not self.settings.chroma_host:
                ensure_room(self.settings.storage_dir)  # before recovery, which writes too
            if fresh:
                self.manifest.forget_hashes(name)
                delete_collection(self.client, name)
                self._retrievers.pop(name, None)
            store = self.collection(name)
            indexer = Indexer(self.settings, self.embedder, store, self.manifest)
            indexer.recover()
            yield indexer
            self._seen[name] = store.state()  # what this process wrote is no news to its readers

    def ingest(
        self,
        paths: list[Path],
        collection: str | None = None,
        progress: ProgressCallback | None = None,
        wait_s: float = 0.0,
    ) -> IngestReport:
        """Sync files and folders into a collection (waiting up to `wait_s` for the write lock)."""
        sources, folders = find_sources(paths)
        with self.writer(collection, wait_s=wait_s) as indexer:
            return indexer.sync(sources, folders, progress)

    def attach(
        self,
        path: Path,
        name: str,
        chat_id: str,
        collection: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Index one file for one chat only (a chat attachment), under its original `name`."""
        source = SourceFile(path.resolve(), path.resolve().parent, name, chat_id=chat_id)
        with self.writer(collection, wait_s=self.settings.lock_wait_s) as indexer:
            return indexer.sync([source], [], progress)

    def rebuild(
        self,
        paths: list[Path],
        collection: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Re-embed a collection from scratch (after an embedder change): its files plus `paths`."""
        sources, folders = find_sources(paths)
        with self.writer(collection, fresh=True) as indexer:
            known = {source.doc_id for source in sources}
            for record in self.manifest.files(indexer.collection):
                recorded = SourceFile(Path(record.source), Path(record.root), record.file)
                if recorded.doc_id not in known and recorded.path.is_file():
                    sources.append(recorded)
                    known.add(recorded.doc_id)
            report = indexer.sync(sources, folders, progress)
            for record in self.manifest.files(indexer.collection):
                if record.content_hash is None:  # its file is gone
                    indexer.remove(record.doc_id)
                    report.removed.append(record.file)
            return report

    def remove(self, file: str, collection: str | None = None) -> list[str]:
        """Drop one file's chunks, by the name shown in results or by its path; returns names removed."""
        name = collection or self.default_collection
        path = Path(file)
        candidates = {document_id(path.resolve().parent, path.name)} if path.exists() else set()
        matches = [
            record
            for record in self.manifest.files(name)
            if record.file == file or record.doc_id in candidates or record.source == file
        ]
        if not matches:
            raise RagError(f"{file}: not in collection {name!r} (see `rag status`)")
        with self.storage_faults(), writer_lock(self.settings):
            store = self.collection(name, check=False)
            for record in matches:
                remove_file(store, self.manifest, record.doc_id)
        return [record.file for record in matches]

    def remove_document(self, doc_id: str, collection: str | None = None) -> None:
        """Drop one document's chunks by its id (other files of the same name stay)."""
        name = collection or self.default_collection
        with (
            self.storage_faults(),
            writer_lock(self.settings, wait_s=self.settings.lock_wait_s),
        ):
            remove_file(self.collection(name, check=False), self.manifest, doc_id)

    # --- reading ------------------------------------------------------------------------------------

    def search(self, query: str, top_k: int, collection: str | None = None) -> list[Source]:
        with self.storage_faults(), self.reading(collection) as retriever:
            return retriever.search(query, top_k)

    def records(self, collection: str | None = None) -> list[Record]:
        """What the collection's files list (menu items and price-list rows), file by file."""
        from rag.records import loads

        with self.storage_faults():
            return loads(self.manifest.records(collection or self.default_collection))

    def status(self) -> list[CollectionStatus]:
        with self.storage_faults():
            return self._status()

    def _status(self) -> list[CollectionStatus]:
        names = set(list_collections(self.client)) | set(self.manifest.collections())
        statuses = []
        for name in sorted(names):
            store = self.collection(name, check=False)
            fingerprint = store.fingerprint
            statuses.append(
                CollectionStatus(
                    name=name,
                    files=len(self.manifest.files(name)),
                    chunks=store.count(),
                    embedder=fingerprint.describe() if fingerprint else None,
                )
            )
        return statuses

    def close(self) -> None:
        if "manifest" in self.__dict__:
            self.manifest.close()
