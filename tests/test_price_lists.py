"""Menus and price lists in PDFs: each priced item is one line under its section's heading,
chunks never cut a row, a row question finds its row, and a citation names the section."""

from __future__ import annotations

from pathlib import Path

from rag.config import Settings
from rag.index import Index
from rag.loaders import load_bytes
from rag.pages import Page
from rag.price_lists import as_price_list, is_priced
from rag.retrieve import chunk_start, locate
from testkit.pdf import pdf_bytes, write_pdf

MENU = [
    "**Pizzas**\n"
    "Margherita 9.50\n"
    "Quattro formaggi\n"
    "with gorgonzola 11.00\n"
    "**Drinks**\n"
    "Water 2.00\n"
    "Zacapa XO\n"
    "12.50\n"
    "Lemonade 3.50\n"
    "Please tell us about any allergies before you order, and we will help you choose.",
]


def menu_page() -> Page:
    return load_bytes(pdf_bytes(MENU), "menu.pdf").pages[0]


def test_a_menu_page_becomes_one_line_per_item_under_its_sections() -> None:
    page = menu_page()
    assert page.text.splitlines() == [
        "Pizzas",
        "Margherita 9.50",
        "Quattro formaggi with gorgonzola 11.00",
        "Drinks",
        "Water 2.00",
        "Zacapa XO 12.50",
        "Lemonade 3.50",
        "Please tell us about any allergies before you order, and we will help you choose.",
    ]
    assert [heading for _, heading in page.sections] == ["Pizzas", "Drinks"]
    assert page.cut_at_lines


def test_an_item_name_wrapped_over_two_lines_stays_one_row() -> None:
    assert "Quattro formaggi with gorgonzola 11.00" in menu_page().text.splitlines()


def test_a_price_alone_on_its_line_joins_its_item() -> None:
    assert "Zacapa XO 12.50" in menu_page().text.splitlines()


def test_a_note_between_items_stays_as_written() -> None:
    note = "Please tell us about any allergies before you order, and we will help you choose."
    assert note in menu_page().text.splitlines()


def test_each_section_is_marked_for_citations() -> None:
    page = menu_page()
    labels = [label for _, label in page.marks]
    assert labels == ["page 1, section “Pizzas”", "page 1, section “Drinks”"]
    drinks = page.marks[1][0]
    assert page.text[drinks:].startswith("Drinks\nWater 2.00")


def test_a_row_below_its_heading_is_searched_under_it() -> None:
    page = menu_page()
    lemonade = page.text.index("Lemonade")
    assert page.heading_above(lemonade) == "Drinks"
    assert page.heading_above(page.text.index("Drinks")) is None  # it holds its own heading
    assert page.heading_above(0) is None


NESTED_MENU = [
    "## Vodka\n**Beluga**\nBeluga Noble 250\nBeluga Epicure 33 000\n**Organic**\nOrganika 250\n"
    "## Gin\nGordon's 300\n**London Dry**\nTanqueray 400\n",
    "**Tonic**\nSchweppes 150\nFever-Tree 200\n## Rum\n**Cuba**\nHavana Club 3 300\nSantiago 11 900\n",
]


def test_a_heading_in_another_type_opens_a_section_inside_the_one_above() -> None:
    pages = load_bytes(pdf_bytes(NESTED_MENU), "bar.pdf").pages
    assert [section for _, section in pages[0].sections] == [
        "Vodka",
        "Vodka › Beluga",
        "Vodka › Organic",
        "Gin",
        "Gin › London Dry",
    ]
    epicure = pages[0].text.index("Beluga Epicure")
    assert pages[0].heading_above(epicure) == "Vodka › Beluga"
    # A page starts with no section open (page 2's "Tonic" is not filed under gin), but what
    # page 1 showed of the heading types still nests page 2's "Cuba" under "Rum".
    assert [section for _, section in pages[1].sections] == ["Tonic", "Rum", "Rum › Cuba"]


def test_the_nested_sections_of_a_real_menu_are_paths(corpus: Path) -> None:
    path = corpus / "menus" / "bosfor-restaurant-menu.pdf"
    page = next(
        p for p in load_bytes(path.read_bytes(), path.name).pages if "Beluga Epicure" in p.text
    )
    assert page.heading_above(page.text.index("Beluga Epicure")) == "russian vodka 40 ml › Beluga"


