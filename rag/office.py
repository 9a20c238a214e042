"""Word, PowerPoint, Excel and EPUB files -> pages of text that say where they are (section, slide, sheet and row, chapter).

Imported inside the parse worker (rag.parsing), which bounds each file's time and memory; the
Office libraries are imported on first use.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO
from typing import Any

from rag.errors import FileRefused
from rag.loaders import short_error
from rag.markup import read_html
from rag.pages import LoadedFile, Page, PageText
from rag.tables import Table, cell_text

# An Office file is a ZIP archive; what it expands to is bounded before any part is read. Real
# documents stay far below both (text compresses about 10:1, a spreadsheet up to about 50:1).
MAX_UNZIPPED_BYTES = 512 * 2**20
MAX_EXPANSION = 200


def open_zip(data: bytes, name: str, kind: str) -> zipfile.ZipFile:
    """The archive inside an Office file, refused when it is cut short or would expand too far."""
    try:
        archive = zipfile.ZipFile(BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError):
        raise FileRefused(
            name, f"the {kind} is damaged or cut short (its ZIP structure cannot be read)"
        ) from None
    expanded = sum(member.file_size for member in members)
    if expanded > MAX_UNZIPPED_BYTES or expanded > MAX_EXPANSION * max(len(data), 2**16):
        raise FileRefused(
            name,
            f"the {kind} would expand to {expanded / 2**20:,.0f} MB from "
            f"{len(data) / 2**20:,.1f} MB: a ZIP bomb or a damaged file",
        )
    return archive


def _damaged(name: str, kind: str, error: BaseException) -> FileRefused:
    return FileRefused(name, f"the {kind} is damaged and cannot be read ({short_error(error)})")


def _loaded(read: list[Page], name: str, kind: str, **metadata: Any) -> LoadedFile:
    pages = [page for page in read if page.text]
    if not pages:
        raise FileRefused(name, f"the {kind} has no text")
    return LoadedFile(pages=pages, metadata=metadata)


# --- Word -------------------------------------------------------------------------------------------


def load_docx(data: bytes, name: str) -> LoadedFile:
    """Paragraphs and tables in reading order; each heading names the section below it."""
    kind = "Word document"
    open_zip(data, name, kind).close()
    try:
        from docx import Document

        document = Document(BytesIO(data))
        text = PageText()
        has_table = False
        for block in document.iter_inner_content():
            if hasattr(block, "rows"):
                has_table = True
                _write_table(text, _docx_rows(block))
                continue
            style = (block.style.name if block.style is not None else "") or ""
            if style.startswith(("Heading", "Title")) and block.text.strip():
                text.paragraph()
                text.heading(block.text, f"section “{' '.join(block.text.split())}”")
            elif style.startswith("List") and block.text.strip():
                text.line(f"- {block.text}")  # an item of a list stays one ("Requirements")
            else:
                text.line(block.text)
    except FileRefused:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged part can make the library raise anything
        raise _damaged(name, kind, error) from None
    return _loaded([text.page(cut_at_lines=has_table)], name, kind)


def _docx_rows(table: Any) -> Iterator[list[str]]:
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:  # a merged cell comes once per grid column it spans
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(cell_text(cell.text))
        yield cells


def _write_table(text: PageText, rows: Iterator[list[Any]]) -> None:
    table = Table()
    for number, cells in enumerate(rows, 1):
        table.add(number, cells)
    text.rows(table.lines)


# --- PowerPoint -------------------------------------------------------------------------------------


def load_pptx(data: bytes, name: str) -> LoadedFile:
    """One page per slide: its title, text boxes, tables and speaker notes."""
    kind = "PowerPoint presentation"
    open_zip(data, name, kind).close()
    try:
        from pptx import Presentation

        presentation = Presentation(BytesIO(data))
        pages = []
        for number, slide in enumerate(presentation.slides, 1):
            text = PageText()
            title = slide.shapes.title
            if title is not None and title.has_text_frame:
                text.line(title.text_frame.text)
            has_table = False
            for shape in _shapes(slide.shapes):
                if title is not None and shape.shape_id == title.shape_id:
                    continue
                if getattr(shape, "has_table", False) and shape.has_table:
                    has_table = True
                    rows = ([cell_text(c.text) for c in row.cells] for row in shape.table.rows)
                    _write_table(text, rows)
                elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                    text.paragraph()
                    text.line(shape.text_frame.text)
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = slide.notes_slide.notes_text_frame.text
                if notes.strip():
                    text.paragraph()
                    text.line(f"Notes: {notes}")
            location = f"slide {number}"
            pages.append(
                text.page(
                    page=number, page_label=str(number), location=location, cut_at_lines=has_table
                )
            )
    except FileRefused:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged part can make the library raise anything
        raise _damaged(name, kind, error) from None
    return _loaded(pages, name, kind, pages=len(pages))


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape, the ones inside groups too."""
    for shape in shapes:
        if hasattr(shape, "shapes"):  # a group
            yield from _shapes(shape.shapes)
        else:
            yield shape


