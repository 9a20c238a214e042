"""The Chroma index: client (embedded or server), one collection per name, its embedder fingerprint."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import Settings
from rag.errors import EmbedderMismatch, RagError, StorageFull, StorageReadOnly, StoreError

if TYPE_CHECKING:  # LlamaIndex loads on first write or query: `rag status` never needs it
    from llama_index.core.schema import BaseNode, NodeWithScore

logger = logging.getLogger(__name__)

# Chunks one read of the store returns at most (Chroma caps a read).
READ_PAGE = 5000

# Who wrote a collection last: this process, or another one (the CLI beside the running app).
THIS_PROCESS = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

WRITE_BATCH = 1000

# Writes stop while less than this is free under storage/. Embedded Chroma that runs out of space
# half-way through applying a write cannot recover in that process (later calls fail or hang until
# it exits), so the space is checked before each write instead of discovered by failing.
STORAGE_RESERVE_MB = 32
# A store failure that names no cause (Chroma's "failed to apply logs") with less than this free is
# the disk filling up.
NEARLY_FULL_MB = 16
# A generous upper bound of what one chunk adds on disk (vector, text, metadata, keyword index, log).
CHUNK_DISK_BYTES = 64 * 1024

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
READ_ONLY_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM}


# --- a full or read-only storage folder ------------------------------------------------------------


def storage_full(folder: Path) -> StorageFull:
    free_mb = free_bytes(folder) / 2**20
    return StorageFull(
        f"{folder} is full (no space left on device: {free_mb:.1f} MB free, writing needs "
        f"{STORAGE_RESERVE_MB} MB): free some space and try again; nothing already indexed was lost"
    )


def storage_read_only(folder: Path, reason: str = "read-only file system") -> StorageReadOnly:
    return StorageReadOnly(
        f"{folder} is read-only ({reason}): make it writable (remount it read-write or fix its "
        "permissions) and try again; nothing already indexed was lost"
    )


def _nearest_existing(folder: Path) -> Path:
    """The folder itself, or its closest parent that exists (storage/ may not be created yet)."""
    path = folder.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(_nearest_existing(folder))
    return stats.f_bavail * stats.f_frsize


def is_read_only(folder: Path) -> bool:
    path = _nearest_existing(folder)
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY) or not os.access(path, os.W_OK)


def ensure_room(folder: Path, chunks: int = 0) -> None:
    """Refuse to start a write into `folder` that the disk cannot take (see STORAGE_RESERVE_MB)."""
    if is_read_only(folder):
        raise storage_read_only(folder)
    needed = STORAGE_RESERVE_MB * 2**20 + chunks * CHUNK_DISK_BYTES
    if free_bytes(folder) < needed:
        raise storage_full(folder)


def storage_fault(error: BaseException, folder: Path) -> StoreError | None:
    """What `error` means for the user when it comes from a full or read-only disk, else None.

    The cause surfaces as an OSError (ENOSPC, EROFS), as SQLite's "database or disk is full" or
    "attempt to write a readonly database", or as a Chroma error that names no cause at all; the last
    is explained by looking at the disk itself.
    """
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in FULL_ERRNOS:
            return storage_full(folder)
        if isinstance(cause, OSError) and cause.errno in READ_ONLY_ERRNOS:
            return storage_read_only(folder, (cause.strerror or "not writable").lower())
        text = str(cause).lower()
        if "disk is full" in text or "no space left" in text:
            return storage_full(folder)
        if "readonly database" in text or "read-only file system" in text:
            return storage_read_only(folder)
        cause = cause.__cause__ or cause.__context__
    from chromadb.errors import ChromaError

    if isinstance(error, (sqlite3.Error, ChromaError, StoreError)):
        if is_read_only(folder):
            return storage_read_only(folder)
        if free_bytes(folder) < NEARLY_FULL_MB * 2**20:
            return storage_full(folder)
    return None


@contextmanager
def storage_faults(folder: Path) -> Iterator[None]:
    """Reads and writes of storage/ inside this block fail on a full or read-only disk with one
    StorageFull or StorageReadOnly error, whichever layer (file, SQLite, Chroma) noticed it."""
    try:
        yield
    except Exception as error:
        if isinstance(error, RagError) and type(error) is not StoreError:
            raise  # already says what is wrong (locked, refused file, wrong embedder, ...)
        fault = storage_fault(error, folder)
        if fault is None:
            raise
        raise fault from error


@dataclass(frozen=True)
class Fingerprint:
    """Which embedder made a collection's vectors: vectors of two embedders must never mix."""

    embedder: str
    dimension: int

    def describe(self) -> str:
        return f"{self.embedder} ({self.dimension} dims)"


