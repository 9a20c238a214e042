"""Evidence: the lines and sentences of retrieved chunks that answer a question, and whether they can."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Protocol

from llama_index.core.schema import NodeWithScore

from rag.calibration import DEFAULT_CALIBRATION, Calibration
from rag.loaders import document_title
from rag.pages import tidy
from rag.price_lists import PRICED, is_priced
from rag.retrieve import chunk_start, cite, locate, to_source
from rag.text import CYRILLIC, SENTENCE_END, skeleton, stems_of, stopwords, tokenize
from rag.verify import names

# Units of a chunk: a logical line (menus, tables, lists, key: value) or a sentence of prose.
# A logical line longer than this is prose: it is cut into sentences.
PROSE_LINE = 160
# Confidence kept when the question uses a name no document mentions.
UNKNOWN_NAME_FACTOR = 0.6
# Small words inside a name of several words ("War and Peace", "University of Iowa").
PHRASE_JOINERS = frozenset({"and", "of", "the", "de", "la", "del", "von", "van", "&"})
# Spans added for words of the question the chosen ones lack, down to this share of the floor.
COMPLEMENTS = 2
COMPLEMENT_FLOOR = 0.7
# Spans of one file whose terms together decide whether a question is answered.
JOINT_SPANS = 3
# The best spans, any of which may show the question is answered (the best by score may be a
# line whose key names the attribute asked, sure of less than the one after it).
CONFIDENT_SPANS = 2
# A word in at most this many passages is distinctive enough to name a file by its title.
RARE_CHUNKS = 3
EMBED_CHARS = 240
# A word whose cosine with a counted thing ("workers") reaches this names the same thing
# ("employees"); unrelated words of a passage stay below 0.35 with the bundled MiniLM (another
# embedder's cosines are first put on MiniLM's scale: rag.calibration).
SYNONYM_SIMILARITY = 0.55
SYNONYM_WORD = re.compile(r"[^\W\d_]{4,}")
# Kinds of fact whose evidence pattern names the attribute itself (a "salary" line with a number):
# a span of the kind is evidence on its own, so it adds to the confidence.
SPECIFIC_TYPES = frozenset(
    {"a salary", "a phone number", "an e-mail address", "a web address", "a strength"}
)
SPECIFIC_TYPE_BONUS = 0.08
# A line of at most this many words, without a number, may name the item described below it.
NAME_WORDS = 3
# A line that plainly goes on in the next one (wrapped prose, an item name over two lines).
CONTINUES = re.compile(r"[,(\-–—/&+=×]$|\b(?:and|or|of|the|a|an|to|with|in|for|и|с|в|на)$", re.I)
# A line ending in an operator goes on whatever the next starts with ("40 work-hours × $85 per
# hour =" over "$3,400."): the result is the fact the line is about.
OPERATOR_END = re.compile(r"[=×+:]\s*$|\s[-–—/x]\s*$")
# "title: Junior Developer", "work[0].name: Pied Piper": one fact a line, whatever its case.
KEY = r"[\w\[\]. -]{1,40}"
KEY_VALUE = re.compile(rf"^{KEY}: ")
# A line of a flattened JSON record: "work[0].name: Pied Piper" (the record is "work[0]").
RECORD = re.compile(r"([\w.]+\[\d+\])[\w.\[\]]*: ")
RECORD_LINES = 8
# The keys of a unit's key: value lines, and what a key naming a question's word adds.
KEYS = re.compile(rf"^({KEY}): ", re.M)
KEY_BONUS = 0.1
# A record's own name ("title: Web Developer" atop a job posting's fields) heads its other lines.
NAMING_KEY = re.compile(r"^(?:title|name): ", re.I)
# A bulleted item of a few words ("- Postgres"): a run of them under a lead-in is one list, and
# a question about the list ("which databases ...") is answered by the whole of it.
LIST_ITEM = re.compile(r"^[-*•–]\s+\S")
LIST_ITEM_WORDS = 5
LIST_MIN_ITEMS = 3
# A line of numbers and units only: "200г | 1 890", "0.33l 4.00e".
PRICE_LINE = re.compile(
    r"^(?=.*\d)(?:[\d\s.,|/×x%◦°€$£₽()+-]|г|гр|кг|мл|л|шт|ml|cl|g|kg|l|e)+$", re.I
)
ENDS = re.compile(r"[.!?:;)»\"”\]]$|\d\S{0,3}$")
DIGIT = re.compile(r"\d")
TABLE_ROW_NUMBERS = 3
# Numbers written as words ("thirteen dollars a month", "a three year-old startup") answer a
# question asking for a number as well as digits do.
NUMBER_WORD = re.compile(
    r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen"
    r"|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy"
    r"|eighty|ninety|hundred|thousand|million|billion|dozen|half)\b",
    re.I,
)

# Words that ask for a kind of answer rather than name a subject (checked by ANSWER_TYPES).
ATTRIBUTE_WORDS = """
cost costs price prices priced pay paid expensive cheap cheapest charge much many number amount
based located situated headquartered
stoit стоит стоят стоимость цена цены сколько
"""
# Words naming a kind of document: in a question they never single out one file by its name.
GENERIC_TITLE_WORDS = """
menu menus job jobs sample document file report essay resume cv pdf page posting postings list
restaurant bar data model notes report text main
"""


# What a question asks for, and what a passage must contain to answer it: (question pattern, name,
# evidence pattern). A question of a kind whose evidence has no such text is not answered.
ANSWER_TYPES: tuple[tuple[re.Pattern[str], str, re.Pattern[str]], ...] = tuple(
    (re.compile(asks, re.I), name, re.compile(needs, re.I))
    for asks, name, needs in (
        (
            r"\b(salary|salaries|wage|wages|compensation|pay range|paid)\b|зарплат|оклад",
            "a salary",
            r"\b(salary|compensation|wage|pay)\b.*\d|\d.*\b(salary|per (year|hour|month)|/h|k\b)"
            r"|[$€£]\s?\d",
        ),
        (
            r"\b(phone|telephone|call them|phone number)\b|телефон",
            "a phone number",
            r"\+?\d[\d\s().-]{6,}\d",
        ),
        (r"\be-?mail\b|почт", "an e-mail address", r"[\w.+-]+@[\w-]+\.\w"),
        (
            r"\b(website|web site|url|homepage|web page|link)\b|сайт",
            "a web address",
            r"https?://|www\.",
        ),
        (
            r"\b(how much|price|prices|cost|costs|priced|expensive|cheapest)\b|сколько сто|цен[аыу]|стоимост",
            "a price",
            # A number that is not a size or a strength: "200 ml" prices nothing.
            r"\d(?![\d.,]*\s*(?:ml|cl|l|g|gr|kg|oz|г|гр|кг|мл|л|%|◦|°|º)(?!\w))",
        ),
        (r"\bhow many\b|\bnumber of\b|\bhow old\b|\bwhat year\b|\bwhich year\b", "a number", r"\d"),
        (
            r"\b(how strong|strength|alcohol (content|percentage)|abv|percentage)\b|крепост",
            "a strength",
            r"\d\s*(%|°|◦|º|vol\b|abv\b|proof\b)",
        ),
        (
            r"\b(weight|how big|how large|portion size)\b|вес\b|объ[её]м",
            "a size",
            r"\d\s*(г|гр|кг|мл|л|g|gr|kg|ml|cl|l|oz|cm|см|шт|pcs)\b",
        ),
    )
)
# A span holding a run of this many consecutive words of the question is quoted by it: a bonus
# for each word of the run from there, up to a cap.
WORDS = re.compile(r"\w+")
QUOTE_RUN = 4
QUOTE_BONUS = 0.04
QUOTE_BONUS_CAP = 0.3

# "How many calories ...": a question counting something no document mentions is not answered.
HOW_MANY = re.compile(
    r"\bhow many ((?:[^\W\d_]+[ -]?){1,2}?)\b(?= (?:do|does|did|are|is|were|was|can|will|would|has|have|had|in|on|at|of|for)\b|[?]|$)",
    re.I,
)

# A question answered by a name: "who ...", "which company ...", "what language ...".
ASKS_NAME = re.compile(
    r"^\W*(?:who|whom|whose)\b|\b(?:which|what)\s+(?!(?:is|are|was|were|do|does|did|can|could|will"
    r"|would|should|has|have|had|kind|sort|type|time|year|day|date|price|size|number|amount)\b)"
    r"[^\W\d_]+",
    re.I,
)

# Kinds a question leans to without requiring them: passages of the kind rank higher.
PREFERRED_TYPES: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (re.compile(asks, re.I), re.compile(needs, re.I))
    for asks, needs in (
        (r"\b(when|what date|which date|deadline|due|how long)\b|когда", r"\d"),
        (r"\b(size|portion|how much .* (weigh|contain))\b", r"\d"),
        # "Which databases ...": many things asked at once, which a bulleted list names.
        (
            r"\b(?:which|what)\s+(?!(?:is|was|does|has|this|its|his|thus|less|class)\b)[a-z]{3,}s\b",
            r"(?m)^[-*•–]\s+\S",
        ),
        (
            r"\bwhere\b.*\b(based|located|situated|headquartered)\b",
            r"\b(location|address|city|based|located|situated|headquarter\w*|country)\b",
        ),
    )
)


@dataclass(frozen=True)
class Evidence:
    """One quoted span that may answer the question: where it is and how well it matches."""

    file: str
    page: int | None
    quote: str  # the exact stored text of the span
    span: tuple[int, int] | None  # [start, end) in the stored page text; None for old indexes
    score: float
    coverage: (
        float  # share of the question's terms (weighted by rarity) the span and its context hold
    )
    similarity: float  # the question and the span: the embedder's cosine on the common scale
    file_id: str = ""
    chunk_text: str = field(default="", repr=False, compare=False)
    typed: bool = True  # it holds the kind of fact the question asks for (if it asks for one)
    terms: frozenset[str] = frozenset()  # the question's words it holds (stems)
    location: str | None = None  # instead of "page N": a slide, a sheet's row, a section

    def citation(self) -> str:
        return cite(self.file, self.page, self.location)

    def display(self) -> str:
        """The quote on one line, as shown to a user."""
        return " ".join(self.quote.split())


@dataclass
class Findings:
    """What evidence selection found for one question, and the verdict on answering it."""

    question: str
    evidence: list[Evidence]  # best first; what the prompt and the answer may use
    closest: list[Evidence]  # the best spans even when they do not answer (for the refusal)
    answerable: bool
    confidence: float
    reason: str = ""  # why it is not answerable, for the user


# --- units ----------------------------------------------------------------------------------------


def units(text: str) -> list[tuple[int, int]]:
    """[start, end) spans of the answer units of a chunk: logical lines, prose cut into sentences."""
    lines = [(m.start(), m.end()) for m in re.finditer(r"[^\n]+", text)]
    logical: list[tuple[int, int]] = []
    for start, end in lines:
        line = text[start:end].strip()
        if not line:
            continue
        if logical and _joins(
            text[logical[-1][0] : logical[-1][1]], line, text, logical[-1][1], start
        ):
            logical[-1] = (logical[-1][0], end)
        else:
            logical.append((start, end))
    spans: list[tuple[int, int]] = []
    for start, end in logical:
        if end - start <= PROSE_LINE or RECORD.match(text, start):
            spans.append(_strip(text, start, end))
            continue
        cursor = start
        for match in SENTENCE_END.finditer(text, start, end):
            spans.append(_strip(text, cursor, match.start()))
            cursor = match.end()
        spans.append(_strip(text, cursor, end))
    spans = [(s, e) for s, e in spans if e - s >= 2 and re.search(r"\w", text[s:e])]
    return _lists(text, spans)


def _short_item(line: str) -> bool:
    return (
        bool(LIST_ITEM.match(line))
        and len(line.split()) <= LIST_ITEM_WORDS + 1
        and not DIGIT.search(line)
    )


def _lists(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Runs of short bulleted items (with the lead-in line above them) merged into one span. Items
    with numbers stay lines of their own: a priced menu answers by line."""
    merged: list[tuple[int, int]] = []
    position = 0
    while position < len(spans):
        end = position
        while end < len(spans) and _short_item(text[spans[end][0] : spans[end][1]]):
            end += 1
        if end - position >= LIST_MIN_ITEMS:
            first = position
            if merged and text[merged[-1][0] : merged[-1][1]].rstrip().endswith(":"):
                first = position - 1
                merged.pop()
            merged.append((spans[first][0], spans[end - 1][1]))
            position = end
            continue
        merged.append(spans[position])
        position += 1
    return merged


