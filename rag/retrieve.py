"""Retrieval over one collection: vector, BM25 and fused (RRF) search with filters, as readable sources."""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore, TextNode

from rag.loaders import document_title, tidy
from rag.store import ChunkStore
from rag.text import cross_script_tokens, tokenize

Mode = Literal["hybrid", "vector", "bm25"]

# Reciprocal rank fusion: score = sum 1 / (RRF_K + rank). 60 is the constant from the original paper;
# it keeps one list's top hit from drowning everything the other list found.
RRF_K = 60
# Each retriever proposes this many chunks before fusion, so the order of the first few results does
# not depend on how many the caller asked for.
CANDIDATES = 4  # per requested chunk
MIN_CANDIDATES = 30
# The head of a file, where it says what it is about (front matter, a CV's name): characters.
HEAD_CHARS = 300


@dataclass(frozen=True)
class Source:
    """One retrieved chunk as users see it: `page` is 1-based, None for files without pages."""

    file: str
    page: int | None
    score: float
    text: str
    file_id: str = field(default="", compare=False)  # the manifest's key, for finding the file
    # Set on an answer's sources: the quoted span and its [start, end) in the stored page text.
    quote: str | None = None
    span: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """The DESIGN.md contract: file, page, score, text; an answer's sources add quote and span."""
        data: dict[str, Any] = {
            "file": self.file,
            "page": self.page,
            "score": self.score,
            "text": self.text,
        }
        if self.quote is not None:
            data["quote"] = self.quote
            data["span"] = list(self.span) if self.span else None
        return data

    def citation(self) -> str:
        return f"{self.file}, page {self.page}" if self.page is not None else self.file


def to_source(hit: NodeWithScore) -> Source:
    metadata = hit.node.metadata
    page = metadata.get("page")
    return Source(
        file=str(metadata.get("file", "?")),
        page=int(page) if isinstance(page, int | float) and not isinstance(page, bool) else None,
        score=round(float(hit.score or 0.0), 4),
        text=hit.node.get_content(),
        file_id=str(metadata.get("file_id", "")),
    )


# --- keyword search -----------------------------------------------------------------------------------


