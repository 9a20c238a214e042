"""One-page PDF excerpts of a cited page, with the quoted span highlighted."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import re
import tempfile
import unicodedata
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pypdf import PageObject, PdfReader, PdfWriter
from pypdf.annotations import Highlight
from pypdf.generic import ArrayObject, FloatObject

# Part of the cache key: bump it when excerpts change, so stale cached ones are not served.
FORMAT = "1"
# A highlight box around a baseline, in font sizes: a descender below, an ascender above.
DESCENT, ASCENT = 0.25, 0.9
# Average glyph width in ems when the font says nothing usable.
DEFAULT_EM = 0.5

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in page space


@dataclass
class _Run:
    """One piece of text drawn on one line at one position (page space, baseline at y)."""

    text: str
    x: float
    y: float
    height: float
    width: float
    line: int


def page_excerpt(
    pdf: Path, page: int, quote: str, folder: Path, written: Callable[[Path], None] | None = None
) -> Path:
    """A one-page PDF of `page` (1-based) of `pdf` with `quote` highlighted, cached in `folder`;
    `written(path)` hears of each new one (to keep the folder bounded).

    Raises ValueError if pypdf cannot read the PDF or it has no such page.
    """
    key = hashlib.sha256(f"{FORMAT}\0{_digest(pdf)}\0{page}\0{quote}".encode()).hexdigest()
    target = folder / f"{key[:40]}.pdf"
    if target.exists():
        return target

    writer = _excerpt(pdf, page, quote)
    folder.mkdir(parents=True, exist_ok=True)
    # A unique .part beside the target, then an atomic rename: readers never see half a file,
    # and two processes making the same excerpt at once both end with a whole one.
    fd, part = tempfile.mkstemp(dir=folder, prefix=target.stem, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            writer.write(handle)
        os.replace(part, target)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    if written is not None:
        written(target)
    return target


def _digest(pdf: Path) -> str:
    try:
        stat = pdf.stat()
        return _file_digest(str(pdf.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError as error:
        raise ValueError(f"cannot read {pdf.name}: {error.strerror or error}") from None


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    # Keyed on size and mtime too, so a cached excerpt of a 100 MB PDF costs a stat, not a hash.
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _excerpt(pdf: Path, page: int, quote: str) -> PdfWriter:
    try:
        reader = PdfReader(pdf, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise ValueError(f"cannot read {pdf.name}: it needs a password")
        count = len(reader.pages)
        if not 1 <= page <= count:
            raise ValueError(f"{pdf.name} has no page {page} (it has {count})")
        source = reader.pages[page - 1]
        writer = PdfWriter()
        writer.add_page(source)  # only this page (and what it uses) is copied
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001 - damaged PDFs make pypdf raise anything at all
        reason = str(error).strip()[:120] or type(error).__name__
        raise ValueError(f"cannot read {pdf.name}: {reason}") from None

    boxes = _highlight_boxes(source, quote)
    if boxes:
        # One annotation, one quad per line (upper-left, upper-right, lower-left, lower-right).
        quads = [v for x0, y0, x1, y1 in boxes for v in (x0, y1, x1, y1, x0, y0, x1, y0)]
        highlight = Highlight(
            rect=_union(boxes),
            quad_points=ArrayObject(FloatObject(round(v, 2)) for v in quads),
            highlight_color="ffff00",
            printing=True,
        )
        writer.add_annotation(page_number=0, annotation=highlight)
    writer.open_destination = writer.pages[0]  # open at the cited page, fitted to the window
    return writer


def _highlight_boxes(page: PageObject, quote: str) -> list[Box]:
    """One (x0, y0, x1, y1) box per line of the page the quote covers; [] if it is not found."""
    try:
        runs = _runs(page)
    except Exception:  # noqa: BLE001 - a page pypdf cannot extract still makes an excerpt
        return []
    spans = _exact_spans(runs, quote) or _best_lines(runs, quote)

    # Join a line's pieces into one box, clipped to the page so no highlight lies off it.
    lines: dict[int, list[Box]] = defaultdict(list)
    for index, (start, end) in spans.items():
        run = runs[index]
        length = max(len(run.text), 1)
        x0 = run.x + run.width * start / length
        x1 = run.x + run.width * end / length
        lines[run.line].append((x0, run.y - DESCENT * run.height, x1, run.y + ASCENT * run.height))
    page_box = page.cropbox
    boxes = []
    for _, pieces in sorted(lines.items()):
        x0, y0, x1, y1 = _union(pieces)
        x0, x1 = max(x0, float(page_box.left)), min(x1, float(page_box.right))
        y0, y1 = max(y0, float(page_box.bottom)), min(y1, float(page_box.top))
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1, y1))
    return boxes


def _union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _runs(page: PageObject) -> list[_Run]:
    """The page's text pieces, with positions, in the order pypdf extracts them."""
    runs: list[_Run] = []
    line = 0

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
        nonlocal line
        m = _multiply(tm, cm)  # text space -> page space
        height = abs(size) * math.hypot(m[2], m[3])
        em = abs(size) * math.hypot(m[0], m[1]) * _em_width(font)
        # pypdf marks line breaks with "\n"; text after one inside a run has no position of its
        # own, so it keeps the run's (rare, and still on the right part of the page).
        for number, piece in enumerate(text.split("\n")):
            if number:
                line += 1
            if piece.strip():
                runs.append(_Run(piece, m[4], m[5], height, len(piece) * em, line))

    page.extract_text(visitor_text=visit)
    # Widths are estimates; where the next piece on the line starts close by, it ends there.
    for run, after in itertools.pairwise(runs):
        gap = after.x - run.x
        if after.line == run.line and 0 < gap < 1.5 * run.width:
            run.width = gap
    return runs


