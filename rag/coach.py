"""The job coach: a CV matched against the job postings' requirements, each found or missing one quoted from the posting and the CV."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from rag.loaders import document_title
from rag.postings import FIELD_LINE, Line
from rag.record_answers import record_stems
from rag.records import Record
from rag.text import content_stems, shortened, stems_of

# Asked for the user when a CV is attached alone in a job coach's chat.
FIT_QUESTION = "Which of these jobs fit my CV best, and what am I missing?"
# "Which job fits my CV best?", "what am I missing for the Stitch Fix job?", "am I qualified?"
FIT = re.compile(
    r"\b(fits?|suits?|match(es|ing)?|missing|lack\w*|qualif\w*|gaps?|best for me|right for me|"
    r"good for me|should i apply|chances?)\b|подходит|не хватает",
    re.I,
)
ME = re.compile(r"\b(my|me|i|i'm|am i)\b|\bмне\b|\bмо[йяё]\b|\bу меня\b", re.I)
# Outside a job coach's profile, a fit question must say it is about jobs or a CV: "Which beers
# match my budget?" is not one.
ABOUT_JOBS = re.compile(
    r"\b(jobs?|positions?|roles?|openings?|postings?|vacanc\w*|cv|resumes?|résumé|career|hired?|"
    r"qualif\w*|apply)\b|ваканс|резюме",
    re.I,
)
# Words of a requirement that ask for nothing in particular: "3+ years of strong experience".
GENERIC = """
experience experienced years year strong strongly understanding understand knowledge knowledgeable
ability able skill skills related field fields good great excellent solid deep familiarity
familiar proficiency proficient using use used work working team teams plus least minimum
required require requires preferred demonstrated proven similar equivalent etc including include
includes such well like new real best level role job will can
"""
# How much each kind of ask weighs in a posting's fit: a duty only counts when a posting states
# no requirements (rag.postings reads duties from "Core job duties include:").
WEIGHTS = {"required": 1.0, "skill": 1.0, "preferred": 0.5, "duty": 1.0}
KIND_WORDS = {
    "required": "requirement",
    "skill": "skill",
    "preferred": "nice-to-have",
    "duty": "duty",
}
CV_QUOTES = 3  # CV lines quoted for one requirement
DETAILED = 3  # postings shown ask by ask, best first (the table ranks them all)
SHOWN_CHECKS = 8  # found, and missing, asks listed per posting


@dataclass(frozen=True)
class Ask:
    """One thing a posting asks for, where it is printed."""

    kind: str  # required, skill, preferred, duty
    line: Line


@dataclass(frozen=True)
class Check:
    """One ask against the CV: the CV lines that show it (none: not found)."""

    ask: Ask
    shown_by: tuple[Line, ...] = ()

    @property
    def found(self) -> bool:
        return bool(self.shown_by)


@dataclass
class Fit:
    """A posting against the CV: each ask checked, and the share of their weight found."""

    posting: Record
    checks: list[Check] = field(default_factory=list)

    @property
    def score(self) -> float:
        total = sum(WEIGHTS[c.ask.kind] for c in self.checks)
        found = sum(WEIGHTS[c.ask.kind] for c in self.checks if c.found)
        return found / total if total else 0.0

    @property
    def found(self) -> list[Check]:
        return [c for c in self.checks if c.found]

    @property
    def missing(self) -> list[Check]:
        return [c for c in self.checks if not c.found]

    @property
    def apply(self) -> list[Line]:
        return [Line(*line) for line in self.posting.fields.get("apply", [])]


def asks_for_fit(question: str, coach: bool = False) -> bool:
    """Whether a question asks how the user's CV fits the postings; in a job coach's profile
    (`coach`) "What am I missing?" does, elsewhere it must name jobs or a CV."""
    asks = bool(FIT.search(question) and ME.search(question))
    return asks and (coach or bool(ABOUT_JOBS.search(question)))


# Words of a fit question that say how to match, not which posting: "Which job fits my CV best?"
COACH_WORDS = """
fit fits suit suits match matches matching missing lack lacking qualify qualified gap gaps best
right good chance chances apply cv resume résumé experience skills background profile me my job
jobs posting postings position positions role roles opening openings vacancy vacancies which
"""


def named_postings(question: str, records: Sequence[Record]) -> list[Record]:
    """The postings a fit question is about: those it names best ("the Stitch Fix job", "the
    Pear Deck developer job": not every developer job), else all."""
    postings = [r for r in records if r.fields.get("kind") == "posting"]
    terms = content_stems(question) - stems_of(COACH_WORDS)
    named = {id(p): len(terms & record_stems(p)) for p in postings}
    most = max(named.values(), default=0)
    return [p for p in postings if named[id(p)] == most] if most else postings


def asks_of(posting: Record) -> list[Ask]:
    """What a posting asks for; its duties only when it states no requirement or skill."""
    asks = [Ask(kind, Line(*line)) for kind, *line in posting.fields.get("asks", [])]
    stated = [ask for ask in asks if ask.kind != "duty"]
    return stated or asks


def key_terms(text: str) -> set[str]:
    """The stems of what a requirement asks for: not its filler words, not its numbers."""
    generic = stems_of(GENERIC)
    return {s for s in content_stems(text, shortest=1) if s not in generic and not s[0].isdigit()}


def match(cv: Record, postings: Sequence[Record]) -> list[Fit]:
    """Each posting checked against the CV, best fit first (ties: more asks found first).

    An ask is found when the CV's words cover its key terms: any of up to three ("Angular /
    React", "Degree or certification in CS"), else at least half. A product's name covers its
    longer written form ("Postgres" and "PostgreSQL", "React" and "ReactJS"). This is word
    matching, shown with its quotes: "not shown" means the CV does not say it in these words.
    """
    lines = [Line(*line) for line in cv.fields.get("lines", [])]
    said = [Words(FIELD_LINE.sub("", line.text)) for line in lines]
    fits = []
    for posting in postings:
        fit = Fit(posting)
        for ask in asks_of(posting):
            asked = Words(ask.line.text)
            terms = key_terms(ask.line.text)
            by_line = [{t for t in terms if words.cover(t, asked)} for words in said]
            covered = set().union(*by_line) if by_line else set()
            need = 1 if len(terms) <= 3 else math.ceil(len(terms) / 2)
            shown: tuple[Line, ...] = ()
            if terms and len(covered) >= need:
                shown = _quotes(covered, lines, by_line)
            fit.checks.append(Check(ask, shown))
        fits.append(fit)
    fits.sort(key=lambda f: (-f.score, -len(f.found)))
    return fits


MIN_NAME_PREFIX = 5  # letters: "Java" is not the start of "JavaScript" for this rule
MIXED_CASE = re.compile(r"\b[A-Za-z]+[a-z][A-Z][A-Za-z]*\b|\b[A-Z][a-z]+[A-Z]+\b")


class Words:
    """A text's stems, and those of its product names written in mixed case ("PostgreSQL")."""

    def __init__(self, text: str) -> None:
        self.stems = content_stems(text, shortest=1)
        self.names = {s for m in MIXED_CASE.finditer(text) for s in content_stems(m.group(0))}

    def cover(self, term: str, asked: Words) -> bool:
        """Whether these words say `term` of `asked`: the same stem, or one of the two a name
        that the other begins ("Postgres" / "PostgreSQL")."""
        if term in self.stems:
            return True
        if len(term) >= MIN_NAME_PREFIX and any(name.startswith(term) for name in self.names):
            return True
        return term in asked.names and any(
            term.startswith(stem) for stem in self.stems if len(stem) >= MIN_NAME_PREFIX
        )


def _quotes(terms: set[str], lines: list[Line], by_line: list[set[str]]) -> tuple[Line, ...]:
    """The CV lines that cover the most of `terms`, fewest first."""
    left, chosen = set(terms), []
    while left and len(chosen) < CV_QUOTES:
        best = max(range(len(lines)), key=lambda i: (len(by_line[i] & left), -len(lines[i].text)))
        if not by_line[best] & left:
            break
        chosen.append(lines[best])
        left -= by_line[best]
    return tuple(chosen)


def posting_title(posting: Record) -> str:
    company = posting.fields.get("company")
    return (
        f"{posting.name} at {company}" if company else posting.name or document_title(posting.file)
    )


@dataclass
class Report:
    """A fit answer's text and what it quotes, in citation-number order."""

    text: str
    quoted: list[tuple[Record, Line]]


NO_CV = (
    "Attach your CV to this chat (PDF, Word, Markdown or JSON Resume) and ask again: I will rank "
    "the job postings by how well it fits them, quoting each requirement and the lines of your "
    "CV that show it."
)


def report(cv: Record, fits: Sequence[Fit]) -> Report:
    """The ranking as a table, then the best fits ask by ask: each found ask quoted with the CV
    lines that show it, each missing one quoted, and next steps taken from the postings only."""
    quoted: list[tuple[Record, Line]] = []
    numbers: dict[tuple[str, int | None, int], int] = {}

    def cite(record: Record, line: Line) -> str:
        key = (record.file, line.page, line.start)
        if key not in numbers:
            quoted.append((record, line))
            numbers[key] = len(quoted)
        return f"“{_short(line.text)}” [{numbers[key]}]"

    whose = f"{cv.name}'s CV" if cv.name else "Your CV"
    lines = [
        f"{whose} ({cv.file}) against {len(fits)} job posting{'s' if len(fits) != 1 else ''}, "
        "best fit first. A requirement counts as shown when your CV says it in its words:",
        "",
        "| # | job | shown by your CV |",
        "| --- | --- | --- |",
    ]
    for rank, fit in enumerate(fits, 1):
        asked = len(fit.checks)
        found = f"{len(fit.found)} of {asked}" if asked else "states no requirements"
        lines.append(f"| {rank} | {posting_title(fit.posting).replace('|', '/')} | {found} |")
    for rank, fit in enumerate(fits[:DETAILED], 1):
        title = cite(fit.posting, fit.posting.line)
        lines += ["", f"**{rank}. {posting_title(fit.posting)}** {title}"]
        if not fit.checks:
            lines.append("The posting lists no requirements, skills or duties to check.")
            continue
        if fit.found:
            lines += ["", "Your CV shows:"]  # a blank line ends a Markdown list
            for check in fit.found[:SHOWN_CHECKS]:
                asked = cite(fit.posting, check.ask.line)  # numbered before the CV's lines
                shown = ", ".join(cite(cv, line) for line in check.shown_by)
                lines.append(f"- {_kind(check)} {asked}: {shown}")
            lines += _more(len(fit.found))
        if fit.missing:
            lines += ["", "Your CV does not show:"]
            for check in fit.missing[:SHOWN_CHECKS]:
                lines.append(f"- {_kind(check)} {cite(fit.posting, check.ask.line)}")
            lines += _more(len(fit.missing))
        steps = []
        if fit.missing:
            count = len(fit.missing)
            steps.append(
                f"{'the one thing' if count == 1 else f'the {count} things'} it asks for that "
                "your CV does not state are what to add to your CV where you have them, or to "
                "learn where you do not"
            )
        steps += [f"to apply, the posting says {cite(fit.posting, line)}" for line in fit.apply]
        if steps:
            lines += ["", "Next steps, from the posting: " + "; ".join(steps) + "."]
    return Report("\n".join(lines), quoted)


def _kind(check: Check) -> str:
    return KIND_WORDS[check.ask.kind]


def _more(count: int) -> list[str]:
    return [f"- … and {count - SHOWN_CHECKS} more"] if count > SHOWN_CHECKS else []


QUOTE_CHARS = 160


def _short(text: str) -> str:
    return shortened(FIELD_LINE.sub("", text), QUOTE_CHARS)