def _joins(previous: str, line: str, text: str, prev_end: int, start: int) -> bool:
    """Whether `line` continues the logical line `previous` (only across one line break)."""
    if "\n\n" in text[prev_end:start]:
        return False
    # One record of a JSON file ("awards[0].title: ...", "awards[0].awarder: ...") is one unit.
    record, this = RECORD.match(previous), RECORD.match(line)
    if record and this:
        return record.group(1) == this.group(1) and previous.count("\n") < RECORD_LINES - 1
    # A menu item whose strength, size or price is printed on the lines below it, until its
    # price: "Primator Premium 5%" over "400 ml" over "350".
    priced = bool(PRICED.search(previous.rsplit("\n", 1)[-1]))
    if PRICE_LINE.match(line) and not priced:
        return True
    if OPERATOR_END.search(previous) and DIGIT.search(previous) and not LIST_ITEM.match(line):
        return True
    if not line[0].isalnum() or KEY_VALUE.match(line) or _table_row(line):
        return False
    if CONTINUES.search(previous) or (line[0].islower() and not priced):
        return True
    # Wrapped prose: a line of several words that does not end a sentence or a priced item,
    # before a line that is not a name of its own (a menu's "Lychee Daisy" after a description).
    return len(previous.split()) >= 4 and not ENDS.search(previous) and not _name_line(line)


