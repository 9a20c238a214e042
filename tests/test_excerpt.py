"""One-page excerpts of a cited PDF page with the quote highlighted (rag.excerpt)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from pypdf import PdfReader
from pypdf.generic import DictionaryObject

from rag.excerpt import page_excerpt
from testkit.pdf import write_pdf

FOSDEM_MENU = (
    Path(__file__).resolve().parents[1].parent
    / "shared"
    / "corpus"
    / "menus"
    / "fosdem-bar-menu.pdf"
)
LINES = ["first line alpha", "second line bravo", "third line charlie", "fourth line delta"]


def baseline(line_index: int) -> float:
    """Where write_pdf puts a line: 11 pt Helvetica, 14 pt leading, from y=760."""
    return 760 - 14 * line_index


@pytest.fixture
def pdf(tmp_path: Path) -> Path:
    return write_pdf(tmp_path / "doc.pdf", ["cover page", "\n".join(LINES), "last page"])


def highlights(excerpt: Path) -> list[DictionaryObject]:
    page = PdfReader(excerpt).pages[0]
    annotations = [a.get_object() for a in page.get("/Annots", [])]
    return [a for a in annotations if a["/Subtype"] == "/Highlight"]


def rect(annotation: DictionaryObject) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in annotation["/Rect"])
    return x0, y0, x1, y1


def quads(annotation: DictionaryObject) -> list[tuple[float, float, float, float]]:
    """Each quad of /QuadPoints as its bounding box (x0, y0, x1, y1)."""
    points = [float(v) for v in annotation["/QuadPoints"]]
    assert len(points) % 8 == 0
    boxes = []
    for i in range(0, len(points), 8):
        xs, ys = points[i : i + 8 : 2], points[i + 1 : i + 8 : 2]
        boxes.append((min(xs), min(ys), max(xs), max(ys)))
    return boxes


def covers(box: tuple[float, float, float, float], y: float) -> bool:
    return box[1] <= y <= box[3]


def test_excerpt_holds_only_the_cited_page(pdf: Path, tmp_path: Path) -> None:
    excerpt = page_excerpt(pdf, 2, "second line bravo", tmp_path / "excerpts")

    reader = PdfReader(excerpt)
    assert len(reader.pages) == 1
    assert reader.pages[0].extract_text() == PdfReader(pdf).pages[1].extract_text()


def test_excerpt_opens_at_its_page(pdf: Path, tmp_path: Path) -> None:
    reader = PdfReader(page_excerpt(pdf, 2, "second line bravo", tmp_path / "excerpts"))

    action = reader.trailer["/Root"]["/OpenAction"]
    assert action[0].get_object() == reader.pages[0]


def test_highlight_covers_the_quoted_line_only(pdf: Path, tmp_path: Path) -> None:
    [highlight] = highlights(page_excerpt(pdf, 2, "second line bravo", tmp_path / "excerpts"))

    box = rect(highlight)
    assert box[0] >= 72
    assert covers(box, baseline(1))
    assert not any(covers(box, baseline(i)) for i in (0, 2, 3))


def test_quote_over_two_lines_gets_one_quad_per_line(pdf: Path, tmp_path: Path) -> None:
    # Reflowed as an answer would quote it: the line break became spaces.
    [highlight] = highlights(page_excerpt(pdf, 2, "bravo  third line", tmp_path / "excerpts"))

    first, second = quads(highlight)
    assert covers(first, baseline(1)) and not covers(first, baseline(2))
    assert covers(second, baseline(2)) and not covers(second, baseline(1))
    assert first[0] > 72  # "bravo" ends line 2: its quad starts after "second line"


def test_inexact_quote_highlights_the_line_sharing_most_words(pdf: Path, tmp_path: Path) -> None:
    [highlight] = highlights(page_excerpt(pdf, 2, "the third charlie line", tmp_path / "excerpts"))

    box = rect(highlight)
    assert covers(box, baseline(2))
    assert not any(covers(box, baseline(i)) for i in (0, 1, 3))


def test_quote_not_on_the_page_gives_no_highlight(pdf: Path, tmp_path: Path) -> None:
    excerpt = page_excerpt(pdf, 2, "zebra quantum xylophone", tmp_path / "excerpts")

    assert len(PdfReader(excerpt).pages) == 1
    assert highlights(excerpt) == []


def test_second_call_returns_the_cached_excerpt(pdf: Path, tmp_path: Path) -> None:
    excerpt = page_excerpt(pdf, 2, "second line bravo", tmp_path / "excerpts")
    os.utime(excerpt, ns=(1_000_000_000, 1_000_000_000))  # any rewrite would move this

    assert page_excerpt(pdf, 2, "second line bravo", tmp_path / "excerpts") == excerpt
    assert excerpt.stat().st_mtime_ns == 1_000_000_000


def test_each_page_and_quote_gets_its_own_excerpt(pdf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "excerpts"
    paths = {
        page_excerpt(pdf, 2, "second line bravo", folder),
        page_excerpt(pdf, 2, "third line charlie", folder),
        page_excerpt(pdf, 3, "second line bravo", folder),
    }

    assert len(paths) == 3
    assert all(path.parent == folder for path in paths)


def test_excerpt_is_written_whole_in_a_new_folder(pdf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "excerpts"
    excerpt = page_excerpt(pdf, 2, "second line bravo", folder)

    assert [p.name for p in folder.iterdir()] == [excerpt.name]  # no .part left behind
    assert excerpt.suffix == ".pdf"


def test_real_menu_line_is_highlighted_on_the_page_one_line_tall(tmp_path: Path) -> None:
    # The menu prints "Leﬀe" with a ligature; the stored (NFKC) text, and so a quote, has "ff".
    quote = "Leffe blonde (6.6◦) 3.00e"
    excerpt = page_excerpt(FOSDEM_MENU, 1, quote, tmp_path / "excerpts")

    [highlight] = highlights(excerpt)
    x0, y0, x1, y1 = rect(highlight)
    left, bottom, right, top = (float(v) for v in PdfReader(FOSDEM_MENU).pages[0].mediabox)
    assert left <= x0 < x1 <= right
    assert bottom <= y0 < y1 <= top
    assert 8 < y1 - y0 < 25  # the menu's items are 14.3 pt type on 17.9 pt lines
    assert len(quads(highlight)) == 1


def test_unreadable_pdf_raises_value_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(random.Random(7).randbytes(4096))

    with pytest.raises(ValueError, match=r"junk\.pdf"):
        page_excerpt(junk, 1, "anything", tmp_path / "excerpts")


def test_page_the_pdf_does_not_have_raises_value_error(pdf: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no page 4"):
        page_excerpt(pdf, 4, "second line bravo", tmp_path / "excerpts")
