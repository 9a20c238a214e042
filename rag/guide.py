"""The menu guide: an open wish ("I feel like something light", "what do you recommend?") met with the items that fit it, or a question back about budget, diet and strength."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import zip_longest

from rag.record_answers import (
    DIETARY,
    OPERATOR_WORDS,
    Listed,
    RecordQuery,
    answer,
    conditions,
    parse,
    record_stems,
)
from rag.records import Record
from rag.text import content_stems, stems_of

# How an open wish is said: it asks for a pick, not about a named item.
OPEN = re.compile(
    r"\b(i feel like|i'?m in the mood|in the mood for|(can you |what do you |what would you )"
    r"?(recommend|suggest)|surprise me|what should i (have|get|order|eat|drink|try)|i'?d like|"
    r"i want|i fancy|i'?m craving|craving|i'?m (hungry|thirsty)|something|anything)\b|"
    r"посоветуй|порекомендуй|хочу|что-нибудь|что-то",
    re.I,
)
# "I want to know the price of a Duvel" asks about an item: the grounded answer's.
ASKS_ABOUT = re.compile(
    r"\b(want|like|wish|need) to (know|see|ask|find|check|learn|understand)\b", re.I
)
# Wishes a field of the records can meet, and how that wish is read (said in the answer).
READINGS = (
    (
        re.compile(
            r"\b(light|mild|low[- ]alcohol|not too strong|easy[- ]drinking)\b|лёгк|легк", re.I
        ),
        ("strength", True),
        "low in alcohol, the weakest first",
    ),
    (
        re.compile(r"\b(strong|boozy|high[- ]alcohol)\b|крепк", re.I),
        ("strength", False),
        "high in alcohol, the strongest first",
    ),
    (
        re.compile(r"\b(cheap|inexpensive|budget|affordable)\b|недорог|деш[её]в", re.I),
        ("price", True),
        "inexpensive, the cheapest first",
    ),
)
# Words of a wish that ask for a pick, never a taste the menu must print.
WISH_WORDS = """
feel like mood recommend suggest surprise should would want fancy crave craving hungry thirsty
try something anything please eat drink tonight today now bit little really very good nice
maybe perhaps give show tell pick choose get order find
light mild low alcohol easy drinking strong boozy high cheap inexpensive budget affordable
"""
PICKS = 8  # items a wish is answered with
SECTIONS_SHOWN = 12  # sections named when asking back


@dataclass(frozen=True)
class Wish:
    """What an open wish asks: the list question in it (a budget, a diet, an order its reading
    gives), how it was read, and taste words (by stem, as written) the items must print."""

    query: RecordQuery
    reading: str | None
    tastes: dict[str, str]

    @property
    def bounded(self) -> bool:
        """Whether it says what the items must meet (a budget, a diet) or how to order them."""
        query = self.query
        return any(v is not None for v in (query.order, query.below, query.above, query.dietary))


@dataclass
class Picks:
    """The items that meet a wish, and the wish's taste words that no item prints."""

    wish: Wish
    rows: list[Record]
    unprinted: list[str]
    matched: int = 0  # items that meet it in all; `rows` shows the first PICKS


def wish_of(question: str) -> Wish | None:
    """The open wish a question makes, or None when it asks about something named or asks a
    list question of its own ("I want the three cheapest beers": rag.record_answers')."""
    if not OPEN.search(question) or ASKS_ABOUT.search(question):
        return None
    query = parse(question) or RecordQuery()
    if query.limit is not None or query.count or query.compare:
        return None
    found = next(((order, said) for p, order, said in READINGS if p.search(question)), None)
    dietary = query.dietary or next((tag for p, tag in DIETARY if p.search(question)), None)
    order = query.order or (found[0] if found else None)
    reading = found[1] if found and query.order is None else None
    ignored = stems_of(WISH_WORDS) | content_stems(OPERATOR_WORDS)
    tastes = {}
    for word in re.findall(r"[^\W\d_]+", question):
        stem = next(iter(content_stems(word)), None)
        if stem and stem not in ignored:
            tastes.setdefault(stem, word)
    query = replace(query, order=order, dietary=dietary, terms=frozenset(), kind=None)
    return Wish(query, reading, tastes)


def pick(wish: Wish, records: Sequence[Record]) -> Picks:
    """The items that meet the wish: its budget, diet and order (rag.record_answers), and one of
    its taste words printed on their line (all when it has none); none when the wish says
    neither what to meet nor a taste."""
    met = answer(wish.query, records)
    items = met.rows if met else []
    printed = [record_stems(r) | content_stems(r.text) for r in items]  # once an item
    tasted = {
        stem: [r for r, words in zip(items, printed, strict=True) if stem in words]
        for stem in wish.tastes
    }
    unprinted = [wish.tastes[stem] for stem, found in tasted.items() if not found]
    if wish.tastes and len(unprinted) < len(wish.tastes):
        chosen = {id(r) for found in tasted.values() for r in found}
        rows = [r for r in items if id(r) in chosen]  # in the wish's order
    elif wish.bounded:
        rows = items
    else:
        rows = []
    return Picks(wish, rows[:PICKS], unprinted, len(rows))


def describe(picks: Picks) -> str:
    """The answer's first line: what the picks meet, and how the wish was read."""
    wish, parts = picks.wish, []
    printed = [word for word in wish.tastes.values() if word not in picks.unprinted]
    if printed:
        parts.append("their menu line says " + " or ".join(f"“{w}”" for w in printed))
    if wish.reading:
        parts.append(f"read as {wish.reading}")
        met = conditions(replace(wish.query, order=None))
    else:
        met = conditions(wish.query)
    if met:
        parts.append(met)
    n = len(picks.rows)
    text = f"{n} item{'s' if n != 1 else ''} from the menus"
    if picks.matched > n:
        text = f"The first {n} of {picks.matched} items from the menus"
    text += f" ({'; '.join(parts)}):" if parts else ":"
    return f"{_unprinted(picks.unprinted)} {text}" if picks.unprinted else text


def _unprinted(words: list[str]) -> str:
    return "The menus do not say " + " or ".join(f"“{w}”" for w in words) + "."


def listed(picks: Picks) -> Listed:
    """The picks as a list answer's rows (rag.record_answers.table shows them)."""
    return Listed(picks.wish.query, picks.rows, len(picks.rows))


def asked_back(picks: Picks, records: Sequence[Record]) -> tuple[str, list[Record]]:
    """The question back when a wish says nothing the menus can meet, naming the menus'
    sections (each cited by its first item)."""
    by_file: dict[str, dict[str, Record]] = {}
    for record in records:
        section = record.fields.get("section")
        if record.fields.get("kind", "item") == "item" and section:
            by_file.setdefault(record.file, {}).setdefault(section, record)
    # A few sections of every menu, in turn: not all of the first menu's.
    turns = zip_longest(*(list(sections.items()) for sections in by_file.values()))
    shown = [entry for turn in turns for entry in turn if entry][:SECTIONS_SHOWN]
    lines = [
        (f"{_unprinted(picks.unprinted)} " if picks.unprinted else "")
        + "Tell me a little more and I will pick from the menus:",
        "- a budget, such as “under 10 euros”;",
        "- a diet: vegetarian, vegan or gluten-free (as the menus mark them);",
        "- for a drink, how strong: “light”, “strong” or “under 5%”;",
    ]
    if shown:
        named = ", ".join(f"{section} [{n}]" for n, (section, _) in enumerate(shown, 1))
        lines.append(f"- or a part of the menu: {named}.")
    return "\n".join(lines), [record for _, record in shown]
