"""Evidence selection and verification: spans of the stored text, answerability, checked facts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.config import Settings
from rag.engine import ChatEngine, shown_quotes
from rag.evidence import Evidence, TermMatcher, named_files, question_terms, units
from rag.index import Index
from rag.loaders import load_bytes
from rag.profiles import DEFAULT_PROFILE
from rag.verify import Verifier, facts, sentences


@pytest.fixture(scope="module")
def corpus_index(
    tmp_path_factory: pytest.TempPathFactory, embedder: Any, corpus: Path
) -> Iterator[Index]:
    """The FOSDEM menu, the Bosfor menu and the essay, as a user's documents (indexed once)."""
    storage = tmp_path_factory.mktemp("evidence") / "storage"
    index = Index(Settings(storage_dir=storage, data_dir=storage.parent / "data"), embedder)
    paths = [
        corpus / "menus" / "fosdem-bar-menu.pdf",
        corpus / "menus" / "bosfor-restaurant-menu.pdf",
        corpus / "essays" / "paul_graham_essay.txt",
    ]
    assert index.ingest(paths).ok
    yield index
    index.close()


def evidence_engine(index: Index) -> ChatEngine:
    """An engine for evidence alone: selecting evidence never calls the model."""
    return ChatEngine(index, None, DEFAULT_PROFILE)  # type: ignore[arg-type]


def stored_pages(path: Path) -> dict[int | None, str]:
    loaded = load_bytes(path.read_bytes(), path.name)
    return {page.page: page.text for page in loaded.pages}


def indexed(tmp_path: Path, embedder: Any, name: str, text: str) -> Index:
    """An index of one document a test writes."""
    data = tmp_path / "data"
    data.mkdir()
    (data / name).write_text(text, encoding="utf-8")
    index = Index(Settings(storage_dir=tmp_path / "storage", data_dir=data), embedder)
    assert index.ingest([data / name]).ok
    return index


def test_evidence_spans_are_offsets_into_the_stored_page_text(
    corpus_index: Index, corpus: Path
) -> None:
    findings = evidence_engine(corpus_index).find_evidence("How much is a Duvel at the FOSDEM bar?")
    assert findings.answerable
    best = findings.evidence[0]
    assert (best.file, best.page) == ("fosdem-bar-menu.pdf", 1)
    assert best.quote == "Duvel (8.5◦) 3.50e"
    pages = stored_pages(corpus / "menus" / "fosdem-bar-menu.pdf")
    for item in findings.evidence:
        assert item.span is not None
        start, end = item.span
        assert pages[item.page][start:end] == item.quote


def test_prose_answers_by_sentence(corpus_index: Index, corpus: Path) -> None:
    findings = evidence_engine(corpus_index).find_evidence(
        "What did the author work on before college?"
    )
    best = findings.evidence[0]
    assert best.quote.startswith("Before college the two main things I worked on")
    assert best.quote.endswith("were writing and programming.")
    text = stored_pages(corpus / "essays" / "paul_graham_essay.txt")[None]
    assert best.span is not None and text[best.span[0] : best.span[1]] == best.quote


def test_an_english_question_finds_a_line_printed_in_cyrillic(corpus_index: Index) -> None:
    findings = evidence_engine(corpus_index).find_evidence("How much is the Ribeye steak?")
    assert findings.answerable
    assert findings.evidence[0].quote == "Стейк «Рибай» New 100г | 1200"


def test_a_question_is_normalised_like_the_documents(corpus_index: Index) -> None:
    # A full-width "Ｄｕｖｅｌ" (NFKC) and a non-breaking space find the same line.
    findings = evidence_engine(corpus_index).find_evidence("How much is a Ｄｕｖｅｌ\xa0at FOSDEM?")
    assert findings.evidence[0].quote == "Duvel (8.5◦) 3.50e"


