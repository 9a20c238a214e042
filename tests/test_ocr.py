"""OCR of scanned PDF pages with the real tesseract: scans are read and cited as OCR, pages with
text are left alone, and without OCR (off, or tesseract missing) a scan is refused with the hint.

The scans are made here: a text PDF (testkit.pdf) or a corpus page rendered with PDFium and saved
by Pillow as an image-only PDF, cropped to the text so that OCR at the product's 300 DPI is quick.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

from rag import ocr
from rag.config import load_settings
from rag.errors import FileRefused
from rag.index import Index
from rag.loaders import load_bytes
from rag.parsing import ParseWorker
from testkit.pdf import pdf_bytes

SENTENCE = [
    "The lighthouse keeper Oswin Tarrant feeds",
    "seventeen gulls every Tuesday near Brightwater.",
]
WORDS = re.findall(r"\w+", " ".join(SENTENCE))
RUSSIAN = ["Тар-тар", "тунца", "говядины", "крабом", "томатами", "авокадо"]
DPI = 300


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the parse worker gives tesseract (rag.parsing), for the in-process calls here."""
    monkeypatch.setenv("OMP_THREAD_LIMIT", "1")


def rendered(pdf: bytes, index: int, crop: tuple[float, float, float, float]) -> Image.Image:
    """Page `index` of `pdf` at DPI, grey, less `crop` (left, bottom, right, top margins in pt)."""
    document = pdfium.PdfDocument(pdf)
    try:
        return document[index].render(scale=DPI / 72, grayscale=True, crop=crop).to_pil()
    finally:
        document.close()


def image_pdf(image: Image.Image) -> bytes:
    """The image as a one-page PDF with no text layer (page size = the image at DPI)."""
    out = io.BytesIO()
    image.save(out, "PDF", resolution=DPI)
    return out.getvalue()


def scanned(lines: list[str]) -> bytes:
    """`lines` printed by testkit.pdf (Helvetica 11 pt from 72 pt left, 760 pt up) and scanned."""
    bottom = 760 - 14 * len(lines) - 6
    return image_pdf(rendered(pdf_bytes(["\n".join(lines)]), 0, (60, bottom, 200, 792 - 775)))


