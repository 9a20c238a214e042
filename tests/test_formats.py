"""Word, PowerPoint, Excel, CSV and HTML files: read by content, tables as rows that keep their
header, citations that name the slide, the sheet and row, or the section."""

from __future__ import annotations

import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from rag.config import Settings
from rag.engine import ChatEngine
from rag.errors import FileRefused
from rag.index import Index
from rag.loaders import load_bytes
from rag.profiles import DEFAULT_PROFILE

BEERS = [
    ("Product", "Brewery", "Strength", "Price"),
    ("Duvel", "Duvel Moortgat", 0.085, 3.5),
    ("Westmalle Tripel", "Westmalle Abbey", 0.095, 4.2),
    ("Orval", "Orval Abbey", 0.062, 4.0),
]


def docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Opening hours", 1)
    document.add_paragraph("We open at nine on weekdays. The bar is closed on Sundays.")
    document.add_heading("Beers on tap", 1)
    table = document.add_table(rows=len(BEERS), cols=len(BEERS[0]))
    for r, row in enumerate(BEERS):
        for c, value in enumerate(row):
            table.cell(r, c).text = f"{value * 100:g}%" if c == 2 and r else str(value)
    document.add_paragraph("Ask the staff for the seasonal beer.")
    buffer = BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def pptx_bytes() -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    presentation = Presentation()
    first = presentation.slides.add_slide(presentation.slide_layouts[1])
    first.shapes.title.text = "Roadmap"
    first.placeholders[1].text = "The scanner ships in March."
    second = presentation.slides.add_slide(presentation.slide_layouts[5])
    second.shapes.title.text = "Costs"
    table = second.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(6), Inches(1)).table
    for c, (header, value) in enumerate([("Item", "Servers"), ("Yearly cost", "1200")]):
        table.cell(0, c).text, table.cell(1, c).text = header, value
    second.notes_slide.notes_text_frame.text = "Costs are estimates."
    buffer = BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def xlsx_bytes(rows: list[tuple[Any, ...]] = BEERS, title: str = "Beers") -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = title
    for row in rows:
        sheet.append(list(row))
    for cells in sheet.iter_rows(min_row=2):
        cells[2].number_format = "0.0%"
        cells[3].number_format = "0.00"
    buffer = BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def pages(data: bytes, name: str) -> list[Any]:
    return load_bytes(data, name).pages


def test_a_word_document_keeps_its_sections_and_its_table_rows() -> None:
    [page] = pages(docx_bytes(), "bar.docx")
    assert "We open at nine on weekdays." in page.text
    row = "Product: Westmalle Tripel | Brewery: Westmalle Abbey | Strength: 9.5% | Price: 4.2"
    assert row in page.text.splitlines()
    labels = dict(page.marks)
    assert labels[page.text.index("Beers on tap")] == "section “Beers on tap”"
    assert page.cut_at_lines


def test_each_slide_is_a_page_cited_as_its_slide() -> None:
    first, second = pages(pptx_bytes(), "plan.pptx")
    assert (first.page, first.location) == (1, "slide 1")
    assert first.text == "Roadmap\n\nThe scanner ships in March."
    assert second.location == "slide 2"
    assert "Item: Servers | Yearly cost: 1200" in second.text
    assert "Notes: Costs are estimates." in second.text


def test_a_sheet_row_keeps_its_header_and_its_shown_numbers() -> None:
    [page] = pages(xlsx_bytes(), "beers.xlsx")
    lines = page.text.splitlines()
    assert lines[0] == "Product: Duvel | Brewery: Duvel Moortgat | Strength: 8.5% | Price: 3.50"
    assert page.location == "sheet “Beers”"
    assert [label for _, label in page.marks] == [
        "sheet “Beers”, row 2",
        "sheet “Beers”, row 3",
        "sheet “Beers”, row 4",
    ]


def test_a_csv_row_keeps_its_header_and_its_row_number() -> None:
    data = b"name;city;salary\nAda;Oslo;50 000\n\nBob;Bergen;\n"
    [page] = pages(data, "staff.csv")
    assert page.text.splitlines() == [
        "name: Ada | city: Oslo | salary: 50 000",
        "name: Bob | city: Bergen",
    ]
    assert [label for _, label in page.marks] == ["row 2", "row 4"]


def test_html_headings_name_sections_and_tables_become_rows() -> None:
    markup = (
        "<html><head><title>x</title><script>var hidden = 1</script></head><body>"
        "<h1>Menu</h1><p>Fresh &amp; local.</p>"
        "<table><tr><th>Dish</th><th>Price</th></tr><tr><td>Fish soup</td><td>9 €</td></tr></table>"
        "<h2>Drinks</h2><ul><li>Tea</li><li>Coffee</li></ul></body></html>"
    )
    [page] = pages(markup.encode(), "menu.html")
    assert page.text.splitlines() == [
        "Menu",
        "Fresh & local.",
        "",
        "Dish: Fish soup | Price: 9 €",
        "",
        "Drinks",
        "- Tea",
        "- Coffee",
    ]
    assert [label for _, label in page.marks] == ["section “Menu”", "section “Drinks”"]


