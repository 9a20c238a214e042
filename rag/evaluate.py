"""Retrieval evaluation: question sets, the shared-word-run matching rule, hit rate and MRR at k."""

from __future__ import annotations

import json
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
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such question file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; a question file is JSON lines") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    items = [
        _parse_line(raw, path, number)
        for number, raw in enumerate(text.splitlines(), 1)
        if raw.strip()
    ]
    if not items:
        raise ConfigError(f"{path}: no questions (expected one JSON object a line)")
    return items


def _parse_line(raw: str, path: Path, number: int) -> QAItem:
    def bad(reason: str) -> ConfigError:
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
        question=question,
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
    path = Path(path)
    lines = [json.dumps(row.to_json(), ensure_ascii=False) + "\n" for row in result.rows]
    try:
        path.write_text("".join(lines), encoding="utf-8")
    except OSError as error:
        raise RagError(f"{path}: cannot write the report: {error.strerror or error}") from None
