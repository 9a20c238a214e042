"""Verification: the checkable facts of an answer (numbers, names, e-mails, URLs) against its evidence."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from rag.pages import tidy
from rag.text import ABBREVIATION, content_stems, skeleton, tokenize

# A number as printed: "3.50", "3,50", "33 000", "1,260", "2020"; groups of three after a space,
# comma or dot may be thousands.
NUMBER = re.compile(r"(?<![\w.,])\d+(?:[  ,.]\d+)*")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(r"(?:https?://|www\.)[^\s<>()\[\]\"'“”«»]+", re.I)
CITATION = re.compile(r"\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\]")
# A citation in another style a model may use: "[guide.pdf, 2]", "[menu.pdf, page 1]".
FILE_CITATION = re.compile(r"\[[^\[\]\n]{0,160}?\.[A-Za-z]{2,5}\b[^\[\]\n]{0,40}\]")
LIST_MARKER = re.compile(r"(?m)^\s*(?:\d{1,2}[.)]|[-*•])\s+")
# A sentence whose content words are mostly absent from the evidence is the model's own.
GROUNDED_SHARE = 0.6
WORD = re.compile(r"[^\W\d_][\w'’-]*")
# Capitalised words that are not names wherever they stand.
NOT_NAMES = frozenset(
    [
        "i",
        "i'm",
        "i've",
        "i'd",
        "i'll",
        "ok",
        "yes",
        "no",
        "the",
        "a",
        "an",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "there",
        "they",
        "he",
        "she",
        "we",
        "you",
        "however",
        "also",
        "and",
        "but",
        "or",
        "so",
        "if",
        "in",
        "on",
        "at",
        "for",
        "to",
        "of",
        "by",
        "with",
        "from",
        "as",
        "note",
        "sorry",
        "according",
        "based",
        "please",
        "here",
        "both",
        "each",
        "all",
        "some",
        "many",
        "most",
    ]
)


@dataclass(frozen=True)
class Fact:
    """One checkable claim in a text: a number, an e-mail address, a URL or a proper name."""

    kind: str  # number | email | url | name
    text: str


def readings(number: str) -> set[Decimal]:
    """The values a printed number can mean: "1,260" is 1260 or 1.26; "33 000" is 33000."""
    values: set[Decimal] = set()
    groups = re.split(r"[  ,.]", number)
    separators = re.findall(r"[  ,.]", number)
    candidates = {number.replace(" ", "").replace(" ", "")}
    if separators:
        last = separators[-1]
        head = "".join(groups[:-1])
        if last in ",.":
            candidates.add(f"{head}.{groups[-1]}")  # a decimal point or comma
        if all(len(group) == 3 for group in groups[1:]):
            candidates.add("".join(groups))  # thousands separators
    for candidate in candidates:
        cleaned = candidate.replace(",", "").replace(" ", "").replace(" ", "")
        if cleaned.count(".") > 1:
            continue
        try:
            values.add(Decimal(cleaned).normalize())
        except InvalidOperation:
            continue
    return values


def evidence_numbers(text: str) -> set[Decimal]:
    """Every value any number in the evidence may stand for. A run of groups separated by spaces
    ("Balvenie 30 7 900": an age, then a price in thousands) is read in all its sub-runs."""
    values: set[Decimal] = set()
    for match in NUMBER.finditer(text):
        groups = re.split(r"[  ]", match.group())
        for start in range(len(groups)):
            for end in range(start + 1, len(groups) + 1):
                values |= readings(" ".join(groups[start:end]))
    return values


def number_supported(number: str, values: set[Decimal]) -> bool:
    """A number of an answer is in the evidence as a whole, or group by group ("in 2018 2 ...")."""
    if readings(number) & values:
        return True
    groups = re.split(r"[  ]", number)
    return len(groups) > 1 and all(readings(group) & values for group in groups)


def facts(text: str) -> list[Fact]:
    """The checkable facts of a text, in order, without citation markers and list numbers."""
    text = LIST_MARKER.sub(" ", FILE_CITATION.sub(" ", CITATION.sub(" ", tidy(text))))
    found = [Fact("url", match.group().rstrip(".,;:!?")) for match in URL.finditer(text)]
    text = URL.sub(" ", text)
    found += [Fact("email", match.group()) for match in EMAIL.finditer(text)]
    text = EMAIL.sub(" ", text)
    found += [Fact("number", m.group().strip(" ,.")) for m in NUMBER.finditer(text)]
    found += [Fact("name", name) for name in names(text)]
    return found


def names(text: str) -> list[str]:
    """Capitalised words that do not start a sentence, and words in capitals or CamelCase
    ("FAA", "RabbitMQ", "iOS") anywhere: the proper names a model could invent."""
    names = []
    for sentence in re.split(r"(?<=[.!?:])\s+|\n+|[*_#>`]+", text):
        words = list(WORD.finditer(sentence))
        for position, match in enumerate(words):
            word = re.sub(r"['’]s$", "", match.group()).strip("'’-")  # "Hendriks's"
            if len(word) < 2 or word.casefold() in NOT_NAMES:
                continue
            shaped = word.isupper() or any(ch.isupper() for ch in word[1:])
            if not word[0].isupper() and not shaped:  # "iOS" and "eBay" are names too
                continue
            if position == 0 and not shaped:
                continue  # any word starts a sentence with a capital
            names.append(word)
    return names


class Verifier:
    """Checks facts against the evidence an answer was given (and the question it answers)."""

    def __init__(self, evidence: Iterable[str], question: str = "") -> None:
        self.text = tidy("\n".join([*evidence, question])).casefold()
        self.numbers = evidence_numbers(self.text)
        self.stems = set(tokenize(self.text))
        self.words = {word.casefold() for word in WORD.findall(self.text)}
        self.skeletons = {skeleton(word) for word in self.words if len(word) >= 4}
        self.asked = set(tokenize(tidy(question).casefold()))

    def supported(self, fact: Fact) -> bool:
        if fact.kind == "number":
            return number_supported(fact.text, self.numbers)
        if fact.kind == "email":
            return fact.text.casefold() in self.text
        if fact.kind == "url":
            url = fact.text.casefold().rstrip("/")
            return url in self.text or re.sub(r"^https?://", "", url) in self.text
        word = fact.text.casefold()
        if word in self.words or any(stem in self.stems for stem in tokenize(word)):
            return True
        # The name as a menu prints it in another script ("Ribeye" for "Рибай").
        return len(word) >= 4 and skeleton(word) in self.skeletons

    def unsupported(self, text: str) -> list[Fact]:
        return [fact for fact in facts(text) if not self.supported(fact)]

    def grounded(self, text: str) -> bool:
        """Whether the sentence adds to the question, and most words it adds come from the
        evidence: a sentence of the model's own knowledge, the question's words with an invented
        claim around them ("X ... is available for purchase on their website"), or the question
        answered by "yes" or "no" alone is not shown as an answer."""
        if "```" in text:
            return False  # code the model wrote is not a passage of the documents
        content = content_stems(CITATION.sub(" ", text), shortest=3) - self.asked
        if not content:
            # Only the question's words again: a bare "yes" or "no, it does not include X" says
            # something about the documents that nothing in the evidence shows.
            return False
        if len(content) < 2:
            return True
        held = sum(
            stem in self.stems or (len(stem) >= 4 and skeleton(stem) in self.skeletons)
            for stem in content
        )
        return held / len(content) >= GROUNDED_SHARE


# --- sentences of a stream ----------------------------------------------------------------------------

# A sentence ends at . ! ? followed by white space and more text (not a citation marker that belongs
# to it), or at a line break.
SENTENCE_BREAK = re.compile(
    r"(?<=[.!?…])[\"”»)]*(?:[ \t]*\[\d+(?:\s*[,;]\s*\d+)*\])?[ \t]+(?=[^\s\[])|\n+"
)


def sentences(tokens: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """Complete sentences of a token stream as they form: (sentence with its trailing space,
    complete). The last piece is yielded with complete=False when the stream stopped mid-sentence."""
    buffer = ""
    for token in tokens:
        buffer += token
        start = 0
        while True:
            match = SENTENCE_BREAK.search(buffer, start)
            if match is None:
                break
            if ABBREVIATION.search(buffer, 0, match.start()) and "\n" not in match.group():
                start = match.end()  # "U.S. registry": the sentence goes on
                continue
            yield buffer[: match.end()], True
            buffer = buffer[match.end() :]
            start = 0
    if buffer.strip():
        yield buffer, bool(re.search(r"[.!?…][\"”»)\]]*\s*$", buffer))
