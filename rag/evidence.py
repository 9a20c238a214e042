"""Evidence: the lines and sentences of retrieved chunks that answer a question, and whether they can."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from llama_index.core.schema import NodeWithScore

from rag.loaders import document_title, tidy
from rag.retrieve import skeleton, to_source, tokenize

# Units of a chunk: a logical line (menus, tables, lists, key: value) or a sentence of prose.
# A logical line longer than this is prose: it is cut into sentences.
PROSE_LINE = 160
EMBED_CHARS = 240
SENTENCE_END = re.compile(r"(?<=[.!?…])[\"”»)]*\s+(?=[\"“«(]?[A-ZА-ЯЁ0-9])")
# A line that plainly goes on in the next one (wrapped prose, an item name over two lines).
CONTINUES = re.compile(r"[,(\-–—/&+]$|\b(?:and|or|of|the|a|an|to|with|in|for|и|с|в|на)$", re.I)
# "title: Junior Developer", "work[0].name: Pied Piper": one fact a line, whatever its case.
KEY_VALUE = re.compile(r"^[\w\[\]. -]{1,40}: ")
ENDS = re.compile(r"[.!?:;)»\"”\]]$|\d\S{0,3}$")

# Words that carry no subject of their own in a question: they never count as terms to cover.
STOPWORDS = """
a about above after again all also am an and any are as at be been before being below between both
but by can could did do does doing done down during each either else ever every few for from further
get gets give given go had has have having he her here hers him his how i if in into is it its
itself just kind let like made make many may me might more most much must my near need no nor not
now of off on once one only or other our out over own per please same say says said shall she
should show so some such tell than that the their them then there these they this those through to
too under until up upon us very was way we were what whatever when where whether which while who
whom whose why will with within without would yes yet you your yours
document documents file files text mention mentioned mentions according list listed provide
anything something someone somebody thing things there
что какой какая какое какие каков кто где когда сколько как в во на с со и или у за по из для о об
это этот эта эти есть ли а но не же бы мне меня мой моя нам вы вас ваш там тут
"""
# Words that ask for a kind of answer rather than name a subject (checked by ANSWER_TYPES).
ATTRIBUTE_WORDS = """
cost costs price prices priced pay paid expensive cheap cheapest charge much many number amount
stoit стоит стоят стоимость цена цены сколько
"""
# Words naming a kind of document: in a question they never single out one file by its name.
GENERIC_TITLE_WORDS = """
menu menus job jobs sample document file report essay resume cv pdf page posting postings list
restaurant bar data model notes report text main
"""


@cache
def _stems(words: str) -> frozenset[str]:
    return frozenset(token for word in words.split() for token in tokenize(word))


def stopwords() -> frozenset[str]:
    return _stems(STOPWORDS)


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
            r"\d",
        ),
        (r"\bhow many\b|\bnumber of\b|\bhow old\b|\bwhat year\b|\bwhich year\b", "a number", r"\d"),
    )
)
# Kinds a question leans to without requiring them: passages of the kind rank higher.
PREFERRED_TYPES: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (re.compile(asks, re.I), re.compile(needs, re.I))
    for asks, needs in (
        (r"\b(when|what date|which date|deadline|due|how long)\b|когда", r"\d"),
        (r"\b(how strong|strength|alcohol|abv|percent)\b|крепост", r"\d"),
        (r"\b(weight|size|how big|how large|portion)\b|вес|объ[её]м", r"\d"),
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
    similarity: float  # cosine of the question and the span (the embedder)
    file_id: str = ""
    chunk_text: str = field(default="", repr=False, compare=False)
    chunk_score: float = field(default=0.0, compare=False)

    @property
    def location(self) -> tuple[str, int | None]:
        return (self.file, self.page)

    def citation(self) -> str:
        return f"{self.file}, page {self.page}" if self.page is not None else self.file

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
    terms: list[str] = field(default_factory=list)
    named_files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Calibration:
    """Thresholds of the answerability decision (see bench/answers.py for how they were chosen)."""

    min_confidence: float = 0.42
    max_units: int = 6  # evidence spans handed to the model
    max_per_chunk: int = 3
    embed_limit: int = 32  # spans embedded per question (the most promising by keywords and rank)


DEFAULT_CALIBRATION = Calibration()


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
        if end - start <= PROSE_LINE:
            spans.append(_strip(text, start, end))
            continue
        cursor = start
        for match in SENTENCE_END.finditer(text, start, end):
            spans.append(_strip(text, cursor, match.start()))
            cursor = match.end()
        spans.append(_strip(text, cursor, end))
    return [(s, e) for s, e in spans if e - s >= 2 and re.search(r"\w", text[s:e])]


def _joins(previous: str, line: str, text: str, prev_end: int, start: int) -> bool:
    """Whether `line` continues the logical line `previous` (only across one line break)."""
    if "\n\n" in text[prev_end:start] or not line[0].isalnum() or KEY_VALUE.match(line):
        return False
    if line[0].islower() or CONTINUES.search(previous):
        return True
    # Wrapped prose: a line of several words that does not end a sentence or a priced item.
    return len(previous.split()) >= 4 and not ENDS.search(previous)


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# --- matching terms ---------------------------------------------------------------------------------


def _is_cyrillic(word: str) -> bool:
    return bool(re.search(r"[\u0400-\u04ff]", word))


@dataclass(frozen=True)
class Term:
    """A word of the question that names what it is about: its stem, raw form and rarity."""

    stem: str
    raw: str
    weight: float


def question_terms(question: str, idf: Any) -> list[Term]:
    """The subject words of a question (no function or attribute words), weighted by IDF."""
    stop = stopwords() | _stems(ATTRIBUTE_WORDS)
    terms: dict[str, Term] = {}
    for raw in re.findall(r"\d+(?:[.,]\d+)*|\w+", question):
        for stem in tokenize(raw):
            if stem in stop or stem in terms or (len(stem) < 2 and not stem.isdigit()):
                continue
            terms[stem] = Term(stem, raw.casefold(), idf(stem))
    return list(terms.values())


class TermMatcher:
    """Which question terms a span holds: the same stem, or the same name in another script."""

    def __init__(self, terms: Sequence[Term]) -> None:
        self.terms = list(terms)
        self.total = sum(term.weight for term in terms) or 1.0
        self._skeletons = {
            term.stem: skeleton(term.raw) for term in terms if not term.raw.isdigit()
        }

    def matched(self, text: str) -> set[str]:
        stems = set(tokenize(text))
        found = {term.stem for term in self.terms if term.stem in stems}
        missing = [term for term in self.terms if term.stem not in found and not term.raw.isdigit()]
        if missing:
            words = re.findall(r"\w+", text)
            for term in missing:
                wanted = self._skeletons.get(term.stem, "")
                if len(wanted) < 2 or len(term.raw) < 4:
                    continue
                for word in words:
                    # Only across scripts: within one script, stems already decide.
                    if _is_cyrillic(word) != _is_cyrillic(term.raw) and skeleton(word) == wanted:
                        found.add(term.stem)
                        break
        return found

    def coverage(self, found: set[str]) -> float:
        return sum(term.weight for term in self.terms if term.stem in found) / self.total


# --- selection ---------------------------------------------------------------------------------------


@dataclass
class _Candidate:
    hit_rank: int
    hit: NodeWithScore
    start: int
    end: int
    own: set[str]
    context: set[str]
    coverage: float = 0.0
    similarity: float = 0.0
    typed: bool = True
    preferred: bool = True
    score: float = 0.0


def answer_type(question: str) -> tuple[str, re.Pattern[str]] | None:
    """What kind of fact the question asks for, when it asks for one we can check."""
    for asks, name, needs in ANSWER_TYPES:
        if asks.search(question):
            return name, needs
    return None


def named_files(terms: Sequence[Term], files: Sequence[str]) -> list[str]:
    """Files a question names by a distinctive word of their title ("the Bosfor menu")."""
    generic = _stems(GENERIC_TITLE_WORDS)
    titles = {file: set(tokenize(document_title(file))) - generic for file in files}
    named: set[str] = set()
    for term in terms:
        owners = [file for file, words in titles.items() if term.stem in words]
        if owners and len(owners) <= 2 and len(owners) < len(files):
            named.update(owners)
    return sorted(named)


def select(
    question: str,
    hits: Sequence[NodeWithScore],
    idf: Any,
    embed: Any,
    files: Sequence[str] = (),
    calibration: Calibration = DEFAULT_CALIBRATION,
) -> Findings:
    """Pick the spans of `hits` that answer `question` and decide whether they can.

    `idf(stem)` is the rarity of a word in the collection, `embed(texts)` returns normalised
    vectors (the question first), `files` are the names of the collection's files (for questions
    that name one).
    """
    question = tidy(question)
    terms = question_terms(question, idf)
    matcher = TermMatcher(terms)
    named = named_files(terms, files)
    wanted = answer_type(question)
    preferred = [needs for asks, needs in PREFERRED_TYPES if asks.search(question)]
    candidates: list[_Candidate] = []
    for rank, hit in enumerate(hits):
        text = hit.node.get_content()
        spans = units(text)
        title = document_title(str(hit.node.metadata.get("file", "")))
        title_terms = matcher.matched(title)
        owns = [matcher.matched(text[s:e]) for s, e in spans]
        for position, (start, end) in enumerate(spans):
            neighbours = set()
            for other in (position - 1, position + 1):
                if 0 <= other < len(spans):
                    neighbours |= owns[other]
            candidates.append(
                _Candidate(rank, hit, start, end, owns[position], title_terms | neighbours)
            )
    if not candidates:
        return Findings(
            question, [], [], False, 0.0, "nothing relevant is indexed", _names(terms), named
        )

    for candidate in candidates:
        own = matcher.coverage(candidate.own)
        # Context (the file's title, the lines around) helps a span, but less than its own words.
        candidate.coverage = own + 0.6 * (matcher.coverage(candidate.own | candidate.context) - own)
        if wanted is not None:
            candidate.typed = bool(wanted[1].search(_text(candidate)))
        candidate.preferred = all(needs.search(_text(candidate)) for needs in preferred)
    _embed_best(question, candidates, embed, calibration.embed_limit)
    for candidate in candidates:
        prior = 1.0 / (1.0 + candidate.hit_rank)
        candidate.score = 0.55 * candidate.coverage + 0.35 * candidate.similarity + 0.10 * prior
        if not candidate.typed:
            candidate.score *= 0.6
        if not candidate.preferred:
            candidate.score *= 0.85
        if named and str(candidate.hit.node.metadata.get("file", "")) not in named:
            candidate.score *= 0.5
    ranked = _distinct(sorted(candidates, key=lambda c: c.score, reverse=True))
    closest = [_evidence(c) for c in ranked[:3]]
    best = ranked[0]
    eligible = [
        c
        for c in ranked
        if c.typed and (not named or str(c.hit.node.metadata.get("file", "")) in named)
    ]
    confidence = _confidence(eligible[0]) if eligible else 0.0
    reason = ""
    if wanted is not None and not any(c.typed for c in ranked[: 3 * calibration.max_units]):
        reason = f"no passage found gives {wanted[0]}"
    elif named and not eligible:
        reason = f"nothing relevant was found in {', '.join(named)}"
    elif confidence < calibration.min_confidence:
        reason = "no passage found answers it"
    answerable = not reason
    chosen: list[_Candidate] = []
    if answerable:
        per_chunk: dict[int, int] = {}
        floor = eligible[0].score * 0.55
        for candidate in eligible:
            if len(chosen) == calibration.max_units or candidate.score < floor:
                break
            if per_chunk.get(candidate.hit_rank, 0) == calibration.max_per_chunk:
                continue
            per_chunk[candidate.hit_rank] = per_chunk.get(candidate.hit_rank, 0) + 1
            chosen.append(candidate)
    del best
    return Findings(
        question=question,
        evidence=[_evidence(c) for c in chosen],
        closest=closest,
        answerable=answerable,
        confidence=round(confidence, 4),
        reason=reason,
        terms=_names(terms),
        named_files=named,
    )


def _names(terms: Sequence[Term]) -> list[str]:
    return [term.raw for term in terms]


def _confidence(candidate: _Candidate) -> float:
    """How surely a span answers: its term coverage, or a close paraphrase (the embedder)."""
    return max(candidate.coverage, 0.75 * candidate.coverage + 0.5 * candidate.similarity - 0.1)


def _text(candidate: _Candidate) -> str:
    return candidate.hit.node.get_content()[candidate.start : candidate.end]


def _embed_best(question: str, candidates: list[_Candidate], embed: Any, limit: int) -> None:
    """Cosine of the question and the most promising spans (by keywords, then chunk rank)."""
    order = sorted(candidates, key=lambda c: (-c.coverage, c.hit_rank))[:limit]
    if not order:
        return
    # The start of a long sentence says what it is about; embedding cost grows with length.
    vectors = embed([question, *(_text(c)[:EMBED_CHARS] for c in order)])
    query = vectors[0]
    for candidate, vector in zip(order, vectors[1:], strict=True):
        candidate.similarity = max(
            0.0, float(sum(a * b for a, b in zip(query, vector, strict=True)))
        )


def _distinct(ranked: list[_Candidate]) -> list[_Candidate]:
    """Overlapping chunks repeat lines, and a chunk may start or end mid-line: keep each span of
    a page once, and drop a fragment whose text lies inside a longer span of the same page."""
    by_page: dict[tuple[str, Any], list[str]] = {}
    for candidate in ranked:
        by_page.setdefault(_page_key(candidate), []).append(" ".join(_text(candidate).split()))
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
    metadata = candidate.hit.node.metadata
    source = to_source(candidate.hit)
    start = metadata.get("start_char")
    span = None
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        span = (start + candidate.start, start + candidate.end)
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
        chunk_score=source.score,
    )