@pytest.mark.parametrize(
    ("question", "why"),
    [
        ("How much is a pizza margherita?", "absent item"),
        ("What is the phone number of the FOSDEM bar?", "absent attribute"),
        ("How much is a Duvel at Bosfor?", "detail of the other menu"),
        ("Who won the 2018 football World Cup?", "out of domain"),
        ("How many calories does the vegan sandwich at the FOSDEM bar have?", "absent count"),
    ],
)
def test_questions_the_documents_do_not_answer_are_not_answerable(
    corpus_index: Index, question: str, why: str
) -> None:
    findings = evidence_engine(corpus_index).find_evidence(question)
    assert not findings.answerable, (why, findings.confidence, findings.evidence[:1])
    assert findings.reason


def test_menu_lines_and_wrapped_items_are_units() -> None:
    text = "Салаты\nБрускетта с томатами\nи авокадо New 240г | 360\nОкрошка 280г | 390"
    assert [text[s:e] for s, e in units(text)] == [
        "Салаты",
        "Брускетта с томатами\nи авокадо New 240г | 360",
        "Окрошка 280г | 390",
    ]


def test_a_list_of_short_items_is_one_unit_with_its_lead_in() -> None:
    text = "Technologies we use include:\n\n- Ruby on Rails\n\n- Postgres\n\n- Redis\n\nWe hire."
    assert [text[s:e] for s, e in units(text)] == [
        "Technologies we use include:\n\n- Ruby on Rails\n\n- Postgres\n\n- Redis",
        "We hire.",
    ]


def test_a_count_asked_in_other_words_is_answered(tmp_path: Path, embedder: Any) -> None:
    # "workers" is in no document; the report's column says "Employees".
    index = indexed(
        tmp_path,
        embedder,
        "layoffs.md",
        "# Layoff notices\n\n"
        + "Employers file a notice with the state before a layoff, as the law requires. " * 5
        + "\n\nAcme Tools, Springfield: 120 employees.\n\nBeta Foods, Shelbyville: 45 employees.\n",
    )
    try:
        findings = evidence_engine(index).find_evidence("How many workers does Acme Tools lay off?")
        assert findings.answerable, findings.reason
        assert "120" in findings.evidence[0].quote
    finally:
        index.close()


def test_a_table_row_is_a_unit_of_its_own() -> None:
    # A header of several words without a full stop would otherwise take the first row as its
    # wrapped continuation.
    text = "State Permit Handgun Long Gun Totals\nAlabama 18,870 23,022 22,650 71,137\nAlaska 209 3,062 7,095"
    assert [text[s:e] for s, e in units(text)] == [
        "State Permit Handgun Long Gun Totals",
        "Alabama 18,870 23,022 22,650 71,137",
        "Alaska 209 3,062 7,095",
    ]


def test_a_number_written_in_words_answers_a_question_asking_for_one(
    tmp_path: Path, embedder: Any
) -> None:
    index = indexed(
        tmp_path,
        embedder,
        "letters.md",
        "# Letters from the camp\n\n"
        + "We marched all day through the hills and slept by the river. " * 5
        + "\n\nMany a family is dependent upon the thirteen dollars a month drawn here by the "
        "head of it.\n",
    )
    try:
        findings = evidence_engine(index).find_evidence(
            "How much monthly pay does the head of a family draw?"
        )
        assert findings.answerable, findings.reason
        assert "thirteen dollars" in findings.evidence[0].quote
    finally:
        index.close()


def test_wrapped_prose_is_cut_into_sentences() -> None:
    text = (
        "The FAA proposes to supersede the directive, which applies to all\n"
        "airplanes of the model. Since it was issued, the agency has determined that\n"
        "final corrective action is necessary. Comments are due by September 21, 2020."
    )
    found = [" ".join(text[s:e].split()) for s, e in units(text)]
    assert found == [
        "The FAA proposes to supersede the directive, which applies to all airplanes of the model.",
        "Since it was issued, the agency has determined that final corrective action is necessary.",
        "Comments are due by September 21, 2020.",
    ]


