"""Retrieval over one collection: vector search with metadata filters, results as sources users can read."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore

from rag.store import ChunkStore


@dataclass(frozen=True)
class Source:
    """One retrieved chunk as users see it: `page` is 1-based, None for files without pages."""

    file: str
    page: int | None
    score: float
    text: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def citation(self) -> str:
        return f"{self.file}, page {self.page}" if self.page is not None else self.file


def to_source(hit: NodeWithScore) -> Source:
    metadata = hit.node.metadata
    page = metadata.get("page")
    return Source(
        file=str(metadata.get("file", "?")),
        page=int(page) if isinstance(page, (int, float)) or str(page).isdigit() else None,
        score=round(float(hit.score or 0.0), 4),
        text=hit.node.get_content(),
    )


class Retriever:
    """Finds the chunks closest to a question in one collection."""

    def __init__(self, embedder: BaseEmbedding, store: ChunkStore) -> None:
        self.embedder = embedder
        self.store = store

    def retrieve(
        self, query: str, top_k: int, where: dict[str, Any] | None = None
    ) -> list[NodeWithScore]:
        if not query.strip():
            return []
        embedding = self.embedder.get_query_embedding(query)
        return self.store.query(embedding, top_k, where)

    def search(self, query: str, top_k: int, where: dict[str, Any] | None = None) -> list[Source]:
        return [to_source(hit) for hit in self.retrieve(query, top_k, where)]