def _name_line(line: str) -> bool:
    """A line of its own naming one thing: a few words, no number, no end mark."""
    return (
        "\n" not in line
        and len(line.split()) <= NAME_WORDS
        and not DIGIT.search(line)
        and not re.search(r"[.:;!?,]$", line)
        and not KEY_VALUE.match(line)
    )


def _table_row(line: str) -> bool:
    """A row of a table: a label and at least TABLE_ROW_NUMBERS numbers, mostly numbers
    ("Alabama 18,870 23,022 ... 71,137"). It is a line of its own, never wrapped prose."""
    words = line.split()
    numbers = sum(1 for word in words if DIGIT.search(word))
    return numbers >= TABLE_ROW_NUMBERS and numbers * 2 >= len(words)


def is_heading(line: str, following: str) -> bool:
    """A line that titles the lines under it: a short line without numbers over one with them (a
    menu section: "Brussels beers" over "Zinnebir (6◦) 3.50e"), or a short line ending in a colon
    ("Core job duties include:")."""
    if line.rstrip().endswith(":") and len(line.split()) <= 8:
        return True
    if KEY_VALUE.match(line):  # "remote: Hybrid" is a fact, not a title
        return False
    return len(line.split()) <= 4 and not DIGIT.search(line) and bool(DIGIT.search(following))


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# Words of a question as terms count them (positions in it), and hyphenated compounds.
QUESTION_WORDS = re.compile(r"\d+(?:[.,]\d+)*|\w+")
COMPOUND = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)+")


# --- matching terms ---------------------------------------------------------------------------------


def _same_shape(found: str, wanted: str) -> bool:
    """Skeletons equal, or one letter apart when long ("lingvini" and "linguine")."""
    if found == wanted:
        return True
    if min(len(found), len(wanted)) < 4 or abs(len(found) - len(wanted)) > 1:
        return False
    return _edit_distance(found, wanted) <= 1


def _edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, left in enumerate(a, 1):
        current = [i]
        for j, right in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (left != right))
            )
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class Term:
    """A word of the question that names what it is about: its stem, raw form and rarity."""

    stem: str
    raw: str
    weight: float
    proper: bool = False
    position: int = 0  # index of its (first) word in the question's QUESTION_WORDS
    words: int = 1  # how many of those words it spans: a compound ("on-call") has several

    @property
    def compound(self) -> bool:
        return self.words > 1


