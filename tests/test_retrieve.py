"""Hybrid retrieval: exact words are found, and the keyword index always agrees with the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.index import Index
from rag.retrieve import Retriever, fuse, matches, tokenize


def ids(retriever: Retriever, query: str, k: int = 50) -> set[str]:
    return {hit.node.node_id for hit in retriever.keyword_index().search(query, k, None)}


def all_ids(index: Index) -> set[str]:
    return set(index.collection().collection.get(include=[])["ids"])


@pytest.fixture
def filler(data_dir: Path) -> Path:
    """Notes on medicine doses, and one unrelated note that mentions a rare product name once."""
    for number, drug in enumerate(["ibuprofen", "paracetamol", "aspirin", "naproxen"] * 5):
        (data_dir / f"dose{number:02d}.txt").write_text(
            f"Dosage guide {number}: adults take {drug} every six hours with water; the daily dose "
            "must not exceed the amount on the leaflet. Ask a pharmacist about the right dosage."
        )
    (data_dir / "party.txt").write_text(
        "Garden party checklist: lanterns, folding chairs, lemonade, a speaker for music, and the "
        "Zyrtexol box that Aunt May left in the shed, which should go back to her."
    )
    return data_dir


def test_hybrid_finds_an_exact_rare_word_that_vectors_miss(index: Index, filler: Path) -> None:
    index.ingest([filler])
    vector = Retriever(index.embedder, index.collection(), mode="vector")
    hybrid = Retriever(index.embedder, index.collection(), mode="hybrid")
    query = "Zyrtexol"  # a product name the embedder has never seen
    assert "party.txt" not in [s.file for s in vector.search(query, 3)]
    assert hybrid.search(query, 1)[0].file == "party.txt"


def test_words_in_a_language_the_embedder_does_not_know(index: Index, corpus: Path) -> None:
    index.ingest([corpus / "menus"])
    hits = index.search("Шашлычки из ягненка", 3)
    assert "ягненка" in hits[0].text, [h.text[:80] for h in hits]


def test_keyword_index_follows_add_change_delete_and_restart(
    index: Index, data_dir: Path, settings, embedder
) -> None:  # type: ignore[no-untyped-def]
    (data_dir / "a.txt").write_text("Aardvarks dig burrows in the savanna.")
    index.ingest([data_dir])
    retriever = index.retriever()
    assert ids(retriever, "aardvarks") == all_ids(index)

    (data_dir / "b.txt").write_text("Badgers are nocturnal.")
    index.ingest([data_dir])
    assert ids(retriever, "badgers") and ids(retriever, "aardvarks badgers") == all_ids(index)

    (data_dir / "a.txt").write_text("Anteaters eat termites.")
    index.ingest([data_dir])
    assert ids(retriever, "aardvarks") == set()
    assert ids(retriever, "anteaters badgers") == all_ids(index)

    (data_dir / "b.txt").unlink()
    index.ingest([data_dir])
    assert ids(retriever, "badgers") == set()
    assert ids(retriever, "anteaters") == all_ids(index)

    restarted = Index(settings, embedder=embedder)
    assert ids(restarted.retriever(), "anteaters") == all_ids(index)
    restarted.close()


def test_keyword_index_sees_writes_by_another_process_handle(
    index: Index, data_dir: Path, settings, embedder
) -> None:  # type: ignore[no-untyped-def]
    (data_dir / "a.txt").write_text("Quokkas live on Rottnest Island.")
    index.ingest([data_dir])
    reader = Index(settings, embedder=embedder)
    assert ids(reader.retriever(), "quokkas")
    (data_dir / "b.txt").write_text("Wombats have cube-shaped droppings.")
    index.ingest([data_dir])  # written through another Index, as another process would
    assert ids(reader.retriever(), "wombats")
    reader.close()


def test_filters_apply_to_both_retrievers(index: Index, data_dir: Path) -> None:
    (data_dir / "mine.txt").write_text("The secret recipe uses cardamom.")
    (data_dir / "yours.txt").write_text("The public recipe uses cinnamon and cardamom.")
    index.ingest([data_dir])
    where = {"file": "yours.txt"}
    for mode in ("vector", "bm25", "hybrid"):
        retriever = Retriever(index.embedder, index.collection(), mode=mode)  # type: ignore[arg-type]
        assert {s.file for s in retriever.search("secret recipe cardamom", 5, where)} == {
            "yours.txt"
        }


def test_tokenize_keeps_prices_and_stems_words() -> None:
    assert tokenize("Tomato soups: 4,50 EUR") == ["tomato", "soup", "4.50", "eur"]
    assert tokenize("Борщи") == tokenize("борщ")


def test_fusion_rewards_agreement() -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    def hit(node_id: str) -> NodeWithScore:
        return NodeWithScore(node=TextNode(id_=node_id, text=node_id), score=1.0)

    fused = fuse([[hit("a"), hit("b")], [hit("b"), hit("c")]], 3)
    assert [h.node.node_id for h in fused] == ["b", "a", "c"]
    assert fused[0].score <= 1.0


def test_where_matching() -> None:
    metadata = {"file": "x.pdf", "chat": "c1"}
    assert matches(metadata, {"file": "x.pdf"})
    assert matches(metadata, {"chat": {"$in": ["c1", "c2"]}})
    assert not matches(metadata, {"$and": [{"file": "x.pdf"}, {"chat": {"$ne": "c1"}}]})
    assert matches(metadata, {"$or": [{"file": "y.pdf"}, {"chat": "c1"}]})


def test_fusion_keeps_the_first_hit_of_each_list() -> None:
    from llama_index.core.schema import NodeWithScore, TextNode

    def hits(*ids: str) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(id_=i, text=i), score=1.0) for i in ids]

    # "rare" is first by keywords but no vector hit; b..f are in the middle of both lists.
    vector = hits("a", "b", "c", "d", "e", "f")
    keyword = hits("rare", "f", "e", "d", "c", "b")
    fused = [hit.node.node_id for hit in fuse([vector, keyword], 3)]
    assert "rare" in fused and "a" in fused and len(fused) == 3


def test_keywords_count_for_as_much_of_the_question_as_the_collection_knows() -> None:
    """A question in another language than the documents (a Russian one, English notes): keyword
    search matches only stray words, and the vector list decides; an English one is heard in full."""
    from llama_index.core.schema import NodeWithScore, TextNode

    from rag.retrieve import KEYWORDS_HEARD, KeywordIndex

    def hits(*ids: str) -> list[NodeWithScore]:
        return [NodeWithScore(node=TextNode(id_=i, text=i), score=1.0) for i in ids]

    texts = ["The author wrote his first programs on an IBM 1401.", "Стейк «Рибай» 100г | 1200"]
    keywords = KeywordIndex(["essay", "menu"], texts, [{"file": "e.md"}, {"file": "m.md"}])
    english = keywords.known_share("What did the author write his first programs on?")
    assert english >= KEYWORDS_HEARD  # "write" is not "wrote"; the rest is there
    assert (
        keywords.known_share("How much is the ribeye steak?") == 1.0
    )  # its skeleton, across scripts
    assert keywords.known_share("На чём автор писал свои первые программы?") == 0.0

    vector, keyword = hits("a", "b", "c", "d"), hits("stray", "d", "c")
    unheard = [hit.node.node_id for hit in fuse([vector, keyword], 3, [1.0, 0.0])]
    assert unheard == ["a", "b", "c"]  # neither the stray first keyword hit nor agreement counts
    heard = [hit.node.node_id for hit in fuse([vector, keyword], 3, [1.0, 1.0])]
    assert "stray" in heard


def test_a_pasted_line_ranks_the_chunk_that_prints_it_above_near_copies() -> None:
    from rag.retrieve import KeywordIndex

    near_copy = (
        "(8) In the chapter, add the information in figure 7 to paragraph (h)(8) of this AD. "
        "(9) In the chapter, add the information in figure 8 to paragraph (h)(9) of this AD. "
        "Figures 1 through 9 are printed at the end; figure 9 is the last of them."
    )
    printing = (
        "A long preface about the manual, its chapters, revisions and the people who keep it "
        "current, then: (10) In the chapter, add the information in figure 9 to paragraph (h)."
    )
    texts = [near_copy, printing] + [
        f"Unrelated note {n} about lunch and trains." for n in range(8)
    ]
    ids = [f"c{n}" for n in range(len(texts))]
    index = KeywordIndex(ids, texts, [{"file": f"{i}.txt"} for i in ids])
    hits = index.search("add the information in figure 9 to paragraph", 3, None)
    assert hits[0].node.node_id == "c1", [h.node.node_id for h in hits]