def test_numbers_are_checked_by_value() -> None:
    verifier = Verifier(["Duvel (8.5◦) 3.50e", "Beluga Epicure 33 000", "Balvenie 30 7 900"])
    assert verifier.unsupported("A Duvel is 3.5 euros and 8.5% strong.") == []
    assert verifier.unsupported("Beluga Epicure costs 33,000 roubles; Balvenie 30 is 7 900.") == []
    assert [f.text for f in verifier.unsupported("A Duvel costs 4.50 euros.")] == ["4.50"]


def test_a_sentence_that_wraps_the_question_in_an_invented_claim_is_not_grounded() -> None:
    verifier = Verifier(
        [
            "Гребешок на гриле 980",
            "seafood bar",
            "bosfor restaurant menu bosfor-restaurant-menu.pdf",
        ],
        "What does the grilled scallop from the Bosfor seafood bar cost?",
    )
    assert verifier.grounded("The grilled scallop at the Bosfor seafood bar costs 980.")
    assert not verifier.grounded(
        "The Bosfor seafood bar has a limited menu with only the grilled scallop, which is "
        "available for purchase on their website."
    )


def test_invented_names_emails_and_urls_are_unsupported() -> None:
    verifier = Verifier(["Pear Deck, Iowa City. Apply at https://www.peardeck.com/careers"])
    claims = "Call John Smith at jobs@peardeck.com or see https://peardeck.example."
    assert {(f.kind, f.text) for f in verifier.unsupported(claims)} == {
        ("name", "John"),
        ("name", "Smith"),
        ("email", "jobs@peardeck.com"),
        ("url", "https://peardeck.example"),
    }
    assert verifier.unsupported("Pear Deck is in Iowa City [1].") == []


def test_citation_markers_and_list_numbers_are_not_facts() -> None:
    found = facts("1. The Duvel [2] and the Chimay [guide.pdf, 3].")
    assert [(fact.kind, fact.text) for fact in found] == [("name", "Duvel"), ("name", "Chimay")]


def test_a_stream_is_cut_into_sentences_as_they_complete() -> None:
    pieces = ["The Du", "vel costs 3.", "50e [1]. It is", " strong.\nThe rest"]
    assert list(sentences(pieces)) == [
        ("The Duvel costs 3.50e [1]. ", True),
        ("It is strong.\n", True),
        ("The rest", False),
    ]


def test_a_line_ending_in_an_operator_goes_on_into_the_next() -> None:
    text = "Sensor test ........ 40 work-hours × $85 per hour =\n$3,400.\nRetrofit 1 work-hour"
    assert [text[s:e] for s, e in units(text)] == [
        "Sensor test ........ 40 work-hours × $85 per hour =\n$3,400.",
        "Retrofit 1 work-hour",
    ]


def test_a_hyphenated_question_word_is_matched_as_one_word() -> None:
    terms = question_terms("Does the job include on-call duty?", lambda stem: 1.0)
    assert "on-call" in {term.stem for term in terms}
    matcher = TermMatcher(terms)
    assert "on-call" in matcher.matched("Provide overnight/weekend on-call support")
    assert "on-call" in matcher.matched("You will be on call one weekend a month")
    assert "on-call" not in matcher.matched("Call us on Monday")


def test_a_sentence_lacking_the_name_asked_for_goes_on_into_the_next(
    tmp_path: Path, embedder: Any
) -> None:
    index = indexed(
        tmp_path,
        embedder,
        "memoir.md",
        "# A memoir\n\n"
        + "The winters were long and the studio was cold. " * 4
        + "\n\nTo pay for art school I decided to work at a software company for a year. "
        "I got one at Interleaf, which made software for creating documents. "
        "The people there were kind to an art student who knew little about their trade.\n",
    )
    try:
        findings = evidence_engine(index).find_evidence(
            "Which company did the author work at to pay for art school?"
        )
        assert findings.answerable, findings.reason
        assert findings.evidence[0].quote == (
            "To pay for art school I decided to work at a software company for a year. "
            "I got one at Interleaf, which made software for creating documents."
        )
    finally:
        index.close()