def epub_bytes() -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w") as book:
        book.writestr("mimetype", "application/epub+zip")  # first and stored, as EPUB wants
        book.writestr(
            "META-INF/container.xml",
            '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/book.opf"/></rootfiles></container>',
        )
        book.writestr(
            "OEBPS/book.opf",
            '<package xmlns="http://www.idpf.org/2007/opf"><manifest>'
            '<item id="one" href="one.xhtml"/><item id="two" href="text/two.xhtml"/></manifest>'
            '<spine><itemref idref="two"/><itemref idref="one"/></spine></package>',
        )
        book.writestr(
            "OEBPS/one.xhtml", "<html><body><h1>Ending</h1><p>They sailed home.</p></body></html>"
        )
        book.writestr(
            "OEBPS/text/two.xhtml", "<html><body><h1>Start</h1><p>A storm rose.</p></body></html>"
        )
    return buffer.getvalue()


def test_an_epub_is_read_chapter_by_chapter_in_reading_order() -> None:
    first, second = pages(epub_bytes(), "voyage.epub")
    assert (first.location, first.text) == ("chapter 1", "Start\nA storm rose.")
    assert (second.location, second.text) == ("chapter 2", "Ending\nThey sailed home.")
    assert second.marks == ((0, "section “Ending”"),)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("report.docx", docx_bytes()[:3000], "the Word document is damaged or cut short"),
        (
            "photo.docx",
            b"\x89PNG\r\n\x1a\n" + bytes(64),
            "the file is a PNG image, not a Word document",
        ),
        (
            "beers.docx",
            xlsx_bytes(),
            "an Excel workbook (XLSX), not a Word document (DOCX); rename it to .xlsx",
        ),
        ("old.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), "save it as .docx"),
        ("notes.docx", b"plain words, no archive", "it is not a ZIP-based Office file"),
        ("letter.txt", docx_bytes(), "not text; rename it to .docx"),
    ],
)
def test_office_files_are_judged_by_their_content(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(FileRefused) as refused:
        load_bytes(data, name)
    assert str(refused.value).startswith(f"{name}: ")
    assert reason in str(refused.value)


def test_a_zip_bomb_dressed_as_a_workbook_is_refused_before_it_expands() -> None:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", bytes(600 * 2**20))
    with pytest.raises(FileRefused, match=r"bomb\.xlsx: .*would expand to 600 MB.*ZIP bomb"):
        load_bytes(buffer.getvalue(), "bomb.xlsx")


def test_a_csv_with_a_10_mb_line_is_refused_naming_the_line() -> None:
    data = b"name,notes\n" + b"x" * (10 * 2**20) + b"\n"
    with pytest.raises(FileRefused, match=r"dump\.csv: line 2 is 10\.0 MB long"):
        load_bytes(data, "dump.csv")


# --- indexed: row questions, whole rows, nothing lost -------------------------------------------


def index_of(tmp_path: Path, embedder: Any, files: dict[str, bytes]) -> tuple[Index, Any]:
    data = tmp_path / "data"
    data.mkdir()
    for name, content in files.items():
        (data / name).write_bytes(content)
    index = Index(Settings(storage_dir=tmp_path / "storage", data_dir=data), embedder)
    return index, index.ingest(sorted(data.iterdir()))


def test_a_row_question_finds_its_row_cited_by_sheet_and_row(tmp_path: Path, embedder: Any) -> None:
    rows = [BEERS[0]] + [
        (f"House beer {n}", f"Brewery {n}", 0.05 + n / 1000, 2 + n / 10) for n in range(1, 60)
    ]
    rows.insert(30, ("Westmalle Tripel", "Westmalle Abbey", 0.095, 4.2))
    index, report = index_of(tmp_path, embedder, {"beers.xlsx": xlsx_bytes(rows)})
    assert report.ok
    findings = ChatEngine(index, None, DEFAULT_PROFILE).find_evidence(  # type: ignore[arg-type]
        "How strong is the Westmalle Tripel?"
    )
    best = findings.evidence[0]
    assert "Product: Westmalle Tripel" in best.quote and "Strength: 9.5%" in best.quote
    assert best.citation() == "beers.xlsx, sheet “Beers”, row 31"
    index.close()


def test_chunks_never_cut_a_row(tmp_path: Path, embedder: Any) -> None:
    rows = [BEERS[0]] + [
        (f"Beer number {n} with a long descriptive name", f"Brewery {n}", 0.05, 3.0)
        for n in range(1, 400)
    ]
    index, report = index_of(tmp_path, embedder, {"long.xlsx": xlsx_bytes(rows)})
    assert report.ok
    [page] = pages(xlsx_bytes(rows), "long.xlsx")
    whole_rows = set(page.text.splitlines())
    chunks = index.search("Beer number 200", top_k=50)
    assert len(chunks) > 5
    for chunk in chunks:
        assert set(chunk.text.splitlines()) <= whole_rows, chunk.text
    index.close()


def test_a_broken_office_file_is_refused_and_the_rest_is_indexed(
    tmp_path: Path, embedder: Any
) -> None:
    index, report = index_of(
        tmp_path,
        embedder,
        {"bar.docx": docx_bytes(), "cut.pptx": pptx_bytes()[:2000], "plan.pptx": pptx_bytes()},
    )
    assert [(error.file, "damaged or cut short" in error.reason) for error in report.failed] == [
        ("cut.pptx", True)
    ]
    files = {source.file for source in index.search("scanner ships in March beers on tap", 10)}
    assert files == {"bar.docx", "plan.pptx"}
    index.close()
