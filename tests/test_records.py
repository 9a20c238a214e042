"""Records: the items menus and price lists print, read at ingest with their price, size,
strength and section, each linked to its page and span, and replaced with their file."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert "Duvel | 3.5 EUR | 8.5%" in plain.stdout
    assert "bar.pdf, page 1, section “Blond beers”" in plain.stdout