# --- Excel ------------------------------------------------------------------------------------------


def load_xlsx(data: bytes, name: str) -> LoadedFile:
    """One page per sheet, one line per row, each cell under its column's header."""
    kind = "Excel workbook"
    open_zip(data, name, kind).close()
    try:
        from openpyxl import load_workbook

        # read_only streams rows; data_only gives formulas' saved results, not their source.
        workbook = load_workbook(BytesIO(data), read_only=True, data_only=True)
        pages = []
        try:
            for number, sheet in enumerate(workbook.worksheets, 1):
                table = Table()
                for row_number, cells in enumerate(sheet.iter_rows(min_row=1), 1):
                    table.add(row_number, [shown_value(cell) for cell in cells])
                text, where = PageText(), f"sheet “{sheet.title}”"
                text.rows(table.lines, lambda row, where=where: f"{where}, row {row}")
                pages.append(
                    text.page(
                        page=number, page_label=sheet.title, location=where, cut_at_lines=True
                    )
                )
        finally:
            workbook.close()
    except FileRefused:
        raise
    except Exception as error:  # noqa: BLE001 - a damaged part can make the library raise anything
        raise _damaged(name, kind, error) from None
    return _loaded(pages, name, kind, sheets=len(pages))


# "0.00", "#,##0.00 €", "0.0%": the decimals a number format shows, and whether it is a percentage.
DECIMALS = re.compile(r"\.(0+)")


def shown_value(cell: Any) -> Any:
    """A cell's value as the sheet shows it: a price formatted "0.00" reads 3.50, not 3.5."""
    value = cell.value
    if not isinstance(value, int | float) or isinstance(value, bool):
        return value
    number_format = str(getattr(cell, "number_format", "") or "General").split(";")[0]
    percent = "%" in number_format
    if percent:
        value *= 100
    match = DECIMALS.search(number_format)
    if match is None:
        return f"{value:g}%" if percent else value
    text = f"{value:.{len(match.group(1))}f}"
    return f"{text}%" if percent else text


# --- EPUB -------------------------------------------------------------------------------------------

CONTAINER = "META-INF/container.xml"


def load_epub(data: bytes, name: str) -> LoadedFile:
    """One page per chapter, in the book's reading order (its spine); headings start sections."""
    import posixpath
    from xml.etree import ElementTree

    kind = "EPUB e-book"
    archive = open_zip(data, name, kind)
    try:
        container = ElementTree.fromstring(archive.read(CONTAINER))
        rootfile = next(e for e in container.iter() if e.tag.endswith("rootfile"))
        package_path = rootfile.attrib["full-path"]
        package = ElementTree.fromstring(archive.read(package_path))
        items = {
            item.attrib.get("id"): item.attrib.get("href", "")
            for item in package.iter()
            if item.tag.endswith("}item")
        }
        spine = [ref.attrib.get("idref") for ref in package.iter() if ref.tag.endswith("itemref")]
        folder = posixpath.dirname(package_path)
        pages = []
        for idref in spine:
            href = items.get(idref)
            if not href:
                continue
            markup = archive.read(posixpath.normpath(posixpath.join(folder, href)))
            page = read_html(markup.decode("utf-8", "replace"))
            if page.text:
                number = len(pages) + 1
                pages.append(
                    replace(page, page=number, page_label=str(number), location=f"chapter {number}")
                )
    except (KeyError, StopIteration, ElementTree.ParseError) as error:
        raise _damaged(name, kind, error) from None
    finally:
        archive.close()
    return _loaded(pages, name, kind, chapters=len(pages))