def test_a_key_naming_the_attribute_asked_is_a_fact_that_answers(
    tmp_path: Path, embedder: Any
) -> None:
    index = indexed(
        tmp_path,
        embedder,
        "job.json",
        '{"title": "Web Developer", "company": "Acme", "remote": "Hybrid", "salary": "100000",'
        ' "description": "We are looking for a skilled web developer to build web applications.",'
        ' "responsibilities": ["Develop and maintain web applications", "Review code"]}',
    )
    try:
        findings = evidence_engine(index).find_evidence("Is the Acme web developer job remote?")
        assert findings.answerable, findings.reason
        assert "remote: Hybrid" in [item.quote for item in findings.evidence[:4]], findings.evidence
    finally:
        index.close()


def test_a_menu_item_runs_to_its_price_and_no_further() -> None:
    text = "beer bottle\n\nCorona Extra\n330 ml\n290\ndraft beer\n\nPrimator Premium 5%\n400 ml\n350\nwater"
    assert [text[s:e] for s, e in units(text)] == [
        "beer bottle",
        "Corona Extra\n330 ml\n290",
        "draft beer",
        "Primator Premium 5%\n400 ml\n350",
        "water",
    ]


def test_an_item_priced_on_the_line_below_is_quoted_with_its_price(
    tmp_path: Path, embedder: Any
) -> None:
    index = indexed(
        tmp_path,
        embedder,
        "drinks.md",
        "Drinks\n\njuices 200 ml\nApple/Orange\nGrapefruit/Carrot 390\n"
        "lemonades 350 ml\nMango/Passion fruit\nPear/Tarragon 280\ncoffee\nEspresso 190\n",
    )
    try:
        findings = evidence_engine(index).find_evidence("How much is the orange juice?")
        assert findings.answerable, findings.reason
        assert findings.evidence[0].quote == "Apple/Orange\nGrapefruit/Carrot 390"
    finally:
        index.close()


def test_a_question_asking_for_several_things_prefers_a_list(tmp_path: Path, embedder: Any) -> None:
    index = indexed(
        tmp_path,
        embedder,
        "acme-engineer.md",
        "# Engineer at Acme\n\n"
        "Our data team keeps the databases of Acme fast, and every engineer here works with data "
        "all day long.\n\n"
        "Technologies we use include:\n\n- Postgres\n\n- Redis\n\n- Kafka\n\n"
        "We value kindness and curiosity.\n",
    )
    try:
        findings = evidence_engine(index).find_evidence("Which databases does Acme use?")
        assert findings.answerable, findings.reason
        assert findings.evidence[0].quote.startswith("Technologies we use include:")
    finally:
        index.close()


def test_a_name_at_the_head_of_a_file_names_the_file(tmp_path: Path, embedder: Any) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "resume.json").write_text(
        '{"basics": {"name": "Richard Hendriks", "label": "Programmer"},'
        ' "education": [{"institution": "University of Oklahoma", "studyType": "Bachelor"}]}',
        encoding="utf-8",
    )
    (data / "posting.md").write_text(
        "# Web developer\n\nA Bachelor's degree in Computer Science is required.\n",
        encoding="utf-8",
    )
    index = Index(Settings(storage_dir=tmp_path / "storage", data_dir=data), embedder)
    try:
        assert index.ingest(sorted(data.iterdir())).ok
        with index.reading(DEFAULT_PROFILE.collection) as retriever:
            keywords = retriever.keyword_index()
            terms = question_terms("Where did Richard Hendriks earn his bachelor's?", keywords.idf)
            assert named_files(terms, keywords, keywords.files(None)) == ["resume.json"]
    finally:
        index.close()


