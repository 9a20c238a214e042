"""What a job posting asks for (requirements, skills, duties, how to apply) and what a CV says, read line by line with each line's span."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from rag.pages import Page
from rag.text import SENTENCE_END

# A posting's fields, by the keys its front matter or JSON gives them ("location.city: Berlin").
POSTING_KEYS = {
    "title": "name",
    "company": "company",
    "location": "place",  # not "location": a record's location is where it is cited
    "location.city": "place",
    "type": "type",
    "remote": "work_mode",
    "salary": "salary",
}
POSTING_HEAD = 40  # lines: a posting's keys come first
MIN_ASKS = 2  # requirements or skills a posting without keys must list
MAX_TITLE_CHARS = 120
# Words of postings, not of other documents that list requirements (a spec, a CV has some).
JOB_WORDS = re.compile(
    r"\b(apply|applicants?|candidates?|hiring|we(?: are|'re) looking for|join (?:our|the) team|"
    r"job description|full[- ]time|part[- ]time|salary|benefits|equal opportunity|"
    r"years of (?:professional )?experience)\b",
    re.I,
)
WORK_MODES = (
    (re.compile(r"hybrid|гибрид", re.I), "hybrid"),
    (re.compile(r"remote|удал[её]н", re.I), "remote"),
    (re.compile(r"on[- ]?site|in[- ]office|office", re.I), "on-site"),
)

# What a list of a posting asks, by the line that heads it ("## Prerequisites", "Bonus Points",
# "Technologies we use to solve problems include:") or the JSON key that holds it
# ("qualifications[0]"). Checked in order: "Preferred qualifications" are preferred.
ASKS = (
    (
        re.compile(r"bonus|nice[- ]to[- ]have|preferred|desired|desirable|a plus|ideally", re.I),
        "preferred",
    ),
    (
        re.compile(
            r"require|qualif|prerequisit|must[- ]have|you have|who you are|you bring|we expect|"
            r"looking for|excited about|what you.ll need|background|требован",
            re.I,
        ),
        "required",
    ),
    (re.compile(r"skills?|technolog|tools|tech stack|keywords|навык", re.I), "skill"),
    (re.compile(r"dut(y|ies)|responsibilit|you will|you.ll do|обязанност", re.I), "duty"),
)
BULLET = re.compile(r"^\s*(?:[-*•·]|\d{1,2}[.)])\s+")
JSON_KEY = re.compile(r"^([A-Za-z_][\w.]*?)(?:\[\d+\])?(?:\.(\w+)(?:\[\d+\])?)?: ")
HEADING = re.compile(r"^#{1,6}\s+")
FIELD_LINE = re.compile(r"^[\w.\[\]]+: ")  # "skills[0].keywords[1]: CSS": a key, then its value
APPLY = re.compile(r"\bapply\b|\bapplication\b|send (?:us )?your|write to|откликн", re.I)
MAX_ASK_CHARS = 600  # a longer "bullet" is prose, not one requirement


@dataclass(frozen=True)
class Line:
    """One quotable line of a posting or CV: where it is printed and what it says."""

    page: int | None
    start: int
    end: int
    text: str

    def to_json(self) -> list[Any]:
        return [self.page, self.start, self.end, self.text]


def posting_fields(pages: list[Page]) -> tuple[Page, dict[str, Any], int, int] | None:
    """A job posting's page, fields and the span of its title line, or None for any other
    document.

    A posting either gives its title and company as keys in its first lines (a Markdown
    posting's front matter, a JSON job description), or reads as one: at least two things it
    asks for under headings that say so, and words only a posting uses ("apply", "candidates",
    "full-time"; a CV has them too, so a CV is no posting), its title then being its first line.
    Only what the keys and lists say is recorded: `asks` are its requirements, skills and
    duties (from every page), each with its span, and `apply` its lines on how to apply.
    """
    if not pages:
        return None
    page = pages[0]
    found, first = _keys(page)
    asks = [ask for each in pages for ask in _asks(each)]
    if first is None or "company" not in found:
        stated = [kind for kind, _ in asks if kind != "duty"]
        text = "\n".join(each.text for each in pages)
        signals = {match.group(0).casefold() for match in JOB_WORDS.finditer(text)}
        if first is not None or len(stated) < MIN_ASKS or len(signals) < 2 or is_cv(pages):
            return None
        first = _title_line(page)
        if first is None:
            return None
        found["name"] = page.text[first[0] : first[1]]
    fields: dict[str, Any] = {"kind": "posting", **found}
    mode = fields.pop("work_mode", None) or fields.get("place", "")
    label = next((m for pattern, m in WORK_MODES if pattern.search(mode)), None)
    if label:
        fields["work_mode"] = label
    if asks:
        fields["asks"] = [[kind, *line.to_json()] for kind, line in asks]
    apply = [line.to_json() for each in pages for line in _apply_lines(each)]
    if apply:
        fields["apply"] = apply
    return page, fields, first[0], first[1]


def _keys(page: Page) -> tuple[dict[str, str], tuple[int, int] | None]:
    """The posting keys of a page's first lines, and the span of its title key's line."""
    found: dict[str, str] = {}
    first: tuple[int, int] | None = None
    for offset, line in itertools.islice(page.lines(), POSTING_HEAD):
        key, sep, value = line.partition(": ")
        name = POSTING_KEYS.get(key.strip().casefold()) if sep else None
        if name and value.strip() and name not in found:
            found[name] = value.strip()
            if name == "name":
                first = (offset, offset + len(line))
    return found, first


def _title_line(page: Page) -> tuple[int, int] | None:
    """The span of a page's first line, without a Markdown heading's marks: a posting's title."""
    for offset, line in page.lines():
        stripped = HEADING.sub("", line.strip()).strip()
        if stripped:
            start = offset + line.index(stripped)
            return (start, start + len(stripped)) if len(stripped) <= MAX_TITLE_CHARS else None
    return None


def _asks(page: Page) -> Iterator[tuple[str, Line]]:
    """Each bullet under a heading that says it asks for something, and each item of a JSON list
    that does ("qualifications[1]: 3+ years of experience", "skills[0].keywords[2]: CSS")."""
    heading: str | None = None
    for offset, line in page.lines():
        stripped = line.strip()
        if not stripped:
            continue
        key = JSON_KEY.match(stripped)
        if key and "[" in stripped.split(":", 1)[0]:
            kind = _ask_kind(key.group(1)) if key.group(2) in (None, "keywords") else None
            if kind:
                value_at = line.index(": ") + 2
                yield kind, Line(page.page, offset + value_at, offset + len(line), line[value_at:])
            continue
        bullet = BULLET.match(line)
        if bullet and heading:
            kind = _ask_kind(heading)
            text = line[bullet.end() :].strip()
            if kind and text and len(text) <= MAX_ASK_CHARS:
                start = offset + bullet.end()
                yield kind, Line(page.page, start, start + len(text), text)
        elif not bullet:
            heading = stripped


def _ask_kind(heading: str) -> str | None:
    return next((kind for pattern, kind in ASKS if pattern.search(heading)), None)


def _apply_lines(page: Page) -> Iterator[Line]:
    """The lines that say how to apply: a "To Apply" section's, or a line saying so."""
    under_apply = False
    for offset, line in page.lines():
        stripped = line.strip()
        if not stripped or FIELD_LINE.match(stripped):
            continue  # "company_url: https://...": a key, not a word on how to apply
        if HEADING.match(stripped):
            under_apply = bool(APPLY.search(stripped))
            continue
        if under_apply or (APPLY.search(stripped) and re.search(r"@|https?://", stripped)):
            start = offset + line.index(stripped)
            yield Line(page.page, start, start + len(stripped), stripped)


# --- CVs ------------------------------------------------------------------------------------------

# The sections a CV has: two of them as headings, or JSON Resume's keys, make a document a CV.
CV_SECTIONS = re.compile(
    r"^(?:work |professional )?(?:experience|employment(?: history)?|education|skills|"
    r"projects|certifications?|languages|summary|profile|publications|awards|volunteering|"
    r"опыт работы|образование|навыки)$",
    re.I,
)
JSON_RESUME = re.compile(
    r"^(?:basics\.name|work\[\d+\]\.|education\[\d+\]\.|skills\[\d+\]\.)", re.M
)
POSTING_SECTIONS = re.compile(
    r"benefits|what we offer|about (?:the )?(?:role|job|us|company)", re.I
)
MAX_SECTION_CHARS = 40  # a longer line is no section heading
MAX_CV_LINE = 240  # characters: a longer line is quoted sentence by sentence


def is_cv(pages: Iterable[Page]) -> bool:
    """Whether a document is a CV: JSON Resume's keys, or at least two CV section headings."""
    text = "\n".join(page.text for page in pages)
    if len({m.group(0).split(".")[0].split("[")[0] for m in JSON_RESUME.finditer(text)}) >= 2:
        return True
    headings = {
        HEADING.sub("", line).strip(" :").casefold()
        for line in text.split("\n")
        if 0 < len(line) <= MAX_SECTION_CHARS
    }
    cv = sum(bool(CV_SECTIONS.match(heading)) for heading in headings)
    # A posting has "Experience" and "Skills" headings too, beside its "Requirements".
    posting = sum(
        bool(_ask_kind(heading) or POSTING_SECTIONS.search(heading)) for heading in headings
    )
    return cv >= 2 and cv > posting


def cv_lines(pages: Iterable[Page]) -> list[Line]:
    """A CV's quotable lines, long ones cut into sentences."""
    found = []
    for page in pages:
        for offset, line in page.lines():
            stripped = line.strip()
            if not stripped:
                continue
            start = offset + line.index(stripped)
            if len(stripped) <= MAX_CV_LINE:
                found.append(Line(page.page, start, start + len(stripped), stripped))
                continue
            cuts = [0, *(m.end() for m in SENTENCE_END.finditer(stripped)), len(stripped)]
            for begin, end in itertools.pairwise(cuts):
                sentence = stripped[begin:end].rstrip()
                found.append(
                    Line(page.page, start + begin, start + begin + len(sentence), sentence)
                )
    return found


def cv_name(pages: list[Page]) -> str | None:
    """The CV holder's name, when the CV gives it as a key ("basics.name: Richard Hendriks")."""
    for page in pages:
        match = re.search(r"^(?:basics\.)?name: (.+)$", page.text, re.M)
        if match:
            return match.group(1).strip()
    return None
