"""What a loader returns: pages of clean text that say where they are, and how to build them with exact offsets."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


def last_mark(marks: Sequence[Sequence[Any]], offset: int) -> str | None:
    """The label of the last (start, label) mark at or before `offset`, if any."""
    before = [label for start, label in marks if start <= offset]
    return str(before[-1]) if before else None


@dataclass(frozen=True)
class Page:
    """One unit of text from a file: a PDF page or a slide (1-based `page`), a sheet, a section of
    a document, or a whole text file (`page` None).

    `location` is what a citation says instead of "page N" ("slide 3", "page 2 (OCR)", "sheet
    Prices"). `marks` name places inside the text: (offset into `text`, label), ascending, e.g. a
    row ("sheet Prices, row 7") or a heading ("section Benefits"); a span is cited by the last mark
    at or before its start.
    """

    text: str
    page: int | None = None
    page_label: str | None = None
    location: str | None = None
    marks: tuple[tuple[int, str], ...] = ()
    # Its lines are units (table rows): a chunk ends only at a line end, never inside a row.
    cut_at_lines: bool = False
    # Where each section starts (at its heading line), and the heading, ascending.
    sections: tuple[tuple[int, str], ...] = ()

    def lines(self) -> Iterator[tuple[int, str]]:
        """Each line of the text with the offset it starts at."""
        offset = 0
        for line in self.text.split("\n"):
            yield offset, line
            offset += len(line) + 1

    def location_at(self, offset: int) -> str | None:
        """What a citation of text at `offset` says: the last mark at or before it, else the
        page's location."""
        return last_mark(self.marks, offset) or self.location

    def heading_above(self, start: int) -> str | None:
        """The heading of the section `start` is in, when the heading is above it: what a chunk
        that begins inside a section is searched under (the chunk holds no heading of its own)."""
        before = [heading for offset, heading in self.sections if offset < start]
        inside = [offset for offset, _ in self.sections if offset == start]
        return before[-1] if before and not inside else None


class PageText:
    """Builds a page's text line by line, naming places in it (marks) at exact offsets.

    Each line is tidied on its own, so offsets stay true: `tidy` on the whole text would move them.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.marks: list[tuple[int, str]] = []
        self.sections: list[tuple[int, str]] = []
        self.gap = ""  # what goes before the next line: nothing, a line break or a blank line

    def mark(self, label: str) -> None:
        """Name the place where the next line starts."""
        offset = self.length + len(self.gap)
        if self.marks and self.marks[-1][0] == offset:
            self.marks[-1] = (offset, label)  # nothing written under the previous mark
        else:
            self.marks.append((offset, label))

    def heading(self, text: str, label: str, section: str | None = None) -> None:
        """A section's heading line: marked with `label` (what a citation says) and remembered as
        the heading the section's later chunks are searched under: `section`, when it says more
        than the line (a nested heading's path, "russian vodka › Beluga")."""
        heading = " ".join(text.split())
        if heading:
            self.mark(label)
            self.sections.append((self.length + len(self.gap), tidy(section or heading)))
            self.line(heading)

    def line(self, text: str) -> None:
        for piece in text.splitlines():
            piece = tidy(piece)
            if piece:
                self.parts += [self.gap, piece]
                self.length += len(self.gap) + len(piece)
                self.gap = "\n"

    def paragraph(self) -> None:
        """A blank line before the next line (between paragraphs, around a table)."""
        if self.parts:
            self.gap = "\n\n"

    def rows(
        self, rows: Iterable[tuple[int, str]], label: Callable[[int], str] | None = None
    ) -> None:
        """A table's (row number, line) rows, a blank line around them; `label(number)` marks
        each row ("row 7") when rows are what a citation names."""
        self.paragraph()
        for number, line in rows:
            if label is not None:
                self.mark(label(number))
            self.line(line)
        self.paragraph()

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def page(self, **fields: Any) -> Page:
        text = self.text
        marks = tuple((offset, label) for offset, label in self.marks if offset < len(text))
        sections = tuple(section for section in self.sections if section[0] < len(text))
        return Page(text=text, marks=marks, sections=sections, **fields)


@dataclass
class LoadedFile:
    """What a loader read from one file, plus what went wrong on parts of it."""

    pages: list[Page]
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def tidy(text: str) -> str:
    """Normalise compatibility characters (ligatures such as "ﬀ") and white space."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\xa0", " ").replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()
