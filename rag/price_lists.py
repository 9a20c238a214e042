"""Menus and price lists: each priced item of a page becomes one line, its section a heading that its rows are searched and cited under."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from rag.pages import Page, PageText, tidy

# A price ends the line: "3.50e", "€ 3,50", "| 890", "1 260" or "1,260.00" (thousands), "12 kr",
# "$5". Not a size or a strength ("400 ml", "5%"): what follows a priced line is another item.
_AMOUNT = r"(?:\d{1,3}(?:[ \u00a0\u202f,]\d{3})+(?:\.\d{1,2})?|\d+(?:[.,]\d{1,2})?)"
_SYMBOL = r"[€$£₽¥]"
_UNIT = rf"(?:{_SYMBOL}|eur(?:os?)?|e|руб\.?|р\.?|kr\.?|nok|sek|dkk|chf|zł|,-)"
PRICED = re.compile(rf"(?:^|[\s|:·…]){_SYMBOL}?\s?{_AMOUNT}\s?{_UNIT}?\s*$", re.IGNORECASE)
BARE_PRICE = re.compile(rf"\s*{_SYMBOL}?\s?{_AMOUNT}\s?{_UNIT}?\s*", re.IGNORECASE)
LETTER = re.compile(r"[^\W\d_]")

# A page is a price list when at least this many lines, and this share of its lines, end in a
# price: a page of prose with a few figures at line ends stays prose.
MIN_ROWS = 4
MIN_SHARE = 0.3
# A heading is short; a longer line between items is a note ("All prices include taxes").
MAX_HEADING_CHARS = 60
MAX_NAME_LINES = 3  # lines an item's name may wrap over before its price


@dataclass(frozen=True)
class Line:
    """One line of a page, and whether its type stands out (bold, or larger than the items')."""

    text: str
    emphasised: bool | None = None  # None: the file does not say (OCR, plain text)
    last_run: int | None = None  # where its last text run starts, when it has several (PDF)
    style: str | None = None  # the font and size it starts in (PDF): a heading's level

    def price_apart(self) -> str:
        """The line with its price set apart ("Balvenie Doublewood 12 | 900") when the price is
        a run of its own: the figures of a name and a price printed apart are never read as one
        number ("12 900")."""
        if self.last_run is None:
            return self.text
        head, price = self.text[: self.last_run].rstrip(), self.text[self.last_run :].strip()
        if not BARE_PRICE.fullmatch(price) or head.endswith("|") or not head:
            return self.text
        return f"{head} | {price}"


FIGURES = re.compile(r"[\d.,:/%()+\-–]+")  # a token that is only a figure ("2016", "2,839")


def is_priced(text: str) -> bool:
    """Whether a line names something and ends in its price: not an index entry ("Atlas, 24"), a
    contents line ("Overview ..... 6") or a row of figures ("March 2016 58 2,839 5 14")."""
    match = PRICED.search(text)
    if match is None:
        return False
    head = text[: match.start()].rstrip()
    return (
        not head.endswith((",", ".", "…"))
        and len(LETTER.findall(head)) >= 2
        and sum(bool(FIGURES.fullmatch(token)) for token in head.split()) <= 2
    )


def as_price_list(
    page: Page, lines: Sequence[Line] | None = None, sections: Sections | None = None
) -> Page:
    """The page rewritten as rows when it reads as a menu or price list, else unchanged.

    Each priced item becomes one line: its name joined when it wraps ("Quattro formaggi" / "with
    gorgonzola 11.00"), its price when it stands alone. Chunks are then cut only between lines
    (`cut_at_lines`), so no chunk cuts an item from its price. Each section's heading is one line,
    marked: a citation of a row names its section ("page 2, section “Pizzas”"), and search reads a
    chunk that starts inside a section under its heading (`Page.heading_above`). The heading
    is not repeated on every row: repeated, it outweighs the item in the row's embedding
    (bench/retrieval.py: menus+jobs MRR 0.751 once, 0.684 repeated, with bundled:multilingual).
    `lines` carry the type's emphasis where the file says (PDF fonts); without it, headings and
    wrapped names are told apart by their letters. `sections`: how the document's headings
    nest, as the pages before this one showed (`Sections`).
    """
    lines = list(lines) if lines is not None else [Line(text) for text in page.text.splitlines()]
    lines = _join_bare_prices([line for line in lines if line.text.strip()])
    priced = [is_priced(line.text) for line in lines]
    if sum(priced) < MIN_ROWS or sum(priced) < MIN_SHARE * len(lines):
        return page
    emphasis = _emphasis_meaningful(lines, priced)
    where = page.location or (f"page {page.page}" if page.page is not None else None)
    out = PageText()
    sections = sections if sections is not None else Sections()
    sections.open.clear()
    waiting: list[Line] = []  # lines since the last row
    for line, is_row in zip(lines, priced, strict=True):
        if not is_row:
            waiting.append(line)
            continue
        notes, heading, name = _split_waiting(waiting, line.text, emphasis)
        waiting = []
        for note in notes:
            out.line(note.text)
        for printed, section in sections.opened(heading):
            label = f"{where}, section “{section}”" if where else f"section “{section}”"
            out.heading(printed, label, section)
        out.line(
            " ".join(tidy(part.text) for part in [*name, replace(line, text=line.price_apart())])
        )
    for note in waiting:
        out.line(note.text)
    rebuilt = out.page()
    return replace(
        page, text=rebuilt.text, marks=rebuilt.marks, sections=rebuilt.sections, cut_at_lines=True
    )


@dataclass
class Sections:
    """What a document has shown of how its heading types nest (a heading in type B printed
    right below one in type A, no item between, shows that B sections sit inside A ones), and
    the sections open on the page being read. Passed from page to page, so that what page 4
    shows nests page 5's headings; but each page starts with none open: with columns read out
    of order, a section carried over a page break was more often wrong than right (the Bosfor
    menu's rums came under its tequila)."""

    open: list[tuple[str | None, str]] = field(default_factory=list)  # (type, heading), outer first
    inside: set[tuple[str, str]] = field(default_factory=set)  # (outer type, inner type)

    def opened(self, heading: list[Line]) -> list[tuple[str, str]]:
        """The heading lines above a row as (line printed, the path of the section it opens).

        Lines in one type are one heading ("Coffee by" / "Caffe Vergnano"); without types (OCR)
        all of them are. A heading in the type of an open section closes it and those inside it;
        one in a type known to sit inside the innermost open one opens a section inside it
        ("russian vodka 40 ml › Beluga"); any other starts afresh (a wrong nesting would file
        items under a section they are not in)."""
        groups: list[tuple[str | None, list[str]]] = []
        for line in heading:
            if groups and (line.style is None or groups[-1][0] == line.style):
                groups[-1][1].append(tidy(line.text))
            else:
                groups.append((line.style, [tidy(line.text)]))
        for (outer, _), (inner, _) in itertools.pairwise(groups):
            if outer and inner:
                self.inside.add((outer, inner))
        opened = []
        for style, texts in groups:
            styles = [s for s, _ in self.open]
            if style is not None and style in styles:
                del self.open[styles.index(style) :]
            elif not (style and self.open and (self.open[-1][0], style) in self.inside):
                self.open.clear()
            text = " / ".join(texts)
            self.open.append((style, text))
            opened.append((text, " › ".join(t for _, t in self.open)))
        return opened


def _join_bare_prices(lines: list[Line]) -> list[Line]:
    """A price alone on its line belongs to the line before it ("Zacapa XO" / "1 250")."""
    joined: list[Line] = []
    for line in lines:
        if joined and BARE_PRICE.fullmatch(line.text) and not is_priced(joined[-1].text):
            joined[-1] = replace(joined[-1], text=f"{joined[-1].text.rstrip()} {line.text.strip()}")
        else:
            joined.append(line)
    return joined


def _emphasis_meaningful(lines: list[Line], priced: list[bool]) -> bool:
    """Emphasis tells headings from items only where the file says it and items are plain."""
    rows = [line for line, is_row in zip(lines, priced, strict=True) if is_row]
    if any(line.emphasised is None for line in lines):
        return False
    return sum(bool(line.emphasised) for line in rows) < len(rows) / 2


def _split_waiting(
    waiting: list[Line], row: str, emphasis: bool
) -> tuple[list[Line], list[Line], list[Line]]:
    """The lines between two rows as (notes, heading, the next item's wrapped name)."""
    rest = list(waiting)
    name: list[Line] = []
    if emphasis:
        while (
            rest
            and len(name) < MAX_NAME_LINES
            and (not rest[-1].emphasised or _runs_on(rest[-1]))
            and _short(rest[-1])
        ):
            name.insert(0, rest.pop())
        heading: list[Line] = []
        while rest and rest[-1].emphasised and _short(rest[-1]) and not _runs_on(rest[-1]):
            heading.insert(0, rest.pop())
        return rest, heading, name
    # Without emphasis: a row that starts in lower case (or with a figure) goes on from the line
    # before it ("Ризотто" / "с морепродуктами 230г | 580"); a short line before a row that
    # starts a new name is a heading.
    following = row
    while rest and len(name) < MAX_NAME_LINES - 1 and _continues(following) and _short(rest[-1]):
        name.insert(0, rest.pop())
        following = name[0].text
    heading = []
    while (
        rest
        and len(heading) < 2
        and _short(rest[-1])
        and not _runs_on(rest[-1])
        and not rest[-1].text.rstrip().endswith(".")
    ):
        heading.insert(0, rest.pop())
    return rest, heading, name


def _short(line: Line) -> bool:
    return len(line.text.strip()) <= MAX_HEADING_CHARS


def _runs_on(line: Line) -> bool:
    """A line cut in the middle of a phrase ("Салат с крабом," / "shpi-"): never a heading."""
    return line.text.rstrip().endswith((",", "-", "–", "&", "+"))


def _continues(text: str) -> bool:
    """A line that goes on from the one before: it starts in lower case or with a figure."""
    first = text.lstrip()[:1]
    return bool(first) and (first.islower() or first.isdigit())
