"""Sync files into a collection: hash -> skip / replace / delete, chunk, embed, write, report progress."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from rag.config import Settings
from rag.errors import ConfigError, FileRefused
from rag.loaders import LoadedFile, check_file, content_hash, searched_text
from rag.manifest import PENDING_DELETE, PENDING_PRUNE, Manifest
from rag.ocr import setup as setup_ocr
from rag.pages import Page
from rag.parsing import ParseWorker
from rag.records import dumps, records_of
from rag.store import ChunkStore, ensure_room

if TYPE_CHECKING:  # LlamaIndex loads when files are split: `rag remove` never needs it
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import TextNode

# Chunks embedded and written together. Large enough that sorting by length keeps padding low,
# small enough for steady progress and bounded memory.
EMBED_GROUP = 256
# How the splitter cuts what is not a sentence: line by line (each with its line breaks).
LINES = r"[^\n]+\n*|\n+"
MIN_ROW_CHUNK = 32  # tokens, for pages whose lines are units: RAG_CHUNK_SIZE's own minimum


@dataclass(frozen=True)
class SourceFile:
    """A file to index: where it is, the folder it came from, and the name users see."""

    path: Path
    root: Path
    name: str  # path relative to root, with forward slashes
    chat_id: str = ""  # set for a file attached in one chat: only that chat retrieves it

    @property
    def doc_id(self) -> str:
        if self.chat_id:  # one identity per chat and name, whichever temp folder it came through
            return hashlib.sha256(f"chat\0{self.chat_id}\0{self.name}".encode()).hexdigest()[:20]
        return document_id(self.root, self.name)


def document_id(root: Path, name: str) -> str:
    """Stable id of a file within a collection: same folder and name -> same id."""
    return hashlib.sha256(f"{root.resolve()}\0{name}".encode()).hexdigest()[:20]


@dataclass
class Progress:
    """A snapshot for progress displays."""

    files_total: int
    files_done: int = 0
    chunks_done: int = 0
    current: str = ""
    started: float = field(default_factory=time.monotonic)


ProgressCallback = Callable[[Progress], None]


@dataclass
class IngestReport:
    """What one sync did, file by file."""

    indexed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[FileRefused] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chunks_written: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


# Files a folder sync leaves alone: temporary files of editors and downloads, which become (or
# came from) a real file under another name.
TEMP_SUFFIXES = frozenset(
    {".swp", ".swo", ".swx", ".tmp", ".temp", ".part", ".partial", ".crdownload", ".download"}
)


def skipped(relative: PurePath) -> bool:
    """Whether a folder sync skips this path (relative to its folder): hidden (a dot file or in a
    dot folder) or temporary (an editor's swap or backup file, a download not finished)."""
    name = relative.name
    return (
        any(part.startswith(".") for part in relative.parts)
        or relative.suffix.lower() in TEMP_SUFFIXES
        or name.endswith("~")
        or name.startswith(("~$", "#"))  # an office lock file, an Emacs autosave
    )


def find_sources(paths: list[Path]) -> tuple[list[SourceFile], list[Path]]:
    """Expand files and folders into source files; also return the folders (to sync deletions)."""
    sources: list[SourceFile] = []
    folders: list[Path] = []
    for path in paths:
        if path.is_dir():
            root = path.resolve()
            folders.append(root)
            for file in sorted(root.rglob("*")):
                relative = file.relative_to(root)
                if file.is_file() and not skipped(relative):
                    sources.append(SourceFile(file, root, relative.as_posix()))
        elif path.is_file():
            sources.append(SourceFile(path.resolve(), path.resolve().parent, path.name))
        else:
            raise ConfigError(f"{path}: no such file or folder")
    return sources, folders


@dataclass(frozen=True)
class Opened:
    """A file looked at by a sync: refused, unchanged, or changed and sent to the parser."""

    source: SourceFile
    refused: FileRefused | None = None
    size: int = 0
    digest: str = ""
    parsing: bool = False

    def parsed(self, worker: ParseWorker) -> LoadedFile | None:
        """The parsed file; None if unchanged; FileRefused if it was refused or fails to parse."""
        if self.refused is not None:
            raise self.refused
        return worker.result() if self.parsing else None


class Indexer:
    """Writes files into one collection; the caller holds the storage lock."""

    def __init__(
        self,
        settings: Settings,
        embedder: BaseEmbedding,
        store: ChunkStore,
        manifest: Manifest,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store
        self.manifest = manifest
        self.collection = store.name
        from llama_index.core.node_parser import SentenceSplitter

        self.splitter = SentenceSplitter(
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            # Text that is not cut into sentences (a menu, a table, a list) is cut at line ends,
            # never inside a line: an item and its price stay in one chunk.
            secondary_chunking_regex=LINES,
        )
        # Pages whose lines are units (table rows, menu items): cut at line ends first, sentences
        # only inside a line too long for a chunk. Such a page is a list of separate items, and a
        # chunk's embedding is the average of what it holds: at half the size, each item counts
        # for more (bench/retrieval.py, menus+jobs MRR: MiniLM 0.490 -> 0.578).
        row_chunk = max(MIN_ROW_CHUNK, settings.chunk_size // 2)
        self.line_splitter = SentenceSplitter(
            chunk_size=row_chunk,
            chunk_overlap=min(settings.chunk_overlap, row_chunk // 2),
            chunking_tokenizer_fn=lines_then_sentences(),
            secondary_chunking_regex=LINES,
        )

    def recover(self) -> list[str]:
        """Roll back what a killed run left half-written in this collection; returns file names."""
        recovered = []
        for record in self.manifest.pending():
            if record.collection != self.collection:
                continue
            if record.pending == PENDING_DELETE:
                self.store.delete_chunks(record.doc_id)
                self.manifest.commit_delete(self.collection, record.doc_id)
            elif record.pending == PENDING_PRUNE and record.content_hash:
                self.store.delete_other_versions(record.doc_id, keep_hash=record.content_hash)
                self.manifest.finish(self.collection, record.doc_id)
            else:  # a version was being written: drop what was written, the previous one is intact
                self.store.delete_chunks(record.doc_id, content_hash=record.pending)
                self.manifest.clear_pending(self.collection, record.doc_id)
            recovered.append(record.file)
        if recovered:
            self.store.bump_revision()
        return recovered

    def sync(
        self,
        sources: list[SourceFile],
        folders: list[Path],
        progress: ProgressCallback | None = None,
    ) -> IngestReport:
        """Index new and changed files, skip unchanged ones, drop files gone from `folders`.

        The worker process parses the next changed file while this one is embedded and written,
        so parsing a PDF and embedding chunks run at the same time instead of taking turns.
        """
        started = time.monotonic()
        report = IngestReport()
        state = Progress(files_total=len(sources))
        ocr = setup_ocr(self.settings.ocr, self.settings.ocr_languages)  # logs missing languages
        with ParseWorker(self.settings.parse_timeout_s, ocr=ocr) as worker:
            upcoming = iter(sources)
            opened: deque[Opened] = deque()

            def read_ahead() -> None:
                """Open files until one is with the parser, so it is parsed alongside."""
                while not any(item.parsing for item in opened):
                    source = next(upcoming, None)
                    if source is None:
                        return
                    opened.append(self._open(source, worker))

            read_ahead()
            while opened:
                current = opened.popleft()
                state.current = current.source.name
                if progress:
                    progress(state)
                try:
                    loaded = current.parsed(worker)
                    read_ahead()  # the next changed file is parsed while this one is embedded
                    if loaded is None:
                        report.unchanged.append(current.source.name)
                    else:
                        self._write(current, loaded, report, state, progress)
                except FileRefused as refused:
                    report.failed.append(refused)
                    read_ahead()
                state.files_done += 1
                if progress:
                    progress(state)
        present = {source.doc_id for source in sources}
        for folder in folders:
            for record in self.manifest.under_root(self.collection, str(folder)):
                if record.doc_id not in present:
                    self.remove(record.doc_id)
                    report.removed.append(record.file)
        report.seconds = time.monotonic() - started
        return report

    def _open(self, source: SourceFile, worker: ParseWorker) -> Opened:
        """Check, read and hash a file; a changed one is sent to the worker to parse."""
        try:
            size, data = self._read(source)
        except FileRefused as refused:
            return Opened(source, refused=refused)
        digest = content_hash(data)
        record = self.manifest.get(self.collection, source.doc_id)
        # Trust the manifest only while the store agrees: a wiped store, or a switch to a Chroma
        # server, leaves a manifest that remembers chunks the store does not have.
        unchanged = record and record.content_hash == digest and record.pending is None
        if unchanged and (record.chunks == 0 or self.store.has_chunks(source.doc_id)):
            return Opened(source)
        worker.submit(data, source.name)
        return Opened(source, size=size, digest=digest, parsing=True)

    def _read(self, source: SourceFile) -> tuple[int, bytes]:
        name, limit_mb = source.name, self.settings.max_file_mb
        try:
            size = source.path.stat().st_size
        except OSError as error:
            raise FileRefused(name, f"cannot be read ({error.strerror})") from None
        limit = f"the limit of {limit_mb:g} MB (RAG_MAX_FILE_MB)"
        check_file(name, size, int(limit_mb * 1024 * 1024), limit)
        try:
            return size, source.path.read_bytes()
        except OSError as error:
            raise FileRefused(name, f"cannot be read ({error.strerror})") from None

    def _write(
        self,
        opened: Opened,
        loaded: LoadedFile,
        report: IngestReport,
        state: Progress,
        progress: ProgressCallback | None,
    ) -> None:
        source, name, digest = opened.source, opened.source.name, opened.digest
        report.warnings.extend(loaded.warnings)
        self.check_passages(loaded, name)
        nodes = self.chunk(loaded, source, digest)
        self.check_passages(loaded, name, len(nodes))
        self.manifest.begin_write(
            self.collection, source.doc_id, name, str(source.path), str(source.root), digest
        )
        for start in range(0, len(nodes), EMBED_GROUP):
            group = nodes[start : start + EMBED_GROUP]
            self.ensure_room(len(group))
            vectors = self.embedder.get_text_embedding_batch([embed_text(node) for node in group])
            for node, vector in zip(group, vectors, strict=True):
                node.embedding = vector
            self.store.upsert(group)
            state.chunks_done += len(group)
            report.chunks_written += len(group)
            if progress:
                progress(state)
        # Commit before pruning: at every moment the store holds one complete version of the file.
        records = [
            replace(record, file=name, chat_id=source.chat_id)
            for record in records_of(loaded.pages)
        ]
        self.manifest.commit_write(
            self.collection, source.doc_id, digest, len(nodes), opened.size, dumps(records)
        )
        self.store.delete_other_versions(source.doc_id, keep_hash=digest)
        self.manifest.finish(self.collection, source.doc_id)
        self.store.bump_revision()
        report.indexed.append(name)

    def ensure_room(self, chunks: int) -> None:
        """Stop before a write the disk under storage/ cannot take (a Chroma server has its own)."""
        if not self.settings.chroma_host:
            ensure_room(self.settings.storage_dir, chunks)

    def check_passages(self, loaded: LoadedFile, name: str, passages: int | None = None) -> None:
        """Refuse a file with more passages than RAG_MAX_FILE_CHUNKS: a small file can expand into
        millions of words (a JSON of numbers), which would hold the write lock for hours.

        Before chunking, a lower bound of the count is estimated from the text (no real text
        averages more than 6 characters a token), so a gigantic text is refused without being
        split first.
        """
        limit = self.settings.max_file_chunks
        if passages is None:
            characters = sum(len(page.text) for page in loaded.pages)
            stride = self.settings.chunk_size - self.settings.chunk_overlap
            if characters <= limit * stride * 6:
                return
            passages = characters // (stride * 6)
            shown = f"about {passages}"
        elif passages <= limit:
            return
        else:
            shown = str(passages)
        raise FileRefused(
            name,
            f"the file has {shown} passages, over the limit of {limit} per file "
            "(RAG_MAX_FILE_CHUNKS): split it, or raise the limit if it is genuine",
        )

    def chunk(self, loaded: LoadedFile, source: SourceFile, digest: str) -> list[TextNode]:
        """Split page by page (a chunk never spans two pages) into nodes with deterministic ids."""
        nodes: list[TextNode] = []
        for page in loaded.pages:
            cursor = 0
            splitter = self.line_splitter if page.cut_at_lines else self.splitter
            for text in splitter.split_text(page.text):
                # Where the chunk starts in the page text: evidence spans are offsets into the page.
                start = page.text.find(text, cursor)
                if start >= 0:
                    cursor = start + 1
                nodes.append(chunk_node(source, digest, page, text, start, len(nodes)))
        return nodes

    def remove(self, doc_id: str) -> None:
        remove_file(self.store, self.manifest, doc_id)


def chunk_node(
    source: SourceFile, digest: str, page: Page, text: str, start: int, number: int
) -> TextNode:
    """Chunk `number` of a file: `text`, starting at `start` of its page's text (-1 if the
    splitter changed the text, which it does not today)."""
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

    metadata: dict[str, str | int | float | bool] = {
        "file": source.name,
        "chat_id": source.chat_id,  # "" for shared documents
        "file_id": source.doc_id,
        "content_hash": digest,
        "chunk": number,
        "start_char": start,
    }
    if page.page is not None:
        metadata["page"] = page.page
        metadata["page_label"] = page.page_label or str(page.page)
    if page.location:
        metadata["location"] = page.location
    if page.marks and start >= 0:
        metadata["marks"] = chunk_marks(page.marks, start, start + len(text))
    heading = page.heading_above(start) if start >= 0 else None
    if heading:
        metadata["section"] = heading  # searched with the chunk (searched_text)
    return TextNode(
        id_=f"{source.doc_id}-{digest[:16]}-{number:05d}",
        text=text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=[
            "file_id",
            "content_hash",
            "chunk",
            "chat_id",
            "start_char",
            "marks",
            "section",
        ],
        # LlamaIndex's own notion of "which document": lets its stores delete by file too.
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=source.doc_id)},
    )


def lines_then_sentences() -> Callable[[str], list[str]]:
    """A splitter's sentence function that cuts text at line ends (each line keeps its break),
    and one line into sentences: the splitter comes back to a line only when it is too long for
    a chunk."""
    from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer

    sentences = split_by_sentence_tokenizer()

    def split(text: str) -> list[str]:
        lines = re.findall(LINES, text)
        return lines if len(lines) > 1 else sentences(text)

    return split


def chunk_marks(marks: tuple[tuple[int, str], ...], start: int, end: int) -> str:
    """The marks a chunk of [start, end) of its page needs, as JSON for the store's flat metadata:
    the last one before it (the section it starts in) and those inside it."""
    before = [mark for mark in marks if mark[0] <= start][-1:]
    inside = [mark for mark in marks if start < mark[0] < end]
    return json.dumps([list(mark) for mark in before + inside], ensure_ascii=False)


def embed_text(node: TextNode) -> str:
    """What the embedder sees: the chunk under its document's title (and its section's heading),
    so a question that names the document ("the bar menu", "the Pear Deck job") finds it."""
    section = node.metadata.get("section")
    return searched_text(str(node.metadata.get("file", "")), node.text, str(section or ""))


def remove_file(store: ChunkStore, manifest: Manifest, doc_id: str) -> None:
    """Delete one file's chunks and its manifest row, logged so a kill half-way is completed later."""
    manifest.begin_delete(store.name, doc_id)
    store.delete_chunks(doc_id)
    manifest.commit_delete(store.name, doc_id)
    store.bump_revision()
