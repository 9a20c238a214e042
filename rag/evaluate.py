"""Evaluation: retrieval (hit rate and MRR at k) and whole answers (accuracy, refusals, verified facts)."""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import ConfigError, RagError

# A chunk matches a reference when they share this many consecutive words (fewer if the reference
# itself is shorter): long enough that a shared run is not a coincidence of common phrases.
RUN_WORDS = 12


# --- the question set --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QAItem:
    """One question and the reference text its answer is found in (`evidence`, else `context`)."""

    question: str
    reference: str
    answer: str | None = None
    id: str | None = None
    line: int | None = None  # 1-based line in the question file, for reports


def load_questions(path: str | Path) -> list[QAItem]:
    """Read a question set: one JSON object a line, `{"question", "answer"?, "evidence" | "context"}`.

    Blank lines are skipped. Any other line that is not such an object raises ConfigError naming the
    file and the line; a file without any question raises ConfigError too.
    """
    return [_qa_item(record, number, bad) for number, record, bad in records(Path(path))]


Complaint = Callable[[str], ConfigError]


def records(path: Path) -> list[tuple[int, dict[str, Any], Complaint]]:
    """The JSON objects of a question file with their line numbers, each with a way to say what
    is wrong with it ("FILE, line N: reason"); each has a non-empty "question"."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such question file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; a question file is JSON lines") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue

        def bad(reason: str, number: int = number) -> ConfigError:
            return ConfigError(f"{path}, line {number}: {reason}")

        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise bad(f"not valid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict):
            raise bad(f"expected a JSON object, got {type(record).__name__}")
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise bad('"question" is missing or not a non-empty string')
        found.append((number, record, bad))
    if not found:
        raise ConfigError(f"{path}: no questions (expected one JSON object a line)")
    return found


def _qa_item(record: dict[str, Any], number: int, bad: Complaint) -> QAItem:
    key = "evidence" if record.get("evidence") is not None else "context"
    reference = record.get(key)
    if reference is None:
        raise bad('needs "evidence" (a short verbatim span) or "context" (a passage)')
    if not isinstance(reference, str) or not reference.split():
        raise bad(f'"{key}" must be a non-empty string')
    answer = record.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise bad('"answer" must be a string when given')
    item_id = record.get("id")
    return QAItem(
        question=record["question"],
        reference=reference,
        answer=answer,
        id=None if item_id is None else str(item_id),
        line=number,
    )


# --- the matching rule -------------------------------------------------------------------------------


def fold(text: str) -> list[str]:
    """Words after folding case and white space: case-folded, split on any run of white space.

    `str.casefold` is lowercasing plus a few full foldings ("ß" -> "ss", the ligature "ﬀ" -> "ff").
    Nothing else is normalised: punctuation stays part of its word ("menu." differs from "menu"),
    so a reference should be copied verbatim, cut at white space, from the extracted text.
    """
    return text.casefold().split()


class Reference:
    """A reference compiled once: the set of its runs of `min(12, words)` consecutive words."""

    def __init__(self, text: str, run: int = RUN_WORDS) -> None:
        words = fold(text)
        if not words:
            raise ValueError("a reference needs at least one word")
        self.size = min(run, len(words))
        self.runs = {tuple(words[i : i + self.size]) for i in range(len(words) - self.size + 1)}

    def found_in(self, chunk: str) -> bool:
        """Whether `chunk` shares a run of `size` consecutive words with the reference."""
        words = fold(chunk)
        size, runs = self.size, self.runs
        return any(tuple(words[i : i + size]) in runs for i in range(len(words) - size + 1))


def matches(chunk: str, reference: str) -> bool:
    """The rule: after folding, `chunk` shares min(12, words in reference) consecutive words with it."""
    return Reference(reference).found_in(chunk)


# --- evaluation --------------------------------------------------------------------------------------

# retrieve(question, k) -> the top-k chunks in rank order: plain strings, or objects with `.text`
# and optionally `.file` and `.page` (such as rag.retrieve.Source), recorded in the report.
Retrieve = Callable[[str, int], Sequence[Any]]


def chunk_text(chunk: Any) -> str:
    if isinstance(chunk, str):
        return chunk
    text = getattr(chunk, "text", None)
    if not isinstance(text, str):
        raise TypeError(f"retrieve() must return strings or objects with .text, got {chunk!r}")
    return text


@dataclass(frozen=True)
class QuestionResult:
    """How one question went: `rank` of the first matching chunk (1-based), None if none in top k."""

    question: str
    rank: int | None
    retrieved: list[tuple[str | None, int | None]]  # (file, page) of each chunk, in rank order
    seconds: float
    id: str | None = None
    line: int | None = None

    @property
    def hit(self) -> bool:
        return self.rank is not None

    def to_json(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        if self.id is not None:
            row["id"] = self.id
        if self.line is not None:
            row["line"] = self.line
        row.update(
            question=self.question,
            rank=self.rank,
            hit=self.hit,
            retrieved=[[file, page] for file, page in self.retrieved],
            seconds=round(self.seconds, 4),
        )
        return row


@dataclass(frozen=True)
class EvalResult:
    """Hit rate and mean reciprocal rank at k over `n` questions, with one row per question."""

    n: int
    k: int
    hit_rate: float
    mrr: float
    rows: list[QuestionResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "k": self.k,
            "hit_rate": round(self.hit_rate, 4),
            "mrr": round(self.mrr, 4),
        }

    def summary(self) -> str:
        """One line for people: `hit_rate@5 0.8636  mrr@5 0.7500  (44 questions)`."""
        return (
            f"hit_rate@{self.k} {self.hit_rate:.4f}  mrr@{self.k} {self.mrr:.4f}  "
            f"({self.n} questions)"
        )


def first_hit(reference: Reference, chunks: Iterable[Any]) -> int | None:
    """1-based rank of the first chunk matching the reference, or None."""
    for rank, chunk in enumerate(chunks, 1):
        if reference.found_in(chunk_text(chunk)):
            return rank
    return None


def evaluate(items: Sequence[QAItem], retrieve: Retrieve, k: int) -> EvalResult:
    """Ask `retrieve(question, k)` for every item; only the first k chunks returned count."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    rows = []
    for item in items:
        reference = Reference(item.reference)
        started = time.perf_counter()
        chunks = list(retrieve(item.question, k))[:k]
        seconds = time.perf_counter() - started
        rows.append(
            QuestionResult(
                question=item.question,
                rank=first_hit(reference, chunks),
                retrieved=[_location(chunk) for chunk in chunks],
                seconds=seconds,
                id=item.id,
                line=item.line,
            )
        )
    n = len(rows)
    hits = sum(row.hit for row in rows)
    reciprocal = sum(1.0 / row.rank for row in rows if row.rank is not None)
    return EvalResult(
        n=n,
        k=k,
        hit_rate=hits / n if n else 0.0,
        mrr=reciprocal / n if n else 0.0,
        rows=rows,
    )


