"""Retrieval over one collection: vector, BM25 and fused (RRF) search with filters, as readable sources."""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore, TextNode

from rag.embeddings.ensemble import EnsembleEmbedding
from rag.loaders import searched_text
from rag.pages import last_mark, tidy
from rag.store import ChunkStore
from rag.tables import head_before_rows
from rag.text import cross_script_tokens, stopwords, tokenize

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
# A chunk that prints this many of a question's words in the question's order (a pasted line,
# "figure 9 to paragraph") is boosted: BM25 alone scores "(9) ... figure 8" as high as "figure 9".
PHRASE_WORDS = 2
# Keyword search has a say in fusion in the measure of the question's content words the collection
# holds (by stem, or a name by its skeleton across scripts), in full from this share: a question
# in a language the documents are not written in (a Russian one about an English essay) matches
# only stray words, and the vector list alone finds its passage across languages. bench/retrieval.py:
# USE-m's cross-language hit@5 0.60 -> 0.66, the other sets unchanged (0.5 lost one of MiniLM's).
KEYWORDS_HEARD = 0.25
QUERY_WORD = re.compile(r"[^\W_]+")


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
    # What the citation says instead of "page N": "slide 3", "sheet “Beers”, row 7", a section.
    location: str | None = field(default=None, compare=False)

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
        if self.location:
            data["location"] = self.location
        return data

    def citation(self) -> str:
        return cite(self.file, self.page, self.location)


def cite(file: str, page: int | None, location: str | None) -> str:
    """'menu.pdf, page 2', 'prices.xlsx, sheet “Beers”, row 7', or the file alone."""
    if location:
        return f"{file}, {location}"
    return f"{file}, page {page}" if page is not None else file


def locate(metadata: dict[str, Any], offset: int | None) -> str | None:
    """Where `offset` of a chunk's page is: the last of the chunk's marks at or before it (a row, a
    section), else its page's location; None when the page number says it all."""
    if offset is not None and metadata.get("marks"):
        mark = last_mark(json.loads(str(metadata["marks"])), offset)
        if mark:
            return mark
    location = metadata.get("location")
    return str(location) if location else None


def to_source(hit: NodeWithScore) -> Source:
    metadata = hit.node.metadata
    page = metadata.get("page")
    return Source(
        file=str(metadata.get("file", "?")),
        page=int(page) if isinstance(page, int | float) and not isinstance(page, bool) else None,
        score=round(float(hit.score or 0.0), 4),
        text=hit.node.get_content(),
        file_id=str(metadata.get("file_id", "")),
        location=locate(metadata, chunk_start(metadata)),
    )


def chunk_start(metadata: dict[str, Any]) -> int | None:
    """Where a chunk starts in its page's stored text; None for an index without offsets."""
    start = metadata.get("start_char")
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        return None
    return start


# --- keyword search -----------------------------------------------------------------------------------


# Chunks as the store reads them: ids, texts, metadatas.
Rows = tuple[list[str], list[str], list[dict[str, Any]]]


@dataclass(frozen=True)
class KeywordChunk:
    """One chunk as the keyword index keeps it: tokenized once, then reused by every later index."""

    id: str
    text: str
    metadata: dict[str, Any]
    file: str
    tokens: tuple[str, ...]  # what BM25 indexes
    head: frozenset[str] | None  # the words at the start of a file's first chunk; None for others

    @classmethod
    def read(cls, chunk_id: str, text: str, metadata: dict[str, Any]) -> KeywordChunk:
        file = str(metadata.get("file", ""))
        # The same view of a chunk as the embedder's: its document's title, its section, its text.
        seen = searched_text(file, text, str(metadata.get("section") or ""))
        # Interned: kept for the life of the index, and most tokens repeat a few thousand words.
        tokens = tuple(map(sys.intern, tokenize(seen) + cross_script_tokens(seen, "cyrillic")))
        head = None
        if metadata.get("chunk") == 0:
            start = head_before_rows(text[:HEAD_CHARS])
            head = frozenset(tokenize(start) + cross_script_tokens(start, "cyrillic"))
        return cls(chunk_id, text, metadata, file, tokens, head)