def test_a_name_after_a_description_starts_a_unit_of_its_own() -> None:
    text = "Vanilla vodka whipped with pear\nand almond liqueur with lemon\nLychee Daisy\nVanilla vodka"
    assert [text[s:e] for s, e in units(text)] == [
        "Vanilla vodka whipped with pear\nand almond liqueur with lemon",
        "Lychee Daisy",
        "Vanilla vodka",
    ]


def test_a_name_is_quoted_with_the_description_below_it(tmp_path: Path, embedder: Any) -> None:
    index = indexed(
        tmp_path,
        embedder,
        "cocktails.md",
        "Signature drinks\n\n"
        + "".join(
            f"{name}\n{base} with lemon and a dash of bitters\n"
            for name, base in [
                ("Old Harbour", "Dark rum"),
                ("Blue Hour", "Gin"),
                ("Tall Oak", "Rye"),
                ("Red Sky", "Vodka"),
                ("Night Owl", "Brandy"),
                ("Low Tide", "Mezcal"),
            ]
        )
        + "Shakespears\nVanilla vodka whipped with pear\n"
        "and almond liqueur with lemon\nGrape Silk\nGrapes with strawberry gin,\naloe and lemon\n"
        "Enjoy the silence\nMango with gin and peach liqueur\n",
    )
    try:
        findings = evidence_engine(index).find_evidence("What is in the Grape Silk cocktail?")
        assert findings.answerable, findings.reason
        assert (
            findings.evidence[0].quote == "Grape Silk\nGrapes with strawberry gin,\naloe and lemon"
        )
    finally:
        index.close()


def quoted(quote: str, score: float, page: int = 1, typed: bool = True) -> Evidence:
    return Evidence("notice.pdf", page, quote, None, score, 1.0, 1.0, typed=typed)


def test_a_line_printed_on_two_pages_is_quoted_once() -> None:
    summary = "DATES: The FAA must receive comments by September 21, 2020."
    shown = shown_quotes(
        [quoted(summary, 0.9, 1), quoted(summary, 0.88, 15), quoted("AD 2020", 0.7)]
    )
    assert [(e.quote, e.page) for e in shown] == [(summary, 1), ("AD 2020", 1)]


def test_the_quote_holding_the_fact_asked_for_comes_first() -> None:
    scene = quoted("Operators perform a sensor test on each airplane.", 0.9, 4, typed=False)
    cost = quoted("Sensor test 40 work-hours × $85 per hour = $3,400.", 0.8, 6)
    assert [e.page for e in shown_quotes([scene, cost])] == [6, 4]


def test_a_follow_up_takes_the_names_the_earlier_answer_gave(corpus_index: Index) -> None:
    engine = evidence_engine(corpus_index)
    earlier = "What was the name of the Lisp dialect Paul Graham wrote after 2015?"
    follow_up = engine.with_subject(
        "What language did he write it in?", earlier, "The dialect was called Bel [1]."
    )
    assert follow_up.startswith("What language did he write it in? (")
    assert "Bel" in follow_up
    refused = engine.with_subject(
        "What language did he write it in?", earlier, "The documents don't say. Closest: Arc."
    )
    assert "Arc" not in refused


def test_a_name_in_camel_case_starting_lower_case_is_a_name() -> None:
    verifier = Verifier(["Apply through our website."])
    assert [(f.kind, f.text) for f in verifier.unsupported("Apply in the iPhone app.")] == [
        ("name", "iPhone")
    ]


