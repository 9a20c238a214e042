"""Table rows as self-describing lines ("Product: Duvel | Strength: 8.5 | Price: 3.50"), whatever file the table came from."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Between the cells of a row line: never inside a cell (cells have their own " | " replaced).
CELL_SEPARATOR = " | "
# A header cell is a label, not a figure: "Price" is a header, "3.50" or "2024-01-01" is not.
FIGURE = re.compile(r"[\d\s.,:/%€$£+\-()]+")


def cell_text(value: Any) -> str:
    """One cell as text on one line: numbers without a float's noise, dates as ISO dates."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.10g}"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return " ".join(str(value).replace(CELL_SEPARATOR.strip(), "/").split())


def is_header(cells: Sequence[str]) -> bool:
    """A first row reads as a header when it has two or more cells and each is a label."""
    filled = [cell for cell in cells if cell]
    return len(filled) >= 2 and all(not FIGURE.fullmatch(cell) for cell in filled)


@dataclass
class Table:
    """Rows of one table, written as lines that keep their header.

    Each row becomes one line. With a header, a cell is written under its column's name ("Price:
    3.50"), so a row read alone (a chunk, a quote) still says what each value is. Empty cells are
    left out; a row with nothing in it gives no line.
    """

    header: list[str] | None = None
    lines: list[tuple[int, str]] = field(default_factory=list)  # (row number, line)

    def add(self, number: int, values: Iterable[Any], header: bool | None = None) -> None:
        """Add row `number`; a first row is the header when `header` says so, or (None) when it
        reads as one."""
        cells = [cell_text(value) for value in values]
        if not any(cells):
            return
        first = self.header is None and not self.lines
        if first and (is_header(cells) if header is None else header):
            self.header = cells
            return
        self.lines.append((number, row_line(cells, self.header)))


def head_before_rows(text: str) -> str:
    """The part of `text` before its first table row: a table's rows are not its title."""
    start = 0
    for line in text.splitlines(keepends=True):
        if CELL_SEPARATOR in line:
            return text[:start]
        start += len(line)
    return text


def row_line(cells: Sequence[str], header: Sequence[str] | None) -> str:
    """'Product: Duvel | Price: 3.50' with a header, 'Duvel | 3.50' without."""
    parts = []
    for index, cell in enumerate(cells):
        if not cell:
            continue
        name = header[index] if header and index < len(header) else ""
        parts.append(f"{name}: {cell}" if name and name != cell else cell)
    return CELL_SEPARATOR.join(parts)
