"""The `rag eval` rules on hand-made cases: matching, rank, hit rate, MRR, question files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from rag.errors import ConfigError
from rag.evaluate import (
    EvalResult,
    QAItem,
    Reference,
    evaluate,
    load_questions,
    matches,
    write_report,
)

TWELVE = "one two three four five six seven eight nine ten eleven twelve"


def words(count: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(count))


# --- the matching rule ---------------------------------------------------------------------------


def test_exact_run_of_twelve_words_inside_a_longer_chunk_is_a_hit() -> None:
    reference = f"{words(5, 'before')} {TWELVE} {words(5, 'after')}"
    chunk = f"unrelated text here, then {TWELVE} and something else."
    assert matches(chunk, reference)


def test_eleven_consecutive_words_of_twelve_are_a_miss() -> None:
    reference = TWELVE
    eleven = "one two three four five six seven eight nine ten eleven"
    assert not matches(f"intro {eleven} DIFFERENT twelve outro", reference)
    # Every word present, but the run is broken in the middle: still a miss.
    assert not matches(
        "one two three four five six X seven eight nine ten eleven twelve", reference
    )


def test_a_long_reference_needs_twelve_not_all_of_its_words() -> None:
    reference = f"{words(30)}"
    chunk = " ".join(reference.split()[10:22])  # 12 of its 30 words, in order
    assert matches(chunk, reference)
    assert not matches(" ".join(reference.split()[10:21]), reference)  # 11 words


def test_a_short_reference_needs_all_its_words_consecutively() -> None:
    reference = "Pied Piper compression algorithm"
    assert matches("the Pied Piper compression algorithm is proprietary", reference)
    assert not matches("the Pied Piper algorithm for compression", reference)
    assert not matches("Pied Piper compression", reference)
    assert Reference(reference).size == 4


def test_case_and_white_space_are_folded() -> None:
    reference = "Lo Chardonnay di Nonino Monovitigno"
    assert matches("grappa 40 ml\nlo   CHARDONNAY\n\tdi nonino\r\nMONOVITIGNO 820", reference)
    assert matches("x " + TWELVE.upper().replace(" ", "\n\n"), f"  {TWELVE}\t")
    assert matches("Бренд-шеф ресторана РЕКОМЕНДУЕТ", "бренд-шеф\nРесторана рекомендует")
    # Full case folding also unfolds typographic ligatures that PDFs extract ("ﬀ" -> "ff").
    assert matches("Coﬀee by Caﬀe Vergnano", "coffee by caffe vergnano")


def test_punctuation_is_kept_literally() -> None:
    # Only case and white space fold: "price:" and "price" are different words.
    assert not matches("the price: 890 roubles", "the price 890 roubles")
    assert matches("the price: 890 roubles", "price: 890")


# --- rank, hit rate, MRR -------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    text: str
    file: str | None = None
    page: int | None = None


def fixed(results: dict[str, list[object]]):  # type: ignore[no-untyped-def]
    """A retrieve() that answers from a table and records the k it was asked for."""
    asked: list[int] = []

    def retrieve(question: str, k: int) -> list[object]:
        asked.append(k)
        return results[question]

    retrieve.asked = asked  # type: ignore[attr-defined]
    return retrieve


def test_rank_and_mrr_over_several_questions() -> None:
    items = [
        QAItem("q1", "alpha beta gamma"),
        QAItem("q2", "delta epsilon"),
        QAItem("q3", "zeta eta theta"),
        QAItem("q4", "iota kappa"),
    ]
    retrieve = fixed(
        {
            "q1": ["alpha beta gamma", "noise"],  # rank 1
            "q2": ["noise", "DELTA epsilon!", "delta epsilon"],  # rank 3 (rank 2 has "epsilon!")
            "q3": ["noise", "more noise"],  # miss
            "q4": ["noise", "iota kappa", "iota kappa"],  # rank 2: the first hit counts
        }
    )
    result = evaluate(items, retrieve, k=3)
    assert [row.rank for row in result.rows] == [1, 3, None, 2]
    assert result.n == 4 and result.k == 3
    assert result.hit_rate == pytest.approx(3 / 4)
    assert result.mrr == pytest.approx((1 + 1 / 3 + 0 + 1 / 2) / 4)
    assert retrieve.asked == [3, 3, 3, 3]
    assert result.to_json() == {"n": 4, "k": 3, "hit_rate": 0.75, "mrr": 0.4583}


def test_a_hit_at_rank_two_scores_one_half() -> None:
    result = evaluate([QAItem("q", "needle")], fixed({"q": ["hay", "needle"]}), k=5)
    assert result.rows[0].rank == 2
    assert result.mrr == 0.5
    assert result.hit_rate == 1.0


def test_hits_beyond_k_do_not_count_even_if_retrieve_returns_more() -> None:
    items = [QAItem("q1", "needle"), QAItem("q2", "needle")]
    retrieve = fixed({"q1": ["hay", "hay", "needle"], "q2": ["needle"]})
    result = evaluate(items, retrieve, k=2)
    assert [row.rank for row in result.rows] == [None, 1]
    assert result.hit_rate == 0.5
    assert result.mrr == 0.5
    assert len(result.rows[0].retrieved) == 2
    wider = evaluate(items, retrieve, k=3)
    assert wider.hit_rate == 1.0
    assert wider.mrr == pytest.approx((1 / 3 + 1) / 2)


def test_no_questions_and_bad_k() -> None:
    empty = evaluate([], fixed({}), k=5)
    assert empty.to_json() == {"n": 0, "k": 5, "hit_rate": 0.0, "mrr": 0.0}
    with pytest.raises(ConfigError, match="k must be"):
        evaluate([QAItem("q", "x")], fixed({"q": []}), k=0)


def test_rich_results_record_file_and_page_in_the_report(tmp_path: Path) -> None:
    items = [QAItem("price of the ribeye?", "Стейк «Рибай» New 100г | 1200", id="m1", line=3)]
    retrieve = fixed(
        {
            "price of the ribeye?": [
                Chunk("Каре ягненка 300г | 1650", "menu.pdf", 2),
                Chunk("блюда на углях\nСтейк «Рибай» New 100г | 1200", "menu.pdf", 2),
                Chunk("notes", None, None),
            ]
        }
    )
    result = evaluate(items, retrieve, k=5)
    assert isinstance(result, EvalResult)
    row = result.rows[0]
    assert row.rank == 2 and row.hit
    assert row.retrieved == [("menu.pdf", 2), ("menu.pdf", 2), (None, None)]

    report = tmp_path / "report.jsonl"
    write_report(result, report)
    lines = report.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["id"] == "m1" and data["line"] == 3
    assert data["question"] == "price of the ribeye?"
    assert data["rank"] == 2 and data["hit"] is True
    assert data["retrieved"] == [["menu.pdf", 2], ["menu.pdf", 2], [None, None]]
    assert "Рибай" not in lines[0]  # the report names chunks, it does not copy them
    assert "ribeye" in lines[0]


def test_retrieve_must_return_texts() -> None:
    with pytest.raises(TypeError, match="text"):
        evaluate([QAItem("q", "x")], fixed({"q": [42]}), k=1)


# --- question files ------------------------------------------------------------------------------


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_evidence_is_preferred_over_context(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "qa.jsonl",
        json.dumps({"question": "q1", "answer": "a", "evidence": "short span", "context": "long"}),
        "",
        json.dumps({"id": "x-2", "question": "q2", "context": "the whole passage"}),
        json.dumps({"question": "q3", "evidence": None, "context": "fallback passage"}),
    )
    items = load_questions(path)
    assert items == [
        QAItem("q1", "short span", answer="a", line=1),
        QAItem("q2", "the whole passage", id="x-2", line=3),
        QAItem("q3", "fallback passage", line=4),
    ]


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"answer": "a", "evidence": "e"}), '"question"'),
        (json.dumps({"question": "  ", "evidence": "e"}), '"question"'),
        (json.dumps({"question": "q", "answer": "a"}), '"evidence"'),
        (json.dumps({"question": "q", "evidence": "   "}), '"evidence" must be'),
        (json.dumps({"question": "q", "context": 3}), '"context" must be'),
        (json.dumps({"question": "q", "evidence": "e", "answer": 5}), '"answer"'),
    ],
)
def test_a_malformed_line_names_the_file_and_line(
    tmp_path: Path, bad_line: str, reason: str
) -> None:
    good = json.dumps({"question": "q", "evidence": "e"})
    path = write_lines(tmp_path / "qa.jsonl", good, "", good, bad_line, good)
    with pytest.raises(ConfigError) as caught:
        load_questions(path)
    message = str(caught.value)
    assert f"{path}, line 4:" in message
    assert reason in message


def test_missing_or_empty_question_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such question file"):
        load_questions(tmp_path / "absent.jsonl")
    with pytest.raises(ConfigError, match="no questions"):
        load_questions(write_lines(tmp_path / "empty.jsonl", "", "   "))


def test_the_essay_question_set_loads(corpus: Path) -> None:
    essay = load_questions(corpus / "qa" / "paul_graham.jsonl")
    assert len(essay) == 44 and all(item.id and item.reference for item in essay)


def test_every_bench_evidence_is_on_a_page_as_the_loaders_extract_it(corpus: Path) -> None:
    """Evidence must be word-aligned verbatim text, or the rule could never find it."""
    from rag.loaders import load_bytes

    items = load_questions(Path(__file__).resolve().parents[1] / "bench/qa/menus_jobs.jsonl")
    assert len(items) >= 20
    pages = [
        page.text
        for folder in ("menus", "jobs", "cv")
        for path in sorted((corpus / folder).iterdir())
        for page in load_bytes(path.read_bytes(), path.name).pages
    ]
    for item in items:
        assert item.answer, item.id
        reference = Reference(item.reference)
        assert any(reference.found_in(text) for text in pages), (item.id, item.reference)


# --- answers ------------------------------------------------------------------------------------


def write_objects(path: Path, rows: list[dict]) -> Path:  # type: ignore[type-arg]
    return write_lines(path, *(json.dumps(row) for row in rows))


def test_an_answer_is_right_when_every_must_pattern_matches() -> None:
    from rag.evaluate import AnswerItem, Reply, judge

    item = AnswerItem(id="a", question="How much is a Duvel?", must=(r"3[.,]50?", "duvel"))
    assert judge(item, Reply("A Duvel is 3.50e.", 0.5)).correct
    assert not judge(item, Reply("It is 3.50e.", 0.5)).correct


def test_a_refusal_is_not_a_right_answer_even_when_its_closest_passages_hold_it() -> None:
    from rag.evaluate import AnswerItem, Reply, judge

    item = AnswerItem(id="a", question="How much is a Duvel?", must=(r"3[.,]50?",))
    refusal = "The documents don't say. The closest passages found:\n> “Duvel (8.5◦) 3.50e” [1]"
    assert not judge(item, Reply(refusal, 0.1)).correct


def test_a_refusal_is_right_only_without_forbidden_text() -> None:
    from rag.evaluate import AnswerItem, Reply, judge

    item = AnswerItem(id="r", question="Phone?", refuse=True, forbid=(r"\d{3}-\d{4}",))
    assert judge(item, Reply("The documents don't say (no passage found answers it).", 0.1)).correct
    assert not judge(item, Reply("The documents don't say, but try 555-1234.", 0.1)).correct
    assert not judge(item, Reply("Call 555-1234.", 0.1)).correct


def test_facts_are_verified_against_what_the_answer_was_given() -> None:
    from rag.evaluate import AnswerItem, Reply, judge

    item = AnswerItem(id="a", question="How much is a Duvel?", must=("3",))
    row = judge(item, Reply("A Duvel costs 3.50e, a Chimay 9.99e.", 0.2, context=["Duvel 3.50e"]))
    assert (row.facts, row.verified_facts) == (4, 2)  # Duvel, 3.50 held; Chimay, 9.99 not


def test_a_bad_answer_set_names_the_line(tmp_path: Path) -> None:
    from rag.evaluate import load_answer_questions

    path = write_objects(tmp_path / "qa.jsonl", [{"id": "1", "question": "Why?"}])
    with pytest.raises(ConfigError, match=r"qa\.jsonl, line 1: needs \"must\""):
        load_answer_questions(path)
    path = write_objects(tmp_path / "qa.jsonl", [{"id": "1", "question": "Why?", "must": ["("]}])
    with pytest.raises(ConfigError, match=r"line 1: the regex '\(' does not compile"):
        load_answer_questions(path)


def test_an_answer_sets_attachment_is_found_beside_it_or_named_as_missing(tmp_path: Path) -> None:
    from rag.evaluate import load_answer_questions

    (tmp_path / "cv.md").write_text("# Ada\n\n## Experience\nBaker.\n\n## Education\nNone.\n")
    row = {"id": "cv", "question": "Which job fits my CV?", "must": ["x"], "attach": ["cv.md"]}
    [item] = load_answer_questions(write_objects(tmp_path / "qa.jsonl", [row]))
    assert item.attach == (tmp_path / "cv.md",)  # relative to the set's folder
    path = write_objects(tmp_path / "qa.jsonl", [{**row, "attach": ["gone.md"]}])
    with pytest.raises(ConfigError, match=r"line 1: the attached file .*gone\.md does not exist"):
        load_answer_questions(path)


def test_the_bench_answer_sets_load_with_every_kind(corpus: Path) -> None:
    from rag.evaluate import load_answer_questions

    bench = Path(__file__).resolve().parents[1] / "bench" / "qa"
    for name, answerable, unanswerable in (("answers", 40, 12), ("answers_heldout", 20, 8)):
        items = load_answer_questions(bench / f"{name}.jsonl")
        assert sum(not i.refuse for i in items) >= answerable
        assert sum(i.refuse for i in items) >= unanswerable
        assert {i.kind for i in items if i.refuse} >= {
            "absent-item",
            "absent-attribute",
            "out-of-domain",
            "wrong-document",
        }
        assert any(i.history for i in items)


def test_rag_eval_answers_scores_a_real_engine(
    tmp_path: Path,
    corpus: Path,
    index,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`rag eval --answers` end to end: the real index and engine, an Ollama-speaking model."""
    from fakes.ollama_server import FakeOllama

    from rag.cli import main

    assert index.ingest([corpus / "menus" / "fosdem-bar-menu.pdf"]).ok
    index.close()
    qa = write_objects(
        tmp_path / "qa.jsonl",
        [
            {"id": "duvel", "question": "How much is a Duvel at the FOSDEM bar?", "must": ["3.50"]},
            {"id": "pizza", "question": "How much is a pizza margherita?", "refuse": True},
        ],
    )
    report = tmp_path / "report.jsonl"
    storage = str(index.settings.storage_dir)
    with FakeOllama(reply="A Duvel costs 3.50e [1].") as ollama:
        monkeypatch.setenv("RAG_LLM", "ollama")
        monkeypatch.setenv("OLLAMA_BASE_URL", ollama.url)
        args = [
            "eval",
            "--answers",
            str(qa),
            "--json",
            "--report",
            str(report),
            "--storage",
            storage,
        ]
        code = main(args)
        asked = len(ollama.chat_requests())
    assert code == 0
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert [(r["id"], r["correct"]) for r in rows] == [("duvel", True), ("pizza", True)]
    assert rows[1]["refused"] and asked == 1  # the refusal never asked the model
    assert rows[0]["sources"] == [["fosdem-bar-menu.pdf", 1]] and rows[0]["cited_right"] is None
