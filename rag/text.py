"""Words as search, evidence and verification see them: tokens, stems, stop words, other scripts."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

TOKEN = re.compile(r"\d+(?:[.,]\d+)*|\w+", re.UNICODE)
# Where a sentence ends: . ! ? or … (and closing quotes or brackets), space, then a capital or digit.
SENTENCE_END = re.compile(r"(?<=[.!?…])[\"”»)]*\s+(?=[\"“«(]?[A-ZА-ЯЁ0-9])")
# A full stop that ends an abbreviation, not a sentence: "U.S.", "e.g.", "No. 7", "Dr. Smith".
ABBREVIATION = re.compile(
    r"(?:\b[A-Za-z]\.|\b(?:e\.g|i\.e|etc|vs|No|Nr|Mr|Mrs|Ms|Dr|St|Inc|Ltd|Co|approx|incl)\.)$"
)
CYRILLIC = re.compile(r"[\u0400-\u04ff]")


@cache
def _stemmers() -> tuple[Any, Any]:
    import Stemmer  # PyStemmer: Snowball stemmers, no downloads

    return Stemmer.Stemmer("english"), Stemmer.Stemmer("russian")


# Russian letters in Latin, to compare a name printed in Cyrillic with its English spelling.
CYRILLIC_TO_LATIN = str.maketrans(
    {
        **dict(zip("абвгдезийклмнопрстуфыэ", "abvgdeziiklmnoprstufye", strict=True)),
        "ё": "e",
        "ж": "zh",
        "х": "kh",
        "ц": "ts",
        "ч": "ch",
        "ш": "sh",
        "щ": "sch",
        "ъ": "",
        "ь": "",
        "ю": "yu",
        "я": "ya",
    }
)


def transliterate(text: str) -> str:
    """Lower-case Cyrillic written in Latin letters ("рибай" -> "ribai"); other text unchanged."""
    return text.lower().translate(CYRILLIC_TO_LATIN)


def skeleton(word: str) -> str:
    """A word's consonant skeleton in Latin letters ("Рибай" and "ribeye" -> "rb"): the same name
    spelt in two scripts shares it, as a menu's Cyrillic line and an English question do."""
    latin = re.sub(r"[^a-z]", "", transliterate(word))
    for old, new in (("ph", "f"), ("ck", "k"), ("q", "k"), ("x", "ks"), ("w", "v"), ("c", "k")):
        latin = latin.replace(old, new)
    if not latin:
        return ""
    return re.sub(r"(.)\1+", r"\1", latin[0] + re.sub(r"[aeiouyj]", "", latin[1:]))


def cross_script_tokens(text: str, script: str) -> list[str]:
    """Skeleton tokens ("~rb") of the longer words of one script ("cyrillic" in documents, "latin"
    in questions), of the word and of its stem ("крабом" -> "краб" -> "krb", as "crab"), so
    keyword search matches a name across scripts and never within one."""
    english, russian = _stemmers()
    tokens: list[str] = []
    for raw in re.findall(r"[^\W\d_]{4,}", text.lower()):
        cyrillic = bool(CYRILLIC.search(raw))
        if (script == "cyrillic") != cyrillic:
            continue
        stem = (russian if cyrillic else english).stemWord(raw)
        if not cyrillic and stem in stopwords():
            continue
        for shape in {skeleton(raw), skeleton(stem)}:
            if len(shape) >= 2:
                tokens.append(f"~{shape}")
            if len(shape) >= 4:  # "камамбер" and "camembert" share "kmb" if not all of it
                tokens.append(f"~~{shape[:3]}")
    return tokens


def tokenize(text: str) -> list[str]:
    """Lower-cased words, stemmed (English, or Russian for Cyrillic words); numbers kept whole."""
    english, russian = _stemmers()
    tokens = []
    for raw in TOKEN.findall(text.lower()):
        if raw[0].isdigit():
            tokens.append(raw.replace(",", "."))  # 4,50 and 4.50 are the same price
        elif CYRILLIC.search(raw):
            tokens.append(russian.stemWord(raw))
        elif len(raw) > 1 or raw.isalnum():
            tokens.append(english.stemWord(raw))
    return tokens


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


@cache
def stems_of(words: str) -> frozenset[str]:
    """The stems of a list of words."""
    return frozenset(token for word in words.split() for token in tokenize(word))


def stopwords() -> frozenset[str]:
    """The stems of STOPWORDS."""
    return stems_of(STOPWORDS)


def content_stems(text: str, shortest: int = 2) -> set[str]:
    """The stems of a text's words that say something (no stop words, at least `shortest` long)."""
    stop = stopwords()
    return {stem for stem in tokenize(text) if stem not in stop and len(stem) >= shortest}


def shortened(text: str, limit: int) -> str:
    """`text` as shown to a reader: cut at the last word that fits in `limit` characters, with
    " …" to say so (a citation keeps the whole span)."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"