def test_a_chunk_ends_at_the_end_of_a_line(tmp_path: Path, embedder: Any) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines = [f"Dish number {n} with roasted vegetables and herbs | {100 + n}" for n in range(60)]
    (data / "menu.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = Settings(storage_dir=tmp_path / "storage", data_dir=data, chunk_size=64)
    index = Index(settings, embedder)
    try:
        assert index.ingest([data / "menu.txt"]).ok
        with index.reading(DEFAULT_PROFILE.collection) as retriever:
            chunks = retriever.keyword_index().texts
        assert len(chunks) > 3
        for chunk in chunks:
            assert all(line in lines for line in chunk.strip().split("\n")), chunk
    finally:
        index.close()


def test_a_record_cut_by_the_end_of_a_chunk_is_quoted_whole(
    tmp_path: Path, embedder: Any, corpus: Path
) -> None:
    # The posting's first chunk ends inside its skills record, after "JavaScript"; the next chunk
    # overlaps it and goes on to "React".
    path = corpus / "jobs" / "jsonresume-sample.job.json"
    index = Index(Settings(storage_dir=tmp_path / "storage", data_dir=path.parent), embedder)
    try:
        assert index.ingest([path]).ok
        findings = evidence_engine(index).find_evidence(
            "Which JavaScript framework is listed in the skills of the web developer job?"
        )
        best = findings.evidence[0].quote
        assert "JavaScript" in best and "React" in best, best
    finally:
        index.close()


def test_an_abbreviation_does_not_end_a_sentence_of_the_stream() -> None:
    stream = ["The AD for U.S. registry affects 72 ", "airplanes. Dr. Lee ", "wrote it."]
    assert [text for text, _ in sentences(stream)] == [
        "The AD for U.S. registry affects 72 airplanes. ",
        "Dr. Lee wrote it.",
    ]


def test_a_bare_yes_or_no_is_not_grounded() -> None:
    verifier = Verifier(
        ["Provide overnight/weekend on-call support and weekday help desk support"],
        "Does the job include on-call duty?",
    )
    assert not verifier.grounded("No, the job does not include on-call duty.")
    assert verifier.grounded("Yes: overnight and weekend on-call support [1].")


def test_a_question_asking_two_things_is_quoted_for_both() -> None:
    # "Where did he earn his degree, and was it a bachelor?": the second half scores far lower.
    degree = Evidence(
        "cv.json",
        None,
        "He has earned degrees from Oklahoma.",
        None,
        0.9,
        1.0,
        1.0,
        terms=frozenset({"earn", "degre"}),
    )
    bachelor = Evidence(
        "cv.json",
        None,
        "education[0].studyType: Bachelor",
        None,
        0.4,
        1.0,
        1.0,
        terms=frozenset({"bachelor"}),
    )
    again = Evidence(
        "cv.json", None, "Degrees matter.", None, 0.3, 1.0, 1.0, terms=frozenset({"degre"})
    )
    assert shown_quotes([degree, bachelor, again]) == [degree, bachelor]


def test_a_title_no_passage_holds_is_unknown_though_its_words_are_known(
    tmp_path: Path, embedder: Any, corpus: Path
) -> None:
    # Civil war letters speak of the war and of peace; no passage names "War and Peace".
    path = corpus / "pdfs" / "good" / "Seige_of_Vicksburg_Sample_OCR.pdf"
    index = Index(Settings(storage_dir=tmp_path / "storage", data_dir=path.parent), embedder)
    try:
        assert index.ingest([path]).ok
        findings = evidence_engine(index).find_evidence("Who wrote the novel War and Peace?")
        assert not findings.answerable, (findings.confidence, findings.evidence[:1])
    finally:
        index.close()


def test_an_item_of_a_list_does_not_borrow_another_items_name(corpus_index: Index) -> None:
    """Bosfor prints no strength for its Corona Extra; the strength of the draft beer a few
    lines below it is not the Corona's."""
    engine = evidence_engine(corpus_index)
    refused = engine.find_evidence("What is the alcohol percentage of the Corona Extra at Bosfor?")
    assert not refused.answerable
    answered = engine.find_evidence("How strong is the Primator Premium at Bosfor?")
    assert answered.answerable, answered.reason
    assert answered.evidence[0].quote == "Primator Premium 5% 400 ml 350"
