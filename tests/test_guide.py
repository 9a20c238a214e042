"""The menu guide: open wishes met with cited items that fit them, or asked back about budget, diet and strength."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.engine import Answer, ChatEngine
from rag.guide import wish_of
from rag.index import Index
from rag.profiles import active_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def menus_index(tmp_path_factory: Any, embedder: Any, corpus: Path) -> Iterator[Index]:
    from rag.config import Settings

    root = tmp_path_factory.mktemp("guide")
    settings = Settings(
        storage_dir=root / "storage", data_dir=root / "data", profiles_dir=ROOT / "profiles"
    )
    index = Index(settings, embedder=embedder)
    assert index.ingest([corpus / "menus"], collection="menus").ok
    yield index
    index.close()


def guide(index: Index, question: str, profile: str = "restaurant-menus") -> Answer | None:
    engine = ChatEngine(index, None, active_profile(index.settings, profile))  # type: ignore[arg-type]
    return engine.guide_answer(question, question)


def text_of(answer: Answer | None) -> str:
    assert answer is not None
    return "".join(answer.stream())


def test_a_wish_for_something_light_lists_the_weakest_drinks_first(menus_index: Index) -> None:
    answer = guide(menus_index, "I feel like something light")
    assert text_of(answer).startswith(
        "The first 8 of 28 items from the menus (read as low in alcohol, the weakest first):"
    )
    assert answer is not None
    strengths = [
        float(s.quote.split("(")[1].split("◦")[0]) for s in answer.sources if "◦" in s.quote
    ]
    assert strengths == sorted(strengths) and strengths[0] == 2.5  # Pecheresse


def test_a_wish_with_a_budget_meets_it_too(menus_index: Index) -> None:
    answer = guide(menus_index, "Something light under 3 euros, please")
    assert text_of(answer).startswith(
        "4 items from the menus (read as low in alcohol, the weakest first; under 3 EUR):"
    )
    assert answer is not None
    assert [s.quote.split(" (")[0] for s in answer.sources] == [
        "Hoegaarden Blanche",
        "Jupiler",
        "Kriek Belle Vue",
        "Cuvee des Trolls",
    ]


def test_an_open_wish_with_nothing_to_go_on_is_asked_back(menus_index: Index) -> None:
    answer = guide(menus_index, "What do you recommend?")
    text = text_of(answer)
    assert text.startswith("Tell me a little more and I will pick from the menus:")
    assert (
        "a budget" in text and "vegetarian, vegan or gluten-free" in text and "how strong" in text
    )
    assert answer is not None
    # The parts of the menu it names are both menus', each cited by an item printed under it.
    assert {s.file for s in answer.sources} == {"fosdem-bar-menu.pdf", "bosfor-restaurant-menu.pdf"}
    assert "Classic beers [" in text


def test_a_diet_is_met_by_the_items_marked_with_it(menus_index: Index) -> None:
    answer = guide(menus_index, "Something vegetarian please")
    text = text_of(answer)
    assert "Veggie (fresh cheese, grilled veggies)" in text and "Vegan (loads" in text
    assert "Club (ham" not in text  # "veggies" in a ham sandwich does not make it vegetarian


def test_a_taste_is_met_by_the_items_that_print_it(menus_index: Index) -> None:
    answer = guide(menus_index, "Is there anything with truffle?")
    assert "their menu line says “truffle”" in text_of(answer)
    assert answer is not None and all("truffle" in s.quote.lower() for s in answer.sources)


def test_a_taste_no_menu_prints_is_said_and_asked_back(menus_index: Index) -> None:
    text = text_of(guide(menus_index, "Do you have something for kids?"))
    assert text.startswith("The menus do not say “kids”. Tell me a little more")


def test_only_open_wishes_are_guided(menus_index: Index) -> None:
    assert wish_of("How much is a Duvel?") is None
    assert wish_of("I want to know what a Duvel costs") is None
    assert guide(menus_index, "How much is a Duvel?") is None
    assert guide(menus_index, "I feel like something light", profile="general") is None