def question_terms(question: str, idf: Any) -> list[Term]:
    """The subject words of a question (no function or attribute words), weighted by IDF;
    a proper name ("Duvel", "Bosfor", "FAA") is marked as such, and a hyphenated compound
    ("on-call", "gluten-free") is one term: its parts alone mean something else."""
    stop = stopwords() | stems_of(ATTRIBUTE_WORDS)
    proper = {name.casefold() for name in names(question)}
    unseen = idf("\0")  # the rarity of a word no chunk has
    terms: dict[str, Term] = {}
    compounds = {match.start(): match for match in COMPOUND.finditer(question)}
    inside = -1  # the end of the compound the current word belongs to
    for position, word in enumerate(QUESTION_WORDS.finditer(question)):
        if word.start() < inside:
            continue
        compound = compounds.get(word.start())
        if compound is not None:
            inside = compound.end()
            parts = compound.group().casefold().split("-")
            stems = [stem for part in parts for stem in tokenize(part) if stem not in stop]
            rarity = max((idf(stem) for stem in stems), default=unseen)
            key = "-".join(parts)
            terms.setdefault(key, Term(key, key, rarity, False, position, len(parts)))
            continue
        raw = word.group()
        for stem in tokenize(raw):
            if stem in stop or stem in terms or (len(stem) < 2 and not stem.isdigit()):
                continue
            is_proper = raw.casefold() in proper
            rarity = idf(stem)
            if not is_proper and not raw.isdigit() and rarity >= unseen:
                # A common word no document uses is more likely the asker's paraphrase than the
                # subject ("employment" for "type: Full Time"); an unknown name is the subject.
                rarity *= 0.5
            terms[stem] = Term(stem, raw.casefold(), rarity, is_proper, position)
    return list(terms.values())


class TermMatcher:
    """Which question terms a text holds: the same stem, or the same name in another script."""

    def __init__(self, terms: Sequence[Term]) -> None:
        self.terms = list(terms)
        self._skeletons = {
            term.stem: skeleton(term.raw)
            for term in terms
            if not term.raw.isdigit() and not term.compound
        }
        # "on-call" is written "on-call", "on call" or "oncall".
        self._compounds = {
            term.stem: re.compile(
                r"\b" + r"[-\s]?".join(map(re.escape, term.raw.split("-"))) + r"\b", re.I
            )
            for term in terms
            if term.compound
        }

    def matched(self, text: str, cross_script: bool = True) -> set[str]:
        stems = set(tokenize(text))
        found = {term.stem for term in self.terms if term.stem in stems}
        found |= {stem for stem, pattern in self._compounds.items() if pattern.search(text)}
        # "keeps" and "keeper": one stem the start of the other (both at least 4 letters).
        for term in self.terms:
            if term.stem in found or len(term.stem) < 4 or term.stem.isdigit() or term.compound:
                continue
            if any(
                len(stem) >= 4 and (stem.startswith(term.stem) or term.stem.startswith(stem))
                for stem in stems
            ):
                found.add(term.stem)
        words = re.findall(r"\w+", text.casefold())
        # "Stitch Fix" in a question, "stitchfix" in a file name.
        for a, b in pairwise(self.terms):
            if a.raw + b.raw in words:
                found |= {a.stem, b.stem}
        shapes: list[tuple[bool, str]] | None = None  # each word's script and skeleton, once
        for term in self.terms:
            wanted = self._skeletons.get(term.stem, "")
            if not cross_script or term.stem in found or len(wanted) < 2 or len(term.raw) < 4:
                continue
            if shapes is None:
                shapes = [(bool(CYRILLIC.search(word)), skeleton(word)) for word in words]
            # Only across scripts: within one script, stems already decide.
            cyrillic = bool(CYRILLIC.search(term.raw))
            if any(script != cyrillic and _same_shape(shape, wanted) for script, shape in shapes):
                found.add(term.stem)
        return found

    def in_vocabulary(self, term: Term, vocabulary: set[str]) -> bool:
        """Whether a file's words (stems and cross-script skeletons) hold the term."""
        if term.stem in vocabulary:
            return True
        if term.compound:
            return all(
                stem in vocabulary for part in term.raw.split("-") for stem in tokenize(part)
            )
        shape = self._skeletons.get(term.stem, "")
        return len(shape) >= 2 and len(term.raw) >= 4 and f"~{shape}" in vocabulary


def weight(terms: Iterable[Term]) -> float:
    return sum(term.weight for term in terms)


# --- selection ---------------------------------------------------------------------------------------


class Collection(Protocol):
    """What selection needs to know of the whole collection (rag.retrieve.KeywordIndex)."""

    def idf(self, stem: str) -> float: ...

    document_frequency: Mapping[str, int]
    file_heads: dict[str, set[str]]

    file_words: dict[str, set[str]]


@dataclass
class _Candidate:
    hit_rank: int
    hit: NodeWithScore
    start: int
    end: int
    own: set[str]
    context: set[str]
    file: str
    coverage: float = 0.0
    similarity: float = 0.0
    typed: bool = True
    preferred: bool = True
    eligible: bool = True
    informative: bool = True
    score: float = 0.0
    subject: list[Term] = field(default_factory=list)
    item: bool = False  # a priced line: one item of a list (a menu, a price list)
    scoped: bool = False  # its file is about a name the question uses
    # The question's terms in the keys of its key: value lines.
    keyed: set[str] = field(default_factory=set)
    # The text and page end of the span when a chunk's end cut it and the next chunk completed it.
    mended: tuple[str, int] | None = None
    # The sentence after this one in its paragraph, when this one is a sentence of prose.
    following: tuple[int, int] | None = None