def joined(*pdfs: bytes) -> bytes:
    writer = PdfWriter()
    for pdf in pdfs:
        writer.append(PdfReader(io.BytesIO(pdf)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def found(words: list[str], text: str) -> list[str]:
    return [word for word in words if word.lower() in text.lower()]


def test_the_scan_has_no_text_layer() -> None:
    assert not (PdfReader(io.BytesIO(scanned(SENTENCE))).pages[0].extract_text() or "").strip()


def test_a_scanned_page_is_read_by_ocr_and_cited_as_ocr() -> None:
    loaded = load_bytes(scanned(SENTENCE), "scan.pdf")
    [page] = loaded.pages
    assert (page.page, page.location) == (1, "page 1 (OCR)")
    assert len(found(WORDS, page.text)) >= len(WORDS) - 1, page.text
    assert not loaded.warnings


def test_a_mixed_pdf_ocrs_only_its_empty_page() -> None:
    text = pdf_bytes(["The opening hours of the museum are nine to five on weekdays."])
    loaded = load_bytes(joined(text, scanned(SENTENCE)), "mixed.pdf")
    first, second = loaded.pages
    assert (first.page, first.location) == (1, None)
    assert first.text.startswith("The opening hours of the museum")
    assert (second.page, second.location) == (2, "page 2 (OCR)")
    assert len(found(WORDS, second.text)) >= len(WORDS) - 1, second.text


def test_a_russian_scan_is_read_with_rus(corpus: Path) -> None:
    menu = (corpus / "menus" / "bosfor-restaurant-menu.pdf").read_bytes()
    # Page 1's starters, 100-330 pt across and 640-740 pt up (its text layer, for comparison:
    # "Тар-тар из тунца 160г | 590", "...тар из говядины", "Брускетта с крабом", ...).
    scan = image_pdf(rendered(menu, 0, (100, 640, 595 - 330, 921 - 740)))
    [page] = load_bytes(scan, "menu-scan.pdf").pages
    assert page.location == "page 1 (OCR)"
    assert len(found(RUSSIAN, page.text)) >= len(RUSSIAN) - 1, page.text
    # English alone reads Cyrillic as Latin look-alikes: the language setting is what reads it.
    [latin] = load_bytes(scan, "menu-scan.pdf", ocr.Ocr("eng")).pages
    assert not found(RUSSIAN, latin.text), latin.text


def test_with_ocr_off_a_scan_is_refused_with_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_OCR", "off")
    settings = load_settings()
    setup = ocr.setup(settings.ocr, settings.ocr_languages)
    with ParseWorker(timeout_s=60, ocr=setup) as worker, pytest.raises(FileRefused) as refused:
        worker.parse(scanned(SENTENCE), "scan.pdf")
    assert str(refused.value) == (
        "scan.pdf: the PDF has no extractable text - probably a scan or images; "
        "OCR is off (RAG_OCR=off); set RAG_OCR=on to read scans"
    )


def test_without_tesseract_a_scan_is_refused_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no tesseract on it
    with pytest.raises(FileRefused, match=r"install tesseract-ocr \(apt install tesseract-ocr"):
        load_bytes(scanned(SENTENCE), "scan.pdf")
    # A mixed PDF keeps its text pages, and says which pages it could not read and why.
    text = pdf_bytes(["The opening hours of the museum are nine to five on weekdays."])
    mixed = load_bytes(joined(text, scanned(SENTENCE)), "m.pdf")
    assert [page.page for page in mixed.pages] == [1]
    [warning] = mixed.warnings
    assert warning.startswith("m.pdf: page(s) 2 of 2 have almost no text and were not read by OCR")
    assert "install tesseract-ocr" in warning


def test_a_picture_without_words_is_refused_as_such(corpus: Path) -> None:
    with pytest.raises(FileRefused, match="OCR found almost no words"):
        load_bytes((corpus / "pdfs" / "bad" / "image-only-photo.pdf").read_bytes(), "photo.pdf")


def test_the_parse_worker_reads_scans_with_the_settings_languages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAG_OCR_LANGUAGES", "eng")
    settings = load_settings()
    with ParseWorker(timeout_s=60, ocr=ocr.setup(settings.ocr, settings.ocr_languages)) as worker:
        [page] = worker.parse(scanned(SENTENCE), "scan.pdf").pages
    assert page.location == "page 1 (OCR)"
    assert len(found(WORDS, page.text)) >= len(WORDS) - 1, page.text


def test_languages_not_installed_are_skipped_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="rag.ocr"):
        assert ocr.setup(True, "eng+xyz+rus") == ocr.Ocr("eng+rus")
        assert ocr.setup(True, "eng+xyz+rus") == ocr.Ocr("eng+rus")
    [warning] = [record.getMessage() for record in caplog.records]
    assert "xyz not installed, skipped" in warning and "tesseract-ocr-xyz" in warning
    assert ocr.setup(True, "xyz").languages is None
    assert "none of the OCR languages xyz" in ocr.setup(True, "xyz").off


def test_an_indexed_scan_is_searchable_and_its_chunks_say_ocr(index: Index, data_dir: Path) -> None:
    (data_dir / "scan.pdf").write_bytes(scanned(SENTENCE))
    report = index.ingest([data_dir])
    assert report.indexed == ["scan.pdf"] and report.ok, report.failed
    got = index.collection().collection.get(include=["metadatas"])
    assert {meta.get("location") for meta in got["metadatas"]} == {"page 1 (OCR)"}
    assert index.search("who feeds the gulls on Tuesday?", 1)[0].file == "scan.pdf"