def test_without_type_styles_a_lower_case_line_goes_on_from_the_line_before() -> None:
    """OCR'd pages and text have no fonts: a row that starts in lower case continues the name
    above it, and a short line above a row that starts a new name is a heading."""
    text = (
        "паста и ризотто\n"
        "Спагетти с вонголе 300г | 640\n"
        "Ризотто\n"
        "с морепродуктами 230г | 580\n"
        "Ризотто с лисичками 290г | 520\n"
        "десерты\n"
        "Медовик 160г | 280\n"
    )
    lines = as_price_list(Page(text=text, page=2)).text.splitlines()
    assert lines == [
        "паста и ризотто",
        "Спагетти с вонголе 300г | 640",
        "Ризотто с морепродуктами 230г | 580",
        "Ризотто с лисичками 290г | 520",
        "десерты",
        "Медовик 160г | 280",
    ]


def test_prose_contents_and_index_pages_are_left_alone() -> None:
    pages = [
        "We met in 2019 and again in 2020.\nThe report has 12 pages.\nIt was long.",
        "Overview ........ 6\nModel ........ 8\nLRS model ........ 9\nData ........ 12\nEnd ..... 14",
        "Abstand, 86\nAtlas, 24\nAxiom, 64\nBasis, 3\nBaum, 37\nBetti-Zahl, 41",
        "March 2016 58 2,839 5 14\nJanuary 2016 85 6,617 7 47\nOctober 2015 71 6,102 8 19\n"
        "June 2015 70 6,000 1 18\nMay 2015 10 1,000 2 3",
    ]
    for text in pages:
        page = Page(text=text, page=1)
        assert as_price_list(page) == page, text


def test_prices_are_recognised_in_the_corpus_formats() -> None:
    for line in [
        "Duvel (8.5◦) 3.50e",
        "Стейк «Рибай» New 100г | 1200",
        "Beluga Epicure 33 000",
        "Club sandwich € 4,00",
        "Pils 0.5 l 65 kr",
        "Salmon bagel $12",
    ]:
        assert is_priced(line), line
    for line in ["seafood bar 100 г", "whiskey 40 ml", "Atlas, 24", "Overview ..... 6"]:
        assert not is_priced(line), line


def heading_of(page: Page, line: str) -> str | None:
    assert line in page.text.splitlines(), line
    return page.heading_above(page.text.index(line))


def test_the_real_menus_items_are_lines_under_their_sections(corpus: Path) -> None:
    fosdem = corpus / "menus" / "fosdem-bar-menu.pdf"
    bar = load_bytes(fosdem.read_bytes(), fosdem.name).pages[0]
    assert heading_of(bar, "Duvel (8.5◦) 3.50e") == "Blond beers"
    assert heading_of(bar, "Zinnebir (6◦) 3.50e") == "Brussels beers"
    bosfor = corpus / "menus" / "bosfor-restaurant-menu.pdf"
    pages = {page.page: page for page in load_bytes(bosfor.read_bytes(), bosfor.name).pages}
    # A bold country, a name wrapped over two lines, the price in a run of its own set apart.
    assert heading_of(pages[5], "Havana Club Anejo 3 anos | 300") == "Cuba"
    # The age in a name and the price printed apart are two numbers, not "12 900".
    assert "Balvenie Doublewood 12 | 900" in pages[6].text.splitlines()
    assert heading_of(pages[2], "Филе миньон из говяжей вырезки 200г | 1650") == "блюда на углях"


def test_chunks_never_cut_a_row_and_a_row_question_finds_its_row(
    tmp_path: Path, corpus: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "bar.pdf").write_bytes((corpus / "menus" / "fosdem-bar-menu.pdf").read_bytes())
    write_pdf(data / "menu.pdf", MENU)
    index = Index(Settings(storage_dir=tmp_path / "storage", chunk_size=64, chunk_overlap=8))
    assert index.ingest([data]).ok
    _, texts, metadatas = index.collection().all_chunks()
    rows = {
        line
        for path in (data / "bar.pdf", data / "menu.pdf")
        for page in load_bytes(path.read_bytes(), path.name).pages
        for line in page.text.splitlines()
    }
    assert len(texts) > 6  # small chunks: many cuts, none inside a row
    for text in texts:
        assert all(line in rows for line in text.splitlines()), text

    # A chunk that starts below its section's heading is searched under it.
    for text, metadata in zip(texts, metadatas, strict=True):
        if "Westmalle Triple (9.5◦) 3.50e" in text:
            assert "Blond beers" in text.splitlines() or metadata["section"] == "Blond beers"

    hit = index.search("How much does a Duvel cost?", 1)[0]
    assert "Duvel (8.5◦) 3.50e" in hit.text
    metadata = next(m for t, m in zip(texts, metadatas, strict=True) if t == hit.text)
    offset = (chunk_start(metadata) or 0) + hit.text.index("Duvel (8.5◦)")
    assert locate(metadata, offset) == "page 1, section “Blond beers”"
    index.close()