class KeywordIndex:
    """BM25 over every chunk of a collection, built from the store itself so it can never drift."""

    def __init__(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        import bm25s

        self.ids = ids
        self.texts = texts
        self.metadatas = metadatas
        self.engine: Any = None
        # The same view of a chunk as the embedder's: its document's title, then its text.
        corpus = []
        for text, metadata in zip(texts, metadatas, strict=True):
            seen = f"{document_title(str(metadata.get('file', '')))} {text}"
            corpus.append(tokenize(seen) + cross_script_tokens(seen, "cyrillic"))
        # Document frequencies, for the rarity (IDF) of a question's words in evidence selection.
        self.document_frequency: Counter[str] = Counter()
        # Every word of each file (its title included): whether a file mentions a name at all.
        self.file_words: dict[str, set[str]] = {}
        # The words at the head of each file (its first chunk's start): what the file is about.
        self.file_heads: dict[str, set[str]] = {}
        for tokens, metadata, text in zip(corpus, metadatas, texts, strict=True):
            file = str(metadata.get("file", ""))
            self.document_frequency.update(set(tokens))
            self.file_words.setdefault(file, set()).update(tokens)
            if metadata.get("chunk") == 0:
                head = text[:HEAD_CHARS]
                self.file_heads[file] = set(tokenize(head) + cross_script_tokens(head, "cyrillic"))
        if ids:
            self.engine = bm25s.BM25()
            self.engine.index(corpus, show_progress=False)
            self.vocabulary = set(self.engine.vocab_dict)

    def idf(self, stem: str) -> float:
        """BM25's IDF of a word here: a word in every chunk weighs ~0, an unseen word the most."""
        documents = len(self.ids)
        df = self.document_frequency.get(stem, 0)
        return math.log(1.0 + (documents - df + 0.5) / (df + 0.5))

    def files(self, where: dict[str, Any] | None = None) -> list[str]:
        """The names of the files whose chunks `where` lets a question see."""
        return sorted(
            {str(m.get("file", "")) for m in self.metadatas if not where or matches(m, where)}
        )

    def search(self, query: str, top_k: int, where: dict[str, Any] | None) -> list[NodeWithScore]:
        if self.engine is None:
            return []
        query_tokens = tokenize(query) + cross_script_tokens(query, "latin")
        tokens = [token for token in query_tokens if token in self.vocabulary]
        if not tokens:
            return []
        # Score everything, then filter: the corpus of one collection is small enough (10k chunks).
        limit = len(self.ids) if where else min(top_k, len(self.ids))
        documents, scores = self.engine.retrieve([tokens], k=limit, show_progress=False)
        hits = []
        for position, score in zip(documents[0], scores[0], strict=True):
            if score <= 0:
                break
            metadata = self.metadatas[position]
            if where and not matches(metadata, where):
                continue
            node = TextNode(id_=self.ids[position], text=self.texts[position], metadata=metadata)
            hits.append(NodeWithScore(node=node, score=float(score)))
            if len(hits) == top_k:
                break
        return hits


def matches(metadata: dict[str, Any], where: dict[str, Any]) -> bool:
    """The subset of Chroma's `where` language we use: equality, $in, $ne, $and, $or."""
    for key, condition in where.items():
        if key == "$and":
            if not all(matches(metadata, part) for part in condition):
                return False
        elif key == "$or":
            if not any(matches(metadata, part) for part in condition):
                return False
        elif isinstance(condition, dict):
            value = metadata.get(key)
            for operator, operand in condition.items():
                if operator == "$in" and value not in operand:
                    return False
                if operator == "$nin" and value in operand:
                    return False
                if operator == "$ne" and value == operand:
                    return False
                if operator == "$eq" and value != operand:
                    return False
        elif metadata.get(key) != condition:
            return False
    return True


def fuse(rankings: list[list[NodeWithScore]], top_k: int) -> list[NodeWithScore]:
    """Reciprocal rank fusion; scores are scaled so a chunk ranked first by every list scores 1."""
    scores: dict[str, float] = {}
    nodes: dict[str, NodeWithScore] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            scores[hit.node.node_id] = scores.get(hit.node.node_id, 0.0) + 1.0 / (RRF_K + rank)
            nodes.setdefault(hit.node.node_id, hit)
    best = len(rankings) / (RRF_K + 1)
    ordered = sorted(scores, key=lambda node_id: scores[node_id], reverse=True)[:top_k]
    return [NodeWithScore(node=nodes[i].node, score=scores[i] / best) for i in ordered]


class Retriever:
    """Finds the chunks that answer a question in one collection."""

    def __init__(self, embedder: BaseEmbedding, store: ChunkStore, mode: Mode = "hybrid") -> None:
        self.embedder = embedder
        self.store = store
        self.mode = mode
        self._keywords: KeywordIndex | None = None
        self._keywords_revision: object = None
        self._lock = threading.Lock()

    def keyword_index(self) -> KeywordIndex:
        """The BM25 index, rebuilt when the collection changed since it was built."""
        revision = self.store.revision()
        with self._lock:
            if self._keywords is None or revision != self._keywords_revision:
                ids, texts, metadatas = self.store.all_chunks()
                self._keywords = KeywordIndex(ids, texts, metadatas)
                self._keywords_revision = revision
            return self._keywords

    def retrieve(
        self, query: str, top_k: int, where: dict[str, Any] | None = None
    ) -> list[NodeWithScore]:
        query = tidy(query)  # the normalisation documents had (NFKC...): "ﬁle" finds "file"
        if not query or top_k <= 0:
            return []
        if self.mode == "bm25":
            return self.keyword_index().search(query, top_k, where)
        pool = max(top_k * CANDIDATES, MIN_CANDIDATES) if self.mode == "hybrid" else top_k
        vector_hits = self.store.query(self.embedder.get_query_embedding(query), pool, where)
        if self.mode == "vector":
            return vector_hits
        keyword_hits = self.keyword_index().search(query, pool, where)
        return fuse([vector_hits, keyword_hits], top_k)

    def search(self, query: str, top_k: int, where: dict[str, Any] | None = None) -> list[Source]:
        return [to_source(hit) for hit in self.retrieve(query, top_k, where)]
