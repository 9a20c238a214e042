"""Records: the items menus and price lists print, read at ingest with their price, size,
strength and section, each linked to its page and span, and replaced with their file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from rag_cli import run_rag

from rag.config import Settings
from rag.index import Index
from rag.loaders import load_bytes
from rag.records import Record, amount, records_of


def menu_records(corpus: Path, name: str) -> tuple[list[Record], dict[int | None, str]]:
    path = corpus / "menus" / name
    pages = load_bytes(path.read_bytes(), path.name).pages
    return records_of(pages), {page.page: page.text for page in pages}


def find(records: list[Record], name: str) -> Record:
    return next(record for record in records if record.name == name)


@pytest.mark.parametrize(
    ("printed", "value"),
    [("3.50e", 3.5), ("3,50 €", 3.5), ("1 260", 1260), ("33 000", 33000), ("1,260.00", 1260)],
)
def test_a_printed_price_is_read_as_its_amount(printed: str, value: float) -> None:
    assert amount(printed) == value


def test_the_fosdem_bar_menus_items_have_price_strength_and_section(corpus: Path) -> None:
    records, pages = menu_records(corpus, "fosdem-bar-menu.pdf")
    duvel = find(records, "Duvel")
    assert duvel.fields == {
        "kind": "item",
        "name": "Duvel",
        "price": 3.5,
        "currency": "EUR",
        "strength": 8.5,
        "section": "Blond beers",
    }
    assert (duvel.page, duvel.location) == (1, "page 1, section “Blond beers”")
    assert pages[duvel.page][duvel.start : duvel.end] == "Duvel (8.5◦) 3.50e"
    assert find(records, "Americano (large)").fields["price"] == 3.0
    assert not any(record.name.startswith("FOSDEM Bar") for record in records)  # a title
    assert len([r for r in records if r.fields.get("section") == "Brussels beers"]) == 7


def test_a_vegan_item_is_tagged_vegan_and_vegetarian(corpus: Path) -> None:
    records, _ = menu_records(corpus, "fosdem-bar-menu.pdf")
    assert find(records, "Vegan (loads of grilled veggies)").fields["dietary"] == [
        "vegan",
        "vegetarian",
    ]
    assert "dietary" not in find(records, "Tuna").fields


def test_the_bosfor_menus_items_read_its_weights_and_thousands(corpus: Path) -> None:
    records, pages = menu_records(corpus, "bosfor-restaurant-menu.pdf")
    steak = find(records, "Стейк «Рибай»")
    assert steak.fields["price"] == 1200 and steak.fields["size"] == "100 г"
    assert steak.fields["currency"] == "RUB"  # "Все цены указаны в рублях"
    assert steak.fields["section"] == "блюда на углях"
    assert find(records, "Beluga Epicure").fields["price"] == 33000
    assert find(records, "Balvenie Doublewood 12").fields["price"] == 900  # not 12 900
    assert find(records, "Beluga Epicure").fields["section"] == "russian vodka 40 ml › Beluga"
    # "100% De Agave" says what a tequila is made of, not how strong it is.
    assert "strength" not in find(records, "Olmeca Altos Plata").fields
    salmon = find(records, "лосось со спаржей, картофелем и лисичками")  # wrapped over two lines
    assert salmon.fields["price"] == 1260
    for record in records:  # every record is the line printed on its page
        assert record.name.split()[0] in pages[record.page][record.start : record.end]


def test_a_table_row_with_a_price_is_a_record() -> None:
    loaded = load_bytes(b"Product,Strength,Price\nDuvel,8.5%,3.50\nOrval,6.2%,4.00\n", "beers.csv")
    records = records_of(loaded.pages)
    assert [(r.name, r.fields["price"], r.fields["strength"]) for r in records] == [
        ("Duvel", 3.5, 8.5),
        ("Orval", 4.0, 6.2),
    ]
    assert records[0].location == "row 2"


def test_a_changed_file_replaces_its_records_and_a_removed_one_drops_them(
    tmp_path: Path, embedder: object
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    prices = data / "beers.csv"
    prices.write_text("Product,Price\nDuvel,3.50\nOrval,4.00\n", encoding="utf-8")
    index = Index(Settings(storage_dir=tmp_path / "storage", data_dir=data), embedder)  # type: ignore[arg-type]
    try:
        assert index.ingest([data]).ok
        assert [r.name for r in index.records()] == ["Duvel", "Orval"]
        prices.write_text("Product,Price\nWestmalle,4.20\n", encoding="utf-8")
        assert index.ingest([data]).ok
        assert [(r.name, r.fields["price"]) for r in index.records()] == [("Westmalle", 4.2)]
        prices.unlink()
        assert index.ingest([data]).ok
        assert index.records() == []
    finally:
        index.close()


def test_rag_records_lists_them_as_json(tmp_path: Path, corpus: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "bar.pdf").write_bytes((corpus / "menus" / "fosdem-bar-menu.pdf").read_bytes())
    storage = tmp_path / "storage"
    assert run_rag("ingest", "--storage", storage, data, cwd=tmp_path).returncode == 0
    listed = run_rag("records", "--storage", storage, "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    duvel = next(row for row in rows if row["name"] == "Duvel")
    assert duvel["file"] == "bar.pdf" and duvel["page"] == 1 and duvel["price"] == 3.5
    plain = run_rag("records", "--storage", storage, cwd=tmp_path)
    assert "Duvel | 3.50 EUR | 8.5%" in plain.stdout
    assert "bar.pdf, page 1, section “Blond beers”" in plain.stdout


# --- questions a list answers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def menus_index(tmp_path_factory: pytest.TempPathFactory, embedder: object, corpus: Path):  # type: ignore[no-untyped-def]
    """Both real menus, indexed once."""
    storage = tmp_path_factory.mktemp("records") / "storage"
    index = Index(Settings(storage_dir=storage, data_dir=storage.parent / "data"), embedder)  # type: ignore[arg-type]
    assert index.ingest([corpus / "menus"]).ok
    yield index
    index.close()


@pytest.fixture
def menus_engine(menus_index: Index) -> Any:
    """A new chat over the menus (answers from records never call the model)."""
    from rag.engine import ChatEngine
    from rag.profiles import DEFAULT_PROFILE

    return ChatEngine(menus_index, None, DEFAULT_PROFILE)  # type: ignore[arg-type]


def listed_names(engine: Any, question: str) -> list[str]:
    listed = engine.from_records(question)
    assert listed is not None, question
    return [record.name for record in listed.rows]


def test_a_price_bound_filters_the_items_it_names(menus_engine: Any) -> None:
    # "under 3" leaves the 3.00 beers out; the soft drinks are not beers; Bosfor's are roubles.
    assert listed_names(menus_engine, "Which beers are under 3 euros?") == [
        "Jupiler",
        "Hoegaarden Blanche",
        "Cuvee des Trolls",
        "Kriek Belle Vue",
    ]
    assert "Leffe blonde" in listed_names(menus_engine, "Which beers cost at most 3 euros?")


def test_a_superlative_gives_the_one_item_and_its_ties(menus_engine: Any) -> None:
    assert listed_names(menus_engine, "What is the strongest Brussels beer?") == ["Jambe de Bois"]
    assert listed_names(menus_engine, "Which is the most expensive grappa?") == ["Nonino Riserva 8"]
    cheapest = listed_names(menus_engine, "What are the two cheapest soft drinks?")
    assert cheapest[0] == "Water" and len(cheapest) == 5  # then four at 1.50, all shown


def test_a_dietary_question_lists_the_items_tagged_so(menus_engine: Any) -> None:
    assert listed_names(menus_engine, "How many vegan sandwiches are there?") == [
        "Vegan (loads of grilled veggies)"
    ]


def test_which_items_are_vegetarian_is_a_list_question(menus_engine: Any) -> None:
    assert listed_names(menus_engine, "Which sandwiches are vegetarian?") == [
        "Veggie (fresh cheese, grilled veggies)",
        "Vegan (loads of grilled veggies)",
    ]
    assert menus_engine.from_records("What is in the vegan sandwich?") is None  # about one


def test_a_list_answer_is_a_table_with_each_row_cited_to_its_line(menus_engine: Any) -> None:
    answer = menus_engine.ask("Which beers are under 3 euros?")
    text = "".join(answer.stream())
    assert text.startswith("4 items on the lists match (under 3 EUR):")
    assert "| Jupiler | 2.50 EUR | 5.2% | Classic beers | [1] |" in text  # no size: no column
    first = answer.sources[0]
    assert (first.file, first.page, first.quote) == (
        "fosdem-bar-menu.pdf",
        1,
        "Jupiler (5.2◦) 2.50e",
    )
    assert first.location == "page 1, section “Classic beers”"
    assert not answer.refused


def test_when_nothing_matches_the_answer_says_so(menus_engine: Any) -> None:
    answer = menus_engine.ask("Which sandwiches cost more than 10 euros?")
    assert "".join(answer.stream()) == "No item on the lists matches (over 10 EUR)."
    assert answer.sources == []


def test_other_questions_get_the_grounded_answer(menus_engine: Any) -> None:
    assert menus_engine.from_records("How much is a Duvel?") is None  # no list operator
    # A list question about something no item names is not a list question about these menus.
    assert menus_engine.from_records("Which laptops are under 500 euros?") is None


# --- job postings ----------------------------------------------------------------------------------


def test_a_job_posting_is_a_record_of_what_its_keys_say(corpus: Path) -> None:
    def posting(path: Path) -> dict[str, Any] | None:
        found = records_of(load_bytes(path.read_bytes(), path.name).pages)
        fields = next((r.fields for r in found if r.fields.get("kind") == "posting"), None)
        # What a posting asks for is tests/test_coach.py's.
        return fields and {k: v for k, v in fields.items() if k not in ("asks", "apply")}

    jobs = corpus / "jobs"
    assert posting(jobs / "stitchfix-principal-full-stack-rails-engineer.md") == {
        "kind": "posting",
        "type": "Full Time",
        "name": "Principal Full Stack Rails Engineer - Expert Use",
        "company": "Stitch Fix",
        "place": "Remote",
        "work_mode": "remote",
    }
    microsoft = posting(jobs / "jsonresume-sample.job.json")
    assert microsoft is not None
    assert (microsoft["work_mode"], microsoft["place"], microsoft["salary"]) == (
        "hybrid",
        "Berlin",
        100000,
    )
    pear_deck = posting(jobs / "pear-deck-junior-developer.md")
    assert pear_deck is not None and "work_mode" not in pear_deck  # not stated: not invented
    assert posting(corpus / "cv" / "jsonresume-sample.resume.json") is None  # a CV is no posting


def test_which_jobs_are_remote_is_answered_from_the_postings(
    tmp_path: Path, embedder: object, corpus: Path
) -> None:
    from rag.engine import ChatEngine
    from rag.profiles import DEFAULT_PROFILE

    index = Index(Settings(storage_dir=tmp_path / "storage", data_dir=tmp_path), embedder)  # type: ignore[arg-type]
    try:
        assert index.ingest([corpus / "jobs", corpus / "menus"]).ok
        engine = ChatEngine(index, None, DEFAULT_PROFILE)  # type: ignore[arg-type]
        assert listed_names(engine, "Which jobs are remote?") == [
            "Principal Full Stack Rails Engineer - Expert Use"
        ]
        assert listed_names(engine, "Which positions are hybrid?") == ["Web Developer"]
        in_iowa = listed_names(engine, "How many jobs are in Iowa City?")
        assert sorted(in_iowa) == ["Junior Developer", "Phoenix Application Developer"]
        answer = engine.ask("Which jobs are remote?")
        assert "".join(answer.stream()).startswith("1 posting on the lists matches (remote):")
        assert answer.sources[0].quote == "title: Principal Full Stack Rails Engineer - Expert Use"
    finally:
        index.close()