def _multiply(a: list[float], b: list[float]) -> list[float]:
    """The product of two PDF matrices [a b c d e f]."""
    return [
        a[0] * b[0] + a[1] * b[2],
        a[0] * b[1] + a[1] * b[3],
        a[2] * b[0] + a[3] * b[2],
        a[2] * b[1] + a[3] * b[3],
        a[4] * b[0] + a[5] * b[2] + b[4],
        a[4] * b[1] + a[5] * b[3] + b[5],
    ]


def _em_width(font: Any) -> float:
    """A font's average glyph width in ems, from its /Widths (or a composite font's /W)."""
    try:
        if "/Widths" in font:
            values = list(font["/Widths"])
        else:  # composite font: only the [first [w1 w2 ...]] form of /W, enough for an average
            descendant = font["/DescendantFonts"][0].get_object()
            values = [w for item in descendant["/W"] if isinstance(item, list) for w in item]
        widths = [float(w) for w in values if float(w) > 0]
        return min(max(sum(widths) / len(widths) / 1000, 0.2), 1.2)
    except Exception:  # noqa: BLE001 - no font, odd font: fall back to a typical width
        return DEFAULT_EM


def _fold(text: str, keep_spaces: bool = False) -> str:
    """Text as matched: compatibility forms undone as the stored text's NFKC did ("ﬀ" -> "ff",
    no-break space -> space), without accents, case or (a quote's line breaks need not be the
    page's) any white space."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return text if keep_spaces else "".join(text.split())


def _exact_spans(runs: list[_Run], quote: str) -> dict[int, tuple[int, int]]:
    """{run index: (first, end) character offsets} of the quote's first exact occurrence."""
    needle = _fold(quote)
    # Fold character by character, so each folded character knows where it came from.
    folded: list[str] = []
    origin: list[tuple[int, int]] = []
    for index, run in enumerate(runs):
        for offset, char in enumerate(run.text):
            for out in _fold(char):
                folded.append(out)
                origin.append((index, offset))
    start = "".join(folded).find(needle) if needle else -1
    if start < 0:
        return {}
    spans: dict[int, tuple[int, int]] = {}
    for index, offset in origin[start : start + len(needle)]:
        first, end = spans.get(index, (offset, offset + 1))
        spans[index] = (min(first, offset), max(end, offset + 1))
    return spans


def _best_lines(runs: list[_Run], quote: str) -> dict[int, tuple[int, int]]:
    """Whole runs of the line(s) sharing the most words with the quote; {} if none share any."""

    def words(text: str) -> set[str]:
        return set(re.findall(r"\w{2,}", _fold(text, keep_spaces=True)))

    wanted = words(quote)
    lines: dict[int, list[int]] = defaultdict(list)
    for index, run in enumerate(runs):
        lines[run.line].append(index)
    scores = {
        line: len(wanted & words("".join(runs[i].text for i in idx))) for line, idx in lines.items()
    }
    best = max(scores.values(), default=0)
    if best == 0:
        return {}
    return {
        i: (0, len(runs[i].text))
        for line, idx in lines.items()
        if scores[line] == best
        for i in idx
    }
