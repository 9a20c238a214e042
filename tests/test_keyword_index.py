"""The keyword index after a write: updated by the chunks that changed, exactly as if rebuilt."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from rag.config import Settings
from rag.index import Index
from rag.retrieve import KeywordIndex

CHAT = "chat-1"
CHAT_SCOPE = {"chat_id": {"$in": ["", CHAT]}}  # what a chat's questions see (rag.chat)
QUERIES = [
    "junior developer Rails",
    "Шашлычки из ягненка",  # Cyrillic words
    "ribeye steak",  # a name printed in Cyrillic, asked in English
    "How much is a Duvel?",  # the attachment's words
    "aardvark burrows",
    "badger sett",
]
JOBS = ["pear-deck-junior-developer.md", "stitchfix-principal-full-stack-rails-engineer.md"]


def hits(index: KeywordIndex, query: str, where: dict | None) -> list[tuple[str, float]]:
    return [(hit.node.node_id, hit.score) for hit in index.search(query, 10, where)]


def from_scratch(index: Index) -> KeywordIndex:
    return KeywordIndex(*index.collection().all_chunks())


def assert_same(updated: KeywordIndex, scratch: KeywordIndex) -> None:
    """Everything search and evidence selection read of an index is the same."""
    assert updated.ids == scratch.ids
    assert updated.texts == scratch.texts
    assert updated.metadatas == scratch.metadatas
    assert updated.vocabulary == scratch.vocabulary
    # As dicts: Counter's == would take a word left at count 0 for a word never seen.
    assert dict(updated.document_frequency) == dict(scratch.document_frequency)
    assert updated.file_words == scratch.file_words
    assert updated.file_heads == scratch.file_heads
    for stem in scratch.vocabulary | {"\0"}:
        assert updated.idf(stem) == scratch.idf(stem), stem
    for where in (None, CHAT_SCOPE):
        assert updated.files(where) == scratch.files(where)
        for query in QUERIES:
            assert hits(updated, query, where) == hits(scratch, query, where), query


def test_after_an_attachment_a_change_and_a_removal_the_index_is_the_one_a_rebuild_gives(
    index: Index, data_dir: Path, corpus: Path
) -> None:
    for job in JOBS:
        shutil.copy(corpus / "jobs" / job, data_dir)
    shutil.copy(corpus / "menus" / "bosfor-restaurant-menu.pdf", data_dir)
    (data_dir / "notes.txt").write_text("Aardvarks dig burrows in the savanna at night.")
    index.ingest([data_dir])
    retriever = index.retriever()
    first = retriever.keyword_index()
    assert first.tokenized == len(first.ids)  # the first build reads everything

    index.attach(corpus / "menus" / "fosdem-bar-menu.pdf", "fosdem-bar-menu.pdf", CHAT)
    attached = retriever.keyword_index()
    assert attached.tokenized == len(attached.ids) - len(first.ids) > 0  # only the new file's
    assert hits(attached, "How much is a Duvel?", CHAT_SCOPE)
    assert_same(attached, from_scratch(index))

    (data_dir / "notes.txt").write_text("Badgers dig a sett; aardvarks dig burrows. " * 3)
    index.ingest([data_dir])
    changed = retriever.keyword_index()
    assert changed.tokenized == 1  # the new version's one chunk; the old one's is gone
    assert_same(changed, from_scratch(index))

    (data_dir / JOBS[0]).unlink()
    index.ingest([data_dir])
    removed = retriever.keyword_index()
    assert removed.tokenized == 0
    assert JOBS[0] not in removed.files() and JOBS[0] not in removed.file_words
    assert_same(removed, from_scratch(index))


def test_an_index_is_replaced_never_changed_and_readers_of_a_current_one_never_wait(
    index: Index, data_dir: Path
) -> None:
    (data_dir / "a.txt").write_text("Aardvarks dig burrows.")
    index.ingest([data_dir])
    retriever = index.retriever()
    old = retriever.keyword_index()
    seen = (list(old.ids), dict(old.document_frequency), hits(old, "aardvark burrows", None))

    (data_dir / "b.txt").write_text("Badgers dig a sett, not burrows.")
    index.ingest([data_dir])
    new = retriever.keyword_index()
    assert new is not old and hits(new, "badger sett", None)
    # A search that started on the old index goes on seeing the collection it started with.
    assert (old.ids, dict(old.document_frequency), hits(old, "aardvark burrows", None)) == seen

    found: list[KeywordIndex] = []
    with retriever._build_lock:  # as while another reader builds the index
        reader = threading.Thread(target=lambda: found.append(retriever.keyword_index()))
        reader.start()
        reader.join(timeout=30)
    assert found == [new]  # no write since: the same index, without waiting for the lock


def test_a_collection_rebuilt_by_another_process_is_read_again_whole(
    index: Index, data_dir: Path, settings: Settings, embedder: object
) -> None:
    (data_dir / "long.txt").write_text(
        " ".join(f"Paragraph {n} is about aardvarks, badgers and burrows." for n in range(60))
    )
    index.ingest([data_dir])
    retriever = index.retriever()
    before = retriever.keyword_index()

    # Smaller chunks: the same file and version, so chunk ids repeat with other text.
    other = Index(settings.model_copy(update={"chunk_size": 64}), embedder=embedder)  # type: ignore[arg-type]
    other.rebuild([data_dir])
    other.close()
    rebuilt = retriever.keyword_index()
    assert set(rebuilt.ids) & set(before.ids) and rebuilt.texts != before.texts
    assert rebuilt.tokenized == len(rebuilt.ids)
    assert_same(rebuilt, from_scratch(index))
