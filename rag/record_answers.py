"""Questions a list of records answers ("the three cheapest", "beers under 3 euros", "the strongest", "how many"), answered from the records alone, each row cited."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rag.loaders import document_title
from rag.records import Record, amount, price_text
from rag.text import content_stems

NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7}
NUMBER_WORDS |= {"eight": 8, "nine": 9, "ten": 10, "три": 3, "два": 2, "пять": 5}
_COUNT = r"(\d+|" + "|".join(NUMBER_WORDS) + r")"
# (pattern, field, ascending): "cheapest" sorts by price, lowest first.
ORDERS = (
    (
        re.compile(
            r"\b(cheapest|least expensive|lowest[- ]priced?|cheaper)\b|самы[йе] дешев", re.I
        ),
        "price",
        True,
    ),
    (
        re.compile(
            r"\b(most expensive|priciest|dearest|highest[- ]priced?)\b|самы[йе] дорог", re.I
        ),
        "price",
        False,
    ),
    (
        re.compile(
            r"\b(strongest|most alcohol|highest (abv|alcohol|strength))\b|самы[йе] крепк", re.I
        ),
        "strength",
        False,
    ),
    (
        re.compile(r"\b(weakest|least alcohol|lowest (abv|alcohol|strength))\b", re.I),
        "strength",
        True,
    ),
)
# Comparatives of a compare question ("Which is cheaper, Duvel or Chimay?"): field, ascending.
COMPARATIVES = (
    (re.compile(r"\b(cheaper|less expensive)\b|дешевле", re.I), "price", True),
    (re.compile(r"\b(more expensive|dearer|pricier|costs? more)\b|дороже", re.I), "price", False),
    (re.compile(r"\bstronger\b|крепче", re.I), "strength", False),
    (re.compile(r"\bweaker\b", re.I), "strength", True),
)
COMPARE = re.compile(r"\b(compare|comparison|versus|vs\.?|difference between)(?!\w)|сравни", re.I)
# What separates the things a compare question names: "Duvel or Chimay", "X than Y", "X vs Y".
COMPARED_APART = re.compile(r"\s*(?:[,;]|\b(?:or|and|vs\.?|versus|than|with|или|и|чем)\b)\s*", re.I)
TOP = re.compile(
    rf"\b(?:the\s+)?{_COUNT}\s+(?:\w+\s+)?(?:cheapest|most|least|strongest|weakest|lowest|highest)",
    re.I,
)
_AMOUNT = r"\s+([€$£]?\s?\d[\d\s.,]*)"
# Price bounds: "under 3 euros" leaves 3.00 out, "at most 3 euros" keeps it.
BELOW = re.compile(
    r"\b(under|below|less than|cheaper than|дешевле|at most|up to|до)" + _AMOUNT, re.I
)
ABOVE = re.compile(r"\b(over|above|more than|dearer than|дороже|at least|from|от)" + _AMOUNT, re.I)
INCLUSIVE = {"at most", "up to", "до", "at least", "from", "от"}
LISTING = re.compile(r"\b(which|what|list|any)\b.*\b(are|options|ones|do you have)\b", re.I)
COUNT = re.compile(r"\bhow many\b|\bnumber of\b|сколько (?!сто)", re.I)
DIETARY = (
    (re.compile(r"\bvegan\b|веган", re.I), "vegan"),
    (re.compile(r"\bvegetarian\b|\bveggie|вегетариан", re.I), "vegetarian"),
    (re.compile(r"gluten[- ]free|без глютена", re.I), "gluten-free"),
)
# Words that ask for job postings rather than a menu's items.
POSTINGS = re.compile(
    r"\b(jobs?|positions?|roles?|openings?|postings?|vacanc(?:y|ies))\b|ваканси", re.I
)
WORK_MODES = (
    (re.compile(r"\bhybrid\b|гибрид", re.I), "hybrid"),
    (re.compile(r"\bremote(ly)?\b|удал[её]нн", re.I), "remote"),
    (re.compile(r"\bon[- ]?site\b|\bin[- ]office\b", re.I), "on-site"),
)
CURRENCIES = (
    (re.compile(r"€|\beuros?\b|\beur\b", re.I), "EUR"),
    (re.compile(r"руб|roubles?|rubles?|₽", re.I), "RUB"),
    (re.compile(r"\$|dollars?|\busd\b", re.I), "USD"),
)
# Words of a list question that say how to list, not what: never terms an item must match.
OPERATOR_WORDS = """
cheapest cheap cheaper expensive priciest dearest lowest highest price priced prices cost costs
strongest weakest strong alcohol abv strength percent most least under below over above less more
than at up from euro euros eur rouble roubles ruble rubles dollar dollars how many number count
vegan vegetarian veggie gluten free top item items job jobs position positions role roles
compare comparison versus vs difference between stronger weaker dearer pricier which is
opening openings posting postings vacancy vacancies remote remotely hybrid onsite site office
work working thing things option options choice choices
dish dishes drink drinks food something anything everything there menu menus order list listed
available serve served offer offered sell sold have has get can i we me my our people person two
three four five six seven eight nine ten one самый самая самые дешевый дорогой крепкий сколько
"""
TABLE_ROWS = 20  # rows shown; a count says how many there are in all


@dataclass(frozen=True)
class RecordQuery:
    """What a list question asks: an order, a limit, price bounds, a dietary tag, a count, and the
    terms every listed item must match (in its name, section or document's title)."""

    order: tuple[str, bool] | None = None
    limit: int | None = None
    below: float | None = None
    above: float | None = None
    inclusive: tuple[bool, bool] = (False, False)  # whether `below`, `above` are allowed
    currency: str | None = None
    dietary: str | None = None
    kind: str | None = None  # "posting" when it asks for jobs
    work_mode: str | None = None  # remote, hybrid, on-site
    count: bool = False
    terms: frozenset[str] = frozenset()
    # A compare question's things, as written and by the stems a record must have.
    compare: tuple[tuple[str, frozenset[str]], ...] = ()


@dataclass(frozen=True)
class Listed:
    """The records that answer, in order, and how many matched in all; for a compare question,
    the records of each thing compared."""

    query: RecordQuery
    rows: list[Record]
    matched: int
    groups: tuple[tuple[str, tuple[Record, ...]], ...] = ()


def parse(question: str) -> RecordQuery | None:
    """The list question `question` asks, or None when it asks none (the grounded answer runs)."""
    order = next(((f, asc) for pattern, f, asc in ORDERS if pattern.search(question)), None)
    below_match, above_match = BELOW.search(question), ABOVE.search(question)
    below, above = _bound(below_match), _bound(above_match)
    inclusive = (
        bool(below_match) and below_match.group(1).lower() in INCLUSIVE,
        bool(above_match) and above_match.group(1).lower() in INCLUSIVE,
    )
    count = bool(COUNT.search(question))
    dietary = next((tag for pattern, tag in DIETARY if pattern.search(question)), None)
    # A dietary tag alone asks for a list when the question asks which ones are ("which
    # sandwiches are vegetarian?"), not what one is ("what is in the vegan sandwich?").
    kind = "posting" if POSTINGS.search(question) else None
    work_mode = next((mode for pattern, mode in WORK_MODES if pattern.search(question)), None)
    listing = (dietary or work_mode) is not None and bool(LISTING.search(question))
    currency = next((code for pattern, code in CURRENCIES if pattern.search(question)), None)
    comparative = next(((f, a) for pattern, f, a in COMPARATIVES if pattern.search(question)), None)
    if below is None and above is None and (comparative or COMPARE.search(question)):
        compared = _compared(question)
        if len(compared) >= 2:
            by = None if kind == "posting" else comparative or ("price", True)
            return RecordQuery(order=by, currency=currency, kind=kind, compare=compared)
    if order is None and below is None and above is None and not count and not listing:
        return None
    limit = None
    top = TOP.search(question)
    if top:
        word = top.group(1).lower()
        limit = int(word) if word.isdigit() else NUMBER_WORDS.get(word)
    elif order is not None and _asks_for_one(question):
        limit = 1  # "the cheapest beer", "which is the strongest": one (and its ties)
    operators = content_stems(OPERATOR_WORDS)
    terms = frozenset(
        stem for stem in content_stems(question) if stem not in operators and not stem[0].isdigit()
    )
    return RecordQuery(
        order, limit, below, above, inclusive, currency, dietary, kind, work_mode, count, terms
    )


def _compared(question: str) -> tuple[tuple[str, frozenset[str]], ...]:
    """The things a compare question names, each with the stems that name it: "Which is
    cheaper, Duvel or Chimay Bleue?" compares "Duvel" and "Chimay Bleue"."""
    operators = content_stems(OPERATOR_WORDS)
    compared = []
    for part in COMPARED_APART.split(question.strip(" ?!.")):
        # Numbers stay: they name items ("Glenfiddich 12", "Rochefort 8").
        stems = frozenset(s for s in content_stems(part, shortest=1) if s not in operators)
        if stems:
            words = [
                w for w in re.findall(r"[\w'’-]+", part) if content_stems(w, shortest=1) & stems
            ]
            compared.append((" ".join(words), stems))
    return tuple(compared)


SUPERLATIVE = re.compile(r"\b(?:most|least)\s+\w+\s+(\w+)|\b\w+est\s+(\w+)", re.I)


def _asks_for_one(question: str) -> bool:
    """ "What is the strongest beer?", "the cheapest beer": one; "the cheapest beers", "which
    beers are the strongest": a list."""
    if re.search(r"\b(is|was|'s)\s+the\b", question, re.I):
        return True
    if re.search(r"\b(are|were|all|list)\b", question, re.I):
        return False
    after = SUPERLATIVE.search(question)
    word = next((w for w in after.groups() if w), "") if after else ""
    return not (word.lower().endswith("s") and not word.lower().endswith("ss"))


def _bound(match: re.Match[str] | None) -> float | None:
    return amount(match.group(2)) if match else None


def answer(query: RecordQuery, records: Sequence[Record]) -> Listed | None:
    """The records that answer `query`; None when no record names what it asks about (the terms
    match nothing, so the question is not about these lists)."""
    if query.compare:
        return _compare(query, records)
    if query.terms:
        named = [r for r in records if query.terms <= record_stems(r)]
        if not named:
            return None
    else:
        named = list(records)
    rows = _ordered(query, [r for r in named if _meets(query, r)])
    if query.order and query.limit:  # ties with the last one shown are shown too
        field, ascending = query.order
        cut = rows[: query.limit]
        rows = [r for r in rows if cut and _beats_or_ties(r, cut[-1], field, ascending)]
    return Listed(query, rows, len(rows))


def _meets(query: RecordQuery, record: Record) -> bool:
    """Whether a record is of the kind asked and meets every condition the query sets (a compare
    question sets only kind, currency and the field it compares by)."""
    fields = record.fields
    priced = query.below is not None or query.above is not None
    return (
        fields.get("kind", "item") == (query.kind or "item")
        and (query.work_mode is None or fields.get("work_mode") == query.work_mode)
        and (query.currency is None or fields.get("currency") in (None, query.currency))
        and (not priced or fields.get("price") is not None)
        and (query.below is None or _within(fields["price"], query.below, query.inclusive[0]))
        and (query.above is None or _within(query.above, fields["price"], query.inclusive[1]))
        and (query.dietary is None or query.dietary in fields.get("dietary", []))
        and (query.order is None or fields.get(query.order[0]) is not None)
    )


def _ordered(query: RecordQuery, rows: list[Record]) -> list[Record]:
    if query.order:
        field, ascending = query.order
        rows.sort(key=lambda r: r.fields[field], reverse=not ascending)
    return rows


def _compare(query: RecordQuery, records: Sequence[Record]) -> Listed | None:
    """Each thing compared, by the records that name it; None when one is named by none (the
    documents may still say it in words: the grounded answer runs)."""
    groups = []
    for label, stems in query.compare:
        named = tuple(r for r in records if stems <= record_stems(r) and _meets(query, r))
        if not named:
            return None
        groups.append((label, named))
    rows = _ordered(query, list({id(r): r for _, named in groups for r in named}.values()))
    return Listed(query, rows, len(rows), tuple(groups))


def _within(low: float, high: float, inclusive: bool) -> bool:
    return low <= high if inclusive else low < high


def _beats_or_ties(record: Record, last: Record, field: str | None, ascending: bool) -> bool:
    value, bound = record.fields[field], last.fields[field]
    return value <= bound if ascending else value >= bound


def record_stems(record: Record) -> set[str]:
    """The stems a question may name a record by: its name, section, company, place, file."""
    fields = record.fields
    said = " ".join(str(fields.get(key, "")) for key in ("section", "company", "place"))
    text = f"{record.name} {said} {document_title(record.file)}"
    return content_stems(text, shortest=1)


ORDER_WORDS = {
    ("price", True): "cheapest first",
    ("price", False): "most expensive first",
    ("strength", False): "strongest first",
    ("strength", True): "weakest first",
}


def conditions(query: RecordQuery) -> str:
    """What the listed items meet, in words: "vegan, at most 3 EUR, cheapest first"."""
    unit = f" {query.currency}" if query.currency else ""
    parts = [tag for tag in (query.dietary, query.work_mode) if tag]
    if query.below is not None:
        word = "at most" if query.inclusive[0] else "under"
        parts.append(f"{word} {query.below:g}{unit}")
    if query.above is not None:
        word = "at least" if query.inclusive[1] else "over"
        parts.append(f"{word} {query.above:g}{unit}")
    if query.order:
        parts.append(ORDER_WORDS[query.order])
    return ", ".join(parts)


def describe(listed: Listed) -> str:
    """The answer's first line: how many items answer, and what they meet; for a compare
    question, the verdict."""
    if listed.groups:
        return _verdict(listed)
    how = conditions(listed.query)
    noun = "posting" if listed.query.kind == "posting" else "item"
    if not listed.matched:
        return f"No {noun} on the lists matches" + (f" ({how})." if how else ".")
    n = listed.matched
    return f"{n} {noun}{'s' if n != 1 else ''} on the lists match{'es' if n == 1 else ''}" + (
        f" ({how}):" if how else ":"
    )


VERDICT_WORDS = {
    ("price", True): ("is cheaper than", "cost the same"),
    ("price", False): ("costs more than", "cost the same"),
    ("strength", False): ("is stronger than", "are as strong"),
    ("strength", True): ("is weaker than", "are as strong"),
}


def _verdict(listed: Listed) -> str:
    """ "Duvel (3.50 EUR) is cheaper than Chimay Bleue (4 EUR)."; of things that name several
    items, each one's range."""
    order = listed.query.order
    if order is None:
        return f"The {len(listed.rows)} postings compared:"
    field = order[0]
    shown = price_text if field == "price" else lambda f: f"{f['strength']:g}%"
    single = [named[0] for _, named in listed.groups if len(named) == 1]
    if len(listed.groups) == 2 and len(single) == 2:
        first, second = sorted(single, key=lambda r: r.fields[field], reverse=not order[1])
        beats, same = VERDICT_WORDS[order]
        if first.fields[field] == second.fields[field]:
            return f"{first.name} and {second.name} {same}: {shown(first.fields)} each."
        return (
            f"{first.name} ({shown(first.fields)}) {beats} {second.name} ({shown(second.fields)})."
        )
    parts = []
    for label, named in listed.groups:
        values = sorted(r.fields[field] for r in named)
        low, high = (
            shown({**named[0].fields, field: values[0]}),
            shown({**named[0].fields, field: values[-1]}),
        )
        span = low if low == high else f"{low} to {high}"
        parts.append(f"{label}: {span} ({len(named)} item{'s' if len(named) != 1 else ''})")
    return "; ".join(parts) + "."


def _strength(record: Record) -> str:
    strength = record.fields.get("strength")
    return f"{strength:g}%" if strength is not None else ""


def _field(key: str) -> Callable[[Record], str]:
    def cell(record: Record) -> str:
        value = record.fields.get(key, "")
        return f"{value:g}" if isinstance(value, float) else str(value)

    return cell


# A table's columns by the field they show: (heading, the cell of a record).
Column = tuple[str, Callable[[Record], str]]
ITEM_COLUMNS: dict[str, Column] = {
    "name": ("item", lambda record: record.name),
    "price": ("price", lambda record: price_text(record.fields)),
    "strength": ("strength", _strength),
    "size": ("size", _field("size")),
    "section": ("section", _field("section")),
    "dietary": ("dietary", lambda record: ", ".join(record.fields.get("dietary", []))),
}
POSTING_COLUMNS: dict[str, Column] = {
    "name": ("job", lambda record: record.name),
    "company": ("company", _field("company")),
    "place": ("location", _field("place")),
    "work_mode": ("work", _field("work_mode")),
    "type": ("type", _field("type")),
    "salary": ("salary", _field("salary")),
}


def table(listed: Listed, fields: Sequence[str] | None = None) -> str:
    """The rows as a Markdown table (a menu's items, or job postings), each with its citation
    number: the columns of `fields` (a profile's record schema; default: all) that any row has."""
    postings = listed.rows and all(r.fields.get("kind") == "posting" for r in listed.rows)
    known = POSTING_COLUMNS if postings else ITEM_COLUMNS
    shown = listed.rows[:TABLE_ROWS]
    columns = [
        known[name]
        for name in (fields or known)
        if name in known and (name == "name" or any(known[name][1](r) for r in shown))
    ]
    lines = [
        "| " + " | ".join(heading for heading, _ in columns) + " | source |",
        "| " + " | ".join("---" for _ in columns) + " | --- |",
    ]
    for number, record in enumerate(shown, 1):
        cells = [cell(record) for _, cell in columns] + [f"[{number}]"]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    if len(listed.rows) > TABLE_ROWS:
        lines.append(f"\n… and {len(listed.rows) - TABLE_ROWS} more.")
    return "\n".join(lines)