def shared_run(words: Sequence[str], text: str) -> int:
    """The longest run of consecutive `words` that `text` holds in the same order."""
    found = WORDS.findall(text.casefold())
    best = 0
    previous = [0] * (len(found) + 1)
    for word in words:
        current = [0] * (len(found) + 1)
        for j, other in enumerate(found, 1):
            if word == other:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def asked_count(question: str) -> str:
    """What a "how many X" question counts ("calories"): the X, if it asks one."""
    match = HOW_MANY.search(question)
    return match.group(1) if match else ""


def answer_type(question: str) -> tuple[str, re.Pattern[str]] | None:
    """What kind of fact the question asks for, when it asks for one we can check."""
    for asks, name, needs in ANSWER_TYPES:
        if asks.search(question):
            return name, needs
    return None


def named_files(terms: Sequence[Term], collection: Collection, files: Sequence[str]) -> list[str]:
    """Files a question names by a distinctive word of their title ("the Bosfor menu"): a name,
    or a word few passages use ("fosdem"), in the title of one file only ("application" in a job
    posting's file name does not name it)."""
    generic = stems_of(GENERIC_TITLE_WORDS)
    matcher = TermMatcher(terms)
    # File names are matched by their words only: a skeleton of two letters is too weak to say
    # which file a question names ("филе" is not "full").
    titles = {file: matcher.matched(document_title(file), False) - generic for file in files}
    # A name at the head of a file (a CV's "basics.name: Richard Hendriks") names it like a title.
    for file in files:
        head = collection.file_heads.get(file, set())
        titles[file] |= {t.stem for t in terms if t.proper and matcher.in_vocabulary(t, head)}
    named: set[str] = set()
    for term in terms:
        distinctive = term.proper or collection.document_frequency.get(term.stem, 0) <= RARE_CHUNKS
        owners = [file for file, found in titles.items() if term.stem in found]
        if distinctive and len(owners) == 1 and len(files) > 1:
            named.update(owners)
    return sorted(named)


class _Scope:
    """Per file: the question's terms its title holds (they only say which file the question is
    about), the names it mentions somewhere, and whether it can be about the question at all."""

    def __init__(self, terms: Sequence[Term], collection: Collection, matcher: TermMatcher) -> None:
        self.terms = terms
        self.collection = collection
        self.matcher = matcher
        everywhere = (
            set().union(*collection.file_words.values()) if collection.file_words else set()
        )
        # Names of two or more words the collection knows ("Richard Hendriks", "Chimay Bleue"): a
        # file that lacks one is about something else. One-word names only weigh as terms.
        multiword = {
            t.stem
            for a, b in pairwise(terms)
            if a.proper and b.proper and b.position == a.position + 1
            for t in (a, b)
        }
        self.known_names = [
            t for t in terms if t.stem in multiword and matcher.in_vocabulary(t, everywhere)
        ]
        self._everywhere = everywhere
        self._cache: dict[str, tuple[set[str], set[str], bool]] = {}

    def known(self, term: Term) -> bool:
        """Whether any file has the term (a stem, or a name in another script)."""
        return self.matcher.in_vocabulary(term, self._everywhere)

    def of(self, file: str) -> tuple[set[str], set[str], bool]:
        """(title terms, names the file mentions, whether it mentions every known long name)."""
        if file not in self._cache:
            words = self.collection.file_words.get(file, set())
            head = self.collection.file_heads.get(file, set())
            # A name at the head of a file (front matter, a CV's name) is what the file is about:
            # like its title, it says which file the question is about, not which line answers.
            title = self.matcher.matched(document_title(file), False) | {
                t.stem for t in self.terms if t.proper and self.matcher.in_vocabulary(t, head)
            }
            mentioned = {
                t.stem for t in self.terms if t.proper and self.matcher.in_vocabulary(t, words)
            }
            eligible = all(t.stem in title | mentioned for t in self.known_names)
            self._cache[file] = (title, mentioned, eligible)
        return self._cache[file]