def _location(chunk: Any) -> tuple[str | None, int | None]:
    file = getattr(chunk, "file", None)
    page = getattr(chunk, "page", None)
    return (
        None if file is None else str(file),
        page if isinstance(page, int) and not isinstance(page, bool) else None,
    )


def write_report(result: EvalResult, path: str | Path) -> None:
    """Write one JSON object a line per question (see QuestionResult.to_json) to `path`."""
    write_rows([row.to_json() for row in result.rows], path)


def write_rows(rows: Iterable[dict[str, Any]], path: str | Path) -> None:
    """A report: one JSON object a line."""
    path = Path(path)
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    try:
        path.write_text("".join(lines), encoding="utf-8")
    except OSError as error:
        raise RagError(f"{path}: cannot write the report: {error.strerror or error}") from None


# --- answers -----------------------------------------------------------------------------------------

# How an answer says the documents do not tell (ours, and the usual phrasings of other systems).
REFUSAL = re.compile(
    r"documents? (don't|do not|does not|doesn't) (say|mention|contain|state|provide)"
    r"|(context|documents?|text|information|passages?) (provided )?(does not|doesn't|do not|don't)"
    r" (say|mention|contain|include|provide|specify|state)"
    r"|not (mentioned|stated|specified|provided|given|found) in"
    r"|\b(i|we) (don't|do not|cannot|can't) (know|find|say|tell)"
    r"|\bno (information|mention|details?)\b|unable to (find|answer)|there is no (information|mention)",
    re.I,
)