class KeywordIndex:
    """BM25 over every chunk of a collection, built from the store itself so it can never drift.

    An index is never changed once built, only replaced by `updated`: a search keeps the one it
    started with while a newer one is built, and the two share the tokens of unchanged chunks.
    """

    def __init__(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> None:
        """Built from scratch: every chunk tokenized."""
        chunks = [KeywordChunk.read(*row) for row in zip(ids, texts, metadatas, strict=True)]
        frequency: Counter[str] = Counter()
        for chunk in chunks:
            frequency.update(set(chunk.tokens))
        words, heads = file_words(chunks)
        self._assemble(chunks, frequency, words, heads, tokenized=len(chunks))

    def _assemble(
        self,
        chunks: list[KeywordChunk],
        frequency: Counter[str],
        words: dict[str, set[str]],
        heads: dict[str, set[str]],
        tokenized: int,
    ) -> None:
        import bm25s

        self.chunks = {chunk.id: chunk for chunk in chunks}  # by id, tokens and all
        self.ids = [chunk.id for chunk in chunks]
        self.texts = [chunk.text for chunk in chunks]
        self.metadatas = [chunk.metadata for chunk in chunks]
        # Document frequencies, for the rarity (IDF) of a question's words in evidence selection.
        self.document_frequency = frequency
        # Every word of each file (its title included): whether a file mentions a name at all.
        self.file_words = words
        # The words at the head of each file (its first chunk's start): what the file is about.
        self.file_heads = heads
        self.tokenized = tokenized  # chunks this build had to tokenize; the others were reused
        self.engine: Any = None
        self.vocabulary: set[str] = set()
        if chunks:
            # BM25's weights depend on the whole collection (chunk count, mean length, IDF), so
            # the engine is always re-indexed whole; from tokens, that is the cheap part.
            self.engine = bm25s.BM25()
            self.engine.index([chunk.tokens for chunk in chunks], show_progress=False)
            self.vocabulary = set(self.engine.vocab_dict)

    def updated(self, ids: list[str], fetch: Callable[[list[str]], Rows]) -> KeywordIndex:
        """This index for a store that now holds the chunks `ids` (in the store's order): the same
        as one built from scratch, but only chunks it does not have are read (by `fetch`) and
        tokenized, and word counts change only by the chunks added and removed."""
        if ids == self.ids:
            return self
        missing = [i for i in ids if i not in self.chunks]
        rows = fetch(missing) if missing else ([], [], [])
        fetched = {row[0]: KeywordChunk.read(*row) for row in zip(*rows, strict=True)}
        # A chunk deleted since `ids` was listed is left out; the next revision check sees that.
        known = self.chunks | fetched
        chunks = [known[i] for i in ids if i in known]
        kept = {chunk.id for chunk in chunks}
        removed = [chunk for chunk in self.chunks.values() if chunk.id not in kept]
        added = [chunk for chunk in chunks if chunk.id in fetched]

        frequency = self.document_frequency.copy()  # this index's own stays as its readers see it
        for chunk in added:
            frequency.update(set(chunk.tokens))
        for chunk in removed:
            for token in set(chunk.tokens):
                frequency[token] -= 1
                if not frequency[token]:
                    del frequency[token]  # as if never seen, as a build from scratch has it
        changed = {chunk.file for chunk in added + removed}
        words, heads = file_words(chunks, changed)
        words.update((f, w) for f, w in self.file_words.items() if f not in changed)
        heads.update((f, h) for f, h in self.file_heads.items() if f not in changed)

        index = KeywordIndex.__new__(KeywordIndex)
        index._assemble(chunks, frequency, words, heads, tokenized=len(fetched))
        return index

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

    def known_share(self, query: str) -> float:
        """The share of the question's content words (not stop words, not numbers) this
        collection holds: by stem, or by the skeleton of a Latin word across scripts ("crab" in
        "лингвини с крабом"); 1 for a question without any."""
        stop = stopwords()
        known = total = 0
        for word in QUERY_WORD.findall(query.lower()):
            stems = [t for t in tokenize(word) if t not in stop and not t[0].isdigit()]
            if not stems:
                continue
            total += 1
            skeletons = cross_script_tokens(word, "latin")
            known += any(t in self.vocabulary for t in stems) or any(
                t in self.vocabulary for t in skeletons if not t.startswith("~~")
            )
        return known / total if total else 1.0

    def search(self, query: str, top_k: int, where: dict[str, Any] | None) -> list[NodeWithScore]:
        if self.engine is None:
            return []
        words = tokenize(query)
        tokens = [t for t in words + cross_script_tokens(query, "latin") if t in self.vocabulary]
        if not tokens:
            return []
        # Score everything, then filter: the corpus of one collection is small enough (10k chunks).
        limit = len(self.ids) if where else min(top_k, len(self.ids))
        documents, scores = self.engine.retrieve([tokens], k=limit, show_progress=False)
        boost = phrase_boost(words)
        scored = []
        for position, score in zip(documents[0], scores[0], strict=True):
            if score <= 0:
                break
            metadata = self.metadatas[position]
            if where and not matches(metadata, where):
                continue
            chunk = self.chunks[self.ids[position]]
            scored.append((float(score) * boost(chunk.tokens), position))
            if len(scored) == top_k:
                break
        scored.sort(key=lambda pair: pair[0], reverse=True)
        return [
            NodeWithScore(
                node=TextNode(
                    id_=self.ids[position],
                    text=self.texts[position],
                    metadata=self.metadatas[position],
                ),
                score=score,
            )
            for score, position in scored
        ]


def phrase_boost(query: list[str]) -> Callable[[Sequence[str]], float]:
    """A chunk's boost for the question `query` (its tokens): 1 + the squared share of its content
    words that the chunk prints as one run, in the question's order (stop words between them
    included); 1 for runs under PHRASE_WORDS words."""
    stop = stopwords()
    content = [token not in stop for token in query]
    total = sum(content)
    at: dict[str, list[int]] = {}
    for position, token in enumerate(query):
        at.setdefault(token, []).append(position)

    def boost(tokens: Sequence[str]) -> float:
        if total < PHRASE_WORDS:
            return 1.0
        best = 0
        runs: dict[int, int] = {}  # query position a run ends at -> content words in the run
        for token in tokens:
            runs = {p: runs.get(p - 1, 0) + content[p] for p in at.get(token, ())}
            if runs:
                best = max(best, *runs.values())
        return 1.0 + (best / total) ** 2 if best >= PHRASE_WORDS else 1.0

    return boost


def file_words(
    chunks: Sequence[KeywordChunk], only: set[str] | None = None
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Each file's words and head words (KeywordIndex.file_words, .file_heads): of every file, or
    of the files named in `only`. A file name shared by two documents gets the last head."""
    words: dict[str, set[str]] = {}
    heads: dict[str, set[str]] = {}
    for chunk in chunks:
        if only is None or chunk.file in only:
            words.setdefault(chunk.file, set()).update(chunk.tokens)
            if chunk.head is not None:
                heads[chunk.file] = set(chunk.head)
    return words, heads


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


def fuse(
    rankings: list[list[NodeWithScore]], top_k: int, weights: Sequence[float] | None = None
) -> list[NodeWithScore]:
    """Reciprocal rank fusion, each list counting by its weight (1 by default); scores are scaled
    so a chunk ranked first by every list scores 1."""
    weights = list(weights or [1.0] * len(rankings))
    scores: dict[str, float] = {}
    nodes: dict[str, NodeWithScore] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, hit in enumerate(ranking, 1):
            score = weight / (RRF_K + rank)
            scores[hit.node.node_id] = scores.get(hit.node.node_id, 0.0) + score
            nodes.setdefault(hit.node.node_id, hit)
    best = sum(weights) / (RRF_K + 1)
    ordered = sorted(scores, key=lambda node_id: scores[node_id], reverse=True)
    chosen = ordered[:top_k]
    # Each list's first hit is kept: a chunk only keyword search finds (the one passage with a
    # rare word, a quoted line) would otherwise lose to chunks both lists rank in the middle.
    # (Of a list heard in full: a half-heard one's first hit is only its best stray match.)
    heads = list(
        dict.fromkeys(
            ranking[0].node.node_id
            for ranking, weight in zip(rankings, weights, strict=True)
            if ranking and weight >= 1.0
        )
    )
    for head in [h for h in heads if h not in chosen]:
        others = [i for i in chosen if i not in heads]
        if not others:
            break
        chosen.remove(others[-1])
        chosen.append(head)
    chosen.sort(key=lambda node_id: scores[node_id], reverse=True)
    return [NodeWithScore(node=nodes[i].node, score=scores[i] / best) for i in chosen]


@dataclass(frozen=True)
class Built:
    """A keyword index and what it reflects: a revision of the store, in one Chroma collection."""

    index: KeywordIndex
    revision: object
    collection: object  # Chroma's id: a rebuilt collection can reuse chunk ids for other text


class Retriever:
    """Finds the chunks that answer a question in one collection."""

    def __init__(self, embedder: BaseEmbedding, store: ChunkStore, mode: Mode = "hybrid") -> None:
        self.embedder = embedder
        self.store = store
        self.mode = mode
        self._built: Built | None = None  # replaced whole, so a reader sees one consistent pair
        self._build_lock = threading.Lock()

    def keyword_index(self) -> KeywordIndex:
        """The BM25 index as of the store's current revision.

        An up-to-date index is returned without locking. After a write, one reader brings it up to
        date (reading and tokenizing only the chunks it lacks) and readers arriving meanwhile wait
        for that build rather than repeat it: they must see the write they observed. Searches
        already under way are unaffected: an index is replaced, never changed.
        """
        built = self._built
        if built is not None and built.revision == self.store.revision():
            return built.index
        with self._build_lock:
            # Read again: this is the revision the build reflects (chunks are listed after it).
            revision = self.store.revision()
            built = self._built  # another reader may have built it while this one waited
            if built is None or built.revision != revision:
                built = self._build(built, revision)
                self._built = built
            return built.index

    def _build(self, previous: Built | None, revision: object) -> Built:
        collection = self.store.collection.id  # revision() has reopened it if it was replaced
        if previous is None or previous.collection != collection:
            index = KeywordIndex(*self.store.all_chunks())
        else:
            index = previous.index.updated(self.store.chunk_ids(), self.store.chunks)
        return Built(index, revision, collection)

    def retrieve(
        self, query: str, top_k: int, where: dict[str, Any] | None = None
    ) -> list[NodeWithScore]:
        query = tidy(query)  # the normalisation documents had (NFKC...): "ﬁle" finds "file"
        if not query or top_k <= 0:
            return []
        if self.mode == "bm25":
            return self.keyword_index().search(query, top_k, where)
        pool = max(top_k * CANDIDATES, MIN_CANDIDATES) if self.mode == "hybrid" else top_k
        vector_lists = [self.store.query(vector, pool, where) for vector in self._views(query)]
        if self.mode == "vector":
            return vector_lists[0] if len(vector_lists) == 1 else fuse(vector_lists, top_k)
        keywords = self.keyword_index()
        keyword_hits = keywords.search(query, pool, where)
        heard = min(1.0, keywords.known_share(query) / KEYWORDS_HEARD)
        return fuse([*vector_lists, keyword_hits], top_k, [1.0] * len(vector_lists) + [heard])

    def _views(self, query: str) -> list[list[float]]:
        """The question's search vectors: one, or one per model of an ensemble, each searched on
        its own and fused by rank."""
        if isinstance(self.embedder, EnsembleEmbedding):
            return self.embedder.query_views(query)
        return [self.embedder.get_query_embedding(query)]

    def search(self, query: str, top_k: int, where: dict[str, Any] | None = None) -> list[Source]:
        return [to_source(hit) for hit in self.retrieve(query, top_k, where)]