def chroma_client(settings: Settings) -> Any:
    """A Chroma client for the configured store; raises StoreError when it cannot be reached."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    try:
        if settings.chroma_host:
            return chromadb.HttpClient(
                host=settings.chroma_host,
                port=settings.chroma_port,
                ssl=settings.chroma_ssl,
                settings=chroma_settings,
            )
        settings.chroma_dir.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(settings.chroma_dir), settings=chroma_settings)
    except StoreError:
        raise
    except Exception as error:
        raise StoreError(f"cannot open the index at {settings.store_location}: {error}") from error


class ChunkStore:
    """The chunks of one collection: written, deleted and queried with their file/page metadata."""

    def __init__(self, client: Any, name: str, collection: Any) -> None:
        self.client = client
        self.name = name
        self.collection = collection

    @classmethod
    def open(
        cls,
        client: Any,
        name: str,
        embedder: str | None,
        dimension: Callable[[], int] | None = None,
    ) -> ChunkStore:
        """Open (creating if needed) collection `name`, refusing one built by another embedder.

        `embedder` None opens it without the check (status, remove). `dimension` is called only when
        the collection has no fingerprint yet or a different one, so opening an index never has to
        load the embedding model.
        """
        try:
            collection = client.get_or_create_collection(
                name=name,
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )
        except Exception as error:
            raise StoreError(f"cannot open collection {name!r}: {error}") from error
        store = cls(client, name, collection)
        if embedder is not None:
            store.check_fingerprint(embedder, dimension or (lambda: 0))
        return store

    @property
    def fingerprint(self) -> Fingerprint | None:
        metadata = self.collection.metadata or {}
        if "embedder" not in metadata:
            return None
        return Fingerprint(str(metadata["embedder"]), int(metadata.get("dimension", 0)))

    def check_fingerprint(self, embedder: str, dimension: Callable[[], int]) -> None:
        recorded = self.fingerprint
        if recorded is None:
            if self.count():
                raise EmbedderMismatch(
                    f"collection {self.name!r} records no embedder; "
                    "run `rag ingest --rebuild` to re-embed it"
                )
            self.collection.modify(metadata={"embedder": embedder, "dimension": dimension()})
        elif recorded.embedder != embedder:
            configured = Fingerprint(embedder, dimension())
            raise EmbedderMismatch(
                f"collection {self.name!r} was built with {recorded.describe()} but the configured "
                f"embedder is {configured.describe()}; run `rag ingest --rebuild` to re-embed it, "
                f"or set RAG_EMBED_MODEL={recorded.embedder}"
            )

    def vector_store(self) -> Any:
        """The same collection as LlamaIndex's own ChromaVectorStore (for the baseline benches)."""
        from llama_index.vector_stores.chroma import ChromaVectorStore

        return ChromaVectorStore(chroma_collection=self.collection)

    def count(self) -> int:
        return int(self.collection.count())

    def upsert(self, nodes: Sequence[BaseNode]) -> None:
        from llama_index.core.schema import MetadataMode

        """Write nodes (with embeddings) in LlamaIndex's metadata layout; same id overwrites."""
        for start in range(0, len(nodes), WRITE_BATCH):
            batch = nodes[start : start + WRITE_BATCH]
            self.collection.upsert(
                ids=[node.node_id for node in batch],
                embeddings=[node.get_embedding() for node in batch],
                metadatas=[_flat_metadata(node) for node in batch],
                documents=[node.get_content(metadata_mode=MetadataMode.NONE) for node in batch],
            )

    def has_chunks(self, doc_id: str) -> bool:
        """Whether any chunk of this file is in the store."""
        return bool(self.collection.get(where={"file_id": doc_id}, limit=1, include=[])["ids"])

    def delete_chunks(self, doc_id: str, content_hash: str | None = None) -> None:
        """Delete a file's chunks: all of them, or only those of one version (`content_hash`)."""
        where: dict[str, Any] = {"file_id": doc_id}
        if content_hash is not None:
            where = {"$and": [{"file_id": doc_id}, {"content_hash": content_hash}]}
        self.collection.delete(where=where)

    def delete_other_versions(self, doc_id: str, keep_hash: str) -> None:
        self.collection.delete(
            where={"$and": [{"file_id": doc_id}, {"content_hash": {"$ne": keep_hash}}]}
        )

    def current(self) -> Any:
        """The collection of this name now. Another process may have replaced it (`rag ingest
        --rebuild` while the app runs): then this store follows the new one."""
        from chromadb.errors import NotFoundError

        try:
            fresh = self.client.get_collection(self.name, embedding_function=None)
        except NotFoundError:
            raise StoreError(
                f"collection {self.name!r} is being rebuilt or was deleted by another process; "
                "try again in a moment"
            ) from None
        if fresh.id != self.collection.id:
            logger.info("collection %r was replaced by another process: reopened", self.name)
            self.collection = fresh
        return fresh

    def revision(self) -> object:
        """Changes whenever chunks are written or deleted, by any process (for caches such as BM25)."""
        fresh = self.current()
        return (fresh.metadata or {}).get("revision"), fresh.count()

    def bump_revision(self) -> None:
        """Mark the collection changed, and by which process (see `Index.reading`)."""
        fresh = self.current()
        metadata = dict(fresh.metadata or {})
        metadata["revision"] = uuid.uuid4().hex
        metadata["writer"] = THIS_PROCESS
        fresh.modify(metadata=metadata)

    def state(self) -> tuple[str, object, object]:
        """(collection id, revision, writing process): what a reader compares to notice changes."""
        fresh = self.current()
        metadata = fresh.metadata or {}
        return str(fresh.id), metadata.get("revision"), metadata.get("writer")

    def _pages(self, include: list[str], ids: Sequence[str] | None = None) -> Iterator[Any]:
        """The collection's chunks (or those of `ids` that still exist), a page of results at a
        time: Chroma caps what one read returns."""
        collection = self.current()
        if ids is not None:
            for start in range(0, len(ids), READ_PAGE):
                yield collection.get(ids=list(ids[start : start + READ_PAGE]), include=include)
            return
        offset = 0
        while True:
            result = collection.get(include=include, limit=READ_PAGE, offset=offset)
            yield result
            if len(result["ids"]) < READ_PAGE:
                return
            offset += READ_PAGE

    def all_chunks(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """Every chunk's id, text and metadata."""
        return _rows(self._pages(["documents", "metadatas"]))

    def chunk_ids(self) -> list[str]:
        """Every chunk's id, in all_chunks' order: what changed since a cache was filled, cheaply."""
        return [chunk_id for page in self._pages([]) for chunk_id in page["ids"]]

    def chunks(self, ids: Sequence[str]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """The id, text and metadata of those of these chunks that still exist (in no set order)."""
        return _rows(self._pages(["documents", "metadatas"], ids))

    def chunk_counts(self) -> dict[str, int]:
        """Chunks per doc_id, read from the store itself (for consistency checks)."""
        return dict(
            Counter(
                str((metadata or {}).get("file_id"))
                for page in self._pages(["metadatas"])
                for metadata in page["metadatas"]
            )
        )

    def query(
        self, embedding: list[float], top_k: int, where: dict[str, Any] | None = None
    ) -> list[NodeWithScore]:
        """Nearest chunks by cosine similarity (score 1.0 = same direction)."""
        if top_k <= 0:
            return []
        from chromadb.errors import ChromaError
        from llama_index.core.schema import NodeWithScore
        from llama_index.core.vector_stores.utils import metadata_dict_to_node

        try:
            result = self.current().query(
                query_embeddings=[embedding],
                n_results=top_k,
                where=where or None,
                include=["documents", "metadatas", "distances"],
            )
        except ChromaError as error:  # e.g. rebuilt meanwhile with another embedder's dimension
            raise StoreError(f"collection {self.name!r} cannot be searched: {error}") from error
        hits: list[NodeWithScore] = []
        for text, metadata, distance in zip(
            result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
        ):
            node = metadata_dict_to_node(dict(metadata), text=text)
            hits.append(NodeWithScore(node=node, score=1.0 - float(distance)))
        return hits


# Keys LlamaIndex adds to what it stores; not part of a chunk's own metadata.
LLAMA_INDEX_KEYS = {"_node_content", "_node_type", "document_id", "doc_id", "ref_doc_id"}


def _rows(pages: Iterable[Any]) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """(ids, texts, metadatas) of pages of Chroma results."""
    ids: list[str] = []
    texts: list[str] = []
    metadatas: list[dict[str, Any]] = []
    for result in pages:
        ids.extend(result["ids"])
        texts.extend(result["documents"])
        metadatas.extend(_user_metadata(m) for m in result["metadatas"])
    return ids, texts, metadatas


def _user_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metadata or {}).items() if k not in LLAMA_INDEX_KEYS}


def _flat_metadata(node: BaseNode) -> dict[str, Any]:
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=True)
    return {key: ("" if value is None else value) for key, value in metadata.items()}


def list_collections(client: Any) -> list[str]:
    return sorted(
        collection if isinstance(collection, str) else collection.name
        for collection in client.list_collections()
    )


def delete_collection(client: Any, name: str) -> None:
    if name in list_collections(client):
        client.delete_collection(name)
