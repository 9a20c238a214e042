"""Records read from documents: the items of menus and price lists (name, section, price, size, strength, dietary tags), job postings and CVs, each linked to its page and span."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rag.pages import Page
from rag.postings import Line, cv_lines, cv_name, is_cv, posting_fields
from rag.price_lists import PRICED, is_priced
from rag.tables import CELL_SEPARATOR

# Currencies by how prices are printed: a sign or unit on the price, or a line saying what the
# prices are in ("All prices in e, including taxes", "Все цены указаны в рублях").
CURRENCY_UNITS = (
    (re.compile(r"€|\beur|\d\s?e$|euros?", re.I), "EUR"),
    (re.compile(r"₽|руб|\bр\.?$", re.I), "RUB"),
    (re.compile(r"\$"), "USD"),
    (re.compile(r"£"), "GBP"),
    (re.compile(r"\bkr\b|\bnok\b", re.I), "NOK"),
)
PRICES_IN = re.compile(
    r"(?:prices?|цены?)\b[^.\n]{0,40}?\b(?:in|в)\s+(€|e|eur\w*|euros?|руб\w*|\$|usd|£|kr|nok)\b",
    re.I,
)
SIZE = re.compile(r"(\d+(?:[.,]\d+)?)\s?(ml|cl|l|g|gr|kg|oz|мл|л|г|гр|кг|шт|pcs)(?![^\W\d_])", re.I)
STRENGTH = re.compile(r"(\d+(?:[.,]\d+)?)\s?(?:%|◦|°|º)")
MAX_STRENGTH = 80  # % alcohol at most: "100% De Agave" says what it is made of
# Marks a menu prints beside a name that are not part of it.
NOISE = re.compile(r"\bNew\b|[|]|\s[-–—]\s*$")
DIETARY = (
    (re.compile(r"\bvegan\b|веган", re.I), "vegan"),
    # "Veggie (fresh cheese...)" is; "Club (ham, cheese, veggies and mayo)" is not.
    (re.compile(r"\bvegetarian\b|\bveggie\b|вегетариан", re.I), "vegetarian"),
    (re.compile(r"gluten[- ]free|без глютена", re.I), "gluten-free"),
)
MEAT = re.compile(
    r"\b(ham|bacon|chicken|beef|pork|lamb|veal|duck|turkey|sausage|salami|tuna|salmon|fish|"
    r"shrimps?|prawns?|crab|anchov\w*)\b|курин|куриц|говяд|свинин|ягнен|телят|утк|индейк|"
    r"лосос|тунц|краб|кревет|рыб",
    re.I,
)
# Header cells of a table row, by the field they hold.
CELL_FIELDS = (
    (re.compile(r"price|cost|pris|цена|стоимост", re.I), "price"),
    (re.compile(r"strength|abv|alcohol|крепост|%", re.I), "strength"),
    (re.compile(r"size|volume|weight|вес|объ[её]м", re.I), "size"),
    (re.compile(r"name|product|item|dish|beer|drink|wine|title|название|блюдо", re.I), "name"),
)


@dataclass(frozen=True)
class Record:
    """One item a document lists, where it is printed (`start`, `end` in its page's text), and
    what its line says: `fields` holds name, section, price, currency, size, strength, dietary
    (those the line gives)."""

    page: int | None
    start: int
    end: int
    location: str | None
    fields: dict[str, Any] = field(hash=False)
    text: str = ""  # the line as printed: what a citation quotes
    file: str = ""
    chat_id: str = ""  # "" for shared documents, else the chat it was attached in

    @property
    def name(self) -> str:
        return str(self.fields.get("name", ""))

    @property
    def line(self) -> Line:
        """The line the record is read from, as an answer quotes it."""
        return Line(self.page, self.start, self.end, self.text)

    def citation(self) -> str:
        from rag.retrieve import cite  # LlamaIndex: not for `rag status`, which imports this

        return cite(self.file, self.page, self.location)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "page": self.page,
            "span": [self.start, self.end],
            "location": self.location,
            "text": self.text,
            "chat_id": self.chat_id,
            **self.fields,
        }


def price_text(fields: dict[str, Any]) -> str:
    """A record's price for people: "3.50 EUR", "1500 RUB"."""
    price = fields["price"]
    shown = f"{price:g}" if float(price).is_integer() else f"{price:.2f}"
    return f"{shown} {fields['currency']}" if fields.get("currency") else shown


def records_of(pages: Iterable[Page]) -> list[Record]:
    """The items of every page that lists them (a menu or price list read item by item, or a
    table whose rows have a price), and a job posting's or a CV's record."""
    pages = list(pages)
    currency = document_currency(pages)
    records = [record for page in pages if page.cut_at_lines for record in _items(page, currency)]
    posting = _posting(pages)
    if posting:
        return [*records, posting]
    cv = _cv(pages)
    return [*records, cv] if cv else records


def _posting(pages: list[Page]) -> Record | None:
    """A job posting's record (rag.postings), its salary read as an amount."""
    found = posting_fields(pages)
    if found is None:
        return None
    page, fields, start, end = found
    if "salary" in fields:
        fields["salary"] = amount(fields["salary"]) or fields["salary"]
    return Record(page.page, start, end, page.location, fields, text=page.text[start:end])


def _cv(pages: list[Page]) -> Record | None:
    """A CV's record: its holder's name and its quotable lines (what the job coach matches)."""
    if not pages or not is_cv(pages):
        return None
    lines = cv_lines(pages)
    if not lines:
        return None
    first = lines[0]
    fields: dict[str, Any] = {"kind": "cv", "lines": [line.to_json() for line in lines]}
    name = cv_name(pages)
    if name:
        fields["name"] = name
    return Record(first.page, first.start, first.end, pages[0].location, fields, text=first.text)


def document_currency(pages: Iterable[Page]) -> str | None:
    """What a document says its prices are in, if it says."""
    for page in pages:
        match = PRICES_IN.search(page.text)
        if match:
            return currency_of(match.group(1))
    return None


def currency_of(text: str) -> str | None:
    for pattern, code in CURRENCY_UNITS:
        if pattern.search(text):
            return code
    return None


def amount(text: str) -> float | None:
    """A printed amount as a number: "1 260" and "1,260.00" are 1260, "3,50" and "3.50e" 3.5."""
    digits = re.sub(r"[^\d.,]", "", text.replace("\u00a0", " "))
    if not digits:
        return None
    if "," in digits and "." in digits:
        digits = digits.replace(",", "")
    elif "," in digits:
        whole, _, part = digits.rpartition(",")
        digits = f"{whole.replace(',', '')}.{part}" if len(part) <= 2 else digits.replace(",", "")
    try:
        return float(digits)
    except ValueError:
        return None


def _items(page: Page, currency: str | None) -> Iterator[Record]:
    for start, line in page.lines():
        end = start + len(line)
        fields = _row_fields(line) if CELL_SEPARATOR in line and ": " in line else None
        if fields is None and is_priced(line):
            fields = _line_fields(line)
        if not fields or fields.get("price") is None or not fields.get("name"):
            continue
        section = page.heading_above(start)
        if section is None and _year(fields["price"], line):
            continue  # a title above the first section: "FOSDEM Bar 2018"
        fields["kind"] = "item"
        fields.setdefault("currency", currency)
        if fields["currency"] is None:
            del fields["currency"]
        if section:
            fields["section"] = section
        tags = [tag for pattern, tag in DIETARY if pattern.search(f"{section or ''} {line}")]
        if MEAT.search(line):  # a dish with meat or fish is neither, whatever its section says
            tags = [tag for tag in tags if tag not in ("vegan", "vegetarian")]
        if "vegan" in tags and "vegetarian" not in tags:
            tags.append("vegetarian")  # what is vegan is vegetarian
        if tags:
            fields["dietary"] = tags
        yield Record(page.page, start, end, page.location_at(start), fields, text=line)


def _year(price: float, line: str) -> bool:
    return price.is_integer() and 1900 <= price <= 2099 and currency_of(line) is None


def _line_fields(line: str) -> dict[str, Any]:
    """A priced line: "Duvel (8.5◦) 3.50e", "Стейк «Рибай» New 100г | 1200"."""
    match = PRICED.search(line)
    if match is None:
        return {}
    printed = line[match.start() :].strip(" |:·…")
    rest = line[: match.start()]
    fields: dict[str, Any] = {"price": amount(printed)}
    unit = currency_of(printed)
    if unit:
        fields["currency"] = unit
    strength = STRENGTH.search(rest)
    value = amount(strength.group(1)) if strength else None
    if strength and value is not None and value <= MAX_STRENGTH:
        fields["strength"] = value
        rest = rest[: strength.start()] + rest[strength.end() :]
    sizes = SIZE.findall(rest)
    if sizes:
        fields["size"] = " | ".join(f"{value} {unit_}" for value, unit_ in sizes)
        rest = SIZE.sub("", rest)
    fields["name"] = _clean_name(rest)
    return fields


def _row_fields(line: str) -> dict[str, Any] | None:
    """A table row that keeps its header: "Product: Duvel | Strength: 8.5% | Price: 3.50"."""
    fields: dict[str, Any] = {}
    first = None
    for cell in line.split(CELL_SEPARATOR):
        key, sep, value = cell.partition(": ")
        if not sep:
            continue
        first = first or value
        for pattern, name in CELL_FIELDS:
            if pattern.search(key) and name not in fields:
                if name == "price":
                    fields["price"] = amount(value)
                    unit = currency_of(value) or currency_of(key)
                    if unit:
                        fields["currency"] = unit
                elif name == "strength":
                    fields["strength"] = amount(value)
                else:
                    fields[name] = value.strip()
                break
    if "price" not in fields:
        return None
    fields.setdefault("name", first or "")
    return fields


def _clean_name(text: str) -> str:
    text = NOISE.sub(" ", text)
    text = re.sub(r"\(\s*\)", " ", text)  # what is left of "(8.5◦)" once the strength is read
    return " ".join(text.split()).strip(" ,;:-–")


def dumps(records: Iterable[Record]) -> list[str]:
    """Records as JSON rows for storage (rag.manifest)."""
    return [json.dumps(record.to_json(), ensure_ascii=False) for record in records]


def loads(rows: Iterable[str]) -> list[Record]:
    records = []
    for row in rows:
        data = json.loads(row)
        start, end = data.pop("span")
        records.append(
            Record(
                page=data.pop("page"),
                start=start,
                end=end,
                location=data.pop("location"),
                text=data.pop("text", ""),
                file=data.pop("file"),
                chat_id=data.pop("chat_id", ""),
                fields=data,
            )
        )
    return records