@dataclass(frozen=True)
class AnswerItem:
    """One question of an answer set: what a right answer contains, or that it must be refused."""

    id: str
    question: str
    history: tuple[str, ...] = ()
    must: tuple[str, ...] = ()
    refuse: bool = False
    forbid: tuple[str, ...] = ()
    file: str | None = None  # where the answer is, when known: for citation accuracy
    page: int | None = None
    kind: str = ""
    line: int | None = None
    attach: tuple[Path, ...] = ()  # files attached to the item's chat before it is asked (a CV)


def load_answer_questions(path: str | Path) -> list[AnswerItem]:
    """Read an answer set: `{"id", "question", "history"?, "must": [regex...], "forbid"?: [...]}` or
    `{"id", "question", "refuse": true, "forbid"?: [regex...]}` a line. Raises ConfigError naming
    the line of anything else (a regex that does not compile included). `"attach": [path, ...]`
    (relative to the set's folder) are attached to the item's own chat before it is asked."""
    folder = Path(path).parent
    return [
        _answer_item(record, number, bad, folder) for number, record, bad in records(Path(path))
    ]


def _answer_item(record: dict[str, Any], number: int, bad: Complaint, folder: Path) -> AnswerItem:
    def strings(key: str) -> tuple[str, ...]:
        value = record.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(f'"{key}" must be a list of strings')
        return tuple(value)

    refuse = record.get("refuse", False) is True
    must, forbid = strings("must"), strings("forbid")
    if not refuse and not must:
        raise bad('needs "must": [regex, ...] or "refuse": true')
    for pattern in (*must, *forbid):
        try:
            re.compile(pattern)
        except re.error as error:
            raise bad(f"the regex {pattern!r} does not compile ({error})") from None
    page = record.get("page")
    attach = tuple(folder / name for name in strings("attach"))
    missing = [str(p) for p in attach if not p.is_file()]
    if missing:
        raise bad(f"the attached file {missing[0]} does not exist")
    return AnswerItem(
        id=str(record.get("id", number)),
        question=record["question"],
        history=strings("history"),
        must=must,
        refuse=refuse,
        forbid=forbid,
        file=record.get("file") if isinstance(record.get("file"), str) else None,
        page=page if isinstance(page, int) and not isinstance(page, bool) else None,
        kind=str(record.get("kind", "")),
        line=number,
        attach=attach,
    )


@dataclass
class Reply:
    """What a system answered: its text, when its first text came, what it cited and was given."""

    text: str
    first_token_s: float | None
    sources: list[tuple[str | None, int | None]] = field(default_factory=list)
    context: list[str] = field(default_factory=list)  # the texts the answer could draw on


@dataclass(frozen=True)
class AnswerRow:
    """How one answer was judged."""

    item: AnswerItem
    reply: Reply
    correct: bool
    refused: bool
    facts: int
    verified_facts: int
    cited_right: bool | None  # the first source is the item's file (and page), when it has one

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.item.id,
            "line": self.item.line,
            "question": self.item.question,
            "kind": self.item.kind,
            "expected": "refusal" if self.item.refuse else "answer",
            "correct": self.correct,
            "refused": self.refused,
            "answer": self.reply.text,
            "facts": self.facts,
            "verified_facts": self.verified_facts,
            "sources": [[file, page] for file, page in self.reply.sources],
            "cited_right": self.cited_right,
            "first_token_s": None
            if self.reply.first_token_s is None
            else round(self.reply.first_token_s, 3),
        }


def judge(item: AnswerItem, reply: Reply) -> AnswerRow:
    """Score one reply: all `must` match (answerable), or a refusal matching no `forbid`."""
    from rag.verify import Verifier, facts

    text = reply.text
    refused = bool(REFUSAL.search(text))
    if item.refuse:
        correct = refused and not any(re.search(p, text, re.I) for p in item.forbid)
    else:
        # A refusal is wrong here even when the closest passages it quotes hold the answer; an
        # answer that also holds what `forbid` names (an item a list must leave out) is wrong too.
        correct = (
            not refused
            and all(re.search(p, text, re.I) for p in item.must)
            and not any(re.search(p, text, re.I) for p in item.forbid)
        )
    verifier = Verifier(reply.context, " ".join([*item.history, item.question]))
    found = facts(text)
    cited_right = None
    if item.file is not None:
        first = reply.sources[0] if reply.sources else (None, None)
        cited_right = first[0] is not None and first[0].endswith(item.file)
        if item.page is not None:
            cited_right = cited_right and first[1] == item.page
    return AnswerRow(
        item=item,
        reply=reply,
        correct=correct,
        refused=refused,
        facts=len(found),
        verified_facts=sum(verifier.supported(fact) for fact in found),
        cited_right=cited_right,
    )