def select(
    question: str,
    hits: Sequence[NodeWithScore],
    collection: Collection,
    embed: Any,
    named: Sequence[str] = (),
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> Findings:
    """Pick the spans of `hits` that answer `question` and decide whether they can.

    `embed(texts)` returns unit vectors (the question's first); `collection` gives word rarity and
    each file's words; `named` are the files the question names (`named_files`), if any.
    """
    question = tidy(question)
    terms = question_terms(question, collection.idf)
    matcher = TermMatcher(terms)
    scopes = _Scope(terms, collection, matcher)
    wanted = answer_type(question)
    preferred = [needs for asks, needs in PREFERRED_TYPES if asks.search(question)]
    candidates: list[_Candidate] = []
    for rank, hit in enumerate(hits):
        text = hit.node.get_content()
        file = str(hit.node.metadata.get("file", ""))
        spans = units(text)
        lines = [text[s:e] for s, e in spans]
        owns = [matcher.matched(line) for line in lines]
        priced = [is_priced(line) for line in lines]
        heading: set[str] = set()  # the terms of the heading over the current section
        for position, (start, end) in enumerate(spans):
            following = lines[position + 1] if position + 1 < len(lines) else ""
            titled = is_heading(lines[position], following)
            if titled or NAMING_KEY.match(lines[position]):
                heading = owns[position]
            neighbours: set[str] = set(heading)
            for other in (position - 1, position + 1):
                # Two priced lines are two items of a list: one's name says nothing of the other.
                if 0 <= other < len(spans) and not (priced[position] and priced[other]):
                    neighbours |= owns[other]
            candidate = _Candidate(rank, hit, start, end, owns[position], neighbours, file)
            candidate.item = priced[position]
            keys = KEYS.findall(lines[position])
            if keys:
                candidate.keyed = matcher.matched(" ".join(keys), False)
            if position + 1 < len(spans) and _same_paragraph(text, end, spans[position + 1]):
                candidate.following = spans[position + 1]
            candidate.informative = not titled and (
                len(lines[position].split()) >= 3
                or any(ch.isdigit() for ch in lines[position])
                or bool(keys)  # "remote: Hybrid" states a fact in two words
            )
            if _described_below(wanted, lines, text, spans, owns, position):
                candidate.end = spans[position + 1][1]
                candidate.own = owns[position] | owns[position + 1]
                candidate.informative = True
            candidates.append(candidate)
    if not candidates:
        return Findings(question, [], [], False, 0.0, "nothing relevant is indexed")

    for candidate in candidates:
        title, mentioned, candidate.eligible = scopes.of(candidate.file)
        subject = [term for term in terms if term.stem not in title]
        candidate.subject = subject
        candidate.scoped = any(t.proper and t.stem in title for t in terms)
        if subject:
            own = {t.stem for t in subject if t.stem in candidate.own}
            near = {t.stem for t in subject if t.stem in candidate.context} - own
            # An item of a list is what its line and its section say: a name mentioned elsewhere
            # in its file is another item's ("Corona Extra" two lines above "Primator 5%").
            elsewhere = set() if candidate.item else (mentioned - own) - near
            # The lines around a span help it, and so does a name its file mentions elsewhere (a
            # CV names its person once, at the top), but less than the span's own words.
            candidate.coverage = (
                weight(t for t in subject if t.stem in own)
                + 0.6 * weight(t for t in subject if t.stem in near)
                + 0.5 * weight(t for t in subject if t.stem in elsewhere)
            ) / (weight(subject) or 1.0)
        else:  # the question only names its subject ("tell me about Pear Deck")
            candidate.coverage = 1.0 if title else 0.0
        if wanted is not None:
            candidate.typed = _holds(wanted[1], _text(candidate))
        candidate.preferred = all(_holds(needs, _text(candidate)) for needs in preferred)
        if named and candidate.file not in named:
            candidate.eligible = False
    _embed_best(question, terms, candidates, embed, calibration)
    asked_words = WORDS.findall(question.casefold())
    for candidate in candidates:
        prior = 1.0 / (1.0 + candidate.hit_rank)
        candidate.score = 0.55 * candidate.coverage + 0.35 * candidate.similarity + 0.10 * prior
        if not candidate.typed:  # a question may ask two things: only one needs the type
            candidate.score *= 0.75
        if not candidate.preferred:
            candidate.score *= 0.85
        if not candidate.eligible:
            candidate.score *= 0.5
        if not candidate.informative:  # "Sandwiches", "Notes": a heading answers nothing itself
            candidate.score *= 0.7
        # "remote: Hybrid" for "is the job remote?": a key that names what the question asks
        # about is the attribute it asks for, whatever the value says.
        if candidate.keyed & {t.stem for t in candidate.subject if not t.proper}:
            candidate.score += KEY_BONUS
        # A question that quotes the document ("where does it say '...'?") finds that very line.
        run = shared_run(asked_words, _text(candidate))
        candidate.score += min(QUOTE_BONUS_CAP, QUOTE_BONUS * max(0, run - QUOTE_RUN + 1))
        if run == len(asked_words) >= QUOTE_RUN:  # the whole question is a line of this span
            candidate.score += QUOTE_BONUS_CAP
    ranked = sorted(candidates, key=lambda c: c.score, reverse=True)
    _mend(ranked)
    ranked = _distinct(ranked)
    closest = [_evidence(c) for c in ranked[:3]]
    eligible = [c for c in ranked if c.typed and c.eligible]
    # A heading ("Capital" over a column) names a subject but answers nothing itself.
    answering = [c for c in eligible if c.informative]
    confidence = max((_confidence(c, eligible) for c in answering[:CONFIDENT_SPANS]), default=0.0)
    if eligible and wanted is not None and wanted[0] in SPECIFIC_TYPES:
        confidence += SPECIFIC_TYPE_BONUS
    unknown = [t.raw for t in terms if t.proper and not scopes.known(t)]
    if not unknown:  # "War and Peace": each word is known, the title is not
        titles = {document_title(str(hit.node.metadata.get("file", ""))) for hit in hits}
        unknown = _unknown_phrases(question, [hit.node.get_content() for hit in hits], titles)
    if unknown:  # a name no document mentions ("Guinness", "iOS") is most likely not there
        confidence *= UNKNOWN_NAME_FACTOR
    reason = ""
    counted = [t for t in question_terms(asked_count(question), collection.idf) if not t.proper]
    if (
        counted
        and not scopes.known(counted[0])
        and not _synonym_in(
            counted[0].raw, [c.hit.node.get_content() for c in eligible[:3]], embed, calibration
        )
    ):
        reason = f"no document mentions {counted[0].raw}"
    elif wanted is not None and not any(c.typed for c in ranked[: 3 * calibration.max_units]):
        reason = f"no passage found gives {wanted[0]}"
    elif not any(c.eligible for c in ranked):
        where_named = ", ".join(named) if named else "one document"
        reason = f"nothing in {where_named} is about all of {', '.join(_names(terms))}"
    elif confidence < calibration.min_confidence:
        reason = "no passage found answers it"
    answerable = not reason
    chosen: list[_Candidate] = []
    if answerable:
        per_chunk: dict[int, int] = {}
        floor = eligible[0].score * 0.55
        for candidate in [c for c in ranked if c.eligible]:
            if len(chosen) == calibration.max_units or candidate.score < floor:
                break
            if per_chunk.get(candidate.hit_rank, 0) == calibration.max_per_chunk:
                continue
            per_chunk[candidate.hit_rank] = per_chunk.get(candidate.hit_rank, 0) + 1
            chosen.append(candidate)
        chosen += _complements(chosen, [c for c in ranked if c.eligible], floor * COMPLEMENT_FLOOR)
    for candidate in chosen:
        _complete(candidate, question, terms, wanted)
    return Findings(
        question=question,
        evidence=[_evidence(c) for c in chosen],
        closest=closest,
        answerable=answerable,
        confidence=round(confidence, 4),
        reason=reason,
    )


def _unknown_phrases(question: str, texts: Sequence[str], titles: Iterable[str]) -> list[str]:
    """Titles of the form "War and Peace" or "University of Iowa" (a name, a small word, a name)
    in the question that none of the passages nor their files' titles holds as a phrase."""
    found = set(names(question))
    words = [word.group() for word in re.finditer(r"[\w'’-]+", question)]
    phrases = [
        " ".join(words[i : i + 3])
        for i in range(len(words) - 2)
        if words[i] in found and words[i + 2] in found and words[i + 1].casefold() in PHRASE_JOINERS
    ]
    if not phrases:
        return []
    haystack = _phrase_text(" | ".join([*texts, *titles]))
    return [phrase for phrase in phrases if _phrase_text(phrase) not in haystack]


def _phrase_text(text: str) -> str:
    """Text as phrases are compared: case, punctuation and spacing set aside."""
    return " " + " ".join(re.findall(r"\w+", text.casefold())) + " "


def _complements(
    chosen: Sequence[_Candidate], ranked: Sequence[_Candidate], floor: float
) -> list[_Candidate]:
    """Spans that hold a word of the question none of the chosen spans holds, best first: the
    other half of a question that asks two things ("where did he earn his bachelor's degree,
    and in what field?"), which may score well below the half that matches more words."""
    covered = set().union(*(c.own for c in chosen))
    taken = {id(c) for c in chosen}
    added: list[_Candidate] = []
    for candidate in ranked:
        if len(added) == COMPLEMENTS or candidate.score < floor:
            break
        subject = {t.stem for t in candidate.subject}
        if id(candidate) in taken or not (candidate.own & subject) - covered:
            continue
        added.append(candidate)
        covered |= candidate.own
    return added


def _described_below(
    wanted: tuple[str, re.Pattern[str]] | None,
    lines: Sequence[str],
    text: str,
    spans: Sequence[tuple[int, int]],
    owns: Sequence[set[str]],
    position: int,
) -> bool:
    """Whether the line at `position` names what the question asks about and the next line of its
    block says what is asked: "Яблочный/Апельсиновый" over "Грейпфрутовый/Морковный 390" for its
    price, "Grape Silk" over "Виноград, в композиции с клубничным джином," for what is in it.
    Such a pair is one unit for the question; a section name over its items is not (it names
    nothing the question asks about)."""
    if position + 1 >= len(spans) or "\n\n" in text[spans[position][1] : spans[position + 1][0]]:
        return False
    line, below = lines[position], lines[position + 1]
    if not owns[position] - owns[position + 1]:
        return False
    if wanted is not None:
        return _given_below(wanted[1], line, below)
    return _name_line(line) and len(below.split()) >= NAME_WORDS and not _name_line(below)


def _same_paragraph(text: str, end: int, following: tuple[int, int]) -> bool:
    """Whether the unit at `following` is the next sentence of the prose the unit ending at `end`
    belongs to (no line break between them: a line of a list or menu is a unit of its own)."""
    return "\n" not in text[end : following[0]] and text[end - 1 : end] in '.!?…"”»)'


def _new_names(text: str, terms: Sequence[Term]) -> list[str]:
    """Names in `text` that are not words of the question."""
    asked = {term.stem for term in terms}
    return [name for name in names(text) if not set(tokenize(name)) <= asked]


def _complete(
    candidate: _Candidate,
    question: str,
    terms: Sequence[Term],
    wanted: tuple[str, re.Pattern[str]] | None,
) -> None:
    """Extend a sentence that lacks what the question asks for with the next sentence of its
    paragraph, when that one has it: "I decided to get a job." is followed by "I got one at a
    company called Interleaf." and the pair answers "which company did he work at?"."""
    if candidate.following is None:
        return
    content = candidate.hit.node.get_content()
    own, after = _text(candidate), content[candidate.following[0] : candidate.following[1]]
    if wanted is not None:
        lacking = _given_below(wanted[1], own, after)
    elif ASKS_NAME.search(question):
        lacking = not _new_names(own, terms) and bool(_new_names(after, terms))
    else:
        return
    if lacking:
        candidate.end = candidate.following[1]
        candidate.following = None
        candidate.typed = True


def _names(terms: Sequence[Term]) -> list[str]:
    return [term.raw for term in terms]


def _confidence(best: _Candidate, eligible: Sequence[_Candidate]) -> float:
    """How surely the evidence answers: the mean of the best span's closeness in meaning (the
    embedder: a paraphrase shares few words) and the terms that the best few spans of its file
    hold together (a question may ask two things, answered on two lines). See bench/answers.py."""
    together = [c for c in eligible[: JOINT_SPANS * 2] if c.file == best.file][:JOINT_SPANS]
    subject = best.subject
    held = set().union(*(c.own | c.context for c in together))
    joint = weight(t for t in subject if t.stem in held) / (weight(subject) or 1.0)
    return (max(best.coverage, joint) + best.similarity) / 2


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Of two unit vectors (what `embed` returns)."""
    return float(sum(x * y for x, y in zip(a, b, strict=True)))


def _synonym_in(
    word: str, texts: Sequence[str], embed: Any, calibration: Calibration = DEFAULT_CALIBRATION
) -> bool:
    """Whether the texts use a word of the same meaning (the embedder, its cosines on the common
    scale): "workers" asked, "No. of Employees" printed."""
    words = sorted({w for text in texts for w in SYNONYM_WORD.findall(text)})
    if not words:
        return False
    vectors = embed([word, *words])
    return any(
        calibration.similarity(_cosine(vectors[0], vector)) >= SYNONYM_SIMILARITY
        for vector in vectors[1:]
    )


def _holds(needs: re.Pattern[str], text: str) -> bool:
    """Whether a text holds a fact of a kind (a number written as a word counts as one)."""
    return bool(needs.search(_numerals(text)))


def _given_below(needs: re.Pattern[str], text: str, below: str) -> bool:
    """Whether a text lacks the kind of fact asked for and the text after it has it."""
    return not _holds(needs, text) and _holds(needs, below)


def _numerals(text: str) -> str:
    """The text with numbers written as words marked by a digit, for the checks of a kind."""
    return NUMBER_WORD.sub(lambda match: f"{match.group(0)} 0", text)


def _text(candidate: _Candidate) -> str:
    if candidate.mended is not None:
        return candidate.mended[0]
    return candidate.hit.node.get_content()[candidate.start : candidate.end]


def _page_span(candidate: _Candidate) -> tuple[int, int] | None:
    """[start, end) of the span in its page's stored text; None for an index without offsets."""
    start = chunk_start(candidate.hit.node.metadata)
    if start is None:
        return None
    end = candidate.mended[1] if candidate.mended is not None else start + candidate.end
    return start + candidate.start, end


def _mend(ranked: list[_Candidate]) -> None:
    """A unit that a chunk's end cut goes on in the next chunk, which overlaps it: the span that
    starts inside it and runs past the cut completes it (a JSON record, a menu item)."""
    for candidate in ranked:
        content = candidate.hit.node.get_content()
        span = _page_span(candidate)
        if span is None or content[candidate.end :].strip() or candidate.mended is not None:
            continue
        for other in ranked:
            if other is candidate or _page_key(other) != _page_key(candidate):
                continue
            beyond = _page_span(other)
            if beyond is None or not span[0] < beyond[0] < span[1] < beyond[1]:
                continue
            rest = _text(other)[span[1] - beyond[0] :]
            candidate.mended = (_text(candidate) + rest, beyond[1])
            candidate.own |= other.own
            break


def _embed_best(
    question: str,
    terms: Sequence[Term],
    candidates: list[_Candidate],
    embed: Any,
    calibration: Calibration,
) -> None:
    """Cosine of the question and the most promising spans (by keywords, then chunk rank), on the
    common scale of the embedder's calibration (0 for unrelated text, whatever the embedder).

    Within a file about a name the question uses ("Richard Hendriks" in his CV), the question is
    compared without that name: the embedder finds any line naming him close, the one that
    answers is close to the rest of the question."""
    # A span in a file about a name the question uses comes first: its subject words may all be
    # paraphrased ("based" for "headquartered") and leave it no coverage to be ranked by.
    order = sorted(candidates, key=lambda c: (-c.coverage - c.scoped, c.hit_rank))
    order = order[: calibration.embed_limit]
    if not order:
        return
    names = {t.raw for t in terms if t.proper}
    words = re.findall(r"\w+|\W+", question)
    without = "".join(w for w in words if w.casefold() not in names).strip() or question
    # The start of a long sentence says what it is about; embedding cost grows with length.
    vectors = embed([question, without, *(_text(c)[:EMBED_CHARS] for c in order)])
    for candidate, vector in zip(order, vectors[2:], strict=True):
        query = vectors[1] if candidate.scoped else vectors[0]
        candidate.similarity = calibration.similarity(_cosine(query, vector))


def _distinct(ranked: list[_Candidate]) -> list[_Candidate]:
    """Overlapping chunks repeat lines, and a chunk may start or end mid-line: keep each span of
    a page once, and drop a fragment whose text lies inside a longer span of the same page."""
    by_page: dict[tuple[str, Any], set[str]] = {}
    for candidate in ranked:
        by_page.setdefault(_page_key(candidate), set()).add(" ".join(_text(candidate).split()))
    seen: set[tuple[str, Any, str]] = set()
    kept = []
    for candidate in ranked:
        page = _page_key(candidate)
        text = " ".join(_text(candidate).split())
        if (*page, text) in seen or any(text in other and text != other for other in by_page[page]):
            continue
        seen.add((*page, text))
        kept.append(candidate)
    return kept


def _page_key(candidate: _Candidate) -> tuple[str, Any]:
    metadata = candidate.hit.node.metadata
    return (str(metadata.get("file_id") or metadata.get("file")), metadata.get("page"))


def _evidence(candidate: _Candidate) -> Evidence:
    source = to_source(candidate.hit)
    span = _page_span(candidate)
    return Evidence(
        file=source.file,
        page=source.page,
        quote=_text(candidate),
        span=span,
        score=round(candidate.score, 4),
        coverage=round(candidate.coverage, 4),
        similarity=round(candidate.similarity, 4),
        file_id=source.file_id,
        chunk_text=source.text,
        typed=candidate.typed,
        terms=frozenset(candidate.own & {t.stem for t in candidate.subject}),
        location=locate(candidate.hit.node.metadata, span[0]) if span else source.location,
    )
