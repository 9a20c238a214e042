"""OCR of scanned PDF pages: whether tesseract can run and in which languages, rendering a page, reading its words.

Runs where the loaders run, inside the parse worker (rag.parsing), so its time and memory count
against the file's limits. Heavy imports (pypdfium2, pytesseract) happen on the first scanned page.
The worker starts with OMP_THREAD_LIMIT=1: tesseract's OpenMP threads make it 5-7x slower on two
cores (14.7 s instead of 2.1 s for a dense menu page), and the parent process, whose model runtime
also uses OpenMP, must not get that limit.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

DPI = 300
# Pixels of one rendered page at most (one byte each, grey): a letter page at 300 DPI is 8.4
# million; a poster-sized page is rendered at a lower resolution instead of taking gigabytes.
MAX_PIXELS = 40_000_000
# Words tesseract is less sure of than this (0-100) are dropped: what it "reads" in photos and
# noise; on a poor but real scan genuine words score 30 and up.
MIN_WORD_CONFIDENCE = 20
DEFAULT_LANGUAGES = "eng+rus+nor"
# A tesseract language: eng, chi_sim, script/Latin.
LANGUAGE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:/[A-Za-z][A-Za-z0-9_]*)?")
INSTALL_HINT = "install tesseract-ocr (apt install tesseract-ocr tesseract-ocr-eng) to read scans"
OFF_HINT = "OCR is off (RAG_OCR=off); set RAG_OCR=on to read scans"


def parse_languages(value: str) -> tuple[str, ...]:
    """'eng+rus' -> ('eng', 'rus'); ValueError unless it is tesseract languages joined by '+'."""
    names = tuple(part.strip() for part in value.split("+"))
    bad = [name for name in names if not LANGUAGE.fullmatch(name)]
    if not value.strip() or bad:
        raise ValueError(
            f"expected tesseract languages joined by '+' (e.g. {DEFAULT_LANGUAGES}), got {value!r}"
        )
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Ocr:
    """How scans are read here: tesseract's `languages` ('eng+rus'), or None and why not (`off`,
    a hint for the user that ends up in the refusal of a scanned PDF)."""

    languages: str | None
    off: str = ""


def setup(enabled: bool = True, languages: str = DEFAULT_LANGUAGES) -> Ocr:
    """OCR as the settings ask (RAG_OCR, RAG_OCR_LANGUAGES), if tesseract is on PATH: the wanted
    languages that are installed (the others skipped with one warning in the log)."""
    return _setup(enabled, languages, shutil.which("tesseract"))


@lru_cache(maxsize=8)
def _setup(enabled: bool, languages: str, tesseract: str | None) -> Ocr:
    if not enabled:
        return Ocr(None, OFF_HINT)
    if tesseract is None:
        return Ocr(None, INSTALL_HINT)
    wanted = parse_languages(languages)
    try:
        import pytesseract

        installed = set(pytesseract.get_languages())
    except Exception as error:  # noqa: BLE001 - a broken tesseract is reported like a missing one
        log.warning("OCR is unavailable: %s --list-langs failed (%s)", tesseract, error)
        return Ocr(None, INSTALL_HINT)
    usable = [name for name in wanted if name in installed]
    missing = [name for name in wanted if name not in installed]
    if missing:
        log.warning(
            "OCR: language(s) %s not installed, skipped (RAG_OCR_LANGUAGES=%s; installed: %s); "
            "to add one: apt install %s",
            "+".join(missing),
            languages,
            "+".join(sorted(installed - {"osd"})) or "none",
            " ".join(package(name) for name in missing),
        )
    if not usable:
        return Ocr(
            None,
            f"none of the OCR languages {languages} (RAG_OCR_LANGUAGES) is installed; "
            f"apt install {' '.join(package(name) for name in wanted)} to read scans",
        )
    return Ocr("+".join(usable))


def package(language: str) -> str:
    """The Debian package of a tesseract language: chi_sim -> tesseract-ocr-chi-sim."""
    return "tesseract-ocr-" + language.lower().replace("_", "-").replace("/", "-")


def read_pages(data: bytes, indices: list[int], languages: str) -> Iterator[tuple[int, str | None]]:
    """(index, text) for each 0-based page index of the PDF `data`, read by OCR; text None for a
    page that could not be rendered or read. One page's bitmap in memory at a time."""
    import pypdfium2 as pdfium

    try:
        document = pdfium.PdfDocument(data)
    except MemoryError:
        raise
    except Exception:
        log.debug("OCR: PDFium cannot open the file", exc_info=True)
        yield from ((index, None) for index in indices)
        return
    try:
        for index in indices:
            try:
                yield index, read_page(document, index, languages)
            except MemoryError:
                raise
            except Exception:
                log.debug("OCR: page %d failed", index + 1, exc_info=True)
                yield index, None
    finally:
        document.close()


def read_page(document: object, index: int, languages: str) -> str:
    """Render page `index` of a pypdfium2 PdfDocument at DPI (grey) and read it with tesseract."""
    page = document[index]  # type: ignore[index]
    try:
        width, height = page.get_size()  # in points, 1/72 inch
        scale = min(DPI / 72, math.sqrt(MAX_PIXELS / max(1.0, width * height)))
        bitmap = page.render(scale=scale, grayscale=True)
        try:
            image = bitmap.to_pil()
            try:
                return read_image(image, languages)
            finally:
                image.close()
        finally:
            bitmap.close()
    finally:
        page.close()


def read_image(image: object, languages: str) -> str:
    """The words tesseract reads in a PIL image, one text line per line, a blank line between
    paragraphs; words it is unsure of (MIN_WORD_CONFIDENCE) left out."""
    import pytesseract

    found = pytesseract.image_to_data(image, lang=languages, output_type=pytesseract.Output.DICT)
    lines: dict[tuple[int, int, int], list[str]] = {}  # (block, paragraph, line): words, in order
    for word, confidence, block, paragraph, line in zip(
        found["text"],
        found["conf"],
        found["block_num"],
        found["par_num"],
        found["line_num"],
        strict=True,
    ):
        if word.strip() and float(confidence) >= MIN_WORD_CONFIDENCE:
            lines.setdefault((block, paragraph, line), []).append(word.strip())
    out: list[str] = []
    previous: tuple[int, int] | None = None
    for (block, paragraph, _), words in lines.items():
        if previous is not None and (block, paragraph) != previous:
            out.append("")
        out.append(" ".join(words))
        previous = (block, paragraph)
    return "\n".join(out)
