"""HTML -> the visible text as one page: a line per block, headings as sections, tables as rows that keep their header."""

from __future__ import annotations

from html.parser import HTMLParser

from rag.pages import Page, PageText
from rag.tables import Table


class _HtmlReader(HTMLParser):
    """The visible text of HTML: a line per block, headings marked, tables as rows with headers."""

    BLOCKS = frozenset(
        {"p", "div", "br", "li", "ul", "ol", "table", "section", "article", "hr", "blockquote"}
        | {"pre", "dl", "dt", "dd", "figure", "figcaption", "header", "footer", "main", "nav"}
    )
    HEADINGS = frozenset(f"h{level}" for level in range(1, 7))
    HIDDEN = frozenset({"script", "style", "head", "title", "noscript", "template", "svg"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = PageText()
        self.buffer: list[str] = []
        self.hidden_depth = 0
        self.tables: list[Table] = []  # open tables, innermost last
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.rows = 0
        self.header_cells = True  # the row so far has only <th> cells
        self.nested = 0  # tables inside a cell: read as the cell's text
        self.has_table = False

    def flush(self) -> None:
        if self.buffer:
            self.out.line(" ".join("".join(self.buffer).split()))
            self.buffer = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self.hidden_depth += 1
        elif self.cell is not None:  # inside a cell everything is one line
            self.nested += tag == "table"
            self.cell.append(" ")
        elif tag == "table":
            self.flush()
            self.tables.append(Table())
        elif tag == "tr" and self.tables:
            self.row = []
            self.header_cells = True
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
            self.header_cells = self.header_cells and tag == "th"
        elif tag in self.HEADINGS:
            self.flush()
            self.out.paragraph()
        elif tag == "li":
            self.flush()
            self.buffer.append("- ")
        elif tag in self.BLOCKS:
            self.flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self.hidden_depth = max(0, self.hidden_depth - 1)
        elif self.nested:
            self.nested -= tag == "table"
            if self.cell is not None:
                self.cell.append(" ")
        elif tag in ("td", "th") and self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None and self.tables:
            self.rows += 1
            self.tables[-1].add(self.rows, self.row, header=self.header_cells or None)
            self.row = None
        elif tag == "table" and self.tables:
            table = self.tables.pop()
            self.out.rows(table.lines)
            self.has_table = self.has_table or bool(table.lines)
        elif tag in self.HEADINGS:
            heading = " ".join("".join(self.buffer).split())
            self.buffer = []
            self.out.heading(heading, f"section “{heading}”")
        elif tag in self.BLOCKS and self.cell is None:
            self.flush()

    def handle_data(self, data: str) -> None:
        if self.hidden_depth:
            return
        (self.cell if self.cell is not None else self.buffer).append(data)

    def page(self) -> Page:
        self.close()
        self.flush()
        return self.out.page(cut_at_lines=self.has_table)


def read_html(markup: str) -> Page:
    """The visible text of HTML as one page: sections marked by their headings, tables as rows."""
    reader = _HtmlReader()
    reader.feed(markup)
    return reader.page()


def html_to_text(markup: str) -> str:
    """Visible text of HTML (or Markdown with raw HTML in it)."""
    return read_html(markup).text