@dataclass
class AnswerEvalResult:
    """The answer metrics over one set."""

    rows: list[AnswerRow]

    @property
    def answerable(self) -> list[AnswerRow]:
        return [row for row in self.rows if not row.item.refuse]

    @property
    def unanswerable(self) -> list[AnswerRow]:
        return [row for row in self.rows if row.item.refuse]

    def to_json(self) -> dict[str, Any]:
        answerable, unanswerable = self.answerable, self.unanswerable
        facts = sum(row.facts for row in self.rows)
        cited = [row.cited_right for row in answerable if row.cited_right is not None]
        times = [r.reply.first_token_s for r in self.rows if r.reply.first_token_s is not None]
        return {
            "n": len(self.rows),
            "answerable": len(answerable),
            "unanswerable": len(unanswerable),
            "accuracy": _share(sum(row.correct for row in answerable), len(answerable)),
            "refusal_recall": _share(sum(row.correct for row in unanswerable), len(unanswerable)),
            "false_refusal_rate": _share(sum(row.refused for row in answerable), len(answerable)),
            "verified_fact_rate": _share(sum(row.verified_facts for row in self.rows), facts),
            "citation_accuracy": _share(sum(cited), len(cited)),
            "first_token_p50_s": round(statistics.median(times), 3) if times else None,
        }

    def summary(self) -> str:
        data = self.to_json()
        p50 = data["first_token_p50_s"]
        return (
            f"accuracy {data['accuracy']:.3f} ({data['answerable']} answerable)  "
            f"refusal_recall {data['refusal_recall']:.3f} ({data['unanswerable']} unanswerable)  "
            f"false_refusals {data['false_refusal_rate']:.3f}  "
            f"verified_facts {data['verified_fact_rate']:.3f}  "
            f"citations {data['citation_accuracy']:.3f}  "
            f"first_token_p50 {'-' if p50 is None else f'{p50:.2f} s'}"
        )


def _share(part: float, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def evaluate_answers(
    items: Sequence[AnswerItem],
    ask: Callable[[AnswerItem], Reply],
    progress: Callable[[int, AnswerRow], None] | None = None,
) -> AnswerEvalResult:
    """Ask every item (a fresh conversation each, its history asked first) and judge the replies."""
    rows = []
    for number, item in enumerate(items, 1):
        row = judge(item, ask(item))
        rows.append(row)
        if progress:
            progress(number, row)
    return AnswerEvalResult(rows)


def engine_replies(
    new_engine: Callable[[str], Any], attach: Callable[[Path, str], Any] | None = None
) -> Callable[[AnswerItem], Reply]:
    """`ask` for evaluate_answers over our ChatEngine: a fresh engine per item, for a chat of its
    own (`new_engine(chat_id)`; "" for the shared documents only) where `attach(path, chat_id)`
    put its files; its history asked (and answered) first; the first token is the first visible
    text of the answer."""

    def ask(item: AnswerItem) -> Reply:
        chat_id = f"eval-{item.id}" if item.attach else ""
        for path in item.attach:
            if attach is None:
                raise ConfigError(f"{item.id}: this evaluation cannot attach files")
            attach(path, chat_id)
        engine = new_engine(chat_id)
        for earlier in item.history:
            for _ in engine.ask(earlier).stream():
                pass
        started = time.perf_counter()
        answer = engine.ask(item.question)
        first = None
        for token in answer.stream():
            if first is None and token.strip():
                first = time.perf_counter() - started
        findings = answer.findings
        spans = [*findings.evidence, *findings.closest]
        return Reply(
            text=answer.text,
            first_token_s=first,
            sources=[(source.file, source.page) for source in answer.sources],
            # What the answer could draw on: its evidence, and the quotes and files it cites
            # (an answer from records cites its rows' printed lines).
            context=[span.quote for span in spans]
            + [source.quote for source in answer.sources if source.quote]
            + [source.file for source in answer.sources],
        )

    return ask
